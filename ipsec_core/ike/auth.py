"""How an IKE SA's peers prove who they are (RFC 7296 2.15): one authenticator per method.

Owns: turning the octets each side signs (RealMessage | Nonce | prf(SK_p, RestOfIDPayload),
computed by the session) into the payloads IKE_AUTH carries, and checking the peer's.
`PskAuthenticator` is the pre-shared key (AUTH method 2); `PubkeyAuthenticator` is certificates
(`auth = "pubkey"`): RFC 7427 digital signatures (AUTH method 14) with the hash both sides
announced in SIGNATURE_HASH_ALGORITHMS, CERT payloads with our certificate chain, CERTREQ with
our CAs' key hashes; it verifies the peer's method 14 signatures and the RFC 4754 ECDSA methods
9/10/11, and refuses RSA with SHA-1 (method 1).  Chains and identities: `ipsec_core.ike.certs`;
the signatures themselves: the crypto registry's signature families.
Must not: hold session state, do I/O, read the clock (the validation time is `wall_time`, given
by the session), or let a key or secret reach a repr or a log line.
"""
from __future__ import annotations

import datetime as dt
import functools
import struct
from dataclasses import dataclass, field
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ipsec_core.crypto.signature import (SIGNATURE_FAMILIES, DerError, SignatureFamily,
                                         ecdsa_der_to_raw, ecdsa_raw_to_der, family_of_algorithm)
from ipsec_core.errors import BackendError, LocalError
from ipsec_core.ike import certs
from ipsec_core.ike.config import IkeConfig
from ipsec_core.ike.constants import AuthMethod, CertEncoding, IdType, NotifyType
from ipsec_core.ike.keymat import IkeCrypto, auth_equal
from ipsec_core.ike.payloads import AuthPayload, CertPayload, CertReqPayload, IdPayload, NotifyPayload

_KEY_PAD = b"Key Pad for IKEv2"


class Authenticator(Protocol):
    def local_payloads(self, *, signed_octets: bytes, id_payload: IdPayload) -> list:
        """Our IKE_AUTH payloads that prove our identity (CERT..., AUTH)."""

    def verify(self, payloads: list, *, signed_octets: bytes, id_payload: IdPayload) -> str | None:
        """None when the peer's IKE_AUTH payloads prove `id_payload`, else why not."""


class PskAuthenticator:
    """AUTH = prf(prf(Shared Secret, "Key Pad for IKEv2"), <octets>) (RFC 7296 2.15)."""

    def __init__(self, config: IkeConfig, crypto: IkeCrypto):
        self._crypto = crypto
        self._key = crypto.prf(config.psk, _KEY_PAD)

    def __repr__(self) -> str:
        return "PskAuthenticator()"

    def local_payloads(self, *, signed_octets: bytes, id_payload: IdPayload) -> list:
        return [AuthPayload(AuthMethod.SHARED_KEY_MIC, self._crypto.prf(self._key, signed_octets))]

    def verify(self, payloads: list, *, signed_octets: bytes, id_payload: IdPayload) -> str | None:
        auth = next((p for p in payloads if isinstance(p, AuthPayload)), None)
        if auth is None:
            return "no AUTH payload"
        if auth.method != AuthMethod.SHARED_KEY_MIC:
            return f"AUTH method {auth.method}, a pre-shared key was expected"
        if not auth_equal(auth.data, self._crypto.prf(self._key, signed_octets)):
            return "AUTH does not match the pre-shared key"
        return None


# -- certificates (RFC 7296 2.15, 3.6, 3.7; RFC 7427; RFC 4754) ------------------------------------
#: The hashes we sign and verify with, in our order of preference (RFC 7427 4; RFC 8247 3.2).
OUR_HASHES = ("sha256", "sha384", "sha512")
_HASH_BY_ID = {f.hash_id: f.hash for f in SIGNATURE_FAMILIES.values()}
#: RFC 4754: the ECDSA AUTH methods, each tied to its curve and hash.
_ECDSA_METHODS = {AuthMethod.ECDSA_256: "ecdsa-p256-sha256", AuthMethod.ECDSA_384: "ecdsa-p384-sha384",
                  AuthMethod.ECDSA_521: "ecdsa-p521-sha512"}
_CURVE_FAMILY = {"secp256r1": "ecdsa-p256-sha256", "secp384r1": "ecdsa-p384-sha384",
                 "secp521r1": "ecdsa-p521-sha512"}


@dataclass(frozen=True, slots=True)
class Credentials:
    """A connection's certificates, parsed and checked once (see `credentials`)."""

    chain: tuple[bytes, ...]                    # ours, DER, end entity first
    leaf: x509.Certificate
    private_key: bytes = field(repr=False)      # DER PKCS#8
    key_type: str                               # "rsa" or "ecdsa"
    curve: str | None
    anchors: tuple[x509.Certificate, ...]
    ca_hashes: bytes                            # CERTREQ data: SHA-1 of each CA's SPKI


@functools.lru_cache(maxsize=64)
def _credentials(chain: tuple[bytes, ...], private_key: bytes, cacerts: tuple[bytes, ...]) -> Credentials:
    anchors = tuple(certs.load_certificate(der, f"CA certificate {i + 1}") for i, der in enumerate(cacerts))
    for i, ca in enumerate(anchors):
        certs.check_ca(ca, f"CA certificate {i + 1}")
    if not chain:
        raise LocalError("auth = pubkey needs our certificate (certs)")
    if not private_key:
        raise LocalError("auth = pubkey needs our private key (private_key)")
    ours = [certs.load_certificate(der, f"certificate {i + 1}") for i, der in enumerate(chain)]
    leaf = ours[0]
    why = certs.check_end_entity(leaf)
    if why is not None:
        raise LocalError(f"our certificate {certs.subject_text(leaf)} cannot be used: {why}")
    try:
        key = serialization.load_der_private_key(private_key, password=None)
    except (ValueError, TypeError):
        raise LocalError("the private key is not an unencrypted DER PKCS#8 RSA or EC key") from None
    if certs.spki_der(leaf) != key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo):
        raise LocalError(f"the private key does not belong to the certificate {certs.subject_text(leaf)}")
    if isinstance(key, rsa.RSAPrivateKey):
        key_type, curve = "rsa", None
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        key_type, curve = "ecdsa", key.curve.name
    else:                                       # check_end_entity refused other key types
        raise LocalError("the private key is not RSA or EC")
    hashes = b"".join(certs.ca_key_hash(ca) for ca in anchors)
    return Credentials(tuple(chain), leaf, private_key, key_type, curve, anchors, hashes)


def credentials(config: IkeConfig) -> Credentials:
    """`config`'s certificates, key and CAs, checked (the key matches the certificate, each CA
    is a CA); LocalError naming the connection and the problem.  Parsed once per distinct
    configuration."""
    try:
        return _credentials(tuple(config.certs), config.private_key, tuple(config.cacerts))
    except (LocalError, certs.CertificateError) as exc:
        raise LocalError(f"connection {config.name!r}: {exc}") from None


def _peer_hashes(peer_init: list) -> tuple[str, ...] | None:
    """The hashes the peer announced in SIGNATURE_HASH_ALGORITHMS, or None when it sent none."""
    notify = next((p for p in peer_init if isinstance(p, NotifyPayload)
                   and p.notify_type == NotifyType.SIGNATURE_HASH_ALGORITHMS), None)
    if notify is None:
        return None
    data = notify.data[:len(notify.data) // 2 * 2]
    ids = struct.unpack(f"!{len(data) // 2}H", data)
    return tuple(_HASH_BY_ID[i] for i in ids if i in _HASH_BY_ID)


class PubkeyAuthenticator:
    """AUTH = a signature over the octets with our certificate's key; CERT payloads with our
    chain; the peer's chain validated against our CAs and its identity matched to its
    certificate.  `peer_init` is the peer's IKE_SA_INIT payloads (its SIGNATURE_HASH_ALGORITHMS);
    `wall_time` the POSIX time to validate certificates at (None: see `ipsec_core.ike.certs`)."""

    def __init__(self, config: IkeConfig, crypto: IkeCrypto, *, peer_init: list = (),
                 wall_time: float | None = None, initiator: bool = False):
        self._config = config
        self._initiator = initiator
        self._crypto = crypto
        self._creds = credentials(config)
        self._peer_hashes = _peer_hashes(list(peer_init))
        self._when = None if wall_time is None else dt.datetime.fromtimestamp(wall_time, dt.timezone.utc)

    def __repr__(self) -> str:
        return f"PubkeyAuthenticator({certs.subject_text(self._creds.leaf)!r})"

    def _backend(self, family: str):
        return self._crypto.registry.select(family, None, self._crypto.backend_name)

    def _our_method(self) -> tuple[int, SignatureFamily]:
        """Method 14 with a hash the peer announced; without its announcement, RFC 4754's ECDSA
        method for an EC key, or method 14 with SHA-256 for RSA (never SHA-1, method 1)."""
        creds, peer = self._creds, self._peer_hashes
        if creds.key_type == "ecdsa":
            family = SIGNATURE_FAMILIES[_CURVE_FAMILY[creds.curve]]
            if peer is not None and family.hash in peer:
                return AuthMethod.DIGITAL_SIGNATURE, family
            method = next(m for m, f in _ECDSA_METHODS.items() if f == family.name)
            return method, family
        scheme = "rsa-pss" if self._config.rsa_pss else "rsa-pkcs1"
        hash_name = next((h for h in OUR_HASHES if peer is None or h in peer), "sha256")
        return AuthMethod.DIGITAL_SIGNATURE, SIGNATURE_FAMILIES[f"{scheme}-{hash_name}"]

    def local_payloads(self, *, signed_octets: bytes, id_payload: IdPayload) -> list:
        method, family = self._our_method()
        signer = self._backend(family.name).signer(family.name, self._creds.private_key)
        signature = signer.sign(signed_octets)
        if method == AuthMethod.DIGITAL_SIGNATURE:
            algorithm = family.algorithm_identifier()
            data = bytes([len(algorithm)]) + algorithm + signature
        else:
            data = ecdsa_der_to_raw(signature, family.curve)
        # RFC 7296 3.7: the initiator's CERTREQ goes in IKE_AUTH, the responder's in IKE_SA_INIT
        certreq = [CertReqPayload(CertEncoding.X509_CERT_SIG, self._creds.ca_hashes)] \
            if self._initiator else []
        return [*(CertPayload(CertEncoding.X509_CERT_SIG, der) for der in self._creds.chain),
                *certreq, AuthPayload(method, data)]

    def verify(self, payloads: list, *, signed_octets: bytes, id_payload: IdPayload) -> str | None:
        auth = next((p for p in payloads if isinstance(p, AuthPayload)), None)
        if auth is None:
            return "no AUTH payload"
        sent = [p.data for p in payloads if isinstance(p, CertPayload) and not isinstance(p, CertReqPayload)
                and p.encoding == CertEncoding.X509_CERT_SIG]
        if not sent:
            return "no certificate (CERT payload with an X.509 certificate) was sent"
        try:
            leaf, *intermediates = [certs.load_certificate(der, f"CERT payload {i + 1}")
                                    for i, der in enumerate(sent)]
        except certs.CertificateError as exc:
            return str(exc)
        why = certs.validate_chain(leaf, intermediates, list(self._creds.anchors), when=self._when)
        if why is not None:
            return why
        why = certs.check_end_entity(leaf)
        if why is not None:
            return f"certificate {certs.subject_text(leaf)}: {why}"
        if not certs.identity_matches(id_payload.id_type, id_payload.data, leaf):
            return f"the certificate {certs.subject_text(leaf)} does not name the identity {_id_text(id_payload)}"
        try:
            family, signature = self._peer_signature(auth)
        except ValueError as exc:
            return str(exc)
        try:
            verifier = self._backend(family.name).verifier(family.name, certs.spki_der(leaf))
        except BackendError as exc:
            return f"no backend verifies {family.name}: {exc}"
        except ValueError as exc:
            return f"{family.name} does not fit the certificate's key ({exc})"
        if not verifier.verify(signed_octets, signature):
            return f"the {family.name} signature in AUTH does not verify with the certificate's key"
        return None

    @staticmethod
    def _peer_signature(auth: AuthPayload) -> tuple[SignatureFamily, bytes]:
        """The family and the signature (ECDSA in DER) of the peer's AUTH; ValueError saying why
        it cannot be accepted."""
        if auth.method == AuthMethod.DIGITAL_SIGNATURE:
            data = auth.data
            if not data or len(data) < 1 + data[0]:
                raise ValueError("AUTH method 14 data shorter than its AlgorithmIdentifier")
            family = family_of_algorithm(data[1:1 + data[0]])
            if family.hash not in OUR_HASHES:
                raise ValueError(f"the peer signed with {family.hash}, which we did not announce")
            return family, data[1 + data[0]:]
        if auth.method in _ECDSA_METHODS:
            family = SIGNATURE_FAMILIES[_ECDSA_METHODS[auth.method]]
            try:
                return family, ecdsa_raw_to_der(auth.data, family.curve)
            except DerError as exc:
                raise ValueError(f"AUTH method {auth.method}: {exc}") from None
        if auth.method == AuthMethod.RSA_SIG:
            raise ValueError("AUTH method 1 (RSA with SHA-1) is refused: SHA-1 signatures are "
                             "not accepted (RFC 8247)")
        name = AuthMethod(auth.method).name if auth.method in AuthMethod._value2member_map_ \
            else str(auth.method)
        raise ValueError(f"AUTH method {name}, a signature was expected")


def _id_text(payload: IdPayload) -> str:
    if payload.id_type == IdType.DER_ASN1_DN:
        return certs.dn_text(payload.data)
    return str(payload)


def init_payloads(config: IkeConfig, *, initiator: bool = False) -> list:
    """Payloads the connection's method adds to our IKE_SA_INIT message, before any key exists:
    for certificates the SIGNATURE_HASH_ALGORITHMS notify (RFC 7427 4) and, in the responder's
    message, a CERTREQ naming our CAs (RFC 7296 3.7: the initiator's goes in IKE_AUTH, and
    strongSwan refuses one in an IKE_SA_INIT request); nothing for a pre-shared key."""
    if config.auth != "pubkey":
        return []
    hashes = struct.pack(f"!{len(OUR_HASHES)}H", *(SIGNATURE_FAMILIES[f"rsa-pkcs1-{h}"].hash_id
                                                     for h in OUR_HASHES))
    out: list = [NotifyPayload(NotifyType.SIGNATURE_HASH_ALGORITHMS, hashes)]
    if not initiator:
        out.append(CertReqPayload(CertEncoding.X509_CERT_SIG, credentials(config).ca_hashes))
    return out


def make_authenticator(config: IkeConfig, crypto: IkeCrypto, *, peer_init: list = (),
                       wall_time: float | None = None, initiator: bool = False) -> Authenticator:
    """The authenticator of `config.auth`.  `peer_init`: the peer's IKE_SA_INIT payloads;
    `wall_time`: POSIX seconds to validate certificates at (None: validity periods unchecked);
    `initiator`: our role (where our CERTREQ goes)."""
    if config.auth == "psk":
        return PskAuthenticator(config, crypto)
    if config.auth == "pubkey":
        return PubkeyAuthenticator(config, crypto, peer_init=peer_init, wall_time=wall_time,
                                   initiator=initiator)
    raise LocalError(f"connection {config.name!r}: auth = {config.auth!r} is not supported")


__all__ = ["Authenticator", "Credentials", "PskAuthenticator", "PubkeyAuthenticator", "credentials",
           "init_payloads", "make_authenticator"]

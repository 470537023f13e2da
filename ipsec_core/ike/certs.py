"""X.509 for IKEv2 certificate authentication: chain validation, identities, distinguished names.

Owns: checking a peer's end-entity certificate (and the intermediates it sent) against the
configured CA certificates with `cryptography.x509.verification` (RFC 5280 path validation, the
CA profile of the Web PKI: basicConstraints, keyUsage, no SHA-1, no RSA under 2048 bits), whether
an IKE identity is one the certificate names (RFC 4945 3.1, as strongSwan matches them: FQDN,
RFC822 and IP address IDs against subjectAltName entries, a DER_ASN1_DN ID against the subject),
and distinguished names as text, strongSwan's way round ("C=CH, O=Example, CN=moon": the first
RDN first, the reverse of RFC 4514), to DER and back.
Must not: read files or the clock (the validation time is an argument), or sign anything.

No validation time (`when=None`: the caller has no wall clock, as in-memory tests) means the
validity periods are not judged: the chain is validated at the latest notBefore of the
certificates the peer sent, a moment when each of them had started to be valid.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import re

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509 import verification

from ipsec_core.crypto.signature import DerError, read_elements, read_oid, read_one
from ipsec_core.ike.constants import IdType

#: RFC 8247 / the Web PKI: RSA keys shorter than this are refused.
MIN_RSA_BITS = 2048
#: Longest chain accepted: end entity, intermediates, trust anchor.
MAX_CHAIN_DEPTH = 8

#: Attribute short names, as strongSwan writes them (its `oid_names` for DNs).
_DN_NAMES = {
    "2.5.4.6": "C", "2.5.4.8": "ST", "2.5.4.7": "L", "2.5.4.10": "O", "2.5.4.11": "OU",
    "2.5.4.3": "CN", "2.5.4.5": "serialNumber", "2.5.4.4": "SN", "2.5.4.42": "G",
    "2.5.4.12": "T", "2.5.4.43": "I", "2.5.4.46": "dnQualifier", "2.5.4.65": "pseudonym",
    "1.2.840.113549.1.9.1": "E", "0.9.2342.19200300.100.1.25": "DC",
    "0.9.2342.19200300.100.1.1": "UID",
}
_STRING_TAGS = {0x0C: "utf-8", 0x13: "ascii", 0x16: "ascii", 0x14: "latin-1", 0x1E: "utf-16-be",
                0x1C: "utf-32-be"}
_DN_TEXT = re.compile(r"^\s*[A-Za-z][A-Za-z0-9.-]*\s*=")


class CertificateError(ValueError):
    """A certificate, key or name that cannot be used; the message says which and why."""


# -- distinguished names ------------------------------------------------------------------------
def looks_like_dn(text: str) -> bool:
    """Whether an identity written in a configuration is a distinguished name ("C=CH, CN=moon")."""
    return bool(_DN_TEXT.match(text))


def dn_from_text(text: str) -> bytes:
    """The DER Name of a DN written strongSwan's way ("C=CH, O=Example, CN=moon"); ValueError
    naming the text when it is not one."""
    parts = [p.strip() for p in re.split(r"(?<!\\),", text) if p.strip()]
    try:
        name = x509.Name.from_rfc4514_string(",".join(reversed(parts)),
                                             {"E": x509.NameOID.EMAIL_ADDRESS,
                                              "SN": x509.NameOID.SURNAME,
                                              "G": x509.NameOID.GIVEN_NAME})
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a distinguished name ({exc})") from None
    return name.public_bytes()


def dn_attributes(der: bytes) -> tuple[tuple[tuple[str, str], ...], ...]:
    """The RDNs of a DER Name, first first: each a tuple of (OID, value) pairs; ValueError when
    `der` is not a Name of string attributes."""
    try:
        rdns = []
        for tag, rdn in read_elements(read_one(der, 0x30, "Name")):
            if tag != 0x31:
                raise DerError("an RDN is not a SET")
            pairs = []
            for atag, atv in read_elements(rdn):
                fields = read_elements(atv)
                if atag != 0x30 or len(fields) != 2 or fields[0][0] != 0x06:
                    raise DerError("AttributeTypeAndValue malformed")
                codec = _STRING_TAGS.get(fields[1][0])
                value = fields[1][1].decode(codec) if codec else fields[1][1].hex()
                pairs.append((read_oid(fields[0][1]), value))
            rdns.append(tuple(sorted(pairs)))
        return tuple(rdns)
    except (DerError, UnicodeDecodeError) as exc:
        raise ValueError(f"not a distinguished name: {exc}") from None


def dn_text(der: bytes) -> str:
    """strongSwan's text for a DER Name ("C=CH, O=Example, CN=moon"); hex when unreadable."""
    try:
        rdns = dn_attributes(der)
    except ValueError:
        return der.hex()
    return ", ".join("+".join(f"{_DN_NAMES.get(oid, oid)}={value}" for oid, value in rdn)
                     for rdn in rdns)


def dn_equal(a: bytes, b: bytes) -> bool:
    """Whether two DER Names say the same: the same attributes in the same order, string types
    aside (strongSwan writes PrintableString where `cryptography` writes UTF8String)."""
    if a == b:
        return True
    try:
        return dn_attributes(a) == dn_attributes(b)
    except ValueError:
        return False


# -- certificates -------------------------------------------------------------------------------
def load_certificate(der: bytes, what: str) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError as exc:
        raise CertificateError(f"{what} is not a DER X.509 certificate ({exc})") from None


def subject_text(cert: x509.Certificate) -> str:
    return dn_text(cert.subject.public_bytes())


def spki_der(cert: x509.Certificate) -> bytes:
    return cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)


def ca_key_hash(cert: x509.Certificate) -> bytes:
    """The CERTREQ Certification Authority entry: SHA-1 of the CA's SubjectPublicKeyInfo
    (RFC 7296 3.7)."""
    return hashlib.sha1(spki_der(cert)).digest()


def check_ca(cert: x509.Certificate, what: str) -> None:
    """CertificateError unless `cert` may issue certificates (basicConstraints cA, and
    keyCertSign when keyUsage is present)."""
    try:
        basic = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        basic = None
    if basic is None or not basic.ca:
        raise CertificateError(f"{what} ({subject_text(cert)}) is not a CA certificate "
                               "(no basicConstraints with cA = TRUE)")
    usage = _key_usage(cert)
    if usage is not None and not usage.key_cert_sign:
        raise CertificateError(f"{what} ({subject_text(cert)}) may not sign certificates "
                               "(keyUsage without keyCertSign)")


def check_end_entity(cert: x509.Certificate) -> str | None:
    """Why `cert` cannot sign IKE AUTH payloads (key type and size, keyUsage), or None."""
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            return f"its RSA key has {key.key_size} bits, fewer than {MIN_RSA_BITS}"
    elif isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in ("secp256r1", "secp384r1", "secp521r1"):
            return f"its EC key is on {key.curve.name}, not P-256, P-384 or P-521"
    else:
        return f"its {type(key).__name__} key is not RSA or ECDSA"
    usage = _key_usage(cert)
    if usage is not None and not usage.digital_signature:
        return "its keyUsage does not allow digitalSignature"
    return None


def _key_usage(cert: x509.Certificate) -> x509.KeyUsage | None:
    try:
        return cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return None


def validate_chain(leaf: x509.Certificate, intermediates: list[x509.Certificate],
                   anchors: list[x509.Certificate], *, when: dt.datetime | None) -> str | None:
    """None when `leaf` chains to one of `anchors` through `intermediates` at `when` (None: see
    the module docstring), else why not."""
    if not anchors:
        return "no CA certificate is configured to trust"
    if when is None:
        when = max(c.not_valid_before_utc for c in [leaf, *intermediates])
    policy = (verification.PolicyBuilder()
              .store(verification.Store(anchors))
              .time(when)
              .max_chain_depth(MAX_CHAIN_DEPTH)
              .extension_policies(ca_policy=verification.ExtensionPolicy.webpki_defaults_ca(),
                                  ee_policy=verification.ExtensionPolicy.permit_all()))
    try:
        policy.build_client_verifier().verify(leaf, intermediates)
    except verification.VerificationError as exc:
        text = str(exc).split(" (encountered processing", 1)[0]
        return f"certificate {subject_text(leaf)} is not trusted: {text}"
    return None


def identity_matches(id_type: int, data: bytes, cert: x509.Certificate) -> bool:
    """Whether the IKE identity (type, data) is one `cert` names: a DER_ASN1_DN its subject; an
    FQDN, RFC822 address or IP address one of its subjectAltName entries of that kind."""
    if id_type == IdType.DER_ASN1_DN:
        return dn_equal(data, cert.subject.public_bytes())
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    if id_type == IdType.FQDN:
        want = data.decode("ascii", "replace").lower().rstrip(".")
        return any(n.lower().rstrip(".") == want for n in names.get_values_for_type(x509.DNSName))
    if id_type == IdType.RFC822_ADDR:
        want = data.decode("utf-8", "replace").lower()
        return any(n.lower() == want for n in names.get_values_for_type(x509.RFC822Name))
    if id_type in (IdType.IPV4_ADDR, IdType.IPV6_ADDR):
        try:
            want = ipaddress.ip_address(data)
        except ValueError:
            return False
        return any(a == want for a in names.get_values_for_type(x509.IPAddress))
    return False


def default_identity(cert: x509.Certificate) -> str:
    """The identity a certificate stands for when none is configured: its subject DN, or, for an
    empty subject, its first subjectAltName."""
    if len(cert.subject):
        return subject_text(cert)
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise CertificateError("the certificate has neither a subject nor a subjectAltName") from None
    for name in names:
        if isinstance(name, (x509.DNSName, x509.RFC822Name, x509.IPAddress)):
            return str(name.value)
    raise CertificateError("the certificate's subjectAltNames are none of DNS, email or IP")


__all__ = ["CertificateError", "MIN_RSA_BITS", "ca_key_hash", "check_ca", "check_end_entity",
           "default_identity", "dn_attributes", "dn_equal", "dn_from_text", "dn_text",
           "identity_matches", "load_certificate", "looks_like_dn", "spki_der", "subject_text",
           "validate_chain"]

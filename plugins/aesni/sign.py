"""Signatures on `cryptography` (OpenSSL): ECDSA P-256/384/521 and RSA PKCS#1 v1.5 / PSS with
SHA-2 (families and encodings: `ipsec_core.crypto.signature`).

Owns: loading DER keys into OpenSSL key objects once, and mapping `InvalidSignature` to False.
Must not: choose a family, hash for a peer, or judge a key's size (the core's policy).
An ECDSA signature is taken apart by the core's strict DER reader first, so a BER encoding that
OpenSSL might tolerate is refused the same way on every backend.
"""
from __future__ import annotations

from ipsec_core.crypto.signature import (DerError, decode_ecdsa_der, encode_ecdsa_der,
                                         signature_family)

FAMILIES = ("ecdsa-p256-sha256", "ecdsa-p384-sha384", "ecdsa-p521-sha512",
            "rsa-pkcs1-sha256", "rsa-pkcs1-sha384", "rsa-pkcs1-sha512",
            "rsa-pss-sha256", "rsa-pss-sha384", "rsa-pss-sha512")


def _lib():
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
    return InvalidSignature, hashes, serialization, ec, padding, rsa, utils


_CURVES = {"secp256r1": "SECP256R1", "secp384r1": "SECP384R1", "secp521r1": "SECP521R1"}


def _check_key(family, key, ec, rsa):
    if family.scheme == "ecdsa":
        if not isinstance(key, (ec.EllipticCurvePublicKey, ec.EllipticCurvePrivateKey)) \
                or key.curve.name != family.curve:
            raise ValueError(f"{family.name} needs an EC {family.curve} key")
    elif not isinstance(key, (rsa.RSAPublicKey, rsa.RSAPrivateKey)):
        raise ValueError(f"{family.name} needs an RSA key")


class _Base:
    __slots__ = ("family", "_family", "_key", "_hash", "_padding", "_lib")

    def __init__(self, family: str, key):
        self.family = family
        self._family = spec = signature_family(family)
        self._lib = lib = _lib()
        _, hashes, _, ec, padding, rsa, _ = lib
        _check_key(spec, key, ec, rsa)
        self._key = key
        self._hash = getattr(hashes, spec.hash.upper())()
        if spec.scheme == "rsa-pkcs1":
            self._padding = padding.PKCS1v15()
        elif spec.scheme == "rsa-pss":
            self._padding = padding.PSS(mgf=padding.MGF1(self._hash), salt_length=spec.hash_bytes)
        else:
            self._padding = ec.ECDSA(self._hash)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.family}>"


class Verifier(_Base):
    __slots__ = ()

    def verify(self, data: bytes, signature: bytes) -> bool:
        invalid = self._lib[0]
        try:
            if self._family.scheme == "ecdsa":
                r, s = decode_ecdsa_der(signature)
                self._key.verify(encode_ecdsa_der(r, s), data, self._padding)
            else:
                self._key.verify(signature, data, self._padding, self._hash)
        except (invalid, DerError, ValueError):
            return False
        return True


class Signer(_Base):
    __slots__ = ()

    def sign(self, data: bytes) -> bytes:
        if self._family.scheme == "ecdsa":
            return self._key.sign(data, self._padding)
        return self._key.sign(data, self._padding, self._hash)


def verifier(family: str, public_key: bytes) -> Verifier:
    serialization = _lib()[2]
    try:
        key = serialization.load_der_public_key(public_key)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{family}: not a DER SubjectPublicKeyInfo ({exc})") from None
    return Verifier(family, key)


def signer(family: str, private_key: bytes) -> Signer:
    serialization = _lib()[2]
    try:
        # OpenSSL's RSA key validation costs tens of milliseconds per load; this is our own key
        # from the configuration (a wrong one only makes signatures the peer refuses), and
        # OpenSSL checks each CRT result against the public exponent anyway.
        key = serialization.load_der_private_key(private_key, password=None,
                                                 unsafe_skip_rsa_key_validation=True)
    except (ValueError, TypeError):
        raise ValueError(f"{family}: not an unencrypted DER PKCS#8 private key") from None
    return Signer(family, key)

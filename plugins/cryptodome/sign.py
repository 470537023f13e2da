"""Signatures on pycryptodome: ECDSA P-256/384/521 (`Crypto.Signature.DSS`, FIPS 186-3 mode)
and RSA PKCS#1 v1.5 / PSS (`Crypto.Signature.pkcs1_15`, `pss`) with SHA-2 (families and
encodings: `ipsec_core.crypto.signature`).

Owns: importing DER keys once, and mapping pycryptodome's `ValueError` for a bad signature to
False.  ECDSA signatures go through the core's strict DER reader and reach pycryptodome as the
raw r || s, so its own DER decoding (and any leniency in it) is never used.
Must not: choose a family or judge a key's size (the core's policy).
"""
from __future__ import annotations

import importlib

from ipsec_core.crypto.signature import (CURVE_BYTES, DerError, ecdsa_der_to_raw,
                                         ecdsa_raw_to_der, signature_family)

FAMILIES = ("ecdsa-p256-sha256", "ecdsa-p384-sha384", "ecdsa-p521-sha512",
            "rsa-pkcs1-sha256", "rsa-pkcs1-sha384", "rsa-pkcs1-sha512",
            "rsa-pss-sha256", "rsa-pss-sha384", "rsa-pss-sha512")

_CURVES = {"secp256r1": "NIST P-256", "secp384r1": "NIST P-384", "secp521r1": "NIST P-521"}


class _Base:
    __slots__ = ("family", "_family", "_key", "_hash", "_scheme")

    def __init__(self, family: str, key_der: bytes, *, private: bool):
        from Crypto.PublicKey import ECC, RSA
        from Crypto.Signature import DSS, pkcs1_15, pss

        self.family = family
        self._family = spec = signature_family(family)
        self._hash = importlib.import_module(f"Crypto.Hash.{spec.hash.upper()}")
        what = "DER PKCS#8 private key" if private else "DER SubjectPublicKeyInfo"
        try:
            key = (ECC if spec.scheme == "ecdsa" else RSA).import_key(key_der)
        except (ValueError, IndexError, TypeError):
            raise ValueError(f"{family}: not an {spec.key_type.upper()} {what}") from None
        if private and not key.has_private():
            raise ValueError(f"{family}: a public key where the private key was expected")
        if spec.scheme == "ecdsa":
            if key.curve != _CURVES[spec.curve]:
                raise ValueError(f"{family} needs an EC {spec.curve} key, not {key.curve}")
            self._scheme = DSS.new(key, "fips-186-3", encoding="binary")
        elif spec.scheme == "rsa-pkcs1":
            self._scheme = pkcs1_15.new(key)
        else:
            from Crypto.Signature.pss import MGF1

            hash_module = self._hash
            self._scheme = pss.new(key, mask_func=lambda seed, n: MGF1(seed, n, hash_module),
                                   salt_bytes=spec.hash_bytes)
        self._key = key

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.family}>"


class Verifier(_Base):
    __slots__ = ()

    def __init__(self, family: str, public_key: bytes):
        super().__init__(family, public_key, private=False)

    def verify(self, data: bytes, signature: bytes) -> bool:
        try:
            if self._family.scheme == "ecdsa":
                signature = ecdsa_der_to_raw(signature, self._family.curve)
                size = CURVE_BYTES[self._family.curve]
                if not all(0 < int.from_bytes(signature[i:i + size], "big")
                           for i in (0, size)):
                    return False
            self._scheme.verify(self._hash.new(data), signature)
        except (ValueError, TypeError, DerError, OverflowError):
            return False
        return True


class Signer(_Base):
    __slots__ = ()

    def __init__(self, family: str, private_key: bytes):
        super().__init__(family, private_key, private=True)

    def sign(self, data: bytes) -> bytes:
        out = self._scheme.sign(self._hash.new(data))
        if self._family.scheme == "ecdsa":
            return ecdsa_raw_to_der(out, self._family.curve)
        return out


def verifier(family: str, public_key: bytes) -> Verifier:
    return Verifier(family, public_key)


def signer(family: str, private_key: bytes) -> Signer:
    return Signer(family, private_key)

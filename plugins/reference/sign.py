"""Signatures in pure Python: ECDSA (FIPS 186-4 6.4, SEC 1 4.1) on P-256/384/521 with the curve
arithmetic of `.kex`, RSASSA-PKCS1-v1_5 and RSASSA-PSS (RFC 8017 8.1, 8.2, 9.1, 9.2); families
and encodings: `ipsec_core.crypto.signature`.

Written to be read against those documents, not to be fast and not constant-time (Python
integers are not): a test oracle, like the rest of this backend.  hashlib supplies the hashes;
the ECDSA nonce and the PSS salt come from `secrets`.
Owns: the RSA and ECDSA arithmetic and encodings.  Keys are read by the core's DER helpers.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets

from ipsec_core.crypto.signature import (DerError, decode_ecdsa_der, encode_ecdsa_der,
                                         parse_private_key, parse_public_key, signature_family)

from .kex import CURVES, _add, on_curve, scalar_mult

FAMILIES = ("ecdsa-p256-sha256", "ecdsa-p384-sha384", "ecdsa-p521-sha512",
            "rsa-pkcs1-sha256", "rsa-pkcs1-sha384", "rsa-pkcs1-sha512",
            "rsa-pss-sha256", "rsa-pss-sha384", "rsa-pss-sha512")

_CURVE_OF = {"secp256r1": CURVES["ecp256"], "secp384r1": CURVES["ecp384"],
             "secp521r1": CURVES["ecp521"]}

#: DER of DigestInfo's AlgorithmIdentifier and digest header (RFC 8017 9.2, note 1).
_DIGEST_INFO = {
    "sha256": bytes.fromhex("3031300d060960864801650304020105000420"),
    "sha384": bytes.fromhex("3041300d060960864801650304020205000430"),
    "sha512": bytes.fromhex("3051300d060960864801650304020305000440"),
}


# -- ECDSA --------------------------------------------------------------------------------------
def _ecdsa_e(curve, digest: bytes) -> int:
    """The leftmost bits of the hash, as many as the order has (SEC 1 4.1.3 step 5)."""
    e = int.from_bytes(digest, "big")
    excess = 8 * len(digest) - curve.n.bit_length()
    return e >> excess if excess > 0 else e


class EcdsaVerifier:
    __slots__ = ("family", "_spec", "_curve", "_q")

    def __init__(self, family: str, public_key: bytes):
        self.family = family
        self._spec = spec = signature_family(family)
        info = parse_public_key(public_key)
        if info.key_type != "ecdsa" or info.curve != spec.curve:
            raise ValueError(f"{family} needs an EC {spec.curve} key")
        curve = _CURVE_OF[spec.curve]
        if not (info.x < curve.p and info.y < curve.p and on_curve(curve, info.x, info.y)):
            raise ValueError(f"{family}: the public key is not a point of {curve.name}")
        self._curve, self._q = curve, (info.x, info.y)

    def verify(self, data: bytes, signature: bytes) -> bool:
        c = self._curve
        try:
            r, s = decode_ecdsa_der(signature)
        except DerError:
            return False
        if not (0 < r < c.n and 0 < s < c.n):
            return False
        e = _ecdsa_e(c, hashlib.new(self._spec.hash, data).digest())
        w = pow(s, -1, c.n)
        u1, u2 = e * w % c.n, r * w % c.n
        p1 = scalar_mult(c, u1, c.gx, c.gy) if u1 else None
        p2 = scalar_mult(c, u2, *self._q)
        point = _add(c, (*p1, 1) if p1 else (1, 1, 0), (*p2, 1) if p2 else (1, 1, 0))
        x, _, z = point
        if z == 0:
            return False
        zinv = pow(z, -1, c.p)
        return (x * zinv * zinv % c.p) % c.n == r

    def __repr__(self) -> str:
        return f"<EcdsaVerifier {self.family}>"


class EcdsaSigner:
    __slots__ = ("family", "_spec", "_curve", "_d")

    def __init__(self, family: str, private_key: bytes):
        self.family = family
        self._spec = spec = signature_family(family)
        info = parse_private_key(private_key)
        if info.key_type != "ecdsa" or info.curve != spec.curve:
            raise ValueError(f"{family} needs an EC {spec.curve} key")
        self._curve = curve = _CURVE_OF[spec.curve]
        if not 0 < info.scalar < curve.n:
            raise ValueError(f"{family}: the private scalar is out of range")
        self._d = info.scalar

    def sign(self, data: bytes) -> bytes:
        c = self._curve
        e = _ecdsa_e(c, hashlib.new(self._spec.hash, data).digest())
        while True:
            k = 1 + secrets.randbelow(c.n - 1)
            x, _ = scalar_mult(c, k, c.gx, c.gy)
            r = x % c.n
            s = pow(k, -1, c.n) * (e + r * self._d) % c.n
            if r and s:
                return encode_ecdsa_der(r, s)

    def __repr__(self) -> str:
        return f"<EcdsaSigner {self.family}>"


# -- RSA ----------------------------------------------------------------------------------------
def _mgf1(seed: bytes, length: int, hash_name: str) -> bytes:
    out, counter = b"", 0
    while len(out) < length:
        out += hashlib.new(hash_name, seed + counter.to_bytes(4, "big")).digest()
        counter += 1
    return out[:length]


def _pkcs1_encoding(hash_name: str, digest: bytes, k: int) -> bytes | None:
    """EMSA-PKCS1-v1_5 (RFC 8017 9.2): 00 01 FF.. 00 DigestInfo, k bytes; None if k is too short."""
    t = _DIGEST_INFO[hash_name] + digest
    if k < len(t) + 11:
        return None
    return b"\x00\x01" + b"\xff" * (k - len(t) - 3) + b"\x00" + t


def _pss_encode(hash_name: str, digest: bytes, em_bits: int) -> bytes:
    """EMSA-PSS-ENCODE (RFC 8017 9.1.1) with a salt as long as the hash."""
    h_len = len(digest)
    em_len = (em_bits + 7) // 8
    if em_len < 2 * h_len + 2:
        raise ValueError("the RSA modulus is too short for PSS with this hash")
    salt = secrets.token_bytes(h_len)
    h = hashlib.new(hash_name, bytes(8) + digest + salt).digest()
    db = bytes(em_len - 2 * h_len - 2) + b"\x01" + salt
    masked = bytes(a ^ b for a, b in zip(db, _mgf1(h, em_len - h_len - 1, hash_name)))
    masked = bytes([masked[0] & (0xFF >> (8 * em_len - em_bits))]) + masked[1:]
    return masked + h + b"\xbc"


def _pss_verify(hash_name: str, digest: bytes, em: bytes, em_bits: int) -> bool:
    """EMSA-PSS-VERIFY (RFC 8017 9.1.2), salt length = hash length."""
    h_len = s_len = len(digest)
    em_len = (em_bits + 7) // 8
    if len(em) != em_len or em_len < h_len + s_len + 2 or em[-1] != 0xBC:
        return False
    masked, h = em[:em_len - h_len - 1], em[em_len - h_len - 1:-1]
    top_mask = (0xFF << (8 - (8 * em_len - em_bits))) & 0xFF
    if masked[0] & top_mask:
        return False
    db = bytearray(a ^ b for a, b in zip(masked, _mgf1(h, len(masked), hash_name)))
    db[0] &= 0xFF >> (8 * em_len - em_bits)
    pad = em_len - h_len - s_len - 2
    if any(db[:pad]) or db[pad] != 1:
        return False
    salt = bytes(db[-s_len:])
    return hmac.compare_digest(h, hashlib.new(hash_name, bytes(8) + digest + salt).digest())


class RsaVerifier:
    __slots__ = ("family", "_spec", "_n", "_e", "_k")

    def __init__(self, family: str, public_key: bytes):
        self.family = family
        self._spec = spec = signature_family(family)
        info = parse_public_key(public_key)
        if info.key_type != "rsa":
            raise ValueError(f"{family} needs an RSA key")
        if info.n < 3 or info.e < 3 or info.e % 2 == 0:
            raise ValueError(f"{family}: the RSA public key is not usable")
        self._n, self._e = info.n, info.e
        self._k = (info.n.bit_length() + 7) // 8

    def verify(self, data: bytes, signature: bytes) -> bool:
        if len(signature) != self._k:                       # RFC 8017 8.1.2/8.2.2 step 1
            return False
        s = int.from_bytes(signature, "big")
        if s >= self._n:
            return False
        m = pow(s, self._e, self._n)
        digest = hashlib.new(self._spec.hash, data).digest()
        if self._spec.scheme == "rsa-pkcs1":
            want = _pkcs1_encoding(self._spec.hash, digest, self._k)
            return want is not None and hmac.compare_digest(m.to_bytes(self._k, "big"), want)
        em_bits = self._n.bit_length() - 1
        em_len = (em_bits + 7) // 8
        if m.bit_length() > 8 * em_len:
            return False
        return _pss_verify(self._spec.hash, digest, m.to_bytes(em_len, "big"), em_bits)

    def __repr__(self) -> str:
        return f"<RsaVerifier {self.family}>"


class RsaSigner:
    __slots__ = ("family", "_spec", "_key", "_k")

    def __init__(self, family: str, private_key: bytes):
        self.family = family
        self._spec = spec = signature_family(family)
        info = parse_private_key(private_key)
        if info.key_type != "rsa":
            raise ValueError(f"{family} needs an RSA key")
        if info.p * info.q != info.n:
            raise ValueError(f"{family}: the RSA private key is inconsistent (p * q != n)")
        self._key = info
        self._k = (info.n.bit_length() + 7) // 8

    def sign(self, data: bytes) -> bytes:
        key = self._key
        digest = hashlib.new(self._spec.hash, data).digest()
        if self._spec.scheme == "rsa-pkcs1":
            em = _pkcs1_encoding(self._spec.hash, digest, self._k)
            if em is None:
                raise ValueError("the RSA modulus is too short for this hash")
        else:
            em = _pss_encode(self._spec.hash, digest, key.n.bit_length() - 1)
        m = int.from_bytes(em, "big")
        # RSASP1 with the CRT (RFC 8017 5.1.2 2.b), checked against the public key so that a
        # fault in the computation never leaks a factor of n in a wrong signature
        s1 = pow(m, key.d % (key.p - 1), key.p)
        s2 = pow(m, key.d % (key.q - 1), key.q)
        h = pow(key.q, -1, key.p) * (s1 - s2) % key.p
        s = s2 + key.q * h
        if pow(s, key.e, key.n) != m:
            raise ValueError("RSA signing computed a wrong result")
        return s.to_bytes(self._k, "big")

    def __repr__(self) -> str:
        return f"<RsaSigner {self.family}>"


def verifier(family: str, public_key: bytes):
    spec = signature_family(family)
    return (EcdsaVerifier if spec.scheme == "ecdsa" else RsaVerifier)(family, public_key)


def signer(family: str, private_key: bytes):
    spec = signature_family(family)
    return (EcdsaSigner if spec.scheme == "ecdsa" else RsaSigner)(family, private_key)


__all__ = ["FAMILIES", "EcdsaSigner", "EcdsaVerifier", "RsaSigner", "RsaVerifier", "signer",
           "verifier"]

"""AES-GCM, NIST SP 800-38D, for 96-bit nonces (the only length ESP uses, RFC 4106 section 4).

Owns: GHASH with a per-key 8-bit multiplication table, GCTR, and the authenticated encryption and
decryption functions of SP 800-38D sections 7.1 and 7.2, with tags truncated to 8, 12 or 16 bytes
(SP 800-38D 5.2.1.2; RFC 4106 section 8 allows ICVs of 8, 12 and 16 octets).

Field elements of GF(2^128) are Python integers holding the 16-byte block big-endian, so the
spec's bit 0 (coefficient of x^0, "leftmost bit") is the integer's most significant bit 127.
"""
from __future__ import annotations

import hmac

from ipsec_core.errors import AuthenticationError

from .aes import AES, check_key, ctr_keystream, xor_bytes

#: R = 11100001 || 0^120 (SP 800-38D 6.3): the reduction constant of x^128 + x^7 + x^2 + x + 1.
_R = 0xE1 << 120

#: Largest plaintext of one invocation: 2^39 - 256 bits (SP 800-38D 5.2.1.1).
MAX_PLAINTEXT_BYTES = (2**39 - 256) // 8
MAX_AAD_BYTES = (2**64 - 1) // 8


def gf128_mul(x: int, y: int) -> int:
    """X . Y in GF(2^128), bit by bit, exactly as SP 800-38D 6.3 Algorithm 1.  Used only to
    build the per-key tables (and by the tests); the per-block path uses `Ghash`."""
    z, v = 0, y
    for i in range(127, -1, -1):          # x_0 is the most significant bit
        if (x >> i) & 1:
            z ^= v
        v = (v >> 1) ^ _R if v & 1 else v >> 1
    return z


class Ghash:
    """GHASH_H (SP 800-38D 6.4) with the "8-bit tables" method (McGrew & Viega, "The Galois/
    Counter Mode of Operation", section 4.1 "Software implementation"): multiplication by the
    fixed H is linear, so X . H = XOR over the 16 bytes X_i of M_i[X_i] . H, where table i holds
    (every byte value placed at byte i) . H.  16 tables x 256 entries, built once per key."""

    __slots__ = ("_tables",)

    def __init__(self, h: int):
        # basis[k] = x^k . H, where x^k is the integer with bit 127-k set; x^(k+1) . H is
        # x^k . H times x, which is the shift-and-reduce step of Algorithm 1.
        basis = []
        v = h
        for _ in range(128):
            basis.append(v)
            v = (v >> 1) ^ _R if v & 1 else v >> 1
        tables = []
        for i in range(16):              # byte i of the block (0 = leftmost)
            table = [0] * 256
            for j in range(8):           # bit j of that byte (7 = most significant) is x^(8i+7-j)
                table[1 << j] = basis[8 * i + 7 - j]
            for b in range(3, 256):
                low = b & -b
                if b != low:             # composite: sum of its lowest bit and the rest
                    table[b] = table[low] ^ table[b ^ low]
            tables.append(table)
        self._tables = tables

    def update(self, y: int, data: bytes) -> int:
        """Fold `data` (a multiple of 16 bytes) into Y: Y_i = (Y_(i-1) ^ X_i) . H (SP 800-38D 6.4)."""
        tables = self._tables
        for off in range(0, len(data), 16):
            y ^= int.from_bytes(data[off:off + 16], "big")
            z = 0
            for table, byte in zip(tables, y.to_bytes(16, "big")):
                z ^= table[byte]
            y = z
        return y


def _pad16(n: int) -> bytes:
    return bytes(-n % 16)


class AesGcm:
    """The `aes-gcm` AEAD bound to one key and one tag length."""

    family = "aes-gcm"
    nonce_bytes = 12

    def __init__(self, key: bytes, *, tag_bytes: int = 16, nonce_bytes: int = 12):
        if tag_bytes not in (8, 12, 16):
            raise ValueError(f"aes-gcm tag_bytes must be 8, 12 or 16, got {tag_bytes}")
        if nonce_bytes != 12:
            raise ValueError(f"aes-gcm nonce must be 12 bytes (96-bit IV), got nonce_bytes={nonce_bytes}")
        self.tag_bytes = tag_bytes
        self._aes = AES(check_key(self.family, key))
        # Hash subkey H = CIPH_K(0^128) (SP 800-38D 7.1 step 1).
        self._ghash = Ghash(self._aes.encrypt_int(0))

    def _j0(self, nonce: bytes) -> int:
        if len(nonce) != 12:
            raise ValueError(f"aes-gcm nonce must be 12 bytes, got {len(nonce)}")
        # Pre-counter block J0 = IV || 0^31 || 1 for a 96-bit IV (SP 800-38D 7.1 step 2).
        return (int.from_bytes(nonce, "big") << 32) | 1

    def _tag(self, j0: int, aad: bytes, ciphertext: bytes) -> bytes:
        # S = GHASH_H(A || 0^v || C || 0^u || [len(A)]_64 || [len(C)]_64)   (7.1 steps 4-5)
        g = self._ghash
        y = g.update(0, bytes(aad) + _pad16(len(aad)))
        y = g.update(y, bytes(ciphertext) + _pad16(len(ciphertext)))
        y = g.update(y, (8 * len(aad)).to_bytes(8, "big") + (8 * len(ciphertext)).to_bytes(8, "big"))
        # T = MSB_t(GCTR_K(J0, S))   (7.1 step 6)
        full = (self._aes.encrypt_int(j0) ^ y).to_bytes(16, "big")
        return full[: self.tag_bytes]

    def _gctr(self, j0: int, data: bytes) -> bytes:
        # GCTR_K(inc_32(J0), data) (SP 800-38D 6.5): only the low 32 bits count.
        if not data:
            return b""
        icb = (j0 & ~0xFFFFFFFF) | ((j0 + 1) & 0xFFFFFFFF)
        return xor_bytes(data, ctr_keystream(self._aes, icb, len(data), width=32))

    def encrypt(self, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
        """GCM-AE_K(IV, P, A) (SP 800-38D 7.1): returns C || T."""
        j0 = self._j0(nonce)
        if len(plaintext) > MAX_PLAINTEXT_BYTES or len(aad) > MAX_AAD_BYTES:
            raise ValueError("aes-gcm plaintext or aad longer than SP 800-38D 5.2.1.1 allows")
        ciphertext = self._gctr(j0, plaintext)                    # 7.1 step 3
        return ciphertext + self._tag(j0, aad, ciphertext)

    def decrypt(self, nonce: bytes, ciphertext_and_tag: bytes, aad: bytes) -> bytes:
        """GCM-AD_K(IV, C, A, T) (SP 800-38D 7.2): the tag is checked before any plaintext is
        produced, and on mismatch only FAIL (AuthenticationError) is returned."""
        j0 = self._j0(nonce)
        t = self.tag_bytes
        if len(ciphertext_and_tag) < t:
            raise AuthenticationError(f"aes-gcm input ({len(ciphertext_and_tag)} bytes) is shorter than the {t}-byte tag")
        ciphertext = ciphertext_and_tag[:-t]
        tag = ciphertext_and_tag[-t:]
        if len(ciphertext) > MAX_PLAINTEXT_BYTES:                 # 7.2 step 1
            raise AuthenticationError("aes-gcm ciphertext longer than SP 800-38D allows")
        if not hmac.compare_digest(self._tag(j0, aad, ciphertext), tag):  # 7.2 steps 5-8
            raise AuthenticationError("aes-gcm tag mismatch")
        return self._gctr(j0, ciphertext)                         # 7.2 step 3

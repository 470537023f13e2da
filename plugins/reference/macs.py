"""The MAC families: HMAC (RFC 2104) over hashlib's SHA-1/SHA-2, AES-XCBC-MAC (RFC 3566) and
AES-CMAC (RFC 4493).  Every one returns its full-length output; ICV truncation (HMAC-SHA-256-128,
AES-XCBC-MAC-96, AES-CMAC-96 ...) is the core's job.
"""
from __future__ import annotations

import hashlib
import struct

from .aes import AES, check_key

_BLOCK = struct.Struct(">4I")
_MASK128 = (1 << 128) - 1


class Hmac:
    """HMAC (RFC 2104 section 2): H(K XOR opad, H(K XOR ipad, text)).

    The hash function H comes from hashlib; the construction is written out here.  Both padded
    keys are hashed once, when the key is bound, and each message resumes from a copy of those
    states (RFC 2104 section 4, "Implementation Note").
    """

    _HASHES = {
        "hmac-sha1": hashlib.sha1,
        "hmac-sha256": hashlib.sha256,
        "hmac-sha384": hashlib.sha384,
        "hmac-sha512": hashlib.sha512,
    }

    def __init__(self, family: str, key: bytes):
        try:
            new = self._HASHES[family]
        except KeyError:
            raise ValueError(f"unknown HMAC family {family!r}; known: {sorted(self._HASHES)}") from None
        self.family = family
        key = bytes(key)
        block = new().block_size                  # B: 64 bytes for SHA-1/SHA-256, 128 for SHA-384/512
        self.digest_bytes = new().digest_size     # L: 20, 32, 48, 64
        if len(key) > block:                      # keys longer than B are first hashed (section 2)
            key = new(key).digest()
        key = key.ljust(block, b"\x00")           # then padded with zeros to B bytes
        self._inner = new(bytes(b ^ 0x36 for b in key))   # K XOR ipad
        self._outer = new(bytes(b ^ 0x5C for b in key))   # K XOR opad

    def mac(self, data: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(data)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()


def _cbc_mac_with_last(aes: AES, data: bytes, k_full: int, k_partial: int) -> bytes:
    """The common shape of XCBC (RFC 3566 4.3) and CMAC (RFC 4493 2.4): CBC-MAC with zero IV
    over all blocks, where the last block is XORed with `k_full` when it is complete, or padded
    with 10* (a 0x80 byte then zeros) and XORed with `k_partial` when it is not (an empty message
    counts as one incomplete block)."""
    n = len(data)
    if n and n % 16 == 0:
        body, last, extra = data[:-16], data[-16:], k_full
    else:
        cut = n - n % 16
        body, last = data[:cut], bytes(data[cut:]) + b"\x80" + bytes(15 - n % 16)
        extra = k_partial
    enc = aes.encrypt_words
    unpack = _BLOCK.unpack_from
    e0 = e1 = e2 = e3 = 0
    for off in range(0, len(body), 16):
        m0, m1, m2, m3 = unpack(body, off)
        e0, e1, e2, e3 = enc(e0 ^ m0, e1 ^ m1, e2 ^ m2, e3 ^ m3)
    m = int.from_bytes(last, "big") ^ extra
    e = (e0 << 96) | (e1 << 64) | (e2 << 32) | e3
    return aes.encrypt_int(m ^ e).to_bytes(16, "big")


class AesXcbc:
    """AES-XCBC-MAC (RFC 3566 section 4): 16-byte key, full 16-byte output."""

    family = "aes-xcbc"
    digest_bytes = 16

    def __init__(self, key: bytes):
        aes = AES(check_key(self.family, key, (16,)))
        # Derive K1, K2, K3 (RFC 3566 4.3 step 1): K1 = E(K, 0x01..01), K2 = E(K, 0x02..02), K3 = E(K, 0x03..03).
        self._k1 = AES(aes.encrypt_block(b"\x01" * 16))
        self._k2 = int.from_bytes(aes.encrypt_block(b"\x02" * 16), "big")
        self._k3 = int.from_bytes(aes.encrypt_block(b"\x03" * 16), "big")

    def mac(self, data: bytes) -> bytes:
        # Steps 2-7: CBC with key K1 from E[0] = 0; the last block XOR K2 (complete) or
        # padded and XOR K3 (incomplete), then encrypted with K1.
        return _cbc_mac_with_last(self._k1, data, self._k2, self._k3)


def _double(x: int) -> int:
    """Doubling in GF(2^128) for CMAC subkeys (RFC 4493 2.3): shift left by one bit, and XOR
    Rb = 0x87 when the bit shifted out was 1."""
    return ((x << 1) & _MASK128) ^ (0x87 if x >> 127 else 0)


class AesCmac:
    """AES-CMAC (RFC 4493 section 2): 16/24/32-byte key (SP 800-38B), full 16-byte output."""

    family = "aes-cmac"
    digest_bytes = 16

    def __init__(self, key: bytes):
        self._aes = AES(check_key(self.family, key))
        # Generate_Subkey (RFC 4493 2.3): L = AES-K(0^128); K1 = double(L); K2 = double(K1).
        l_ = self._aes.encrypt_int(0)
        self._k1 = _double(l_)
        self._k2 = _double(self._k1)

    def mac(self, data: bytes) -> bytes:
        # AES-CMAC (RFC 4493 2.4): the last block XOR K1 (complete) or padded and XOR K2.
        return _cbc_mac_with_last(self._aes, data, self._k1, self._k2)

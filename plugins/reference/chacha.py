"""ChaCha20-Poly1305, RFC 8439 (as used by ESP and IKEv2, RFC 7634).

Owns: the ChaCha20 block function (RFC 8439 2.3) and stream encryption (2.4), Poly1305 (2.5) on
Python big integers, the one-time key generation (2.6) and the AEAD construction (2.8).
"""
from __future__ import annotations

import hmac
import struct

from ipsec_core.errors import AuthenticationError

from .aes import xor_bytes

_M32 = 0xFFFFFFFF
_WORDS_LE = struct.Struct("<16I")
#: "expand 32-byte k" as four little-endian words (RFC 8439 2.3).
_CONSTANTS = (0x61707865, 0x3320646E, 0x79622D32, 0x6B206574)
#: Poly1305 prime 2^130 - 5 and the clamp of r (RFC 8439 2.5).
_P1305 = (1 << 130) - 5
_CLAMP = 0x0FFFFFFC0FFFFFFC0FFFFFFC0FFFFFFF
#: The 32-bit block counter allows 2^32 blocks of 64 bytes; the AEAD starts at counter 1.
MAX_PLAINTEXT_BYTES = (2**32 - 1) * 64


def chacha20_block(key_words: tuple[int, ...], counter: int, nonce_words: tuple[int, ...]) -> bytes:
    """The ChaCha20 block function (RFC 8439 2.3): 20 rounds (10 column + diagonal double
    rounds) over the 4x4 state, then the input state is added back word by word (2.3 step 5)."""
    state = [*_CONSTANTS, *key_words, counter & _M32, *nonce_words]
    x0, x1, x2, x3, x4, x5, x6, x7, x8, x9, x10, x11, x12, x13, x14, x15 = state
    for _ in range(10):
        # The quarter round (RFC 8439 2.1), written out for each of the eight calls of 2.3:
        #   a += b; d ^= a; d <<<= 16;  c += d; b ^= c; b <<<= 12;
        #   a += b; d ^= a; d <<<= 8;   c += d; b ^= c; b <<<= 7.
        # QUARTERROUND(0, 4, 8, 12)  (column 1)
        x0 = (x0 + x4) & _M32; x12 ^= x0; x12 = ((x12 << 16) & _M32) | (x12 >> 16)
        x8 = (x8 + x12) & _M32; x4 ^= x8; x4 = ((x4 << 12) & _M32) | (x4 >> 20)
        x0 = (x0 + x4) & _M32; x12 ^= x0; x12 = ((x12 << 8) & _M32) | (x12 >> 24)
        x8 = (x8 + x12) & _M32; x4 ^= x8; x4 = ((x4 << 7) & _M32) | (x4 >> 25)
        # QUARTERROUND(1, 5, 9, 13)  (column 2)
        x1 = (x1 + x5) & _M32; x13 ^= x1; x13 = ((x13 << 16) & _M32) | (x13 >> 16)
        x9 = (x9 + x13) & _M32; x5 ^= x9; x5 = ((x5 << 12) & _M32) | (x5 >> 20)
        x1 = (x1 + x5) & _M32; x13 ^= x1; x13 = ((x13 << 8) & _M32) | (x13 >> 24)
        x9 = (x9 + x13) & _M32; x5 ^= x9; x5 = ((x5 << 7) & _M32) | (x5 >> 25)
        # QUARTERROUND(2, 6, 10, 14)  (column 3)
        x2 = (x2 + x6) & _M32; x14 ^= x2; x14 = ((x14 << 16) & _M32) | (x14 >> 16)
        x10 = (x10 + x14) & _M32; x6 ^= x10; x6 = ((x6 << 12) & _M32) | (x6 >> 20)
        x2 = (x2 + x6) & _M32; x14 ^= x2; x14 = ((x14 << 8) & _M32) | (x14 >> 24)
        x10 = (x10 + x14) & _M32; x6 ^= x10; x6 = ((x6 << 7) & _M32) | (x6 >> 25)
        # QUARTERROUND(3, 7, 11, 15)  (column 4)
        x3 = (x3 + x7) & _M32; x15 ^= x3; x15 = ((x15 << 16) & _M32) | (x15 >> 16)
        x11 = (x11 + x15) & _M32; x7 ^= x11; x7 = ((x7 << 12) & _M32) | (x7 >> 20)
        x3 = (x3 + x7) & _M32; x15 ^= x3; x15 = ((x15 << 8) & _M32) | (x15 >> 24)
        x11 = (x11 + x15) & _M32; x7 ^= x11; x7 = ((x7 << 7) & _M32) | (x7 >> 25)
        # QUARTERROUND(0, 5, 10, 15)  (diagonal 1)
        x0 = (x0 + x5) & _M32; x15 ^= x0; x15 = ((x15 << 16) & _M32) | (x15 >> 16)
        x10 = (x10 + x15) & _M32; x5 ^= x10; x5 = ((x5 << 12) & _M32) | (x5 >> 20)
        x0 = (x0 + x5) & _M32; x15 ^= x0; x15 = ((x15 << 8) & _M32) | (x15 >> 24)
        x10 = (x10 + x15) & _M32; x5 ^= x10; x5 = ((x5 << 7) & _M32) | (x5 >> 25)
        # QUARTERROUND(1, 6, 11, 12)  (diagonal 2)
        x1 = (x1 + x6) & _M32; x12 ^= x1; x12 = ((x12 << 16) & _M32) | (x12 >> 16)
        x11 = (x11 + x12) & _M32; x6 ^= x11; x6 = ((x6 << 12) & _M32) | (x6 >> 20)
        x1 = (x1 + x6) & _M32; x12 ^= x1; x12 = ((x12 << 8) & _M32) | (x12 >> 24)
        x11 = (x11 + x12) & _M32; x6 ^= x11; x6 = ((x6 << 7) & _M32) | (x6 >> 25)
        # QUARTERROUND(2, 7, 8, 13)  (diagonal 3)
        x2 = (x2 + x7) & _M32; x13 ^= x2; x13 = ((x13 << 16) & _M32) | (x13 >> 16)
        x8 = (x8 + x13) & _M32; x7 ^= x8; x7 = ((x7 << 12) & _M32) | (x7 >> 20)
        x2 = (x2 + x7) & _M32; x13 ^= x2; x13 = ((x13 << 8) & _M32) | (x13 >> 24)
        x8 = (x8 + x13) & _M32; x7 ^= x8; x7 = ((x7 << 7) & _M32) | (x7 >> 25)
        # QUARTERROUND(3, 4, 9, 14)  (diagonal 4)
        x3 = (x3 + x4) & _M32; x14 ^= x3; x14 = ((x14 << 16) & _M32) | (x14 >> 16)
        x9 = (x9 + x14) & _M32; x4 ^= x9; x4 = ((x4 << 12) & _M32) | (x4 >> 20)
        x3 = (x3 + x4) & _M32; x14 ^= x3; x14 = ((x14 << 8) & _M32) | (x14 >> 24)
        x9 = (x9 + x14) & _M32; x4 ^= x9; x4 = ((x4 << 7) & _M32) | (x4 >> 25)
    out = (x0, x1, x2, x3, x4, x5, x6, x7, x8, x9, x10, x11, x12, x13, x14, x15)
    # Serialize the sum of working state and input state, little-endian (2.3 steps 5-6).
    return _WORDS_LE.pack(*[(a + b) & _M32 for a, b in zip(out, state)])


def chacha20_xor(key_words: tuple[int, ...], counter: int, nonce_words: tuple[int, ...], data: bytes) -> bytes:
    """The ChaCha20 encryption algorithm (RFC 8439 2.4): data XOR the key stream of blocks
    counter, counter + 1, ..."""
    if not data:
        return b""
    nblocks = (len(data) + 63) // 64
    stream = b"".join(chacha20_block(key_words, counter + j, nonce_words) for j in range(nblocks))
    return xor_bytes(data, stream[: len(data)])


def poly1305_mac(message: bytes, key: bytes) -> bytes:
    """Poly1305 (RFC 8439 2.5.1): r = clamp(key[0:16]), s = key[16:32] (little-endian);
    for every 16-byte chunk n (a shorter last one too), with a 0x01 byte appended:
    acc = ((acc + n) * r) mod (2^130 - 5); the tag is (acc + s) mod 2^128, little-endian."""
    r = int.from_bytes(key[:16], "little") & _CLAMP
    s = int.from_bytes(key[16:32], "little")
    acc = 0
    for off in range(0, len(message), 16):
        chunk = message[off:off + 16]
        n = int.from_bytes(chunk, "little") | (1 << (8 * len(chunk)))
        acc = ((acc + n) * r) % _P1305
    return ((acc + s) & ((1 << 128) - 1)).to_bytes(16, "little")


class ChaCha20Poly1305:
    """The `chacha20-poly1305` AEAD (RFC 8439 2.8) bound to one 256-bit key; 12-byte nonce,
    16-byte tag."""

    family = "chacha20-poly1305"
    nonce_bytes = 12

    def __init__(self, key: bytes, *, tag_bytes: int = 16, nonce_bytes: int = 12):
        key = bytes(key)
        if len(key) != 32:
            raise ValueError(f"chacha20-poly1305 key must be 32 bytes (256-bit), got {len(key)} bytes")
        if tag_bytes != 16:
            raise ValueError(f"chacha20-poly1305 tag_bytes must be 16, got {tag_bytes}")
        if nonce_bytes != 12:
            raise ValueError(f"chacha20-poly1305 nonce must be 12 bytes, got nonce_bytes={nonce_bytes}")
        self.tag_bytes = 16
        self._key_words = struct.unpack("<8I", key)

    def _nonce_words(self, nonce: bytes) -> tuple[int, ...]:
        if len(nonce) != 12:
            raise ValueError(f"chacha20-poly1305 nonce must be 12 bytes, got {len(nonce)}")
        return struct.unpack("<3I", nonce)

    def _tag(self, nonce_words: tuple[int, ...], aad: bytes, ciphertext: bytes) -> bytes:
        # One-time key: the first 32 bytes of the block with counter 0 (RFC 8439 2.6).
        otk = chacha20_block(self._key_words, 0, nonce_words)[:32]
        # mac_data = AAD || pad16(AAD) || C || pad16(C) || le64(len AAD) || le64(len C)  (2.8)
        mac_data = b"".join((
            bytes(aad), bytes(-len(aad) % 16),
            bytes(ciphertext), bytes(-len(ciphertext) % 16),
            struct.pack("<QQ", len(aad), len(ciphertext)),
        ))
        return poly1305_mac(mac_data, otk)

    def encrypt(self, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
        nw = self._nonce_words(nonce)
        if len(plaintext) > MAX_PLAINTEXT_BYTES:
            raise ValueError("chacha20-poly1305 plaintext longer than the 32-bit block counter allows")
        ciphertext = chacha20_xor(self._key_words, 1, nw, plaintext)   # counter starts at 1 (2.8)
        return ciphertext + self._tag(nw, aad, ciphertext)

    def decrypt(self, nonce: bytes, ciphertext_and_tag: bytes, aad: bytes) -> bytes:
        nw = self._nonce_words(nonce)
        if len(ciphertext_and_tag) < 16:
            raise AuthenticationError(
                f"chacha20-poly1305 input ({len(ciphertext_and_tag)} bytes) is shorter than the 16-byte tag")
        ciphertext, tag = ciphertext_and_tag[:-16], ciphertext_and_tag[-16:]
        # Verify first (RFC 8439 2.8: the tag is checked before decryption is released).
        if not hmac.compare_digest(self._tag(nw, aad, ciphertext), tag):
            raise AuthenticationError("chacha20-poly1305 tag mismatch")
        return chacha20_xor(self._key_words, 1, nw, ciphertext)

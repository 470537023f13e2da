"""AES-CCM, RFC 3610 (= NIST SP 800-38C), as used by ESP (RFC 4309: 11-byte nonce, 8/12/16-byte ICV).

Owns: the CCM formatting of B_0, the AAD length encoding, CBC-MAC authentication and the CTR
encryption with the A_i counter blocks.

Notation of RFC 3610 section 2: M = tag length in octets, L = size of the length field in octets,
so the nonce is 15 - L octets (7..13 here, L = 8..2).
"""
from __future__ import annotations

import hmac
import struct

from ipsec_core.errors import AuthenticationError

from .aes import AES, check_key, xor_bytes

_BLOCK = struct.Struct(">4I")
_MASK32 = 0xFFFFFFFF


def encode_aad_length(la: int) -> bytes:
    """The encoding of l(a) that prefixes the additional data (RFC 3610 2.2; SP 800-38C A.2.2)."""
    if la == 0:
        return b""                                    # no AAD: the Adata flag is 0, nothing added
    if la < 2**16 - 2**8:
        return la.to_bytes(2, "big")
    if la < 2**32:
        return b"\xff\xfe" + la.to_bytes(4, "big")
    if la < 2**64:
        return b"\xff\xff" + la.to_bytes(8, "big")
    raise ValueError("aes-ccm aad longer than 2^64 - 1 bytes")


class AesCcm:
    """The `aes-ccm` AEAD bound to one key, one tag length M and one nonce length 15 - L."""

    family = "aes-ccm"

    def __init__(self, key: bytes, *, tag_bytes: int = 16, nonce_bytes: int = 11):
        if tag_bytes not in (8, 12, 16):
            raise ValueError(f"aes-ccm tag_bytes must be 8, 12 or 16, got {tag_bytes}")
        if not 7 <= nonce_bytes <= 13:
            raise ValueError(f"aes-ccm nonce must be 7 to 13 bytes, got nonce_bytes={nonce_bytes}")
        self.tag_bytes = tag_bytes
        self.nonce_bytes = nonce_bytes
        self._aes = AES(check_key(self.family, key))
        self._L = 15 - nonce_bytes

    def _check_nonce(self, nonce: bytes) -> None:
        if len(nonce) != self.nonce_bytes:
            raise ValueError(f"aes-ccm nonce must be {self.nonce_bytes} bytes for this SA, got {len(nonce)}")

    def _cbc_mac(self, nonce: bytes, aad: bytes, message: bytes) -> bytes:
        """Authentication (RFC 3610 2.2): T = first M octets of the CBC-MAC of B_0, B_1, ..."""
        L, M = self._L, self.tag_bytes
        # Flags = 64*Adata + 8*M' + L', with M' = (M-2)/2 and L' = L-1; B_0 = Flags || Nonce || l(m).
        flags = (0x40 if aad else 0) | (((M - 2) // 2) << 3) | (L - 1)
        b0 = bytes([flags]) + bytes(nonce) + len(message).to_bytes(L, "big")
        # The AAD blocks: l(a) encoding || a, zero padded to a block boundary; then m zero padded.
        if aad:
            head = encode_aad_length(len(aad)) + bytes(aad)
            head += bytes(-len(head) % 16)
        else:
            head = b""
        blob = b0 + head + bytes(message) + bytes(-len(message) % 16)
        # X_1 = E(K, B_0); X_(i+1) = E(K, X_i XOR B_i).
        enc = self._aes.encrypt_words
        unpack = _BLOCK.unpack_from
        x0 = x1 = x2 = x3 = 0
        for off in range(0, len(blob), 16):
            b0_, b1_, b2_, b3_ = unpack(blob, off)
            x0, x1, x2, x3 = enc(x0 ^ b0_, x1 ^ b1_, x2 ^ b2_, x3 ^ b3_)
        return _BLOCK.pack(x0, x1, x2, x3)[:M]

    def _a(self, nonce: bytes) -> int:
        # A_i = Flags || Nonce || Counter i (RFC 3610 2.3), Flags = L' = L-1; returned as A_0.
        return int.from_bytes(bytes([self._L - 1]) + bytes(nonce) + bytes(self._L), "big")

    def _ctr(self, a0: int, data: bytes) -> bytes:
        """The message encryption of RFC 3610 2.3: S_i = E(K, A_i), i = 1, 2, ..."""
        if not data:
            return b""
        enc = self._aes.encrypt_words
        pack = _BLOCK.pack
        stream = []
        for i in range(1, (len(data) + 15) // 16 + 1):
            a = a0 | i
            stream.append(pack(*enc(a >> 96, (a >> 64) & _MASK32, (a >> 32) & _MASK32, a & _MASK32)))
        return xor_bytes(data, b"".join(stream)[: len(data)])

    def _s0(self, a0: int) -> bytes:
        return self._aes.encrypt_int(a0).to_bytes(16, "big")[: self.tag_bytes]

    def _check_length(self, n: int) -> None:
        if n >= 1 << (8 * self._L):
            raise ValueError(f"aes-ccm message of {n} bytes does not fit the {self._L}-byte length field")

    def encrypt(self, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
        """Returns the encrypted message || U, where U = T XOR first-M-bytes(S_0) (RFC 3610 2.3)."""
        self._check_nonce(nonce)
        self._check_length(len(plaintext))
        tag = self._cbc_mac(nonce, aad, plaintext)
        a0 = self._a(nonce)
        return self._ctr(a0, plaintext) + xor_bytes(tag, self._s0(a0))

    def decrypt(self, nonce: bytes, ciphertext_and_tag: bytes, aad: bytes) -> bytes:
        """RFC 3610 2.5: decrypt, recompute T, compare; on mismatch reveal nothing but the failure."""
        self._check_nonce(nonce)
        M = self.tag_bytes
        if len(ciphertext_and_tag) < M:
            raise AuthenticationError(f"aes-ccm input ({len(ciphertext_and_tag)} bytes) is shorter than the {M}-byte tag")
        ciphertext, received = ciphertext_and_tag[:-M], ciphertext_and_tag[-M:]
        if len(ciphertext) >= 1 << (8 * self._L):   # no valid message is this long: it cannot verify
            raise AuthenticationError(f"aes-ccm ciphertext of {len(ciphertext)} bytes exceeds the {self._L}-byte length field")
        a0 = self._a(nonce)
        plaintext = self._ctr(a0, ciphertext)
        expected = xor_bytes(self._cbc_mac(nonce, aad, plaintext), self._s0(a0))
        if not hmac.compare_digest(expected, received):
            raise AuthenticationError("aes-ccm tag mismatch")
        return plaintext

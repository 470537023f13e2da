"""Fast paths of the `cryptodome` backend: pycryptodome objects keyed once per SA, reused per
message.

Owns: computing AES-GCM, AES-CCM, AES-CBC, AES-CTR, ChaCha20-Poly1305, HMAC, AES-CMAC and
AES-XCBC-MAC from pycryptodome objects that are built once per SA (key schedule, GHASH tables,
keyed hash states) instead of once per message, and the guard on the one private pycryptodome
interface this takes (its C GHASH).
Must not: hold protocol rules (the core builds nonces and IVs and truncates nothing here beyond
the family's tag length); generate IVs; release plaintext before its tag verifies.

Why: creating a pycryptodome cipher object costs microseconds of Python (about 30 us for a GCM
object: an ECB object for H, a GHASH table, two CTR objects; about 7 us for an ECB, CBC or CTR
object), far more than the C work on one packet.  So, per SA:

- AES-GCM: one AES-ECB object encrypts, in one call, J0 and all the counter blocks of a packet
  (nonce || 32-bit counter, built with one `bytes.join` over precomputed counter suffixes); the
  key stream is XORed as Python integers; GHASH is pycryptodome's own C GHASH (CLMUL when the CPU
  has it) on tables expanded from H once per SA.  That GHASH is private to pycryptodome
  (`Crypto.Cipher._mode_gcm`), so `ghash_support()` checks it exists and gives the same answers as
  `AES.new(..., MODE_GCM)` on a known-answer run before any SA uses it; otherwise the backend
  keeps the public per-message path and logs why.
- AES-CTR: the same ECB key stream when the counter block ends in 00000001 (RFC 3686, what ESP
  sends); other counter blocks take the public per-message path.
- AES-CBC decryption: one ECB decryption of all blocks, XORed with IV || C[:-1].
- AES-CBC encryption, and the CBC-MACs of CCM, CMAC and XCBC, chain: they run on one public
  AES-CBC object per SA (`_CbcChain`).  A CBC object is a stream: after a message its chaining
  value is the message's last ciphertext block.  XORing that block (and the wanted IV) into the
  next message's first block gives exactly CBC with the wanted IV; a lock keeps the chaining
  value and the object in step.
- AES-CCM: that CBC-MAC, and the ECB key stream over A_0..A_n.
- ChaCha20-Poly1305: one `ChaCha20` object per message (its key depends on nothing else), seeked
  to block 1, and `Poly1305.new(cipher=ChaCha20)` over the RFC 8439 MAC input: the same public
  primitives `ChaCha20_Poly1305` uses, without its per-call state machine.
- HMAC: inner and outer hash objects keyed once (RFC 2104 pads), `copy()`-ed per message.

Decryption computes the tag over the received ciphertext and compares it with
`hmac.compare_digest` before any plaintext is made (GCM, ChaCha20) or returned (CCM, whose MAC
is over the plaintext).  Messages longer than `MAX_FAST_BYTES` take the public per-message path.
"""
from __future__ import annotations

import logging
import threading
from hmac import compare_digest

from ipsec_core.errors import AuthenticationError

log = logging.getLogger(__name__)

#: Longest message (bytes) the fast paths take; longer ones use the public per-message objects
#: (an ESP packet is at most 65535 bytes).  It bounds the counter suffix tables below.
MAX_FAST_BYTES = 1 << 16
_MAX_BLOCKS = MAX_FAST_BYTES // 16

_Z = bytes(16)
_frm = int.from_bytes
_ONE = b"\x00\x00\x00\x01"

_suffix_cache: dict[tuple[int, int], list[bytes]] = {}


def counter_suffixes(width: int, first: int) -> list[bytes]:
    """`[b"", first, first + 1, ...]` as `width`-byte big-endian counters, for
    `prefix.join(table[:k + 1])`: k counter blocks prefix || counter, from `first`, in one call."""
    table = _suffix_cache.get((width, first))
    if table is None:
        top = min(first + _MAX_BLOCKS + 2, 1 << (8 * width))
        table = [b""] + [i.to_bytes(width, "big") for i in range(first, top)]
        _suffix_cache[(width, first)] = table
    return table


# -- the private C GHASH of pycryptodome, guarded -------------------------------------------------
_ghash_state: tuple | None = None


def ghash_support():
    """`(ghash, None)` when pycryptodome's C GHASH is usable here, else `(None, reason)`.

    `ghash` is a callable `(h: bytes) -> GhashKey` (tables expanded once).  Checked once per
    process: the private names must exist, and GCM built on them must give the same bytes as the
    public `AES.new(..., MODE_GCM)` on a known-answer run.  A failure is logged once.
    """
    global _ghash_state
    if _ghash_state is None:
        try:
            ghash, reason = _find_ghash()
            if ghash is not None:
                reason = _known_answer(ghash)
                if reason is not None:
                    ghash = None
        except Exception as exc:          # anything unexpected: keep the public path
            ghash, reason = None, f"{exc.__class__.__name__}: {exc}"
        if reason is not None:
            log.warning("cryptodome: AES-GCM uses the public per-message path (slower): %s", reason)
        _ghash_state = (ghash, reason)
    return _ghash_state


def _find_ghash():
    try:
        from Crypto.Cipher import _mode_gcm
        from Crypto.Util._raw_api import (SmartPointer, VoidPointer, c_size_t, c_uint8_ptr,
                                          create_string_buffer, get_raw_buffer)
    except ImportError as exc:
        return None, f"pycryptodome's GHASH module is not importable ({exc})"
    impl = getattr(_mode_gcm, "_ghash_clmul", None) or getattr(_mode_gcm, "_ghash_portable", None)
    names = ("ghash", "ghash_expand", "ghash_destroy")
    if impl is None or not all(callable(getattr(impl, n, None)) for n in names):
        return None, ("pycryptodome has no _ghash_clmul/_ghash_portable with ghash, ghash_expand "
                      "and ghash_destroy")
    c_ghash, expand, destroy = impl.ghash, impl.ghash_expand, impl.ghash_destroy

    class GhashKey:
        """GHASH tables for one H; `digest(data)` is GHASH_H(data), data a multiple of 16 bytes."""

        __slots__ = ("_tables", "_ptr")

        def __init__(self, h: bytes):
            pointer = VoidPointer()
            result = expand(c_uint8_ptr(h), pointer.address_of())
            if result:
                raise ValueError(f"error {result} while expanding the GHASH key")
            self._tables = SmartPointer(pointer.get(), destroy)   # frees them with this object
            self._ptr = self._tables.get()

        def digest(self, data: bytes) -> bytes:
            y = create_string_buffer(16)                           # zeroes: Y_0
            result = c_ghash(y, c_uint8_ptr(data), c_size_t(len(data)), y, self._ptr)
            if result:
                raise ValueError(f"error {result} in GHASH")
            return get_raw_buffer(y)

    return GhashKey, None


def _known_answer(ghash) -> str | None:
    from Crypto.Cipher import AES

    key = bytes(range(1, 17))
    gcm = FastGcm(AES, key, 16, ghash, None)
    for n, la in ((0, 0), (0, 20), (1, 8), (16, 12), (17, 8), (64, 12), (300, 8)):
        nonce = bytes((n + i) & 0xFF for i in range(12))
        pt = bytes((7 * i + n) & 0xFF for i in range(n))
        aad = bytes((3 * i + la) & 0xFF for i in range(la))
        ref = AES.new(key, AES.MODE_GCM, nonce=nonce, mac_len=16)
        ref.update(aad)
        want = b"".join(ref.encrypt_and_digest(pt))
        if gcm.encrypt(nonce, pt, aad) != want or gcm.decrypt(nonce, want, aad) != pt:
            return f"GCM on pycryptodome's private GHASH disagrees with AES.new(MODE_GCM) ({n} bytes)"
    return None


# -- AEADs --------------------------------------------------------------------------------------
class FastGcm:
    """AES-GCM, 12-byte nonce, tag 8/12/16: per-SA ECB object and GHASH tables (see above)."""

    __slots__ = ("tag_bytes", "_ecb", "_ghash", "_cut", "_public", "_table")

    def __init__(self, aes, key: bytes, tag_bytes: int, ghash, public):
        ecb = aes.new(key, aes.MODE_ECB)
        self.tag_bytes = tag_bytes
        self._ecb = ecb.encrypt
        self._ghash = ghash(ecb.encrypt(_Z)).digest           # H = E_K(0^128)
        self._cut = 8 * (16 - tag_bytes)
        self._public = public            # per-message path: other nonce sizes, long messages
        self._table = counter_suffixes(4, 1)                   # J0 = nonce || 1, then 2, 3, ...

    def encrypt(self, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
        n = len(plaintext)
        if len(nonce) != 12 or n > MAX_FAST_BYTES:
            return self._public.encrypt(nonce, plaintext, aad)
        nb = (n + 15) >> 4
        pad = (nb << 4) - n
        blocks = bytes(nonce).join(self._table[:nb + 2])            # J0, then the counters
        stream = bytearray(len(blocks))                              # E(J0) || key stream
        self._ecb(blocks, stream)
        ct = (_frm(plaintext, "big") ^ (_frm(stream[16:], "big") >> (pad << 3))).to_bytes(n, "big")
        la = len(aad)
        s = self._ghash(b"".join((aad, _Z[:-la & 15], ct, _Z[:pad],
                                  ((la << 67) | (n << 3)).to_bytes(16, "big"))))
        t = self.tag_bytes
        return ct + ((_frm(stream[:16], "big") ^ _frm(s, "big")) >> self._cut).to_bytes(t, "big")

    def decrypt(self, nonce: bytes, ciphertext_and_tag: bytes, aad: bytes) -> bytes:
        t = self.tag_bytes
        n = len(ciphertext_and_tag) - t
        if n < 0:
            raise AuthenticationError("AEAD input shorter than its tag")
        if len(nonce) != 12 or n > MAX_FAST_BYTES:
            return self._public.decrypt(nonce, ciphertext_and_tag, aad)
        nb = (n + 15) >> 4
        pad = (nb << 4) - n
        ct = ciphertext_and_tag[:n]
        blocks = bytes(nonce).join(self._table[:nb + 2])
        stream = bytearray(len(blocks))
        self._ecb(blocks, stream)
        la = len(aad)
        s = self._ghash(b"".join((aad, _Z[:-la & 15], ct, _Z[:pad],
                                  ((la << 67) | (n << 3)).to_bytes(16, "big"))))
        tag = ((_frm(stream[:16], "big") ^ _frm(s, "big")) >> self._cut).to_bytes(t, "big")
        if not compare_digest(tag, ciphertext_and_tag[n:]):
            raise AuthenticationError("AEAD tag does not verify")
        return (_frm(ct, "big") ^ (_frm(stream[16:], "big") >> (pad << 3))).to_bytes(n, "big")


class CbcChain:
    """AES-CBC encryption with any IV on one public CBC object (see the module docstring).

    `encrypt(x, data)` is CBC-encrypt(IV = x as 16 bytes, data), data a non-empty multiple of 16
    bytes; the caller checks that.
    """

    __slots__ = ("_aes", "_key", "_enc", "_prev", "_lock")

    def __init__(self, aes, key: bytes):
        self._aes = aes
        self._key = key
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self._enc = self._aes.new(self._key, self._aes.MODE_CBC, iv=_Z).encrypt
        self._prev = 0                   # the object's chaining value, as an integer

    def encrypt(self, x: int, data: bytes) -> bytes:
        with self._lock:
            try:
                out = self._enc((_frm(data[:16], "big") ^ x ^ self._prev).to_bytes(16, "big")
                                + data[16:])
            except BaseException:
                self._reset()            # the object and _prev may no longer agree
                raise
            self._prev = _frm(out[-16:], "big")
        return out


def _ccm_aad_length(la: int) -> bytes:
    if la < 0xFF00:
        return la.to_bytes(2, "big")
    if la < 1 << 32:
        return b"\xff\xfe" + la.to_bytes(4, "big")
    return b"\xff\xff" + la.to_bytes(8, "big")


class FastCcm:
    """AES-CCM (RFC 3610 / SP 800-38C), nonce 7..13 bytes, tag 8/12/16: CBC-MAC on a `CbcChain`,
    CTR as one ECB call over A_0..A_n."""

    __slots__ = ("tag_bytes", "_ecb", "_mac", "_cut", "_public")

    def __init__(self, aes, key: bytes, tag_bytes: int, public):
        self.tag_bytes = tag_bytes
        self._ecb = aes.new(key, aes.MODE_ECB).encrypt
        self._mac = CbcChain(aes, key)
        self._cut = 8 * (16 - tag_bytes)
        self._public = public

    def _fits(self, nonce: bytes, n: int) -> bool:
        return 7 <= len(nonce) <= 13 and n <= MAX_FAST_BYTES and n < 1 << (8 * (15 - len(nonce)))

    def _stream(self, nonce: bytes, q: int, nb: int) -> bytearray:
        """E(A_0) || E(A_1) ... E(A_nb), A_i = (q - 1) || nonce || i."""
        blocks = (bytes((q - 1,)) + bytes(nonce)).join(counter_suffixes(q, 0)[:nb + 2])
        stream = bytearray(len(blocks))
        self._ecb(blocks, stream)
        return stream

    def _tag(self, nonce: bytes, q: int, plaintext: bytes, aad: bytes) -> int:
        """The CBC-MAC T (16 bytes, as an integer) over B_0, the encoded AAD and the plaintext."""
        n, la = len(plaintext), len(aad)
        flags = (64 if la else 0) | ((self.tag_bytes - 2) << 2) | (q - 1)
        b0 = bytes((flags,)) + bytes(nonce) + n.to_bytes(q, "big")
        if la:
            head = _ccm_aad_length(la)
            parts = (b0, head, aad, _Z[:-(len(head) + la) & 15], plaintext, _Z[:-n & 15])
        else:
            parts = (b0, plaintext, _Z[:-n & 15])
        return _frm(self._mac.encrypt(0, b"".join(parts))[-16:], "big")

    def encrypt(self, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
        n = len(plaintext)
        if not self._fits(nonce, n):
            return self._public.encrypt(nonce, plaintext, aad)
        q = 15 - len(nonce)
        nb = (n + 15) >> 4
        stream = self._stream(nonce, q, nb)
        ct = (_frm(plaintext, "big") ^ (_frm(stream[16:], "big") >> (((nb << 4) - n) << 3))
              ).to_bytes(n, "big")
        tag = (self._tag(nonce, q, plaintext, aad) ^ _frm(stream[:16], "big")) >> self._cut
        return ct + tag.to_bytes(self.tag_bytes, "big")

    def decrypt(self, nonce: bytes, ciphertext_and_tag: bytes, aad: bytes) -> bytes:
        t = self.tag_bytes
        n = len(ciphertext_and_tag) - t
        if n < 0:
            raise AuthenticationError("AEAD input shorter than its tag")
        if not self._fits(nonce, n):
            return self._public.decrypt(nonce, ciphertext_and_tag, aad)
        q = 15 - len(nonce)
        nb = (n + 15) >> 4
        stream = self._stream(nonce, q, nb)
        pt = (_frm(ciphertext_and_tag[:n], "big") ^ (_frm(stream[16:], "big") >> (((nb << 4) - n) << 3))
              ).to_bytes(n, "big")
        tag = (self._tag(nonce, q, pt, aad) ^ _frm(stream[:16], "big")) >> self._cut
        if not compare_digest(tag.to_bytes(t, "big"), ciphertext_and_tag[n:]):
            raise AuthenticationError("AEAD tag does not verify")
        return pt


class FastChaCha:
    """ChaCha20-Poly1305 (RFC 8439) from the public `ChaCha20` and `Poly1305` (see above)."""

    __slots__ = ("tag_bytes", "_key", "_chacha", "_poly", "_public")

    def __init__(self, chacha20, poly1305, key: bytes, public):
        self.tag_bytes = 16
        self._key = key
        self._chacha = chacha20
        self._poly = poly1305.new
        self._public = public            # per-message ChaCha20_Poly1305: other nonce sizes

    def _mac(self, nonce: bytes, ct: bytes, aad: bytes) -> bytes:
        la, n = len(aad), len(ct)
        data = b"".join((aad, _Z[:-la & 15], ct, _Z[:-n & 15], (la | (n << 64)).to_bytes(16, "little")))
        # Poly1305 keyed with the first 32 bytes of ChaCha20 block 0 under (key, nonce)
        return self._poly(key=self._key, cipher=self._chacha, nonce=nonce, data=data).digest()

    def encrypt(self, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
        if len(nonce) != 12:
            return self._public.encrypt(nonce, plaintext, aad)
        c = self._chacha.new(key=self._key, nonce=nonce)
        c.seek(64)                                     # block counter 1
        ct = c.encrypt(plaintext)
        return ct + self._mac(nonce, ct, aad)

    def decrypt(self, nonce: bytes, ciphertext_and_tag: bytes, aad: bytes) -> bytes:
        if len(nonce) != 12:
            return self._public.decrypt(nonce, ciphertext_and_tag, aad)
        n = len(ciphertext_and_tag) - 16
        if n < 0:
            raise AuthenticationError("AEAD input shorter than its tag")
        ct = ciphertext_and_tag[:n]
        if not compare_digest(self._mac(nonce, ct, aad), ciphertext_and_tag[n:]):
            raise AuthenticationError("AEAD tag does not verify")
        c = self._chacha.new(key=self._key, nonce=nonce)
        c.seek(64)
        return c.decrypt(ct)


# -- ciphers ------------------------------------------------------------------------------------
class FastCbc:
    """AES-CBC without padding: encryption on a `CbcChain`, decryption as ECB + XOR."""

    __slots__ = ("_chain", "_ecb_decrypt", "_public")

    def __init__(self, aes, key: bytes, public):
        self._chain = CbcChain(aes, key)
        self._ecb_decrypt = aes.new(key, aes.MODE_ECB).decrypt
        self._public = public

    def encrypt(self, iv: bytes, data: bytes) -> bytes:
        n = len(data)
        if len(iv) != 16 or n & 15 or not n:
            return self._public.encrypt(iv, data)       # b"", or pycryptodome's own ValueError
        return self._chain.encrypt(_frm(iv, "big"), data)

    def decrypt(self, iv: bytes, data: bytes) -> bytes:
        n = len(data)
        if len(iv) != 16 or n & 15 or not n:
            return self._public.decrypt(iv, data)
        blocks = bytearray(n)
        self._ecb_decrypt(data, blocks)
        return (_frm(blocks, "big") ^ _frm(bytes(iv) + data[:-16], "big")).to_bytes(n, "big")


class FastCtr:
    """AES-CTR, 16-byte initial counter block incremented as a 128-bit integer: the ECB key
    stream when the block ends in 00000001 (RFC 3686), else the public per-message path."""

    __slots__ = ("_ecb", "_table", "_public")

    def __init__(self, aes, key: bytes, public):
        self._ecb = aes.new(key, aes.MODE_ECB).encrypt
        self._table = counter_suffixes(4, 1)
        self._public = public

    def encrypt(self, iv: bytes, data: bytes) -> bytes:
        n = len(data)
        if len(iv) != 16 or iv[12:] != _ONE or not n or n > MAX_FAST_BYTES:
            return self._public.encrypt(iv, data)
        nb = (n + 15) >> 4
        blocks = bytes(iv[:12]).join(self._table[:nb + 1])
        stream = bytearray(len(blocks))
        self._ecb(blocks, stream)
        return (_frm(data, "big") ^ (_frm(stream, "big") >> (((nb << 4) - n) << 3))).to_bytes(n, "big")

    decrypt = encrypt


# -- MACs ---------------------------------------------------------------------------------------
class CopiedHmac:
    """HMAC (RFC 2104) on inner and outer pycryptodome hash objects keyed once, copied per call."""

    __slots__ = ("digest_bytes", "_inner", "_outer")

    def __init__(self, hash_module, key: bytes):
        block = hash_module.block_size
        if len(key) > block:
            key = hash_module.new(key).digest()
        key = bytes(key).ljust(block, b"\x00")
        self.digest_bytes = hash_module.digest_size
        self._inner = hash_module.new(bytes(b ^ 0x36 for b in key))
        self._outer = hash_module.new(bytes(b ^ 0x5C for b in key))

    def mac(self, data: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(data)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()


def _dbl(x: int) -> int:
    """Doubling in GF(2^128) as RFC 4493 derives the CMAC subkeys."""
    x <<= 1
    return (x ^ 0x87) & ((1 << 128) - 1) if x >> 128 else x


class _ChainedMac:
    """CBC-MAC with a final-block tweak (CMAC, XCBC): k_full for a complete last block, k_pad
    for a padded one (10*), on a `CbcChain`."""

    __slots__ = ("digest_bytes", "_chain", "_k_full", "_k_pad")

    def mac(self, data: bytes) -> bytes:
        n = len(data)
        r = n & 15
        if n and not r:
            head, last = data[:-16], _frm(data[-16:], "big") ^ self._k_full
        else:
            head = data[:n - r]
            last = _frm(bytes(data[n - r:]) + b"\x80" + _Z[:15 - r], "big") ^ self._k_pad
        return self._chain.encrypt(0, bytes(head) + last.to_bytes(16, "big"))[-16:]


class ChainedCmac(_ChainedMac):
    """AES-CMAC (RFC 4493)."""

    __slots__ = ()

    def __init__(self, aes, key: bytes):
        self.digest_bytes = 16
        k1 = _dbl(_frm(aes.new(key, aes.MODE_ECB).encrypt(_Z), "big"))
        self._k_full, self._k_pad = k1, _dbl(k1)
        self._chain = CbcChain(aes, key)


class ChainedXcbc(_ChainedMac):
    """AES-XCBC-MAC (RFC 3566): K1, K2, K3 from AES-ECB; the chain keyed with K1."""

    __slots__ = ()

    def __init__(self, aes, key: bytes):
        if len(key) != 16:
            raise ValueError(f"AES-XCBC-MAC takes a 16-byte key, not {len(key)}")
        derived = aes.new(key, aes.MODE_ECB).encrypt(b"\x01" * 16 + b"\x02" * 16 + b"\x03" * 16)
        self.digest_bytes = 16
        self._k_full = _frm(derived[16:32], "big")
        self._k_pad = _frm(derived[32:], "big")
        self._chain = CbcChain(aes, derived[:16])

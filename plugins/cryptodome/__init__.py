"""The `cryptodome` backend: every primitive on `pycryptodome` (package `Crypto`), and the
elliptic-curve key exchanges (`.kex`; pycryptodome has no MODP Diffie-Hellman).

Owns: driving pycryptodome's cipher objects and mapping its "MAC check failed" `ValueError` to
`AuthenticationError`.
Must not: hold protocol rules (nonce layout, ICV truncation on the wire, padding, sequence
numbers): those live in the core.  See `ipsec_core.crypto.base` for each family's contract.

pycryptodome binds the nonce when a cipher object is created, and creating one costs far more
than the work on a packet (about 30 us for GCM here).  So by default (`fast=True`) the primitives
are the per-SA objects of `._fast`: a reusable ECB object for counter-mode key streams and CBC
decryption, one CBC object chained across messages for CBC encryption and the CBC-MACs, the C
GHASH of pycryptodome on tables expanded once (a private interface, checked at probe time; when it
is missing or disagrees, AES-GCM keeps the per-message path below and a warning says why), hash
objects keyed once for HMAC.  The per-message classes below are the plain public use, kept as that
fallback, for what the fast paths do not take (other nonce sizes, messages over 64 KiB), and as
`CryptodomeBackend(fast=False)` for comparison.
"""
from __future__ import annotations

from ipsec_core import hookimpl
from ipsec_core.crypto.base import Backend, signature_features, standard_features
from ipsec_core.errors import AuthenticationError

from . import _fast, kex, sign

_AEAD_TAGS = (8, 12, 16)


def _aes_key(key: bytes) -> None:
    if len(key) not in (16, 24, 32):
        raise ValueError(f"AES key must be 16, 24 or 32 bytes, not {len(key)}")


class _Gcm:
    __slots__ = ("tag_bytes", "_key", "_new", "_mode")

    def __init__(self, aes, key: bytes, tag_bytes: int):
        self.tag_bytes = tag_bytes
        self._key = key
        self._new = aes.new
        self._mode = aes.MODE_GCM

    def encrypt(self, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
        c = self._new(self._key, self._mode, nonce=nonce, mac_len=self.tag_bytes)
        c.update(aad)
        ct, tag = c.encrypt_and_digest(plaintext)
        return ct + tag

    def decrypt(self, nonce: bytes, ciphertext_and_tag: bytes, aad: bytes) -> bytes:
        t = self.tag_bytes
        if len(ciphertext_and_tag) < t:
            raise AuthenticationError("AEAD input shorter than its tag")
        c = self._new(self._key, self._mode, nonce=nonce, mac_len=t)
        c.update(aad)
        try:
            return c.decrypt_and_verify(ciphertext_and_tag[:-t], ciphertext_and_tag[-t:])
        except ValueError:
            raise AuthenticationError("AEAD tag does not verify") from None


class _Ccm:
    __slots__ = ("tag_bytes", "_key", "_new", "_mode")

    def __init__(self, aes, key: bytes, tag_bytes: int):
        self.tag_bytes = tag_bytes
        self._key = key
        self._new = aes.new
        self._mode = aes.MODE_CCM

    def encrypt(self, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
        c = self._new(self._key, self._mode, nonce=nonce, mac_len=self.tag_bytes,
                      msg_len=len(plaintext), assoc_len=len(aad))
        c.update(aad)
        ct, tag = c.encrypt_and_digest(plaintext)
        return ct + tag

    def decrypt(self, nonce: bytes, ciphertext_and_tag: bytes, aad: bytes) -> bytes:
        t = self.tag_bytes
        n = len(ciphertext_and_tag) - t
        if n < 0:
            raise AuthenticationError("AEAD input shorter than its tag")
        c = self._new(self._key, self._mode, nonce=nonce, mac_len=t, msg_len=n, assoc_len=len(aad))
        c.update(aad)
        try:
            return c.decrypt_and_verify(ciphertext_and_tag[:n], ciphertext_and_tag[n:])
        except ValueError:
            raise AuthenticationError("AEAD tag does not verify") from None


class _ChaCha:
    __slots__ = ("tag_bytes", "_key", "_new")

    def __init__(self, module, key: bytes):
        self.tag_bytes = 16
        self._key = key
        self._new = module.new

    def encrypt(self, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
        c = self._new(key=self._key, nonce=nonce)
        c.update(aad)
        ct, tag = c.encrypt_and_digest(plaintext)
        return ct + tag

    def decrypt(self, nonce: bytes, ciphertext_and_tag: bytes, aad: bytes) -> bytes:
        if len(ciphertext_and_tag) < 16:
            raise AuthenticationError("AEAD input shorter than its tag")
        c = self._new(key=self._key, nonce=nonce)
        c.update(aad)
        try:
            return c.decrypt_and_verify(ciphertext_and_tag[:-16], ciphertext_and_tag[-16:])
        except ValueError:
            raise AuthenticationError("AEAD tag does not verify") from None


class _Cbc:
    __slots__ = ("_key", "_new", "_mode")

    def __init__(self, aes, key: bytes):
        self._key = key
        self._new = aes.new
        self._mode = aes.MODE_CBC

    def encrypt(self, iv: bytes, data: bytes) -> bytes:
        return self._new(self._key, self._mode, iv=iv).encrypt(data)

    def decrypt(self, iv: bytes, data: bytes) -> bytes:
        return self._new(self._key, self._mode, iv=iv).decrypt(data)


class _Ctr:
    """The whole 16-byte IV is the initial counter block; `nonce=b""` makes pycryptodome count
    over all 128 bits, big-endian, as the contract asks."""

    __slots__ = ("_key", "_new", "_mode")

    def __init__(self, aes, key: bytes):
        self._key = key
        self._new = aes.new
        self._mode = aes.MODE_CTR

    def encrypt(self, iv: bytes, data: bytes) -> bytes:
        return self._new(self._key, self._mode, nonce=b"", initial_value=iv).encrypt(data)

    decrypt = encrypt


class _Hmac:
    __slots__ = ("digest_bytes", "_key", "_new", "_hash")

    def __init__(self, hmac_module, hash_module, key: bytes):
        self.digest_bytes = hash_module.digest_size
        self._key = key
        self._new = hmac_module.new
        self._hash = hash_module

    def mac(self, data: bytes) -> bytes:
        return self._new(self._key, data, digestmod=self._hash).digest()


class _Cmac:
    __slots__ = ("digest_bytes", "_key", "_new", "_aes")

    def __init__(self, cmac_module, aes, key: bytes):
        self.digest_bytes = 16
        self._key = key
        self._new = cmac_module.new
        self._aes = aes

    def mac(self, data: bytes) -> bytes:
        return self._new(self._key, data, ciphermod=self._aes).digest()


class _Xcbc:
    """AES-XCBC-MAC (RFC 3566): subkeys from AES-ECB, the chain as AES-CBC with a zero IV."""

    __slots__ = ("digest_bytes", "_k1", "_k2", "_k3", "_new", "_mode")

    def __init__(self, aes, key: bytes):
        if len(key) != 16:
            raise ValueError(f"AES-XCBC-MAC takes a 16-byte key, not {len(key)}")
        derived = aes.new(key, aes.MODE_ECB).encrypt(b"\x01" * 16 + b"\x02" * 16 + b"\x03" * 16)
        self.digest_bytes = 16
        self._k1 = derived[:16]
        self._k2 = int.from_bytes(derived[16:32], "big")
        self._k3 = int.from_bytes(derived[32:], "big")
        self._new = aes.new
        self._mode = aes.MODE_CBC

    def mac(self, data: bytes) -> bytes:
        n = len(data)
        if n and n % 16 == 0:
            head, last, k = data[:-16], data[-16:], self._k2
        else:
            cut = n - n % 16
            head, last, k = data[:cut], data[cut:] + b"\x80" + bytes(15 - n % 16), self._k3
        last = (int.from_bytes(last, "big") ^ k).to_bytes(16, "big")
        return self._new(self._k1, self._mode, iv=bytes(16)).encrypt(head + last)[-16:]


class CryptodomeBackend(Backend):
    name = "cryptodome"
    priority = 200
    description = "pycryptodome (package Crypto)"

    def __init__(self, *, fast: bool = True):
        self.fast = fast

    def probe(self) -> str | None:
        try:
            from Crypto.Cipher import AES

            c = AES.new(bytes(16), AES.MODE_GCM, nonce=bytes(12))
            c.encrypt_and_digest(b"probe")
        except ImportError as exc:
            return f"pycryptodome is not importable ({exc}); pip install 'pycryptodome>=3.19'"
        except Exception as exc:
            return f"pycryptodome cannot do AES-GCM ({exc.__class__.__name__}: {exc})"
        if self.fast:
            _fast.ghash_support()        # checks the private GHASH once; logs when it falls back
        return None

    def features(self):
        # no MODP: pycryptodome has no finite-field Diffie-Hellman (see `.kex`)
        return standard_features(modp=False) + signature_features()

    def aead(self, family: str, key: bytes, *, tag_bytes: int, nonce_bytes: int):
        if family in ("aes-gcm", "aes-ccm"):
            from Crypto.Cipher import AES

            _aes_key(key)
            if family == "aes-gcm":
                if tag_bytes not in _AEAD_TAGS or nonce_bytes != 12:
                    raise ValueError(f"aes-gcm takes tag 8/12/16 and nonce 12 bytes, "
                                     f"not tag {tag_bytes} / nonce {nonce_bytes}")
                public = _Gcm(AES, key, tag_bytes)
                ghash = _fast.ghash_support()[0] if self.fast else None
                return _fast.FastGcm(AES, key, tag_bytes, ghash, public) if ghash else public
            if tag_bytes not in _AEAD_TAGS or not 7 <= nonce_bytes <= 13:
                raise ValueError(f"aes-ccm takes tag 8/12/16 and nonce 7..13 bytes, "
                                 f"not tag {tag_bytes} / nonce {nonce_bytes}")
            public = _Ccm(AES, key, tag_bytes)
            return _fast.FastCcm(AES, key, tag_bytes, public) if self.fast else public
        if family == "chacha20-poly1305":
            from Crypto.Cipher import ChaCha20, ChaCha20_Poly1305
            from Crypto.Hash import Poly1305

            if len(key) != 32 or tag_bytes != 16 or nonce_bytes != 12:
                raise ValueError("chacha20-poly1305 takes a 32-byte key, tag 16 and nonce 12 bytes")
            public = _ChaCha(ChaCha20_Poly1305, key)
            return _fast.FastChaCha(ChaCha20, Poly1305, key, public) if self.fast else public
        return super().aead(family, key, tag_bytes=tag_bytes, nonce_bytes=nonce_bytes)

    def cipher(self, family: str, key: bytes):
        if family in ("aes-cbc", "aes-ctr"):
            from Crypto.Cipher import AES

            _aes_key(key)
            if family == "aes-cbc":
                public = _Cbc(AES, key)
                return _fast.FastCbc(AES, key, public) if self.fast else public
            public = _Ctr(AES, key)
            return _fast.FastCtr(AES, key, public) if self.fast else public
        return super().cipher(family, key)

    _HASHES = {"hmac-sha1": "SHA1", "hmac-sha256": "SHA256",
               "hmac-sha384": "SHA384", "hmac-sha512": "SHA512"}

    def mac(self, family: str, key: bytes):
        if family in self._HASHES:
            import importlib

            from Crypto.Hash import HMAC

            hash_module = importlib.import_module(f"Crypto.Hash.{self._HASHES[family]}")
            return _fast.CopiedHmac(hash_module, key) if self.fast else _Hmac(HMAC, hash_module, key)
        if family == "aes-cmac":
            from Crypto.Cipher import AES
            from Crypto.Hash import CMAC

            _aes_key(key)
            return _fast.ChainedCmac(AES, key) if self.fast else _Cmac(CMAC, AES, key)
        if family == "aes-xcbc":
            from Crypto.Cipher import AES

            return _fast.ChainedXcbc(AES, key) if self.fast else _Xcbc(AES, key)
        return super().mac(family, key)

    def key_exchange(self, family: str, *, private_key: bytes | None = None):
        """ECDH and X25519/X448 on pycryptodome: see `.kex` (no MODP groups)."""
        if family not in kex.FAMILIES:
            return super().key_exchange(family, private_key=private_key)
        return kex.key_exchange(family, private_key=private_key)

    def signer(self, family: str, private_key: bytes):
        """ECDSA and RSA (PKCS#1 v1.5, PSS) signing on pycryptodome: see `.sign`."""
        if family not in sign.FAMILIES:
            return super().signer(family, private_key)
        return sign.signer(family, private_key)

    def verifier(self, family: str, public_key: bytes):
        if family not in sign.FAMILIES:
            return super().verifier(family, public_key)
        return sign.verifier(family, public_key)


@hookimpl
def ipsec_register_backends(register):
    register(CryptodomeBackend())

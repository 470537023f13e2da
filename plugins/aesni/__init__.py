"""The `aesni` backend: every primitive on the `cryptography` package (OpenSSL; AES-NI/VAES and
CLMUL when the CPU has them), key exchange included (`.kex`).

Owns: binding keys to OpenSSL contexts once per SA, and mapping `InvalidTag` to
`AuthenticationError`.
Must not: hold protocol rules (nonce layout, ICV truncation on the wire, padding, sequence
numbers): those live in the core.  See `ipsec_core.crypto.base` for each family's contract.

Speed notes (why the per-call code looks the way it does):

- AEADs keep one `AESGCM` / `AESCCM` / `ChaCha20Poly1305` object per SA: OpenSSL's key schedule
  runs once, and a call costs about a microsecond.  Building a `Cipher(...)` context instead costs
  about 10 us per call, so truncated GCM tags (8 and 12 bytes) avoid it too: encryption truncates
  the 16-byte tag (a truncated GCM tag is by definition the leading bytes, SP 800-38D 5.2.1.2);
  decryption recovers the plaintext with a second GCM pass (CTR is its own inverse and GHASH
  never feeds the key stream), recomputes the tag over the received ciphertext and compares the
  leading bytes in constant time.  The plaintext is only returned after that comparison.
- HMAC and CMAC keep a keyed context and `copy()` it per call (the pad blocks / subkeys are
  computed once).
- CBC, CTR and XCBC build a `Cipher` context per call: `cryptography` has no way to reset an IV
  on an existing context.
"""
from __future__ import annotations

from hmac import compare_digest

from ipsec_core import hookimpl
from ipsec_core.crypto.base import Backend, signature_features, standard_features
from ipsec_core.errors import AuthenticationError

from . import kex, sign

_AEAD_TAGS = (8, 12, 16)


def _import_cryptography():
    """The `cryptography` names this backend uses; imported lazily so a missing package is a
    probe reason, not an import error of the plugin."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives import cmac, hashes, hmac
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    from cryptography.hazmat.primitives.ciphers.aead import AESCCM, AESGCM, ChaCha20Poly1305

    return {
        "InvalidTag": InvalidTag, "cmac": cmac, "hashes": hashes, "hmac": hmac,
        "Cipher": Cipher, "algorithms": algorithms, "modes": modes,
        "AESCCM": AESCCM, "AESGCM": AESGCM, "ChaCha20Poly1305": ChaCha20Poly1305,
    }


def _aes_key(key: bytes) -> None:
    if len(key) not in (16, 24, 32):
        raise ValueError(f"AES key must be 16, 24 or 32 bytes, not {len(key)}")


# -- AEADs ------------------------------------------------------------------------------------
class _BoundAead:
    """ciphertext || tag in, out; one OpenSSL object per SA.  Used for full-length tags."""

    __slots__ = ("tag_bytes", "encrypt", "_decrypt", "_invalid_tag", "fast_decrypt",
                 "fast_decrypt_errors")

    def __init__(self, primitive, tag_bytes: int, invalid_tag: type[Exception]):
        self.tag_bytes = tag_bytes
        # encrypt(nonce, plaintext, aad) -> ciphertext || tag is exactly the library's bound
        # method: no Python frame in between on the hot path.
        self.encrypt = primitive.encrypt
        self._decrypt = primitive.decrypt
        self._invalid_tag = invalid_tag
        # The optional fast-path pair (see ipsec_core.crypto.base.Aead): the library's own
        # decrypt, and the exception it raises on a bad tag.
        self.fast_decrypt = primitive.decrypt
        self.fast_decrypt_errors = (invalid_tag,)

    def decrypt(self, nonce: bytes, ciphertext_and_tag: bytes, aad: bytes) -> bytes:
        try:
            return self._decrypt(nonce, ciphertext_and_tag, aad)
        except self._invalid_tag:
            raise AuthenticationError("AEAD tag does not verify") from None


class _TruncatedGcm:
    """AES-GCM with an 8- or 12-byte tag on a bound `AESGCM` (see the module docstring)."""

    __slots__ = ("tag_bytes", "_encrypt", "_cut")

    def __init__(self, primitive, tag_bytes: int):
        self.tag_bytes = tag_bytes
        self._encrypt = primitive.encrypt
        self._cut = 16 - tag_bytes            # bytes of the full tag that are not sent

    def encrypt(self, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
        return self._encrypt(nonce, plaintext, aad)[:-self._cut]

    def decrypt(self, nonce: bytes, ciphertext_and_tag: bytes, aad: bytes) -> bytes:
        t = self.tag_bytes
        if len(ciphertext_and_tag) < t:
            raise AuthenticationError("AEAD input shorter than its tag")
        ciphertext = ciphertext_and_tag[:-t]
        # GCM "encryption" of the ciphertext yields the plaintext (same key stream); its tag is
        # discarded.  Encrypting that plaintext again yields the tag over the real ciphertext.
        plaintext = self._encrypt(nonce, ciphertext, aad)[:-16]
        expected = self._encrypt(nonce, plaintext, aad)[-16:-self._cut]
        if not compare_digest(expected, ciphertext_and_tag[-t:]):
            raise AuthenticationError("AEAD tag does not verify")
        return plaintext


# -- ciphers ----------------------------------------------------------------------------------
class _AesMode:
    """AES-CBC or AES-CTR without padding; a context per call (see the module docstring)."""

    __slots__ = ("_algorithm", "_mode", "_cipher")

    def __init__(self, c, key: bytes, mode):
        self._algorithm = c["algorithms"].AES(key)
        self._mode = mode
        self._cipher = c["Cipher"]

    def encrypt(self, iv: bytes, data: bytes) -> bytes:
        ctx = self._cipher(self._algorithm, self._mode(iv)).encryptor()
        return ctx.update(data) + ctx.finalize()

    def decrypt(self, iv: bytes, data: bytes) -> bytes:
        ctx = self._cipher(self._algorithm, self._mode(iv)).decryptor()
        return ctx.update(data) + ctx.finalize()


# -- MACs -------------------------------------------------------------------------------------
class _CopiedMac:
    """HMAC or CMAC: a keyed context made once, copied per message."""

    __slots__ = ("digest_bytes", "_ctx")

    def __init__(self, ctx, digest_bytes: int):
        self._ctx = ctx
        self.digest_bytes = digest_bytes

    def mac(self, data: bytes) -> bytes:
        ctx = self._ctx.copy()
        ctx.update(data)
        return ctx.finalize()


class _Xcbc:
    """AES-XCBC-MAC (RFC 3566) on AES-ECB (subkeys) and AES-CBC with a zero IV (the chain)."""

    __slots__ = ("digest_bytes", "_k1", "_k2", "_k3", "_cipher", "_cbc")

    def __init__(self, c, key: bytes):
        if len(key) != 16:
            raise ValueError(f"AES-XCBC-MAC takes a 16-byte key, not {len(key)}")
        ecb = c["Cipher"](c["algorithms"].AES(key), c["modes"].ECB()).encryptor()
        derived = ecb.update(b"\x01" * 16 + b"\x02" * 16 + b"\x03" * 16) + ecb.finalize()
        self.digest_bytes = 16
        self._k1 = c["algorithms"].AES(derived[:16])
        self._k2 = int.from_bytes(derived[16:32], "big")
        self._k3 = int.from_bytes(derived[32:], "big")
        self._cipher = c["Cipher"]
        self._cbc = c["modes"].CBC(bytes(16))

    def mac(self, data: bytes) -> bytes:
        n = len(data)
        if n and n % 16 == 0:
            head, last, k = data[:-16], data[-16:], self._k2
        else:
            cut = n - n % 16
            head, last, k = data[:cut], data[cut:] + b"\x80" + bytes(15 - n % 16), self._k3
        last = (int.from_bytes(last, "big") ^ k).to_bytes(16, "big")
        ctx = self._cipher(self._k1, self._cbc).encryptor()
        return (ctx.update(head + last) + ctx.finalize())[-16:]


class AesniBackend(Backend):
    name = "aesni"
    priority = 300
    description = "OpenSSL through the cryptography package (AES-NI, VAES, CLMUL when present)"

    def __init__(self) -> None:
        self._c: dict | None = None

    def _lib(self) -> dict:
        if self._c is None:
            self._c = _import_cryptography()
        return self._c

    def probe(self) -> str | None:
        try:
            c = self._lib()
        except Exception as exc:
            return (f"the cryptography package is not importable ({exc.__class__.__name__}: {exc}); "
                    "pip install 'cryptography>=42'")
        try:
            c["AESGCM"](bytes(16)).encrypt(bytes(12), b"probe", b"")
        except Exception as exc:
            return f"OpenSSL behind cryptography cannot do AES-GCM ({exc.__class__.__name__}: {exc})"
        return None

    def features(self):
        return standard_features() + signature_features()

    def aead(self, family: str, key: bytes, *, tag_bytes: int, nonce_bytes: int):
        c = self._lib()
        if family == "aes-gcm":
            _aes_key(key)
            if tag_bytes not in _AEAD_TAGS or nonce_bytes != 12:
                raise ValueError(f"aes-gcm takes tag 8/12/16 and nonce 12 bytes, "
                                 f"not tag {tag_bytes} / nonce {nonce_bytes}")
            primitive = c["AESGCM"](key)
            if tag_bytes == 16:
                return _BoundAead(primitive, 16, c["InvalidTag"])
            return _TruncatedGcm(primitive, tag_bytes)
        if family == "aes-ccm":
            _aes_key(key)
            if tag_bytes not in _AEAD_TAGS or not 7 <= nonce_bytes <= 13:
                raise ValueError(f"aes-ccm takes tag 8/12/16 and nonce 7..13 bytes, "
                                 f"not tag {tag_bytes} / nonce {nonce_bytes}")
            return _BoundAead(c["AESCCM"](key, tag_length=tag_bytes), tag_bytes, c["InvalidTag"])
        if family == "chacha20-poly1305":
            if len(key) != 32 or tag_bytes != 16 or nonce_bytes != 12:
                raise ValueError("chacha20-poly1305 takes a 32-byte key, tag 16 and nonce 12 bytes")
            return _BoundAead(c["ChaCha20Poly1305"](key), 16, c["InvalidTag"])
        return super().aead(family, key, tag_bytes=tag_bytes, nonce_bytes=nonce_bytes)

    def cipher(self, family: str, key: bytes):
        c = self._lib()
        if family == "aes-cbc":
            _aes_key(key)
            return _AesMode(c, key, c["modes"].CBC)
        if family == "aes-ctr":
            _aes_key(key)
            return _AesMode(c, key, c["modes"].CTR)
        return super().cipher(family, key)

    _HASHES = {"hmac-sha1": ("SHA1", 20), "hmac-sha256": ("SHA256", 32),
               "hmac-sha384": ("SHA384", 48), "hmac-sha512": ("SHA512", 64)}

    def mac(self, family: str, key: bytes):
        c = self._lib()
        if family in self._HASHES:
            hash_name, size = self._HASHES[family]
            return _CopiedMac(c["hmac"].HMAC(key, getattr(c["hashes"], hash_name)()), size)
        if family == "aes-cmac":
            _aes_key(key)
            return _CopiedMac(c["cmac"].CMAC(c["algorithms"].AES(key)), 16)
        if family == "aes-xcbc":
            return _Xcbc(c, key)
        return super().mac(family, key)

    def key_exchange(self, family: str, *, private_key: bytes | None = None):
        """MODP (dh), ECDH and X25519/X448 on OpenSSL: see `.kex`."""
        if family not in kex.FAMILIES:
            return super().key_exchange(family, private_key=private_key)
        return kex.key_exchange(family, private_key=private_key)

    def signer(self, family: str, private_key: bytes):
        """ECDSA and RSA (PKCS#1 v1.5, PSS) signing on OpenSSL: see `.sign`."""
        if family not in sign.FAMILIES:
            return super().signer(family, private_key)
        return sign.signer(family, private_key)

    def verifier(self, family: str, public_key: bytes):
        if family not in sign.FAMILIES:
            return super().verifier(family, public_key)
        return sign.verifier(family, public_key)


@hookimpl
def ipsec_register_backends(register):
    register(AesniBackend())

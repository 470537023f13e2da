"""The `reference` backend: every primitive of `ipsec_core.crypto.base` in pure Python.

It is the project's test oracle and the backend of last resort (priority 10): written to be read
against the specifications (FIPS 197, NIST SP 800-38A/B/C/D, RFC 2104, RFC 3566, RFC 3610,
RFC 4493, RFC 8439), not to be fast.  It uses no C crypto library; hashlib supplies only the hash
functions under HMAC and the signatures.  Table-driven AES and GHASH are not constant-time: do not use this backend
where an attacker can time the host.

Modules: `aes` (AES block cipher, aes-cbc, aes-ctr), `gcm` (aes-gcm), `ccm` (aes-ccm),
`chacha` (chacha20-poly1305), `macs` (hmac-*, aes-xcbc, aes-cmac), `kex` (MODP, ECP, X25519 and
X448 key exchange, RFC 3526 / 5903 / 7748), `sign` (ECDSA, RSA PKCS#1 v1.5 and PSS signatures,
FIPS 186-4 / RFC 8017).  The IKE PRFs are the core's adapter over `macs`.  Every object returned by
`aead`, `cipher` or `mac` is bound to its key (key schedule and tables computed once) and is
reused for any number of packets.
"""
from __future__ import annotations

from ipsec_core import hookimpl
from ipsec_core.crypto.base import (Aead, Backend, Cipher, KeyExchange, Mac, Signer, Verifier,
                                    signature_features, standard_features)

from . import kex, sign
from .aes import AES, AesCbc, AesCtr
from .ccm import AesCcm
from .chacha import ChaCha20Poly1305
from .gcm import AesGcm
from .macs import AesCmac, AesXcbc, Hmac

__all__ = [
    "AES", "AesCbc", "AesCcm", "AesCmac", "AesCtr", "AesGcm", "AesXcbc", "ChaCha20Poly1305",
    "Hmac", "ReferenceBackend", "ipsec_register_backends",
]


_AEADS = {"aes-gcm": AesGcm, "aes-ccm": AesCcm, "chacha20-poly1305": ChaCha20Poly1305}
_CIPHERS = {"aes-cbc": AesCbc, "aes-ctr": AesCtr}
_MACS = {
    "hmac-sha1": lambda key: Hmac("hmac-sha1", key),
    "hmac-sha256": lambda key: Hmac("hmac-sha256", key),
    "hmac-sha384": lambda key: Hmac("hmac-sha384", key),
    "hmac-sha512": lambda key: Hmac("hmac-sha512", key),
    "aes-xcbc": AesXcbc,
    "aes-cmac": AesCmac,
}


class ReferenceBackend(Backend):
    name = "reference"
    priority = 10
    description = "pure-Python reference implementation (test oracle; slow, not constant-time)"

    def features(self):
        return standard_features() + signature_features()

    def aead(self, family: str, key: bytes, *, tag_bytes: int, nonce_bytes: int) -> Aead:
        cls = _AEADS.get(family)
        if cls is None:
            return super().aead(family, key, tag_bytes=tag_bytes, nonce_bytes=nonce_bytes)
        return cls(key, tag_bytes=tag_bytes, nonce_bytes=nonce_bytes)

    def cipher(self, family: str, key: bytes) -> Cipher:
        cls = _CIPHERS.get(family)
        if cls is None:
            return super().cipher(family, key)
        return cls(key)

    def mac(self, family: str, key: bytes) -> Mac:
        make = _MACS.get(family)
        if make is None:
            return super().mac(family, key)
        return make(key)

    def key_exchange(self, family: str, *, private_key: bytes | None = None) -> KeyExchange:
        if family not in kex.FAMILIES:
            return super().key_exchange(family, private_key=private_key)
        return kex.key_exchange(family, private_key=private_key)

    def signer(self, family: str, private_key: bytes) -> Signer:
        if family not in sign.FAMILIES:
            return super().signer(family, private_key)
        return sign.signer(family, private_key)

    def verifier(self, family: str, public_key: bytes) -> Verifier:
        if family not in sign.FAMILIES:
            return super().verifier(family, public_key)
        return sign.verifier(family, public_key)


@hookimpl
def ipsec_register_backends(register):
    register(ReferenceBackend())

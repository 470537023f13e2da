"""The `ipsecmb` backend: Intel's Multi-Buffer Crypto for IPsec library (intel-ipsec-mb, the
library VPP and DPDK use) through a small C extension, `._ipsecmb`.

Owns: mapping the families of `ipsec_core.crypto.base` onto the extension's objects (each
expands its key once, when the SA binds it, and wipes it when the SA goes), the reason the
backend is unavailable when the extension was not built, and the batch calls the ESP batch
path uses (`BatchAead` for the AEADs; `encrypt_then_mac` for a cipher and a MAC of this
backend, run through the library's multi-buffer job API).
Must not: hold protocol rules of its own (nonce layout, ICV truncation on the wire, padding,
sequence numbers live in the core); the extension's fused ESP calls apply the core's bulk-path
rules to whole batches (`ipsec_core.dataplane.esp.bulk`), tested byte for byte against it.

The extension is optional: `setup.py` builds it at install when a C compiler, Python's headers
and the library's headers (Debian: libipsec-mb-dev) are there, and skips it with a message
otherwise; then `probe()` says so and every SA keeps the other backends.

Families: aes-gcm (128/192/256-bit keys; 8/12/16-byte tags), chacha20-poly1305, aes-cbc and
aes-ctr (128/192/256), hmac-sha1/256/384/512, aes-xcbc, aes-cmac (128/256: the library has no
192-bit CMAC), and the IKE PRFs over those MACs.  No AES-CCM (not asked for; aesni has it) and
no key exchange.  Priority 400: preferred over aesni (300) for what it offers and passes.
"""
from __future__ import annotations

from ipsec_core import hookimpl
from ipsec_core.crypto.base import Backend, Feature
from ipsec_core.errors import AuthenticationError

try:
    from . import _ipsecmb
except ImportError as exc:          # not built here: probe() reports it
    _ipsecmb = None
    _IMPORT_ERROR: str | None = f"{exc.__class__.__name__}: {exc}"
else:
    _IMPORT_ERROR = None

_AES = (128, 192, 256)
_MACS = {"hmac-sha1": "HMAC_SHA1", "hmac-sha256": "HMAC_SHA256", "hmac-sha384": "HMAC_SHA384",
         "hmac-sha512": "HMAC_SHA512", "aes-xcbc": "XCBC", "aes-cmac": "CMAC"}


class IpsecMbBackend(Backend):
    name = "ipsecmb"
    priority = 400
    description = "intel-ipsec-mb (multi-buffer AES-NI/VAES/AVX-512) through a C extension"

    def probe(self) -> str | None:
        if _ipsecmb is None:
            return (f"the C extension ipsec_plugins.ipsecmb._ipsecmb is not built "
                    f"({_IMPORT_ERROR}); install a C compiler, Python's headers and "
                    "libipsec-mb-dev (intel-ipsec-mb >= 1.3), then reinstall ipsec-suite")
        try:
            arch = _ipsecmb.arch()
        except Exception as exc:
            return f"intel-ipsec-mb cannot start here ({exc.__class__.__name__}: {exc})"
        if arch in ("none", "no-aesni"):
            return f"intel-ipsec-mb found no AES-NI on this CPU (code path {arch!r})"
        return None

    def features(self):
        from ipsec_core.transforms.iana import PRF_INFO

        prfs = [Feature(p.family) for p in PRF_INFO.values()]
        return (Feature("aes-gcm", _AES), Feature("chacha20-poly1305", (256,)),
                Feature("aes-cbc", _AES), Feature("aes-ctr", _AES),
                Feature("hmac-sha1"), Feature("hmac-sha256"), Feature("hmac-sha384"),
                Feature("hmac-sha512"), Feature("aes-xcbc", (128,)), Feature("aes-cmac", (128, 256)),
                *prfs)

    def aead(self, family: str, key: bytes, *, tag_bytes: int, nonce_bytes: int):
        if family == "aes-gcm":
            kind = _ipsecmb.GCM
        elif family == "chacha20-poly1305":
            kind = _ipsecmb.CHACHA
        else:
            return super().aead(family, key, tag_bytes=tag_bytes, nonce_bytes=nonce_bytes)
        if nonce_bytes != 12:
            raise ValueError(f"{family} takes a 12-byte nonce, not {nonce_bytes}")
        # The C object is the primitive itself: encrypt/decrypt and the batch calls are its
        # methods, with no Python frame in between; a bad tag raises AuthenticationError.
        return _ipsecmb.Aead(kind, bytes(key), tag_bytes, AuthenticationError)

    def cipher(self, family: str, key: bytes):
        if family == "aes-cbc":
            return _ipsecmb.Cipher(_ipsecmb.CBC, bytes(key))
        if family == "aes-ctr":
            return _ipsecmb.Cipher(_ipsecmb.CTR, bytes(key))
        return super().cipher(family, key)

    def mac(self, family: str, key: bytes):
        if family in _MACS:
            return _ipsecmb.Mac(getattr(_ipsecmb, _MACS[family]), bytes(key))
        return super().mac(family, key)

    def encrypt_then_mac(self, cipher, mac, *, icv_bytes: int, cipher_at: int):
        """ESP's cipher (or None for ESP null) and MAC of one SA as one batch object
        (`ipsec_core.crypto.base.BatchEncryptThenMac`): the library runs both in one job per
        packet.  None when either primitive is not this backend's, or the library's job API
        does not take this ICV length: the core then loops over the primitives."""
        if _ipsecmb is None or not isinstance(mac, _ipsecmb.Mac):
            return None
        if cipher is not None and not isinstance(cipher, _ipsecmb.Cipher):
            return None
        try:
            return _ipsecmb.Chain(cipher, mac, icv_bytes, cipher_at)
        except ValueError:
            return None


@hookimpl
def ipsec_register_backends(register):
    register(IpsecMbBackend())

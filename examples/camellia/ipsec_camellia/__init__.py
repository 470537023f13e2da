"""ipsec-camellia: Camellia for ipsec-suite's ESP, as a third-party plugin.

Adds two ESP transforms and the backend that computes them, on the `cryptography` package's
Camellia (OpenSSL):

- ENCR_CAMELLIA_CBC (IKEv2 transform id 23; RFC 4312): keywords camellia128, camellia192,
  camellia256 (and camellia = camellia128), as strongSwan writes them; random 16-byte IV, 16-byte
  blocks, integrity from a separate algorithm ("camellia128-sha256").
- ENCR_CAMELLIA_CTR (id 24; RFC 5529): keywords camellia128ctr, camellia192ctr, camellia256ctr;
  the RFC 3686 layout (keying material = key || 4-byte nonce, counter block = nonce || IV || 1),
  so the core drives it exactly like AES-CTR.

`cryptography` offers Camellia in CBC and ECB only, so CTR is built here on ECB: the key stream
is ECB over the counter blocks, XORed onto the data.  Known-answer vectors come from RFC 3713
and RFC 5528 (`vectors.json`; `tools/make_vectors.py` says how each was obtained or derived).

Owns: the transforms' facts and vectors, and binding keys to Camellia contexts.
Must not: hold protocol rules (IVs, padding, ICVs, sequence numbers): the core does those.
"""
from __future__ import annotations

import json
import warnings
from importlib import resources

from ipsec_core import hookimpl
from ipsec_core.crypto.base import Backend, Feature
from ipsec_core.transforms.iana import EncrTransform

__version__ = "0.1.0"

ENCR_CAMELLIA_CBC = 23          # IANA "IKEv2 Transform Type 1" (RFC 4312 / RFC 5529)
ENCR_CAMELLIA_CTR = 24
KEY_BITS = (128, 192, 256)
BLOCK_BYTES = 16


def load_vectors() -> dict:
    """The packaged vector file (RFC 3713 blocks, RFC 5528 CTR, derived CBC)."""
    with resources.files(__name__).joinpath("vectors.json").open("rb") as fh:
        return json.load(fh)


def cbc_vectors() -> list[dict]:
    return [{k: v[k] for k in ("id", "key", "iv", "plaintext", "ciphertext")}
            for v in load_vectors()["cbc"]]


def ctr_vectors() -> list[dict]:
    # The family's contract (like aes-ctr): the cipher gets the whole initial counter block.
    return [{"id": v["id"], "key": v["key"], "iv": v["counter_block"], "plaintext": v["plaintext"],
             "ciphertext": v["ciphertext"]} for v in load_vectors()["ctr"]]


def transforms() -> tuple[EncrTransform, ...]:
    return (
        EncrTransform(
            id=ENCR_CAMELLIA_CBC, name="ENCR_CAMELLIA_CBC",
            keywords={"camellia128": 128, "camellia192": 192, "camellia256": 256, "camellia": 128},
            kind="cipher", family="camellia-cbc", key_bits=KEY_BITS,
            iv_bytes=BLOCK_BYTES, block_bytes=BLOCK_BYTES,
            vectors=cbc_vectors(), description="Camellia-CBC (RFC 4312)"),
        EncrTransform(
            id=ENCR_CAMELLIA_CTR, name="ENCR_CAMELLIA_CTR",
            keywords={"camellia128ctr": 128, "camellia192ctr": 192, "camellia256ctr": 256},
            kind="cipher", family="camellia-ctr", key_bits=KEY_BITS,
            iv_bytes=8, block_bytes=4, salt_bytes=4, counter=True,
            vectors=ctr_vectors(), description="Camellia-CTR (RFC 5529), 4-byte nonce"),
    )


def _camellia():
    """cryptography's Camellia: in `decrepit` since 43, in `primitives` before (deprecated there)."""
    try:
        from cryptography.hazmat.decrepit.ciphers.algorithms import Camellia
    except ImportError:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from cryptography.hazmat.primitives.ciphers.algorithms import Camellia
    from cryptography.hazmat.primitives.ciphers import Cipher, modes

    return Camellia, Cipher, modes


def _key(key: bytes) -> bytes:
    if len(key) * 8 not in KEY_BITS:
        raise ValueError(f"Camellia key must be 16, 24 or 32 bytes, not {len(key)}")
    return bytes(key)


class _Cbc:
    """Camellia-CBC without padding; a context per call (cryptography cannot reset an IV)."""

    __slots__ = ("_algorithm", "_cipher", "_cbc")

    def __init__(self, key: bytes):
        camellia, cipher, modes = _camellia()
        self._algorithm = camellia(_key(key))
        self._cipher = cipher
        self._cbc = modes.CBC

    def encrypt(self, iv: bytes, data: bytes) -> bytes:
        if len(data) % BLOCK_BYTES:
            raise ValueError(f"camellia-cbc data must be a multiple of 16 bytes, not {len(data)}")
        ctx = self._cipher(self._algorithm, self._cbc(iv)).encryptor()
        return ctx.update(data) + ctx.finalize()

    def decrypt(self, iv: bytes, data: bytes) -> bytes:
        if len(data) % BLOCK_BYTES:
            raise ValueError(f"camellia-cbc data must be a multiple of 16 bytes, not {len(data)}")
        ctx = self._cipher(self._algorithm, self._cbc(iv)).decryptor()
        return ctx.update(data) + ctx.finalize()


class _CtrOnEcb:
    """Camellia-CTR on Camellia-ECB: iv is the whole 16-byte initial counter block, incremented
    as a 128-bit big-endian integer per block (the aes-ctr contract).  One ECB context per SA:
    ECB keeps no state between whole blocks, so it is reused, never finalized."""

    __slots__ = ("_ecb",)

    def __init__(self, key: bytes):
        camellia, cipher, modes = _camellia()
        self._ecb = cipher(camellia(_key(key)), modes.ECB()).encryptor().update

    def encrypt(self, iv: bytes, data: bytes) -> bytes:
        if len(iv) != BLOCK_BYTES:
            raise ValueError(f"camellia-ctr takes a 16-byte counter block, not {len(iv)} bytes")
        n = len(data)
        if not n:
            return b""
        start = int.from_bytes(iv, "big")
        blocks = -(-n // BLOCK_BYTES)
        counters = b"".join(((start + i) & ((1 << 128) - 1)).to_bytes(16, "big") for i in range(blocks))
        stream = self._ecb(counters)[:n]
        return (int.from_bytes(data, "big") ^ int.from_bytes(stream, "big")).to_bytes(n, "big")

    decrypt = encrypt


class CamelliaBackend(Backend):
    name = "camellia"
    priority = 150
    description = "Camellia-CBC and Camellia-CTR (on ECB) from the cryptography package (OpenSSL)"

    def probe(self) -> str | None:
        try:
            camellia, cipher, modes = _camellia()
        except Exception as exc:
            return f"the cryptography package has no Camellia ({exc.__class__.__name__}: {exc})"
        try:
            key = bytes.fromhex("0123456789abcdeffedcba9876543210")
            cipher(camellia(key), modes.ECB()).encryptor().update(key)
        except Exception as exc:
            return f"OpenSSL behind cryptography cannot do Camellia ({exc.__class__.__name__}: {exc})"
        return None

    def features(self):
        return (Feature("camellia-cbc", KEY_BITS), Feature("camellia-ctr", KEY_BITS))

    def cipher(self, family: str, key: bytes):
        if family == "camellia-cbc":
            return _Cbc(key)
        if family == "camellia-ctr":
            return _CtrOnEcb(key)
        return super().cipher(family, key)


@hookimpl
def ipsec_register_transforms(register):
    for transform in transforms():
        register(transform)


@hookimpl
def ipsec_register_backends(register):
    register(CamelliaBackend())

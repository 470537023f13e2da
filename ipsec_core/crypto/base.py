"""The tiny interface every crypto backend implements.

Owns: the shapes of `Backend`, `Aead`, `Cipher`, `Mac`, `Prf`, `KeyExchange`, `Signer`, `Verifier`
and `Feature`.
Must not: hold any protocol rule.  Nonce construction, IV policy, ICV truncation, constant-time
compare, padding and sequence numbers all live in the core (`ipsec_core.dataplane.esp.engine`): a backend only
computes a primitive on the bytes it is given.  (This is the lesson of pyca/cryptography's removed
multi-backend layer: keep the surface small, enforce invariants in one place.)

Primitive families and their contracts (what a backend promises for each):

==================  ======  ==============================================================
family              kind    contract
==================  ======  ==============================================================
aes-gcm             AEAD    nonce 12 bytes; tag_bytes 8, 12 or 16 (truncated GCM tag)
aes-ccm             AEAD    nonce 7..13 bytes (ESP uses 11: 3-byte salt + 8-byte IV);
                            tag_bytes 8, 12 or 16
chacha20-poly1305   AEAD    nonce 12 bytes; tag_bytes 16; key 256 bits (RFC 8439)
aes-cbc             CIPHER  iv 16 bytes; data a multiple of 16 bytes; no padding
aes-ctr             CIPHER  iv is the whole 16-byte initial counter block, incremented as a
                            128-bit big-endian integer per block; any data length
hmac-sha1           MAC     HMAC (RFC 2104), full 20-byte output; any key length
hmac-sha256/384/512 MAC     HMAC, full 32/48/64-byte output; any key length
aes-xcbc            MAC     AES-XCBC-MAC (RFC 3566), 16-byte key, full 16-byte output
aes-cmac            MAC     AES-CMAC (RFC 4493), 16/24/32-byte key, full 16-byte output
prf-hmac-sha1/256/  PRF     IKEv2 PRF: the full HMAC output, any key length (RFC 4868 2.1.2)
384/512
prf-aes128-xcbc     PRF     AES-XCBC-PRF-128 (RFC 4434): any key length, 16-byte output
prf-aes128-cmac     PRF     AES-CMAC-PRF-128 (RFC 4615): any key length, 16-byte output
modp2048/3072/4096  KE      RFC 3526 groups 14-16; encodings and peer checks in
                            `ipsec_core.crypto.kex`
ecp256/384/521      KE      RFC 5903 groups 19-21 (x || y public, x shared secret)
curve25519/448      KE      X25519/X448, groups 31-32 (RFC 7748, RFC 8031)
ecdsa-p256-sha256,  SIGN    ECDSA on P-256/384/521 with SHA-256/384/512, RSASSA-PKCS1-v1_5 and
ecdsa-p384-sha384,          RSASSA-PSS (MGF1 of the same hash, salt = hash length) with
ecdsa-p521-sha512,          SHA-256/384/512: keys and signature encodings in
rsa-pkcs1-sha256/           `ipsec_core.crypto.signature`
384/512, rsa-pss-
sha256/384/512
==================  ======  ==============================================================

PRFs come for free: the default `Backend.prf` is `ipsec_core.crypto.prf.MacPrf` over the
backend's own `mac` (the AES PRFs' key rule applied on top), so a backend that offers the MAC
family can declare the PRF family.  `KeyExchange.shared_secret` raises
`ipsec_core.errors.KeyExchangeError` for a peer value it must refuse (see `crypto.kex`), and
`Backend.key_exchange` with `private_key=` takes a fixed private key (known-answer tests only).
Signatures: `Backend.verifier(family, public_key)` takes a DER SubjectPublicKeyInfo and
`Backend.signer(family, private_key)` a DER PKCS#8 key, both bound once (the key parsed once);
`Verifier.verify(data, signature)` answers True or False and never raises for a malformed
signature; `Signer.sign(data)` hashes `data` itself.  A key that is not of the family raises
ValueError when the object is made.

Plugins may add families (hook `ipsec_register_transforms`): a new ESP transform names the
family its backend must implement and its kind, and the family is then accepted by `Feature`.
Its contract is the generic one of its kind (below) plus what the transform states: an AEAD
family takes the transform's key sizes, a nonce of salt + 8 bytes and a tag of the transform's
ICV length; a cipher family takes an IV of the transform's IV length (for a counter transform,
the whole 16-byte initial counter block, incremented as a 128-bit big-endian integer per block,
as for aes-ctr) and, unless it is a counter mode, data a multiple of the transform's block size.
`FAMILY_KIND` stays the table of the built-in families above; `family_kind` and
`known_families` answer for both.

`Aead.encrypt` returns ciphertext || tag.  `Aead.decrypt` takes ciphertext || tag and raises
`ipsec_core.errors.AuthenticationError` when the tag does not verify (and returns nothing then).

Optional, for the batch fast path: an Aead may also have `fast_decrypt` (same call and result as
`decrypt`) together with `fast_decrypt_errors`, the tuple of exceptions it raises on a bad tag,
so the hot loop can call a library's bound method directly instead of a translating wrapper.
Likewise `encrypt` may simply be the library's bound method, stored as an instance attribute.

Optional, for backends that compute many packets per call (the GPU): `encrypt_batch(nonces,
plaintexts, aads) -> list[ciphertext || tag]` and `decrypt_batch(nonces, ciphertexts_and_tags,
aads) -> list[plaintext or None]` (None where the tag does not verify), over sequences of equal
length.  When an AEAD has them, `protect_batch` / `unprotect_batch` of an SA make one call per
batch (see `ipsec_core.dataplane.esp.offload`); everything else about the packets stays in the core.

Optional, for backends that write and check whole ESP packets themselves (the GPU's framing
kernels): `FramingAead` (below).  The engine asks it once, at SA install, and then hands it
every batch first.
"""
from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Iterable, Protocol, runtime_checkable

from ipsec_core.crypto.prf import MacPrf
from ipsec_core.crypto.signature import SIGNATURE_FAMILIES
from ipsec_core.transforms.iana import KE_INFO, PRF_INFO, KeKind


class FeatureKind(str, enum.Enum):
    AEAD = "aead"
    CIPHER = "cipher"
    MAC = "mac"
    PRF = "prf"
    KE = "ke"
    SIGNATURE = "signature"


FAMILY_KIND: dict[str, FeatureKind] = {
    "aes-gcm": FeatureKind.AEAD,
    "aes-ccm": FeatureKind.AEAD,
    "chacha20-poly1305": FeatureKind.AEAD,
    "aes-cbc": FeatureKind.CIPHER,
    "aes-ctr": FeatureKind.CIPHER,
    "hmac-sha1": FeatureKind.MAC,
    "hmac-sha256": FeatureKind.MAC,
    "hmac-sha384": FeatureKind.MAC,
    "hmac-sha512": FeatureKind.MAC,
    "aes-xcbc": FeatureKind.MAC,
    "aes-cmac": FeatureKind.MAC,
    **{p.family: FeatureKind.PRF for p in PRF_INFO.values()},
    **{k.family: FeatureKind.KE for k in KE_INFO.values()},
    **{name: FeatureKind.SIGNATURE for name in SIGNATURE_FAMILIES},
}


#: Families added by plugin transforms (see `register_family`).  Names only map to a kind, so a
#: family registered by one registry instance is harmless to another: offering it still takes a
#: backend that declares it and passes the transform's vectors.
_PLUGIN_FAMILY_KIND: dict[str, FeatureKind] = {}


def family_kind(family: str) -> FeatureKind | None:
    """The kind of a built-in or plugin-registered family, or None when it is unknown."""
    return FAMILY_KIND.get(family) or _PLUGIN_FAMILY_KIND.get(family)


def known_families() -> list[str]:
    """Every family `Feature` accepts: the built-in ones, then those plugins registered."""
    return list(FAMILY_KIND) + [f for f in _PLUGIN_FAMILY_KIND if f not in FAMILY_KIND]


def register_family(family: str, kind: FeatureKind | str) -> None:
    """Accept `family` in `Feature` from now on (called by the registry for plugin transforms).

    Raises ValueError when the name is malformed or already known with another kind.
    """
    kind = FeatureKind(kind)
    if not isinstance(family, str) or not re.fullmatch(r"[a-z0-9][a-z0-9_.-]*", family):
        raise ValueError(f"family name {family!r} must be lower-case letters, digits, '-', '_' or '.'")
    known = family_kind(family)
    if known is not None and known is not kind:
        raise ValueError(f"family {family!r} is already known as {known.value}, not {kind.value}")
    if known is None:
        _PLUGIN_FAMILY_KIND[family] = kind


@dataclass(frozen=True, slots=True)
class Feature:
    """One primitive a backend offers: a family and the key sizes (bits) it takes.

    For MACs with free key length (HMAC) `key_bits` is empty, meaning "any".  `tag_bytes`
    narrows an AEAD family to some of its contract's tag lengths (the gpu backend: 16 only);
    empty means every tag length of the contract.
    """

    family: str
    key_bits: tuple[int, ...] = ()
    tag_bytes: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if family_kind(self.family) is None:
            raise ValueError(f"unknown primitive family {self.family!r}; known: "
                             f"{sorted(known_families())} (a plugin adds one with a transform)")

    @property
    def kind(self) -> FeatureKind:
        return family_kind(self.family)

    def accepts(self, key_bits: int | None) -> bool:
        return not self.key_bits or key_bits is None or key_bits in self.key_bits

    def accepts_tag(self, tag_bytes: int | None) -> bool:
        return not self.tag_bytes or tag_bytes is None or tag_bytes in self.tag_bytes

    def __str__(self) -> str:
        sizes = "/".join(str(k) for k in self.key_bits)
        text = f"{self.family}({sizes})" if sizes else self.family
        return text + (f"[tag {'/'.join(map(str, self.tag_bytes))}]" if self.tag_bytes else "")


def signature_features() -> tuple[Feature, ...]:
    """Every signature family (ECDSA P-256/384/521, RSA PKCS#1 v1.5 and PSS with SHA-2): what a
    backend that signs and verifies all of `ipsec_core.crypto.signature` declares."""
    return tuple(Feature(name) for name in SIGNATURE_FAMILIES)


def standard_features(*, modp: bool = True) -> tuple[Feature, ...]:
    """Every built-in family at the key sizes IPsec uses: what a complete CPU backend offers
    (AES 128/192/256, ChaCha20 256, XCBC 128, HMAC any key; every IKE PRF; every key exchange
    method, without the MODP groups when `modp` is false)."""
    aes = (128, 192, 256)
    return (
        Feature("aes-gcm", aes), Feature("aes-ccm", aes), Feature("chacha20-poly1305", (256,)),
        Feature("aes-cbc", aes), Feature("aes-ctr", aes),
        Feature("hmac-sha1"), Feature("hmac-sha256"), Feature("hmac-sha384"), Feature("hmac-sha512"),
        Feature("aes-xcbc", (128,)), Feature("aes-cmac", aes),
        *(Feature(p.family) for p in PRF_INFO.values()),
        *(Feature(k.family) for k in KE_INFO.values() if modp or k.kind is not KeKind.MODP),
    )


@runtime_checkable
class Aead(Protocol):
    tag_bytes: int

    def encrypt(self, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes: ...

    def decrypt(self, nonce: bytes, ciphertext_and_tag: bytes, aad: bytes) -> bytes: ...


@runtime_checkable
class BatchAead(Protocol):
    """Optional: an Aead that seals and opens many messages of one writable buffer per call
    (`ipsec_core.dataplane.batch`).  Message i is `buf[offsets[i]:offsets[i] + lengths[i]]`
    (offsets, lengths: int64 arrays), computed in place with its tag right after it; `nonces`
    is n x nonce bytes, `aads` n x w bytes (one AAD length per call).  `open_batch` returns n
    verdict bytes, 1 where the tag verifies; a bad batch (a region outside the buffer) raises
    ValueError before touching anything.  Backends without it get the core's generic loop over
    `encrypt`/`decrypt` (`ipsec_core.dataplane.esp.bulk.LoopAead`)."""

    tag_bytes: int

    def seal_batch(self, buf, offsets, lengths, nonces, aads) -> None: ...

    def open_batch(self, buf, offsets, lengths, nonces, aads) -> bytes: ...


@runtime_checkable
class FramingAead(Protocol):
    """Optional: an Aead whose backend frames whole ESP batches of one SA itself (headers,
    padding, trailer, ICV on the way out; ICV, padding and trailer checked on the way in).

    `framing_refusal(engine)` is asked once, when the SA's `EspEngine` is made: None when this
    object frames that SA's packets, else why not (the SA keeps the core's batch paths).  Then
    `frame_protect(engine, packets, now=)` / `frame_unprotect(engine, packets, now=)` get every
    batch first and return exactly what `EspEngine.protect_batch` / `unprotect_batch` would (the
    packets, or per packet the inner packet or an uncounted `PacketDropped`; raising as they
    raise), with the SA's sequence numbers, replay window, lifetimes and counters left as one by
    one would leave them.  They return None, having changed nothing, for a batch they cannot
    frame exactly (a lifetime edge inside it, a malformed packet, ...): the core's path takes it."""

    def framing_refusal(self, engine) -> str | None: ...

    def frame_protect(self, engine, packets, *, now: float) -> list | None: ...

    def frame_unprotect(self, engine, packets, *, now: float) -> list | None: ...


@runtime_checkable
class BatchEncryptThenMac(Protocol):
    """Optional: ESP's cipher (or none) and MAC of one SA over a batch in one call.  Message i
    starts at `starts[i]` and is `lengths[i]` bytes (ESP header, IV, cipher text: what the ICV
    covers); its cipher text starts `cipher_at` bytes in, computed in place with the 16-byte
    IV or counter block `ivs[i]`; its `icv_bytes` ICV follows it (written by seal, checked by
    open); `his` (n x 4 bytes, or None) is appended to the ICV input (ESN).  A backend makes one
    with `encrypt_then_mac(cipher, mac, *, icv_bytes, cipher_at)` (None: not for these)."""

    icv_bytes: int
    cipher_at: int

    def seal_batch(self, buf, starts, lengths, ivs, his) -> None: ...

    def open_batch(self, buf, starts, lengths, ivs, his) -> bytes: ...


@runtime_checkable
class Cipher(Protocol):
    def encrypt(self, iv: bytes, data: bytes) -> bytes: ...

    def decrypt(self, iv: bytes, data: bytes) -> bytes: ...


@runtime_checkable
class Mac(Protocol):
    digest_bytes: int

    def mac(self, data: bytes) -> bytes: ...


@runtime_checkable
class Prf(Protocol):
    """An IKEv2 PRF bound to its key: `prf(data)` is the full output (`output_bytes` long)."""

    output_bytes: int

    def prf(self, data: bytes) -> bytes: ...


@runtime_checkable
class KeyExchange(Protocol):
    """One side of one key exchange, with its private key inside.  `group` is the IANA number,
    `public_bytes` the KE payload data; `shared_secret` raises KeyExchangeError for a peer value
    that must be refused (wire formats and checks: `ipsec_core.crypto.kex`)."""

    group: int
    public_bytes: bytes

    def shared_secret(self, peer_public: bytes) -> bytes: ...


@runtime_checkable
class Signer(Protocol):
    """A private key bound to one signature family: `sign(data)` hashes `data` and signs it."""

    family: str

    def sign(self, data: bytes) -> bytes: ...


@runtime_checkable
class Verifier(Protocol):
    """A public key bound to one signature family: True when `signature` is valid for `data`."""

    family: str

    def verify(self, data: bytes, signature: bytes) -> bool: ...


class Backend:
    """Base class of a crypto backend.  Subclass it and register an instance through the
    `ipsec_register_backends` hook.

    name:      what users type (`backend = "aesni"`), unique.
    priority:  higher wins when an SA names no backend (reference 10, cryptodome 200, aesni 300).
    """

    name: str = ""
    priority: int = 0
    description: str = ""

    def probe(self) -> str | None:
        """Return None when usable here, else a one-line reason (missing library, no device...)."""
        return None

    def features(self) -> Iterable[Feature]:
        """The primitives this backend offers.  Each is self-tested when registered."""
        return ()

    def aead(self, family: str, key: bytes, *, tag_bytes: int, nonce_bytes: int) -> Aead:
        raise NotImplementedError(f"{self.name} has no AEAD {family}")

    def cipher(self, family: str, key: bytes) -> Cipher:
        raise NotImplementedError(f"{self.name} has no cipher {family}")

    def mac(self, family: str, key: bytes) -> Mac:
        raise NotImplementedError(f"{self.name} has no MAC {family}")

    def prf(self, family: str, key: bytes) -> Prf:
        """The IKE PRF `family` keyed with `key` (any length).  By default the generic adapter
        over this backend's own MAC; override only for a faster one computing the same."""
        return MacPrf(self, family, key)

    def key_exchange(self, family: str, *, private_key: bytes | None = None) -> KeyExchange:
        """A fresh key exchange of `family` ("ecp256", "curve25519", "modp2048" ...) with a
        private key from a CSPRNG, or `private_key` (known-answer tests)."""
        raise NotImplementedError(f"{self.name} has no key exchange {family}")

    def signer(self, family: str, private_key: bytes) -> Signer:
        """A signer of `family` ("ecdsa-p256-sha256", "rsa-pss-sha256" ...) bound to the DER
        PKCS#8 `private_key`; ValueError when the key is not of the family."""
        raise NotImplementedError(f"{self.name} has no signature {family}")

    def verifier(self, family: str, public_key: bytes) -> Verifier:
        """A verifier of `family` bound to the DER SubjectPublicKeyInfo `public_key`; ValueError
        when the key is not of the family."""
        raise NotImplementedError(f"{self.name} has no signature {family}")

"""IANA IKEv2 transform identifiers and the facts the core needs about each algorithm.

Owns: the numbers (from the IANA "IKEv2 Parameters" registry) and per-algorithm sizes: key, salt,
IV, block, ICV.  The core enforces every protocol rule from these facts; backends only compute.
Plugins add ENCR transforms through the hook `ipsec_register_transforms` with an
`EncrTransform`; the registry validates it and gives it a `PluginEncrId` (an int with a name,
like an `EncrId` member, that carries the transform's `EncrInfo`).  `ENCR_INFO` stays the table
of the built-in transforms.
Must not: import backends or do crypto.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence


class TransformType(enum.IntEnum):
    ENCR = 1
    PRF = 2
    INTEG = 3
    KE = 4
    ESN = 5


class EncrId(enum.IntEnum):
    ENCR_NULL = 11
    ENCR_AES_CBC = 12
    ENCR_AES_CTR = 13
    ENCR_AES_CCM_8 = 14
    ENCR_AES_CCM_12 = 15
    ENCR_AES_CCM_16 = 16
    ENCR_AES_GCM_8 = 18
    ENCR_AES_GCM_12 = 19
    ENCR_AES_GCM_16 = 20
    ENCR_NULL_AUTH_AES_GMAC = 21
    ENCR_CHACHA20_POLY1305 = 28


class IntegId(enum.IntEnum):
    AUTH_NONE = 0
    AUTH_HMAC_SHA1_96 = 2
    AUTH_AES_XCBC_96 = 5
    AUTH_AES_CMAC_96 = 8
    AUTH_AES_128_GMAC = 9        # AH only (RFC 4543 4); ESP uses ENCR_NULL_AUTH_AES_GMAC
    AUTH_AES_192_GMAC = 10
    AUTH_AES_256_GMAC = 11
    AUTH_HMAC_SHA2_256_128 = 12
    AUTH_HMAC_SHA2_384_192 = 13
    AUTH_HMAC_SHA2_512_256 = 14


class PrfId(enum.IntEnum):
    PRF_HMAC_SHA1 = 2
    PRF_AES128_XCBC = 4
    PRF_AES128_CMAC = 8
    PRF_HMAC_SHA2_256 = 5
    PRF_HMAC_SHA2_384 = 6
    PRF_HMAC_SHA2_512 = 7


class KeId(enum.IntEnum):
    NONE = 0
    MODP_2048 = 14
    MODP_3072 = 15
    MODP_4096 = 16
    ECP_256 = 19
    ECP_384 = 20
    ECP_521 = 21
    CURVE25519 = 31
    CURVE448 = 32


class CipherKind(str, enum.Enum):
    """How the core drives an ENCR transform."""

    AEAD = "aead"        # combined mode: the backend's Aead does encryption and ICV
    GMAC = "gmac"        # auth-only AEAD: all data goes into the AAD (RFC 4543)
    CIPHER = "cipher"    # plain cipher; integrity from a separate INTEG transform
    NULL = "null"        # no encryption (RFC 2410); integrity from INTEG


@dataclass(frozen=True, slots=True)
class EncrInfo:
    id: EncrId
    kind: CipherKind
    key_bits: tuple[int, ...]     # allowed cipher key sizes, salt/nonce excluded
    salt_bytes: int               # keying material appended to the key (GCM/GMAC/ChaCha 4, CCM 3, CTR 4)
    iv_bytes: int                 # explicit IV carried in each ESP packet
    block_bytes: int              # payload alignment (padding), at least 4 for ESP
    icv_bytes: int                # for AEAD/GMAC: tag length; 0 for ciphers
    family: str                   # primitive family the backend implements ("aes-gcm", ...)
    counter: bool = False         # CIPHER only: RFC 3686 layout, the IV is the sequence number and
                                  # the backend gets the counter block salt || IV || 00000001


@dataclass(frozen=True, slots=True)
class IntegInfo:
    id: IntegId
    key_bytes: int
    icv_bytes: int                # truncated ICV length on the wire
    family: str                   # "hmac-sha256", "aes-xcbc", ...


_AES = (128, 192, 256)

ENCR_INFO: dict[EncrId, EncrInfo] = {
    e.id: e
    for e in (
        EncrInfo(EncrId.ENCR_NULL, CipherKind.NULL, (0,), 0, 0, 4, 0, "null"),
        EncrInfo(EncrId.ENCR_AES_CBC, CipherKind.CIPHER, _AES, 0, 16, 16, 0, "aes-cbc"),
        EncrInfo(EncrId.ENCR_AES_CTR, CipherKind.CIPHER, _AES, 4, 8, 4, 0, "aes-ctr", counter=True),
        EncrInfo(EncrId.ENCR_AES_CCM_8, CipherKind.AEAD, _AES, 3, 8, 4, 8, "aes-ccm"),
        EncrInfo(EncrId.ENCR_AES_CCM_12, CipherKind.AEAD, _AES, 3, 8, 4, 12, "aes-ccm"),
        EncrInfo(EncrId.ENCR_AES_CCM_16, CipherKind.AEAD, _AES, 3, 8, 4, 16, "aes-ccm"),
        EncrInfo(EncrId.ENCR_AES_GCM_8, CipherKind.AEAD, _AES, 4, 8, 4, 8, "aes-gcm"),
        EncrInfo(EncrId.ENCR_AES_GCM_12, CipherKind.AEAD, _AES, 4, 8, 4, 12, "aes-gcm"),
        EncrInfo(EncrId.ENCR_AES_GCM_16, CipherKind.AEAD, _AES, 4, 8, 4, 16, "aes-gcm"),
        EncrInfo(EncrId.ENCR_NULL_AUTH_AES_GMAC, CipherKind.GMAC, _AES, 4, 8, 4, 16, "aes-gcm"),
        EncrInfo(EncrId.ENCR_CHACHA20_POLY1305, CipherKind.AEAD, (256,), 4, 8, 4, 16,
                 "chacha20-poly1305"),
    )
}

INTEG_INFO: dict[IntegId, IntegInfo] = {
    i.id: i
    for i in (
        IntegInfo(IntegId.AUTH_HMAC_SHA1_96, 20, 12, "hmac-sha1"),
        IntegInfo(IntegId.AUTH_AES_XCBC_96, 16, 12, "aes-xcbc"),
        IntegInfo(IntegId.AUTH_AES_CMAC_96, 16, 12, "aes-cmac"),
        IntegInfo(IntegId.AUTH_HMAC_SHA2_256_128, 32, 16, "hmac-sha256"),
        IntegInfo(IntegId.AUTH_HMAC_SHA2_384_192, 48, 24, "hmac-sha384"),
        IntegInfo(IntegId.AUTH_HMAC_SHA2_512_256, 64, 32, "hmac-sha512"),
    )
}

#: AES-GMAC as an AH integrity transform (RFC 4543 section 4).  Kept apart from INTEG_INFO because
#: it is not a MAC but the GCM AEAD with an empty plaintext, and it is offered for AH only.
#: `key_bytes` counts the 4-byte salt after the AES key (the SA file's `integrity_key` holds
#: key || salt, as for ESP's GMAC `key`); each AH header carries an 8-byte IV before the ICV.
AH_GMAC_INFO: dict[IntegId, IntegInfo] = {
    i.id: i
    for i in (
        IntegInfo(IntegId.AUTH_AES_128_GMAC, 16 + 4, 16, "aes-gcm"),
        IntegInfo(IntegId.AUTH_AES_192_GMAC, 24 + 4, 16, "aes-gcm"),
        IntegInfo(IntegId.AUTH_AES_256_GMAC, 32 + 4, 16, "aes-gcm"),
    )
}
GMAC_SALT_BYTES = 4
GMAC_IV_BYTES = 8


# -- IKE: pseudo-random functions and key exchange methods -------------------------------------
@dataclass(frozen=True, slots=True)
class PrfInfo:
    """An IKEv2 PRF (Transform Type 2).  `family` is the registry's; `mac` the MAC family that
    computes it; `key_rule` None (HMAC: any key length), "rfc4434" (AES-XCBC-PRF-128: short keys
    zero-padded, long ones MACed under 0^128) or "rfc4615" (AES-CMAC-PRF-128: any key that is not
    16 bytes MACed under 0^128)."""

    id: PrfId
    family: str
    mac: str
    output_bytes: int
    key_rule: str | None
    source: str


PRF_INFO: dict[PrfId, PrfInfo] = {
    p.id: p
    for p in (
        PrfInfo(PrfId.PRF_HMAC_SHA1, "prf-hmac-sha1", "hmac-sha1", 20, None, "RFC 2104, RFC 7296"),
        PrfInfo(PrfId.PRF_AES128_XCBC, "prf-aes128-xcbc", "aes-xcbc", 16, "rfc4434", "RFC 4434"),
        PrfInfo(PrfId.PRF_HMAC_SHA2_256, "prf-hmac-sha256", "hmac-sha256", 32, None, "RFC 4868 2.1.2"),
        PrfInfo(PrfId.PRF_HMAC_SHA2_384, "prf-hmac-sha384", "hmac-sha384", 48, None, "RFC 4868 2.1.2"),
        PrfInfo(PrfId.PRF_HMAC_SHA2_512, "prf-hmac-sha512", "hmac-sha512", 64, None, "RFC 4868 2.1.2"),
        PrfInfo(PrfId.PRF_AES128_CMAC, "prf-aes128-cmac", "aes-cmac", 16, "rfc4615", "RFC 4615"),
    )
}


class KeKind(str, enum.Enum):
    MODP = "modp"               # finite-field Diffie-Hellman over a safe prime (RFC 3526)
    ECP = "ecp"                 # ECDH on a NIST prime curve (RFC 5903)
    MONTGOMERY = "montgomery"   # X25519 / X448 (RFC 7748, RFC 8031)


@dataclass(frozen=True, slots=True)
class KeInfo:
    """An IKEv2 key exchange method (Transform Type 4).  `family` is the registry's and
    strongSwan's keyword; sizes are bytes: the KE payload's key exchange data, the shared secret
    g^ir, and a fixed private key (big-endian for MODP, which also takes shorter ones, and ECP;
    the raw RFC 7748 scalar for X25519/X448)."""

    id: KeId
    family: str
    kind: KeKind
    public_bytes: int
    secret_bytes: int
    private_bytes: int
    source: str

    @property
    def name(self) -> str:
        return self.family

    @property
    def group(self) -> int:
        """The IANA number, as the KE payload's "DH Group Num" carries it."""
        return int(self.id)


KE_INFO: dict[KeId, KeInfo] = {
    k.id: k
    for k in (
        KeInfo(KeId.MODP_2048, "modp2048", KeKind.MODP, 256, 256, 256, "RFC 3526 section 3"),
        KeInfo(KeId.MODP_3072, "modp3072", KeKind.MODP, 384, 384, 384, "RFC 3526 section 4"),
        KeInfo(KeId.MODP_4096, "modp4096", KeKind.MODP, 512, 512, 512, "RFC 3526 section 5"),
        KeInfo(KeId.ECP_256, "ecp256", KeKind.ECP, 64, 32, 32, "RFC 5903 section 3.1"),
        KeInfo(KeId.ECP_384, "ecp384", KeKind.ECP, 96, 48, 48, "RFC 5903 section 3.2"),
        KeInfo(KeId.ECP_521, "ecp521", KeKind.ECP, 132, 66, 66, "RFC 5903 section 3.3"),
        KeInfo(KeId.CURVE25519, "curve25519", KeKind.MONTGOMERY, 32, 32, 32, "RFC 7748, RFC 8031"),
        KeInfo(KeId.CURVE448, "curve448", KeKind.MONTGOMERY, 56, 56, 56, "RFC 7748, RFC 8031"),
    )
}


# -- transforms added by plugins ---------------------------------------------------------------
#: Transform ids 1024..65535 are for private use (RFC 7296 3.3.2); below that, IANA assigns them.
PRIVATE_USE_MIN = 1024
TRANSFORM_ID_MAX = 0xFFFF


class PluginEncrId(int):
    """The id of an ENCR transform a plugin registered: compares and hashes as its number, and
    has a `name` like an `EncrId` member.  It carries what the core needs to drive it:
    `info` (the `EncrInfo`), `transform` (the `EncrTransform` as registered) and `plugin`."""

    name: str
    info: "EncrInfo"
    transform: "EncrTransform"
    plugin: str

    def __new__(cls, value: int, name: str = "", *, transform: "EncrTransform | None" = None,
                plugin: str = "", info: "EncrInfo | None" = None) -> "PluginEncrId":
        self = super().__new__(cls, value)
        self.name = name
        self.transform = transform
        self.plugin = plugin
        if info is not None:
            self.info = info
        return self

    @property
    def value(self) -> int:
        return int(self)

    def __repr__(self) -> str:
        return f"<{self.name}: {int(self)} from {self.plugin}>"

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class EncrTransform:
    """An ESP encryption transform a plugin adds (`ipsec_register_transforms`).

    id:          IANA "Transform Type 1" number (e.g. 23 for ENCR_CAMELLIA_CBC), or 1024..65535
                 for private use.  Must not be a built-in one or another plugin's.
    name:        the IANA-style name, "ENCR_CAMELLIA_CBC".
    keywords:    strongSwan-style proposal keyword -> key size in bits, e.g.
                 {"camellia128": 128, "camellia": 128, "camellia256": 256}.  The first keyword
                 of each size is the one written back.  Lower-case letters, digits and '_'.
    kind:        "aead" (combined mode: the backend's Aead does encryption and ICV) or
                 "cipher" (integrity from a separate INTEG transform, e.g. -sha256).
    family:      the primitive family a backend must offer (a new name, or a built-in one).
    key_bits:    the key sizes, in bits (salt excluded).
    iv_bytes:    explicit IV in each packet: 8 for AEADs and counter modes (the core puts the
                 64-bit sequence number there), the block size for CBC-like ciphers (random).
    block_bytes: payload alignment: 4 for AEADs and counter modes, the block size for CBC.
    salt_bytes:  keying material after the key (AEAD nonce = salt || IV; counter modes 4).
    icv_bytes:   AEAD tag length on the wire (0 for ciphers).
    counter:     cipher only: RFC 3686 layout, counter block = salt || IV || 00000001.
    vectors:     known-answer vectors at the primitive level, required: mappings (hex strings
                 or bytes) with "id", "key" and, for ciphers, "iv" (for counter modes the whole
                 counter block), "plaintext", "ciphertext"; for AEADs "nonce", "aad",
                 "plaintext", "ciphertext", "tag" and optionally "valid": false (decrypt must
                 reject it).  Or `ipsec_core.crypto.selftest` cases.  Every key size needs one.
    description: one line for listings ("Camellia-CBC, RFC 4312").
    """

    id: int
    name: str
    keywords: Mapping[str, int]
    kind: str
    family: str
    key_bits: tuple[int, ...]
    iv_bytes: int
    block_bytes: int
    salt_bytes: int = 0
    icv_bytes: int = 0
    counter: bool = False
    vectors: Sequence[Any] = field(default=(), repr=False)
    description: str = ""

    def canonical_keyword(self, key_bits: int) -> str:
        """The keyword written back for `key_bits` (the first one given for that size)."""
        return next(k for k, bits in self.keywords.items() if bits == key_bits)

"""IANA IKEv2 transform identifiers and the facts the core needs about each algorithm.

Owns: the numbers (from the IANA "IKEv2 Parameters" registry) and per-algorithm sizes: key, salt,
IV, block, ICV.  The core enforces every protocol rule from these facts; backends only compute.
Must not: import backends or do crypto.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass


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
        EncrInfo(EncrId.ENCR_AES_CTR, CipherKind.CIPHER, _AES, 4, 8, 4, 0, "aes-ctr"),
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

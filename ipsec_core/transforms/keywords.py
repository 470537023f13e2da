"""strongSwan proposal keywords <-> IANA transforms, for ESP (and, later, IKE) proposals.

Owns: parsing "aes128gcm16-esn", "aes256-sha256", "chacha20poly1305", "null-sha1" into an
`EspProposal`, and writing one back.  Keywords follow strongSwan's (docs: "IKEv2 Cipher Suites"),
because that is what users already type.
Plugin transforms (`ipsec_register_transforms`) bring their own keywords ("camellia128"):
a token that is no built-in keyword is looked up in a transform catalogue, by default the
process-wide registry's (`ipsec_core.crypto.catalog`), so they work in SA files and `ipsec perf`.
Must not: know about backends.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ipsec_core.errors import ProposalError
from ipsec_core.transforms.iana import (ENCR_INFO, INTEG_INFO, CipherKind, EncrId, EncrInfo, IntegId,
                                   IntegInfo, KeId, PluginEncrId)
from ipsec_core.transforms.iana import AH_GMAC_INFO, GMAC_SALT_BYTES

_ICV_BITS = {"8": 8, "64": 8, "12": 12, "96": 12, "16": 16, "128": 16, "": 16}
_GCM = {8: EncrId.ENCR_AES_GCM_8, 12: EncrId.ENCR_AES_GCM_12, 16: EncrId.ENCR_AES_GCM_16}
_CCM = {8: EncrId.ENCR_AES_CCM_8, 12: EncrId.ENCR_AES_CCM_12, 16: EncrId.ENCR_AES_CCM_16}

INTEG_KEYWORDS: dict[str, IntegId] = {
    "sha1": IntegId.AUTH_HMAC_SHA1_96,
    "sha": IntegId.AUTH_HMAC_SHA1_96,
    "sha256": IntegId.AUTH_HMAC_SHA2_256_128,
    "sha2_256": IntegId.AUTH_HMAC_SHA2_256_128,
    "sha384": IntegId.AUTH_HMAC_SHA2_384_192,
    "sha2_384": IntegId.AUTH_HMAC_SHA2_384_192,
    "sha512": IntegId.AUTH_HMAC_SHA2_512_256,
    "sha2_512": IntegId.AUTH_HMAC_SHA2_512_256,
    "aesxcbc": IntegId.AUTH_AES_XCBC_96,
    "aescmac": IntegId.AUTH_AES_CMAC_96,
}
_INTEG_NAME = {IntegId.AUTH_HMAC_SHA1_96: "sha1", IntegId.AUTH_HMAC_SHA2_256_128: "sha256",
               IntegId.AUTH_HMAC_SHA2_384_192: "sha384", IntegId.AUTH_HMAC_SHA2_512_256: "sha512",
               IntegId.AUTH_AES_XCBC_96: "aesxcbc", IntegId.AUTH_AES_CMAC_96: "aescmac"}

KE_KEYWORDS: dict[str, KeId] = {
    "modp2048": KeId.MODP_2048, "modp3072": KeId.MODP_3072, "modp4096": KeId.MODP_4096,
    "ecp256": KeId.ECP_256, "ecp384": KeId.ECP_384, "ecp521": KeId.ECP_521,
    "x25519": KeId.CURVE25519, "curve25519": KeId.CURVE25519,
    "x448": KeId.CURVE448, "curve448": KeId.CURVE448,
}
_KE_NAME = {KeId.MODP_2048: "modp2048", KeId.MODP_3072: "modp3072", KeId.MODP_4096: "modp4096",
            KeId.ECP_256: "ecp256", KeId.ECP_384: "ecp384", KeId.ECP_521: "ecp521",
            KeId.CURVE25519: "x25519", KeId.CURVE448: "x448"}

_ENCR_RE = re.compile(r"^aes(128|192|256)?(gcm|ccm)?(8|12|16|64|96|128)?(ctr|gmac)?$")


@dataclass(frozen=True, slots=True)
class EspProposal:
    """One ESP proposal: a cipher (with key size), an integrity algorithm or none, ESN, KE groups.

    `encr` is an `EncrId`, or for a plugin transform its `PluginEncrId`; a plain int is resolved
    to either (plugin ids through the process-wide registry's catalogue)."""

    encr: EncrId | PluginEncrId
    key_bits: int
    integ: IntegId = IntegId.AUTH_NONE
    esn: bool = False
    ke: tuple[KeId, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.encr, (EncrId, PluginEncrId)):
            object.__setattr__(self, "encr", resolve_encr(self.encr))
        info = self.encr_info
        if self.key_bits not in info.key_bits:
            raise ProposalError(f"{self.encr.name} takes {info.key_bits} bit keys, not {self.key_bits}")
        combined = info.kind in (CipherKind.AEAD, CipherKind.GMAC)
        if combined and self.integ != IntegId.AUTH_NONE:
            raise ProposalError(f"{self.keyword}: a combined-mode cipher takes no integrity algorithm")
        if not combined and self.integ == IntegId.AUTH_NONE:
            raise ProposalError(f"{self.keyword}: {_encr_name(self.encr, self.key_bits)} needs an "
                                "integrity algorithm (for example -sha256)")

    @property
    def encr_info(self) -> EncrInfo:
        encr = self.encr
        return encr.info if isinstance(encr, PluginEncrId) else ENCR_INFO[encr]

    @property
    def integ_info(self) -> IntegInfo | None:
        return INTEG_INFO.get(self.integ)

    @property
    def keyword(self) -> str:
        return format_esp(self)

    @property
    def enc_key_bytes(self) -> int:
        """Bytes of keying material for the cipher: key plus salt/nonce, as in the SA file."""
        return self.key_bits // 8 + self.encr_info.salt_bytes


def resolve_encr(value: int, *, catalog=None) -> EncrId | PluginEncrId:
    """An ENCR transform id as the core knows it: a built-in `EncrId`, or the `PluginEncrId` a
    plugin registered in `catalog` (default: none, the built-in ids alone)."""
    if isinstance(value, (EncrId, PluginEncrId)):
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProposalError(f"an ENCR transform id is an integer, not {value!r}")
    if value in EncrId._value2member_map_:
        return EncrId(value)
    record = _catalog(catalog).by_id(value)
    if record is None:
        raise ProposalError(f"unknown ENCR transform id {value}: not built in, and no loaded plugin "
                            "registers it (`ipsec plugins` lists the plugins)")
    return record.id


class _NoPluginTransforms:
    """What a caller that passes no transform catalogue sees: the built-in tables alone."""

    @staticmethod
    def by_id(value: int) -> None:
        return None

    @staticmethod
    def keyword(token: str) -> None:
        return None

    @staticmethod
    def of_family(family: str) -> list:
        return []


def _catalog(catalog):
    """`catalog` (a `TransformCatalog`, which brings the plugins' transforms) or the built-ins
    alone.  Never the process-wide registry: that is for the CLI and drivers to pass in."""
    return _NoPluginTransforms if catalog is None else catalog


def _encr_name(encr: EncrId | PluginEncrId, key_bits: int) -> str:
    if isinstance(encr, PluginEncrId):
        return encr.transform.canonical_keyword(key_bits)
    info = ENCR_INFO[encr]
    if encr == EncrId.ENCR_NULL:
        return "null"
    if encr == EncrId.ENCR_CHACHA20_POLY1305:
        return "chacha20poly1305"
    if encr == EncrId.ENCR_AES_CBC:
        return f"aes{key_bits}"
    if encr == EncrId.ENCR_AES_CTR:
        return f"aes{key_bits}ctr"
    if encr == EncrId.ENCR_NULL_AUTH_AES_GMAC:
        return f"aes{key_bits}gmac"
    mode = "gcm" if info.family == "aes-gcm" else "ccm"
    return f"aes{key_bits}{mode}{info.icv_bytes}"


def format_esp(p: EspProposal) -> str:
    parts = [_encr_name(p.encr, p.key_bits)]
    if p.integ != IntegId.AUTH_NONE:
        parts.append(_INTEG_NAME[p.integ])
    parts.extend(_KE_NAME[k] for k in p.ke)
    if p.esn:
        parts.append("esn")
    return "-".join(parts)


def _parse_encr(token: str) -> tuple[EncrId, int] | None:
    if token == "null":
        return EncrId.ENCR_NULL, 0
    if token in ("chacha20poly1305", "chacha20poly1305compat"):
        return EncrId.ENCR_CHACHA20_POLY1305, 256
    m = _ENCR_RE.match(token)
    if not m:
        return None
    bits = int(m.group(1) or 128)
    mode, icv, suffix = m.group(2), m.group(3), m.group(4)
    if mode and suffix:
        return None
    if mode == "gcm":
        return _GCM[_ICV_BITS[icv or ""]], bits
    if mode == "ccm":
        return _CCM[_ICV_BITS[icv or ""]], bits
    if icv:
        return None
    if suffix == "ctr":
        return EncrId.ENCR_AES_CTR, bits
    if suffix == "gmac":
        return EncrId.ENCR_NULL_AUTH_AES_GMAC, bits
    return EncrId.ENCR_AES_CBC, bits


def is_builtin_keyword(token: str) -> bool:
    """Whether `token` already means something in a proposal (plugins may not take it)."""
    return (token in ("esn", "noesn") or token in INTEG_KEYWORDS or token in KE_KEYWORDS
            or _parse_encr(token) is not None)


def _plugin_encr(token: str, text: str, catalog) -> tuple[PluginEncrId, int] | None:
    found = _catalog(catalog).keyword(token)
    if found is None:
        return None
    record, bits = found
    if not record.usable:
        raise ProposalError(f"{text!r}: {token!r} is {record.name} from plugin {record.plugin}, "
                            f"which is not offered: {record.reason}")
    return record.id, bits


def parse_esp(text: str, *, catalog=None) -> EspProposal:
    """Parse one ESP proposal such as "aes128gcm16-esn" or "aes256-sha256-ecp256".

    A token that is no built-in keyword may be a plugin transform's: it is looked up in
    `catalog` (a `TransformCatalog`; default: the process-wide registry's, loaded on first use).
    Raises ProposalError naming the token that is not understood.
    """
    if not isinstance(text, str) or not text.strip():
        raise ProposalError("empty proposal; expected something like 'aes128gcm16' or 'aes256-sha256'")
    encr: tuple[EncrId | PluginEncrId, int] | None = None
    integ = IntegId.AUTH_NONE
    esn: bool | None = None
    ke: list[KeId] = []
    for token in text.strip().lower().split("-"):
        if token in ("esn", "noesn"):
            if esn is not None:
                raise ProposalError(f"{text!r}: ESN given twice (this project negotiates one value)")
            esn = token == "esn"
        elif token in INTEG_KEYWORDS:
            if integ != IntegId.AUTH_NONE:
                raise ProposalError(f"{text!r}: more than one integrity algorithm")
            integ = INTEG_KEYWORDS[token]
        elif token in KE_KEYWORDS:
            ke.append(KE_KEYWORDS[token])
        elif (parsed := _parse_encr(token) or _plugin_encr(token, text, catalog)) is not None:
            if encr is not None:
                raise ProposalError(f"{text!r}: more than one encryption algorithm")
            encr = parsed
        else:
            raise ProposalError(f"{text!r}: unknown keyword {token!r}; expected e.g. aes128gcm16, "
                                "aes256, aes128ctr, chacha20poly1305, aes128gmac, null, sha256, "
                                "aesxcbc, esn (or a plugin's keyword: `ipsec plugins` lists them)")
    if encr is None:
        raise ProposalError(f"{text!r}: no encryption algorithm (use 'null' for none)")
    return EspProposal(encr[0], encr[1], integ, bool(esn), tuple(ke))


def esp_keywords_for(family: str, key_bits: tuple[int, ...], *, catalog=None) -> list[str]:
    """ESP keywords a primitive family makes possible (for listings such as `ipsec backends`),
    plugin transforms included (from `catalog`; default: none, the built-in transforms alone)."""
    out: list[str] = []
    infos = list(ENCR_INFO.values())
    infos += [r.info for r in _catalog(catalog).of_family(family) if r.usable]
    for info in infos:
        if info.family == family:
            sizes = info.key_bits if not key_bits else [k for k in info.key_bits if k in key_bits]
            out.extend(_encr_name(info.id, k) for k in sizes)
    for integ in INTEG_INFO.values():
        if integ.family == family:
            out.append(_INTEG_NAME[integ.id])
    return out


# ----------------------------------------------------------------------------------------------
# AH proposals (RFC 4302): an integrity algorithm, no encryption
# ----------------------------------------------------------------------------------------------
_AH_GMAC_KEYWORDS: dict[str, IntegId] = {
    "aes128gmac": IntegId.AUTH_AES_128_GMAC,
    "aes192gmac": IntegId.AUTH_AES_192_GMAC,
    "aes256gmac": IntegId.AUTH_AES_256_GMAC,
}
_AH_GMAC_NAME = {v: k for k, v in _AH_GMAC_KEYWORDS.items()}


@dataclass(frozen=True, slots=True)
class AhProposal:
    """One AH proposal: an integrity algorithm (HMAC-SHA1/SHA2, AES-XCBC, AES-CMAC or AES-GMAC),
    ESN, KE groups.  Written as strongSwan writes an `ah =` proposal: "sha256", "sha1-esn",
    "aescmac-modp2048", "aes128gmac"."""

    integ: IntegId
    esn: bool = False
    ke: tuple[KeId, ...] = ()

    def __post_init__(self) -> None:
        if self.integ not in INTEG_INFO and self.integ not in AH_GMAC_INFO:
            raise ProposalError(f"AH needs an integrity algorithm, not {self.integ!r}")

    @property
    def integ_info(self) -> IntegInfo:
        """Sizes of the integrity transform; for GMAC `key_bytes` counts key + 4-byte salt."""
        return INTEG_INFO.get(self.integ) or AH_GMAC_INFO[self.integ]

    @property
    def gmac(self) -> bool:
        return self.integ in AH_GMAC_INFO

    @property
    def key_bits(self) -> int:
        """AES key bits of a GMAC proposal (salt excluded); 0 for the MACs."""
        return (self.integ_info.key_bytes - GMAC_SALT_BYTES) * 8 if self.gmac else 0

    @property
    def keyword(self) -> str:
        return format_ah(self)


def format_ah(p: AhProposal) -> str:
    parts = [_AH_GMAC_NAME.get(p.integ) or _INTEG_NAME[p.integ]]
    parts.extend(_KE_NAME[k] for k in p.ke)
    if p.esn:
        parts.append("esn")
    return "-".join(parts)


def parse_ah(text: str) -> AhProposal:
    """Parse one AH proposal such as "sha256", "sha1-esn", "aesxcbc" or "aes128gmac".

    Raises ProposalError naming the token that is not understood (an encryption keyword is
    refused with a hint: AH does not encrypt)."""
    if not isinstance(text, str) or not text.strip():
        raise ProposalError("empty AH proposal; expected an integrity keyword like 'sha256'")
    integ: IntegId | None = None
    esn: bool | None = None
    ke: list[KeId] = []
    for token in text.strip().lower().split("-"):
        if token in ("esn", "noesn"):
            if esn is not None:
                raise ProposalError(f"{text!r}: ESN given twice (this project negotiates one value)")
            esn = token == "esn"
        elif token in INTEG_KEYWORDS or token in _AH_GMAC_KEYWORDS:
            if integ is not None:
                raise ProposalError(f"{text!r}: more than one integrity algorithm")
            integ = INTEG_KEYWORDS.get(token) or _AH_GMAC_KEYWORDS[token]
        elif token in KE_KEYWORDS:
            ke.append(KE_KEYWORDS[token])
        elif token == "null" or _parse_encr(token) is not None:
            raise ProposalError(f"{text!r}: {token!r} is an encryption algorithm; AH only "
                                "authenticates (use protocol = \"esp\" to encrypt)")
        else:
            raise ProposalError(f"{text!r}: unknown keyword {token!r}; expected e.g. sha1, sha256, "
                                "sha384, sha512, aesxcbc, aescmac, aes128gmac, esn")
    if integ is None:
        raise ProposalError(f"{text!r}: no integrity algorithm (for example 'sha256')")
    return AhProposal(integ, bool(esn), tuple(ke))


def parse_proposal(text: str, protocol: str = "esp", *, catalog=None) -> EspProposal | AhProposal:
    """`parse_esp` (plugin transforms from `catalog`) or `parse_ah`, by IPsec protocol ("esp"
    or "ah")."""
    if protocol == "ah":
        return parse_ah(text)
    if protocol == "esp":
        return parse_esp(text, catalog=catalog)
    raise ProposalError(f"unknown IPsec protocol {protocol!r}; expected 'esp' or 'ah'")

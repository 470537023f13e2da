"""strongSwan IKE proposal keywords <-> IANA transforms, for IKE SA proposals.

Owns: parsing "aes128gcm16-prfsha256-ecp256", "aes256-sha256-modp2048" or
"aes128-aes256-sha256-sha384-ecp256-modp3072" into an `IkeProposal` (several keywords of one
kind = several transforms of that type in the one proposal, as strongSwan builds it), writing one
back, and going from the IANA ids IKE receives on the wire to the registry's family names
(`ike_family`, `proposal_from_transforms`).
Rules, as strongSwan applies them: an integrity keyword without any PRF keyword also adds the PRF
of the same algorithm (sha256 -> prfsha256, aesxcbc -> prfaesxcbc); an AEAD takes no integrity
algorithm and needs an explicit PRF; AEAD and classic ciphers do not mix in one proposal (write
two proposals); every proposal needs a key exchange method.  ENCR_NULL and AES-GMAC are ESP-only.
Must not: know about backends or crypto (the families named here are what the registry selects).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, NamedTuple

from ipsec_core.errors import ProposalError
from ipsec_core.transforms.iana import (ENCR_INFO, INTEG_INFO, KE_INFO, PRF_INFO, CipherKind, EncrId,
                                        IntegId, KeId, PrfId, TransformType)
from ipsec_core.transforms.keywords import (_INTEG_NAME, _KE_NAME, INTEG_KEYWORDS, KE_KEYWORDS,
                                            _encr_name, _parse_encr)

#: strongSwan's PRF keywords.
PRF_KEYWORDS: dict[str, PrfId] = {
    "prfsha1": PrfId.PRF_HMAC_SHA1,
    "prfsha256": PrfId.PRF_HMAC_SHA2_256,
    "prfsha384": PrfId.PRF_HMAC_SHA2_384,
    "prfsha512": PrfId.PRF_HMAC_SHA2_512,
    "prfaesxcbc": PrfId.PRF_AES128_XCBC,
    "prfaescmac": PrfId.PRF_AES128_CMAC,
}
_PRF_NAME = {v: k for k, v in PRF_KEYWORDS.items()}

#: The PRF an integrity algorithm implies when a proposal names no PRF (strongSwan's rule).
PRF_FOR_INTEG: dict[IntegId, PrfId] = {
    IntegId.AUTH_HMAC_SHA1_96: PrfId.PRF_HMAC_SHA1,
    IntegId.AUTH_HMAC_SHA2_256_128: PrfId.PRF_HMAC_SHA2_256,
    IntegId.AUTH_HMAC_SHA2_384_192: PrfId.PRF_HMAC_SHA2_384,
    IntegId.AUTH_HMAC_SHA2_512_256: PrfId.PRF_HMAC_SHA2_512,
    IntegId.AUTH_AES_XCBC_96: PrfId.PRF_AES128_XCBC,
    IntegId.AUTH_AES_CMAC_96: PrfId.PRF_AES128_CMAC,
}

#: Encryption transforms IKE may use: no ENCR_NULL (RFC 7296 3.3.2 allows it only for ESP/AH)
#: and no AES-GMAC (RFC 4543 defines it for ESP and AH only).
IKE_ENCR = frozenset(e for e in EncrId
                     if e not in (EncrId.ENCR_NULL, EncrId.ENCR_NULL_AUTH_AES_GMAC))
#: Ciphers that take no Key Length attribute on the wire (one key size only: RFC 7634 2).
FIXED_KEY_ENCR = frozenset({EncrId.ENCR_CHACHA20_POLY1305})


class IkeTransform(NamedTuple):
    """One transform of an IKE proposal: its type, IANA id and, for ENCR, the key size in bits
    (None for the other types)."""

    type: TransformType
    id: int
    key_bits: int | None = None

    @property
    def family(self) -> str:
        """The registry family that computes it ("aes-gcm", "prf-hmac-sha256", "ecp256")."""
        return ike_family(self.type, self.id)

    @property
    def key_length_attribute(self) -> int | None:
        """The Key Length attribute to send (RFC 7296 3.3.5), None when the transform takes none."""
        if self.type is not TransformType.ENCR or self.id in FIXED_KEY_ENCR:
            return None
        return self.key_bits


def ike_family(transform_type: TransformType | int, transform_id: int) -> str:
    """The registry family of a transform received on the wire; ProposalError for an id this
    project does not implement (an IKE responder skips such a proposal)."""
    try:
        ttype = TransformType(transform_type)
        if ttype is TransformType.ENCR and EncrId(transform_id) in IKE_ENCR:
            return ENCR_INFO[EncrId(transform_id)].family
        if ttype is TransformType.PRF:
            return PRF_INFO[PrfId(transform_id)].family
        if ttype is TransformType.INTEG:
            return INTEG_INFO[IntegId(transform_id)].family
        if ttype is TransformType.KE:
            return KE_INFO[KeId(transform_id)].family
    except (ValueError, KeyError):
        pass
    raise ProposalError(f"transform type {int(transform_type)} id {transform_id} is not supported "
                        "for IKE")


@dataclass(frozen=True, slots=True)
class IkeProposal:
    """One IKE SA proposal: the transforms of each type, in the order given.

    Validates itself: at least one ENCR (IKE-capable), one PRF and one KE method; AEAD ciphers
    with no INTEG, classic ones with at least one, never both kinds together."""

    encr: tuple[IkeTransform, ...]
    prf: tuple[IkeTransform, ...]
    integ: tuple[IkeTransform, ...]
    ke: tuple[IkeTransform, ...]

    def __post_init__(self) -> None:
        for name, ttype in (("encr", TransformType.ENCR), ("prf", TransformType.PRF),
                            ("integ", TransformType.INTEG), ("ke", TransformType.KE)):
            values = tuple(getattr(self, name))
            object.__setattr__(self, name, values)
            for t in values:
                if not isinstance(t, IkeTransform) or t.type is not ttype:
                    raise ProposalError(f"{name}: {t!r} is not a {ttype.name} transform")
                ike_family(t.type, t.id)                    # unknown ids raise
            if len(set(values)) != len(values):
                raise ProposalError(f"a {ttype.name} transform is given twice")
        if not self.encr:
            raise ProposalError(f"no encryption algorithm")
        for t in self.encr:
            info = ENCR_INFO[EncrId(t.id)]
            if t.key_bits not in info.key_bits:
                raise ProposalError(f"{EncrId(t.id).name} takes {info.key_bits} bit keys, "
                                    f"not {t.key_bits}")
        aead = {ENCR_INFO[EncrId(t.id)].kind is CipherKind.AEAD for t in self.encr}
        if aead == {True, False}:
            raise ProposalError(f"AEAD and non-AEAD ciphers in one proposal; "
                                "write them as two proposals")
        if True in aead:
            if self.integ:
                raise ProposalError(f"an AEAD cipher takes no integrity algorithm")
            if not self.prf:
                raise ProposalError(f"an AEAD cipher needs a PRF (for example "
                                    "-prfsha256)")
        elif not self.integ:
            raise ProposalError(f"a non-AEAD cipher needs an integrity algorithm "
                                "(for example -sha256)")
        if not self.prf:
            raise ProposalError(f"no PRF")
        if not self.ke:
            raise ProposalError(f"no key exchange method (for example -ecp256 "
                                "or -x25519)")

    @property
    def transforms(self) -> tuple[IkeTransform, ...]:
        """Every transform, in the order of the SA payload: ENCR, PRF, INTEG, KE."""
        return self.encr + self.prf + self.integ + self.ke

    @property
    def aead(self) -> bool:
        return ENCR_INFO[EncrId(self.encr[0].id)].kind is CipherKind.AEAD

    @property
    def encr_families(self) -> tuple[tuple[str, int], ...]:
        """(family, key bits) of each cipher, as `registry.select` takes them."""
        return tuple((t.family, t.key_bits) for t in self.encr)

    @property
    def prf_families(self) -> tuple[str, ...]:
        return tuple(t.family for t in self.prf)

    @property
    def integ_families(self) -> tuple[str, ...]:
        return tuple(t.family for t in self.integ)

    @property
    def ke_families(self) -> tuple[str, ...]:
        return tuple(t.family for t in self.ke)

    @property
    def keyword(self) -> str:
        return format_ike_proposal(self)


def format_ike_proposal(p: IkeProposal) -> str:
    """Keywords for `p`: every transform written out, the PRFs included (so
    "aes256-sha256-modp2048" comes back as "aes256-sha256-prfsha256-modp2048")."""
    parts = [_encr_name(EncrId(t.id), t.key_bits) for t in p.encr]
    parts += [_INTEG_NAME[IntegId(t.id)] for t in p.integ]
    parts += [_PRF_NAME[PrfId(t.id)] for t in p.prf]
    parts += [_KE_NAME[KeId(t.id)] for t in p.ke]
    return "-".join(parts)


def parse_ike_proposal(text: str) -> IkeProposal:
    """Parse one IKE proposal such as "aes128gcm16-prfsha256-ecp256" or "aes256-sha256-modp2048".

    Raises ProposalError naming the token that is not understood, or the rule a proposal breaks.
    """
    if not isinstance(text, str) or not text.strip():
        raise ProposalError("empty IKE proposal; expected something like "
                            "'aes128gcm16-prfsha256-ecp256' or 'aes256-sha256-modp2048'")
    encr: list[IkeTransform] = []
    prf: list[IkeTransform] = []
    integ: list[IkeTransform] = []
    ke: list[IkeTransform] = []
    for token in text.strip().lower().split("-"):
        if token in PRF_KEYWORDS:
            _add(prf, IkeTransform(TransformType.PRF, PRF_KEYWORDS[token]), token, text)
        elif token in INTEG_KEYWORDS:
            _add(integ, IkeTransform(TransformType.INTEG, INTEG_KEYWORDS[token]), token, text)
        elif token in KE_KEYWORDS:
            _add(ke, IkeTransform(TransformType.KE, KE_KEYWORDS[token]), token, text)
        elif token in ("esn", "noesn"):
            raise ProposalError(f"{text!r}: {token!r} is for ESP/AH proposals, not IKE")
        elif (parsed := _parse_encr(token)) is not None:
            encr_id, bits = parsed
            if encr_id not in IKE_ENCR:
                raise ProposalError(f"{text!r}: {token!r} ({encr_id.name}) is for ESP/AH only; "
                                    "IKE needs a real cipher (e.g. aes128gcm16, aes256)")
            _add(encr, IkeTransform(TransformType.ENCR, encr_id, bits), token, text)
        else:
            raise ProposalError(f"{text!r}: unknown IKE keyword {token!r}; expected e.g. "
                                "aes128gcm16, aes256, chacha20poly1305, sha256, prfsha256, "
                                "ecp256, x25519, modp2048")
    if integ and not prf:
        for t in integ:                      # strongSwan: sha256 alone also means prfsha256
            implied = IkeTransform(TransformType.PRF, PRF_FOR_INTEG[IntegId(t.id)])
            if implied not in prf:
                prf.append(implied)
    try:
        return IkeProposal(tuple(encr), tuple(prf), tuple(integ), tuple(ke))
    except ProposalError as exc:
        raise ProposalError(f"{text!r}: {exc}") from None


def _add(into: list[IkeTransform], transform: IkeTransform, token: str, text: str) -> None:
    if transform in into:
        raise ProposalError(f"{text!r}: {token!r} is given twice")
    into.append(transform)


def proposal_from_transforms(transforms: Iterable[tuple[int, int, int | None]]) -> IkeProposal:
    """An `IkeProposal` from (transform type, id, key bits) triples as they arrive in an SA
    payload (key bits: the Key Length attribute, None when absent).  ProposalError for an
    unsupported id or a proposal that breaks the rules."""
    by_type: dict[TransformType, list[IkeTransform]] = {t: [] for t in TransformType}
    for ttype, tid, bits in transforms:
        try:
            ttype = TransformType(ttype)
        except ValueError:
            raise ProposalError(f"transform type {ttype} is not an IKE transform type") from None
        if ttype is TransformType.ESN:
            raise ProposalError("an IKE proposal carries no ESN transform")
        ike_family(ttype, tid)
        if ttype is TransformType.ENCR:
            if EncrId(tid) in FIXED_KEY_ENCR:
                if bits is not None:
                    raise ProposalError(f"{EncrId(tid).name} takes no Key Length attribute")
                bits = ENCR_INFO[EncrId(tid)].key_bits[0]
            elif bits is None:
                raise ProposalError(f"{EncrId(tid).name} needs a Key Length attribute")
            by_type[ttype].append(IkeTransform(ttype, EncrId(tid), bits))
        else:
            if bits is not None:
                raise ProposalError(f"{ttype.name} transform {tid} takes no Key Length attribute")
            enum_type = {TransformType.PRF: PrfId, TransformType.INTEG: IntegId,
                         TransformType.KE: KeId}[ttype]
            by_type[ttype].append(IkeTransform(ttype, enum_type(tid)))
    return IkeProposal(tuple(by_type[TransformType.ENCR]), tuple(by_type[TransformType.PRF]),
                       tuple(by_type[TransformType.INTEG]), tuple(by_type[TransformType.KE]))


def ike_keywords_for(family: str) -> list[str]:
    """IKE-only keywords a primitive family makes possible (PRFs and key exchange methods), for
    listings such as `ipsec backends`; ESP ones come from `keywords.esp_keywords_for`."""
    out = [_PRF_NAME[p.id] for p in PRF_INFO.values() if p.family == family]
    out += [_KE_NAME[k.id] for k in KE_INFO.values() if k.family == family]
    return out


__all__ = ["FIXED_KEY_ENCR", "IKE_ENCR", "IkeProposal", "IkeTransform", "PRF_FOR_INTEG",
           "PRF_KEYWORDS", "format_ike_proposal", "ike_family", "ike_keywords_for",
           "parse_ike_proposal", "proposal_from_transforms"]

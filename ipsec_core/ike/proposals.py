"""IKE and ESP proposals on the wire: strongSwan keywords to SA payload proposals, and the
responder's choice.

Owns: `IkeSuite` (the transforms one IKE SA runs with), turning configured keywords into
`Proposal`s, and `choose`: the first of the initiator's proposals the responder accepts, each
transform type taken in the initiator's order (RFC 7296 2.7, 3.3.6).
Must not: compute crypto or hold session state.
"""
from __future__ import annotations

from dataclasses import dataclass

from ipsec_core.crypto.kex import KE_BY_GROUP
from ipsec_core.errors import ProposalError
from ipsec_core.ike.constants import ProtocolId, TransformType
from ipsec_core.ike.payloads import Proposal, Transform
from ipsec_core.transforms.iana import (ENCR_INFO, INTEG_INFO, PRF_INFO, CipherKind, EncrId, EncrInfo,
                                        IntegId, IntegInfo, PrfId, PrfInfo)
from ipsec_core.transforms.ike import _PRF_NAME
from ipsec_core.transforms.ike import parse_ike_proposal as parse_keywords
from ipsec_core.transforms.keywords import _INTEG_NAME, _encr_name, parse_esp

#: ENCR transforms the IKE SA itself can run with: AEADs per RFC 5282 / RFC 7634, AES-CBC.
IKE_ENCR = (EncrId.ENCR_AES_GCM_16, EncrId.ENCR_AES_GCM_12, EncrId.ENCR_AES_GCM_8,
            EncrId.ENCR_CHACHA20_POLY1305, EncrId.ENCR_AES_CBC)


@dataclass(frozen=True, slots=True)
class IkeSuite:
    """The transforms of one IKE SA."""

    encr: EncrInfo
    key_bits: int
    integ: IntegInfo | None
    prf: PrfInfo
    group: int

    @property
    def keyword(self) -> str:
        parts = [_encr_name(self.encr.id, self.key_bits)]
        if self.integ is not None:
            parts.append(_INTEG_NAME[self.integ.id])
        parts.append(_PRF_NAME[self.prf.id])
        parts.append(KE_BY_GROUP[self.group].family if self.group in KE_BY_GROUP
                     else f"ke{self.group}")
        return "-".join(parts)

    @property
    def aead(self) -> bool:
        return self.encr.kind is CipherKind.AEAD

    @property
    def encr_key_bytes(self) -> int:
        return self.key_bits // 8 + self.encr.salt_bytes


def parse_ike_proposal(text: str) -> list[IkeSuite]:
    """Every combination a strongSwan IKE proposal ("aes128gcm16-prfsha256-ecp256",
    "aes256-sha256-modp2048", "aes128-aes256-sha256-ecp256-modp3072") allows, in order.
    The keywords are read by `ipsec_core.transforms.ike`; this adds what an IKE SA here needs:
    an ENCR it can run (AES-GCM, ChaCha20-Poly1305, AES-CBC) and a key exchange method."""
    keywords = parse_keywords(text)
    encrs = []
    for t in keywords.encr:
        encr = ENCR_INFO.get(EncrId(t.id)) if t.id in EncrId._value2member_map_ else None
        if encr is None or encr.id not in IKE_ENCR:
            raise ProposalError(f"{text!r}: ENCR transform {t.id} cannot encrypt an IKE SA here; "
                                "use AES-GCM, ChaCha20-Poly1305 or AES-CBC")
        encrs.append((encr, t.key_bits or encr.key_bits[0]))
    integs = [INTEG_INFO[IntegId(t.id)] for t in keywords.integ if t.id]
    prfs = [PRF_INFO[PrfId(t.id)] for t in keywords.prf]
    groups = [int(t.id) for t in keywords.ke if t.id]
    if not encrs or not prfs:
        raise ProposalError(f"{text!r}: an IKE proposal needs encryption and a PRF")
    if not groups:
        raise ProposalError(f"{text!r}: no key exchange method (e.g. ecp256, x25519, modp2048)")
    if any(e.kind is not CipherKind.AEAD for e, _ in encrs) and not integs:
        raise ProposalError(f"{text!r}: AES-CBC needs an integrity algorithm (e.g. sha256)")
    return [IkeSuite(e, bits, i, p, g) for e, bits in encrs for i in (integs or [None])
            for p in prfs for g in groups]


def ike_proposal(suites: list[IkeSuite], number: int, *, spi: bytes = b"") -> Proposal:
    """One wire proposal offering every transform of `suites` (as parsed from one keyword)."""
    transforms: list[Transform] = []

    def add(t: Transform) -> None:
        if t not in transforms:
            transforms.append(t)
    for s in suites:
        add(Transform(TransformType.ENCR, int(s.encr.id), s.key_bits if s.encr.id in _KEYED else None))
    for s in suites:
        add(Transform(TransformType.PRF, int(s.prf.id)))
    for s in suites:
        if s.integ is not None:
            add(Transform(TransformType.INTEG, int(s.integ.id)))
    for s in suites:
        add(Transform(TransformType.DH, s.group))
    return Proposal(number, ProtocolId.IKE, spi, tuple(transforms))


#: ENCR ids that carry a Key Length attribute (RFC 7296 3.3.5: variable key length ciphers).
_KEYED = {EncrId.ENCR_AES_CBC, EncrId.ENCR_AES_CTR, EncrId.ENCR_AES_GCM_8, EncrId.ENCR_AES_GCM_12,
          EncrId.ENCR_AES_GCM_16, EncrId.ENCR_AES_CCM_8, EncrId.ENCR_AES_CCM_12,
          EncrId.ENCR_AES_CCM_16, EncrId.ENCR_NULL_AUTH_AES_GMAC}


def esp_proposal(text: str, number: int, *, spi: bytes) -> Proposal:
    """One ESP wire proposal from an ESP keyword ("aes128gcm16", "aes256-sha256-modp2048-esn")."""
    p = parse_esp(text)
    transforms = [Transform(TransformType.ENCR, int(p.encr), p.key_bits if p.encr in _KEYED else None)]
    if p.integ != IntegId.AUTH_NONE:
        transforms.append(Transform(TransformType.INTEG, int(p.integ)))
    for group in getattr(p, "ke", ()) or ():
        transforms.append(Transform(TransformType.DH, int(group)))
    transforms.append(Transform(TransformType.ESN, 1 if p.esn else 0))
    return Proposal(number, ProtocolId.ESP, spi, tuple(transforms))


def _by_type(proposal: Proposal) -> dict[int, list[Transform]]:
    out: dict[int, list[Transform]] = {}
    for t in proposal.transforms:
        out.setdefault(t.transform_type, []).append(t)
    return out


def choose(offered: tuple[Proposal, ...], acceptable: list[Proposal], *,
           protocol: int) -> Proposal | None:
    """The responder's choice: the first offered proposal (of `protocol`) that offers the same
    transform types as one of our `acceptable` proposals and, for each type, a transform ours
    has too (taken in the initiator's order).  Returns it with one transform per type,
    numbered as offered, or None.  A missing ESN transform counts as "no ESN"; a NONE
    transform (id 0) of a type we do not use is ignored."""
    for theirs in offered:
        if theirs.protocol_id != protocol or any(t.attributes for t in theirs.transforms):
            continue                       # an unknown attribute refuses the transform set
        their_types = {k: v for k, v in _by_type(theirs).items()
                       if not all(t.transform_id == 0 and k != TransformType.ESN for t in v)}
        if protocol == ProtocolId.ESP:
            their_types.setdefault(TransformType.ESN, [Transform(TransformType.ESN, 0)])
        for ours in acceptable:
            our_types = _by_type(ours)
            if set(their_types) != set(our_types):
                continue
            picked = [next((t for t in their_types[k] if t in our_types[k]), None)
                      for k in sorted(our_types)]
            if None not in picked:
                return Proposal(theirs.number, protocol, theirs.spi, tuple(picked))
    return None


def suite_of(proposal: Proposal) -> IkeSuite:
    """The IkeSuite of a chosen (one transform per type) IKE proposal; ProposalError when a
    transform is unknown here."""
    types = _by_type(proposal)
    try:
        encr_t = types[TransformType.ENCR][0]
        prf_t = types[TransformType.PRF][0]
        dh_t = types[TransformType.DH][0]
    except (KeyError, IndexError):
        raise ProposalError("IKE proposal without ENCR, PRF or DH transform") from None
    try:
        encr = ENCR_INFO[EncrId(encr_t.transform_id)]
        prf = PRF_INFO[PrfId(prf_t.transform_id)]
    except (ValueError, KeyError):
        raise ProposalError(f"unknown ENCR {encr_t.transform_id} or PRF {prf_t.transform_id}") from None
    integ = None
    if TransformType.INTEG in types and types[TransformType.INTEG][0].transform_id:
        integ_id = types[TransformType.INTEG][0].transform_id
        if integ_id not in IntegId._value2member_map_ or IntegId(integ_id) not in INTEG_INFO:
            raise ProposalError(f"unknown INTEG {integ_id}")
        integ = INTEG_INFO[IntegId(integ_id)]
    bits = encr_t.key_length or (encr.key_bits[0] if encr.key_bits else 0)
    return IkeSuite(encr, bits, integ, prf, dh_t.transform_id)


def esp_keyword_of(proposal: Proposal) -> str:
    """The strongSwan ESP keyword of a chosen ESP proposal (parse_esp reads it back)."""
    types = _by_type(proposal)
    encr_t = types[TransformType.ENCR][0]
    parts = [_encr_name(EncrId(encr_t.transform_id),
                        encr_t.key_length or ENCR_INFO[EncrId(encr_t.transform_id)].key_bits[0])]
    integ = types.get(TransformType.INTEG)
    if integ and integ[0].transform_id:
        parts.append(_INTEG_NAME[IntegId(integ[0].transform_id)])
    for t in types.get(TransformType.DH, []):
        if t.transform_id:
            parts.append(KE_BY_GROUP[t.transform_id].family)
    esn = types.get(TransformType.ESN)
    if esn and esn[0].transform_id == 1:
        parts.append("esn")
    return "-".join(parts)


__all__ = ["IkeSuite", "parse_ike_proposal", "ike_proposal", "esp_proposal", "choose", "suite_of",
           "esp_keyword_of", "IKE_ENCR"]

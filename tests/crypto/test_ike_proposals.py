"""strongSwan IKE proposal keywords (`ipsec_core.transforms.ike`): parsing, the rules, writing
back, and the way back from the IANA ids received on the wire to the registry's families."""
from __future__ import annotations

import pytest

from ipsec_core.crypto.registry import get_registry
from ipsec_core.errors import ProposalError
from ipsec_core.transforms.iana import EncrId, IntegId, KeId, PrfId, TransformType
from ipsec_core.transforms.ike import (IkeProposal, IkeTransform, format_ike_proposal, ike_family,
                                       ike_keywords_for, parse_ike_proposal,
                                       proposal_from_transforms)

E, P, I, K = TransformType.ENCR, TransformType.PRF, TransformType.INTEG, TransformType.KE

CASES = {
    "aes128gcm16-prfsha256-ecp256": (
        ((E, EncrId.ENCR_AES_GCM_16, 128),), ((P, PrfId.PRF_HMAC_SHA2_256, None),), (),
        ((K, KeId.ECP_256, None),)),
    "aes256-sha256-modp2048": (
        ((E, EncrId.ENCR_AES_CBC, 256),), ((P, PrfId.PRF_HMAC_SHA2_256, None),),
        ((I, IntegId.AUTH_HMAC_SHA2_256_128, None),), ((K, KeId.MODP_2048, None),)),
    "chacha20poly1305-prfsha512-x448": (
        ((E, EncrId.ENCR_CHACHA20_POLY1305, 256),), ((P, PrfId.PRF_HMAC_SHA2_512, None),), (),
        ((K, KeId.CURVE448, None),)),
    "aes128-aes256-sha256-sha384-ecp256-modp3072": (
        ((E, EncrId.ENCR_AES_CBC, 128), (E, EncrId.ENCR_AES_CBC, 256)),
        ((P, PrfId.PRF_HMAC_SHA2_256, None), (P, PrfId.PRF_HMAC_SHA2_384, None)),
        ((I, IntegId.AUTH_HMAC_SHA2_256_128, None), (I, IntegId.AUTH_HMAC_SHA2_384_192, None)),
        ((K, KeId.ECP_256, None), (K, KeId.MODP_3072, None))),
    "aes128ctr-aesxcbc-prfsha1-curve25519": (
        ((E, EncrId.ENCR_AES_CTR, 128),), ((P, PrfId.PRF_HMAC_SHA1, None),),
        ((I, IntegId.AUTH_AES_XCBC_96, None),), ((K, KeId.CURVE25519, None),)),
    "aes192ccm12-prfaescmac-ecp521": (
        ((E, EncrId.ENCR_AES_CCM_12, 192),), ((P, PrfId.PRF_AES128_CMAC, None),), (),
        ((K, KeId.ECP_521, None),)),
    "aes256-aescmac-ecp384": (
        ((E, EncrId.ENCR_AES_CBC, 256),), ((P, PrfId.PRF_AES128_CMAC, None),),
        ((I, IntegId.AUTH_AES_CMAC_96, None),), ((K, KeId.ECP_384, None),)),
}


@pytest.mark.parametrize("text", sorted(CASES))
def test_parse(text: str) -> None:
    p = parse_ike_proposal(text)
    assert (p.encr, p.prf, p.integ, p.ke) == CASES[text]
    assert all(isinstance(t, IkeTransform) for t in p.transforms)
    assert parse_ike_proposal(format_ike_proposal(p)) == p       # writes back, reads the same
    assert parse_ike_proposal(text.upper()) == p


def test_families_for_the_registry():
    p = parse_ike_proposal("aes128-aes256-sha256-sha384-ecp256-modp3072")
    assert p.encr_families == (("aes-cbc", 128), ("aes-cbc", 256))
    assert p.prf_families == ("prf-hmac-sha256", "prf-hmac-sha384")
    assert p.integ_families == ("hmac-sha256", "hmac-sha384")
    assert p.ke_families == ("ecp256", "modp3072")
    assert not p.aead
    q = parse_ike_proposal("chacha20poly1305-prfsha512-x448")
    assert q.aead and q.encr_families == (("chacha20-poly1305", 256),)
    assert q.ke_families == ("curve448",)
    registry = get_registry()                      # every family is one the registry selects
    for family, bits in p.encr_families + q.encr_families:
        registry.select(family, bits)
    for family in p.prf_families + p.integ_families + p.ke_families + q.prf_families + q.ke_families:
        registry.select(family, None)


def test_x25519_is_curve25519():
    assert parse_ike_proposal("aes128gcm16-prfsha256-x25519") == \
        parse_ike_proposal("aes128gcm16-prfsha256-curve25519")
    assert parse_ike_proposal("aes128gcm16-prfsha256-x25519").ke_families == ("curve25519",)


def test_integrity_implies_the_prf_only_when_none_is_given():
    assert parse_ike_proposal("aes256-sha256-modp2048").prf_families == ("prf-hmac-sha256",)
    assert parse_ike_proposal("aes256-sha1-aesxcbc-modp2048").prf_families == \
        ("prf-hmac-sha1", "prf-aes128-xcbc")
    assert parse_ike_proposal("aes256-sha256-prfsha512-modp2048").prf_families == \
        ("prf-hmac-sha512",)
    assert format_ike_proposal(parse_ike_proposal("aes256-sha256-modp2048")) == \
        "aes256-sha256-prfsha256-modp2048"


@pytest.mark.parametrize(("text", "message"), [
    ("", "empty IKE proposal"),
    ("aes128gcm16-sha256-ecp256", "an AEAD cipher takes no integrity algorithm"),
    ("aes128gcm16-ecp256", "an AEAD cipher needs a PRF"),
    ("aes128gcm16-prfsha256", "no key exchange method"),
    ("aes256-sha256", "no key exchange method"),
    ("aes256-prfsha256-ecp256", "a non-AEAD cipher needs an integrity algorithm"),
    ("aes128-aes128gcm16-sha256-prfsha256-ecp256", "AEAD and non-AEAD ciphers in one proposal"),
    ("sha256-prfsha256-ecp256", "no encryption algorithm"),
    ("x25519", "no encryption algorithm"),
    ("null-sha256-ecp256", "ESP/AH only"),
    ("aes128gmac-prfsha256-ecp256", "ESP/AH only"),
    ("aes256-sha256-esn-modp2048", "for ESP/AH proposals, not IKE"),
    ("aes256-sha256-ecp256-ecp256", "'ecp256' is given twice"),
    ("aes256-sha256-x25519-curve25519", "'curve25519' is given twice"),
    ("aes256-sha256-modp1024", "unknown IKE keyword 'modp1024'"),
    ("aes256-md5-modp2048", "unknown IKE keyword 'md5'"),
    ("aes256-sha256-prfmd5-modp2048", "unknown IKE keyword 'prfmd5'"),
    ("camellia128-sha256-modp2048", "unknown IKE keyword 'camellia128'"),
])
def test_errors_name_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ProposalError, match=message):
        parse_ike_proposal(text)


def test_ids_from_the_wire_back_to_families():
    assert ike_family(TransformType.ENCR, 20) == "aes-gcm"
    assert ike_family(1, 28) == "chacha20-poly1305"
    assert ike_family(2, 2) == "prf-hmac-sha1"
    assert ike_family(2, 4) == "prf-aes128-xcbc"
    assert ike_family(2, 8) == "prf-aes128-cmac"
    assert [ike_family(2, n) for n in (5, 6, 7)] == ["prf-hmac-sha256", "prf-hmac-sha384",
                                                      "prf-hmac-sha512"]
    assert ike_family(3, 12) == "hmac-sha256"
    assert [ike_family(4, g) for g in (14, 15, 16, 19, 20, 21, 31, 32)] == [
        "modp2048", "modp3072", "modp4096", "ecp256", "ecp384", "ecp521", "curve25519", "curve448"]
    for ttype, tid in ((1, 11), (1, 21), (2, 1), (3, 1), (4, 2), (4, 0), (5, 0), (9, 1), (2, 99)):
        with pytest.raises(ProposalError, match="not supported for IKE"):
            ike_family(ttype, tid)


@pytest.mark.parametrize("text", sorted(CASES))
def test_proposal_from_wire_transforms_round_trips(text: str) -> None:
    p = parse_ike_proposal(text)
    wire = [(int(t.type), int(t.id), t.key_length_attribute) for t in p.transforms]
    assert proposal_from_transforms(wire) == p
    assert proposal_from_transforms(wire[::-1]).ke == p.ke[::-1]        # order kept per type


def test_key_length_attribute():
    gcm = parse_ike_proposal("aes256gcm16-prfsha384-ecp384")
    assert [t.key_length_attribute for t in gcm.transforms] == [256, None, None]
    chacha = parse_ike_proposal("chacha20poly1305-prfsha256-x25519")
    assert chacha.encr[0].key_bits == 256 and chacha.encr[0].key_length_attribute is None


@pytest.mark.parametrize(("wire", "message"), [
    ([(1, 20, None), (2, 5, None), (4, 19, None)], "needs a Key Length attribute"),
    ([(1, 28, 256), (2, 5, None), (4, 19, None)], "takes no Key Length attribute"),
    ([(1, 20, 128), (2, 5, 128), (4, 19, None)], "takes no Key Length attribute"),
    ([(1, 20, 64), (2, 5, None), (4, 19, None)], "takes \\(128, 192, 256\\) bit keys"),
    ([(1, 20, 128), (2, 5, None), (4, 19, None), (5, 0, None)], "no ESN"),
    ([(1, 20, 128), (2, 5, None), (3, 12, None), (4, 19, None)], "takes no integrity"),
    ([(1, 12, 128), (2, 5, None), (4, 19, None)], "needs an integrity algorithm"),
    ([(1, 20, 128), (4, 19, None)], "needs a PRF"),
    ([(1, 20, 128), (2, 5, None)], "no key exchange"),
    ([(1, 20, 128), (2, 5, None), (4, 1, None)], "not supported for IKE"),
    ([(1, 20, 128), (2, 5, None), (2, 5, None), (4, 19, None)], "given twice"),
])
def test_wire_transforms_are_checked(wire, message) -> None:
    with pytest.raises(ProposalError, match=message):
        proposal_from_transforms(wire)


def test_proposal_checks_its_transform_types():
    with pytest.raises(ProposalError, match="is not a PRF transform"):
        IkeProposal(encr=(IkeTransform(E, EncrId.ENCR_AES_GCM_16, 128),),
                    prf=(IkeTransform(K, KeId.ECP_256),), integ=(), ke=(IkeTransform(K, KeId.ECP_256),))


def test_keywords_for_listings():
    assert ike_keywords_for("prf-hmac-sha256") == ["prfsha256"]
    assert ike_keywords_for("prf-aes128-xcbc") == ["prfaesxcbc"]
    assert ike_keywords_for("curve25519") == ["x25519"]
    assert ike_keywords_for("modp4096") == ["modp4096"]
    assert ike_keywords_for("aes-gcm") == []

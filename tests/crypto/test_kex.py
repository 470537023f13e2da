"""Key exchange and PRFs on every backend that has them, against the packaged vectors (the
cases of `ipsec_core.crypto.selftest`, whose docstring says how each file is read for IKE), plus
what vectors cannot show: MODP agreement between backends, padding, fresh keys, the tables.

Test ids name the source and the backend: `rfc5903-ecp256-initiator[aesni]`,
`wycheproof-x25519-tc12[reference]`, `rfc4434-case2-prfaesxcbc[cryptodome]`.

Each case a backend must refuse is a test of its own on every backend, and so is every RFC and
derived case; of the Wycheproof cases with a shared secret to match, one in ten is a test of its
own on the reference backend.  Every Wycheproof case also runs in one sweep per family and
backend (`wycheproof-x25519-all[aesni]`), which names each failing case; the reference backend
sweeps only P-256 and X25519 (its P-384, P-521 and X448 arithmetic is slow in Python and gets
the sampled cases), so the file stays quick.
"""
from __future__ import annotations

import hashlib
import json
import re
from importlib import resources

import pytest

from ipsec_core.crypto import selftest
from ipsec_core.crypto.base import FAMILY_KIND, Backend, Feature, FeatureKind, KeyExchange, Prf
from ipsec_core.crypto.kex import (KE_BY_GROUP, KE_FAMILIES, MODP_PRIMES, KeyExchangeError,
                                   ke_family, ke_family_by_group)
from ipsec_core.crypto.kex import KeyExchangeError as KexModuleError
from ipsec_core.crypto.prf import PRF_BY_IANA, PRF_FAMILIES, MacPrf, prf_family
from ipsec_core.crypto.registry import Registry, get_registry
from ipsec_core.errors import BackendError, IpsecError
from ipsec_core import errors
from ipsec_plugins.aesni import AesniBackend
from ipsec_plugins.cryptodome import CryptodomeBackend
from ipsec_plugins.reference import ReferenceBackend
from ipsec_plugins.reference import kex as reference_kex

BACKENDS: dict[str, Backend] = {"reference": ReferenceBackend(), "aesni": AesniBackend(),
                                "cryptodome": CryptodomeBackend()}
MODP = ("modp2048", "modp3072", "modp4096")
CURVES = ("ecp256", "ecp384", "ecp521", "curve25519", "curve448")
_SWEPT_ON_REFERENCE = ("ecp256", "curve25519")


def _load(path: str) -> dict:
    with resources.files("ipsec_core.vectors").joinpath(path).open("rb") as fh:
        return json.load(fh)


def _backends_for(family: str) -> list[str]:
    return [name for name, b in BACKENDS.items() if any(f.family == family for f in b.features())]


def _wycheproof(case) -> bool:
    return case.id.startswith("wycheproof-")


def _own_test(case, backend: str) -> bool:
    """Whether a key exchange case is a test of its own on `backend` (see the docstring)."""
    if not _wycheproof(case) or not case.valid:
        return True
    return backend == "reference" and int(re.search(r"-tc(\d+)$", case.id)[1]) % 10 == 1


KE_CASES = [c for f in KE_FAMILIES for c in selftest.iter_cases(f)]
PRF_CASES = [c for f in PRF_FAMILIES for c in selftest.iter_cases(f)]


@pytest.mark.parametrize(("case", "backend"), [
    pytest.param(c, b, id=f"{c.id}[{b}]") for c in KE_CASES for b in _backends_for(c.family)
    if _own_test(c, b)])
def test_ke_vector(case: selftest.KeCase, backend: str) -> None:
    why = case.run(BACKENDS[backend])
    assert why is None, f"{case.id} ({case.source}) on {backend}: {why}"


@pytest.mark.parametrize(("family", "backend"), [
    pytest.param(f, b, id=f"wycheproof-{f}-all[{b}]")
    for f in CURVES for b in _backends_for(f) if b != "reference" or f in _SWEPT_ON_REFERENCE])
def test_wycheproof_sweep(family: str, backend: str) -> None:
    failures = [f"{c.id}: {why}" for c in selftest.iter_cases(family)
                if _wycheproof(c) and (why := c.run(BACKENDS[backend])) is not None]
    assert not failures, f"{len(failures)} cases fail: " + "; ".join(failures[:10])


@pytest.mark.parametrize(("case", "backend"), [
    pytest.param(c, b, id=f"{c.id}[{b}]") for c in PRF_CASES for b in BACKENDS])
def test_prf_vector(case: selftest.PrfCase, backend: str) -> None:
    why = case.run(BACKENDS[backend])
    assert why is None, f"{case.id} ({case.source}) on {backend}: {why}"


def test_vectors_are_read_as_documented():
    """Every valid Wycheproof case is kept, and exactly the documented ones are refused."""
    counts = {}
    for f in CURVES:
        wy = [c for c in selftest.iter_cases(f) if _wycheproof(c)]
        counts[f] = (sum(c.valid for c in wy), sum(not c.valid for c in wy))
    assert counts == {"ecp256": (330, 25), "ecp384": (771, 19), "ecp521": (632, 29),
                      "curve25519": (487, 31), "curve448": (487, 23)}
    for f in ("ecp256", "ecp384", "ecp521"):
        assert all(len(c.peer_public) == ke_family(f).public_bytes
                   for c in selftest.iter_cases(f) if c.valid)
    ids = {c.id for c in KE_CASES + PRF_CASES}
    assert len(ids) == len(KE_CASES) + len(PRF_CASES)
    for expected in ("rfc5903-ecp521-responder", "rfc7748-x448-bob", "rfc7748-x25519-function1",
                     "derived-modp4096-case2-b", "rfc6989-modp2048-peer-p-1",
                     "rfc6989-ecp521-peer-x-plus-p", "rfc8031-curve448-peer-zero",
                     "wycheproof-x448-tc76", "rfc4868-prf6-prfsha512", "rfc4615-case3-prfaescmac",
                     "wycheproof-hmac_sha1-tc1-prfsha1"):
        assert expected in ids
    for family in ("prf-aes128-xcbc", "prf-aes128-cmac"):   # shorter, equal, longer than 16
        assert {(len(c.key) > 16) - (len(c.key) < 16) for c in PRF_CASES if c.family == family} \
            == {-1, 0, 1}
    assert {len(c.key) for c in PRF_CASES if c.family == "prf-hmac-sha1"} == {10, 20, 65}


@pytest.mark.parametrize(("curve", "iterations", "backend"), [
    pytest.param(curve, n, b, id=f"rfc7748-{curve}-iterated{n}[{b}]")
    for curve in ("x25519", "x448") for n in (1, 1000) for b in BACKENDS
    if n == 1 or b == "aesni"])
def test_rfc7748_iterated(curve: str, iterations: int, backend: str) -> None:
    """RFC 7748 5.2: k = u = base; repeat (k, u) = (X(k, u), k).  The 1,000-iteration run is
    left to the fastest backend, the 1,000,000 one to nobody."""
    case = next(c for c in _load("rfc/rfc7748_x25519_x448.json")["cases"]
                if c["type"] == "iterated" and c["curve"].lower() == curve
                and c["iterations"] == iterations)
    family = {"x25519": "curve25519", "x448": "curve448"}[curve]
    k = u = bytes.fromhex(case["initial_k_and_u"])
    for _ in range(iterations):
        k, u = BACKENDS[backend].key_exchange(family, private_key=k).shared_secret(u), k
    assert k.hex() == case["result_k"]


def test_rfc5903_ke_payloads_carry_the_public_value():
    """The RFC's whole KE payloads: group number, then exactly `public_bytes` as computed."""
    for c in _load("rfc/rfc5903_ecp_groups_ikev2.json")["cases"]:
        spec = ke_family_by_group(c["ike_dh_group"])
        for payload, private in ((c["kei_payload"], c["i"]), (c["ker_payload"], c["r"])):
            payload = bytes.fromhex(payload)
            assert int.from_bytes(payload[4:6], "big") == spec.group
            assert int.from_bytes(payload[2:4], "big") == len(payload) == 8 + spec.public_bytes
            kx = BACKENDS["aesni"].key_exchange(spec.name, private_key=bytes.fromhex(private))
            assert payload[8:] == kx.public_bytes


# -- MODP: no published known answers for RFC 3526 groups; backends must agree -------------------
def _fixed_private(family: str, label: str, bits: int = 384) -> bytes:
    """A deterministic private exponent for cross-backend checks."""
    seed = hashlib.shake_256(f"{family}/{label}".encode()).digest(bits // 8)
    return (int.from_bytes(seed, "big") | 1 << (bits - 1)).to_bytes(bits // 8, "big")


@pytest.mark.parametrize("family", MODP)
def test_modp_backends_agree_with_fixed_private_keys(family: str) -> None:
    a, b = _fixed_private(family, "a"), _fixed_private(family, "b")
    ref_a = BACKENDS["reference"].key_exchange(family, private_key=a)
    ossl_a = BACKENDS["aesni"].key_exchange(family, private_key=a)
    ossl_b = BACKENDS["aesni"].key_exchange(family, private_key=b)
    assert ref_a.public_bytes == ossl_a.public_bytes
    assert len(ref_a.public_bytes) == ke_family(family).public_bytes
    shared = ref_a.shared_secret(ossl_b.public_bytes)
    assert shared == ossl_b.shared_secret(ref_a.public_bytes) == ossl_a.shared_secret(ossl_b.public_bytes)
    assert len(shared) == ke_family(family).secret_bytes
    p, x = MODP_PRIMES[family], int.from_bytes(a, "big")
    y_b = int.from_bytes(ossl_b.public_bytes, "big")
    assert int.from_bytes(shared, "big") == pow(y_b, x, p)   # g^ab, computed a third way


def test_modp_values_are_left_padded():
    """A public value with leading zero bytes keeps the prime's length (RFC 7296 3.4): find a
    small exponent whose g^x has a short big-endian form and compare both backends."""
    family, p = "modp2048", MODP_PRIMES["modp2048"]
    x = next(x for x in range(2, 5000) if pow(2, x, p).bit_length() <= 2040)
    private = x.to_bytes(2, "big")
    for backend in ("reference", "aesni"):
        public = BACKENDS[backend].key_exchange(family, private_key=private).public_bytes
        assert len(public) == 256 and public[0] == 0
        assert int.from_bytes(public, "big") == pow(2, x, p)


@pytest.mark.parametrize("backend", ["reference", "aesni"])
def test_modp_random_keys_agree_across_backends(backend: str) -> None:
    other = "aesni" if backend == "reference" else "reference"
    mine, theirs = BACKENDS[backend].key_exchange("modp2048"), BACKENDS[other].key_exchange("modp2048")
    assert mine.group == 14 and mine.family == "modp2048"
    assert mine.shared_secret(theirs.public_bytes) == theirs.shared_secret(mine.public_bytes)


def _bad_modp_values(family: str) -> dict[str, bytes]:
    p, n = MODP_PRIMES[family], ke_family(family).public_bytes
    return {"zero": bytes(n), "one": (1).to_bytes(n, "big"), "p-1": (p - 1).to_bytes(n, "big"),
            "p": p.to_bytes(n, "big"), "p+1": (p + 1).to_bytes(n, "big"),
            "all-ones": b"\xff" * n, "short": (2).to_bytes(n - 1, "big"),
            "long": (2).to_bytes(n + 1, "big"), "empty": b""}


@pytest.mark.parametrize(("family", "what", "backend"), [
    pytest.param(f, what, b, id=f"modp-invalid-{f}-{what}[{b}]")
    for f in MODP for what in _bad_modp_values(f) for b in _backends_for(f)])
def test_modp_refuses_invalid_peer_values(family: str, what: str, backend: str) -> None:
    kx = BACKENDS[backend].key_exchange(family, private_key=_fixed_private(family, "a"))
    with pytest.raises(KeyExchangeError) as info:
        kx.shared_secret(_bad_modp_values(family)[what])
    assert info.value.notify == 17


def test_modp_primes_follow_the_rfc3526_formula():
    """p = 2^N - 2^(N-64) - 1 + 2^64 * ([2^(N-130) pi] + k), with pi from Machin's formula:
    a typo in the hex would not survive this."""
    def pi_times_2_to(bits: int) -> int:
        one = 1 << (bits + 64)

        def arctan_inv(x: int) -> int:
            total = term = one // x
            n, sign = 1, -1
            while term:
                term //= x * x
                total += sign * (term // (2 * n + 1))
                n, sign = n + 1, -sign
            return total
        return (4 * (4 * arctan_inv(5) - arctan_inv(239))) >> 64

    for family, (n, k) in {"modp2048": (2048, 124476), "modp3072": (3072, 1690314),
                           "modp4096": (4096, 240904)}.items():
        p = 2**n - 2**(n - 64) - 1 + 2**64 * (pi_times_2_to(n - 130) + k)
        assert MODP_PRIMES[family] == p, family


# -- ECP and XDH: invalid peer values beyond the Wycheproof files ------------------------------
def _bad_ecp_values(family: str) -> dict[str, bytes]:
    curve = reference_kex.CURVES[family]
    size = curve.size
    enc = lambda x, y: x.to_bytes(size, "big") + y.to_bytes(size, "big")  # noqa: E731
    values = {
        "infinity-as-zeros": bytes(2 * size),
        "off-curve": enc(curve.gx, (curve.gy + 1) % curve.p),
        "x-is-p": enc(curve.p, curve.gy),
        "with-04-prefix": b"\x04" + enc(curve.gx, curve.gy),
        "x-only": curve.gx.to_bytes(size, "big"),
        "short": enc(curve.gx, curve.gy)[1:],
        "empty": b"",
    }
    if (curve.gx + curve.p).bit_length() <= 8 * size:     # P-521: 66-byte fields leave room
        values["x-plus-p"] = enc(curve.gx + curve.p, curve.gy)
        values["y-plus-p"] = enc(curve.gx, curve.gy + curve.p)
    return values


@pytest.mark.parametrize(("family", "what", "backend"), [
    pytest.param(f, what, b, id=f"ecp-invalid-{f}-{what}[{b}]")
    for f in ("ecp256", "ecp384", "ecp521") for what in _bad_ecp_values(f) for b in BACKENDS])
def test_ecp_refuses_invalid_peer_points(family: str, what: str, backend: str) -> None:
    kx = BACKENDS[backend].key_exchange(family, private_key=(7).to_bytes(ke_family(family).private_bytes, "big"))
    with pytest.raises(KeyExchangeError):
        kx.shared_secret(_bad_ecp_values(family)[what])


_X25519_P = 2**255 - 19


@pytest.mark.parametrize(("family", "peer", "backend"), [
    pytest.param(f, peer, b, id=f"xdh-invalid-{f}-{label}[{b}]")
    for f, n in (("curve25519", 32), ("curve448", 56))
    for label, peer in (("zero", bytes(n)), ("one", (1).to_bytes(n, "little")),
                        ("short", bytes([9]) + bytes(n - 2)), ("long", bytes([9]) + bytes(n)),
                        ("empty", b""))
    + ((("p", _X25519_P.to_bytes(32, "little")),
        ("p-1", (_X25519_P - 1).to_bytes(32, "little"))) if f == "curve25519" else ())
    for b in BACKENDS])
def test_xdh_refuses_low_order_and_wrong_length(family: str, peer: bytes, backend: str) -> None:
    """u = 0, 1, p-1 (and p, which is 0) have small order: the secret is all zeros (RFC 7748 6.1)."""
    kx = BACKENDS[backend].key_exchange(family)
    with pytest.raises(KeyExchangeError):
        kx.shared_secret(peer)


# -- random keys, fixed-key validation, the family table ---------------------------------------
@pytest.mark.parametrize("family", CURVES)
def test_random_keys_agree_across_backends(family: str) -> None:
    names = _backends_for(family)
    exchanges = {name: BACKENDS[name].key_exchange(family) for name in names}
    spec = ke_family(family)
    secrets_seen = set()
    for a in names:
        assert len(exchanges[a].public_bytes) == spec.public_bytes
        assert exchanges[a].group == spec.group
        for b in names:
            if a < b:
                s = exchanges[a].shared_secret(exchanges[b].public_bytes)
                assert s == exchanges[b].shared_secret(exchanges[a].public_bytes)
                assert len(s) == spec.secret_bytes
                secrets_seen.add(s)
    assert len(secrets_seen) == len(names) * (len(names) - 1) // 2   # fresh keys every time


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_fresh_private_keys_differ(backend: str) -> None:
    publics = {BACKENDS[backend].key_exchange("curve25519").public_bytes for _ in range(4)}
    assert len(publics) == 4


@pytest.mark.parametrize(("family", "private_key", "backend"), [
    pytest.param(f, key, b, id=f"bad-private-{f}-{label}[{b}]")
    for f, label, key in (
        ("ecp256", "zero", bytes(32)),
        ("ecp256", "n", reference_kex.P256.n.to_bytes(32, "big")),
        ("ecp256", "short", bytes(30) + b"\x01"),
        ("curve25519", "short", bytes(31)),
        ("curve448", "long", bytes(57)),
        ("modp2048", "one", b"\x01"),
        ("modp2048", "p-1", (MODP_PRIMES["modp2048"] - 1).to_bytes(256, "big")),
        ("modp2048", "too-long", b"\x01" + bytes(256)),
    )
    for b in _backends_for(f)])
def test_bad_fixed_private_keys_are_value_errors(family: str, private_key: bytes, backend: str) -> None:
    with pytest.raises(ValueError):
        BACKENDS[backend].key_exchange(family, private_key=private_key)


def test_cryptodome_has_no_modp():
    from ipsec_plugins.cryptodome import kex as cryptodome_kex

    assert not set(MODP) & set(cryptodome_kex.FAMILIES)
    assert not set(MODP) & {f.family for f in BACKENDS["cryptodome"].features()}
    with pytest.raises(ValueError, match="finite-field"):
        cryptodome_kex.key_exchange("modp2048")
    with pytest.raises(NotImplementedError, match="no key exchange modp2048"):
        BACKENDS["cryptodome"].key_exchange("modp2048")


def test_family_table():
    assert [f.group for f in KE_FAMILIES.values()] == [14, 15, 16, 19, 20, 21, 31, 32]
    assert ke_family("x25519") is ke_family("curve25519") is KE_BY_GROUP[31]
    assert ke_family("x448").name == "curve448"
    for spec in KE_FAMILIES.values():
        assert ke_family_by_group(spec.group) is spec
    with pytest.raises(ValueError, match="known"):
        ke_family("modp1024")
    with pytest.raises(ValueError, match="not supported"):
        ke_family_by_group(2)
    err = KeyExchangeError("bad")
    assert isinstance(err, IpsecError) and err.notify == 17


# -- PRFs: the adapter and the table ----------------------------------------------------------
class _MacOnly(Backend):
    """A backend with the MACs and nothing else: it gets the PRFs through the default adapter."""

    name = "mac-only"

    def features(self):
        return [Feature("hmac-sha256"), Feature("aes-xcbc", (128,)), Feature("prf-hmac-sha256"),
                Feature("prf-aes128-xcbc")]

    def mac(self, family, key):
        if family not in ("hmac-sha256", "aes-xcbc"):
            return super().mac(family, key)
        return BACKENDS["reference"].mac(family, key)


def test_default_prf_is_the_adapter_over_the_backends_mac():
    prf = _MacOnly().prf("prf-aes128-xcbc", bytes(range(10)))
    assert isinstance(prf, MacPrf) and isinstance(prf, Prf) and prf.output_bytes == 16
    case = next(c for c in PRF_CASES if c.id == "rfc4434-case2-prfaesxcbc")
    assert prf.prf(case.data) == case.output
    assert [c.id for c in PRF_CASES if c.family == "prf-hmac-sha256" and c.run(_MacOnly())] == []
    with pytest.raises(NotImplementedError):
        _MacOnly().prf("prf-hmac-sha512", b"k")        # its mac() has no hmac-sha512
    with pytest.raises(ValueError, match="unknown PRF family"):
        _MacOnly().prf("prf-md5", b"k")


def test_prf_table():
    assert {int(f.id): f.family for f in PRF_FAMILIES.values()} == {
        2: "prf-hmac-sha1", 5: "prf-hmac-sha256", 6: "prf-hmac-sha384", 7: "prf-hmac-sha512",
        4: "prf-aes128-xcbc", 8: "prf-aes128-cmac"}
    assert PRF_BY_IANA[5] is prf_family("prf-hmac-sha256") is PRF_FAMILIES["prf-hmac-sha256"]
    assert prf_family("prf-aes128-xcbc").mac == "aes-xcbc"
    with pytest.raises(ValueError, match="known"):
        prf_family("prf-hmac-md5")


# -- the registry and the interfaces ---------------------------------------------------------
def test_new_kinds_and_families_are_known():
    assert {f for f, k in FAMILY_KIND.items() if k is FeatureKind.PRF} == set(PRF_FAMILIES)
    assert {f for f, k in FAMILY_KIND.items() if k is FeatureKind.KE} == set(KE_FAMILIES)
    assert errors.KeyExchangeError is KeyExchangeError is KexModuleError


def test_backend_objects_satisfy_the_protocols():
    for name, backend in BACKENDS.items():
        assert isinstance(backend.key_exchange("ecp256"), KeyExchange), name
        assert isinstance(backend.prf("prf-hmac-sha256", b"key"), Prf), name
    with pytest.raises(NotImplementedError, match="no key exchange"):
        _MacOnly().key_exchange("ecp256")
    with pytest.raises(NotImplementedError):
        BACKENDS["reference"].key_exchange("modp1024")


def test_registry_offers_and_selects_the_new_kinds():
    registry = get_registry()
    for name in ("reference", "aesni", "cryptodome"):
        record = registry.get(name)
        assert not {k: v for k, v in record.failed.items()}, record.failed
        for family in list(PRF_FAMILIES) + list(KE_FAMILIES):
            offered = record.offers(family, None)
            assert offered == (name != "cryptodome" or family not in MODP), (name, family)
    assert registry.select("ecp256", None, "reference").name == "reference"
    assert registry.select("curve25519", None).name == "aesni"          # highest priority
    assert registry.select("prf-hmac-sha256", None, "cryptodome").name == "cryptodome"
    with pytest.raises(BackendError, match="backend 'cryptodome' does not offer modp2048"):
        registry.select("modp2048", None, "cryptodome")
    with pytest.raises(BackendError, match="no available backend offers modp8192"):
        registry.select("modp8192", None)


class _BrokenEcp(Backend):
    """Declares ecp256 but returns a wrong shared secret: the quick check must refuse it."""

    name = "broken-ecp"

    def features(self):
        return [Feature("ecp256"), Feature("curve25519")]

    def key_exchange(self, family, *, private_key=None):
        real = BACKENDS["aesni"].key_exchange(family, private_key=private_key)
        if family == "curve25519":
            return real                                   # right answers, but...

        class Wrong:
            group, public_bytes = real.group, real.public_bytes

            def shared_secret(self, peer_public):
                return bytes(len(real.shared_secret(peer_public)))
        return Wrong()


def test_registry_refuses_a_ke_feature_that_fails_its_quick_check():
    registry = Registry(load_entry_points=False)
    record = registry.add(_BrokenEcp(), plugin="test")
    assert [f.family for f in record.features] == ["curve25519"]
    assert "ecp256" in record.failed and "rfc5903-ecp256-initiator" in record.failed["ecp256"]
    with pytest.raises(BackendError, match="self-test failed"):
        registry.select("ecp256", None, "broken-ecp")


def test_quick_check_picks_a_few_small_cases_per_family():
    for family in list(PRF_FAMILIES) + list(KE_FAMILIES):
        cases = selftest._quick_cases(family, None)
        assert len(cases) in (1, 2, 3), family
        if family in KE_FAMILIES:
            assert [c.valid for c in cases] == [True, False], family
        assert selftest.quick_check(BACKENDS["reference"], Feature(family)) == [], family

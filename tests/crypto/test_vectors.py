"""Every packaged known-answer vector on every available backend, plus checks of the self-test
harness itself (that it notices a wrong backend).

Test ids name the source and the backend: `wycheproof-aes_gcm-tc57[aesni]`, `rfc3602-case4[reference]`.
A case is skipped, with the reason, only when the backend does not declare its family or key
size; a declared feature that failed its registration self-test still runs here, so a broken
primitive shows up as a failure and not as a skip.
"""
from __future__ import annotations

import pytest

from ipsec_core.crypto import selftest
from ipsec_core.crypto.base import FAMILY_KIND, Backend, Feature, FeatureKind
from ipsec_core.crypto.registry import get_registry
from ipsec_core.errors import AuthenticationError

REGISTRY = get_registry()
BACKENDS = [record.name for record in REGISTRY.available()]
DECLARED = {name: list(REGISTRY.records[name].backend.features()) for name in BACKENDS}
CASES = list(selftest.iter_cases())
#: The built-in backends that must offer every family (gpu is a bulk backend and may not).
FULL_BACKENDS = ("reference", "aesni", "cryptodome")


#: Key exchange and signature cases (thousands of Wycheproof ECDH/XDH/ECDSA cases, slow on the
#: reference backend) run in tests/crypto/test_kex.py and test_sign.py, which sample them.
RUN_HERE = [c for c in CASES
            if FAMILY_KIND.get(c.family) not in (FeatureKind.KE, FeatureKind.SIGNATURE)]


@pytest.mark.parametrize(
    ("case", "backend_name"),
    [pytest.param(case, name, id=f"{case.id}[{name}]") for case in RUN_HERE for name in BACKENDS],
)
def test_vector(case: selftest.VectorCase, backend_name: str) -> None:
    if not selftest.offers(DECLARED[backend_name], case):
        size = f" with {case.key_bits}-bit keys" if case.key_bits else ""
        pytest.skip(f"{backend_name} does not offer {case.family}{size}")
    why = case.run(REGISTRY.records[backend_name].backend)
    assert why is None, f"{case.id} ({case.source}) on {backend_name}: {why}"


# -- coverage: every family, key size and ESP parameter has vectors -------------------------
def test_every_family_has_vectors_for_every_key_size():
    have = {(c.family, c.key_bits) for c in CASES}
    for family in FAMILY_KIND:
        sizes = (256,) if family == "chacha20-poly1305" else (128,) if family == "aes-xcbc" else \
            (128, 192, 256) if family.startswith("aes-") else ()
        for bits in sizes:
            assert (family, bits) in have, f"no vector for {family} with {bits}-bit keys"
        assert any(f == family for f, _ in have), f"no vector for {family}"


def test_aead_vectors_cover_esp_tags_nonces_and_rejections():
    aead = [c for c in CASES if isinstance(c, selftest.AeadCase)]
    gcm_tags = {c.tag_bytes for c in aead if c.family == "aes-gcm"}
    ccm = {(len(c.nonce), c.tag_bytes) for c in aead if c.family == "aes-ccm"}
    assert gcm_tags == {8, 12, 16}
    assert {t for _, t in ccm} == {8, 12, 16}
    assert {n for n, _ in ccm} == set(range(7, 14))
    assert all(len(c.nonce) == 12 for c in aead if c.family != "aes-ccm")
    for family in ("aes-gcm", "aes-ccm", "chacha20-poly1305"):
        assert any(not c.valid for c in aead if c.family == family), f"no invalid {family} case"
    assert any(c.id.startswith("wycheproof-aes_gmac-") for c in aead)
    assert any(c.id.startswith("mcgrew-gmac-") for c in aead)


def test_case_ids_are_unique_and_name_their_source():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))
    prefixes = ("wycheproof-", "rfc", "mcgrew-", "derived-")
    assert all(i.startswith(prefixes) for i in ids)
    for expected in ("rfc3602-case4", "wycheproof-aes_gcm-tc57", "mcgrew-gcm-case3",
                     "rfc4231-case2-sha256", "rfc3686-case9", "rfc7634-esp", "rfc4868-auth512-4",
                     "rfc3566-case7", "rfc4494-case4", "rfc4434-case3", "rfc4615-case1"):
        assert expected in ids


@pytest.mark.parametrize("name", FULL_BACKENDS)
def test_builtin_backend_runs_every_family(name):
    if name not in BACKENDS:
        pytest.fail(f"built-in backend {name} is not available: {REGISTRY.records.get(name)}")
    ran = {c.family for c in CASES if selftest.offers(DECLARED[name], c)}
    # pycryptodome has no finite-field Diffie-Hellman: cryptodome declares no MODP group
    missing = {"modp2048", "modp3072", "modp4096"} if name == "cryptodome" else set()
    assert ran == set(FAMILY_KIND) - missing


# -- run_all ----------------------------------------------------------------------------------
def test_run_all_on_each_backend_passes_and_filters_by_family():
    for name in BACKENDS:
        if not any(f.family == "aes-ctr" for f in DECLARED[name]):
            continue                     # gpu: a bulk AES-GCM backend
        backend = REGISTRY.records[name].backend
        results = selftest.run_all(backend, family="aes-ctr")
        assert results and all(r.family == "aes-ctr" and r.passed for r in results), name
    only_hmac = _HmacOnly()
    results = selftest.run_all(only_hmac)
    assert {r.family for r in results} == {"hmac-sha256"}
    assert all(r.passed for r in results)


def test_iter_cases_rejects_unknown_family():
    with pytest.raises(ValueError, match="no vectors for family"):
        list(selftest.iter_cases("aes-ocb"))


# -- the harness notices wrong backends -------------------------------------------------------
class _HmacOnly(Backend):
    name = "hmac-only"

    def features(self):
        return (Feature("hmac-sha256"),)

    def mac(self, family, key):
        import hashlib
        import hmac

        class _Mac:
            digest_bytes = 32

            def mac(self, data):
                return hmac.new(key, data, hashlib.sha256).digest()

        return _Mac()


class _AcceptsAnyTag(Backend):
    """Wraps aesni's AEADs but never rejects a tag: the classic AUTH_BYPASS bug."""

    name = "accepts-any-tag"

    def __init__(self, inner):
        self.inner = inner

    def features(self):
        return (Feature("aes-gcm", (128, 192, 256)),)

    def aead(self, family, key, *, tag_bytes, nonce_bytes):
        real = self.inner.aead(family, key, tag_bytes=tag_bytes, nonce_bytes=nonce_bytes)
        plain = self.inner.cipher("aes-ctr", key)

        class _Lax:
            def __init__(self):
                self.tag_bytes = tag_bytes

            def encrypt(self, nonce, plaintext, aad):
                return real.encrypt(nonce, plaintext, aad)

            def decrypt(self, nonce, data, aad):  # GCM without the tag check
                return plain.decrypt(nonce + b"\x00\x00\x00\x02", data[:-tag_bytes])

        return _Lax()


def test_harness_catches_a_backend_that_skips_tag_checks():
    aesni = REGISTRY.records["aesni"].backend if "aesni" in BACKENDS else None
    if aesni is None:
        pytest.skip("needs the aesni backend to build the broken one")
    lax = _AcceptsAnyTag(aesni)
    failures = selftest.quick_check(lax, Feature("aes-gcm", (128, 192, 256)))
    assert failures and all("bit flipped" in f for f in failures)
    results = selftest.run_all(lax)
    failed = [r for r in results if not r.passed]
    assert failed and all(r.detail == "decrypt accepted an invalid ciphertext/tag"
                          or "bit flipped" in r.detail for r in failed)
    assert any(r.id.startswith("wycheproof-aes_gcm-") and "invalid" in r.detail for r in failed)


def test_harness_catches_wrong_mac_output_and_missing_vectors():
    class _WrongLength(_HmacOnly):
        def mac(self, family, key):
            inner = super().mac(family, key)

            class _Short:
                digest_bytes = 16

                def mac(self, data):
                    return inner.mac(data)[:16]

            return _Short()

    failures = selftest.quick_check(_WrongLength(), Feature("hmac-sha256"))
    assert failures and all("the contract says 32" in f for f in failures)
    assert selftest.quick_check(_HmacOnly(), Feature("aes-xcbc", (256,))) == [
        "no known-answer vector for aes-xcbc with 256-bit keys"]


def test_tampered_tag_raises_authentication_error_on_every_backend():
    key, nonce = bytes(range(16)), bytes(12)
    for name in BACKENDS:
        backend = REGISTRY.records[name].backend
        for tag in (8, 12, 16):
            if not any(f.family == "aes-gcm" and f.accepts_tag(tag) for f in DECLARED[name]):
                continue                 # gpu: 16-byte tags only
            aead = backend.aead("aes-gcm", key, tag_bytes=tag, nonce_bytes=12)
            sealed = aead.encrypt(nonce, b"payload", b"aad")
            assert len(sealed) == 7 + tag
            with pytest.raises(AuthenticationError):
                aead.decrypt(nonce, sealed[:-1] + bytes([sealed[-1] ^ 0x80]), b"aad")

"""The crypto registry: loading the built-in plugins, probing, the self-test at registration,
selection (named, unnamed, refused with a reason), and duplicate names."""
from __future__ import annotations

import hashlib
import hmac
import importlib.util

import pytest

from ipsec_core.crypto.base import Backend, Feature
from ipsec_core.crypto.registry import BUILTIN_PLUGINS, Registry, get_registry
from ipsec_core.errors import BackendError

BUILTINS = {"reference", "aesni", "cryptodome", "gpu", "ipsecmb"}


@pytest.fixture(scope="module")
def registry() -> Registry:
    return get_registry()


@pytest.fixture
def fresh() -> Registry:
    """A registry of our own, so tests that add backends leave the process-wide one alone."""
    return Registry(load_entry_points=False)


class _Sha256Mac:
    digest_bytes = 32

    def __init__(self, key: bytes):
        self._key = key

    def mac(self, data: bytes) -> bytes:
        return hmac.new(self._key, data, hashlib.sha256).digest()


class HmacOnlyBackend(Backend):
    """A correct backend with one primitive, at a priority above every built-in."""

    name = "hmac-only"
    priority = 1000

    def features(self):
        return (Feature("hmac-sha256"),)

    def mac(self, family, key):
        if family != "hmac-sha256":
            return super().mac(family, key)
        return _Sha256Mac(key)


class BrokenGcmBackend(HmacOnlyBackend):
    """Declares AES-GCM but computes it wrong (one output bit flipped); its HMAC is right."""

    name = "broken-gcm"

    def features(self):
        return (Feature("aes-gcm", (128, 192, 256)), Feature("hmac-sha256"))

    def aead(self, family, key, *, tag_bytes, nonce_bytes):
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        inner = AESGCM(key)

        class _Wrong:
            def __init__(self):
                self.tag_bytes = tag_bytes

            def encrypt(self, nonce, plaintext, aad):
                out = inner.encrypt(nonce, plaintext, aad)[: len(plaintext) + tag_bytes]
                return bytes([out[0] ^ 0x01]) + out[1:]

            def decrypt(self, nonce, data, aad):
                return inner.decrypt(nonce, data, aad)

        return _Wrong()


# -- loading ----------------------------------------------------------------------------------
def test_loads_the_builtins(registry):
    assert BUILTINS <= set(registry.records)
    for name in BUILTINS:
        assert registry.records[name].plugin == f"ipsec_plugins.{name}"
    builtin_problems = [p for p in registry.problems if p.plugin in BUILTIN_PLUGINS]
    assert builtin_problems == []


@pytest.mark.parametrize("name", ["reference", "aesni", "cryptodome"])
def test_software_builtins_are_available_and_pass_their_self_tests(registry, name):
    record = registry.records[name]
    assert record.available, record.reason
    assert record.failed == {}
    assert record.features == list(record.backend.features())


def test_gpu_is_unavailable_with_a_reason(registry):
    record = registry.records["gpu"]
    if importlib.util.find_spec("cupy") is None:
        assert not record.available and "CuPy is not importable" in record.reason
    if record.available:    # CuPy and a CUDA device: its kernels passed their self-test
        assert [str(f) for f in record.features] == ["aes-gcm(128/256)[tag 16]"], record.failed
        return
    assert record.reason
    assert record.features == []


def test_priorities_are_the_documented_ones(registry):
    order = [(r.name, r.backend.priority) for r in registry.available() if r.name in BUILTINS]
    gpu = [("gpu", 100)] if registry.records["gpu"].available else []
    ipsecmb = [("ipsecmb", 400)] if registry.records["ipsecmb"].available else []
    assert order == [*ipsecmb, ("aesni", 300), ("cryptodome", 200), *gpu, ("reference", 10)]


# -- selection --------------------------------------------------------------------------------
def test_select_named_missing_backend_says_it_is_not_installed(registry):
    with pytest.raises(BackendError, match=r"backend 'nosuch' is not installed \(installed: .*aesni"):
        registry.select("aes-gcm", 128, backend="nosuch")


def test_select_named_unavailable_backend_gives_the_probe_reason(registry):
    if registry.records["gpu"].available:
        pytest.skip("the gpu backend is available on this machine")
    reason = registry.records["gpu"].reason
    with pytest.raises(BackendError, match="backend 'gpu' is unavailable") as err:
        registry.select("aes-gcm", 128, backend="gpu")
    assert reason in str(err.value)


def test_select_named_backend_lacking_the_primitive(registry, fresh):
    with pytest.raises(BackendError,
                       match="backend 'aesni' does not offer chacha20-poly1305 with 128-bit keys"):
        registry.select("chacha20-poly1305", 128, backend="aesni")
    fresh.add(HmacOnlyBackend())
    with pytest.raises(BackendError, match="backend 'hmac-only' does not offer aes-cbc with 256-bit"):
        fresh.select("aes-cbc", 256, backend="hmac-only")


def test_select_named_backend_that_offers_it(registry):
    assert registry.select("aes-ccm", 192, backend="cryptodome") is registry.records["cryptodome"].backend
    assert registry.select("hmac-sha1", None, backend="reference") is registry.records["reference"].backend


def test_select_without_a_name_picks_the_highest_priority(registry, fresh, preferred):
    ipsecmb = registry.records["ipsecmb"]
    for family, bits in (("aes-gcm", 128), ("aes-ctr", 256), ("hmac-sha512", None),
                         ("chacha20-poly1305", 256), ("aes-xcbc", 128), ("aes-cmac", 128),
                         ("aes-cmac", 192), ("aes-ccm", 128)):
        chosen = registry.select(family, bits)
        assert chosen is registry.records[preferred(registry, family, bits)].backend
        # ipsecmb (400) where it is available and offers the primitive, else aesni (300): it
        # has no AES-CCM and no 192-bit CMAC, so those stay with aesni either way
        top = "ipsecmb" if ipsecmb.available and ipsecmb.offers(family, bits) else "aesni"
        assert chosen.name == top, (family, bits)
    fresh.add(HmacOnlyBackend())
    assert fresh.select("hmac-sha256", None).name == "hmac-only"
    assert fresh.select("aes-gcm", 256).name == preferred(fresh, "aes-gcm", 256) != "hmac-only"


def test_select_without_a_name_and_no_backend_offering_it(fresh):
    with pytest.raises(BackendError, match="no available backend offers aes-cbc with 512-bit keys"):
        fresh.select("aes-cbc", 512)


# -- the self-test at registration ------------------------------------------------------------
def test_feature_that_fails_its_self_test_is_refused_with_the_reason(fresh, preferred):
    record = fresh.add(BrokenGcmBackend(), plugin="tests")
    assert record.available
    assert record.features == [Feature("hmac-sha256")]
    assert list(record.failed) == ["aes-gcm(128/192/256)"]
    why = record.failed["aes-gcm(128/192/256)"]
    assert why.startswith("128-bit key: wycheproof-aes_gcm-tc")
    assert "encrypt differs from the vector at byte 0" in why and "192-bit key" in why
    assert not record.offers("aes-gcm", 128)

    with pytest.raises(BackendError, match="does not offer aes-gcm with 128-bit keys: its self-test "
                                           "failed") as err:
        fresh.select("aes-gcm", 128, backend="broken-gcm")
    assert "encrypt differs from the vector" in str(err.value)
    # never a silent pick of the broken feature, even at a higher priority than every built-in
    assert fresh.select("aes-gcm", 128).name == preferred(fresh, "aes-gcm", 128) != "broken-gcm"
    assert fresh.select("hmac-sha256", None).name == "broken-gcm"


def test_feature_whose_self_test_raises_is_refused(fresh):
    class Raises(HmacOnlyBackend):
        name = "raises"

        def mac(self, family, key):
            raise RuntimeError("no MAC today")

    record = fresh.add(Raises())
    assert record.features == []
    assert "RuntimeError: no MAC today" in record.failed["hmac-sha256"]


def test_probe_failure_makes_the_backend_unavailable(fresh):
    class Absent(HmacOnlyBackend):
        name = "absent"

        def probe(self):
            return "libfoo is not installed"

    class Crashes(HmacOnlyBackend):
        name = "crashes"

        def probe(self):
            raise OSError("device on fire")

    assert fresh.add(Absent()).reason == "libfoo is not installed"
    record = fresh.add(Crashes())
    assert not record.available and "device on fire" in record.reason
    with pytest.raises(BackendError, match="'absent' is unavailable: libfoo is not installed"):
        fresh.select("hmac-sha256", None, backend="absent")


# -- duplicates -------------------------------------------------------------------------------
def test_duplicate_backend_name_is_reported(fresh):
    original = fresh.records["aesni"]

    class Impostor(HmacOnlyBackend):
        name = "aesni"

    returned = fresh.add(Impostor(), plugin="someone.elses.plugin")
    assert returned is original
    assert fresh.records["aesni"] is original
    problems = [p for p in fresh.problems if p.plugin == "someone.elses.plugin"]
    assert len(problems) == 1
    assert problems[0].reason == "backend name 'aesni' is already registered by ipsec_plugins.aesni"


def test_registering_something_that_is_not_a_backend_is_an_error(fresh):
    with pytest.raises(BackendError, match="not a named Backend"):
        fresh.add(object(), plugin="bad.plugin")

"""The conformance kit (ipsec_core.testing): the built-in backends pass it, it catches backends
that break the contract in each way it checks, and it works as a pytest plugin (marker
`ipsec_backend`, parameter `ipsec_check`)."""
from __future__ import annotations

import pytest

from ipsec_core.crypto.base import Backend, Feature
from ipsec_core.errors import AuthenticationError
from ipsec_core.testing import (ConformanceError, check_backend, check_bad_input,
                                check_differential, check_esp, check_registered, check_vectors,
                                conformance_checks, conformance_params, esp_proposals,
                                plugin_registry)

pytest_plugins = ["pytester"]


# The reference backend is the oracle of the differential check and slow in pure Python: the
# kit's vector and ESP checks on it run in test_vectors.py / test_esp.py already.
@pytest.mark.parametrize("check", conformance_params("aesni") + conformance_params("cryptodome"))
def test_builtin_backends_pass_the_kit(check):
    check()


def test_the_checks_cover_every_family_and_proposal_kind():
    ids = [c.id for c in conformance_checks("aesni")]
    assert ids[0] == "aesni:registered"
    for family in ("aes-gcm", "aes-ccm", "chacha20-poly1305", "aes-cbc", "aes-ctr", "hmac-sha1",
                   "aes-xcbc", "aes-cmac"):
        assert f"aesni:vectors[{family}]" in ids and f"aesni:differential[{family}]" in ids
    assert {"aesni:bad-input[aes-gcm]", "aesni:bad-input[aes-ccm]",
            "aesni:bad-input[chacha20-poly1305]"} <= set(ids)
    assert "aesni:bad-input[aes-cbc]" not in ids
    for proposal in ("aes128gcm8", "aes256ccm16", "chacha20poly1305", "aes192gmac",
                     "aes128-sha256", "aes256ctr-sha256", "null-sha512", "null-aesxcbc"):
        assert f"aesni:esp[{proposal}]" in ids and f"aesni:batch[{proposal}]" in ids


# -- backends that break the contract ---------------------------------------------------------
class _Sloppy(Backend):
    """AES-GCM from aesni, but `decrypt` raises ValueError for inputs shorter than the tag (a
    library's own exception leaking out) instead of AuthenticationError."""

    name = "sloppy"
    priority = 1

    def __init__(self, inner):
        self.inner = inner

    def features(self):
        return (Feature("aes-gcm", (128,)),)

    def aead(self, family, key, *, tag_bytes, nonce_bytes):
        real = self.inner.aead(family, key, tag_bytes=tag_bytes, nonce_bytes=nonce_bytes)

        class _Aead:
            def __init__(self):
                self.tag_bytes = tag_bytes
                self.encrypt = real.encrypt

            def decrypt(self, nonce, data, aad):
                if len(data) < tag_bytes:
                    raise ValueError("ciphertext too short")
                return real.decrypt(nonce, data, aad)

        return _Aead()


class _OffByOne(Backend):
    """AES-CTR whose counter starts one block late: every vector fails."""

    name = "off-by-one"
    priority = 1

    def __init__(self, inner):
        self.inner = inner

    def features(self):
        return (Feature("aes-ctr", (128, 256)),)

    def cipher(self, family, key):
        real = self.inner.cipher(family, key)

        class _Ctr:
            def encrypt(self, iv, data):
                return real.encrypt((int.from_bytes(iv, "big") + 1).to_bytes(16, "big"), data)

            decrypt = encrypt

        return _Ctr()


class _NoAuth(Backend):
    """AES-GCM that never checks the tag, and whose ESP packets therefore accept forgeries."""

    name = "no-auth"
    priority = 1

    def __init__(self, inner):
        self.inner = inner

    def features(self):
        return (Feature("aes-gcm", (128,)),)

    def aead(self, family, key, *, tag_bytes, nonce_bytes):
        real = self.inner.aead(family, key, tag_bytes=tag_bytes, nonce_bytes=nonce_bytes)
        ctr = self.inner.cipher("aes-ctr", key)

        class _Aead:
            def __init__(self):
                self.tag_bytes = tag_bytes
                self.encrypt = real.encrypt

            def decrypt(self, nonce, data, aad):
                if len(data) < tag_bytes:
                    raise AuthenticationError("short")
                return ctr.decrypt(nonce + b"\0\0\0\2", data[:-tag_bytes])

        return _Aead()


@pytest.fixture(scope="module")
def broken():
    registry = plugin_registry()
    aesni = registry.get("aesni").backend
    for backend in (_Sloppy(aesni), _OffByOne(aesni), _NoAuth(aesni)):
        registry.add(backend, plugin="tests")
    return registry


def test_kit_catches_a_library_exception_leaking_out(broken):
    with pytest.raises(ConformanceError, match="shorter than the tag raised ValueError instead of "
                                               "AuthenticationError"):
        check_bad_input(broken, "sloppy", "aes-gcm")
    check_vectors(broken, "sloppy", "aes-gcm")         # the vectors alone do not see it
    check_differential(broken, "sloppy", "aes-gcm")


def test_kit_catches_wrong_output(broken):
    with pytest.raises(ConformanceError, match=r"backend 'off-by-one': aes-ctr\(128/256\) not "
                                               r"offered: 128-bit key: rfc3686-case"):
        check_registered(broken, "off-by-one")
    with pytest.raises(ConformanceError, match="off-by-one on aes-ctr vectors"):
        check_vectors(broken, "off-by-one", "aes-ctr")


def test_kit_catches_a_backend_that_skips_the_tag_check(broken):
    with pytest.raises(ConformanceError, match="forged tag was accepted"):
        check_bad_input(broken, "no-auth", "aes-gcm")
    # offered or not, an SA bound to it must drop forgeries: the ESP check says it does not
    broken.records["no-auth"].features = [Feature("aes-gcm", (128,))]
    broken.records["no-auth"].failed = {}
    with pytest.raises(ConformanceError, match="forged ICV packet was accepted"):
        check_esp(broken, "no-auth", "aes128gcm16")


def test_check_backend_lists_every_failure_and_unknown_backends(broken):
    with pytest.raises(ConformanceError) as err:
        check_backend("off-by-one", registry=broken, proposals=[])
    assert "off-by-one:registered" in str(err.value) and "off-by-one:vectors[aes-ctr]" in str(err.value)
    with pytest.raises(ConformanceError, match="backend 'nosuch' is not registered"):
        check_backend("nosuch")
    assert esp_proposals(broken, "off-by-one") == []


# -- as a pytest plugin -----------------------------------------------------------------------
def test_pytest_plugin_parametrizes_ipsec_check(pytester):
    pytester.makeconftest('pytest_plugins = ["ipsec_core.testing"]\n')
    pytester.makepyfile(test_mine='''
        import pytest

        @pytest.mark.ipsec_backend("aesni", proposals=["aes128gcm16", "aes256-sha256"])
        def test_conformance(ipsec_check):
            ipsec_check()
    ''', test_nomarker='''
        def test_no_marker(ipsec_check):
            pass
    ''')
    result = pytester.runpytest("-q", "-p", "no:cacheprovider", "--continue-on-collection-errors")
    result.assert_outcomes(passed=len(conformance_checks("aesni", proposals=[])) + 4, errors=1)
    result.stdout.fnmatch_lines(["*needs @pytest.mark.ipsec_backend*"])


def test_pytest_plugin_reports_a_failing_check(pytester):
    pytester.makeconftest('pytest_plugins = ["ipsec_core.testing"]\n')
    pytester.makepyfile(test_mine='''
        import pytest

        @pytest.mark.ipsec_backend("gpu", proposals=[])
        def test_conformance(ipsec_check):
            ipsec_check()
    ''')
    result = pytester.runpytest("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*gpu:registered*", "*backend 'gpu' is unavailable*"])

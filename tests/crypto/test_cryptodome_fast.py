"""The fast paths of the `cryptodome` backend (`ipsec_plugins.cryptodome._fast`) against
`cryptography` on random inputs, their fallbacks, and the guard on pycryptodome's private GHASH."""
from __future__ import annotations

import logging
import random
import subprocess
import sys
import textwrap
import threading
import types

import pytest

pytest.importorskip("Crypto")

from cryptography.hazmat.primitives import cmac, hashes, hmac  # noqa: E402
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes  # noqa: E402
from cryptography.hazmat.primitives.ciphers.aead import AESCCM, AESGCM, ChaCha20Poly1305  # noqa: E402

from ipsec_core.errors import AuthenticationError  # noqa: E402
from ipsec_plugins.cryptodome import CryptodomeBackend, _fast  # noqa: E402

LENGTHS = (0, 1, 15, 16, 17, 1400, 9000)
AADS = (8, 12)
KEYS = (16, 24, 32)
TAGS = (8, 12, 16)

FAST = CryptodomeBackend()
PUBLIC = CryptodomeBackend(fast=False)


def rnd(seed):
    r = random.Random(seed)
    return lambda n: r.randbytes(n)


def ghash_or_skip():
    ghash, reason = _fast.ghash_support()
    if ghash is None:
        pytest.skip(f"pycryptodome's GHASH is not usable here: {reason}")
    return ghash


def flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes((data[at] ^ 0x01,)) + data[at + 1:]


def assert_forgeries_fail(aead, nonce, sealed, aad):
    for at in {0, len(sealed) // 2, len(sealed) - 1}:
        with pytest.raises(AuthenticationError):
            aead.decrypt(nonce, flip(sealed, at), aad)
    with pytest.raises(AuthenticationError):
        aead.decrypt(nonce, sealed, flip(aad, 0))
    with pytest.raises(AuthenticationError):
        aead.decrypt(nonce, sealed[:aead.tag_bytes - 1], aad)


# -- AES-GCM --------------------------------------------------------------------------------------
def test_gcm_uses_the_fast_path_when_ghash_is_usable():
    ghash_or_skip()
    assert isinstance(FAST.aead("aes-gcm", bytes(16), tag_bytes=16, nonce_bytes=12), _fast.FastGcm)
    assert not isinstance(PUBLIC.aead("aes-gcm", bytes(16), tag_bytes=16, nonce_bytes=12), _fast.FastGcm)


@pytest.mark.parametrize("key_bytes", KEYS)
@pytest.mark.parametrize("tag", TAGS)
def test_gcm_matches_cryptography(key_bytes, tag):
    ghash_or_skip()
    r = rnd(f"gcm{key_bytes}{tag}")
    key = r(key_bytes)
    ref = AESGCM(key)
    aead = FAST.aead("aes-gcm", key, tag_bytes=tag, nonce_bytes=12)
    for n in LENGTHS:
        for la in AADS + (0, 20, 33):
            nonce, pt, aad = r(12), r(n), r(la)
            full = ref.encrypt(nonce, pt, aad)
            sealed = aead.encrypt(nonce, pt, aad)
            assert sealed == full[:n + tag], (n, la)
            assert aead.decrypt(nonce, sealed, aad) == pt
            if la:
                assert_forgeries_fail(aead, nonce, sealed, aad)


def test_gcm_takes_bytes_like_inputs():
    ghash_or_skip()
    r = rnd("gcm-buffers")
    key, nonce, pt, aad = r(16), r(12), r(100), r(8)
    aead = FAST.aead("aes-gcm", key, tag_bytes=16, nonce_bytes=12)
    want = AESGCM(key).encrypt(nonce, pt, aad)
    assert aead.encrypt(bytearray(nonce), memoryview(pt), bytearray(aad)) == want
    assert aead.decrypt(memoryview(nonce), bytearray(want), memoryview(aad)) == pt


def test_gcm_outside_the_fast_path_uses_the_public_one():
    """Other nonce sizes and messages over MAX_FAST_BYTES go to AES.new(MODE_GCM)."""
    r = rnd("gcm-public")
    key = r(16)
    ref = AESGCM(key)
    aead = FAST.aead("aes-gcm", key, tag_bytes=16, nonce_bytes=12)
    nonce, pt, aad = r(12), r(_fast.MAX_FAST_BYTES + 17), r(8)
    sealed = aead.encrypt(nonce, pt, aad)
    assert sealed == ref.encrypt(nonce, pt, aad)
    assert aead.decrypt(nonce, sealed, aad) == pt
    with pytest.raises(AuthenticationError):
        aead.decrypt(nonce, flip(sealed, 5), aad)
    odd = r(16)
    assert aead.encrypt(odd, b"abc", aad) == ref.encrypt(odd, b"abc", aad)


def test_gcm_truncated_tag_is_the_leading_bytes():
    ghash_or_skip()
    r = rnd("gcm-trunc")
    key, nonce, pt, aad = r(32), r(12), r(64), r(8)
    full = FAST.aead("aes-gcm", key, tag_bytes=16, nonce_bytes=12).encrypt(nonce, pt, aad)
    for tag in (8, 12):
        aead = FAST.aead("aes-gcm", key, tag_bytes=tag, nonce_bytes=12)
        assert aead.encrypt(nonce, pt, aad) == full[:64 + tag]
        with pytest.raises(AuthenticationError):     # the full tag is not a valid short one
            aead.decrypt(nonce, full, aad)


# -- the guard on the private GHASH --------------------------------------------------------------
@pytest.fixture
def fresh_ghash_state(monkeypatch):
    monkeypatch.setattr(_fast, "_ghash_state", None)
    yield
    _fast._ghash_state = None          # re-checked on the next use, with the real module


def test_missing_private_ghash_falls_back_with_a_logged_reason(monkeypatch, fresh_ghash_state, caplog):
    """A pycryptodome whose _mode_gcm has no _ghash_clmul/_ghash_portable (its public GCM kept)."""
    import Crypto.Cipher
    from Crypto.Cipher import _mode_gcm

    stub = types.ModuleType(_mode_gcm.__name__)
    stub._create_gcm_cipher = _mode_gcm._create_gcm_cipher
    monkeypatch.setitem(sys.modules, _mode_gcm.__name__, stub)
    monkeypatch.setattr(Crypto.Cipher, "_mode_gcm", stub)
    with caplog.at_level(logging.WARNING, logger=_fast.__name__):
        ghash, reason = _fast.ghash_support()
        assert CryptodomeBackend().probe() is None          # the backend stays usable
    assert ghash is None and "_ghash_clmul" in reason
    assert any("public per-message path" in rec.getMessage() for rec in caplog.records)
    r = rnd("gcm-fallback")
    key, nonce, pt, aad = r(16), r(12), r(40), r(8)
    aead = CryptodomeBackend().aead("aes-gcm", key, tag_bytes=12, nonce_bytes=12)
    assert not isinstance(aead, _fast.FastGcm)
    assert aead.encrypt(nonce, pt, aad) == AESGCM(key).encrypt(nonce, pt, aad)[:52]


def test_a_ghash_that_disagrees_is_not_used(monkeypatch, fresh_ghash_state):
    real, _ = _fast._find_ghash()
    if real is None:
        pytest.skip("no private GHASH to break")

    class Broken(real):
        __slots__ = ()

        def digest(self, data):
            return bytes(16)

    monkeypatch.setattr(_fast, "_find_ghash", lambda: (Broken, None))
    ghash, reason = _fast.ghash_support()
    assert ghash is None and "disagrees" in reason


def test_ghash_check_survives_an_unexpected_error(monkeypatch, fresh_ghash_state):
    def boom():
        raise RuntimeError("changed internals")

    monkeypatch.setattr(_fast, "_find_ghash", boom)
    assert _fast.ghash_support() == (None, "RuntimeError: changed internals")


def test_fast_gcm_under_the_ctypes_backend_of_pycryptodome():
    """With -OO pycryptodome loads its C code through ctypes instead of cffi; the GHASH calls go
    through its own _raw_api helpers, so they work there too."""
    code = textwrap.dedent("""
        import os, sys
        from Crypto.Util import _raw_api
        if _raw_api.backend != "ctypes":
            print("SKIP", _raw_api.backend); sys.exit(0)
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        from ipsec_plugins.cryptodome import CryptodomeBackend, _fast
        ghash, reason = _fast.ghash_support()
        if ghash is None:
            print("SKIP", reason); sys.exit(0)
        key = os.urandom(16)
        aead = CryptodomeBackend().aead("aes-gcm", key, tag_bytes=16, nonce_bytes=12)
        if not isinstance(aead, _fast.FastGcm):
            sys.exit("fast path not used")
        for n in (0, 1, 17, 1400):
            nonce, pt, aad = os.urandom(12), os.urandom(n), os.urandom(8)
            if aead.encrypt(nonce, pt, aad) != AESGCM(key).encrypt(nonce, pt, aad):
                sys.exit(f"mismatch at {n}")
        print("OK")
    """)
    out = subprocess.run([sys.executable, "-OO", "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    if out.stdout.startswith("SKIP"):
        pytest.skip(out.stdout.strip())
    assert out.stdout.strip() == "OK"


# -- AES-CCM, ChaCha20-Poly1305 -------------------------------------------------------------------
@pytest.mark.parametrize("key_bytes", KEYS)
@pytest.mark.parametrize("tag", TAGS)
def test_ccm_matches_cryptography(key_bytes, tag):
    r = rnd(f"ccm{key_bytes}{tag}")
    key = r(key_bytes)
    ref = AESCCM(key, tag_length=tag)
    for nonce_bytes in (11, 7, 13):
        aead = FAST.aead("aes-ccm", key, tag_bytes=tag, nonce_bytes=nonce_bytes)
        assert isinstance(aead, _fast.FastCcm)
        lengths = LENGTHS if nonce_bytes == 11 else (0, 17, 1400)
        for n in lengths:
            for la in AADS + (0,):
                nonce, pt, aad = r(nonce_bytes), r(n), r(la)
                sealed = aead.encrypt(nonce, pt, aad)
                assert sealed == ref.encrypt(nonce, pt, aad), (nonce_bytes, n, la)
                assert aead.decrypt(nonce, sealed, aad) == pt
                if la:
                    assert_forgeries_fail(aead, nonce, sealed, aad)


def test_ccm_long_aad_encodings():
    r = rnd("ccm-aad")
    key = r(16)
    aead = FAST.aead("aes-ccm", key, tag_bytes=16, nonce_bytes=11)
    for la in (0xFEFF, 0xFF00, 0x10005):
        nonce, pt, aad = r(11), r(33), r(la)
        sealed = aead.encrypt(nonce, pt, aad)
        assert sealed == AESCCM(key).encrypt(nonce, pt, aad)
        assert aead.decrypt(nonce, sealed, aad) == pt


def test_chacha20_poly1305_matches_cryptography():
    r = rnd("chacha")
    key = r(32)
    ref = ChaCha20Poly1305(key)
    aead = FAST.aead("chacha20-poly1305", key, tag_bytes=16, nonce_bytes=12)
    assert isinstance(aead, _fast.FastChaCha)
    for n in LENGTHS:
        for la in AADS + (0,):
            nonce, pt, aad = r(12), r(n), r(la)
            sealed = aead.encrypt(nonce, pt, aad)
            assert sealed == ref.encrypt(nonce, pt, aad)
            assert aead.decrypt(nonce, sealed, aad) == pt
            if la:
                assert_forgeries_fail(aead, nonce, sealed, aad)


# -- AES-CBC, AES-CTR ----------------------------------------------------------------------------
def _cbc(key, iv, data, decrypt=False):
    c = Cipher(algorithms.AES(key), modes.CBC(iv))
    ctx = c.decryptor() if decrypt else c.encryptor()
    return ctx.update(data) + ctx.finalize()


@pytest.mark.parametrize("key_bytes", KEYS)
def test_cbc_matches_cryptography_message_after_message(key_bytes):
    """The chained CBC object carries state from one message to the next: interleave sizes."""
    r = rnd(f"cbc{key_bytes}")
    key = r(key_bytes)
    cipher = FAST.cipher("aes-cbc", key)
    assert isinstance(cipher, _fast.FastCbc)
    for _ in range(3):
        for n in (0, 16, 32, 1408, 9008, 16):
            iv, data = r(16), r(n)
            ct = cipher.encrypt(iv, data)
            assert ct == _cbc(key, iv, data)
            assert cipher.decrypt(iv, ct) == data == _cbc(key, iv, ct, decrypt=True)
    with pytest.raises(ValueError):
        cipher.encrypt(r(16), r(17))                       # not a multiple of the block
    with pytest.raises(ValueError):
        cipher.decrypt(r(16), r(15))
    iv, data = r(16), r(48)                                # still in step after the errors
    assert cipher.encrypt(iv, data) == _cbc(key, iv, data)


def test_cbc_chain_recovers_from_a_failing_call():
    from Crypto.Cipher import AES

    r = rnd("cbc-reset")
    key = r(16)
    chain = _fast.CbcChain(AES, key)
    chain.encrypt(0, r(64))

    def fail(data):
        raise ValueError("simulated")

    chain._enc = fail
    with pytest.raises(ValueError):
        chain.encrypt(0, r(32))
    iv, data = r(16), r(80)
    assert chain.encrypt(int.from_bytes(iv, "big"), data) == _cbc(key, iv, data)


def test_cbc_from_many_threads():
    r = rnd("cbc-threads")
    key = r(16)
    cipher = FAST.cipher("aes-cbc", key)
    jobs = [(r(16), r(16 * (1 + i % 7))) for i in range(400)]
    want = [_cbc(key, iv, data) for iv, data in jobs]
    got = [None] * len(jobs)

    def work(start):
        for i in range(start, len(jobs), 4):
            got[i] = cipher.encrypt(*jobs[i])

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == want


@pytest.mark.parametrize("key_bytes", KEYS)
def test_ctr_matches_cryptography(key_bytes):
    r = rnd(f"ctr{key_bytes}")
    key = r(key_bytes)
    cipher = FAST.cipher("aes-ctr", key)
    assert isinstance(cipher, _fast.FastCtr)
    for n in LENGTHS:
        for iv in (r(12) + b"\x00\x00\x00\x01",               # RFC 3686: the fast path
                   r(16),                                      # anything else: the public one
                   r(8) + b"\x00\x00\x00\x00\xff\xff\xff\xfe"):  # a carry out of the low 32 bits
            data = r(n)
            ctx = Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor()
            want = ctx.update(data) + ctx.finalize()
            assert cipher.encrypt(iv, data) == want, (n, iv.hex())
            assert cipher.decrypt(iv, want) == data


# -- MACs ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("family, algorithm", [
    ("hmac-sha1", hashes.SHA1), ("hmac-sha256", hashes.SHA256),
    ("hmac-sha384", hashes.SHA384), ("hmac-sha512", hashes.SHA512)])
def test_hmac_matches_cryptography(family, algorithm):
    r = rnd(family)
    for key_bytes in (0, 1, 20, 32, 64, 65, 128, 129, 200):
        key = r(key_bytes)
        mac = FAST.mac(family, key)
        assert isinstance(mac, _fast.CopiedHmac)
        assert mac.digest_bytes == algorithm.digest_size
        for n in LENGTHS:
            data = r(n)
            h = hmac.HMAC(key, algorithm())
            h.update(data)
            assert mac.mac(data) == h.finalize(), (key_bytes, n)


@pytest.mark.parametrize("key_bytes", KEYS)
def test_cmac_matches_cryptography(key_bytes):
    r = rnd(f"cmac{key_bytes}")
    key = r(key_bytes)
    mac = FAST.mac("aes-cmac", key)
    assert isinstance(mac, _fast.ChainedCmac)
    for n in LENGTHS + (32, 48, 31):
        data = r(n)
        c = cmac.CMAC(algorithms.AES(key))
        c.update(data)
        assert mac.mac(data) == c.finalize(), n


def test_xcbc_matches_the_public_path():
    r = rnd("xcbc")
    for _ in range(3):
        key = r(16)
        fast, public = FAST.mac("aes-xcbc", key), PUBLIC.mac("aes-xcbc", key)
        assert isinstance(fast, _fast.ChainedXcbc) and not isinstance(public, _fast.ChainedXcbc)
        for n in LENGTHS + (32, 48, 31):
            data = r(n)
            assert fast.mac(data) == public.mac(data), n
    with pytest.raises(ValueError):
        FAST.mac("aes-xcbc", bytes(24))


def test_xcbc_rfc3566_vector():
    key = bytes(range(16))
    mac = FAST.mac("aes-xcbc", key)
    assert mac.mac(b"").hex() == "75f0251d528ac01c4573dfd584d79f29"
    assert mac.mac(bytes(range(3))).hex() == "5b376580ae2f19afe7219ceef172756f"
    assert mac.mac(bytes(range(16))).hex() == "d2a246fa349b68a79998a4394ff7a263"
    assert mac.mac(bytes(range(20))).hex() == "47f51b4564966215b8985c63055ed308"


# -- the two paths agree, through the backend ---------------------------------------------------
@pytest.mark.parametrize("family, key_bytes, tag", [("aes-gcm", 16, 16), ("aes-gcm", 32, 8),
                                                    ("aes-ccm", 24, 12), ("chacha20-poly1305", 32, 16)])
def test_fast_and_public_backends_agree(family, key_bytes, tag):
    r = rnd(f"agree-{family}-{tag}")
    key = r(key_bytes)
    nonce_bytes = 11 if family == "aes-ccm" else 12
    fast = FAST.aead(family, key, tag_bytes=tag, nonce_bytes=nonce_bytes)
    public = PUBLIC.aead(family, key, tag_bytes=tag, nonce_bytes=nonce_bytes)
    for n in LENGTHS:
        nonce, pt, aad = r(nonce_bytes), r(n), r(8)
        sealed = fast.encrypt(nonce, pt, aad)
        assert sealed == public.encrypt(nonce, pt, aad)
        assert public.decrypt(nonce, sealed, aad) == pt == fast.decrypt(nonce, sealed, aad)

"""Tests of the pure-Python `reference` backend (plugins/reference), primitive by primitive.

Three kinds of check:
  * known-answer vectors: FIPS 197 appendix C (inline), and the RFC / Wycheproof JSON files of
    /work/shared/vectors (skipped, with the reason, when that folder is absent);
  * cross-checks against the `cryptography` package (OpenSSL) on random inputs;
  * the contract of ipsec_core.crypto.base: sizes rejected with ValueError, bad tags with
    AuthenticationError, objects bound to a key and reusable, registration through the hook.

The full vector suite over every backend lives elsewhere (tests/crypto/test_vectors.py).
"""
from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path

import pytest

from ipsec_core.crypto.base import Aead, Cipher, FeatureKind, Mac
from ipsec_core.crypto.signature import SIGNATURE_FAMILIES
from ipsec_core.errors import AuthenticationError
from ipsec_plugins.reference import (
    AES, AesCbc, AesCcm, AesCmac, AesCtr, AesGcm, AesXcbc, ChaCha20Poly1305, Hmac, ReferenceBackend,
)
from ipsec_plugins.reference.ccm import encode_aad_length
from ipsec_plugins.reference.gcm import Ghash, gf128_mul

# The project's own copy of the vectors (package data), so the tests run on any checkout.
VECTORS = Path(__file__).resolve().parents[2] / "ipsec_core" / "vectors"

B = ReferenceBackend()
RNG = random.Random(20240611)  # fixed seed: reproducible random cross-checks


def rbytes(n: int) -> bytes:
    return RNG.randbytes(n)


def load(rel: str) -> dict:
    path = VECTORS / rel
    if not path.is_file():
        pytest.fail(f"test vectors not found: {path} (they ship in ipsec_core/vectors/)")
    with path.open() as fh:
        return json.load(fh)


def rfc_cases(rel: str) -> list[dict]:
    return load(rel)["cases"]


def wycheproof(rel: str, **group_filter):
    """(group, test) pairs of a Wycheproof file whose group fields equal `group_filter`."""
    data = load(rel)
    for group in data["testGroups"]:
        if all(group.get(k) == v for k, v in group_filter.items()):
            for test in group["tests"]:
                yield group, test


h = bytes.fromhex


# ---------------------------------------------------------------------------------------------
# AES block cipher
# ---------------------------------------------------------------------------------------------

FIPS197_C = [  # FIPS 197 appendix C.1-C.3: plaintext 00112233445566778899aabbccddeeff
    ("000102030405060708090a0b0c0d0e0f", "69c4e0d86a7b0430d8cdb78070b4c55a"),
    ("000102030405060708090a0b0c0d0e0f1011121314151617", "dda97ca4864cdfe06eaf70a0ec0d7191"),
    ("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f", "8ea2b7ca516745bfeafc49904b496089"),
]


@pytest.mark.parametrize("key,ct", FIPS197_C)
def test_aes_fips197_appendix_c(key, ct):
    aes = AES(h(key))
    pt = h("00112233445566778899aabbccddeeff")
    assert aes.encrypt_block(pt).hex() == ct
    assert aes.decrypt_block(h(ct)) == pt


def test_aes_sbox_and_key_expansion_fips197_appendix_a():
    from ipsec_plugins.reference.aes import INV_SBOX, SBOX

    assert (SBOX[0x00], SBOX[0x01], SBOX[0x53], SBOX[0xFF]) == (0x63, 0x7C, 0xED, 0x16)
    assert all(INV_SBOX[SBOX[a]] == a for a in range(256))
    # FIPS 197 A.1: last expanded word w[43] of key 2b7e1516 28aed2a6 abf71588 09cf4f3c
    aes = AES(h("2b7e151628aed2a6abf7158809cf4f3c"))
    assert aes._ek[43] == 0xB6630CA6 and len(aes._ek) == 44
    assert len(AES(bytes(24))._ek) == 52 and len(AES(bytes(32))._ek) == 60


def test_aes_block_matches_cryptography():
    from cryptography.hazmat.primitives.ciphers import Cipher as CCipher, algorithms, modes

    for klen in (16, 24, 32):
        key = rbytes(klen)
        aes = AES(key)
        ecb = CCipher(algorithms.AES(key), modes.ECB()).encryptor()
        for _ in range(20):
            block = rbytes(16)
            assert aes.encrypt_block(block) == ecb.update(block)
            assert aes.decrypt_block(aes.encrypt_block(block)) == block


@pytest.mark.parametrize("bad", [0, 8, 15, 17, 20, 33, 64])
def test_aes_rejects_bad_key_sizes(bad):
    with pytest.raises(ValueError, match="key"):
        AES(bytes(bad))


# ---------------------------------------------------------------------------------------------
# aes-cbc, aes-ctr
# ---------------------------------------------------------------------------------------------


def test_cbc_rfc3602():
    cases = rfc_cases("rfc/rfc3602_aes_cbc_esp.json")
    checked = 0
    for case in cases:
        cbc = B.cipher("aes-cbc", h(case["key"]))
        if case.get("type") == "aes-cbc":          # cases 1-4: raw CBC
            pt, ct = h(case["plaintext"]), h(case["ciphertext"])
        else:                                      # cases 5-8: ESP payloads, no ICV
            pt, ct = h(case["pre_encryption_data"]), h(case["encrypted_data"])
        assert cbc.encrypt(h(case["iv"]), pt) == ct, case["name"]
        assert cbc.decrypt(h(case["iv"]), ct) == pt, case["name"]
        checked += 1
    assert checked == 8


def test_ctr_rfc3686():
    for case in rfc_cases("rfc/rfc3686_aes_ctr.json"):
        ctr = B.cipher("aes-ctr", h(case["key"]))
        icb = h(case["nonce"]) + h(case["iv"]) + (1).to_bytes(4, "big")   # RFC 3686 section 4
        assert icb.hex() == case["counter_blocks"][0]
        assert ctr.encrypt(icb, h(case["plaintext"])).hex() == case["ciphertext"], case["name"]
        assert ctr.decrypt(icb, h(case["ciphertext"])).hex() == case["plaintext"], case["name"]


def _ossl(mode, key, iv, data, decrypt=False):
    from cryptography.hazmat.primitives.ciphers import Cipher as CCipher, algorithms, modes

    c = CCipher(algorithms.AES(key), getattr(modes, mode)(iv))
    ctx = c.decryptor() if decrypt else c.encryptor()
    return ctx.update(data) + ctx.finalize()


@pytest.mark.parametrize("klen", [16, 24, 32])
def test_cbc_ctr_match_cryptography(klen):
    key = rbytes(klen)
    cbc, ctr = B.cipher("aes-cbc", key), B.cipher("aes-ctr", key)
    for n in (0, 16, 32, 160, 1392):
        iv, data = rbytes(16), rbytes(n)
        assert cbc.encrypt(iv, data) == _ossl("CBC", key, iv, data)
        assert cbc.decrypt(iv, data) == _ossl("CBC", key, iv, data, decrypt=True)
    for n in (0, 1, 15, 16, 17, 100, 1400):
        iv, data = rbytes(16), rbytes(n)
        assert ctr.encrypt(iv, data) == _ossl("CTR", key, iv, data)
        assert ctr.decrypt(iv, ctr.encrypt(iv, data)) == data


def test_ctr_increments_whole_128_bit_block():
    key = rbytes(16)
    ctr = B.cipher("aes-ctr", key)
    data = rbytes(80)
    for iv in (b"\xff" * 16, b"\x00" * 8 + b"\xff" * 8, b"\x00" * 12 + b"\xff" * 4):
        # The carry crosses the 32- and 64-bit boundaries and wraps at 2^128, as OpenSSL's CTR.
        assert ctr.encrypt(iv, data) == _ossl("CTR", key, iv, data)
    aes = AES(key)
    stream = ctr.encrypt(b"\xff" * 16, bytes(32))
    assert stream == aes.encrypt_block(b"\xff" * 16) + aes.encrypt_block(bytes(16))


def test_gcm_counter_is_inc32():
    """GCTR increments only the low 32 bits of the counter block (SP 800-38D 6.2, inc_32)."""
    from ipsec_plugins.reference.aes import ctr_keystream

    aes = AES(rbytes(16))
    top = RNG.getrandbits(96) << 32
    stream = ctr_keystream(aes, top | 0xFFFFFFFF, 32, width=32)
    assert stream[16:] == aes.encrypt_block(top.to_bytes(16, "big"))


def test_cbc_ctr_reject_bad_sizes():
    cbc, ctr = B.cipher("aes-cbc", bytes(16)), B.cipher("aes-ctr", bytes(16))
    with pytest.raises(ValueError, match="multiple of 16"):
        cbc.encrypt(bytes(16), bytes(17))
    with pytest.raises(ValueError, match="multiple of 16"):
        cbc.decrypt(bytes(16), bytes(15))
    for iv_len in (0, 8, 12, 15, 17):
        with pytest.raises(ValueError, match="iv"):
            cbc.encrypt(bytes(iv_len), bytes(16))
        with pytest.raises(ValueError, match="iv"):
            ctr.encrypt(bytes(iv_len), bytes(16))
    for family in ("aes-cbc", "aes-ctr"):
        with pytest.raises(ValueError, match=f"{family} key"):
            B.cipher(family, bytes(20))


# ---------------------------------------------------------------------------------------------
# aes-gcm
# ---------------------------------------------------------------------------------------------


def test_ghash_table_equals_algorithm_1():
    for _ in range(5):
        hk = RNG.getrandbits(128)
        g = Ghash(hk)
        for _ in range(20):
            x = RNG.getrandbits(128)
            assert g.update(0, x.to_bytes(16, "big")) == gf128_mul(x, hk)
    # x^0 (the integer 1 << 127) is the multiplicative identity
    assert gf128_mul(1 << 127, 0x1234) == 0x1234


def test_gcm_wycheproof_96_bit_iv():
    seen = valid = 0
    for group, t in wycheproof("wycheproof/aes_gcm_test.json", ivSize=96, tagSize=128):
        gcm = B.aead("aes-gcm", h(t["key"]), tag_bytes=16, nonce_bytes=12)
        iv, aad, msg, ct, tag = h(t["iv"]), h(t["aad"]), h(t["msg"]), h(t["ct"]), h(t["tag"])
        seen += 1
        if t["result"] == "valid":
            valid += 1
            assert gcm.encrypt(iv, msg, aad) == ct + tag, t["tcId"]
            assert gcm.decrypt(iv, ct + tag, aad) == msg, t["tcId"]
        else:
            with pytest.raises(AuthenticationError):
                gcm.decrypt(iv, ct + tag, aad)
    assert seen > 150 and valid > 100


def test_gcm_esp_draft_mcgrew():
    for case in rfc_cases("rfc/draft-mcgrew-gcm-test-01_esp_gcm_gmac.json"):
        gcm = B.aead("aes-gcm", h(case["key"]), tag_bytes=16, nonce_bytes=12)
        nonce, aad, pt = h(case["nonce"]), h(case["aad"]), h(case["plaintext"])
        assert gcm.encrypt(nonce, pt, aad).hex() == case["ctext_tag"], case["name"]
        assert gcm.decrypt(nonce, h(case["ctext_tag"]), aad) == pt, case["name"]


@pytest.mark.parametrize("klen", [16, 24, 32])
def test_gcm_matches_cryptography(klen):
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    key = rbytes(klen)
    ours, theirs = B.aead("aes-gcm", key, tag_bytes=16, nonce_bytes=12), AESGCM(key)
    short = {t: B.aead("aes-gcm", key, tag_bytes=t, nonce_bytes=12) for t in (8, 12)}
    for n, alen in ((0, 0), (0, 20), (1, 8), (15, 12), (16, 16), (17, 0), (64, 8), (1400, 12)):
        nonce, pt, aad = rbytes(12), rbytes(n), rbytes(alen)
        want = theirs.encrypt(nonce, pt, aad)
        assert ours.encrypt(nonce, pt, aad) == want
        assert ours.decrypt(nonce, want, aad) == pt
        for t, gcm in short.items():   # truncated tag = leftmost t bytes (SP 800-38D 5.2.1.2)
            assert gcm.encrypt(nonce, pt, aad) == want[: n + t]
            assert gcm.decrypt(nonce, want[: n + t], aad) == pt


# ---------------------------------------------------------------------------------------------
# aes-ccm
# ---------------------------------------------------------------------------------------------


def test_ccm_wycheproof():
    seen = 0
    for group, t in wycheproof("wycheproof/aes_ccm_test.json"):
        key, iv, aad, msg, ct, tag = (h(t[k]) for k in ("key", "iv", "aad", "msg", "ct", "tag"))
        tag_bytes, nonce_bytes = group["tagSize"] // 8, group["ivSize"] // 8
        if tag_bytes not in (8, 12, 16) or not 7 <= nonce_bytes <= 13:
            # Outside the aes-ccm contract (tags 4/6/10/14 are legal CCM but not offered).
            with pytest.raises(ValueError):
                B.aead("aes-ccm", key, tag_bytes=tag_bytes, nonce_bytes=nonce_bytes)
            continue
        ccm = B.aead("aes-ccm", key, tag_bytes=tag_bytes, nonce_bytes=nonce_bytes)
        seen += 1
        if t["result"] == "valid":
            assert ccm.encrypt(iv, msg, aad) == ct + tag, t["tcId"]
            assert ccm.decrypt(iv, ct + tag, aad) == msg, t["tcId"]
        else:
            with pytest.raises(AuthenticationError):
                ccm.decrypt(iv, ct + tag, aad)
    assert seen > 300


def test_ccm_aad_length_encoding():
    # RFC 3610 2.2: 0 < l(a) < 2^16-2^8 -> 2 bytes; < 2^32 -> ff fe + 4; else ff ff + 8.
    assert encode_aad_length(0) == b""
    assert encode_aad_length(1) == h("0001")
    assert encode_aad_length(0xFEFF) == h("feff")
    assert encode_aad_length(0xFF00) == h("fffe0000ff00")
    assert encode_aad_length(2**32 - 1) == h("fffeffffffff")
    assert encode_aad_length(2**32) == h("ffff0000000100000000")


def test_ccm_matches_cryptography():
    from cryptography.hazmat.primitives.ciphers.aead import AESCCM

    for klen in (16, 24, 32):
        key = rbytes(klen)
        for tag_bytes in (8, 12, 16):
            theirs = AESCCM(key, tag_length=tag_bytes)
            for nonce_bytes in (7, 11, 13):
                ours = B.aead("aes-ccm", key, tag_bytes=tag_bytes, nonce_bytes=nonce_bytes)
                for n, alen in ((0, 0), (0, 9), (5, 0), (16, 8), (33, 12), (1400, 8)):
                    nonce, pt, aad = rbytes(nonce_bytes), rbytes(n), rbytes(alen)
                    want = theirs.encrypt(nonce, pt, aad)
                    assert ours.encrypt(nonce, pt, aad) == want, (klen, tag_bytes, nonce_bytes, n, alen)
                    assert ours.decrypt(nonce, want, aad) == pt
    # AAD lengths on both sides of the 2^16 - 2^8 boundary of the length encoding
    key = rbytes(16)
    ours, theirs = B.aead("aes-ccm", key, tag_bytes=16, nonce_bytes=11), AESCCM(key)
    for alen in (0xFEFF, 0xFF00):
        nonce, pt, aad = rbytes(11), rbytes(20), rbytes(alen)
        assert ours.encrypt(nonce, pt, aad) == theirs.encrypt(nonce, pt, aad)


def test_ccm_message_length_limit():
    ccm = B.aead("aes-ccm", bytes(16), tag_bytes=8, nonce_bytes=13)   # L = 2: messages < 65536
    ccm.encrypt(bytes(13), bytes(65535), b"")
    with pytest.raises(ValueError, match="length field"):
        ccm.encrypt(bytes(13), bytes(65536), b"")


# ---------------------------------------------------------------------------------------------
# chacha20-poly1305
# ---------------------------------------------------------------------------------------------


def test_chacha20_block_rfc8439_2_3_2():
    import struct

    from ipsec_plugins.reference.chacha import chacha20_block, poly1305_mac

    key = struct.unpack("<8I", bytes(range(32)))
    nonce = struct.unpack("<3I", h("000000090000004a00000000"))
    assert chacha20_block(key, 1, nonce).hex() == (
        "10f1e7e4d13b5915500fdd1fa32071c4c7d1f4c733c068030422aa9ac3d46c4e"
        "d2826446079faa0914c2d705d98b02a2b5129cd1de164eb9cbd083e8a2503c4e")
    # RFC 8439 2.5.2 Poly1305 example
    key = h("85d6be7857556d337f4452fe42d506a80103808afb0db2fd4abff6af4149f51b")
    assert poly1305_mac(b"Cryptographic Forum Research Group", key).hex() == "a8061dc1305136c6c22b8baf0c0127a9"


def test_chacha20_poly1305_wycheproof():
    seen = 0
    for group, t in wycheproof("wycheproof/chacha20_poly1305_test.json", ivSize=96):
        aead = B.aead("chacha20-poly1305", h(t["key"]), tag_bytes=16, nonce_bytes=12)
        iv, aad, msg, ct, tag = h(t["iv"]), h(t["aad"]), h(t["msg"]), h(t["ct"]), h(t["tag"])
        seen += 1
        if t["result"] == "valid":
            assert aead.encrypt(iv, msg, aad) == ct + tag, t["tcId"]
            assert aead.decrypt(iv, ct + tag, aad) == msg, t["tcId"]
        else:
            with pytest.raises(AuthenticationError):
                aead.decrypt(iv, ct + tag, aad)
    assert seen > 300


def test_chacha20_poly1305_rfc7634_esp_and_ikev2():
    from ipsec_plugins.reference.chacha import chacha20_block, poly1305_mac
    import struct

    for case in rfc_cases("rfc/rfc7634_chacha20_poly1305_esp_ikev2.json"):
        aead = B.aead("chacha20-poly1305", h(case["key"]), tag_bytes=16, nonce_bytes=12)
        nonce, aad, pt = h(case["nonce"]), h(case["aad"]), h(case["plaintext"])
        out = aead.encrypt(nonce, pt, aad)
        assert out.hex() == case["ciphertext"] + case["tag"], case["name"]
        assert aead.decrypt(nonce, out, aad) == pt
        # intermediate values: the Poly1305 one-time key (RFC 8439 2.6) and the tag over its input
        otk = chacha20_block(struct.unpack("<8I", h(case["key"])), 0, struct.unpack("<3I", nonce))[:32]
        assert otk.hex() == case["poly1305_one_time_key"]
        assert poly1305_mac(h(case["poly1305_input"]), otk).hex() == case["tag"]


def test_chacha20_poly1305_matches_cryptography():
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305 as Theirs

    key = rbytes(32)
    ours, theirs = B.aead("chacha20-poly1305", key, tag_bytes=16, nonce_bytes=12), Theirs(key)
    for n, alen in ((0, 0), (0, 12), (1, 8), (63, 0), (64, 12), (65, 3), (1400, 8)):
        nonce, pt, aad = rbytes(12), rbytes(n), rbytes(alen)
        want = theirs.encrypt(nonce, pt, aad)
        assert ours.encrypt(nonce, pt, aad) == want
        assert ours.decrypt(nonce, want, aad) == pt


# ---------------------------------------------------------------------------------------------
# The AEAD contract: sizes and failures
# ---------------------------------------------------------------------------------------------

AEAD_SETUPS = [
    ("aes-gcm", 16, 16, 12), ("aes-gcm", 24, 8, 12), ("aes-gcm", 32, 12, 12),
    ("aes-ccm", 16, 16, 11), ("aes-ccm", 24, 8, 7), ("aes-ccm", 32, 12, 13),
    ("chacha20-poly1305", 32, 16, 12),
]


@pytest.mark.parametrize("family,klen,tag_bytes,nonce_bytes", AEAD_SETUPS)
def test_aead_rejects_forgeries(family, klen, tag_bytes, nonce_bytes):
    aead = B.aead(family, rbytes(klen), tag_bytes=tag_bytes, nonce_bytes=nonce_bytes)
    assert isinstance(aead, Aead) and aead.tag_bytes == tag_bytes
    nonce, pt, aad = rbytes(nonce_bytes), rbytes(50), rbytes(8)
    sealed = aead.encrypt(nonce, pt, aad)
    assert len(sealed) == len(pt) + tag_bytes
    assert aead.decrypt(nonce, sealed, aad) == pt
    assert aead.decrypt(nonce, sealed, aad) == pt          # the bound object is reusable
    for i in (0, len(pt) - 1, len(pt), len(sealed) - 1):   # ciphertext and tag bytes
        forged = bytearray(sealed)
        forged[i] ^= 0x01
        with pytest.raises(AuthenticationError):
            aead.decrypt(nonce, bytes(forged), aad)
    with pytest.raises(AuthenticationError):
        aead.decrypt(nonce, sealed, aad + b"\x00")
    other_nonce = bytes([nonce[0] ^ 1]) + nonce[1:]
    with pytest.raises(AuthenticationError):
        aead.decrypt(other_nonce, sealed, aad)
    with pytest.raises(AuthenticationError):
        aead.decrypt(nonce, sealed[: tag_bytes - 1], aad)   # shorter than the tag
    with pytest.raises(ValueError, match="nonce"):
        aead.encrypt(nonce + b"\x00", pt, aad)
    with pytest.raises(ValueError, match="nonce"):
        aead.decrypt(nonce[:-1], sealed, aad)


@pytest.mark.parametrize("family,klen,tag_bytes,nonce_bytes", [
    ("aes-gcm", 20, 16, 12), ("aes-gcm", 16, 4, 12), ("aes-gcm", 16, 15, 12), ("aes-gcm", 16, 16, 8),
    ("aes-gcm", 16, 16, 16), ("aes-ccm", 16, 4, 11), ("aes-ccm", 16, 10, 11), ("aes-ccm", 16, 16, 6),
    ("aes-ccm", 16, 16, 14), ("aes-ccm", 8, 16, 11), ("chacha20-poly1305", 16, 16, 12),
    ("chacha20-poly1305", 32, 12, 12), ("chacha20-poly1305", 32, 16, 8),
])
def test_aead_rejects_bad_parameters(family, klen, tag_bytes, nonce_bytes):
    with pytest.raises(ValueError, match=family):
        B.aead(family, bytes(klen), tag_bytes=tag_bytes, nonce_bytes=nonce_bytes)


# ---------------------------------------------------------------------------------------------
# MACs
# ---------------------------------------------------------------------------------------------


def test_hmac_sha2_rfc4231():
    for case in rfc_cases("rfc/rfc4231_hmac_sha2.json"):
        for bits in (256, 384, 512):
            want = case[f"hmac_sha_{bits}"]
            got = B.mac(f"hmac-sha{bits}", h(case["key"])).mac(h(case["data"])).hex()
            assert got[: len(want)] == want, (case["name"], bits)   # case 5 is printed truncated
            if "truncated_to_bits" not in case:
                assert len(got) == len(want)


@pytest.mark.parametrize("family,file", [
    ("hmac-sha1", "hmac_sha1_test.json"), ("hmac-sha256", "hmac_sha256_test.json"),
    ("hmac-sha384", "hmac_sha384_test.json"), ("hmac-sha512", "hmac_sha512_test.json"),
])
def test_hmac_wycheproof_full_tags(family, file):
    digest_bits = {"hmac-sha1": 160, "hmac-sha256": 256, "hmac-sha384": 384, "hmac-sha512": 512}[family]
    seen = 0
    for group, t in wycheproof(f"wycheproof/{file}", tagSize=digest_bits):
        mac = B.mac(family, h(t["key"])).mac(h(t["msg"]))   # short, block-size and long keys
        assert (mac == h(t["tag"])) == (t["result"] == "valid"), t["tcId"]
        seen += 1
    assert seen > 80


def test_hmac_matches_cryptography():
    from cryptography.hazmat.primitives import hashes, hmac as chmac

    algs = {"hmac-sha1": hashes.SHA1, "hmac-sha256": hashes.SHA256,
            "hmac-sha384": hashes.SHA384, "hmac-sha512": hashes.SHA512}
    for family, alg in algs.items():
        for klen in (0, 1, 20, 32, 64, 65, 128, 129, 200):
            key = rbytes(klen)
            ours = B.mac(family, key)
            assert isinstance(ours, Mac) and ours.digest_bytes == alg.digest_size
            for n in (0, 1, 100, 1400):
                data = rbytes(n)
                ref = chmac.HMAC(key, alg())
                ref.update(data)
                assert ours.mac(data) == ref.finalize(), (family, klen, n)


def test_aes_xcbc_rfc3566():
    for case in rfc_cases("rfc/rfc3566_aes_xcbc_mac_96.json"):
        mac = B.mac("aes-xcbc", h(case["key"]))
        assert mac.digest_bytes == 16
        full = mac.mac(h(case["message"]))
        assert full.hex() == case["aes_xcbc_mac"], case["name"]
        assert full[:12].hex() == case["aes_xcbc_mac_96"]


def _xcbc_on_openssl(key: bytes, data: bytes) -> bytes:
    """AES-XCBC-MAC (RFC 3566 4.3) written independently on OpenSSL's AES-ECB."""
    from cryptography.hazmat.primitives.ciphers import Cipher as CCipher, algorithms, modes

    def ecb(k, block):
        return CCipher(algorithms.AES(k), modes.ECB()).encryptor().update(block)

    k1, k2, k3 = (ecb(key, bytes([i]) * 16) for i in (1, 2, 3))
    blocks = [data[i:i + 16] for i in range(0, len(data), 16)] or [b""]
    e = bytes(16)
    for m in blocks[:-1]:
        e = ecb(k1, bytes(a ^ b for a, b in zip(e, m)))
    last = blocks[-1]
    if len(last) == 16:
        last = bytes(a ^ b for a, b in zip(last, k2))
    else:
        last = bytes(a ^ b for a, b in zip(last + b"\x80" + bytes(15 - len(last)), k3))
    return ecb(k1, bytes(a ^ b for a, b in zip(e, last)))


def test_aes_xcbc_matches_independent_implementation():
    key = rbytes(16)
    mac = B.mac("aes-xcbc", key)
    for n in (0, 1, 15, 16, 17, 31, 32, 33, 1400):
        data = rbytes(n)
        assert mac.mac(data) == _xcbc_on_openssl(key, data), n


def test_aes_cmac_rfc4494():
    cases = rfc_cases("rfc/rfc4494_aes_cmac_96.json")
    for case in cases:
        mac = B.mac("aes-cmac", h(case["key"]))
        if case["type"] == "subkeys":
            assert mac._k1 == int(case["k1"], 16) and mac._k2 == int(case["k2"], 16)
        else:
            assert mac.mac(h(case["message"]))[:12].hex() == case["aes_cmac_96"], case["name"]
    # The full 128-bit tags of the same four messages (RFC 4493 section 4 / SP 800-38B D.1)
    mac = B.mac("aes-cmac", h("2b7e151628aed2a6abf7158809cf4f3c"))
    assert mac.mac(b"").hex() == "bb1d6929e95937287fa37d129b756746"
    assert mac.mac(h("6bc1bee22e409f96e93d7e117393172a")).hex() == "070a16b46b4d4144f79bdd9dd04a287c"


def test_aes_cmac_wycheproof():
    seen = 0
    for group, t in wycheproof("wycheproof/aes_cmac_test.json", tagSize=128):
        if group["keySize"] not in (128, 192, 256):
            with pytest.raises(ValueError, match="aes-cmac key"):
                B.mac("aes-cmac", h(t["key"]))
            continue
        tag = B.mac("aes-cmac", h(t["key"])).mac(h(t["msg"]))
        assert (tag == h(t["tag"])) == (t["result"] == "valid"), t["tcId"]
        seen += 1
    assert seen > 250


def test_aes_cmac_matches_cryptography():
    from cryptography.hazmat.primitives import cmac
    from cryptography.hazmat.primitives.ciphers import algorithms

    for klen in (16, 24, 32):
        key = rbytes(klen)
        mac = B.mac("aes-cmac", key)
        for n in (0, 1, 16, 17, 32, 1400):
            data = rbytes(n)
            ref = cmac.CMAC(algorithms.AES(key))
            ref.update(data)
            assert mac.mac(data) == ref.finalize()


def test_mac_key_sizes():
    for bad in (0, 15, 17, 24, 32):
        with pytest.raises(ValueError, match="aes-xcbc key"):
            B.mac("aes-xcbc", bytes(bad))
    for bad in (0, 8, 20, 33):
        with pytest.raises(ValueError, match="aes-cmac key"):
            B.mac("aes-cmac", bytes(bad))


# ---------------------------------------------------------------------------------------------
# The backend: features, dispatch, registration, speed
# ---------------------------------------------------------------------------------------------


def test_backend_features_and_dispatch():
    feats = {f.family: f for f in B.features()}
    ike = {"prf-hmac-sha1", "prf-hmac-sha256", "prf-hmac-sha384", "prf-hmac-sha512",
           "prf-aes128-xcbc", "prf-aes128-cmac", "modp2048", "modp3072", "modp4096", "ecp256",
           "ecp384", "ecp521", "curve25519", "curve448"}
    assert set(feats) == {"aes-gcm", "aes-ccm", "chacha20-poly1305", "aes-cbc", "aes-ctr", "hmac-sha1",
                          "hmac-sha256", "hmac-sha384", "hmac-sha512", "aes-xcbc", "aes-cmac"} | ike \
        | set(SIGNATURE_FAMILIES)
    assert feats["chacha20-poly1305"].key_bits == (256,)
    assert feats["aes-xcbc"].key_bits == (128,)
    assert feats["hmac-sha256"].key_bits == ()
    assert feats["aes-gcm"].key_bits == (128, 192, 256)
    for f in feats.values():
        if f.kind is FeatureKind.AEAD:
            obj = B.aead(f.family, bytes(f.key_bits[-1] // 8), tag_bytes=16, nonce_bytes=12)
            assert isinstance(obj, Aead)
        elif f.kind is FeatureKind.CIPHER:
            assert isinstance(B.cipher(f.family, bytes(16)), Cipher)
        elif f.kind is FeatureKind.MAC:
            assert isinstance(B.mac(f.family, bytes(16)), Mac)
        elif f.kind is FeatureKind.PRF:
            assert len(B.prf(f.family, bytes(16)).prf(b"x")) == B.prf(f.family, bytes(16)).output_bytes
        elif f.kind is FeatureKind.SIGNATURE:
            pass                                 # tests/crypto/test_sign.py
        else:
            assert B.key_exchange(f.family).public_bytes
    with pytest.raises(NotImplementedError):
        B.aead("aes-cbc", bytes(16), tag_bytes=16, nonce_bytes=12)
    with pytest.raises(NotImplementedError):
        B.cipher("aes-gcm", bytes(16))
    with pytest.raises(NotImplementedError):
        B.mac("aes-cbc", bytes(16))
    assert B.name == "reference" and B.priority == 10 and B.probe() is None


def test_registered_through_the_hook():
    from ipsec_core.crypto.registry import Registry

    reg = Registry(load_entry_points=False, selftest=False)
    record = reg.get("reference")
    assert record.plugin == "ipsec_plugins.reference"
    assert record.available and isinstance(record.backend, ReferenceBackend)
    assert record.offers("aes-gcm", 256) and record.offers("hmac-sha512", None)
    assert not record.offers("chacha20-poly1305", 128)


def test_not_absurdly_slow():
    """A 1500-byte packet takes milliseconds (generous bounds: the test machine is shared)."""
    gcm = B.aead("aes-gcm", bytes(16), tag_bytes=16, nonce_bytes=12)
    cbc, hm = B.cipher("aes-cbc", bytes(16)), B.mac("hmac-sha256", bytes(32))
    pkt = os.urandom(1504)
    start = time.perf_counter()
    for _ in range(10):
        gcm.encrypt(bytes(12), pkt, bytes(8))
        hm.mac(cbc.encrypt(bytes(16), pkt))
    per_packet = (time.perf_counter() - start) / 10
    assert per_packet < 0.25, f"{per_packet * 1e3:.1f} ms per packet"

"""strongSwan proposal keywords <-> transforms."""
import pytest

from ipsec_core.errors import ProposalError
from ipsec_core.transforms.keywords import esp_keywords_for, parse_esp
from ipsec_core.transforms.iana import EncrId, IntegId, KeId

CASES = {
    "aes128gcm16": (EncrId.ENCR_AES_GCM_16, 128, IntegId.AUTH_NONE, False),
    "aes256gcm128": (EncrId.ENCR_AES_GCM_16, 256, IntegId.AUTH_NONE, False),
    "aes192gcm8-esn": (EncrId.ENCR_AES_GCM_8, 192, IntegId.AUTH_NONE, True),
    "aes128gcm12": (EncrId.ENCR_AES_GCM_12, 128, IntegId.AUTH_NONE, False),
    "aes256ccm16": (EncrId.ENCR_AES_CCM_16, 256, IntegId.AUTH_NONE, False),
    "aes128ccm8": (EncrId.ENCR_AES_CCM_8, 128, IntegId.AUTH_NONE, False),
    "chacha20poly1305": (EncrId.ENCR_CHACHA20_POLY1305, 256, IntegId.AUTH_NONE, False),
    "aes256gmac": (EncrId.ENCR_NULL_AUTH_AES_GMAC, 256, IntegId.AUTH_NONE, False),
    "aes256-sha256": (EncrId.ENCR_AES_CBC, 256, IntegId.AUTH_HMAC_SHA2_256_128, False),
    "aes128-sha1-esn": (EncrId.ENCR_AES_CBC, 128, IntegId.AUTH_HMAC_SHA1_96, True),
    "aes128ctr-sha384": (EncrId.ENCR_AES_CTR, 128, IntegId.AUTH_HMAC_SHA2_384_192, False),
    "aes192-sha512": (EncrId.ENCR_AES_CBC, 192, IntegId.AUTH_HMAC_SHA2_512_256, False),
    "aes128-aesxcbc": (EncrId.ENCR_AES_CBC, 128, IntegId.AUTH_AES_XCBC_96, False),
    "aes256ctr-aescmac": (EncrId.ENCR_AES_CTR, 256, IntegId.AUTH_AES_CMAC_96, False),
    "null-sha256": (EncrId.ENCR_NULL, 0, IntegId.AUTH_HMAC_SHA2_256_128, False),
}


@pytest.mark.parametrize("text", sorted(CASES))
def test_parse(text):
    p = parse_esp(text)
    assert (p.encr, p.key_bits, p.integ, p.esn) == CASES[text]
    assert parse_esp(p.keyword) == p


def test_ke_groups_and_case():
    p = parse_esp("AES128GCM16-X25519-ecp256-ESN")
    assert p.ke == (KeId.CURVE25519, KeId.ECP_256) and p.esn
    assert p.keyword == "aes128gcm16-x25519-ecp256-esn"


def test_key_bytes_include_salt():
    assert parse_esp("aes128gcm16").enc_key_bytes == 20
    assert parse_esp("aes256ccm8").enc_key_bytes == 35
    assert parse_esp("aes128ctr-sha1").enc_key_bytes == 20
    assert parse_esp("aes256-sha1").enc_key_bytes == 32
    assert parse_esp("chacha20poly1305").enc_key_bytes == 36


@pytest.mark.parametrize("text,message", [
    ("", "empty"),
    ("aes128gcm16-sha256", "combined-mode"),
    ("aes256", "needs an integrity"),
    ("null", "needs an integrity"),
    ("aes128-sha256-sha1", "more than one integrity"),
    ("aes128gcm16-aes256-sha1", "more than one encryption"),
    ("sha256", "no encryption"),
    ("aes128gcm17", "unknown keyword 'aes128gcm17'"),
    ("3des-md5", "unknown keyword '3des'"),
    ("aes128gcm16-esn-noesn", "ESN given twice"),
])
def test_errors_name_the_problem(text, message):
    with pytest.raises(ProposalError, match=message):
        parse_esp(text)


def test_keywords_for_family():
    assert esp_keywords_for("aes-gcm", (128,)) == ["aes128gcm8", "aes128gcm12", "aes128gcm16", "aes128gmac"]
    assert esp_keywords_for("hmac-sha256", ()) == ["sha256"]
    assert "aes256ctr" in esp_keywords_for("aes-ctr", (128, 192, 256))

"""Signatures through the registry: every Wycheproof ECDSA/RSA case and the OpenSSL-derived
cases on aesni and cryptodome, a sample on the (slow) reference backend; the three backends
verify each other's signatures; the DER helpers of `ipsec_core.crypto.signature` refuse what is
not strict DER; RFC 7427 AlgorithmIdentifiers name their family and nothing else.

Test ids name the source and the backend: `wycheproof-ecdsa_secp256r1_sha256-tc7[aesni]`.
"""
from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from ipsec_core.crypto import selftest
from ipsec_core.crypto.base import Feature, FeatureKind, Signer, Verifier, family_kind
from ipsec_core.crypto.registry import get_registry
from ipsec_core.crypto.signature import (SIGNATURE_FAMILIES, DerError, decode_ecdsa_der,
                                         ecdsa_der_to_raw, ecdsa_raw_to_der, encode_ecdsa_der,
                                         family_of_algorithm, parse_private_key, parse_public_key)

REGISTRY = get_registry()
FULL = ("reference", "aesni", "cryptodome")
CASES = [c for f in SIGNATURE_FAMILIES for c in selftest.iter_cases(f)]
#: The reference backend runs every derived case and every 12th Wycheproof case (pure-Python
#: ECDSA takes milliseconds a case); the others run them all.
SAMPLED = [c for i, c in enumerate(CASES) if not c.id.startswith("wycheproof-") or i % 12 == 0]


def _params():
    for name in FULL:
        for case in (SAMPLED if name == "reference" else CASES):
            yield pytest.param(case, name, id=f"{case.id}[{name}]")


@pytest.mark.parametrize(("case", "backend_name"), list(_params()))
def test_signature_vector(case, backend_name):
    why = case.run(REGISTRY.get(backend_name).backend)
    assert why is None, f"{case.id} ({case.source}) on {backend_name}: {why}"


def test_every_family_is_declared_offered_and_has_valid_and_invalid_cases():
    for family in SIGNATURE_FAMILIES:
        assert family_kind(family) is FeatureKind.SIGNATURE
        kinds = {c.valid for c in CASES if c.family == family}
        assert kinds == {True, False}, family
        assert any(getattr(c, "private_key", b"") for c in CASES if c.family == family)
        for name in FULL:
            assert REGISTRY.get(name).offers(family, None), f"{name} does not offer {family}"
    files = {c.source for c in CASES}
    for name in ("ecdsa_secp256r1_sha256", "ecdsa_secp384r1_sha384", "rsa_signature_2048_sha256",
                 "rsa_pss_2048_sha256_mgf1_32"):
        assert f"wycheproof/{name}_test.json" in files


def test_quick_check_catches_a_verifier_that_accepts_everything():
    class Gullible:
        name = "gullible"

        def __init__(self, real):
            self.real = real

        def signer(self, family, key):
            return self.real.signer(family, key)

        def verifier(self, family, key):
            return type("V", (), {"family": family, "verify": lambda self, d, s: True})()

    bad = Gullible(REGISTRY.get("aesni").backend)
    failures = selftest.quick_check(bad, Feature("ecdsa-p256-sha256"))
    assert failures and "accepted an invalid signature" in failures[0]


def _keys():
    return {"ecdsa-p256-sha256": ec.generate_private_key(ec.SECP256R1()),
            "ecdsa-p384-sha384": ec.generate_private_key(ec.SECP384R1()),
            "ecdsa-p521-sha512": ec.generate_private_key(ec.SECP521R1()),
            "rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048)}


KEYS = _keys()


def _key_for(family):
    return KEYS.get(family) or KEYS["rsa"]


def _der(key):
    return (key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()),
            key.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo))


@pytest.mark.parametrize("family", list(SIGNATURE_FAMILIES))
def test_backends_verify_each_other_with_fresh_keys(family):
    private, public = _der(_key_for(family))
    msg = b"IKE_SA_INIT || Nonce || prf(SK_p, IDi')" * 3
    backends = [REGISTRY.get(n).backend for n in FULL]
    signatures = []
    for b in backends:
        signer = b.signer(family, private)
        assert isinstance(signer, Signer) and signer.family == family
        signatures.append(signer.sign(msg))
        assert "PRIVATE" not in repr(signer) and private.hex()[:16] not in repr(signer)
    for b in backends:
        verifier = b.verifier(family, public)
        assert isinstance(verifier, Verifier)
        for sig in signatures:
            assert verifier.verify(msg, sig) is True
            assert verifier.verify(msg + b"x", sig) is False
            assert verifier.verify(msg, b"") is False
            assert verifier.verify(msg, sig[:-1]) is False
    if family.startswith("rsa-pkcs1"):
        assert len(set(signatures)) == 1          # deterministic: every backend signs the same


def test_openssl_verifies_our_signatures():
    key = KEYS["rsa"]
    private, _ = _der(key)
    ref = REGISTRY.get("reference").backend
    sig = ref.signer("rsa-pss-sha384", private).sign(b"m")
    key.public_key().verify(sig, b"m", padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48),
                            hashes.SHA384())
    eck = KEYS["ecdsa-p521-sha512"]
    sig = ref.signer("ecdsa-p521-sha512", _der(eck)[0]).sign(b"m")
    eck.public_key().verify(sig, b"m", ec.ECDSA(hashes.SHA512()))


@pytest.mark.parametrize("name", FULL)
def test_keys_of_the_wrong_kind_are_refused_when_bound(name):
    backend = REGISTRY.get(name).backend
    rsa_private, rsa_public = _der(KEYS["rsa"])
    p384_private, p384_public = _der(KEYS["ecdsa-p384-sha384"])
    for family, public, private in (("ecdsa-p256-sha256", rsa_public, rsa_private),
                                    ("ecdsa-p256-sha256", p384_public, p384_private),
                                    ("rsa-pss-sha256", p384_public, p384_private)):
        with pytest.raises(ValueError):
            backend.verifier(family, public)
        with pytest.raises(ValueError):
            backend.signer(family, private)
    with pytest.raises(ValueError):
        backend.verifier("rsa-pkcs1-sha256", b"\x30\x03\x02\x01\x00")


# -- DER helpers --------------------------------------------------------------------------------
def test_ecdsa_der_round_trip_and_raw_form():
    r, s = 0x80 << 240, 5
    der = encode_ecdsa_der(r, s)
    assert decode_ecdsa_der(der) == (r, s)
    raw = ecdsa_der_to_raw(der, "secp256r1")
    assert len(raw) == 64 and ecdsa_raw_to_der(raw, "secp256r1") == der
    with pytest.raises(DerError):
        ecdsa_raw_to_der(raw[:-1], "secp256r1")


@pytest.mark.parametrize("bad", [
    "3006020101020101" + "00",           # trailing byte
    "308106020101020101",                # long-form length where the short form fits
    "3006020200010201" + "01",           # integer with a needless leading zero
    "30060201ff020101",                  # negative r
    "3003020101",                        # one integer
    "3106020101020101",                  # SET, not SEQUENCE
    "",
])
def test_non_der_ecdsa_signatures_are_refused(bad):
    with pytest.raises(DerError):
        decode_ecdsa_der(bytes.fromhex(bad))


def test_key_parsers_read_what_openssl_writes_and_never_show_the_key():
    for family in ("ecdsa-p256-sha256", "ecdsa-p521-sha512", "rsa"):
        key = KEYS[family]
        private, public = _der(key)
        pub, priv = parse_public_key(public), parse_private_key(private)
        if family == "rsa":
            numbers = key.private_numbers()
            assert (pub.n, pub.e) == (numbers.public_numbers.n, numbers.public_numbers.e)
            assert priv.d == numbers.d and priv.p * priv.q == pub.n
        else:
            numbers = key.private_numbers()
            assert (pub.x, pub.y) == (numbers.public_numbers.x, numbers.public_numbers.y)
            assert priv.scalar == numbers.private_value
        assert str(priv.d or priv.scalar) not in repr(priv)
    with pytest.raises(ValueError, match="malformed"):
        parse_public_key(b"\x30\x82\x00\x01\x00")


@pytest.mark.parametrize("family", list(SIGNATURE_FAMILIES))
def test_algorithm_identifiers_name_their_family(family):
    spec = SIGNATURE_FAMILIES[family]
    assert family_of_algorithm(spec.algorithm_identifier()) is spec


def test_rfc7427_appendix_a_encodings():
    # RFC 7427 A.1.2, A.3.1, A.4.3 (sha256WithRSAEncryption, ecdsa-with-sha256,
    # RSASSA-PSS with SHA-256, MGF1-SHA-256, salt 32)
    assert SIGNATURE_FAMILIES["rsa-pkcs1-sha256"].algorithm_identifier().hex() == \
        "300d06092a864886f70d01010b0500"
    assert SIGNATURE_FAMILIES["ecdsa-p256-sha256"].algorithm_identifier().hex() == \
        "300a06082a8648ce3d040302"
    assert SIGNATURE_FAMILIES["rsa-pss-sha256"].algorithm_identifier().hex() == (
        "3041" "06092a864886f70d01010a" "3034"
        "a00f300d06096086480165030402010500"
        "a11c301a06092a864886f70d010108300d06096086480165030402010500"
        "a203020120")


@pytest.mark.parametrize("der, why", [
    ("300d06092a864886f70d0101050500", "SHA-1"),                # sha1WithRSAEncryption
    ("300a06082a8648ce3d040301", "not supported"),               # ecdsa-with-SHA224
    ("300d06092a864886f70d01010a", "malformed"),                 # truncated
    ("300b06092a864886f70d01010a", "RSASSA-PSS"),                # PSS without parameters
    ("300d06092a864886f70d01010a3000", "RSASSA-PSS"),            # PSS with default (SHA-1) params
])
def test_other_algorithms_are_refused_with_a_reason(der, why):
    with pytest.raises(ValueError, match=why):
        family_of_algorithm(bytes.fromhex(der))

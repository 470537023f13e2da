"""Certificate authentication in memory: two `IkeEndpoint`s with chains the test makes with
`cryptography` (a root CA, an intermediate, end-entity certificates), RSA (PKCS#1 v1.5 and PSS)
and ECDSA (P-256/384/521), each in each role; refusals (an identity the certificate does not
name, a CA we do not trust, an expired certificate, no certificate at all) end with
AUTHENTICATION_FAILED on both sides.  Also the authenticator alone (RFC 4754 methods, SHA-1
refused, the IKE_SA_INIT payloads), identities and DNs, and the connection file keys.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import struct

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from ipsec_core.crypto.registry import get_registry
from ipsec_core.crypto.signature import SIGNATURE_FAMILIES
from ipsec_core.errors import ConfigError, LocalError
from ipsec_core.ike import certs
from ipsec_core.ike.auth import PubkeyAuthenticator, credentials, init_payloads
from ipsec_core.ike.config import ChildConfig, IkeConfig, TrafficSelectorSpec
from ipsec_core.ike.constants import AuthMethod, CertEncoding, IdType, NotifyType
from ipsec_core.ike.endpoint import IkeEndpoint
from ipsec_core.ike.events import ChildSaInstalled, IkeSaDeleted, IkeSaEstablished, IkeSaFailed
from ipsec_core.ike.payloads import AuthPayload, CertReqPayload, IdiPayload, NotifyPayload
from ipsec_core.testing import issue_certificate

REGISTRY = get_registry()
A_ADDR, B_ADDR = "192.0.2.1", "192.0.2.2"
NOW = dt.datetime(2026, 6, 1, tzinfo=dt.timezone.utc)


# -- a small PKI --------------------------------------------------------------------------------
def new_key(kind: str):
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key({"p256": ec.SECP256R1(), "p384": ec.SECP384R1(),
                                    "p521": ec.SECP521R1()}[kind])


def dn(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "CH"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ipsec-suite"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def issue(subject: str, key, issuer: str, issuer_key, *, ca: bool, san=(), days=(-1, 365)):
    return issue_certificate(dn(subject), key, dn(issuer), issuer_key, ca=ca, san=san, days=days, now=NOW)


def der(cert) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def pkcs8(key) -> bytes:
    return key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class Pki:
    """A root CA, an intermediate CA under it, and end entities issued by the intermediate."""

    def __init__(self, kind: str = "p256", name: str = "Test Root"):
        self.root_key = new_key(kind)
        self.root = issue(name, self.root_key, name, self.root_key, ca=True, days=(-10, 3650))
        self.inter_key = new_key(kind)
        self.inter = issue(f"{name} Intermediate", self.inter_key, name, self.root_key, ca=True,
                           days=(-10, 1000))

    def entity(self, host: str, kind: str, *, days=(-1, 365), ip: str | None = None):
        key = new_key(kind)
        san = [x509.DNSName(host), x509.RFC822Name(f"admin@{host}")]
        if ip:
            san.append(x509.IPAddress(ipaddress.ip_address(ip)))
        cert = issue(host, key, f"{self.root.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value}"
                     " Intermediate", self.inter_key, ca=False, san=san, days=days)
        return (der(cert), der(self.inter)), pkcs8(key)


_PKIS: dict[str, Pki] = {}


def pki(kind: str) -> Pki:
    """One PKI per key type for the whole module (RSA keys take a while to make)."""
    if kind not in _PKIS:
        _PKIS[kind] = Pki("rsa" if kind == "rsa" else "p256")
    return _PKIS[kind]


def ts(text: str) -> tuple[TrafficSelectorSpec, ...]:
    return (TrafficSelectorSpec(ipaddress.ip_network(text)),)


def cfg(name: str, *, initiator: bool, kind: str = "p256", ca: Pki | None = None, local_id=None,
        remote_id=None, chain=None, **kw) -> IkeConfig:
    local, remote = (A_ADDR, B_ADDR) if initiator else (B_ADDR, A_ADDR)
    lnet, rnet = ("198.51.100.0/24", "203.0.113.0/24") if initiator else ("203.0.113.0/24", "198.51.100.0/24")
    own = pki("rsa" if kind == "rsa" else "ec")
    chain, key = chain or own.entity(f"{name}.example.org", kind)
    trusted = ca or own
    child = ChildConfig("net", ts(lnet), ts(rnet), esp_proposals=("aes128gcm16",),
                        start_action="start" if initiator else "none")
    return IkeConfig(name, (local,), (remote,), local_id=local_id or f"{name}.example.org",
                     remote_id=remote_id, auth="pubkey", certs=chain, private_key=key,
                     cacerts=(der(trusted.root),), proposals=("aes128gcm16-prfsha256-ecp256",),
                     encap=True, children=(child,), **kw)


class Pair:
    """Initiator A and responder B exchanging datagrams in memory."""

    def __init__(self, a: IkeConfig, b: IkeConfig, *, wall: dt.datetime | None = NOW):
        offset = None if wall is None else wall.timestamp()       # now starts at 0.0
        self.a = IkeEndpoint([a], registry=REGISTRY, now=0.0, wall_offset=offset)
        self.b = IkeEndpoint([b], registry=REGISTRY, now=0.0, wall_offset=offset)
        self.events = {"a": [], "b": []}
        self.sent = {"a": [], "b": []}

    def up(self) -> Pair:
        self.a.initiate("a", now=0.0)
        moved = True
        while moved:
            moved = False
            for side, src, dst in (("a", self.a, self.b), ("b", self.b, self.a)):
                for d in src.datagrams_to_send(now=0.0):
                    moved = True
                    self.sent[side].append(d)
                    dst.receive_datagram(d.data, remote=d.local, local=d.remote, nat_t=d.nat_t, now=0.0)
        for side, ep in (("a", self.a), ("b", self.b)):
            while (e := ep.next_event()) is not None:
                self.events[side].append(e)
        return self

    def of(self, side: str, cls) -> list:
        return [e for e in self.events[side] if isinstance(e, cls)]


def assert_up(pair: Pair, *, a_sees: str = "b.example.org", b_sees: str = "a.example.org") -> None:
    for side in "ab":
        assert not pair.of(side, IkeSaFailed), pair.of(side, IkeSaFailed)
        assert len(pair.of(side, IkeSaEstablished)) == 1
    assert pair.of("a", IkeSaEstablished)[0].remote_id == a_sees
    assert pair.of("b", IkeSaEstablished)[0].remote_id == b_sees
    assert pair.of("a", ChildSaInstalled) and pair.of("b", ChildSaInstalled)


def assert_refused(pair: Pair, reason: str) -> None:
    """AUTHENTICATION_FAILED on both sides, `reason` in the refusing side's event.  A responder
    refused by the initiator had answered IKE_AUTH (established, from its side) and learns of
    the refusal from the INFORMATIONAL that follows (RFC 7296 2.21.2): its IKE SA is deleted."""
    failed = {side: pair.of(side, IkeSaFailed) for side in "ab"}
    assert [f.notify for f in failed["a"]] == [NotifyType.AUTHENTICATION_FAILED], failed
    assert not pair.of("a", IkeSaEstablished)
    if failed["b"]:
        assert [f.notify for f in failed["b"]] == [NotifyType.AUTHENTICATION_FAILED], failed
        assert not pair.of("b", IkeSaEstablished)
    else:
        [deleted] = pair.of("b", IkeSaDeleted)
        assert deleted.reason == "peer: AUTHENTICATION_FAILED"
    assert any(reason in f.reason for side in "ab" for f in failed[side]), failed


# -- both roles, each key type ------------------------------------------------------------------
@pytest.mark.parametrize(("a_kind", "b_kind"), [("p256", "p256"), ("p384", "p521"), ("p521", "p256"),
                                                ("rsa", "rsa")])
def test_chains_through_an_intermediate_in_both_roles(a_kind, b_kind):
    a = cfg("a", initiator=True, kind=a_kind, remote_id="b.example.org")
    b = cfg("b", initiator=False, kind=b_kind, remote_id="a.example.org")
    if (a_kind == "rsa") != (b_kind == "rsa"):
        pytest.skip("one CA per test")
    pair = Pair(a, b).up()
    assert_up(pair)
    # IKE_AUTH carried the end-entity certificate and the intermediate, AUTH method 14
    assert len(pair.sent["a"][1].data) > 600


def test_rsa_pss_and_mixed_key_types_with_two_cas():
    rsa_pki, ec_pki = pki("rsa"), pki("ec")
    a = cfg("a", initiator=True, kind="rsa", ca=ec_pki, rsa_pss=True)
    b = cfg("b", initiator=False, kind="p384", ca=rsa_pki)
    assert_up(Pair(a, b).up())


def test_distinguished_name_identities():
    a = cfg("a", initiator=True, local_id="C=CH, O=ipsec-suite, CN=a.example.org",
            remote_id="C=CH, O=ipsec-suite, CN=b.example.org")
    b = cfg("b", initiator=False, local_id="C=CH, O=ipsec-suite, CN=b.example.org",
            remote_id="C=CH, O=ipsec-suite, CN=a.example.org")
    pair = Pair(a, b).up()
    assert_up(pair, a_sees="C=CH, O=ipsec-suite, CN=b.example.org",
              b_sees="C=CH, O=ipsec-suite, CN=a.example.org")


def test_email_and_ip_identities():
    chain_a = pki("ec").entity("a.example.org", "p256", ip=A_ADDR)
    a = cfg("a", initiator=True, local_id="admin@a.example.org", chain=chain_a)
    b = cfg("b", initiator=False, local_id=None, remote_id=A_ADDR,
            chain=pki("ec").entity("b.example.org", "p256", ip=B_ADDR))
    b = IkeConfig(**{**{f: getattr(b, f) for f in b.__dataclass_fields__}, "local_id": B_ADDR,
                     "remote_id": "admin@a.example.org"})
    assert_up(Pair(a, b).up(), a_sees=B_ADDR, b_sees="admin@a.example.org")


# -- refusals: AUTHENTICATION_FAILED on both sides -----------------------------------------------
def test_identity_the_certificate_does_not_name_is_refused():
    a = cfg("a", initiator=True, local_id="c.example.org")     # a's certificate names a.example.org
    pair = Pair(a, cfg("b", initiator=False)).up()
    assert_refused(pair, "does not name the identity c.example.org")


def test_responder_with_a_wrong_identity_is_refused_by_the_initiator():
    b = cfg("b", initiator=False, local_id="mallory.example.org")
    pair = Pair(cfg("a", initiator=True), b).up()
    assert_refused(pair, "does not name the identity mallory.example.org")


def test_remote_id_must_equal_the_peers_identity():
    a = cfg("a", initiator=True, remote_id="C=CH, O=ipsec-suite, CN=b.example.org")
    pair = Pair(a, cfg("b", initiator=False)).up()     # b says it is b.example.org (FQDN)
    assert_refused(pair, "is not C=CH, O=ipsec-suite, CN=b.example.org")


def test_untrusted_ca_is_refused():
    stranger = Pki("p256", name="Stranger Root")
    a = cfg("a", initiator=True, chain=stranger.entity("a.example.org", "p256"))
    pair = Pair(a, cfg("b", initiator=False)).up()
    assert_refused(pair, "is not trusted")


def test_responder_from_an_untrusted_ca_is_refused():
    stranger = Pki("p256", name="Stranger Root")
    b = cfg("b", initiator=False, chain=stranger.entity("b.example.org", "p256"))
    pair = Pair(cfg("a", initiator=True), b).up()
    assert_refused(pair, "is not trusted")


def test_expired_certificate_is_refused_and_validity_needs_a_wall_clock():
    chain = pki("ec").entity("a.example.org", "p256", days=(-30, -1))
    pair = Pair(cfg("a", initiator=True, chain=chain), cfg("b", initiator=False)).up()
    assert_refused(pair, "not valid at validation time")
    # without a wall clock the validity period is not judged (documented in ike/certs.py)
    pair = Pair(cfg("a", initiator=True, chain=chain), cfg("b", initiator=False), wall=None).up()
    assert_up(pair)


def test_peer_without_a_certificate_is_refused():
    psk = IkeConfig("a", (A_ADDR,), (B_ADDR,), local_id="a.example.org", psk=b"x" * 32,
                    proposals=("aes128gcm16-prfsha256-ecp256",), encap=True,
                    children=(ChildConfig("net", ts("198.51.100.0/24"), ts("203.0.113.0/24"),
                                          esp_proposals=("aes128gcm16",), start_action="start"),))
    pair = Pair(psk, cfg("b", initiator=False)).up()
    assert_refused(pair, "no certificate")


# -- the authenticator alone --------------------------------------------------------------------
class _Crypto:
    registry = REGISTRY
    backend_name = None


OCTETS = b"RealMessage1 | NonceR | prf(SK_pi, IDi')"


def _auth(config, peer_init=()):
    return PubkeyAuthenticator(config, _Crypto(), peer_init=list(peer_init), wall_time=NOW.timestamp())


def _idi(name="a.example.org"):
    return IdiPayload(IdType.FQDN, name.encode())


def _hashes(*ids):
    return NotifyPayload(NotifyType.SIGNATURE_HASH_ALGORITHMS, struct.pack(f"!{len(ids)}H", *ids))


@pytest.mark.parametrize(("kind", "method"), [("p256", AuthMethod.ECDSA_256), ("p384", AuthMethod.ECDSA_384),
                                              ("p521", AuthMethod.ECDSA_521)])
def test_without_the_hash_notify_ecdsa_uses_rfc4754(kind, method):
    a, b = cfg("a", initiator=True, kind=kind), cfg("b", initiator=False)
    payloads = _auth(a).local_payloads(signed_octets=OCTETS, id_payload=_idi())
    auth = payloads[-1]
    assert auth.method == method and len(auth.data) == 2 * {"p256": 32, "p384": 48, "p521": 66}[kind]
    assert [p.encoding for p in payloads[:-1]] == [CertEncoding.X509_CERT_SIG] * 2
    assert _auth(b).verify(payloads, signed_octets=OCTETS, id_payload=_idi()) is None
    assert "does not verify" in _auth(b).verify(payloads, signed_octets=OCTETS + b"!", id_payload=_idi())


def test_method_14_uses_a_hash_the_peer_announced():
    a = cfg("a", initiator=True, kind="rsa", ca=pki("ec"))
    for announced, family in (((2, 3, 4), "rsa-pkcs1-sha256"), ((4,), "rsa-pkcs1-sha512"),
                              ((1, 3), "rsa-pkcs1-sha384")):
        auth = _auth(a, [_hashes(*announced)]).local_payloads(signed_octets=OCTETS, id_payload=_idi())[-1]
        assert auth.method == AuthMethod.DIGITAL_SIGNATURE
        algorithm = SIGNATURE_FAMILIES[family].algorithm_identifier()
        assert auth.data[0] == len(algorithm) and auth.data[1:1 + len(algorithm)] == algorithm
        assert len(auth.data) == 1 + len(algorithm) + 256
    p256 = cfg("a", initiator=True, kind="p256")
    auth = _auth(p256, [_hashes(3, 4)]).local_payloads(signed_octets=OCTETS, id_payload=_idi())[-1]
    assert auth.method == AuthMethod.ECDSA_256      # the peer cannot verify SHA-256 with method 14


def test_sha1_and_unknown_methods_are_refused():
    a, b = cfg("a", initiator=True, kind="rsa", ca=pki("ec")), cfg("b", initiator=False, ca=pki("rsa"))
    payloads = _auth(a, [_hashes(2)]).local_payloads(signed_octets=OCTETS, id_payload=_idi())
    cert_payloads = payloads[:-1]
    for auth, why in ((AuthPayload(AuthMethod.RSA_SIG, bytes(256)), "SHA-1"),
                      (AuthPayload(AuthMethod.SHARED_KEY_MIC, bytes(32)), "SHARED_KEY_MIC"),
                      (AuthPayload(14, bytes([15]) + bytes.fromhex("300d06092a864886f70d0101050500")
                                   + bytes(256)), "SHA-1"),
                      (AuthPayload(14, b"\x40"), "shorter")):
        got = _auth(b).verify([*cert_payloads, auth], signed_octets=OCTETS, id_payload=_idi())
        assert got and why in got, got
    # an ECDSA method for an RSA certificate
    got = _auth(b).verify([*cert_payloads, AuthPayload(AuthMethod.ECDSA_256, bytes(64))],
                          signed_octets=OCTETS, id_payload=_idi())
    assert "does not fit" in got


def test_init_payloads_announce_hashes_and_our_cas():
    a = cfg("a", initiator=True)
    assert len(init_payloads(a, initiator=True)) == 1           # its CERTREQ goes in IKE_AUTH
    notify, certreq = init_payloads(a)
    assert notify.notify_type == NotifyType.SIGNATURE_HASH_ALGORITHMS
    assert struct.unpack("!3H", notify.data) == (2, 3, 4)
    assert isinstance(certreq, CertReqPayload) and certreq.encoding == CertEncoding.X509_CERT_SIG
    root = pki("ec").root
    spki = root.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    assert certreq.data == hashlib.sha1(spki).digest()
    assert init_payloads(IkeConfig("p", ("192.0.2.1",), ("192.0.2.2",), psk=b"x")) == []
    assert "PRIVATE" not in repr(a) and a.private_key.hex()[:20] not in repr(a)


def test_credentials_are_checked():
    a = cfg("a", initiator=True)
    other_key = pkcs8(new_key("p256"))
    bad = IkeConfig(**{**{f: getattr(a, f) for f in a.__dataclass_fields__}, "private_key": other_key})
    with pytest.raises(LocalError, match="does not belong to the certificate"):
        credentials(bad)
    not_ca = IkeConfig(**{**{f: getattr(a, f) for f in a.__dataclass_fields__},
                          "cacerts": (a.certs[0],)})
    with pytest.raises(LocalError, match="is not a CA certificate"):
        credentials(not_ca)


# -- identities and names -----------------------------------------------------------------------
def test_dn_text_round_trip_and_semantic_equality():
    text = "C=CH, O=ipsec-suite, CN=moon.example.org"
    encoded = certs.dn_from_text(text)
    assert encoded == dn("moon.example.org").public_bytes()
    assert certs.dn_text(encoded) == text
    printable = encoded.replace(b"\x0c\x0bipsec-suite", b"\x13\x0bipsec-suite")
    assert printable != encoded and certs.dn_equal(printable, encoded)
    assert not certs.dn_equal(encoded, certs.dn_from_text("C=CH, O=ipsec-suite, CN=sun"))
    assert certs.looks_like_dn(text) and not certs.looks_like_dn("moon.example.org")
    with pytest.raises(ValueError, match="not a distinguished name"):
        certs.dn_from_text("C=CH, =x")


def test_identity_matching_against_subject_alt_names():
    chain, _ = pki("ec").entity("moon.example.org", "p256", ip="2001:db8::1")
    cert = x509.load_der_x509_certificate(chain[0])
    assert certs.identity_matches(IdType.FQDN, b"MOON.example.org", cert)
    assert certs.identity_matches(IdType.RFC822_ADDR, b"admin@moon.example.org", cert)
    assert certs.identity_matches(IdType.IPV6_ADDR, ipaddress.ip_address("2001:db8::1").packed, cert)
    assert certs.identity_matches(IdType.DER_ASN1_DN, dn("moon.example.org").public_bytes(), cert)
    assert not certs.identity_matches(IdType.FQDN, b"sun.example.org", cert)
    assert not certs.identity_matches(IdType.IPV4_ADDR, bytes(4), cert)
    assert not certs.identity_matches(IdType.KEY_ID, b"moon", cert)
    assert certs.default_identity(cert) == "C=CH, O=ipsec-suite, CN=moon.example.org"


# -- connection files ---------------------------------------------------------------------------
def _write(path, data):
    path.write_bytes(data)
    return path.name


def _pem(cert) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def test_connection_file_keys(tmp_path):
    from ipsec_core.connections import load_connections

    ec_pki = pki("ec")
    key = new_key("p256")
    cert = issue("moon.example.org", key, "Test Root Intermediate", ec_pki.inter_key, ca=False,
                 san=[x509.DNSName("moon.example.org")])
    (tmp_path / "x509").mkdir()
    (tmp_path / "x509" / "moon.pem").write_bytes(_pem(cert) + _pem(ec_pki.inter))
    (tmp_path / "ca.pem").write_bytes(_pem(ec_pki.root))
    (tmp_path / "moon.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption()))
    (tmp_path / "moon.key").chmod(0o600)
    text = '''
[connections.c]
local_addrs = ["192.0.2.1"]
remote_addrs = ["192.0.2.2"]
auth = "pubkey"
certs = "x509/moon.pem"
cacerts = ["ca.pem"]
private_key = "moon.key"
'''
    conf = tmp_path / "c.toml"
    conf.write_text(text)
    [c] = load_connections(conf).values()
    assert c.auth == "pubkey" and len(c.certs) == 2 and c.cacerts == (der(ec_pki.root),)
    assert c.local_id == "C=CH, O=ipsec-suite, CN=moon.example.org"
    assert c.certs[0] == der(cert)
    credentials(c)
    # errors name the file and the key
    for change, key_name, what in (
            (("ca.pem", "missing.pem"), "cacerts", "no such file"),
            (('"moon.key"', '"ca.pem"'), "private_key", "no private key"),
            (('cacerts = ["ca.pem"]', 'cacerts = ["x509/moon.pem"]'), "cacerts", "not a CA certificate"),
    ):
        conf.write_text(text.replace(*change))
        with pytest.raises(ConfigError) as err:
            load_connections(conf)
        assert str(conf) in str(err.value) and key_name in str(err.value) and what in str(err.value), err.value
    other = tmp_path / "other.key"
    other.write_bytes(new_key("p256").private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    other.chmod(0o600)
    conf.write_text(text.replace('"moon.key"', '"other.key"'))
    with pytest.raises(ConfigError, match="private_key.*does not belong"):
        load_connections(conf)

"""Certificate authentication between `ipsec up` and strongSwan 5.9.8 in network namespaces.

The test makes a small PKI with `cryptography`: a root CA, an intermediate CA that issues our
certificate (we send it with ours in CERT payloads, strongSwan learns it from them), and
strongSwan's certificate issued by the root.  Each side in each role, with ECDSA (P-256) and
with RSA-2048 chains; then refusals seen by both sides: an identity our certificate does not
name (strongSwan refuses us), and a strongSwan certificate from a CA we do not trust (we refuse
it).  strongSwan's credentials lie in its swanctl x509/, x509ca/ and private/ directories
(beside its swanctl.conf); ours are named in the connection file, as a user writes them.

The certificates are small enough for IKE_AUTH to fit a 1500-byte path without IKE
fragmentation (RFC 7383; a larger chain depends on it).  Root, strongSwan and ping come from
tests/setup-system.sh; without them the tests skip with the reason.
"""
from __future__ import annotations

import datetime as dt
import re

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from ipsec_core.testing import issue_certificate

from . import strongswan as ss
from .test_up_strongswan import A_ID, B_ID, UpProcess, ping, skip_unless_ready

pytestmark = [pytest.mark.root, pytest.mark.slow]

NOW = dt.datetime.now(dt.timezone.utc)


def _key(kind: str):
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "CH"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ipsec-suite interop"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _issue(cn, key, issuer_cn, issuer_key, *, ca: bool, host: str | None = None):
    return issue_certificate(_name(cn), key, _name(issuer_cn), issuer_key, ca=ca, now=NOW,
                             san=[x509.DNSName(host)] if host else ())


def _pem(cert) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


def make_pki(tmp_path, kind: str, *, side: str, strongswan_ca: str = "own", keys=None):
    """Our files in tmp_path/ours (cert.pem holds ours and the intermediate); strongSwan's in
    the x509/, x509ca/ and private/ directories beside the swanctl.conf of its side ("A" or
    "B") of the harness's workdir tmp_path/ss.  strongswan_ca="stranger": strongSwan's
    certificate comes from a CA we do not trust.  `keys`: root, intermediate, ours and
    strongSwan's private keys (default: new ones of `kind`)."""
    root_key, inter_key, our_key, their_key = keys or tuple(_key(kind) for _ in range(4))
    root = _issue("Interop Root", root_key, "Interop Root", root_key, ca=True)
    inter = _issue("Interop Intermediate", inter_key, "Interop Root", root_key, ca=True)
    ours = _issue(A_ID, our_key, "Interop Intermediate", inter_key, ca=False, host=A_ID)
    issuer, issuer_key = ("Interop Root", root_key)
    if strongswan_ca == "stranger":
        stranger_key = _key(kind)
        _issue("Stranger Root", stranger_key, "Stranger Root", stranger_key, ca=True)
        issuer, issuer_key = ("Stranger Root", stranger_key)
    theirs = _issue(B_ID, their_key, issuer, issuer_key, ca=False, host=B_ID)
    mine = tmp_path / "ours"
    mine.mkdir()
    (mine / "cert.pem").write_bytes(_pem(ours) + _pem(inter))
    (mine / "ca.pem").write_bytes(_pem(root))
    (mine / "key.pem").write_bytes(_key_pem(our_key))
    (mine / "key.pem").chmod(0o600)
    swanctl = tmp_path / "ss" / side
    for sub in ("x509", "x509ca", "private"):
        (swanctl / sub).mkdir(parents=True)
    (swanctl / "x509" / "b.pem").write_bytes(_pem(theirs))
    (swanctl / "x509ca" / "root.pem").write_bytes(_pem(root))
    (swanctl / "private" / "b.pem").write_bytes(_key_pem(their_key))
    (swanctl / "private" / "b.pem").chmod(0o600)
    return mine


def our_conf(path, dir_, *, us, peer, local_id, start):
    path.write_text(f"""
[connections.net]
local_addrs = ["{us.ip}"]
remote_addrs = ["{peer.ip}"]
local_id = "{local_id}"
remote_id = "{B_ID}"
auth = "pubkey"
certs = "{dir_.name}/cert.pem"
cacerts = "{dir_.name}/ca.pem"
private_key = "{dir_.name}/key.pem"
proposals = ["aes128gcm16-prfsha256-ecp256"]
encap = true

[connections.net.children.net]
local_ts = ["{us.inner_ip}/32"]
remote_ts = ["{peer.inner_ip}/32"]
esp_proposals = ["aes128gcm16"]
start_action = "{start}"
""")
    return path


def strongswan_conn() -> dict:
    """strongSwan's side: its certificate from x509/, ours checked against x509ca/."""
    return {"auth": "pubkey", "extra": {"local": {"auth": "pubkey", "id": B_ID, "certs": "b.pem"},
                                        "remote": {"auth": "pubkey", "id": A_ID}}}


def _pings(pair, up):
    a_or_b = (pair.net.a, pair.net.b)
    for side, other in (a_or_b, a_or_b[::-1]):
        result = ping(pair.net, side, other.inner_ip, count=2)
        assert result.returncode == 0, result.stdout + result.stderr + up.log


@pytest.mark.parametrize("kind", ["ecdsa", "rsa"])
def test_we_initiate_with_certificates(tmp_path, kind):
    skip_unless_ready()
    mine = make_pki(tmp_path, kind, side="B")
    with ss.StrongswanPair(start_a=False, conn_b=strongswan_conn(), workdir=tmp_path / "ss",
                           keep_workdir=True) as pair:
        a, b = pair.net.a, pair.net.b
        up = UpProcess(our_conf(tmp_path / "a.toml", mine, us=a, peer=b, local_id=A_ID, start="start"), a.netns)
        try:
            up.wait_for(r"CHILD SA net installed")
            sa = pair.b.wait_established(ike="net", child="net", timeout=10)
            assert sa["remote-id"] == A_ID and sa["local-id"] == B_ID
            _pings(pair, up)
            up.stop()
        finally:
            up.kill()
        log = pair.b.log()
        assert "authentication of 'a.example.org' with " in log
        assert re.search(r"using trusted intermediate ca certificate|using certificate \"C=CH, O=ipsec-suite "
                         r"interop, CN=a.example.org\"", log)


@pytest.mark.parametrize("kind", ["ecdsa", "rsa"])
def test_strongswan_initiates_with_certificates(tmp_path, kind):
    skip_unless_ready()
    mine = make_pki(tmp_path, kind, side="A")
    # strongSwan in namespace a initiates to us in b; the identities stay those of the
    # certificates (strongSwan is b.example.org, we are a.example.org)
    with ss.StrongswanPair(start_b=False, conn_a=strongswan_conn(), workdir=tmp_path / "ss",
                           keep_workdir=True) as pair:
        a, b = pair.net.a, pair.net.b
        up = UpProcess(our_conf(tmp_path / "b.toml", mine, us=b, peer=a, local_id=A_ID, start="none"), b.netns)
        try:
            up.wait_for(r"up: net on ")
            pair.initiate(timeout=10)
            up.wait_for(r"CHILD SA net installed")
            assert re.search(r"IKE SA net\[\d+\] established with 192\.0\.2\.1 .*b\.example\.org", up.log) \
                or "b.example.org" in up.log, up.log
            _pings(pair, up)
            up.stop()
        finally:
            up.kill()


def test_identity_not_in_our_certificate_is_refused_by_strongswan(tmp_path):
    skip_unless_ready()
    mine = make_pki(tmp_path, "ecdsa", side="B")
    conn = strongswan_conn()
    conn["extra"]["remote"]["id"] = "c.example.org"
    with ss.StrongswanPair(start_a=False, conn_b=conn, workdir=tmp_path / "ss",
                           keep_workdir=True) as pair:
        a, b = pair.net.a, pair.net.b
        up = UpProcess(our_conf(tmp_path / "a.toml", mine, us=a, peer=b, local_id="c.example.org",
                                start="start"), a.netns)
        try:
            up.wait_for(r"IKE SA net failed: .*AUTHENTICATION_FAILED")
            up.stop()
        finally:
            up.kill()
        log = pair.b.log()
        assert re.search(r"N\(AUTH_FAILED\)", log), log[-3000:]
        assert pair.b.list_sas() == []


def test_strongswan_certificate_from_an_untrusted_ca_is_refused(tmp_path):
    skip_unless_ready()
    mine = make_pki(tmp_path, "ecdsa", side="A", strongswan_ca="stranger")
    with ss.StrongswanPair(start_b=False, conn_a=strongswan_conn(), workdir=tmp_path / "ss",
                           keep_workdir=True) as pair:
        a, b = pair.net.a, pair.net.b
        up = UpProcess(our_conf(tmp_path / "b.toml", mine, us=b, peer=a, local_id=A_ID, start="none"), b.netns)
        try:
            up.wait_for(r"up: net on ")
            with pytest.raises(ss.StrongswanError):
                pair.a.initiate(child="net", timeout=10)
            up.wait_for(r"IKE SA net failed: .*AUTHENTICATION_FAILED.*not trusted|not trusted.*AUTHENTICATION_FAILED")
            up.stop()
        finally:
            up.kill()
        log = pair.a.log()
        assert re.search(r"received AUTHENTICATION_FAILED notify error|N\(AUTH_FAILED\)", log), log[-3000:]
        assert pair.a.list_sas() == []

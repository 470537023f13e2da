"""IKE fragmentation (RFC 7383) between `ipsec up` and strongSwan 5.9.8, both directions.

A certificate chain of RSA-4096 certificates (a root, an intermediate that issues ours, sent
with ours in CERT payloads, and strongSwan's certificate from the root) makes IKE_AUTH larger
than one 1280-byte datagram (the fragment_size both sides use by default) in each direction:
ours carries two certificates and a 512-byte signature, strongSwan's one certificate and a
512-byte signature.  strongSwan runs with `fragmentation = yes`.  Each side in each role: the
request goes in fragments one way, the response the other; strongSwan's log shows it
reassembling ours and splitting its own, ours shows both, and pings cross the tunnel.  Root,
strongSwan and ping come from tests/setup-system.sh; without them the tests skip with the
reason.
"""
from __future__ import annotations

import functools
import re

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from . import strongswan as ss
from .test_certs_strongswan import _pings, make_pki, our_conf, strongswan_conn
from .test_up_strongswan import A_ID, B_ID, UpProcess, skip_unless_ready

pytestmark = [pytest.mark.root, pytest.mark.slow]

RSA_BITS = 4096
FRAGMENT_SIZE = 1280        # ours and charon's default: the largest IP datagram of a fragment


@functools.lru_cache(maxsize=1)
def _keys():
    """root, intermediate, ours, strongSwan's: RSA-4096 keys are slow to make, so once per run."""
    return tuple(rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS) for _ in range(4))


def make_big_pki(tmp_path, *, side: str):
    """`make_pki` with the RSA-4096 keys."""
    return make_pki(tmp_path, "rsa", side=side, keys=_keys())


def fragmenting_conn() -> dict:
    conn = strongswan_conn()
    conn["fragmentation"] = "yes"
    return conn


def _datagrams(log: str, verb: str, what: str) -> list[int]:
    """Sizes of the IKE datagrams our -v log says were sent/received as `what`."""
    return [int(m.group(1)) for m in re.finditer(
        rf"{verb} packet: .*\({re.escape(what)}, (\d+) bytes\)", log)]


def _assert_fragmented(up_log: str, charon_log: str, *, ours: str, theirs: str) -> None:
    sent, received = _datagrams(up_log, "sending", ours), _datagrams(up_log, "received", theirs)
    # each side's message in two or more datagrams, none over the fragment size (IPv4 + UDP +
    # non-ESP marker come on top of the IKE message)
    assert len(sent) >= 2 and max(sent) <= FRAGMENT_SIZE - 20 - 8 - 4, (sent, up_log[-3000:])
    assert len(received) >= 2 and max(received) <= FRAGMENT_SIZE - 20 - 8 - 4, (received, up_log[-3000:])
    assert re.search(r"received fragment #\d+ of \d+, reassembled fragmented IKE message", charon_log), \
        charon_log[-3000:]
    split = re.search(r"splitting IKE message \(\d+ bytes\) into (\d+) fragments", charon_log)
    assert split and int(split.group(1)) == len(received), charon_log[-3000:]


def test_we_initiate_and_both_directions_fragment(tmp_path):
    skip_unless_ready()
    mine = make_big_pki(tmp_path, side="B")
    with ss.StrongswanPair(start_a=False, conn_b=fragmenting_conn(), workdir=tmp_path / "ss",
                           keep_workdir=True) as pair:
        a, b = pair.net.a, pair.net.b
        up = UpProcess(our_conf(tmp_path / "a.toml", mine, us=a, peer=b, local_id=A_ID, start="start"), a.netns)
        try:
            up.wait_for(r"CHILD SA net installed", timeout=30)
            sa = pair.b.wait_established(ike="net", child="net", timeout=10)
            assert sa["remote-id"] == A_ID
            _pings(pair, up)
            up.stop()
        finally:
            up.kill()
        _assert_fragmented(up.log, pair.b.log(), ours="IKE_AUTH request 1", theirs="IKE_AUTH response 1")


def test_strongswan_initiates_and_both_directions_fragment(tmp_path):
    skip_unless_ready()
    mine = make_big_pki(tmp_path, side="A")
    with ss.StrongswanPair(start_b=False, conn_a=fragmenting_conn(), workdir=tmp_path / "ss",
                           keep_workdir=True) as pair:
        a, b = pair.net.a, pair.net.b
        up = UpProcess(our_conf(tmp_path / "b.toml", mine, us=b, peer=a, local_id=A_ID, start="none"), b.netns)
        try:
            up.wait_for(r"up: net on ")
            pair.initiate(timeout=20)
            up.wait_for(r"CHILD SA net installed")
            _pings(pair, up)
            up.stop()
        finally:
            up.kill()
        _assert_fragmented(up.log, pair.a.log(), ours="IKE_AUTH response 1", theirs="IKE_AUTH request 1")

"""Rekeying in memory: CHILD SA and IKE SA rekeys (RFC 7296 2.8, 2.18) from either side, on
command, on time and on the data plane's lifetimes; retransmissions during a rekey;
TEMPORARY_FAILURE while another rekey runs; make-before-break as the events show it;
reauthentication; childless IKE SAs (RFC 6023) and several CHILD SAs per IKE SA."""
from __future__ import annotations

import dataclasses

import pytest

from ipsec_core.connections import connections_from_dict
from ipsec_core.ike.config import ChildConfig
from ipsec_core.ike.events import (ChildSaDeleted, ChildSaInstalled, IkeSaDeleted, IkeSaEstablished,
                                   IkeSaRekeyed)
from ipsec_core.ike.session import IkeState

from .test_session import A_NET, B_NET, REGISTRY, Pair, _ipv4, config, ts, up


def with_child(cfg, **child_kw):
    child = dataclasses.replace(cfg.children[0], **child_kw)
    return dataclasses.replace(cfg, children=(child,))


def live(endpoint):
    return [s for s in endpoint.sessions() if not s.finished]


def traffic(pair, *, count: int = 2) -> None:
    """Packets both ways through every CHILD SA both sides hold now."""
    import os
    import struct

    from ipsec_core.dataplane.sa import SecurityAssociation
    a_sa, b_sa = assert_in_step(pair)
    for a_child in a_sa.children.values():
        b_child = next(c for c in b_sa.children.values() if c.spi_in == a_child.spi_out)
        sas = [SecurityAssociation(c, registry=REGISTRY, now=0.0) for c in (
            a_child.outbound, b_child.inbound, b_child.outbound, a_child.inbound)]
        src = str(a_child.local_ts[0].start_address + 7)
        dst = str(a_child.remote_ts[0].start_address + 9)
        for _ in range(count):
            payload = struct.pack("!HHHH", 1000, 53, 16, 0) + os.urandom(8)
            there, back = _ipv4(src, dst, payload), _ipv4(dst, src, payload)
            assert sas[1].unprotect(sas[0].protect(there, now=0.0), now=0.0) == there
            assert sas[3].unprotect(sas[2].protect(back, now=0.0), now=0.0) == back


def assert_in_step(pair):
    """One live IKE SA per side with the same SPIs, and the same CHILD SAs (SPIs crossed)."""
    [a], [b] = live(pair.a), live(pair.b)
    assert (a.spi_i, a.spi_r) == (b.spi_i, b.spi_r)
    assert a.state is b.state is IkeState.ESTABLISHED
    assert {(c.spi_in, c.spi_out) for c in a.children.values()} == \
        {(c.spi_out, c.spi_in) for c in b.children.values()}
    return a, b


@pytest.mark.parametrize("side", ["a", "b"])
def test_ike_rekey_moves_children_and_deletes_old(side):
    pair = up(Pair(config("a", initiator=True), config("b", initiator=False)))
    old_a, old_b = assert_in_step(pair)
    old_spis = (old_a.spi_i, old_a.spi_r)
    old_sk_d = old_a.keys.sk_d               # a deleted IKE SA drops its keys
    children = {(c.spi_in, c.spi_out) for c in old_a.children.values()}
    getattr(pair, side).rekey_ike("a" if side == "a" else "b", now=pair.now)
    pair.pump()
    a, b = assert_in_step(pair)
    assert (a.spi_i, a.spi_r) != old_spis
    assert {(c.spi_in, c.spi_out) for c in a.children.values()} == children
    assert a.initiator == (side == "a") and b.initiator == (side == "b")
    for s in "ab":
        [rekeyed] = pair.of(s, IkeSaRekeyed)
        assert (rekeyed.old_spi_i, rekeyed.old_spi_r) == tuple(int.from_bytes(x, "big") for x in old_spis)
        assert [e.reason for e in pair.of(s, IkeSaDeleted)] == ["rekeyed"]
        assert not pair.of(s, ChildSaDeleted)
    assert a.keys.sk_d != old_sk_d and a.keys.sk_d == b.keys.sk_d
    assert old_a.keys is None and old_a._sk.wiped
    traffic(pair)
    # the new IKE SA works: a CHILD SA rekey (keys from the new SK_d), then a delete
    pair.b.rekey_child("b", "net", now=pair.now)
    pair.pump()
    assert_in_step(pair)
    traffic(pair)
    pair.a.close(now=pair.now)
    pair.pump()
    assert not pair.a.active() and not pair.b.active()


def test_ike_rekey_with_another_proposal():
    a = config("a", initiator=True, proposals=("aes128gcm16-prfsha256-ecp256", "aes256-sha384-modp2048"))
    b = config("b", initiator=False, proposals=("aes128gcm16-prfsha256-ecp256", "aes256-sha384-modp2048"))
    pair = up(Pair(a, b))
    [sa] = live(pair.a)
    sa._proposal_texts.reverse()             # the rekey offers the CBC suite first
    pair.a.rekey_ike("a", now=pair.now)
    pair.pump()
    a_sa, _ = assert_in_step(pair)
    assert a_sa.suite.keyword.startswith("aes256-sha384")
    traffic(pair)


def test_ike_rekey_on_time_and_hard_end():
    a = dataclasses.replace(config("a", initiator=True), rekey_time=100.0, rand_time=0.0)
    b = dataclasses.replace(config("b", initiator=False), rekey_time=0.0)
    pair = up(Pair(a, b))
    first = live(pair.a)[0]
    assert first.rekey_at == pytest.approx(100.0) and first.expire_at == pytest.approx(110.0)
    pair.tick(99.0)
    assert not pair.of("a", IkeSaRekeyed)
    pair.tick(1.0)
    assert len(pair.of("a", IkeSaRekeyed)) == len(pair.of("b", IkeSaRekeyed)) == 1
    pair.tick(100.0)
    assert len(pair.of("a", IkeSaRekeyed)) == 2
    assert_in_step(pair)
    # a rekey that cannot happen ends the IKE SA at rekey_time + over_time
    [sa] = live(pair.a)
    while pair.now < sa.expire_at:
        pair.tick(1.0, drop=lambda side, d: True)
    assert sa.state is IkeState.DELETING     # its delete is out (unanswered here)
    for _ in range(200):
        pair.tick(1.0, drop=lambda side, d: True)
    assert sa.finished and pair.of("a", IkeSaDeleted)[-1].reason == "peer not responding"


@pytest.mark.parametrize("what", ["child", "ike"])
@pytest.mark.parametrize("lost", ["request", "response"])
def test_rekey_during_retransmission(what, lost):
    pair = up(Pair(config("a", initiator=True), config("b", initiator=False)))
    dropped = []

    def drop(side, d):
        wanted = (side == "a") if lost == "request" else (side == "b")
        if wanted and d.data[18] == 36 and not dropped:
            dropped.append(d)
            return True
        return False
    if what == "child":
        pair.a.rekey_child("a", "net", now=pair.now)
    else:
        pair.a.rekey_ike("a", now=pair.now)
    pair.pump(drop=drop)
    assert dropped
    pair.tick(4.0)                           # the retransmission
    assert_in_step(pair)
    installs = 2 if what == "child" else 1
    assert len(pair.of("a", ChildSaInstalled)) == len(pair.of("b", ChildSaInstalled)) == installs
    traffic(pair)


def test_make_before_break_order():
    pair = up(Pair(config("a", initiator=True), config("b", initiator=False)))
    old = pair.of("b", ChildSaInstalled)[0]
    pair.a.rekey_child("a", "net", now=pair.now)
    pair.pump()
    b_events = [e for e in pair.events["b"] if isinstance(e, (ChildSaInstalled, ChildSaDeleted))]
    # responder: the new SA is installed with its outbound SA not yet used; the old one's
    # delete comes after it
    assert isinstance(b_events[1], ChildSaInstalled) and not b_events[1].outbound_active
    assert b_events[1].rekeyed == (old.inbound.spi, old.outbound.spi)
    assert isinstance(b_events[2], ChildSaDeleted) and b_events[2].reason == "rekeyed"
    a_events = [e for e in pair.events["a"] if isinstance(e, (ChildSaInstalled, ChildSaDeleted))]
    assert a_events[1].outbound_active and a_events[2].reason == "rekeyed"
    [b_child] = live(pair.b)[0].children.values()
    assert b_child.outbound_active


def test_soft_and_hard_lifetime_reports():
    pair = up(Pair(config("a", initiator=True), config("b", initiator=False)))
    first = pair.of("b", ChildSaInstalled)[0]
    pair.b.child_soft_expired(first.outbound.spi, now=pair.now)       # by the outbound SPI
    pair.pump()
    assert len(pair.of("a", ChildSaInstalled)) == 2
    second = pair.of("a", ChildSaInstalled)[-1]
    pair.a.child_soft_expired(second.inbound.spi, now=pair.now)       # by the inbound SPI
    pair.pump()
    assert len(pair.of("a", ChildSaInstalled)) == 3
    assert_in_step(pair)
    third = pair.of("a", ChildSaInstalled)[-1]
    pair.a.child_hard_expired(third.inbound.spi, now=pair.now)
    pair.pump()
    assert pair.of("a", ChildSaDeleted)[-1].reason == "expired"
    assert not live(pair.a)[0].children and not live(pair.b)[0].children


def test_byte_limits_reach_the_sa_configs():
    a = with_child(config("a", initiator=True), rekey_bytes=1000, rekey_packets=10)
    pair = up(Pair(a, config("b", initiator=False)))
    child = pair.of("a", ChildSaInstalled)[0]
    for sa in (child.inbound, child.outbound):
        assert (sa.soft.bytes, sa.soft.packets) == (1000, 10)
        assert (sa.hard.bytes, sa.hard.packets) == (1100, 11)


def test_hard_time_deletes_the_child():
    a = with_child(config("a", initiator=True), rekey_time=0.0, life_time=10.0)
    pair = up(Pair(a, config("b", initiator=False)))
    pair.tick(10.0)
    assert [e.reason for e in pair.of("a", ChildSaDeleted)] == ["expired"]
    assert [e.reason for e in pair.of("b", ChildSaDeleted)] == ["deleted by peer"]


def test_child_rekey_every_six_seconds_from_a_connection_file():
    raw = {"local_addrs": "192.0.2.1", "remote_addrs": "192.0.2.2", "psk": "a long shared secret!!",
           "local_id": "a.example.org", "encap": True, "proposals": "aes128gcm16-prfsha256-ecp256",
           "children": {"net": {"local_ts": A_NET, "remote_ts": B_NET, "rekey_time": "6s",
                                "esp_proposals": "aes128gcm16", "start_action": "start"}}}
    a = connections_from_dict({"connections": {"a": raw}})["a"]
    pair = up(Pair(a, config("b", initiator=False)))
    times = []
    for _ in range(60):
        before = len(pair.of("a", ChildSaInstalled))
        pair.tick(0.5)
        if len(pair.of("a", ChildSaInstalled)) > before:
            times.append(pair.now)
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert len(times) >= 4 and all(5.0 <= g <= 6.5 for g in gaps), times
    assert len(live(pair.a)[0].children) == 1


def test_temporary_failure_while_the_ike_sa_rekeys():
    pair = up(Pair(config("a", initiator=True), config("b", initiator=False)))
    pair.a.rekey_ike("a", now=pair.now)      # request out, not delivered yet
    [ike_rekey] = pair.a.datagrams_to_send(now=pair.now)
    pair.b.rekey_child("b", "net", now=pair.now)
    [child_rekey] = pair.b.datagrams_to_send(now=pair.now)
    # the two cross: each side is busy with its own and answers TEMPORARY_FAILURE
    for ep, d in ((pair.a, child_rekey), (pair.b, ike_rekey)):
        ep.receive_datagram(d.data, remote=d.local, local=d.remote, nat_t=d.nat_t, now=pair.now)
    pair.pump()
    assert not pair.of("a", IkeSaRekeyed) and len(pair.of("a", ChildSaInstalled)) == 1
    for _ in range(120):                     # both retry 2..5 s later (again if they collide)
        pair.tick(0.25)
        if pair.of("a", IkeSaRekeyed) and len(pair.of("a", ChildSaInstalled)) == 2:
            break
    assert len(pair.of("a", IkeSaRekeyed)) == 1 and len(pair.of("a", ChildSaInstalled)) == 2
    assert_in_step(pair)
    traffic(pair)


def test_temporary_failure_for_a_child_being_deleted():
    pair = up(Pair(config("a", initiator=True), config("b", initiator=False)))
    [b_sa] = live(pair.b)
    spi = next(iter(b_sa.children))
    b_sa.delete_child(spi, now=pair.now)
    pair.b._collect(b_sa)
    [delete] = pair.b.datagrams_to_send(now=pair.now)
    pair.a.rekey_child("a", "net", now=pair.now)
    [rekey] = pair.a.datagrams_to_send(now=pair.now)
    pair.b.receive_datagram(rekey.data, remote=rekey.local, local=rekey.remote, nat_t=True, now=pair.now)
    [answer] = pair.b.datagrams_to_send(now=pair.now)
    a_sa = live(pair.a)[0]
    pair.a.receive_datagram(delete.data, remote=delete.local, local=delete.remote, nat_t=True, now=pair.now)
    pair.a.receive_datagram(answer.data, remote=answer.local, local=answer.remote, nat_t=True, now=pair.now)
    pair.pump()
    assert [e.reason for e in pair.of("a", ChildSaDeleted)] == ["deleted by peer"]
    assert not a_sa.children and not b_sa.children
    assert len(pair.of("a", ChildSaInstalled)) == 1


def test_reauthentication_is_make_before_break():
    a = dataclasses.replace(config("a", initiator=True), reauth_time=50.0, rekey_time=0.0, rand_time=0.0)
    pair = up(Pair(a, config("b", initiator=False)))
    pair.tick(50.0)
    assert len(pair.of("a", IkeSaEstablished)) == 2 and len(pair.of("b", IkeSaEstablished)) == 2
    kinds = [(type(e).__name__, getattr(e, "reason", None)) for e in pair.events["a"]
             if isinstance(e, (ChildSaInstalled, ChildSaDeleted, IkeSaDeleted))]
    assert kinds == [("ChildSaInstalled", None), ("ChildSaInstalled", None),
                     ("ChildSaDeleted", "reauthenticated"), ("IkeSaDeleted", "reauthenticated")]
    assert_in_step(pair)
    traffic(pair)


def test_childless_ike_sa_then_children():
    a = dataclasses.replace(config("a", initiator=True), children=(
        ChildConfig("net", ts(A_NET), ts(B_NET), esp_proposals=("aes128gcm16",)),))
    pair = up(Pair(a, config("b", initiator=False)))
    assert pair.of("a", IkeSaEstablished) and pair.of("b", IkeSaEstablished)
    assert not pair.of("a", ChildSaInstalled)
    auth = next(d for d in pair.sent["a"] if d.data[18] == 35)
    assert len(auth.data) < 200                 # no SA, TSi, TSr
    live(pair.a)[0].create_child("net", now=pair.now)
    pair.a._collect(live(pair.a)[0])
    pair.pump()
    assert len(pair.of("a", ChildSaInstalled)) == 1
    traffic(pair)


def test_no_childless_with_a_peer_that_refuses_it():
    a = dataclasses.replace(config("a", initiator=True), children=(
        ChildConfig("net", ts(A_NET), ts(B_NET), esp_proposals=("aes128gcm16",)),))
    b = dataclasses.replace(config("b", initiator=False), childless="never")
    pair = up(Pair(a, b))
    assert len(pair.of("a", ChildSaInstalled)) == 1       # the first child came with IKE_AUTH


def test_several_children_each_with_its_own_proposals():
    nets = [("198.51.100.0/25", "203.0.113.0/25", "aes128gcm16", "aes128gcm16"),
            ("198.51.100.128/25", "203.0.113.128/25", "aes256-sha256", "aes256-sha256"),
            ("192.0.2.64/26", "192.0.2.128/26", "chacha20poly1305", "chacha20poly1305")]

    def children(initiator):
        out = []
        for i, (mine, theirs, esp, _) in enumerate(nets):
            local, remote = (mine, theirs) if initiator else (theirs, mine)
            out.append(ChildConfig(f"c{i}", ts(local), ts(remote), esp_proposals=(esp,),
                                   start_action="start" if initiator else "none",
                                   backend="reference" if i == 2 else None))
        return tuple(out)
    a = dataclasses.replace(config("a", initiator=True), children=children(True))
    b = dataclasses.replace(config("b", initiator=False), children=children(False))
    pair = up(Pair(a, b))
    installed = pair.of("a", ChildSaInstalled)
    assert [(e.child, e.proposal) for e in installed] == [("c0", "aes128gcm16"), ("c1", "aes256-sha256"),
                                                         ("c2", "chacha20poly1305")]
    assert installed[2].outbound.backend == "reference"
    assert [e.local_ts for e in installed] == [(n[0],) for n in nets]
    a_sa, b_sa = assert_in_step(pair)
    assert len(a_sa.children) == 3
    pair.a.rekey_child("a", "c1", now=pair.now)
    pair.pump()
    assert len(assert_in_step(pair)[0].children) == 3


def test_child_sa_not_found_makes_a_new_one():
    pair = up(Pair(config("a", initiator=True), config("b", initiator=False)))
    [b_sa] = live(pair.b)
    [child] = list(b_sa.children.values())
    b_sa._remove_child(child, "lost", now=pair.now)     # B forgot it without telling A
    pair.b._collect(b_sa)
    pair.a.rekey_child("a", "net", now=pair.now)
    pair.pump()
    assert pair.of("a", ChildSaDeleted)[-1].reason == "peer lost it"
    assert_in_step(pair)
    assert len(live(pair.a)[0].children) == 1
    traffic(pair)

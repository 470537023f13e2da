"""Simultaneous rekeys (RFC 7296 2.8.1, 2.25), with the cases of strongSwan's
test_child_rekey.c and test_ike_rekey.c: both peers rekey the same CHILD SA or the IKE SA at once
and the SA made with the lowest of the four nonces is deleted by its maker, the other peer
deletes the old one; the same with a delayed response or request; a rekey crossing a delete.

Nonces are drawn in a fixed order (A's request, B's request, B's response to A, A's response
to B); each case makes a different one of the four the lowest by its first octet."""
from __future__ import annotations

import os

import pytest

from ipsec_core.crypto.registry import get_registry
from ipsec_core.ike.endpoint import IkeEndpoint
from ipsec_core.ike.events import ChildSaDeleted, IkeSaDeleted, IkeSaRekeyed
from ipsec_core.ike.session import NONCE_BYTES, REKEYED_TIMEOUT_S, IkeState

from .test_rekey import assert_in_step, live, traffic
from .test_session import Pair, config, up

#: which nonce is lowest -> whether A's exchange (nonces 0 and 2) made the redundant SA
CASES = [(0, True), (1, False), (2, True), (3, False)]


class Nonces:
    """os.urandom, except that the next nonces start with the queued first octets."""

    def __init__(self):
        self.first: list[int] = []

    def __call__(self, n: int) -> bytes:
        data = os.urandom(n)
        if n == NONCE_BYTES and self.first:
            data = bytes([self.first.pop(0)]) + data[1:]
        return data


def pair_with_nonces():
    nonces = Nonces()
    pair = Pair(config("a", initiator=True), config("b", initiator=False))
    pair.a = IkeEndpoint([pair.a.configs["a"]], registry=get_registry(), now=0.0, random=nonces)
    pair.b = IkeEndpoint([pair.b.configs["b"]], registry=get_registry(), now=0.0, random=nonces)
    up(pair)
    return pair, nonces


def lowest_at(index: int) -> list[int]:
    first = [0xFF] * 4
    first[index] = 0x00
    return first


def out(ep, pair):
    return ep.datagrams_to_send(now=pair.now)


def deliver(ep, datagrams, pair):
    for d in datagrams:
        ep.receive_datagram(d.data, remote=d.local, local=d.remote, nat_t=d.nat_t, now=pair.now)


def child_reasons(pair, side):
    return sorted(e.reason for e in pair.of(side, ChildSaDeleted))


@pytest.mark.parametrize(("lowest", "a_lost"), CASES, ids=[f"nonce{i}-lowest" for i, _ in CASES])
def test_child_rekey_collision(lowest, a_lost):
    pair, nonces = pair_with_nonces()
    [old_a] = live(pair.a)[0].children.values()
    nonces.first = lowest_at(lowest)
    pair.a.rekey_child("a", "net", now=pair.now)
    pair.b.rekey_child("b", "net", now=pair.now)
    pair.pump()                  # the requests cross; each side answers the other's
    a, b = assert_in_step(pair)
    [kept] = a.children.values()
    assert kept.outbound_active and next(iter(b.children.values())).outbound_active
    assert child_reasons(pair, "a") == child_reasons(pair, "b") == ["rekey collision", "rekeyed"]
    old_deleted = [e for e in pair.of("a", ChildSaDeleted) if e.inbound_spi == old_a.spi_in]
    assert [e.reason for e in old_deleted] == ["rekeyed"]
    # the loser sent the delete of the redundant SA, the winner the delete of the old one
    loser, winner = ("a", "b") if a_lost else ("b", "a")
    assert any(e.reason == "rekey collision" for e in pair.of(loser, ChildSaDeleted))
    traffic(pair)


@pytest.mark.parametrize(("lowest", "a_lost"), [(1, False), (3, False)])
def test_child_rekey_collision_delayed_response(lowest, a_lost):
    """B wins; B's delete of the old SA reaches A before B's response to A's rekey."""
    pair, nonces = pair_with_nonces()
    nonces.first = lowest_at(0 if lowest == 1 else 2)       # make A's exchange the loser
    nonces.first[0 if lowest == 1 else 2] = 0x00
    pair.a.rekey_child("a", "net", now=pair.now)
    pair.b.rekey_child("b", "net", now=pair.now)
    req_a, req_b = out(pair.a, pair), out(pair.b, pair)
    deliver(pair.b, req_a, pair)
    resp_to_a = out(pair.b, pair)                            # held back
    deliver(pair.a, req_b, pair)
    deliver(pair.b, out(pair.a, pair), pair)                 # A's answer: B wins, deletes old
    delete_old = out(pair.b, pair)
    deliver(pair.a, delete_old, pair)
    deliver(pair.b, out(pair.a, pair), pair)
    deliver(pair.a, resp_to_a, pair)                         # now A learns it lost
    pair.pump()
    assert_in_step(pair)
    assert child_reasons(pair, "a") == child_reasons(pair, "b") == ["rekey collision", "rekeyed"]
    traffic(pair)


def test_child_rekey_collision_delayed_request():
    """A's exchange completes before B's request arrives: A saw no collision, deletes the old SA
    and answers B's late request with TEMPORARY_FAILURE; B keeps A's SA."""
    pair, nonces = pair_with_nonces()
    pair.a.rekey_child("a", "net", now=pair.now)
    pair.b.rekey_child("b", "net", now=pair.now)
    req_a, req_b = out(pair.a, pair), out(pair.b, pair)
    deliver(pair.b, req_a, pair)
    deliver(pair.a, out(pair.b, pair), pair)                 # A done: its delete goes out
    deliver(pair.b, out(pair.a, pair), pair)
    deliver(pair.a, out(pair.b, pair), pair)
    deliver(pair.a, req_b, pair)                             # late: TEMPORARY_FAILURE
    pair.pump()
    assert_in_step(pair)
    assert child_reasons(pair, "a") == child_reasons(pair, "b") == ["rekeyed"]
    assert len([e for e in pair.events["b"] if type(e).__name__ == "ChildSaInstalled"]) == 2
    traffic(pair)


def test_child_rekey_crossing_a_delete():
    pair, _ = pair_with_nonces()
    [b_sa] = live(pair.b)
    b_sa.delete_child(next(iter(b_sa.children)), now=pair.now)
    pair.b._collect(b_sa)
    pair.a.rekey_child("a", "net", now=pair.now)
    pair.pump()
    assert not live(pair.a)[0].children and not live(pair.b)[0].children
    assert [e.reason for e in pair.of("a", ChildSaDeleted)] == ["deleted by peer"]


def ike_spis(pair, side):
    return [(s.spi_i, s.spi_r) for s in live(getattr(pair, side))]


@pytest.mark.parametrize(("lowest", "a_lost"), CASES, ids=[f"nonce{i}-lowest" for i, _ in CASES])
def test_ike_rekey_collision(lowest, a_lost):
    pair, nonces = pair_with_nonces()
    [old] = live(pair.a)
    children = {(c.spi_in, c.spi_out) for c in old.children.values()}
    nonces.first = lowest_at(lowest)
    pair.a.rekey_ike("a", now=pair.now)
    pair.b.rekey_ike("b", now=pair.now)
    pair.pump()
    a, b = assert_in_step(pair)
    assert {(c.spi_in, c.spi_out) for c in a.children.values()} == children
    # the survivor is the winner's: its initiator is the winner
    assert a.initiator == (not a_lost)
    for side in "ab":
        assert len(pair.of(side, IkeSaRekeyed)) == 1
        assert sorted(e.reason for e in pair.of(side, IkeSaDeleted)) == ["rekey collision", "rekeyed"]
        assert not pair.of(side, ChildSaDeleted)
    traffic(pair)
    pair.b.rekey_child("b", "net", now=pair.now)          # the survivor works
    pair.pump()
    assert_in_step(pair)
    traffic(pair)


def test_ike_rekey_collision_delayed_response():
    """B wins and deletes the old IKE SA before A sees B's response: A takes B's new IKE SA;
    B deletes A's redundant one itself when no delete comes."""
    pair, nonces = pair_with_nonces()
    nonces.first = lowest_at(0)                              # A's exchange loses
    pair.a.rekey_ike("a", now=pair.now)
    pair.b.rekey_ike("b", now=pair.now)
    req_a, req_b = out(pair.a, pair), out(pair.b, pair)
    deliver(pair.b, req_a, pair)
    resp_to_a = out(pair.b, pair)                            # held back
    deliver(pair.a, req_b, pair)
    deliver(pair.b, out(pair.a, pair), pair)                 # B wins: deletes the old SA
    deliver(pair.a, out(pair.b, pair), pair)
    deliver(pair.b, out(pair.a, pair), pair)
    deliver(pair.a, resp_to_a, pair)                         # for a deleted SA: ignored
    pair.pump()
    [a] = live(pair.a)
    assert a.state is IkeState.ESTABLISHED and not a.initiator
    assert len(live(pair.b)) == 2                            # B's copy of A's redundant SA
    pair.tick(REKEYED_TIMEOUT_S)
    assert_in_step(pair)
    traffic(pair)


def test_ike_rekey_crossing_an_ike_delete():
    pair, _ = pair_with_nonces()
    pair.a.rekey_ike("a", now=pair.now)
    pair.b.terminate("b", now=pair.now)
    pair.pump()
    assert not pair.a.active() and not pair.b.active()
    assert [e.reason for e in pair.of("a", IkeSaDeleted)] == ["deleted by peer"]

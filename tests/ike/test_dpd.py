"""Dead peer detection in memory: a liveness check only after dpd_delay without anything heard
(IKE or ESP, which the driver reports with `traffic_received`), dpd_timeout, and each
dpd_action (clear, restart, trap) once the peer is found dead."""
from __future__ import annotations

import dataclasses

import pytest

from ipsec_core.ike.events import ChildSaDeleted, ChildSaInstalled, ChildSaTrapped, IkeSaDeleted

from .test_rekey import live
from .test_session import Pair, config, up

INFORMATIONAL = 37


def dpd_pair(action="clear", **kw):
    a = config("a", initiator=True)
    a = dataclasses.replace(a, dpd_delay=10.0, children=(dataclasses.replace(a.children[0], dpd_action=action),), **kw)
    return up(Pair(a, config("b", initiator=False)))


def checks_sent(pair):
    return [d for d in pair.sent["a"] if d.data[18] == INFORMATIONAL and not d.data[19] & 0x20]


def test_liveness_check_only_when_nothing_came_in():
    pair = dpd_pair()
    inbound = pair.of("a", ChildSaInstalled)[0].inbound.spi
    for _ in range(6):                       # ESP every 5 s: no check
        pair.tick(5.0)
        pair.a.traffic_received(inbound, now=pair.now)
    assert checks_sent(pair) == []
    assert live(pair.a)[0].get_timer() == pytest.approx(pair.now + 10.0)
    pair.tick(10.0)                          # silence: one check, answered
    assert len(checks_sent(pair)) == 1
    assert live(pair.a) and not pair.of("a", IkeSaDeleted)


def dead(pair, *, seconds):
    for _ in range(int(seconds)):
        pair.tick(1.0, drop=lambda side, d: True)


def test_dpd_timeout_and_clear():
    pair = dpd_pair("clear", dpd_timeout=15.0)
    dead(pair, seconds=24)
    assert not pair.of("a", IkeSaDeleted)
    dead(pair, seconds=2)                    # 10 s idle + 15 s without an answer
    assert [e.reason for e in pair.of("a", IkeSaDeleted)] == ["peer not responding"]
    assert [e.reason for e in pair.of("a", ChildSaDeleted)] == ["IKE SA gone"]
    assert not pair.a.active() and pair.a.traps() == []


def test_dpd_without_timeout_uses_retransmissions():
    pair = dpd_pair("clear")
    dead(pair, seconds=10 + 160)
    assert not pair.of("a", IkeSaDeleted)
    dead(pair, seconds=20)                   # 4 + 7.2 + ... + 75.6 s = 165 s of retransmissions
    assert [e.reason for e in pair.of("a", IkeSaDeleted)] == ["peer not responding"]


def test_dpd_restart_initiates_again():
    pair = dpd_pair("restart", dpd_timeout=5.0)
    dead(pair, seconds=16)
    assert [e.reason for e in pair.of("a", IkeSaDeleted)] == ["peer not responding"]
    [again] = live(pair.a)                   # a new IKE SA is being set up
    assert again.state.value == "init-sent"
    # the peer is back (B forgot its old IKE SA): the restart completes with the child
    pair.b.close(now=pair.now)
    pair.b.datagrams_to_send(now=pair.now)
    pair.tick(4.0)
    assert len(pair.of("a", ChildSaInstalled)) == 2 and live(pair.a)[0].established


def test_dpd_trap_waits_for_traffic():
    pair = dpd_pair("trap", dpd_timeout=5.0)
    dead(pair, seconds=16)
    [trap] = pair.of("a", ChildSaTrapped)
    assert (trap.child, trap.remote_ts) == ("net", ("203.0.113.0/24",))
    assert not pair.a.active() and pair.a.traps() == [("a", "net")]
    pair.b.close(now=pair.now)
    pair.b.datagrams_to_send(now=pair.now)
    assert pair.a.acquire("a", "net", now=pair.now) is not None
    assert pair.a.acquire("a", "net", now=pair.now) is None      # once
    pair.pump()
    assert len(pair.of("a", ChildSaInstalled)) == 2

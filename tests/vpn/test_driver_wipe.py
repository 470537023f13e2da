"""The driver forgets the keys of every CHILD SA it stops using (`SecurityAssociation.wipe`,
best effort): at once for a deleted one, for a rekeyed one's outbound side when the new SA takes
over and for its inbound side after the grace period, and at shutdown for whatever is left.
Counters stay readable after the wipe."""
import asyncio

from ipsec_core.ike import events as ev
from ipsec_core.vpn import driver as driver_mod

from .test_driver import A_IN, B_IN, TIMEOUT, Pair, event, pings, run


def test_deleted_child_sas_are_wiped_on_both_sides():
    async def scenario():
        pair = Pair()
        await pair.up()
        (child_a,), (child_b,) = pair.a.children, pair.b.children
        pair.a_inner.inject(pings(A_IN, B_IN, 3))
        await pair.b_inner.wait_received(3, timeout=TIMEOUT)
        assert not child_a.outbound.wiped and not child_b.inbound.wiped
        await pair.down()
        return child_a, child_b

    child_a, child_b = run(scenario())
    for child in (child_a, child_b):
        assert child.inbound.wiped and child.outbound.wiped
        assert child.inbound.config.enc_key == b"" and child.outbound.config.enc_key == b""
    assert child_a.outbound.stats.packets == child_b.inbound.stats.packets == 3


def test_rekeyed_child_outbound_wiped_at_once_inbound_after_the_grace(monkeypatch):
    monkeypatch.setattr(driver_mod, "REKEYED_INBOUND_GRACE_S", 0.2)

    async def scenario():
        pair = Pair()
        await pair.up()
        (old,) = pair.a.children
        pair.a.rekey_child("site", "net")
        await event(pair.a, ev.ChildSaDeleted, lambda e: e.reason == "rekeyed")
        assert old.outbound.wiped, "no traffic leaves on a rekeyed SA: its keys go at once"
        assert not old.inbound.wiped, "what the peer sent before its switch still decrypts"
        await asyncio.sleep(0.4)
        assert old.inbound.wiped and old.outbound.wiped
        (new,) = pair.a.children
        assert not new.inbound.wiped and not new.outbound.wiped
        pair.a_inner.inject(pings(A_IN, B_IN, 2))
        await pair.b_inner.wait_received(2, timeout=TIMEOUT)
        await pair.down()
        return new

    new = run(scenario())
    assert new.inbound.wiped and new.outbound.wiped


def test_shutdown_wipes_rekeyed_sas_still_in_their_grace(monkeypatch):
    monkeypatch.setattr(driver_mod, "REKEYED_INBOUND_GRACE_S", 60.0)

    async def scenario():
        pair = Pair()
        await pair.up()
        (old,) = pair.a.children
        pair.a.rekey_child("site", "net")
        await event(pair.a, ev.ChildSaDeleted, lambda e: e.reason == "rekeyed")
        assert not old.inbound.wiped
        await pair.down()
        return old

    old = run(scenario())
    assert old.inbound.wiped and old.outbound.wiped

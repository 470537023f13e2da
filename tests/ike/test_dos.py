"""Half-open IKE SAs under a flood, as strongSwan limits them: COOKIEs above 30 half-open IKE SAs
in total or 3 from one address, IKE_SA_INIT ignored from an address with 5, half-open SAs
dropped after 30 s, a retransmitted IKE_SA_INIT answered from cache without a new key exchange,
bounded memory however many addresses flood, and a legitimate peer still served."""
from __future__ import annotations

import dataclasses
import gc
import os
import tracemalloc

from ipsec_core.ike.endpoint import HALF_OPEN_TIMEOUT, MAX_IKE_SA_INIT_BYTES, IkeEndpoint
from ipsec_core.ike.events import IkeSaEstablished, IkeSaFailed
from ipsec_core.ike.session import IkeSession

from .test_session import REGISTRY, Pair, config, up

AUTH = 35


def half_open_from_one_address(count):
    """`count` initiators on one address whose IKE_AUTH never arrives (COOKIEs answered)."""
    pair = Pair(config("a", initiator=True), config("b", initiator=False))
    for _ in range(count):
        pair.a.initiate("a", now=pair.now)
        pair.pump(drop=lambda side, d: d.data[18] == AUTH)
    return pair


def test_cookie_from_three_half_open_on_one_address():
    pair = half_open_from_one_address(3)
    assert pair.b.cookies_sent == 0 and len(pair.b._half_open) == 3
    pair.a.initiate("a", now=pair.now)
    pair.pump(drop=lambda side, d: d.data[18] == AUTH)
    assert pair.b.cookies_sent == 1 and len(pair.b._half_open) == 4


def test_fifth_half_open_blocks_the_address():
    pair = half_open_from_one_address(5)
    assert len(pair.b._half_open) == 5
    pair.a.initiate("a", now=pair.now)
    pair.pump(drop=lambda side, d: d.data[18] == AUTH)
    assert len(pair.b._half_open) == 5 and pair.b.drops["half_open_per_address"] >= 1


def test_half_open_dropped_after_timeout():
    pair = half_open_from_one_address(2)
    pair.tick(HALF_OPEN_TIMEOUT - 1, drop=lambda side, d: True)
    assert len(pair.b._half_open) == 2
    pair.tick(1.0, drop=lambda side, d: True)
    assert pair.b._half_open == {} and pair.b._half_open_by_ip == {}
    assert [e.reason for e in pair.of("b", IkeSaFailed)] == ["half-open IKE SA timed out"] * 2
    assert pair.b.sessions() == []


def test_retransmitted_init_answered_from_cache(monkeypatch):
    made = []
    original = IkeSession._make_ke
    monkeypatch.setattr(IkeSession, "_make_ke", lambda self, g: (made.append(g), original(self, g))[1])
    pair = Pair(config("a", initiator=True), config("b", initiator=False))
    pair.a.initiate("a", now=0.0)
    [request] = pair.a.datagrams_to_send(now=0.0)
    answers = []
    for _ in range(3):
        pair.b.receive_datagram(request.data, remote=request.local, local=request.remote,
                                nat_t=False, now=0.0)
        answers += pair.b.datagrams_to_send(now=0.0)
    assert len(made) == 2                    # the initiator's and the responder's, once
    assert len(answers) == 3 and len({d.data for d in answers}) == 1


def test_oversized_init_ignored():
    pair = Pair(config("a", initiator=True), config("b", initiator=False))
    pair.a.initiate("a", now=0.0)
    [request] = pair.a.datagrams_to_send(now=0.0)
    data = bytearray(request.data)
    # a Vendor ID payload of junk at the end, lengths fixed up
    junk = bytes(MAX_IKE_SA_INIT_BYTES)
    first_type = data[16]
    data[16] = 43
    vid = bytes([first_type, 0]) + (4 + len(junk)).to_bytes(2, "big") + junk
    data = data[:28] + vid + data[28:]
    data[24:28] = len(data).to_bytes(4, "big")
    pair.b.receive_datagram(bytes(data), remote=request.local, local=request.remote, nat_t=False, now=0.0)
    assert pair.b.datagrams_to_send(now=0.0) == [] and pair.b.drops["ike_sa_init_too_large"] == 1


def v6_config(name, *, initiator):
    cfg = config(name, initiator=initiator)
    local, remote = ("2001:db8::1", "2001:db8::2") if initiator else ("2001:db8::2", "%any")
    return dataclasses.replace(cfg, local_addrs=(local,), remote_addrs=(remote,))


def test_flood_from_many_addresses_keeps_memory_bounded_and_serves_a_peer():
    b = IkeEndpoint([v6_config("b", initiator=False)], registry=REGISTRY, now=0.0)
    template = IkeEndpoint([v6_config("x", initiator=True)], registry=REGISTRY, now=0.0)
    template.initiate("x", now=0.0)
    [init] = template.datagrams_to_send(now=0.0)
    data = bytearray(init.data)

    def flood(start, count):
        for i in range(start, start + count):
            data[0:8] = os.urandom(8)
            source = (f"2001:db8:{i >> 16:x}:{i & 0xFFFF:x}::7", 500)
            b.receive_datagram(bytes(data), remote=source, local=("2001:db8::2", 500), nat_t=False, now=1.0)
            b.datagrams_to_send(now=1.0)
            while b.next_event() is not None:
                pass

    flood(0, 300)                            # the first 30 become half-open SAs, then cookies
    assert len(b._half_open) == 30 and b.cookies_sent == 270
    gc.collect()
    tracemalloc.start()
    try:
        flood(300, 200)
        gc.collect()
        base = tracemalloc.get_traced_memory()[0]
        flood(500, 1500)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert len(b._half_open) == 30 and len(b.sessions()) == 30
    assert grown < 64 * 1024, f"{grown} bytes more after 1500 more IKE_SA_INIT"
    # a legitimate initiator answers the COOKIE and gets in
    a = IkeEndpoint([v6_config("a", initiator=True)], registry=REGISTRY, now=1.0)
    pair = Pair(config("a", initiator=True), config("b", initiator=False))
    pair.a, pair.b, pair.now = a, b, 1.0
    up(pair)
    assert pair.of("a", IkeSaEstablished) and pair.of("b", IkeSaEstablished)

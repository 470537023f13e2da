"""Rekeys under a running stream: two `Driver`s with the real IKE endpoint over loopback UDP and
in-memory inner interfaces, CHILD SAs rekeyed every ~1 s and IKE SAs every ~1.5 s from both
sides while sequence-numbered UDP flows both ways; every packet arrives exactly once."""
from __future__ import annotations

import asyncio
import ipaddress
import struct

from ipsec_core.cli.demo import free_udp_ports, udp_packet
from ipsec_core.ike import events as ev
from ipsec_core.ike.config import ChildConfig, IkeConfig, TrafficSelectorSpec
from ipsec_core.ike.endpoint import IkeEndpoint
from ipsec_core.vpn.driver import Driver, MemoryInterface

A, B = "127.0.0.1", "127.0.0.2"
A_IN, B_IN = "198.51.100.1", "203.0.113.1"
STREAM_S = 4.0
GAP_S = 0.004


def side(name, local, remote, lnet, rnet, start, ports, *, rekey_child, rekey_ike):
    ts = lambda net: (TrafficSelectorSpec(ipaddress.ip_network(net)),)  # noqa: E731
    child = ChildConfig("net", ts(lnet), ts(rnet), esp_proposals=("aes128gcm16",), start_action=start,
                        rekey_time=rekey_child, rand_time=0.5)
    return IkeConfig(name, (local,), (remote,), local_id=f"{name}.example.org", psk=b"x" * 24,
                     encap=True, children=(child,), local_port=ports[0], remote_port=ports[0],
                     nat_t_port=ports[1], rekey_time=rekey_ike, rand_time=0.5)


def seqs(packets):
    return [struct.unpack("!I", p[28:32])[0] for p in packets]


def test_stream_survives_child_and_ike_rekeys_from_both_sides():
    async def scenario():
        ports = free_udp_ports([A, B])
        a_in, b_in = MemoryInterface("mem-a", addresses=[A_IN]), MemoryInterface("mem-b", addresses=[B_IN])
        a = Driver([side("a", A, B, "198.51.100.0/24", "203.0.113.0/24", "start", ports,
                         rekey_child=1.0, rekey_ike=1.5)], inner=a_in, endpoint_factory=IkeEndpoint)
        b = Driver([side("b", B, A, "203.0.113.0/24", "198.51.100.0/24", "none", ports,
                         rekey_child=1.5, rekey_ike=2.0)], inner=b_in, endpoint_factory=IkeEndpoint)
        await b.start()
        await a.start()
        await a.wait_for(lambda e: isinstance(e, ev.ChildSaInstalled), timeout=5)
        await asyncio.sleep(0.1)
        loop = asyncio.get_running_loop()
        end, n = loop.time() + STREAM_S, 0
        while loop.time() < end:
            a_in.inject([udp_packet(A_IN, B_IN, 4000, 5000, struct.pack("!I", n) + b"a" * 60)])
            b_in.inject([udp_packet(B_IN, A_IN, 5000, 4000, struct.pack("!I", n) + b"b" * 60)])
            n += 1
            await asyncio.sleep(GAP_S)
        await asyncio.sleep(0.5)
        events = list(a.events) + list(b.events)
        a.stop()
        b.stop()
        await asyncio.wait_for(asyncio.gather(a.wait_stopped(), b.wait_stopped()), 10)
        return n, seqs(b_in.received), seqs(a_in.received), events, a.stats, b.stats

    n, at_b, at_a, events, a_stats, b_stats = asyncio.run(asyncio.wait_for(scenario(), 30))
    child_rekeys = [e for e in events if isinstance(e, ev.ChildSaInstalled) and e.rekeyed]
    ike_rekeys = [e for e in events if isinstance(e, ev.IkeSaRekeyed)]
    assert len(child_rekeys) >= 4 and len(ike_rekeys) >= 2, (len(child_rekeys), len(ike_rekeys))
    assert at_b == list(range(n)), (a_stats.drops, b_stats.drops)
    assert at_a == list(range(n)), (a_stats.drops, b_stats.drops)

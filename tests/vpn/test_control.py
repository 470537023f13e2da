"""Operating a running driver: the control socket (status, up, down), trap policies, ICMP
"too big", IPv6 inner traffic, transport mode, and drops by reason under hostile input.

Two drivers with the real IKE endpoint talk over loopback UDP; their inner interfaces are lists in
memory, so these run without root.  The control socket is a real unix socket in tmp_path.
"""
import asyncio
import ipaddress
import json
import os
import socket
import stat
import struct

import pytest

from ipsec_core.cli.demo import free_udp_ports, udp_packet
from ipsec_core.ike import events as ev
from ipsec_core.ike.config import ChildConfig, IkeConfig, TrafficSelectorSpec
from ipsec_core.vpn.control import ControlError, ControlServer, driver_handler, request
from ipsec_core.vpn.driver import Driver, MemoryInterface, inner_mtu

ike_endpoint = pytest.importorskip("ipsec_core.ike.endpoint")

A, B = "127.0.0.1", "127.0.0.2"
A_IN, B_IN = "198.51.100.1", "203.0.113.1"
A6_IN, B6_IN = "2001:db8:a::1", "2001:db8:b::1"
TIMEOUT = 8.0


def _ts(*nets):
    return tuple(TrafficSelectorSpec(ipaddress.ip_network(n)) for n in nets)


def _configs(ports, *, a_start="start", a_nets=("198.51.100.0/24",), b_nets=("203.0.113.0/24",),
             mode="tunnel", esp="aes128gcm16"):
    ike_port, nat_t_port = ports

    def side(local, remote, lnets, rnets, lid, rid, start):
        child = ChildConfig("net", local_ts=_ts(*lnets), remote_ts=_ts(*rnets), esp_proposals=(esp,),
                            start_action=start, mode=mode)
        return IkeConfig("site", local_addrs=(local,), remote_addrs=(remote,), local_id=lid,
                         remote_id=rid, psk=b"control-test-psk-0123456789", encap=True,
                         children=(child,), proposals=("aes128gcm16-prfsha256-x25519",),
                         local_port=ike_port, remote_port=ike_port, nat_t_port=nat_t_port)

    return (side(A, B, a_nets, b_nets, "a.example.org", "b.example.org", a_start),
            side(B, A, b_nets, a_nets, "b.example.org", "a.example.org", "none"))


class Pair:
    def __init__(self, *, path_mtu=1500, **kw):
        self.ports = free_udp_ports([A, B])
        cfg_a, cfg_b = _configs(self.ports, **kw)
        self.a_inner = MemoryInterface("mem-a", addresses=[A_IN, A6_IN, A])
        self.b_inner = MemoryInterface("mem-b", addresses=[B_IN, B6_IN, B])
        factory = ike_endpoint.IkeEndpoint
        self.a = Driver([cfg_a], inner=self.a_inner, endpoint_factory=factory, path_mtu=path_mtu)
        self.b = Driver([cfg_b], inner=self.b_inner, endpoint_factory=factory, path_mtu=path_mtu)

    async def start(self):
        await self.b.start()
        await self.a.start()

    async def down(self):
        self.a.stop()
        self.b.stop()
        await asyncio.wait_for(asyncio.gather(self.a.wait_stopped(), self.b.wait_stopped()), TIMEOUT)


async def installed(driver):
    if driver.children:
        return driver.children[0]
    await driver.wait_for(lambda e: isinstance(e, ev.ChildSaInstalled), timeout=TIMEOUT)
    return driver.children[0]


async def seen(driver, kind, *, since=0):
    """The first event of `kind` from index `since` of the driver's history on."""
    for e in driver.events[since:]:
        if isinstance(e, kind):
            return e
    return await driver.wait_for(lambda e: isinstance(e, kind), timeout=TIMEOUT)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def pings(src, dst, n, tag="p"):
    return [udp_packet(src, dst, 30000 + i, 7, f"{tag}{i}".encode()) for i in range(n)]


def udp6_packet(src, dst, payload, *, sport=40000, dport=7):
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    s, d = ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed
    # the UDP checksum is mandatory over IPv6
    pseudo = s + d + struct.pack("!I3xB", len(udp), 17) + udp
    pseudo += b"\0" * (len(pseudo) % 2)
    total = sum(struct.unpack(f"!{len(pseudo) // 2}H", pseudo))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    udp = udp[:6] + struct.pack("!H", (~total & 0xFFFF) or 0xFFFF) + udp[8:]
    return struct.pack("!IHBB", 6 << 28, len(udp), 17, 64) + s + d + udp


def _ask(path, message):
    return asyncio.get_running_loop().run_in_executor(None, lambda: request(path, message, timeout=5))


# --------------------------------------------------------------------------- control socket

def test_status_up_and_down_through_the_control_socket(tmp_path):
    path = tmp_path / "ctl" / "control.sock"

    async def scenario():
        pair = Pair()
        await pair.start()
        server = ControlServer(path, driver_handler(pair.a))
        await server.start()
        try:
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
            assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
            child = await installed(pair.a)
            await installed(pair.b)
            pair.a_inner.inject(pings(A_IN, B_IN, 5))
            await pair.b_inner.wait_received(5, timeout=TIMEOUT)
            st = await _ask(path, {"command": "status"})
            json.dumps(st)                                  # plain JSON types only
            (conn,) = st["connections"]
            assert conn["name"] == "site"
            (ike,) = conn["ike_sas"]
            assert ike["state"] == "ESTABLISHED" and ike["initiator"] is True
            assert "AES_GCM_16" in ike["proposal"] or "aes128gcm16" in ike["proposal"]
            assert ike["remote_id"] == "b.example.org"
            (csa,) = conn["child_sas"]
            assert csa["spi_in"] == f"{child.inbound.spi:08x}"
            assert csa["spi_out"] == f"{child.outbound.spi:08x}"
            assert csa["packets_out"] == 5 and csa["bytes_out"] > 0
            assert csa["backend_out"] and csa["mode"] == "tunnel"
            assert 0 < csa["rekey_in_s"] <= 3600
            assert st["driver"]["esp_sent"] == 5

            # a bad request is an answer, not a dead socket
            with pytest.raises(ControlError, match="unknown command"):
                await _ask(path, {"command": "reboot"})
            with pytest.raises(ControlError, match="no connection 'nope'"):
                await _ask(path, {"command": "down", "name": "nope"})

            assert (await _ask(path, {"command": "down", "name": "site"})) == "deleting site"
            await seen(pair.b, ev.IkeSaDeleted)
            for _ in range(100):
                if not pair.a.children:
                    break
                await asyncio.sleep(0.02)
            st = await _ask(path, {"command": "status"})
            assert st["connections"][0]["ike_sas"] == [] and st["connections"][0]["child_sas"] == []

            since = len(pair.a.events)
            assert (await _ask(path, {"command": "up", "name": "site"})) == "initiating site"
            await seen(pair.a, ev.ChildSaInstalled, since=since)
            assert "already up" in await _ask(path, {"command": "up", "name": "site"})
            pair.a_inner.inject(pings(A_IN, B_IN, 2, "again"))
            await pair.b_inner.wait_received(7, timeout=TIMEOUT)
        finally:
            server.close()
            await pair.down()
        assert not path.exists()

    run(scenario())


def test_a_live_control_socket_is_not_taken_over(tmp_path):
    path = tmp_path / "control.sock"

    async def scenario():
        first = ControlServer(path, lambda r: "first")
        await first.start()
        try:
            with pytest.raises(ControlError, match="in use by another ipsec up"):
                await ControlServer(path, lambda r: "second").start()
            assert await _ask(path, {"command": "status"}) == "first"
        finally:
            first.close()
        # a stale socket file (its process gone) is replaced
        stale = socket.socket(socket.AF_UNIX)
        stale.bind(str(path))
        stale.close()
        second = ControlServer(path, lambda r: "second")
        await second.start()
        try:
            assert await _ask(path, {"command": "status"}) == "second"
        finally:
            second.close()

    run(scenario())
    with pytest.raises(ControlError, match="no control socket"):
        request(path, {"command": "status"})


# --------------------------------------------------------------------------- trap

def test_trap_brings_the_tunnel_up_and_delivers_the_first_packet():
    async def scenario():
        pair = Pair(a_start="trap")
        await pair.start()
        try:
            assert not pair.a.children
            assert ipaddress.ip_network("203.0.113.0/24") in pair.a_inner.routes   # the trap's route
            first = pings(A_IN, B_IN, 3, "first")
            pair.a_inner.inject(first)
            await pair.b_inner.wait_received(3, timeout=TIMEOUT)
            assert pair.b_inner.received == first
            assert pair.a.status()["connections"][0]["trap"] is True
            assert "trap_failed" not in pair.a.stats.drops
        finally:
            await pair.down()
        assert pair.a_inner.routes == {}

    run(scenario())


# --------------------------------------------------------------------------- MTU

def test_inner_mtu_accounts_for_the_algorithm():
    ports = (500, 4500)
    gcm = inner_mtu(_configs(ports, esp="aes128gcm16")[:1])
    cbc = inner_mtu(_configs(ports, esp="aes256-sha256")[:1])
    # 1500 - 20 IPv4 - 8 UDP - 8 SPI/seq - 8 IV - 16 ICV, 4-byte blocks, 2 trailer bytes
    assert gcm == 1438
    # 16-byte IV and blocks
    assert cbc == 1422
    assert inner_mtu(_configs(ports)[:1], path_mtu=1280) == 1218


def test_oversized_packets_get_icmp_too_big_back():
    async def scenario():
        pair = Pair(a_nets=("198.51.100.0/24", "2001:db8:a::/48"),
                    b_nets=("203.0.113.0/24", "2001:db8:b::/48"))
        await pair.start()
        try:
            child = await installed(pair.a)
            await installed(pair.b)
            limit = child.max_inner
            assert limit == 1438
            fits = udp_packet(A_IN, B_IN, 1, 7, bytes(limit - 28))
            big = bytearray(udp_packet(A_IN, B_IN, 1, 7, bytes(limit - 27)))
            big[6] |= 0x40                                  # DF
            big6 = udp6_packet(A6_IN, B6_IN, bytes(limit - 47))
            pair.a_inner.inject([fits, bytes(big), big6])
            await pair.b_inner.wait_received(1, timeout=TIMEOUT)
            await asyncio.sleep(0.05)
            assert pair.b_inner.received == [fits]
            icmp4, icmp6 = pair.a_inner.received
            assert icmp4[9] == 1 and icmp4[20:22] == b"\x03\x04"          # frag needed
            assert struct.unpack_from("!H", icmp4, 26)[0] == limit
            assert icmp4[12:16] == ipaddress.ip_address(B_IN).packed       # not a local address
            assert icmp4[16:20] == ipaddress.ip_address(A_IN).packed
            assert icmp6[6] == 58 and icmp6[40] == 2                       # packet too big
            assert struct.unpack_from("!I", icmp6, 44)[0] == limit
            assert pair.a.stats.drops["too_big"] == 2 and pair.a.stats.icmp_too_big == 2
        finally:
            await pair.down()

    run(scenario())


# --------------------------------------------------------------------------- IPv6 inside

def test_ipv6_inner_traffic_over_an_ipv4_tunnel():
    async def scenario():
        pair = Pair(a_nets=("2001:db8:a::/48",), b_nets=("2001:db8:b::/48",))
        await pair.start()
        try:
            await installed(pair.a)
            await installed(pair.b)
            packets = [udp6_packet(A6_IN, B6_IN, f"six{i}".encode()) for i in range(4)]
            pair.a_inner.inject(packets)
            await pair.b_inner.wait_received(4, timeout=TIMEOUT)
            assert pair.b_inner.received == packets
            back = [udp6_packet(B6_IN, A6_IN, b"back")]
            pair.b_inner.inject(back)
            await pair.a_inner.wait_received(1, timeout=TIMEOUT)
            assert pair.a_inner.received == back
            assert ipaddress.ip_network("2001:db8:b::/48") in pair.a_inner.routes
        finally:
            await pair.down()

    run(scenario())


# --------------------------------------------------------------------------- transport mode

def test_transport_mode_between_two_drivers():
    async def scenario():
        pair = Pair(mode="transport", a_nets=(f"{A}/32",), b_nets=(f"{B}/32",))
        await pair.start()
        try:
            child = await installed(pair.a)
            await installed(pair.b)
            assert not child.tunnel and child.peer == (B, pair.ports[1])
            # the peer's own address is routed through the policy table, not the main one
            assert ipaddress.ip_network(f"{B}/32") in pair.a_inner.policy_routes
            assert pair.a_inner.routes == {}
            packets = pings(A, B, 3)
            pair.a_inner.inject(packets)
            await pair.b_inner.wait_received(3, timeout=TIMEOUT)
            for sent, got in zip(packets, pair.b_inner.received):
                assert got[9] == 17 and got[12:20] == sent[12:20] and got[20:] == sent[20:]
            st = pair.b.status()["connections"][0]["child_sas"][0]
            assert st["mode"] == "transport" and st["packets_in"] == 3
        finally:
            await pair.down()

    run(scenario())


# --------------------------------------------------------------------------- hostile input

def test_garbage_forgeries_and_replays_are_counted_by_reason():
    async def scenario():
        pair = Pair()
        await pair.start()
        try:
            child_a = await installed(pair.a)
            child_b = await installed(pair.b)
            nat_t = (B, pair.ports[1])
            wire = child_a.outbound.protect(pings(A_IN, B_IN, 1, "r")[0], now=0.0)[28:]
            forged = bytearray(wire)
            forged[-1] ^= 1
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.bind((A, 0))
                for _ in range(20):
                    s.sendto(os.urandom(3), nat_t)                       # too short for ESP
                    s.sendto(b"\xde\xad\xbe\xef" + os.urandom(60), nat_t)  # nobody's SPI
                    s.sendto(child_b.inbound.spi.to_bytes(4, "big") + os.urandom(60), nat_t)
                s.sendto(wire, nat_t)
                s.sendto(wire, nat_t)                                    # replay
                s.sendto(bytes(forged), nat_t)                           # bad ICV
            pair.a_inner.inject(pings(A_IN, B_IN, 10, "ok"))
            await pair.b_inner.wait_received(11, timeout=TIMEOUT)
            await asyncio.sleep(0.1)
            drops = pair.b.status()["drops"]
            assert drops["udp_malformed"] == 20
            assert drops["unknown_spi"] == 20
            assert drops["replay"] == 2            # the repeat, and the forgery of a seen number
            assert drops["auth_failed"] == 20, drops
            assert len(pair.b_inner.received) == 11
            assert pair.b.children and pair.a.children                  # still up
        finally:
            await pair.down()

    run(scenario())

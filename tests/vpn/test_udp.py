"""The IKE / NAT-T UDP endpoint, between two endpoints in a throwaway network namespace.

Two endpoints on documentation addresses of the namespace's loopback exchange IKE on both ports,
ESP-in-UDP and NAT keepalives over IPv4 and IPv6; the receiving side must sort them as RFC 3948
says: marker -> IKE (marker removed), one 0xFF byte -> keepalive (counted, dropped), else ESP.
"""
import asyncio
import errno
import socket

import pytest

from ipsec_core.errors import LocalError
from ipsec_core.vpn.netlink import Netlink
from ipsec_core.vpn.netns import call_in_netns
from ipsec_core.vpn.udp import NAT_KEEPALIVE, NON_ESP_MARKER, EspBatch, QueueHandler, UdpEndpoint

A4, B4 = "192.0.2.1", "192.0.2.2"
A6, B6 = "2001:db8::1", "2001:db8::2"
TIMEOUT = 2.0


@pytest.fixture
def udp_netns(netns):
    with Netlink(netns=netns) as nl:
        for address in (f"{A4}/32", f"{B4}/32", f"{A6}/128", f"{B6}/128"):
            nl.add_address("lo", address)
    return netns


def run(netns, scenario):
    """Run the coroutine function `scenario` on an event loop inside the namespace."""
    return call_in_netns(netns, lambda: asyncio.run(asyncio.wait_for(scenario(), 8)))


async def get(queue):
    return await asyncio.wait_for(queue.get(), TIMEOUT)


async def settle():
    """Let the loop run the readers for datagrams already sent (loopback delivers at once)."""
    for _ in range(3):
        await asyncio.sleep(0.01)


async def pair(**kwargs):
    ha, hb = QueueHandler(), QueueHandler()
    a = await UdpEndpoint.open(ha, local_addresses=[A4, A6], ike_port=0, nat_t_port=0, **kwargs)
    b = await UdpEndpoint.open(hb, local_addresses=[B4, B6], ike_port=0, nat_t_port=0, **kwargs)
    return a, ha, b, hb


@pytest.mark.root
@pytest.mark.parametrize("af", [4, 6], ids=["ipv4", "ipv6"])
def test_ike_esp_keepalive_demultiplexed(udp_netns, af):
    src, dst = (A4, B4) if af == 4 else (A6, B6)

    async def scenario():
        a, ha, b, hb = await pair()
        with a, b:
            assert b.ike_port and b.nat_t_port and b.ike_port != b.nat_t_port
            assert {addr[1] for kind, addr in b.local_addresses if kind == "ike"} == {b.ike_port}

            # IKE on port 500: no marker, and none expected
            assert a.send_ike(b"IKE_SA_INIT", (dst, b.ike_port), nat_t=False)
            got = await get(hb.ike)
            assert (got.data, got.nat_t, got.addr[0], got.addr[1]) == (b"IKE_SA_INIT", False, src, a.ike_port)
            assert got.local[0] == dst and len(got.addr) == (2 if af == 4 else 4)

            # IKE on port 4500: the marker goes on the wire and comes off on receipt
            assert a.send_ike(b"IKE_AUTH", (dst, b.nat_t_port), nat_t=True)
            got = await get(hb.ike)
            assert (got.data, got.nat_t, got.addr[1]) == (b"IKE_AUTH", True, a.nat_t_port)

            # keepalives are counted and go nowhere
            assert a.send_keepalive((dst, b.nat_t_port))
            assert a.send_keepalive((dst, b.nat_t_port))

            # ESP sent in one go arrives as one batch, SPI first, in order, with the sender
            esp = [bytes.fromhex("0000100100000001") + bytes([i]) * 40 for i in range(3)]
            assert a.send_esp_batch(esp, (dst, b.nat_t_port)) == 3
            assert a.send_esp(esp[0], (dst, b.nat_t_port))
            batch = await get(hb.esp)
            assert batch.packets == esp + [esp[0]]
            assert {addr[:2] for addr in batch.addrs} == {(src, a.nat_t_port)}
            assert batch.local[:2] == (dst, b.nat_t_port)

            # the answer goes back to the address the IKE message came from
            assert b.send_ike(b"answer", got.addr, nat_t=True)
            back = await get(ha.ike)
            assert (back.data, back.addr[1]) == (b"answer", b.nat_t_port)

            await settle()
            assert hb.ike.empty() and hb.esp.empty()
            assert (b.stats.ike_received, b.stats.esp_received, b.stats.keepalives_received) == (2, 4, 2)
            assert (a.stats.ike_sent, a.stats.esp_sent, a.stats.keepalives_sent) == (2, 4, 2)
            assert b.stats.malformed_received == 0

    run(udp_netns, scenario)


@pytest.mark.root
def test_raw_datagrams_sorted_by_first_bytes(udp_netns):
    async def scenario():
        handler = QueueHandler()
        with await UdpEndpoint.open(handler, local_addresses=[B4], ike_port=0, nat_t_port=0) as b:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as raw:
                raw.bind((A4, 0))
                natt, ike = (B4, b.nat_t_port), (B4, b.ike_port)
                raw.sendto(NON_ESP_MARKER + b"ike", ike)   # port 500: everything is IKE, as is
                raw.sendto(NON_ESP_MARKER + b"ike", natt)  # port 4500: marker removed
                raw.sendto(NAT_KEEPALIVE, natt)
                for bad in (b"", b"\x01\x02", NON_ESP_MARKER, b"\xff\xff"):
                    raw.sendto(bad, natt)
                raw.sendto(b"\x00\x00\x00\x01esp", natt)    # SPI 1: ESP, however odd
                first, second = await get(handler.ike), await get(handler.ike)
                batch = await get(handler.esp)
                await settle()
            assert (first.data, first.nat_t) == (NON_ESP_MARKER + b"ike", False)
            assert (second.data, second.nat_t) == (b"ike", True)
            assert batch.packets == [b"\x00\x00\x00\x01esp"]
            assert b.stats.keepalives_received == 1
            assert b.stats.malformed_received == 4
            assert handler.ike.empty() and handler.esp.empty()

    run(udp_netns, scenario)


@pytest.mark.root
def test_drain_is_bounded_by_max_batch(udp_netns):
    async def scenario():
        # one datagram per read: with UDP_GRO one read may hold the whole burst
        a, _, b, hb = await pair(max_batch=2, offload=False)
        with a, b:
            esp = [b"\x00\x00\x00\x07" + bytes([i]) * 8 for i in range(5)]
            assert a.send_esp_batch(esp, (B4, b.nat_t_port)) == 5
            sizes = []
            while sum(sizes) < 5:
                sizes.append(len((await get(hb.esp)).packets))
            assert sizes == [2, 2, 1]

    run(udp_netns, scenario)


@pytest.mark.root
def test_local_errors_and_bind_errors(udp_netns):
    async def scenario():
        handler = QueueHandler()
        with await UdpEndpoint.open(handler, local_addresses=[B4], ike_port=0, nat_t_port=None) as b:
            assert b.nat_t_port is None
            with pytest.raises(LocalError, match="no nat_t socket"):
                b.send_esp(b"x" * 8, (A4, 4500))
            with pytest.raises(LocalError, match="IPv6"):
                b.send_ike(b"x", (A6, 500), nat_t=False)
            taken = b.ike_port
        with pytest.raises(OSError) as info:  # not an address of the namespace
            UdpEndpoint(handler, local_addresses=["203.0.113.9"], ike_port=0, nat_t_port=0)
        assert info.value.errno == errno.EADDRNOTAVAIL and "203.0.113.9" in str(info.value)
        with UdpEndpoint(handler, local_addresses=[B4], ike_port=taken, nat_t_port=None):
            with pytest.raises(OSError, match="Address already in use") as info:
                UdpEndpoint(handler, local_addresses=[B4], ike_port=taken, nat_t_port=None)
            assert info.value.errno == errno.EADDRINUSE

    run(udp_netns, scenario)


def test_bad_arguments_are_local_errors():
    handler = QueueHandler()
    with pytest.raises(LocalError, match="must differ"):
        UdpEndpoint(handler, local_addresses=["192.0.2.1"], ike_port=4500, nat_t_port=4500)
    with pytest.raises(LocalError, match="nothing to open"):
        UdpEndpoint(handler, local_addresses=["192.0.2.1"], ike_port=None, nat_t_port=None)
    with pytest.raises(LocalError, match="at least one local address"):
        UdpEndpoint(handler, local_addresses=[])
    with pytest.raises(LocalError, match="bad local address"):
        UdpEndpoint(handler, local_addresses=["vpn.example"], ike_port=0, nat_t_port=0)


def _esp(spi: int, seq: int, size: int) -> bytes:
    body = seq.to_bytes(4, "big") * (size // 4 + 1)
    return spi.to_bytes(4, "big") + seq.to_bytes(4, "big") + body[:size - 8]


class RunsHandler(QueueHandler):
    """A QueueHandler that also takes whole UDP_GRO runs (`esp_runs_received`) and queues
    their datagrams as ESP batches, so the order of runs and single datagrams shows."""

    def __init__(self):
        super().__init__()
        self.runs = 0

    def esp_runs_received(self, runs, *, local):
        for data, size, addr in runs:
            self.runs += 1
            parts = [data[k:k + size] for k in range(0, len(data), size)]
            self.esp.put_nowait(EspBatch(parts, [addr] * len(parts), local))


@pytest.mark.root
@pytest.mark.parametrize("af", [4, 6], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("offload", [True, False, "runs"], ids=["gso-gro", "one-by-one", "gro-runs"])
def test_esp_batches_arrive_byte_exact(udp_netns, af, offload):
    """Runs of equal-size ESP packets (one UDP_SEGMENT send each where the kernel has it),
    shorter ones ending a run, a lone IKE message and a keepalive in between: every datagram
    arrives once, in order, byte for byte, sorted as RFC 3948 says; also where the handler
    takes the GRO reads whole (`esp_runs_received`), interleaved with single datagrams."""
    src, dst = (A4, B4) if af == 4 else (A6, B6)

    async def scenario():
        a, _, b, hb = await pair(offload=bool(offload), max_batch=512)
        if offload == "runs":
            hb = RunsHandler()
            b.handler = hb
        with a, b:
            sizes = [1400] * 70 + [900] + [1400] * 3 + [60] * 5 + [1400, 1200, 1400, 1400]
            burst = [_esp(0x1000 + (i % 3 == 0), i, n) for i, n in enumerate(sizes)]
            assert a.send_esp_batch(burst[:40], (dst, b.nat_t_port)) == 40
            assert a.send_ike(b"ike!" * 10, (dst, b.nat_t_port), nat_t=True)
            assert a.send_keepalive((dst, b.nat_t_port))
            assert a.send_esp_batch(burst[40:], (dst, b.nat_t_port)) == len(burst) - 40
            got = []
            while len(got) < len(burst):
                got += (await get(hb.esp)).packets
            assert got == burst
            assert (await get(hb.ike)).data == b"ike!" * 10
            await settle()
            assert b.stats.keepalives_received == 1 and b.stats.esp_received == len(burst)
            assert a.stats.esp_sent == len(burst) and a.stats.send_errors == 0
            if offload and a._sockets[-1].gso:
                assert a.stats.gso_sends >= 3 and b.stats.gro_receives >= 3
                if offload == "runs":
                    assert hb.runs >= 3
                    # a run, a single ESP datagram, a run, all read in one drain: in order
                    more = [_esp(0x2000, 1000 + i, 1400) for i in range(10)]
                    one = _esp(0x2000, 1010, 500)
                    last = [_esp(0x2000, 1011 + i, 1400) for i in range(10)]
                    a.send_esp_batch(more, (dst, b.nat_t_port))
                    a.send_esp(one, (dst, b.nat_t_port))
                    a.send_esp_batch(last, (dst, b.nat_t_port))
                    got = []
                    while len(got) < 21:
                        got += (await get(hb.esp)).packets
                    assert got == more + [one] + last
            if not offload:
                assert a.stats.gso_sends == 0 and b.stats.gro_receives == 0

    run(udp_netns, scenario)


@pytest.mark.root
def test_gso_off_for_one_peer_sends_datagrams_one_by_one(udp_netns):
    """send_esp_batch / send_esp_run with gso=False (a connection's udp_gso = false): every
    datagram arrives, in order, and none went out in a UDP_SEGMENT send."""
    async def scenario():
        a, _, b, hb = await pair(offload=True, max_batch=512)
        with a, b:
            burst = [_esp(0x3000, i, 1200) for i in range(20)]
            assert a.send_esp_batch(burst[:10], (B4, b.nat_t_port), gso=False) == 10
            assert a.send_esp_run(b"".join(burst[10:]), 1200, (B4, b.nat_t_port), gso=False) == 10
            got = []
            while len(got) < 20:
                got += (await get(hb.esp)).packets
            assert got == burst and a.stats.gso_sends == 0 and a.stats.esp_sent == 20
            if a._sockets[-1].gso:              # and with gso (the default) it would have used it
                assert a.send_esp_run(b"".join(burst[:4]), 1200, (B4, b.nat_t_port)) == 4
                assert a.stats.gso_sends == 1

    run(udp_netns, scenario)

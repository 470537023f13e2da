"""The VPN's fast paths: TCP segment coalescing for TUN writes (virtio_net_hdr GSO), the per-batch
flow cache of the selector checks, and a TCP stream through two TUN drivers in namespaces that
takes TSO super-packets from the TUN, UDP_SEGMENT sends, UDP_GRO reads and coalesced TUN writes
and still arrives byte for byte.
"""
import hashlib
import ipaddress
import struct
import subprocess
import sys
import time

import pytest

from ipsec_core.dataplane.spd import PacketSelector
from ipsec_core.testing import TCP_HASH_CLIENT, TCP_HASH_SERVER
from ipsec_core.vpn.driver import _flow_key
from ipsec_core.vpn.tun import (VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4,
                                VIRTIO_NET_HDR_GSO_TCPV6, VNET_HDR, coalesce_tcp)

from .test_driver import DriverThread, FakeIkeEndpoint, configs, netns_pair  # noqa: F401

ACK, PSH, SYN = 0x10, 0x08, 0x02


def csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def segment(*, v=4, seq, payload, flags=ACK, sport=40000, dport=5201, ident=0, window=502,
            options=b"\x01\x01\x08\x0a" + bytes(8), src=None, dst=None):
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, 77, (5 + len(options) // 4) << 4, flags, window, 0, 0)
    tcp += options
    if v == 4:
        src, dst = src or bytes([198, 51, 100, 1]), dst or bytes([203, 0, 113, 1])
        ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp) + len(payload), ident, 0x4000,
                                   64, 6, 0, src, dst))
        ip[10:12] = struct.pack("!H", ~csum(bytes(ip)) & 0xFFFF)
        return bytes(ip) + tcp + payload
    src = src or ipaddress.ip_address("2001:db8:a::1").packed
    dst = dst or ipaddress.ip_address("2001:db8:b::1").packed
    return struct.pack("!IHBB16s16s", 6 << 28, len(tcp) + len(payload), 6, 64, src, dst) + tcp + payload




@pytest.mark.parametrize("v", [4, 6])
def test_coalesce_tcp_merges_runs_of_one_flow(v):
    mss = 1388
    data = bytes(range(256)) * 200
    segs = [segment(v=v, seq=1000 + k * mss, payload=data[k * mss:(k + 1) * mss], ident=k) for k in range(10)]
    segs[6] = segment(v=v, seq=1000 + 6 * mss, payload=data[6 * mss:7 * mss], flags=ACK | PSH, ident=6)
    other = segment(v=v, seq=5, payload=b"x" * 100, sport=40001)
    tail = segment(v=v, seq=1000 + 10 * mss, payload=b"end", ident=10)   # shorter: ends the run
    gap = segment(v=v, seq=1000 + 10 * mss + 50, payload=b"z" * mss)     # not contiguous
    syn = segment(v=v, seq=0, payload=b"s" * 10, flags=SYN | ACK)
    packets = segs[:4] + [other] + segs[4:] + [tail, gap, syn]
    out = list(coalesce_tcp(packets))
    assert sum(n for _, _, n in out) == len(packets)
    assert [n for _, _, n in out] == [4, 1, 3, 4, 1, 1]
    ip = 20 if v == 4 else 40
    end = ip + 32
    cursor = 0
    for header, packet, n in out:
        run = packets[cursor:cursor + n]
        cursor += n
        if n == 1:
            assert header == bytes(VNET_HDR.size) and packet is run[0]
            continue
        flags, gso, hdr_len, gso_size, csum_start, csum_offset = VNET_HDR.unpack(header)
        assert flags == VIRTIO_NET_HDR_F_NEEDS_CSUM and csum_start == ip and csum_offset == 16
        assert gso == (VIRTIO_NET_HDR_GSO_TCPV4 if v == 4 else VIRTIO_NET_HDR_GSO_TCPV6)
        assert hdr_len == end and gso_size == len(run[0]) - end
        assert packet[end:] == b"".join(p[end:] for p in run)           # the payload, byte for byte
        assert packet[ip:ip + 13] == run[0][ip:ip + 13]                    # ports, first seq, ack, doff
        assert packet[ip + 13] == run[-1][ip + 13]                         # PSH of the last one
        assert packet[ip + 14:ip + 16] == run[0][ip + 14:ip + 16] and packet[ip + 18:end] == run[0][ip + 18:end]
        tcp_len = len(packet) - ip
        if v == 4:
            assert struct.unpack("!H", packet[2:4])[0] == len(packet)
            assert csum(packet[:20]) == 0xFFFF                             # a valid header checksum
            pseudo = csum(packet[12:20] + struct.pack("!HH", 6, tcp_len))
        else:
            assert struct.unpack("!H", packet[4:6])[0] == len(packet) - 40
            assert packet[:4] == run[0][:4] and packet[6:40] == run[0][6:40]
            pseudo = csum(packet[8:40] + struct.pack("!IHBB", tcp_len, 0, 0, 6))
        assert struct.unpack("!H", packet[ip + 16:ip + 18])[0] == pseudo
    assert cursor == len(packets)


def test_coalesce_tcp_stops_where_headers_differ():
    mss = 500
    base = [segment(seq=k * mss, payload=b"a" * mss) for k in range(3)]
    assert [n for _, _, n in coalesce_tcp(base)] == [3]
    for changed in (segment(seq=2 * mss, payload=b"a" * mss, window=1),             # window
                    segment(seq=2 * mss, payload=b"a" * mss, options=bytes(12)),     # options
                    segment(seq=2 * mss, payload=b"a" * mss, dst=bytes([203, 0, 113, 2])),
                    segment(seq=2 * mss, payload=b"a" * (mss + 1)),                  # longer than the first
                    segment(seq=2 * mss, payload=b"a" * mss, flags=ACK | 0x01)):     # FIN
        assert [n for _, _, n in coalesce_tcp(base[:2] + [changed])] == [2, 1]
    frag = bytearray(base[1])
    frag[6] = 0x20                                                                   # MF
    assert [n for _, _, n in coalesce_tcp([base[0], bytes(frag)])] == [1, 1]
    assert [n for _, _, n in coalesce_tcp([base[0], b"\x45" + bytes(30)])] == [1, 1]
    assert list(coalesce_tcp([])) == []


def test_flow_key_only_where_the_selector_reads_nothing_else():
    tcp = segment(seq=1, payload=b"p" * 100)
    key = _flow_key(tcp)
    s = PacketSelector.from_packet(tcp)
    assert key == tcp[9:10] + tcp[12:24] and (s.src_port, s.dst_port) == (40000, 5201)
    assert _flow_key(segment(seq=9, payload=b"q" * 300)) == key                      # same flow
    assert _flow_key(segment(seq=1, payload=b"p", sport=1)) != key
    frag = bytearray(tcp)
    frag[7] = 1                                                                       # offset 8
    assert _flow_key(bytes(frag)) is None
    assert _flow_key(tcp[:-1]) is None                                                # length field lies
    assert _flow_key(b"\x46" + tcp[1:]) is None                                       # IPv4 options
    v6 = segment(v=6, seq=1, payload=b"p" * 10)
    assert _flow_key(v6) == v6[6:7] + v6[8:44]
    v6_ext = v6[:6] + b"\x00" + v6[7:]                                                # hop-by-hop first
    assert _flow_key(v6_ext) is None


@pytest.mark.root
def test_tcp_stream_through_the_fast_paths_is_byte_exact(netns_pair):
    """8 MB one way, 1 MB back, through two TUN drivers (the stand-in IKE, real ESP): the hashes
    match, and the data went through TSO reads, UDP_SEGMENT sends, UDP_GRO reads and coalesced
    TUN writes."""
    from ipsec_core.ike.config import IkeConfig
    from ipsec_core.vpn.driver import Driver, TunInterface

    ns_a, ns_b, sh = netns_pair
    cfg_a, cfg_b = configs((500, 4500))
    cfg_a = IkeConfig(**{**{f: getattr(cfg_a, f) for f in cfg_a.__dataclass_fields__},
                         "local_addrs": ("192.0.2.1",), "remote_addrs": ("192.0.2.2",)})
    cfg_b = IkeConfig(**{**{f: getattr(cfg_b, f) for f in cfg_b.__dataclass_fields__},
                         "local_addrs": ("192.0.2.2",), "remote_addrs": ("192.0.2.1",)})
    b = DriverThread(ns_b, lambda: Driver([cfg_b], inner=TunInterface("fstb%d"), endpoint_factory=FakeIkeEndpoint))
    a = DriverThread(ns_a, lambda: Driver([cfg_a], inner=TunInterface("fsta%d"), endpoint_factory=FakeIkeEndpoint))
    size = 8 << 20
    server = None
    try:
        for _ in range(100):
            if a.call(lambda: bool(a.driver.children)) and b.call(lambda: bool(b.driver.children)):
                break
            time.sleep(0.05)
        server = subprocess.Popen(["ip", "netns", "exec", ns_b, sys.executable, "-c", TCP_HASH_SERVER, str(size),
                                   "203.0.113.1", "4000"],
                                  stdout=subprocess.PIPE, text=True)
        assert server.stdout.readline().strip() == "ready"
        client = subprocess.run(["ip", "netns", "exec", ns_a, sys.executable, "-c", TCP_HASH_CLIENT, str(size),
                                 "203.0.113.1", "198.51.100.1"],
                                capture_output=True, text=True, timeout=60)
        assert client.returncode == 0, client.stderr
        sent_hash, reply_hash, reply_len = client.stdout.split()
        got_hash, left = server.stdout.readline().split()
        assert (got_hash, left) == (sent_hash, "0")
        assert reply_hash == hashlib.sha256(bytes(range(251)) * 4000).hexdigest() and int(reply_len) == 1004000
        udp_a, udp_b = a.call(lambda: a.driver.udp.stats), b.call(lambda: b.driver.udp.stats)
        assert udp_a.gso_sends > 0 and udp_b.gro_receives > 0, (udp_a, udp_b)
        assert b.call(lambda: b.driver.inner.tun.coalesced_writes) > 0
        tun_a = a.call(lambda: a.driver.inner.tun)
        assert tun_a.super_packets_read > 0 and tun_a.read_errors == 0
        if a.call(lambda: a.driver.children[0].outbound.engine.backend_names).startswith("ipsecmb"):
            assert a.call(lambda: a.driver.stats.framed_in_place) > 0     # cut, sealed, sent in place
        assert b.call(lambda: b.driver.stats.opened_in_runs) > 0           # GRO reads as one batch
        assert not set(a.driver.stats.drops) - {"no_policy"} and not set(b.driver.stats.drops) - {"no_policy"}
    finally:
        if server is not None and server.poll() is None:
            server.kill()
        a.stop()
        b.stop()


def offloaded(packet: bytes, *, v=4, mss: int) -> bytes:
    """A TSO read: virtio_net_hdr (GSO TCP, NEEDS_CSUM) + the super-packet with the pseudo-header
    sum in its checksum field, as the kernel hands it over."""
    ip = 20 if v == 4 else 40
    end = ip + (packet[ip + 12] >> 4) * 4
    p = bytearray(packet)
    tcp_len = len(p) - ip
    pseudo = csum((p[12:20] if v == 4 else p[8:40]) + struct.pack("!HH", 6, tcp_len))
    p[ip + 16:ip + 18] = struct.pack("!H", pseudo)
    gso = VIRTIO_NET_HDR_GSO_TCPV4 if v == 4 else VIRTIO_NET_HDR_GSO_TCPV6
    return VNET_HDR.pack(VIRTIO_NET_HDR_F_NEEDS_CSUM, gso, end, mss, ip, 16) + bytes(p)


@pytest.mark.parametrize("v", [4, 6])
@pytest.mark.parametrize("mss,size", [(1386, 20000), (1386, 1386 * 3), (1000, 999), (536, 64000), (537, 5001),
                                      (1386, 1387)])
def test_segment_offloaded_then_coalesce_is_the_identity(v, mss, size):
    from ipsec_core.vpn.tun import segment_offloaded

    data = bytes((i * 7 + 3) & 0xFF for i in range(size))
    big = segment(v=v, seq=0xFFFFF000, payload=data, flags=ACK | PSH | 0x80, ident=65530)   # seq wraps
    single = segment(v=v, seq=1, payload=b"ack only" + bytes(1))                             # odd length
    ip = 20 if v == 4 else 40
    partial = bytearray(single)
    partial[ip + 16:ip + 18] = struct.pack("!H", csum((single[12:20] if v == 4 else single[8:40])
                                                      + struct.pack("!HH", 6, len(single) - ip)))
    reads = [offloaded(big, v=v, mss=mss),
             VNET_HDR.pack(VIRTIO_NET_HDR_F_NEEDS_CSUM, 0, 0, 0, ip, 16) + bytes(partial),
             bytes(VNET_HDR.size) + single,
             VNET_HDR.pack(0, 5, 0, 100, 0, 0) + single]                                    # UDP GSO: unknown
    out, supers, errors = segment_offloaded(reads)
    n = -(-size // mss)
    assert (supers, errors, len(out)) == (1, 1, n + 2)
    segs, (fixed, plain) = out[:n], out[n:]
    assert plain == single
    end = ip + 32
    for k, s in enumerate(segs):
        assert len(s) - end == min(mss, size - k * mss)
        tcp_len = len(s) - ip
        pseudo = (s[12:20] if v == 4 else s[8:40]) + struct.pack("!HH", 6, tcp_len)
        assert csum(pseudo + s[ip:]) == 0xFFFF, k                                            # valid TCP checksum
        assert struct.unpack("!I", s[ip + 4:ip + 8])[0] == (0xFFFFF000 + k * mss) & 0xFFFFFFFF
        last = k == n - 1
        assert s[ip + 13] == (ACK | (PSH if last else 0) | (0x80 if k == 0 else 0))
        if v == 4:
            assert csum(s[:20]) == 0xFFFF and struct.unpack("!H", s[4:6])[0] == (65530 + k) & 0xFFFF
            assert struct.unpack("!H", s[2:4])[0] == len(s)
        else:
            assert struct.unpack("!H", s[4:6])[0] == len(s) - 40
    assert b"".join(s[end:] for s in segs) == data
    pseudo = (fixed[12:20] if v == 4 else fixed[8:40]) + struct.pack("!HH", 6, len(fixed) - ip)
    assert csum(pseudo + fixed[ip:]) == 0xFFFF and fixed[:ip + 16] == single[:ip + 16]
    # and back: the segments coalesce into runs whose payload is the original
    merged = list(coalesce_tcp(segs[1:]))
    assert b"".join(p[end:] for _, p, _ in merged) == data[mss:]


def udp4(seq: int, *, src=bytes([198, 51, 100, 9]), dst=bytes([192, 0, 2, 1]), port=9999) -> bytes:
    body = seq.to_bytes(4, "big") * (1 + seq % 50)
    udp = struct.pack("!HHHH", 4000, port, 8 + len(body), 0) + body      # checksum 0: none (IPv4)
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), seq & 0xFFFF, 0, 64, 17, 0, src, dst))
    ip[10:12] = struct.pack("!H", ~csum(bytes(ip)) & 0xFFFF)
    return bytes(ip) + udp


@pytest.mark.root
@pytest.mark.parametrize("vnet_hdr", [True, False], ids=["vnet-hdr", "plain"])
def test_write_thread_keeps_order_and_counts(netns, vnet_hdr):
    """Batches written through the write thread (and the small ones written inline while it is
    idle) reach a local socket complete and in order."""
    import socket

    from ipsec_core.vpn.netlink import Netlink
    from ipsec_core.vpn.netns import call_in_netns
    from ipsec_core.vpn.tun import TunDevice

    def setup():
        tun = TunDevice("fpw%d", vnet_hdr=vnet_hdr, write_thread=True)
        with Netlink() as nl:
            nl.set_up(tun.index)
            nl.add_address(tun.index, "192.0.2.1/24")
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.bind(("192.0.2.1", 9999))
        sock.settimeout(3)
        return tun, sock

    subprocess.run(["ip", "netns", "exec", netns, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0",
                    "net.ipv4.conf.default.rp_filter=0"], check=False)
    tun, sock = call_in_netns(netns, setup)
    try:
        sizes, seq = [1, 3, 64, 200, 2, 8, 9, 500, 1], 0
        sent = []
        for n in sizes:
            batch = [udp4(seq + k) for k in range(n)]
            seq += n
            assert tun.write_batch(batch) == n
            sent += batch
        got = [sock.recv(4096) for _ in sent]
        assert got == [p[28:] for p in sent]
        deadline = time.monotonic() + 2
        while tun.packets_written < len(sent) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert tun.packets_written == len(sent) and tun.write_errors == 0 and tun.write_dropped == 0
    finally:
        tun.close()
        sock.close()
    assert tun.closed


@pytest.mark.parametrize("v", [4, 6])
@pytest.mark.parametrize("mss,size", [(1386, 20000), (536, 64000), (1000, 2001), (1388, 1389)])
def test_super_packet_rows_with_checksum_offload(v, mss, size):
    """TcpSuper.rows with room around each segment and `partial` checksums, completed the way
    the ESP framing completes them (complete_checksums), gives segment_offloaded's segments."""
    from ipsec_core.dataplane.batch import complete_checksums
    from ipsec_core.vpn.tun import TcpSuper, segment_offloaded

    data = bytes((i * 11 + 5) & 0xFF for i in range(size))
    read = offloaded(segment(v=v, seq=77, payload=data, flags=ACK | PSH, ident=3), v=v, mss=mss)
    want, _, _ = segment_offloaded([read])
    gso = VIRTIO_NET_HDR_GSO_TCPV4 if v == 4 else VIRTIO_NET_HDR_GSO_TCPV6
    sup = TcpSuper.parse(read, gso, mss)
    assert sup.even and sup.segment_length() == len(want[0])
    rows, count, last = sup.rows(head=16, tail=7, partial=True)
    assert rows.shape == (len(want), 16 + sup.segment_length() + 7) and count == len(want)
    got = [row[16:16 + sup.segment_length()].tobytes() for row in rows[:-1]] + [rows[-1, 16:16 + last].tobytes()]
    assert got != want                                        # the checksums are partial
    assert complete_checksums(got, sup.ip, 16) == want
    headers = sup.headers()
    assert headers[:sup.ip] != want[0][:sup.ip] or v == 6    # a payload-less packet
    assert len(headers) == sup.end


@pytest.mark.parametrize("seed", range(6))
def test_coalesce_batch_writes_are_coalesce_tcp_runs(seed):
    """coalesce_batch (vectorised, over a PacketBatch) covers every packet once, in order, and
    each of its writes is exactly what coalesce_tcp makes of the same packets: two flows
    interleaved, PSH, short and empty segments, sequence gaps, IPv4 and IPv6."""
    import random

    from ipsec_core.dataplane.batch import PacketBatch
    from ipsec_core.vpn.tun import coalesce_batch

    rng = random.Random(seed)
    merged = 0
    for trial in range(150):
        packets, seqs = [], {0: 1000, 1: 0xFFFFFF00}
        v = rng.choice([4, 6])
        for i in range(rng.randrange(1, 50)):
            f = rng.choice([0, 0, 0, 1])
            size = rng.choice([1000, 1000, 1000, 500, 0, 1001])
            flags = ACK | (PSH if rng.random() < 0.08 else 0)
            p = segment(v=v, seq=seqs[f], payload=rng.randbytes(size), flags=flags, ident=i)
            if f == 1:                                       # another flow: another source port
                p = bytearray(p)
                p[(20 if v == 4 else 40) + 1] ^= 1
                p = bytes(p)
            seqs[f] = (seqs[f] + size + (7 if rng.random() < 0.05 else 0)) & 0xFFFFFFFF
            packets.append(p)
        writes = coalesce_batch(PacketBatch.from_packets(packets, headroom=rng.choice([0, 5]),
                                                         tailroom=rng.choice([0, 3])))
        i = 0
        for data, count in writes:
            assert [(h + q, k) for h, q, k in coalesce_tcp(packets[i:i + count])] == [(data, count)]
            merged += count > 1
            i += count
        assert i == len(packets)
    assert merged > 100

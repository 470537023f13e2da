"""Fuzz target: IPv4 and IPv6 fragment reassembly (`Reassembler`), with a small memory budget so
eviction is reached.

Input: a sequence of steps.  Each step's first byte picks raw bytes (a length byte, then the
packet) or a fragment of one of a few template datagrams (IPv4 / IPv6, identification, MTU,
which fragment, an optional byte edit), and how far the clock moves.  Allowed: the packet, a
reassembled datagram, None, or PacketDropped with a reason.  Checked after every step: memory
within `max_bytes` and datagrams within `max_datagrams`; a reassembled datagram is a
well-formed IP packet.  After the steps a fresh fragmented datagram still reassembles, and
once everything has timed out the reassembler holds nothing (memory 0: no accounting leak).
"""
from __future__ import annotations

import itertools

from ipsec_core.dataplane.fragments import Reassembler, fragment_ipv4, fragment_ipv6
from ipsec_core.errors import DropReason, PacketDropped
from ipsec_core.wire.ip import checksum, ipv4_header_len, ipv6_headers

from fuzz._harness import Reader, main
from fuzz._sa import ip_packet

TARGET = "fragments"
MAX_BYTES = 24 * 1024
MAX_DATAGRAMS = 6
_probe_ids = itertools.count(1)


def template(version: int, ident: int, size: int) -> bytes:
    src, dst = ("198.51.100.1", "203.0.113.1") if version == 4 else ("2001:db8::1", "2001:db8::2")
    body = bytes((ident + i) & 0xFF for i in range(size))
    packet = bytearray(ip_packet(version, src, dst, body))
    if version == 4:
        packet[4:6] = ident.to_bytes(2, "big")
        packet[10:12] = b"\0\0"
        packet[10:12] = checksum(packet[:20]).to_bytes(2, "big")
    return bytes(packet)


def fragments_of(version: int, ident: int, size: int, mtu: int) -> list[bytes]:
    packet = template(version, ident, size)
    if version == 4:
        return fragment_ipv4(packet, mtu)
    return fragment_ipv6(packet, mtu, ident=ident)


def check_datagram(out: bytes) -> None:
    if out[0] >> 4 == 4:
        ihl = ipv4_header_len(out)
        assert (out[2] << 8 | out[3]) == len(out) and ihl <= len(out)
    else:
        assert 40 + (out[4] << 8 | out[5]) == len(out), "IPv6 payload length wrong"
        ipv6_headers(out)


def test_one_input(data: bytes) -> None:
    r = Reader(data)
    re = Reassembler(max_bytes=MAX_BYTES, max_datagrams=MAX_DATAGRAMS)
    now = 0.0
    for _ in range(64):
        if not r.left():
            break
        step = r.int()
        if step & 1:
            packet = r.bytes(r.int())
        else:
            version = 6 if step & 2 else 4
            frags = fragments_of(version, ident=r.int() % 4, size=8 + r.int(2) % 3000,
                                 mtu=(1280 if version == 6 else 68) + r.int() * 4)
            packet = bytearray(frags[r.int() % len(frags)])
            if step & 4 and packet:
                packet[r.int(2) % len(packet)] ^= r.int() or 1
            packet = bytes(packet)
        now += (step >> 4) * (step >> 4)          # 0 .. 225 s: timeouts are reached
        try:
            out = re.push(packet, now=now)
        except PacketDropped as drop:
            assert isinstance(drop.reason, DropReason)
        else:
            if out is not None and out is not packet:
                check_datagram(out)
        assert re.memory <= MAX_BYTES, f"reassembly memory {re.memory} over {MAX_BYTES}"
        assert len(re) <= MAX_DATAGRAMS
    probe = template(4, 0, 1000)
    probe = probe[:12] + bytes((192, 0, 2, 99)) + probe[16:]   # a source no step uses
    ident = next(_probe_ids) & 0xFFFF
    result = None
    for frag in fragment_ipv4(_with_ident(probe, ident), 300):
        result = re.push(frag, now=now)
    assert result is not None and result[20:] == probe[20:], "a valid datagram did not reassemble"
    re.expire(now + 1000.0)
    assert len(re) == 0 and re.memory == 0, f"{len(re)} datagrams / {re.memory} bytes left after timeout"


def _with_ident(packet: bytes, ident: int) -> bytes:
    buf = bytearray(packet)
    buf[4:6] = ident.to_bytes(2, "big")
    buf[10:12] = b"\0\0"
    buf[10:12] = checksum(buf[:20]).to_bytes(2, "big")
    return bytes(buf)


if __name__ == "__main__":
    main(TARGET, test_one_input)

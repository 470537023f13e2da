"""A fragment flood keeps `Reassembler` within its configured memory (measured with tracemalloc,
not taken from its own accounting) and the time per fragment flat as the flood grows: fragments
of datagrams that never complete, many tiny pieces of one datagram, and overlaps."""
from __future__ import annotations

import gc
import ipaddress
import struct
import time
import tracemalloc

import pytest

from ipsec_core.dataplane.fragments import Reassembler
from ipsec_core.errors import PacketDropped
from ipsec_core.wire.ip import checksum

MAX_BYTES = 256 * 1024
MAX_DATAGRAMS = 256
FLOOD = 6000


def _fragment(ident: int, *, offset: int, size: int, more: bool = True, src: int = 1) -> bytes:
    head = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + size, ident & 0xFFFF,
                                 (0x2000 if more else 0) | (offset // 8), 64, 17, 0,
                                 ipaddress.ip_address(f"198.51.{src >> 8 & 0xFF}.{src & 0xFF}").packed,
                                 ipaddress.ip_address("203.0.113.1").packed))
    head[10:12] = checksum(head).to_bytes(2, "big")
    return bytes(head) + bytes(size)


def _incomplete(i: int) -> bytes:
    """The first fragment of a datagram whose rest never comes; one in 8 a large one."""
    return _fragment(i, offset=0, size=1400 if i % 8 == 0 else 64, src=i >> 16)


def _tiny(i: int) -> bytes:
    """Piece i of one datagram, 8 bytes each, never the last."""
    return _fragment(7, offset=8 * i, size=8, src=99)


def _overlapping(i: int) -> bytes:
    """Two fragments per datagram that overlap: the datagram dies, its later fragments too."""
    return _fragment(i // 3, offset=8 * (i % 3), size=16, src=7)


def _push_all(re: Reassembler, packets) -> None:
    for packet in packets:
        try:
            re.push(packet, now=0.0)
        except PacketDropped:
            pass


@pytest.mark.parametrize("make", [_incomplete, _tiny, _overlapping], ids=["incomplete", "tiny", "overlap"])
def test_fragment_flood_stays_within_its_memory_bound(make):
    packets = [make(i) for i in range(FLOOD)]
    gc.collect()
    tracemalloc.start()
    try:
        re = Reassembler(max_bytes=MAX_BYTES, max_datagrams=MAX_DATAGRAMS)
        base = tracemalloc.get_traced_memory()[0]
        _push_all(re, packets[:FLOOD // 3])
        early = tracemalloc.get_traced_memory()[0] - base
        _push_all(re, packets[FLOOD // 3:])
        late = tracemalloc.get_traced_memory()[0] - base
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert re.memory <= MAX_BYTES and len(re) <= MAX_DATAGRAMS
    # Python objects cost more than the charged overhead estimates in places; allow 2x.
    assert late <= 2 * MAX_BYTES, f"{late} bytes held after {FLOOD} fragments"
    assert peak <= 2 * MAX_BYTES + 64 * 1024, f"peak {peak} bytes"
    assert late <= max(early * 1.5, early + 64 * 1024), f"memory still growing: {early} -> {late}"


@pytest.mark.parametrize("make", [_incomplete, _tiny], ids=["incomplete", "tiny"])
def test_time_per_fragment_stays_flat(make):
    packets = [make(i) for i in range(FLOOD)]

    def per_input(chunk):
        start = time.perf_counter()
        _push_all(re, chunk)
        return (time.perf_counter() - start) / len(chunk)

    ratios = []
    for _ in range(3):
        re = Reassembler(max_bytes=MAX_BYTES, max_datagrams=MAX_DATAGRAMS)
        first = per_input(packets[:1000])
        _push_all(re, packets[1000:-1000])
        last = per_input(packets[-1000:])
        ratios.append(last / first)
    # Generous: eviction work is constant per fragment; a scan of everything held would make
    # the last thousand tens of times slower than the first.
    assert min(ratios) < 4.0, f"per-fragment time grew by {min(ratios):.1f}x"

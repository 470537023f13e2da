"""Fuzz target: the stateless wire codecs: IPv4 header checks, the IPv6 extension-header walk
(with and without stepping over AH), where ESP/AH sits in an IPv6 packet, the AH header and
the ICV views of IPv4 options and IPv6 extension headers (both directions), tunnel-mode
decapsulation, and the Internet checksum.

Byte 0 picks the next header / outer version for `decapsulate`; the rest is the packet.
Allowed: results within the packet, PacketDropped with a reason, and LocalError for an
outbound AH view of a routing header whose final form is not predictable.
"""
from __future__ import annotations

from ipsec_core.dataplane.tunnel import decapsulate
from ipsec_core.errors import DropReason, LocalError, PacketDropped
from ipsec_core.wire.ah import ipv4_icv_header, ipv6_ah_offset, ipv6_icv_headers, pull_ah
from ipsec_core.wire.ip import (checksum, ipv4_header_len, ipv6_headers, ipv6_is_fragment,
                                ipv6_split)

from fuzz._harness import Reader, main

TARGET = "wire_ip"


def _dropped(call, *args, **kw):
    try:
        return call(*args, **kw)
    except PacketDropped as drop:
        assert isinstance(drop.reason, DropReason)
        return None


def _v4(packet: bytes) -> None:
    ihl = _dropped(ipv4_header_len, packet)
    if ihl is None:
        return
    total = (packet[2] << 8) | packet[3]
    assert 20 <= ihl <= total <= len(packet)
    view = _dropped(ipv4_icv_header, packet[:ihl])
    if view is not None:
        assert len(view) == ihl
    if packet[9] == 51:
        _dropped(pull_ah, packet, ihl, total)


def _v6(packet: bytes) -> None:
    for through_ah in (False, True):
        chain = _dropped(ipv6_headers, packet, through_ah=through_ah)
        if chain is None:
            continue
        offsets = [off for _, off, _ in chain]
        assert offsets == sorted(offsets) and offsets[-1] <= len(packet), chain
        assert all(nh_at < off for _, off, nh_at in chain), chain
        if not through_ah:
            continue
        found = ipv6_ah_offset(chain)
        if found is None:
            continue
        ah_off, _ = found
        if _dropped(pull_ah, packet, ah_off, len(packet)) is None:
            continue
        for outbound in (False, True):
            try:
                view = _dropped(ipv6_icv_headers, packet, ah_off, chain, outbound=outbound)
            except LocalError:
                assert outbound
                continue
            if view is not None:
                assert len(view) == ah_off
    split = _dropped(ipv6_split, packet)
    if split is not None:
        off, nh_at, _ = split
        assert nh_at < off <= len(packet)
        _dropped(ipv6_is_fragment, packet[:off])


def test_one_input(data: bytes) -> None:
    r = Reader(data)
    selector = r.int()
    packet = r.rest()
    if packet:
        if packet[0] >> 4 == 4:
            _v4(packet)
        elif packet[0] >> 4 == 6:
            _v6(packet)
    nh = (4, 41, selector)[selector % 3]
    outer = bytes((0x45 if selector & 0x40 else 0x60, selector))
    try:
        inner = decapsulate(packet, nh, outer, 4 if selector & 0x40 else 6)
    except PacketDropped as drop:
        assert isinstance(drop.reason, DropReason)
    else:
        assert len(inner) <= len(packet)
    even = packet[: len(packet) & ~1]
    value = checksum(even)
    assert 0 <= value <= 0xFFFF
    if even:
        assert checksum(even + value.to_bytes(2, "big")) in (0, 0xFFFF)


if __name__ == "__main__":
    main(TARGET, test_one_input)

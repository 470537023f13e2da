"""IPv4 / IPv6 header codecs and checksums (RFC 791, RFC 8200, RFC 1071, RFC 1624).

Owns: parsing and building the IP headers the ESP pipeline touches, plus the Internet checksum.
Must not: do I/O or crypto.
"""
from __future__ import annotations

import struct

from ipsec_core.errors import DropReason, PacketDropped

IPPROTO_HOPOPTS = 0
IPPROTO_IPIP = 4
IPPROTO_UDP = 17
IPPROTO_IPV6 = 41
IPPROTO_ROUTING = 43
IPPROTO_FRAGMENT = 44
IPPROTO_ESP = 50
IPPROTO_AH = 51
IPPROTO_NONE = 59
IPPROTO_DSTOPTS = 60

_V4 = struct.Struct("!BBHHHBBH4s4s")
_V6 = struct.Struct("!IHBB16s16s")
IPV4_HEADER_BYTES = 20
IPV6_HEADER_BYTES = 40


def checksum(data: bytes | bytearray | memoryview) -> int:
    """The Internet checksum (RFC 1071) of `data`."""
    if len(data) % 2:
        data = bytes(data) + b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def checksum_update(old_sum: int, old_word: int, new_word: int) -> int:
    """Incremental checksum update HC' = ~(~HC + ~m + m') (RFC 1624 eqn. 3)."""
    total = (~old_sum & 0xFFFF) + (~old_word & 0xFFFF) + new_word
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ip_version(packet: bytes) -> int:
    if not packet:
        raise PacketDropped(DropReason.MALFORMED, "empty packet")
    return packet[0] >> 4


def ipv4_header_len(packet: bytes) -> int:
    """Validate an IPv4 header and return its length in bytes."""
    if len(packet) < IPV4_HEADER_BYTES:
        raise PacketDropped(DropReason.MALFORMED, f"IPv4 packet of {len(packet)} bytes")
    ihl = (packet[0] & 0x0F) * 4
    total = (packet[2] << 8) | packet[3]
    if ihl < IPV4_HEADER_BYTES or total < ihl or total > len(packet):
        raise PacketDropped(DropReason.MALFORMED,
                            f"IPv4 header length {ihl} / total length {total} vs {len(packet)} bytes")
    return ihl


def build_ipv4(*, src: bytes, dst: bytes, proto: int, payload_len: int, tos: int = 0,
               ident: int = 0, flags_frag: int = 0, ttl: int = 64) -> bytes:
    """A 20-byte IPv4 header with a correct checksum."""
    hdr = _V4.pack(0x45, tos, IPV4_HEADER_BYTES + payload_len, ident, flags_frag, ttl, proto, 0, src, dst)
    return hdr[:10] + checksum(hdr).to_bytes(2, "big") + hdr[12:]


def build_ipv6(*, src: bytes, dst: bytes, next_header: int, payload_len: int,
               traffic_class: int = 0, flow_label: int = 0, hop_limit: int = 64) -> bytes:
    return _V6.pack((6 << 28) | (traffic_class << 20) | flow_label, payload_len, next_header,
                    hop_limit, src, dst)


def fix_ipv4_header(header: bytearray) -> None:
    """Recompute the checksum of an IPv4 header in place.  `header` may be a whole packet: only
    the first IHL * 4 bytes are summed."""
    header[10:12] = b"\0\0"
    header[10:12] = checksum(memoryview(header)[:(header[0] & 0x0F) * 4]).to_bytes(2, "big")


#: Extension headers the walkers step over (RFC 8200 4): hop-by-hop, routing, fragment,
#: destination options.  AH (51) is stepped over only when asked (`through_ah`); ESP (50) ends
#: every walk, since what follows it is encrypted.
IPV6_EXTENSION_HEADERS = frozenset({IPPROTO_HOPOPTS, IPPROTO_ROUTING, IPPROTO_FRAGMENT,
                                    IPPROTO_DSTOPTS})
FRAGMENT_HEADER_BYTES = 8


def ipv6_headers(packet: bytes, *, through_ah: bool = False) -> list[tuple[int, int, int]]:
    """The header chain of an IPv6 packet after the fixed header, as (protocol, offset, nh_at)
    triples: `offset` is where that header starts, `nh_at` the offset of the next-header byte
    that names it (6 for the first).  Every extension header comes first, in order; the last
    triple is the header that ends the walk: an upper-layer protocol, ESP, No Next Header (59),
    AH unless `through_ah`, or the fragmentable part of a non-first fragment (whose first bytes
    are not a header: check for a fragment header before reading it).

    Raises PacketDropped(MALFORMED) for a truncated chain or a hop-by-hop header anywhere but
    right after the fixed header (RFC 8200 4.1).
    """
    if len(packet) < IPV6_HEADER_BYTES:
        raise PacketDropped(DropReason.MALFORMED, f"IPv6 packet of {len(packet)} bytes")
    out: list[tuple[int, int, int]] = []
    nh_at, nh, off, end = 6, packet[6], IPV6_HEADER_BYTES, len(packet)
    while nh in IPV6_EXTENSION_HEADERS or (through_ah and nh == IPPROTO_AH):
        if nh == IPPROTO_HOPOPTS and off != IPV6_HEADER_BYTES:
            raise PacketDropped(DropReason.MALFORMED, "hop-by-hop options header not first (RFC 8200 4.1)")
        if off + 8 > end:
            raise PacketDropped(DropReason.MALFORMED, "truncated IPv6 extension header")
        if nh == IPPROTO_FRAGMENT:
            size = FRAGMENT_HEADER_BYTES
        elif nh == IPPROTO_AH:
            size = (packet[off + 1] + 2) * 4
        else:
            size = (packet[off + 1] + 1) * 8
        if off + size > end:
            raise PacketDropped(DropReason.MALFORMED, "truncated IPv6 extension header")
        out.append((nh, off, nh_at))
        later_fragment = nh == IPPROTO_FRAGMENT and ((packet[off + 2] << 8) | packet[off + 3]) & 0xFFF8
        nh_at, nh = off, packet[off]
        off += size
        if later_fragment:
            break          # a non-first fragment: what follows is not a header
    out.append((nh, off, nh_at))
    return out


def ipv6_split(packet: bytes) -> tuple[int, int, int]:
    """Where ESP/AH goes in an IPv6 packet (RFC 4303 3.1.1, RFC 4302 3.1.1): after hop-by-hop,
    routing and fragment headers, and after destination options that precede a routing header
    (or an ESP/AH header already there: ESP then AH on one packet, or an AH put after them by
    the peer).  Destination options not followed by one of those stay inside, protected.

    Returns (offset of the first byte that is protected, offset of the next-header byte that
    must be changed to ESP/AH, the protocol number found at that point).  On a received packet
    it finds the ESP or AH header the same way.
    """
    chain = ipv6_headers(packet)
    split = 0
    for i, (proto, _, _) in enumerate(chain[:-1]):
        if proto in (IPPROTO_HOPOPTS, IPPROTO_ROUTING, IPPROTO_FRAGMENT) or (
                proto == IPPROTO_DSTOPTS and chain[i + 1][0] in (IPPROTO_ROUTING, IPPROTO_ESP, IPPROTO_AH)):
            split = i + 1
    proto, off, nh_at = chain[split]
    return off, nh_at, proto


def ipv6_is_fragment(packet: bytes) -> bool:
    """True when the IPv6 packet carries a fragment header (first fragment or not) before any
    ESP/AH header: IPsec applies to whole packets, reassemble it first (RFC 4301 7)."""
    return any(proto == IPPROTO_FRAGMENT for proto, _, _ in ipv6_headers(packet)[:-1])

"""The AH header (RFC 4302 section 2) and the bytes its ICV covers (RFC 4302 section 3.3.3).

Owns: the AH header layout and its alignment (32 bits over IPv4, 64 bits over IPv6), and the
"as the receiver will see it" copy of the IP header and the extension headers before AH that
goes into the ICV: mutable fields zeroed, mutable-but-predictable fields set to their value at
the final destination.
Must not: do crypto or hold SA state (that is `ipsec_core.dataplane.ah`).

What is zeroed or predicted, and why:

- IPv4 (RFC 4302 3.3.3.1.1): TOS, flags, fragment offset, TTL and header checksum are zeroed;
  version, IHL, total length, identification, protocol and the addresses are kept.  Options are
  classified by Appendix A: end of list, no operation, security (130), extended security (133),
  commercial security (134), router alert (148) and SDB (149) are immutable; every other option
  is zeroed whole (type and length included: "the entire option is viewed as a unit").  With a
  loose or strict source route option not yet used up, the destination address is the last
  address of the route (mutable but predictable).
- IPv6 (RFC 4302 3.3.3.1.2): traffic class, flow label and hop limit are zeroed.  In hop-by-hop
  and destination options headers, the Option Data of every option whose type has the
  "may change en route" bit (0x20, RFC 8200 4.2) is zeroed; option type and length are kept.
  A routing header is put in the form it has at the final destination: segments left 0, and
  the destination address and address list rotated as every hop would have done (type 0 and
  type 2), or the destination taken from segment list [0] (type 4, segment routing, RFC 8754).
- The AH header itself: the ICV is zeroed; the IV of AES-GMAC (RFC 4543 section 4) and any
  alignment padding are covered as sent.
"""
from __future__ import annotations

import struct

from ipsec_core.errors import DropReason, LocalError, PacketDropped
from ipsec_core.wire.ip import (IPPROTO_AH, IPPROTO_DSTOPTS, IPPROTO_HOPOPTS, IPPROTO_ROUTING,
                                  IPV4_HEADER_BYTES, IPV6_HEADER_BYTES)

#: Next header, payload length, reserved, SPI, sequence number.
AH_FIXED_BYTES = 12
#: IPv4 options whose value is part of the ICV (RFC 4302 Appendix A.1): EOL, NOP, SEC, E-SEC,
#: CIPSO, router alert, SDB.  Every other option is zeroed whole.
IPV4_IMMUTABLE_OPTIONS = frozenset({0, 1, 130, 133, 134, 148, 149})
IPV4_LSRR, IPV4_SSRR = 131, 137
#: IPv6 option type bit "Option Data may change en route" (RFC 8200 4.2).
IPV6_OPTION_MUTABLE = 0x20
_AH_HEAD = struct.Struct("!BBHII")


def ah_header_bytes(auth_data_bytes: int, ip_version: int) -> int:
    """Length of the whole AH header for `auth_data_bytes` of IV + ICV: the fixed 12 bytes plus
    the authentication data, padded to a multiple of 4 (IPv4) or 8 (IPv6) octets (RFC 4302 2.6)."""
    align = 8 if ip_version == 6 else 4
    raw = AH_FIXED_BYTES + auth_data_bytes
    return raw + (-raw % align)


def push_ah(*, next_header: int, length: int, spi: int, seq_low: int, auth_data: bytes) -> bytes:
    """An AH header of `length` bytes: fixed part, `auth_data` (IV and ICV), zero padding."""
    return (_AH_HEAD.pack(next_header, length // 4 - 2, 0, spi, seq_low) + auth_data
            + bytes(length - AH_FIXED_BYTES - len(auth_data)))


def pull_ah(packet: bytes, offset: int, end: int) -> tuple[int, int, int, int]:
    """(next header, header length in bytes, SPI, low 32 sequence bits) of the AH header at
    `offset`; PacketDropped(TRUNCATED) when it does not fit before `end`."""
    if end - offset < AH_FIXED_BYTES:
        raise PacketDropped(DropReason.TRUNCATED, f"AH header of {end - offset} bytes")
    nh, plen, _, spi, seq = _AH_HEAD.unpack_from(packet, offset)
    length = (plen + 2) * 4
    if offset + length > end:
        raise PacketDropped(DropReason.TRUNCATED, f"AH payload length {plen} runs past the packet")
    return nh, length, spi, seq


# ----------------------------------------------------------------------------------------------
# IPv4
# ----------------------------------------------------------------------------------------------
def ipv4_icv_header(header: bytes) -> bytearray:
    """The IPv4 header (options included) as the ICV sees it."""
    h = bytearray(header)
    h[1] = 0                      # TOS: DSCP and ECN change en route
    h[6] = h[7] = 0               # flags and fragment offset
    h[8] = 0                      # TTL
    h[10] = h[11] = 0             # header checksum
    ihl = len(h)
    off = IPV4_HEADER_BYTES
    while off < ihl:
        kind = h[off]
        if kind == 0:             # end of option list: the rest is padding, kept as sent
            break
        if kind == 1:
            off += 1
            continue
        if off + 2 > ihl or h[off + 1] < 2 or off + h[off + 1] > ihl:
            raise PacketDropped(DropReason.MALFORMED, f"IPv4 option {kind} has a bad length")
        size = h[off + 1]
        if kind in (IPV4_LSRR, IPV4_SSRR) and size >= 7 and h[off + 2] <= size:
            # Route not used up: at the destination, the destination is the route's last hop.
            h[16:20] = h[off + size - 4:off + size]
        if kind not in IPV4_IMMUTABLE_OPTIONS:
            h[off:off + size] = bytes(size)
        off += size
    return h


# ----------------------------------------------------------------------------------------------
# IPv6
# ----------------------------------------------------------------------------------------------
def _zero_mutable_options(h: bytearray, start: int, end: int) -> None:
    off = start + 2
    while off < end:
        kind = h[off]
        if kind == 0:             # Pad1
            off += 1
            continue
        if off + 2 > end or off + 2 + h[off + 1] > end:
            raise PacketDropped(DropReason.MALFORMED, f"IPv6 option {kind} overruns its header")
        size = h[off + 1]
        if kind & IPV6_OPTION_MUTABLE:
            h[off + 2:off + 2 + size] = bytes(size)
        off += 2 + size


def _routing_at_destination(h: bytearray, off: int, *, outbound: bool) -> None:
    kind, left = h[off + 2], h[off + 3]
    if left == 0:
        return                    # already as the final destination sees it
    size = (h[off + 1] + 1) * 8
    if kind in (0, 2):            # RFC 2460 type 0 (deprecated by RFC 5095), RFC 6275 type 2
        count = (size - 8) // 16
        if left > count:
            raise PacketDropped(DropReason.MALFORMED,
                                f"routing header segments left {left} > {count} addresses")
        for i in range(count - left, count):
            at = off + 8 + 16 * i
            h[24:40], h[at:at + 16] = h[at:at + 16], h[24:40]
    elif kind == 4:               # segment routing header: the final segment is entry 0
        # RFC 8754 2, 4.3.1: Last Entry indexes the segment list, which must fit the header,
        # and Segments Left may not exceed Last Entry + 1.
        count = (size - 8) // 16
        last_entry = h[off + 4]
        if count < 1 or last_entry >= count or left > last_entry + 1:
            raise PacketDropped(DropReason.MALFORMED,
                                f"segment routing header: segments left {left}, last entry "
                                f"{last_entry}, room for {count} segments")
        h[24:40] = h[off + 8:off + 24]
    elif outbound:
        raise LocalError(f"routing header type {kind} with segments left {left}: its final "
                         "form is not predictable here, so AH cannot cover it")
    else:
        raise PacketDropped(DropReason.MALFORMED, f"routing header type {kind} with segments "
                                                  f"left {left}: not the final destination")
    h[off + 3] = 0


def ipv6_icv_headers(packet: bytes, ah_offset: int, chain: list[tuple[int, int, int]], *,
                     outbound: bool) -> bytearray:
    """The IPv6 header and the extension headers before AH (`packet[:ah_offset]`) as the ICV
    sees them.  `chain` is `ipv6_headers(packet)`; a fragment header never reaches here
    (IPsec applies to whole packets)."""
    h = bytearray(packet[:ah_offset])
    h[0] = 0x60                   # version kept; traffic class and flow label zeroed
    h[1] = h[2] = h[3] = 0
    h[7] = 0                      # hop limit
    for proto, off, _ in chain:
        if off >= ah_offset:
            break
        if proto in (IPPROTO_HOPOPTS, IPPROTO_DSTOPTS):
            _zero_mutable_options(h, off, off + (h[off + 1] + 1) * 8)
        elif proto == IPPROTO_ROUTING:
            _routing_at_destination(h, off, outbound=outbound)
    return h


def ipv6_ah_offset(chain: list[tuple[int, int, int]]) -> tuple[int, int] | None:
    """(offset of the AH header, offset of the next-header byte naming it), or None."""
    for proto, off, nh_at in chain:
        if proto == IPPROTO_AH:
            return off, nh_at
    return None


__all__ = ["AH_FIXED_BYTES", "ah_header_bytes", "push_ah", "pull_ah", "ipv4_icv_header",
           "ipv6_icv_headers", "ipv6_ah_offset", "IPV4_IMMUTABLE_OPTIONS", "IPV6_HEADER_BYTES"]

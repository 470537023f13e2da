"""Tunnel-mode header rules shared by ESP and AH (RFC 4301 5.1.2, RFC 6040), and the
one-packet-at-a-time batch loops both engines fall back to.

Owns: building the outer IPv4/IPv6 header from the inner one (DSCP and ECN copied, DF copied,
set or cleared as configured, TTL / hop limit constructed), checking and unwrapping the inner
packet on the way in (TFC padding cut at the inner IP length, ECN combined per RFC 6040), and
`protect_each` / `unprotect_each`.
Must not: do I/O or crypto.
"""
from __future__ import annotations

from ipsec_core.errors import DropReason, PacketDropped
from ipsec_core.wire.ip import (IPPROTO_IPIP, IPPROTO_IPV6, IPV6_HEADER_BYTES, build_ipv4,
                                  build_ipv6, fix_ipv4_header, ipv4_header_len)

_DF = 0x4000
_ECN_NOT_ECT, _ECN_ECT1, _ECN_ECT0, _ECN_CE = 0, 1, 2, 3


def ecn_decapsulate(inner: int, outer: int) -> int | None:
    """RFC 6040 section 4.2: the ECN codepoint of the forwarded inner packet, or None to drop."""
    if inner == _ECN_NOT_ECT:
        return None if outer == _ECN_CE else _ECN_NOT_ECT
    if outer == _ECN_CE:
        return _ECN_CE
    if inner == _ECN_ECT0 and outer == _ECN_ECT1:
        return _ECN_ECT1
    return inner


def tunnel_endpoints(cfg) -> tuple[bool, bytes, bytes]:
    """(outer header is IPv6, source, destination) of an SA's outer header, packed: local to
    remote outbound, remote to local inbound; (False, b"", b"") without tunnel addresses."""
    if cfg.local is None or cfg.remote is None:
        return False, b"", b""
    src, dst = (cfg.local, cfg.remote) if cfg.direction.value == "out" else (cfg.remote, cfg.local)
    return src.version == 6, src.packed, dst.packed


def refuse_over_ip_limit(length_field: int, packet: bytes) -> None:
    """PacketDropped(too_big) when the protected form of `packet` would need an IP length field
    (IPv4 total length, IPv6 payload length) of `length_field` > 65535.  Callers check before
    spending a sequence number, a nonce or an IPv4 identification."""
    if length_field > 0xFFFF:
        raise PacketDropped(DropReason.TOO_BIG, f"a {len(packet)}-byte packet would need an IP length "
                            f"of {length_field} protected, over the 65535 limit")


def outer_header(engine, inner: bytes, version: int, proto: int, length: int) -> bytes:
    """The outer header of a tunnel-mode packet carrying `inner` (IP version `version`) with
    `length` bytes after the header.  `engine` supplies src, dst, outer_v6, ttl, df_bit and the
    IPv4 identification counter `ident`, which this advances."""
    if version == 4:
        tos = inner[1]
        df = ((inner[6] << 8) | inner[7]) & _DF
    else:
        tos = ((inner[0] & 0x0F) << 4) | (inner[1] >> 4)
        df = 0
    if engine.df_bit != "copy":
        df = _DF if engine.df_bit == "set" else 0
    # DSCP copied, ECN copied (RFC 6040 normal mode), TTL constructed (RFC 4301 5.1.2.1).
    if engine.outer_v6:
        return build_ipv6(src=engine.src, dst=engine.dst, next_header=proto, payload_len=length,
                          traffic_class=tos, hop_limit=engine.ttl)
    engine.ident = (engine.ident + 1) & 0xFFFF
    return build_ipv4(src=engine.src, dst=engine.dst, proto=proto, payload_len=length, tos=tos,
                      ident=engine.ident, flags_frag=df, ttl=engine.ttl)


def decapsulate(payload: bytes, nh: int, outer: bytes, outer_version: int) -> bytes:
    """The inner packet of a verified tunnel-mode payload, or PacketDropped."""
    if nh == IPPROTO_IPIP:
        if not payload or payload[0] >> 4 != 4:
            raise PacketDropped(DropReason.MALFORMED, "next header 4 but not an IPv4 packet")
        ipv4_header_len(payload)
        payload = payload[:(payload[2] << 8) | payload[3]]    # drop TFC padding (RFC 4303 2.7)
        inner_ecn = payload[1] & 3
    elif nh == IPPROTO_IPV6:
        if len(payload) < IPV6_HEADER_BYTES or payload[0] >> 4 != 6:
            raise PacketDropped(DropReason.MALFORMED, "next header 41 but not an IPv6 packet")
        inner_len = IPV6_HEADER_BYTES + ((payload[4] << 8) | payload[5])
        if inner_len > len(payload):
            raise PacketDropped(DropReason.MALFORMED, "inner IPv6 payload length exceeds the packet")
        payload = payload[:inner_len]                          # drop TFC padding
        inner_ecn = (payload[1] >> 4) & 3
    else:
        raise PacketDropped(DropReason.BAD_NEXT_HEADER, f"tunnel-mode SA got next header {nh}")
    outer_ecn = outer[1] & 3 if outer_version == 4 else (outer[1] >> 4) & 3
    ecn = ecn_decapsulate(inner_ecn, outer_ecn)
    if ecn is None:
        raise PacketDropped(DropReason.ECN_DROP, "outer CE on a Not-ECT inner packet (RFC 6040)")
    if ecn == inner_ecn:
        return payload
    inner = bytearray(payload)
    if nh == IPPROTO_IPIP:
        inner[1] = (inner[1] & 0xFC) | ecn
        fix_ipv4_header(inner)
    else:
        inner[1] = (inner[1] & 0xCF) | (ecn << 4)
    return bytes(inner)


def protect_each(protect, packets: list[bytes], now: float) -> list[bytes]:
    """The single-packet path in order.  An error at packet k leaves the SA as one-by-one
    processing would, and carries the k packets already done in `.partial`."""
    out: list[bytes] = []
    try:
        for packet in packets:
            out.append(protect(packet, now))
    except Exception as exc:
        exc.partial = out
        raise
    return out


def unprotect_each(unprotect, packets: list[bytes], now: float) -> list:
    """The single-packet path in order: the inner packet or the PacketDropped, per packet."""
    out: list = []
    for packet in packets:
        try:
            out.append(unprotect(packet, now))
        except PacketDropped as drop:
            out.append(drop)
    return out

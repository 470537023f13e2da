"""IP fragments around IPsec.  ESP and AH apply to whole packets (RFC 4301 section 7): inbound
fragments are reassembled before unprotect, and a protected packet that exceeds the path MTU is
either fragmented after protection or answered with an ICMP "too big" (RFC 4301 section 8).

Owns:
- `Reassembler`: IPv4 (RFC 791) and IPv6 (RFC 8200 4.5) reassembly with bounded memory (a byte
  budget and a count of datagrams in progress, the oldest evicted first when either is full),
  timeouts driven by `now` (30 s for IPv4 as Linux's ipfrag_time, 60 s for IPv6 as RFC 8200),
  and the RFC 5722 rule: any overlap drops the whole datagram, including fragments that arrive
  later.  This module applies the same rule to IPv4 (RFC 791 would let later data overwrite
  earlier data; Linux drops overlapping IPv4 datagrams too since 2018).  An exact duplicate
  (same offset, same bytes) is dropped alone, as RFC 8200 4.5 allows.  A fragment that would
  make the datagram longer than 65535 octets is dropped (RFC 8200 4.5; the "ping of death").
- `fragment_ipv4` / `fragment_ipv6`: cut a packet to an MTU (IPv4: options without the copy
  flag only in the first fragment; IPv6: a fragment header after the per-fragment headers).
- `icmp_frag_needed` / `icmpv6_packet_too_big`: the PMTU answers (RFC 1191, RFC 8201).
Must not: do I/O or read a clock: `now` (seconds on any monotonic clock) is a required argument.
Every drop has a `DropReason` and is counted in `Reassembler.stats`.
"""
from __future__ import annotations

import bisect
from collections import Counter, OrderedDict

from ipsec_core.errors import DropReason, LocalError, PacketDropped
from ipsec_core.wire.ip import (FRAGMENT_HEADER_BYTES, IPPROTO_DSTOPTS, IPPROTO_FRAGMENT,
                                  IPPROTO_HOPOPTS, IPPROTO_ROUTING, IPV4_HEADER_BYTES,
                                  IPV6_HEADER_BYTES, build_ipv4, build_ipv6, checksum,
                                  fix_ipv4_header, ipv4_header_len, ipv6_headers)

IPPROTO_ICMP = 1
IPPROTO_ICMPV6 = 58
IPV4_MF = 0x2000
IPV4_DF = 0x4000
IPV4_MIN_MTU = 68              # RFC 791
IPV6_MIN_MTU = 1280            # RFC 8200 5
MAX_DATAGRAM_BYTES = 65535
#: Defaults: Linux's net.ipv4.ipfrag_high_thresh (4 MiB), one thousand datagrams in progress,
#: and the reassembly timeouts of Linux (IPv4, ipfrag_time) and RFC 8200 4.5 (IPv6).
DEFAULT_MAX_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_DATAGRAMS = 1024
IPV4_REASSEMBLY_SECONDS = 30.0
IPV6_REASSEMBLY_SECONDS = 60.0
#: What a datagram in progress and each held fragment cost beyond their data bytes (the Python
#: objects that track them), charged against `max_bytes` so that a flood of tiny fragments is
#: bounded too.
DATAGRAM_OVERHEAD_BYTES = 768
FRAGMENT_OVERHEAD_BYTES = 192


class _Datagram:
    __slots__ = ("deadline", "header", "nh_at", "next_header", "starts", "pieces", "end",
                 "received", "charged", "dead", "created")

    def __init__(self, deadline: float, created: float):
        self.deadline = deadline
        self.created = created
        self.header = b""          # from the first fragment: IPv4 header, or IPv6 unfragmentable part
        self.nh_at = 0             # IPv6: offset of the next-header byte that named the fragment header
        self.next_header = -1      # IPv6: next header of the first fragment's fragmentable part
        self.starts: list[int] = []                    # sorted fragment offsets
        self.pieces: list[tuple[int, int, bytes]] = []  # (start, end, data), same order
        self.end: int | None = None                     # data length, once the last fragment came
        self.received = 0
        self.charged = DATAGRAM_OVERHEAD_BYTES
        self.dead = False          # an overlap was seen: drop everything of it until the deadline


class Reassembler:
    """Collects IPv4 and IPv6 fragments and hands back whole datagrams.

    `push(packet, now=...)` returns the packet itself when it is not a fragment, the reassembled
    datagram when this fragment completed one, or None while the datagram is incomplete; a
    fragment that is dropped raises PacketDropped (also counted in `stats`).  Datagrams that do
    not complete in time are dropped by the next `push` or `expire(now)`.  `memory` is what is
    held now, never more than `max_bytes`; `len(r)` the datagrams in progress, never more than
    `max_datagrams`.
    """

    def __init__(self, *, max_bytes: int = DEFAULT_MAX_BYTES,
                 max_datagrams: int = DEFAULT_MAX_DATAGRAMS,
                 ipv4_timeout: float = IPV4_REASSEMBLY_SECONDS,
                 ipv6_timeout: float = IPV6_REASSEMBLY_SECONDS):
        if max_bytes < DATAGRAM_OVERHEAD_BYTES + FRAGMENT_OVERHEAD_BYTES or max_datagrams < 1:
            raise LocalError("Reassembler needs max_bytes >= "
                             f"{DATAGRAM_OVERHEAD_BYTES + FRAGMENT_OVERHEAD_BYTES} and max_datagrams >= 1")
        self.max_bytes = max_bytes
        self.max_datagrams = max_datagrams
        self.timeouts = {4: ipv4_timeout, 6: ipv6_timeout}
        # One queue per family: with one timeout each, insertion order is deadline order.
        self._queues: dict[int, OrderedDict[tuple, _Datagram]] = {4: OrderedDict(), 6: OrderedDict()}
        self.memory = 0
        self.stats: Counter = Counter()    # drop reasons, plus "fragments" and "reassembled"

    def __len__(self) -> int:
        return len(self._queues[4]) + len(self._queues[6])

    # -- housekeeping ------------------------------------------------------------------------
    def expire(self, now: float) -> int:
        """Drop every datagram whose reassembly time is over; returns how many were dropped."""
        dropped = 0
        for queue in self._queues.values():
            while queue:
                key, dgram = next(iter(queue.items()))
                if dgram.deadline > now:
                    break
                self._remove(queue, key)
                if not dgram.dead:
                    self.stats[DropReason.FRAG_TIMEOUT.value] += 1
                    dropped += 1
        return dropped

    def _remove(self, queue: OrderedDict, key: tuple) -> _Datagram:
        dgram = queue.pop(key)
        self.memory -= dgram.charged
        return dgram

    def _evict_oldest(self, keep: _Datagram | None) -> bool:
        oldest = None
        for queue in self._queues.values():
            for key, dgram in queue.items():
                if dgram is not keep:
                    if oldest is None or dgram.created < oldest[2].created:
                        oldest = (queue, key, dgram)
                    break
        if oldest is None:
            return False
        queue, key, dgram = oldest
        self._remove(queue, key)
        if not dgram.dead:
            self.stats[DropReason.FRAG_EVICTED.value] += 1
        return True

    def _make_room(self, need: int, *, new_datagram: bool, keep: _Datagram | None = None) -> None:
        while (self.memory + need > self.max_bytes
               or (new_datagram and len(self) >= self.max_datagrams)):
            if not self._evict_oldest(keep):
                return

    def _drop(self, reason: DropReason, detail: str) -> PacketDropped:
        self.stats[reason.value] += 1
        return PacketDropped(reason, detail)

    def _kill(self, dgram: _Datagram, detail: str) -> PacketDropped:
        """RFC 5722: drop the whole datagram and, until its deadline, every fragment of it."""
        self.memory -= dgram.charged - DATAGRAM_OVERHEAD_BYTES
        dgram.charged = DATAGRAM_OVERHEAD_BYTES
        dgram.pieces, dgram.starts, dgram.dead = [], [], True
        return self._drop(DropReason.FRAG_OVERLAP, detail)

    # -- the entry point ---------------------------------------------------------------------
    def push(self, packet: bytes, *, now: float) -> bytes | None:
        self.expire(now)
        if not packet:
            raise self._drop(DropReason.MALFORMED, "empty packet")
        version = packet[0] >> 4
        if version == 4:
            parsed = self._parse_v4(packet)
        elif version == 6:
            parsed = self._parse_v6(packet)
        else:
            raise self._drop(DropReason.MALFORMED, f"IP version {version}")
        if parsed is None:
            return packet if version == 4 else self._atomic(packet)
        key, start, data, more, header, nh_at, next_header = parsed
        self.stats["fragments"] += 1
        stop = start + len(data)
        if more and len(data) % 8:
            raise self._drop(DropReason.MALFORMED, f"fragment of {len(data)} bytes with more to "
                                                   "come: not a multiple of 8")
        if not data:
            raise self._drop(DropReason.MALFORMED, "fragment without data")
        # Header bytes that count towards the 65535 limit: IPv4 header, or IPv6 extension
        # headers of the unfragmentable part (the IPv6 payload length excludes the fixed 40).
        counted = len(header) if version == 4 else len(header) - IPV6_HEADER_BYTES
        if counted + stop > MAX_DATAGRAM_BYTES:
            raise self._drop(DropReason.FRAG_OVERSIZE, f"fragment ends at {stop}: the datagram "
                                                       f"would exceed {MAX_DATAGRAM_BYTES} octets")
        queue = self._queues[version]
        dgram = queue.get(key)
        cost = len(data) + FRAGMENT_OVERHEAD_BYTES + (len(header) if start == 0 else 0)
        if cost + DATAGRAM_OVERHEAD_BYTES > self.max_bytes:
            raise self._drop(DropReason.FRAG_EVICTED, "fragment larger than the reassembly budget")
        if dgram is None:
            self._make_room(cost + DATAGRAM_OVERHEAD_BYTES, new_datagram=True)
            dgram = _Datagram(now + self.timeouts[version], now)
            queue[key] = dgram
            self.memory += DATAGRAM_OVERHEAD_BYTES
        elif dgram.dead:
            raise self._drop(DropReason.FRAG_OVERLAP, "fragment of a datagram dropped for overlap")
        else:
            # The deadline stays the first fragment's: a trickle cannot keep a datagram alive.
            self._make_room(cost, new_datagram=False, keep=dgram)
            if self.memory + cost > self.max_bytes:
                raise self._drop(DropReason.FRAG_EVICTED, "reassembly memory full")
        # Where does it go, and does it overlap anything?
        i = bisect.bisect_left(dgram.starts, start)
        if i < len(dgram.pieces) and dgram.pieces[i][0] == start and dgram.pieces[i][1] == stop:
            if dgram.pieces[i][2] == data and (start != 0 or header == dgram.header):
                raise self._drop(DropReason.FRAG_DUPLICATE, f"duplicate of the fragment at {start}")
            raise self._kill(dgram, f"fragment at {start} repeats a range with other bytes")
        if (i > 0 and dgram.pieces[i - 1][1] > start) or (i < len(dgram.pieces) and dgram.pieces[i][0] < stop):
            raise self._kill(dgram, f"fragment {start}..{stop} overlaps another")
        if not more:
            if dgram.end is not None and dgram.end != stop:
                raise self._kill(dgram, f"two last fragments: ends {dgram.end} and {stop}")
            if dgram.pieces and dgram.pieces[-1][1] > stop:
                raise self._kill(dgram, f"last fragment ends at {stop}, before data already held")
            dgram.end = stop
        elif dgram.end is not None and stop > dgram.end:
            raise self._kill(dgram, f"fragment ends at {stop}, past the last fragment's {dgram.end}")
        dgram.starts.insert(i, start)
        dgram.pieces.insert(i, (start, stop, data))
        dgram.received += len(data)
        dgram.charged += cost
        self.memory += cost
        if start == 0:
            dgram.header, dgram.nh_at, dgram.next_header = header, nh_at, next_header
        if dgram.end is None or dgram.received != dgram.end or not dgram.header:
            return None
        self._remove(queue, key)
        self.stats["reassembled"] += 1
        body = b"".join(piece for _, _, piece in dgram.pieces)
        return self._rebuild(version, dgram, body)

    # -- per family --------------------------------------------------------------------------
    def _parse_v4(self, packet: bytes):
        try:
            ihl = ipv4_header_len(packet)
        except PacketDropped as drop:
            self.stats[drop.reason.value] += 1
            raise
        ff = (packet[6] << 8) | packet[7]
        more = bool(ff & IPV4_MF)
        start = (ff & 0x1FFF) * 8
        if not more and not start:
            return None
        total = (packet[2] << 8) | packet[3]
        key = (packet[12:20], packet[9], packet[4:6])
        return key, start, packet[ihl:total], more, packet[:ihl], 9, packet[9]

    def _parse_v6(self, packet: bytes):
        if len(packet) < IPV6_HEADER_BYTES:
            raise self._drop(DropReason.MALFORMED, f"IPv6 packet of {len(packet)} bytes")
        end = IPV6_HEADER_BYTES + ((packet[4] << 8) | packet[5])
        if end > len(packet):
            raise self._drop(DropReason.MALFORMED, "IPv6 payload length exceeds the packet")
        packet = packet[:end]
        try:
            chain = ipv6_headers(packet)
        except PacketDropped as drop:
            self.stats[drop.reason.value] += 1
            raise
        for proto, off, nh_at in chain[:-1]:
            if proto == IPPROTO_FRAGMENT:
                word = (packet[off + 2] << 8) | packet[off + 3]
                start, more = word & 0xFFF8, bool(word & 1)
                if not start and not more:
                    return None   # an atomic fragment (RFC 6946): handled by _atomic
                key = (packet[8:40], packet[off + 4:off + 8])
                return (key, start, packet[off + FRAGMENT_HEADER_BYTES:end], more, packet[:off],
                        nh_at, packet[off])
        return None

    @staticmethod
    def _atomic(packet: bytes) -> bytes:
        """An IPv6 packet without a fragment header, or with an atomic one (offset 0, M 0:
        RFC 6946 says process it at once): the packet, with such a header removed."""
        end = IPV6_HEADER_BYTES + ((packet[4] << 8) | packet[5])
        for proto, off, nh_at in ipv6_headers(packet[:end])[:-1]:
            if proto == IPPROTO_FRAGMENT:
                out = bytearray(packet[:off] + packet[off + FRAGMENT_HEADER_BYTES:end])
                out[nh_at] = packet[off]
                out[4:6] = (len(out) - IPV6_HEADER_BYTES).to_bytes(2, "big")
                return bytes(out)
        return packet

    @staticmethod
    def _rebuild(version: int, dgram: _Datagram, body: bytes) -> bytes:
        head = bytearray(dgram.header)
        if version == 4:
            head[2:4] = (len(head) + len(body)).to_bytes(2, "big")
            head[6] &= 0x40              # keep DF; clear MF and the offset
            head[7] = 0
            fix_ipv4_header(head)
        else:
            head[dgram.nh_at] = dgram.next_header
            head[4:6] = (len(head) - IPV6_HEADER_BYTES + len(body)).to_bytes(2, "big")
        return bytes(head) + body


# ----------------------------------------------------------------------------------------------
# Outbound
# ----------------------------------------------------------------------------------------------
def fragment_ipv4(packet: bytes, mtu: int) -> list[bytes]:
    """Cut an IPv4 packet into fragments of at most `mtu` bytes (RFC 791): every fragment but
    the last carries a multiple of 8 data bytes; options without the copy flag go in the first
    fragment only.  The packet must not have DF set."""
    ihl = ipv4_header_len(packet)
    total = (packet[2] << 8) | packet[3]
    ff = (packet[6] << 8) | packet[7]
    if total <= mtu:
        return [packet[:total]]
    if ff & IPV4_DF:
        raise LocalError("fragment_ipv4: the packet has DF set")
    first_header = packet[:ihl]
    later_header = bytearray(packet[:IPV4_HEADER_BYTES]) + _copied_options(packet[IPV4_HEADER_BYTES:ihl])
    later_header[0] = 0x40 | (len(later_header) // 4)
    data = packet[ihl:total]
    base_offset = (ff & 0x1FFF) * 8
    out = []
    pos = 0
    while pos < len(data):
        header = first_header if pos == 0 else bytes(later_header)
        room = (mtu - len(header)) // 8 * 8
        if room <= 0:
            raise LocalError(f"mtu {mtu} leaves no room for data after a {len(header)}-byte header")
        chunk = data[pos:pos + room]
        last = pos + len(chunk) >= len(data)
        h = bytearray(header)
        h[2:4] = (len(h) + len(chunk)).to_bytes(2, "big")
        word = (ff & 0xE000 & ~IPV4_MF) | ((base_offset + pos) // 8)
        if not last or ff & IPV4_MF:
            word |= IPV4_MF
        h[6:8] = word.to_bytes(2, "big")
        fix_ipv4_header(h)
        out.append(bytes(h) + chunk)
        pos += len(chunk)
    return out


def _copied_options(options: bytes) -> bytes:
    out = bytearray()
    off = 0
    while off < len(options):
        kind = options[off]
        if kind == 0:
            break
        if kind == 1:
            off += 1
            continue
        size = options[off + 1] if off + 1 < len(options) else 0
        if size < 2:
            break
        if kind & 0x80:
            out += options[off:off + size]
        off += size
    out += bytes(-len(out) % 4)
    return bytes(out)


def fragment_ipv6(packet: bytes, mtu: int, *, ident: int) -> list[bytes]:
    """Cut an IPv6 packet into fragments of at most `mtu` bytes (RFC 8200 4.5): the
    per-fragment part (fixed header, hop-by-hop, routing and the destination options before
    it) repeats in each, followed by a fragment header with identification `ident`."""
    end = IPV6_HEADER_BYTES + ((packet[4] << 8) | packet[5])
    packet = packet[:end]
    if len(packet) <= mtu:
        return [packet]
    if mtu < IPV6_MIN_MTU:
        raise LocalError(f"IPv6 mtu {mtu} is below the minimum link MTU {IPV6_MIN_MTU}")
    chain = ipv6_headers(packet)
    split = 0
    for i, (proto, _, _) in enumerate(chain[:-1]):
        if proto == IPPROTO_FRAGMENT:
            raise LocalError("fragment_ipv6: the packet is already a fragment")
        if proto in (IPPROTO_HOPOPTS, IPPROTO_ROUTING) or (
                proto == IPPROTO_DSTOPTS and chain[i + 1][0] == IPPROTO_ROUTING):
            split = i + 1
    next_header, off, nh_at = chain[split]
    unfrag = bytearray(packet[:off])
    unfrag[nh_at] = IPPROTO_FRAGMENT
    data = packet[off:]
    room = (mtu - len(unfrag) - FRAGMENT_HEADER_BYTES) // 8 * 8
    out = []
    pos = 0
    while pos < len(data):
        chunk = data[pos:pos + room]
        more = pos + len(chunk) < len(data)
        unfrag[4:6] = (len(unfrag) - IPV6_HEADER_BYTES + FRAGMENT_HEADER_BYTES + len(chunk)).to_bytes(2, "big")
        frag = bytes((next_header, 0)) + (pos | more).to_bytes(2, "big") + ident.to_bytes(4, "big")
        out.append(bytes(unfrag) + frag + chunk)
        pos += len(chunk)
    return out


def icmp_frag_needed(packet: bytes, *, mtu: int, src: bytes) -> bytes:
    """ICMP destination unreachable, fragmentation needed and DF set (type 3 code 4) with the
    next-hop MTU (RFC 1191), from `src` to the source of the IPv4 `packet`, quoting as much of
    it as fits in 576 octets (RFC 1812 4.3.2.3)."""
    quote = packet[:576 - IPV4_HEADER_BYTES - 8]
    body = bytearray(bytes((3, 4, 0, 0, 0, 0)) + min(mtu, 0xFFFF).to_bytes(2, "big") + quote)
    body[2:4] = checksum(body).to_bytes(2, "big")
    return build_ipv4(src=src, dst=packet[12:16], proto=IPPROTO_ICMP, payload_len=len(body),
                      ttl=64) + bytes(body)


def icmpv6_packet_too_big(packet: bytes, *, mtu: int, src: bytes) -> bytes:
    """ICMPv6 Packet Too Big (type 2, RFC 4443 3.2) with `mtu`, from `src` to the source of the
    IPv6 `packet`, quoting as much of it as fits in the minimum MTU of 1280 octets."""
    quote = packet[:IPV6_MIN_MTU - IPV6_HEADER_BYTES - 8]
    body = bytearray(bytes((2, 0, 0, 0)) + mtu.to_bytes(4, "big") + quote)
    dst = packet[8:24]
    pseudo = src + dst + len(body).to_bytes(4, "big") + bytes((0, 0, 0, IPPROTO_ICMPV6))
    body[2:4] = checksum(pseudo + body).to_bytes(2, "big")
    return build_ipv6(src=src, dst=dst, next_header=IPPROTO_ICMPV6, payload_len=len(body),
                      hop_limit=64) + bytes(body)


__all__ = ["Reassembler", "fragment_ipv4", "fragment_ipv6", "icmp_frag_needed",
           "icmpv6_packet_too_big", "IPV4_MIN_MTU", "IPV6_MIN_MTU"]

"""Fragments around IPsec (RFC 4301 7-8, RFC 791, RFC 8200 4.5, RFC 5722).

- Reassembly of IPv4 and IPv6 fragments made by scapy (`fragment`, `fragment6`), in any order;
  overlapping fragments drop the whole datagram and every later fragment of it (RFC 5722, and
  the same rule for IPv4); exact duplicates are dropped alone; a datagram missing a fragment
  times out on the `now` it is given; fragments past 65535 octets, non-last fragments that are
  not a multiple of 8, and conflicting last fragments are drops with reasons and counters.
- A flood of fragments is bounded: the charged memory never exceeds the byte budget, the count
  never exceeds the datagram limit, and the memory Python really allocates (tracemalloc) stays
  under the budget too; a real datagram still gets through afterwards.
- Outbound: `fragment_ipv4` / `fragment_ipv6` checked with scapy's `defragment` and with the
  reassembler; `SecurityAssociation.protect_wire` fragments after protection or answers with an
  ICMP / ICMPv6 "too big" that scapy parses, whose MTU is the largest packet that fits.
"""
from __future__ import annotations

import functools
import gc
import ipaddress
import random
import struct
import tracemalloc

import pytest

pytest.importorskip("scapy")
from scapy.compat import raw  # noqa: E402
from scapy.layers.inet import ICMP, IP, UDP, IPerror, IPOption_Router_Alert, IPOption_RR, defragment, fragment  # noqa: E402
from scapy.layers.inet6 import (ICMPv6PacketTooBig, IPv6, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop,  # noqa: E402
                                IPv6ExtHdrRouting, RouterAlert, defragment6, fragment6)
from scapy.packet import Raw  # noqa: E402

from ipsec_core.crypto.registry import get_registry  # noqa: E402
from ipsec_core.errors import DropReason, LocalError, PacketDropped, PacketTooBig  # noqa: E402
from ipsec_core.dataplane.fragments import (DATAGRAM_OVERHEAD_BYTES, Reassembler, fragment_ipv4,  # noqa: E402
                                  fragment_ipv6)
from ipsec_core.transforms.keywords import parse_ah, parse_esp  # noqa: E402
from ipsec_core.dataplane.sa import DfBit, Direction, Mode, SaConfig, SecurityAssociation  # noqa: E402

REGISTRY = get_registry()


def v4(size: int, *, ident: int = 0x4242, df: bool = False) -> IP:
    return IP(src="192.0.2.10", dst="198.51.100.20", id=ident, flags="DF" if df else 0, ttl=60) \
        / UDP(sport=7, dport=9) / Raw(bytes(random.Random(size).randbytes(size)))


def v6(size: int, *, fragment_header: int | None = None) -> IPv6:
    """An IPv6/UDP packet; with `fragment_header`, an (atomic) fragment header of that id."""
    pkt = IPv6(src="2001:db8:a::10", dst="2001:db8:b::20")
    if fragment_header is not None:
        pkt = pkt / IPv6ExtHdrFragment(id=fragment_header)
    return pkt / UDP(sport=7, dport=9) / Raw(bytes(random.Random(size).randbytes(size)))


def v4_fragments(size: int, fragsize: int, **kw) -> tuple[bytes, list[bytes]]:
    pkt = v4(size, **kw)
    return raw(pkt), [raw(f) for f in fragment(pkt, fragsize=fragsize)]


def v6_fragments(size: int, mtu: int = 1280, ident: int = 0x77) -> tuple[bytes, list[bytes]]:
    return raw(v6(size)), [raw(f) for f in fragment6(v6(size, fragment_header=ident), mtu)]


def push_all(r: Reassembler, frags, now: float = 0.0):
    out = []
    for f in frags:
        got = r.push(f, now=now)
        if got is not None:
            out.append(got)
    return out


# ----------------------------------------------------------------------------------------------
# Reassembly
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("order", ["in-order", "reversed", "shuffled"])
@pytest.mark.parametrize("family", [4, 6])
def test_reassembles_in_any_order(family, order):
    whole, frags = v4_fragments(3000, 512) if family == 4 else v6_fragments(5000)
    assert len(frags) > 2
    if order == "reversed":
        frags = frags[::-1]
    elif order == "shuffled":
        random.Random(5).shuffle(frags)
    r = Reassembler()
    assert push_all(r, frags) == [whole]
    assert r.memory == 0 and len(r) == 0
    assert r.stats["reassembled"] == 1 and r.stats["fragments"] == len(frags)


def test_ipv4_header_of_the_first_fragment_with_options_and_df():
    pkt = IP(src="192.0.2.1", dst="192.0.2.2", id=5, options=[IPOption_Router_Alert()]) / UDP() \
        / Raw(b"o" * 1500)
    frags = [raw(f) for f in fragment(pkt, fragsize=400)]
    out = push_all(Reassembler(), frags[::-1])
    assert out == [raw(pkt)]


def test_not_a_fragment_passes_and_atomic_fragments_lose_their_header():
    r = Reassembler()
    plain4, plain6 = raw(v4(100)), raw(v6(100))
    assert r.push(plain4, now=0) is plain4 and r.push(plain6, now=0) is plain6
    atomic = raw(v6(100, fragment_header=9))
    assert r.push(atomic, now=0) == plain6          # RFC 6946: processed at once
    assert len(r) == 0 and r.stats["fragments"] == 0


@pytest.mark.parametrize("family", [4, 6])
def test_overlap_drops_the_whole_datagram(family):
    """RFC 5722: an overlap (here: a fragment that starts inside the first one) drops the
    datagram, and every fragment of it that comes later is dropped too, until its timeout."""
    whole, frags = v4_fragments(3000, 512) if family == 4 else v6_fragments(5000)
    r = Reassembler()
    assert r.push(frags[0], now=0) is None
    overlapping = _shift(frags[1], -8, family)
    with pytest.raises(PacketDropped) as exc:
        r.push(overlapping, now=0)
    assert exc.value.reason is DropReason.FRAG_OVERLAP
    for f in frags[1:]:
        with pytest.raises(PacketDropped) as exc:
            r.push(f, now=1)
        assert exc.value.reason is DropReason.FRAG_OVERLAP
    assert r.stats[DropReason.FRAG_OVERLAP.value] == len(frags)
    assert r.memory == DATAGRAM_OVERHEAD_BYTES          # only the tombstone is held
    r.expire(now=1000)
    assert r.memory == 0 and len(r) == 0
    assert DropReason.FRAG_TIMEOUT.value not in r.stats   # a dropped datagram does not time out twice
    # After the tombstone is gone the same datagram may be sent again.
    assert push_all(r, frags, now=1001) == [whole]


def _shift(frag: bytes, delta: int, family: int) -> bytes:
    """The same fragment with its offset moved by `delta` bytes (a multiple of 8)."""
    if family == 4:
        p = IP(frag)
        p.frag += delta // 8
        del p.chksum
        return raw(p)
    p = IPv6(frag)
    p[IPv6ExtHdrFragment].offset += delta // 8
    return raw(p)


@pytest.mark.parametrize("family", [4, 6])
def test_overlap_kinds(family):
    whole, frags = v4_fragments(3000, 512) if family == 4 else v6_fragments(5000)
    last = frags[-1]
    cases = {
        "inside": [frags[0], _shift(frags[0], 8, family)],
        "same range, other bytes": [frags[1], frags[1][:-1] + bytes([frags[1][-1] ^ 1])],
        "two last fragments": [last, _shift(last, 8, family)],
        "past the last": [last, _shift(frags[-2], (len(frags) - 1) * 8 * 64, family)],
    }
    for name, pair in cases.items():
        r = Reassembler()
        r.push(pair[0], now=0)
        with pytest.raises(PacketDropped) as exc:
            r.push(pair[1], now=0)
        assert exc.value.reason is DropReason.FRAG_OVERLAP, name


@pytest.mark.parametrize("family", [4, 6])
def test_exact_duplicates_are_dropped_alone(family):
    whole, frags = v4_fragments(3000, 512) if family == 4 else v6_fragments(5000)
    r = Reassembler()
    r.push(frags[0], now=0)
    r.push(frags[1], now=0)
    with pytest.raises(PacketDropped) as exc:
        r.push(frags[1], now=0)
    assert exc.value.reason is DropReason.FRAG_DUPLICATE
    assert push_all(r, frags[2:]) == [whole]
    assert r.stats[DropReason.FRAG_DUPLICATE.value] == 1


@pytest.mark.parametrize("family", [4, 6])
def test_missing_fragment_times_out(family):
    whole, frags = v4_fragments(3000, 512) if family == 4 else v6_fragments(5000)
    r = Reassembler()
    assert push_all(r, frags[:-1], now=100.0) == []
    timeout = 30.0 if family == 4 else 60.0
    assert r.expire(now=100.0 + timeout - 0.5) == 0
    assert r.expire(now=100.0 + timeout) == 1
    assert r.stats[DropReason.FRAG_TIMEOUT.value] == 1 and r.memory == 0 and len(r) == 0
    # The late last fragment starts a new datagram that cannot complete on its own.
    assert r.push(frags[-1], now=200.0) is None
    # Timeouts are driven by `now` on push as well.
    r.push(raw(v4(10)), now=10_000.0)
    assert len(r) == 0 and r.stats[DropReason.FRAG_TIMEOUT.value] == 2


def test_trickle_does_not_extend_the_deadline():
    whole, frags = v4_fragments(6000, 512)
    r = Reassembler(ipv4_timeout=10)
    for i, f in enumerate(frags[:-1]):
        r.push(f, now=float(i * 4))                # the first at 0, later ones up to 40
    assert r.stats[DropReason.FRAG_TIMEOUT.value] >= 1


@pytest.mark.parametrize("family", [4, 6])
def test_oversized_fragments(family):
    """A fragment that would end past 65535 octets of datagram (the ping of death) is dropped."""
    if family == 4:
        bad = raw(IP(src="192.0.2.1", dst="192.0.2.2", id=3, frag=8189) / Raw(b"x" * 24))
    else:
        bad = raw(IPv6(src="2001:db8::1", dst="2001:db8::2")
                  / IPv6ExtHdrFragment(id=3, offset=8189, m=0) / Raw(b"x" * 24))
    r = Reassembler()
    with pytest.raises(PacketDropped) as exc:
        r.push(bad, now=0)
    assert exc.value.reason is DropReason.FRAG_OVERSIZE
    assert r.stats[DropReason.FRAG_OVERSIZE.value] == 1 and len(r) == 0


def test_malformed_fragments():
    r = Reassembler()
    odd = raw(IP(src="192.0.2.1", dst="192.0.2.2", id=3, flags="MF") / Raw(b"x" * 13))
    with pytest.raises(PacketDropped, match="multiple of 8") as exc:
        r.push(odd, now=0)
    assert exc.value.reason is DropReason.MALFORMED
    empty = raw(IP(src="192.0.2.1", dst="192.0.2.2", id=3, flags="MF", frag=2))
    with pytest.raises(PacketDropped, match="without data"):
        r.push(empty, now=0)
    with pytest.raises(PacketDropped):
        r.push(b"\x45" + bytes(5), now=0)
    with pytest.raises(PacketDropped):
        r.push(b"", now=0)
    assert r.stats[DropReason.MALFORMED.value] == 4


def test_other_datagrams_are_not_affected():
    w1, f1 = v4_fragments(3000, 512, ident=1)
    w2, f2 = v4_fragments(3000, 512, ident=2)
    w3, f3 = v6_fragments(4000, ident=3)
    r = Reassembler()
    r.push(f1[0], now=0)
    with pytest.raises(PacketDropped):
        r.push(_shift(f1[0], 8, 4), now=0)
    mixed = [f for triple in zip(f2, f3) for f in triple] + f2[len(f3):] + f3[len(f2):]
    assert sorted(push_all(r, mixed)) == sorted([w2, w3])


# ----------------------------------------------------------------------------------------------
# Memory under a flood
# ----------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _flood(n: int, seed: int, family: int) -> tuple[bytes, ...]:
    """`n` fragments of random datagrams (random ids, offsets, sizes; many of 8 bytes), built
    by hand: the reassembler does not check the IPv4 header checksum."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        ident, off = rng.randrange(1 << 16), rng.randrange(0, 8000)
        size = rng.choice([8, 8 * rng.randrange(1, 180)])
        data = rng.randbytes(size)
        if family == 4:
            out.append(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + size, ident, 0x2000 | off, 64, 17, 0,
                                   b"\x0a\0\0\x01", b"\x0a\0\0\x02") + data)
        else:
            out.append(struct.pack("!IHBB16s16s", 6 << 28, 8 + size, 44, 64, b"\x20" + bytes(15),
                                   b"\x20" + bytes(14) + b"\x02")
                       + struct.pack("!BBHI", 17, 0, (off << 3) | 1, ident) + data)
    return tuple(out)


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize(("max_bytes", "max_datagrams"), [(64 * 1024, 10_000), (256 * 1024, 50)])
def test_flood_memory_is_bounded(family, max_bytes, max_datagrams):
    flood = _flood(8000, seed=family, family=family)
    gc.collect()
    tracemalloc.start()
    try:
        r = Reassembler(max_bytes=max_bytes, max_datagrams=max_datagrams)
        base = tracemalloc.get_traced_memory()[0]
        peak = 0
        for i, f in enumerate(flood):
            try:
                r.push(f, now=i * 0.001)
            except PacketDropped:
                pass
            assert r.memory <= max_bytes and len(r) <= max_datagrams
            if i % 25 == 0:
                peak = max(peak, tracemalloc.get_traced_memory()[0] - base)
    finally:
        tracemalloc.stop()
    assert peak <= max_bytes * 1.1, f"really allocated {peak} bytes for a {max_bytes} budget"
    assert r.stats[DropReason.FRAG_EVICTED.value] > 0
    # Real traffic still gets through while the flood is held.
    whole, frags = v4_fragments(3000, 512, ident=0xFFFF) if family == 4 else v6_fragments(3000, ident=0xFFFFF)
    assert push_all(r, frags, now=9.0) == [whole]


def test_fragment_larger_than_the_budget():
    r = Reassembler(max_bytes=2048)
    _, frags = v4_fragments(3000, 1480)
    with pytest.raises(PacketDropped) as exc:
        r.push(frags[0], now=0)
    assert exc.value.reason is DropReason.FRAG_EVICTED


# ----------------------------------------------------------------------------------------------
# Outbound fragmentation
# ----------------------------------------------------------------------------------------------
def test_fragment_ipv4_against_scapy():
    pkt = IP(src="192.0.2.1", dst="192.0.2.2", id=99,
             options=[IPOption_Router_Alert(), IPOption_RR(routers=["0.0.0.0"] * 2)]) \
        / UDP() / Raw(bytes(range(256)) * 8)
    whole = raw(pkt)
    frags = fragment_ipv4(whole, 576)
    assert all(len(f) <= 576 for f in frags) and len(frags) > 3
    parsed = [IP(f) for f in frags]
    assert all(p.chksum == IP(raw(p)).chksum for p in parsed)
    assert all((len(p.payload) % 8 == 0) for p in parsed[:-1])
    # Router alert has the copy flag, record route has not (RFC 791).
    kinds = lambda p: [o.option for o in p.options if o.option]  # noqa: E731  (no EOL padding)
    assert kinds(parsed[0]) == [20, 7]
    assert all(kinds(p) == [20] for p in parsed[1:])
    assert raw(defragment(parsed)[0]) == whole
    assert push_all(Reassembler(), frags[::-1]) == [whole]
    with pytest.raises(LocalError, match="DF"):
        fragment_ipv4(raw(v4(2000, df=True)), 576)
    assert fragment_ipv4(raw(v4(100)), 576) == [raw(v4(100))]


def test_fragment_ipv6_keeps_per_fragment_headers():
    pkt = IPv6(src="2001:db8::1", dst="2001:db8::5") / IPv6ExtHdrHopByHop(options=[RouterAlert()]) \
        / IPv6ExtHdrRouting(addresses=["2001:db8::9"], segleft=1) / UDP() / Raw(b"z" * 4000)
    whole = raw(pkt)
    frags = fragment_ipv6(whole, 1280, ident=0xDEADBEEF)
    assert all(len(f) <= 1280 for f in frags) and len(frags) == 4
    for f in frags:
        p = IPv6(f)
        assert IPv6ExtHdrHopByHop in p and IPv6ExtHdrRouting in p
        assert p[IPv6ExtHdrFragment].id == 0xDEADBEEF
    assert [IPv6(f)[IPv6ExtHdrFragment].m for f in frags] == [1, 1, 1, 0]
    assert raw(defragment6([IPv6(f) for f in frags]))[-4000:] == b"z" * 4000
    assert push_all(Reassembler(), frags) == [whole]
    with pytest.raises(LocalError, match="minimum"):
        fragment_ipv6(whole, 1000, ident=1)


# ----------------------------------------------------------------------------------------------
# protect_wire: fragment after protection, or ICMP too big
# ----------------------------------------------------------------------------------------------
ADDR = {4: ("203.0.113.1", "203.0.113.2"), 6: ("2001:db8:ffff::1", "2001:db8:ffff::2")}


def sa_pair(proposal: str = "aes128gcm16", *, protocol: str = "esp", outer: int = 4, mtu: int = 1400,
            df_bit: DfBit = DfBit.COPY, mode: Mode = Mode.TUNNEL):
    prop = parse_ah(proposal) if protocol == "ah" else parse_esp(proposal)
    if protocol == "ah":
        keys = dict(integ_key=bytes(prop.integ_info.key_bytes))
    else:
        keys = dict(enc_key=bytes(prop.enc_key_bytes),
                    integ_key=bytes(prop.integ_info.key_bytes) if prop.integ_info else b"")
    a, b = (ipaddress.ip_address(x) for x in ADDR[outer])
    tunnel = mode == Mode.TUNNEL
    common = dict(spi=0x3000, mode=mode, proposal=prop, protocol=protocol, mtu=mtu, df_bit=df_bit, **keys)
    out = SecurityAssociation(SaConfig(name="o", direction=Direction.OUT, local=a if tunnel else None,
                                       remote=b if tunnel else None, **common), registry=REGISTRY, now=0.0)
    inb = SecurityAssociation(SaConfig(name="i", direction=Direction.IN, local=b if tunnel else None,
                                       remote=a if tunnel else None, **common), registry=REGISTRY, now=0.0)
    return out, inb


LAYOUTS = [("esp", "aes128gcm16", 4), ("esp", "aes256-sha256", 6), ("ah", "sha256", 4),
           ("ah", "aes128gmac", 6)]


@pytest.mark.parametrize(("protocol", "proposal", "outer"), LAYOUTS)
@pytest.mark.parametrize("inner", [4, 6])
def test_protect_wire_fragments_then_reassembles(protocol, proposal, outer, inner):
    """Inner packets that may be fragmented (IPv4 without DF; IPv6 up to 1280 octets) are
    protected whole and the protected packet is cut to the mtu; the peer reassembles, then
    unprotects."""
    out, inb = sa_pair(proposal, protocol=protocol, outer=outer, mtu=1280)
    packet = raw(v4(1250)) if inner == 4 else raw(v6(1200))
    assert len(packet) <= 1280 < out.engine.protected_len(packet)
    wire = out.protect_wire(packet, now=0.0)
    assert len(wire) == 2 and all(len(w) <= 1280 for w in wire)
    if outer == 6:
        assert all(IPv6ExtHdrFragment in IPv6(w) for w in wire)
    else:
        assert [IP(w).flags.MF for w in wire] == [1, 0]
    r = Reassembler()
    whole = push_all(r, wire[::-1])
    assert len(whole) == 1
    assert inb.unprotect(whole[0], now=0.0) == packet
    assert out.stats.packets == 1 and not out.stats.drops


def test_protect_wire_small_packet_is_one_packet():
    out, inb = sa_pair(mtu=1400)
    wire = out.protect_wire(raw(v4(100)), now=0.0)
    assert len(wire) == 1 and inb.unprotect(wire[0], now=0.0) == raw(v4(100))


@pytest.mark.parametrize(("protocol", "proposal", "outer"), LAYOUTS)
def test_too_big_with_df_answers_icmp(protocol, proposal, outer):
    out, _ = sa_pair(proposal, protocol=protocol, outer=outer, mtu=1400)
    packet = raw(v4(1400, df=True))
    with pytest.raises(PacketTooBig) as exc:
        out.protect_wire(packet, now=0.0)
    err = exc.value
    assert err.reason is DropReason.TOO_BIG and out.stats.drops == {"too_big": 1}
    assert out.seq == 0, "nothing was protected"
    icmp = IP(err.icmp)
    # From the tunnel's local address when it is IPv4, else from the inner destination.
    assert icmp.src == (ADDR[4][0] if outer == 4 else "198.51.100.20")
    assert icmp.dst == "192.0.2.10" and icmp[ICMP].type == 3 and icmp[ICMP].code == 4
    assert icmp[ICMP].nexthopmtu == err.mtu
    recomputed = IP(raw(icmp))
    del recomputed[ICMP].chksum
    assert IP(raw(recomputed))[ICMP].chksum == icmp[ICMP].chksum
    assert raw(icmp[IPerror])[:28] == packet[:28]
    # The advertised size is the largest that fits.
    fits = raw(v4(1400 - (len(packet) - err.mtu), df=True))
    assert len(fits) == err.mtu
    assert len(out.protect_wire(fits, now=0.0)) == 1 and len(out.protect_wire(fits, now=0.0)[0]) <= 1400
    bigger = raw(v4(1400 - (len(packet) - err.mtu) + 1, df=True))
    with pytest.raises(PacketTooBig):
        out.protect_wire(bigger, now=0.0)


def test_ipv6_too_big_answers_icmpv6():
    """An IPv6 packet over 1280 octets is never fragmented by the tunnel (RFC 2473 7.1): the
    source gets a Packet Too Big with the largest size that fits."""
    out, _ = sa_pair("aes256gcm16", outer=6, mtu=1400)
    packet = raw(v6(1400))
    with pytest.raises(PacketTooBig) as exc:
        out.protect_wire(packet, now=0.0)
    icmp = IPv6(exc.value.icmp)
    assert icmp.src == ADDR[6][0] and icmp.dst == "2001:db8:a::10"
    ptb = icmp[ICMPv6PacketTooBig]
    assert ptb.type == 2 and ptb.mtu == exc.value.mtu
    check = IPv6(raw(icmp))
    del check[ICMPv6PacketTooBig].cksum
    assert IPv6(raw(check))[ICMPv6PacketTooBig].cksum == ptb.cksum
    assert len(exc.value.icmp) <= 1280
    fits = raw(v6(1400 - (len(packet) - exc.value.mtu)))
    assert len(out.protect_wire(fits, now=0.0)) == 1


@pytest.mark.parametrize("df_bit", [DfBit.SET, DfBit.CLEAR])
def test_df_bit_policy(df_bit):
    out, inb = sa_pair(mtu=1000, df_bit=df_bit)
    no_df, with_df = raw(v4(1200)), raw(v4(1200, df=True))
    small = out.protect(raw(v4(100)), now=0.0)
    assert bool(IP(small).flags.DF) == (df_bit == DfBit.SET)
    for packet in (no_df, with_df):
        if df_bit == DfBit.SET:
            with pytest.raises(PacketTooBig):
                out.protect_wire(packet, now=0.0)
        else:
            wire = out.protect_wire(packet, now=0.0)
            assert len(wire) == 2
            assert inb.unprotect(push_all(Reassembler(), wire)[0], now=0.0) == packet


def test_transport_mode_keeps_the_packets_own_df():
    out, inb = sa_pair(mode=Mode.TRANSPORT, mtu=800)
    wire = out.protect_wire(raw(v4(1000)), now=0.0)
    assert len(wire) == 2 and inb.unprotect(push_all(Reassembler(), wire)[0], now=0.0) == raw(v4(1000))
    with pytest.raises(PacketTooBig) as exc:
        out.protect_wire(raw(v4(1000, df=True)), now=0.0)
    assert IP(exc.value.icmp).src == "198.51.100.20"        # the destination, in transport mode


def test_mtu_config_errors():
    from ipsec_core.config import sa_from_dict
    from ipsec_core.errors import ConfigError
    base = {"name": "x", "spi": 4096, "direction": "out", "proposal": "aes128gcm16",
            "key": "00" * 20, "tunnel": {"local": "2001:db8::1", "remote": "2001:db8::2"}}
    for change, message in [({"mtu": 1000}, "1280..65535"), ({"mtu": "big"}, "integer"),
                            ({"df_bit": "maybe"}, "'copy', 'set' or 'clear'")]:
        with pytest.raises(ConfigError, match=message) as exc:
            sa_from_dict({**base, **change}, file="f.toml")
        assert str(exc.value).startswith("f.toml: sa[x].")
    cfg = sa_from_dict({**base, "mtu": 1400, "df_bit": "clear"}, file="f.toml")
    assert cfg.mtu == 1400 and cfg.df_bit is DfBit.CLEAR


def test_pcap_protect_fragments_and_unprotect_reassembles(tmp_path):
    from typer.testing import CliRunner

    from ipsec_core.cli import app
    from ipsec_core.vpn.pcap import LINKTYPE_RAW, PcapHeader, PcapReader, PcapRecord, PcapWriter

    common = ('spi = 4096\nproposal = "aes128gcm16"\nmtu = 1280\n'
              f'key = "{"cd" * 20}"\n')
    (tmp_path / "sa.toml").write_text(
        f'[[sa]]\nname = "o"\ndirection = "out"\n{common}tunnel = {{ local = "192.0.2.1", remote = "192.0.2.2" }}\n'
        f'[[sa]]\nname = "i"\ndirection = "in"\n{common}tunnel = {{ local = "192.0.2.2", remote = "192.0.2.1" }}\n')
    packets = [raw(v4(100)), raw(v4(1240)), raw(v6(1230)), raw(v4(1300, df=True))]
    with open(tmp_path / "in.pcap", "wb") as f:
        w = PcapWriter(f, PcapHeader(linktype=LINKTYPE_RAW, snaplen=65535))
        for i, p in enumerate(packets):
            w.write(PcapRecord(1_700_000_000 + i, 0, p))
    runner = CliRunner()
    r = runner.invoke(app, ["pcap", "protect", "-c", str(tmp_path / "sa.toml"), "-s", "o",
                            str(tmp_path / "in.pcap"), str(tmp_path / "esp.pcap"), "--json"])
    assert r.exit_code == 0, r.output
    assert '"fragments": 2' in r.stdout and '"too_big": 1' in r.stdout
    r = runner.invoke(app, ["pcap", "unprotect", "-c", str(tmp_path / "sa.toml"), "-s", "i",
                            str(tmp_path / "esp.pcap"), str(tmp_path / "out.pcap"), "--json"])
    assert r.exit_code == 0, r.output
    assert '"decrypted": 3' in r.stdout and '"fragments": 4' in r.stdout
    with open(tmp_path / "out.pcap", "rb") as f:
        assert [rec.data for rec in PcapReader(f)] == packets[:3]

"""IPv6 extension headers (RFC 8200 4) around ESP and AH.

- `ipv6_headers` walks hop-by-hop, routing, fragment and destination options headers (and AH
  when asked) and agrees with scapy's parse of the same packets; malformed chains are drops.
- `ipv6_split` puts ESP/AH where RFC 4303 3.1.1 / RFC 4302 3.1.1 say: after hop-by-hop,
  routing, fragment, and destination options that precede a routing header; destination
  options meant for the final destination only stay inside, protected.
- ESP in transport mode over packets with extension headers: the layout checked with scapy,
  scapy decrypts ours (after the routing header has been walked), we unprotect scapy's
  (which puts ESP after a lone destination options header), IPv6 fragments are refused.
- The AH ICV copy of the headers before AH: option data zeroed by the may-change bit (Pad1,
  PadN, unknown options), routing headers of type 0, 2 and 4 in their final form.
"""
from __future__ import annotations

import ipaddress

import pytest

pytest.importorskip("scapy")
from scapy.compat import raw  # noqa: E402
from scapy.layers.inet import UDP  # noqa: E402
from scapy.layers.inet6 import (HBHOptUnknown, IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment,  # noqa: E402
                                IPv6ExtHdrHopByHop, IPv6ExtHdrRouting, IPv6ExtHdrSegmentRouting,
                                Pad1, PadN, RouterAlert)
from scapy.layers.ipsec import AH, ESP  # noqa: E402
from scapy.layers.ipsec import SecurityAssociation as ScapySA  # noqa: E402
from scapy.packet import Raw  # noqa: E402

from ipsec_core.crypto.registry import get_registry  # noqa: E402
from ipsec_core.errors import DropReason, LocalError, PacketDropped  # noqa: E402
from ipsec_core.transforms.keywords import parse_esp  # noqa: E402
from ipsec_core.wire.ah import ipv6_icv_headers  # noqa: E402
from ipsec_core.wire.ip import (IPPROTO_AH, IPPROTO_DSTOPTS, IPPROTO_ESP, IPPROTO_FRAGMENT,  # noqa: E402
                                  IPPROTO_HOPOPTS, IPPROTO_ROUTING, IPPROTO_UDP, ipv6_headers,
                                  ipv6_is_fragment, ipv6_split)
from ipsec_core.dataplane.sad import Sad  # noqa: E402
from ipsec_core.dataplane.sa import Direction, Mode, SaConfig, SecurityAssociation  # noqa: E402

REGISTRY = get_registry()
SRC, DST = "2001:db8:a::10", "2001:db8:b::20"
HOP, RT, FRAG, DEST, UDP_ = IPPROTO_HOPOPTS, IPPROTO_ROUTING, IPPROTO_FRAGMENT, IPPROTO_DSTOPTS, IPPROTO_UDP


def hbh(data: bytes = b"hop-data"):
    return IPv6ExtHdrHopByHop(options=[HBHOptUnknown(otype=0x3E, optdata=data)])


def dest(data: bytes = b"dst"):
    return IPv6ExtHdrDestOpt(options=[HBHOptUnknown(otype=0x1E, optdata=data)])


def rh0(*addrs: str, left: int | None = None):
    return IPv6ExtHdrRouting(addresses=list(addrs), segleft=len(addrs) if left is None else left)


def body():
    return UDP(sport=1000, dport=2000) / Raw(b"payload-" * 5)


#: name -> (extension headers, the protocols of the chain, index in the chain where ESP/AH goes)
CHAINS = {
    "plain": ([], [UDP_], 0),
    "hbh": ([hbh()], [HOP, UDP_], 1),
    "hbh-dest": ([hbh(), dest()], [HOP, DEST, UDP_], 1),
    "dest": ([dest()], [DEST, UDP_], 0),
    "dest-rt-dest": ([dest(), rh0("2001:db8:1::1")], [DEST, RT, UDP_], 2),
    "full": ([hbh(), dest(b"before"), rh0("2001:db8:1::1", "2001:db8:2::2"), dest(b"after")],
             [HOP, DEST, RT, DEST, UDP_], 3),
    "fragment": ([hbh(), IPv6ExtHdrFragment(id=7, m=0, offset=0)], [HOP, FRAG, UDP_], 2),
}


def build(name: str):
    pkt = IPv6(src=SRC, dst=DST, hlim=64)
    for ext in CHAINS[name][0]:
        pkt = pkt / ext
    return pkt / body()


@pytest.mark.parametrize("name", sorted(CHAINS))
def test_walk_agrees_with_scapy(name):
    pkt = build(name)
    wire = raw(pkt)
    chain = ipv6_headers(wire)
    assert [proto for proto, _, _ in chain] == CHAINS[name][1]
    # Offsets: each header starts where scapy's previous layer ended.
    layer, offset = pkt.payload, 40
    for proto, off, nh_at in chain:
        assert off == offset
        offset += len(raw(layer)) - len(raw(layer.payload))
        layer = layer.payload
    # nh_at points at a byte that names the header.
    assert all(wire[nh_at] == proto for proto, _, nh_at in chain)


@pytest.mark.parametrize("name", sorted(CHAINS))
def test_split_places_esp_and_ah(name):
    wire = raw(build(name))
    chain = ipv6_headers(wire)
    where = CHAINS[name][2]
    proto, off, nh_at = chain[where]
    assert ipv6_split(wire) == (off, nh_at, proto)


def test_split_steps_over_destination_options_before_esp_or_ah():
    """A peer (scapy, Linux) may have put AH or ESP after a lone destination options header;
    found on the way in as well."""
    for proto_layer, number in ((AH(spi=0x1000, seq=1, icv=b"\0" * 12, nh=17), IPPROTO_AH),
                                (ESP(spi=0x1000, seq=1, data=b"\0" * 32), IPPROTO_ESP)):
        wire = raw(IPv6(src=SRC, dst=DST) / hbh() / dest() / proto_layer / body())
        off, nh_at, proto = ipv6_split(wire)
        dest_at = 40 + len(raw(hbh()))
        assert (proto, off, nh_at) == (number, dest_at + len(raw(dest())), dest_at)


def test_walk_through_ah_and_non_first_fragments():
    wire = raw(IPv6(src=SRC, dst=DST) / hbh() / AH(spi=0x1000, seq=1, icv=b"\0" * 12, nh=60, payloadlen=4)
               / dest() / body())
    assert [p for p, _, _ in ipv6_headers(wire)] == [HOP, IPPROTO_AH]
    assert [p for p, _, _ in ipv6_headers(wire, through_ah=True)] == [HOP, IPPROTO_AH, DEST, UDP_]
    later = raw(IPv6(src=SRC, dst=DST) / IPv6ExtHdrFragment(id=1, offset=3, m=1, nh=60) / Raw(b"x" * 24))
    chain = ipv6_headers(later)
    assert chain == [(FRAG, 40, 6), (DEST, 48, 40)]   # stops: what follows is no header
    assert ipv6_is_fragment(later) and ipv6_is_fragment(raw(build("fragment")))
    assert not ipv6_is_fragment(raw(build("full")))


@pytest.mark.parametrize(("make", "message"), [
    (lambda: raw(IPv6(src=SRC, dst=DST) / dest() / hbh() / body()), "hop-by-hop"),
    (lambda: raw(IPv6(src=SRC, dst=DST) / hbh() / body())[:44], "truncated"),
    (lambda: raw(IPv6(src=SRC, dst=DST, nh=0) / Raw(b"\x11\x05" + b"\0" * 14)), "truncated"),
    (lambda: b"\x60" + bytes(20), "IPv6 packet of 21 bytes"),
])
def test_malformed_chains_are_drops(make, message):
    with pytest.raises(PacketDropped) as exc:
        ipv6_headers(make())
    assert exc.value.reason is DropReason.MALFORMED and message in str(exc.value)


# ----------------------------------------------------------------------------------------------
# ESP in transport mode over extension headers
# ----------------------------------------------------------------------------------------------
KEY = bytes(range(20))
INTEG = bytes(range(32))


def esp_pair(keyword: str = "aes128gcm16"):
    prop = parse_esp(keyword)
    common = dict(spi=0x00E51234, mode=Mode.TRANSPORT, proposal=prop,
                  enc_key=KEY[:prop.enc_key_bytes] if prop.enc_key_bytes else b"",
                  integ_key=INTEG if prop.integ_info else b"")
    return (SecurityAssociation(SaConfig(name="o", direction=Direction.OUT, **common), registry=REGISTRY, now=0.0),
            SecurityAssociation(SaConfig(name="i", direction=Direction.IN, **common), registry=REGISTRY, now=0.0))


def walk_route(wire: bytes) -> bytes:
    """Let the routers of a type 0 routing header do their work (RFC 2460 4.4)."""
    pkt = IPv6(wire)
    if IPv6ExtHdrRouting not in pkt:
        return wire
    rh = pkt[IPv6ExtHdrRouting]
    addrs = list(rh.addresses)
    while rh.segleft:
        i = len(addrs) - rh.segleft
        pkt.dst, addrs[i] = addrs[i], pkt.dst
        rh.segleft -= 1
    rh.addresses = addrs
    return raw(pkt)


@pytest.mark.parametrize("name", [n for n in sorted(CHAINS) if n != "fragment"])
def test_esp_transport_with_extension_headers(name):
    out, inb = esp_pair()
    pkt = build(name)
    plain = raw(pkt)
    wire = out.protect(plain, now=0.0)
    off, nh_at, _ = ipv6_split(plain)
    # Everything before ESP is kept but the payload length and the one next-header byte.
    same = lambda b: b[:4] + b[6:nh_at] + b[nh_at + 1:off]  # noqa: E731
    assert same(wire) == same(plain) and wire[nh_at] == IPPROTO_ESP
    assert IPv6(wire).plen == len(wire) - 40
    assert wire[off:off + 4] == (0x00E51234).to_bytes(4, "big")
    assert inb.unprotect(wire, now=0.0) == plain
    # scapy decrypts it too, once the routing header has been walked.  (scapy re-parses the
    # decrypted payload as whatever the fixed header's next header names, so behind extension
    # headers its layers are wrong while its bytes are right: compare re-parsed bytes.)
    rx = ScapySA(ESP, spi=0x00E51234, crypt_algo="AES-GCM", crypt_key=KEY)
    clear = IPv6(raw(rx.decrypt(IPv6(walk_route(wire)))))
    assert raw(clear[UDP]) == raw(pkt[UDP])


def test_we_unprotect_esp_after_lone_destination_options():
    """scapy (like Linux) puts ESP after a destination options header that no routing header
    follows (RFC 4303 3.1.1 allows both places)."""
    out, inb = esp_pair("null-sha256")
    pkt = build("hbh-dest")
    tx = ScapySA(ESP, spi=0x00E51234, crypt_algo="NULL", auth_algo="SHA2-256-128", auth_key=INTEG)
    wire = raw(tx.encrypt(pkt))
    assert IPv6(wire)[IPv6ExtHdrDestOpt].nh == IPPROTO_ESP
    assert inb.unprotect(wire, now=0.0) == raw(pkt)


def test_esp_refuses_ipv6_fragments_inbound():
    out, inb = esp_pair()
    wire = out.protect(raw(build("hbh")), now=0.0)
    frag = bytearray(wire[:48] + bytes((IPPROTO_ESP, 0, 0, 1)) + (99).to_bytes(4, "big") + wire[48:])
    frag[40] = FRAG                                  # hop-by-hop -> fragment header
    frag[4:6] = (len(frag) - 40).to_bytes(2, "big")
    with pytest.raises(PacketDropped) as exc:
        inb.unprotect(bytes(frag), now=0.0)
    assert exc.value.reason is DropReason.MALFORMED and "reassemble" in str(exc.value)
    assert inb.stats.drops == {"malformed": 1}


def test_sad_finds_esp_behind_extension_headers():
    out, inb = esp_pair()
    sad = Sad()
    sad.add(inb)
    for name in ("full", "hbh-dest", "dest-rt-dest"):
        sa, inner = sad.unprotect(walk_route(out.protect(raw(build(name)), now=0.0)), now=0.0)
        assert sa is inb and IPv6(inner)[UDP].load == b"payload-" * 5


# ----------------------------------------------------------------------------------------------
# The AH ICV copy of the headers before AH
# ----------------------------------------------------------------------------------------------
def _icv_copy(wire: bytes, *, outbound: bool = True) -> bytes:
    off = ipv6_split(wire)[0]
    return bytes(ipv6_icv_headers(wire, off, ipv6_headers(wire), outbound=outbound))


def test_option_data_zeroed_by_the_may_change_bit():
    opts = [Pad1(), RouterAlert(value=5), HBHOptUnknown(otype=0x3E, optdata=b"ABCD"),
            HBHOptUnknown(otype=0x1E, optdata=b"keep"), PadN(optdata=b"\x00")]
    wire = raw(IPv6(src=SRC, dst=DST, tc=0xFF, fl=0xFFFFF, hlim=9) / IPv6ExtHdrHopByHop(options=opts) / body())
    copy = _icv_copy(wire)
    assert copy[:4] == b"\x60\0\0\0" and copy[7] == 0 and copy[4:7] == wire[4:7]
    assert copy[8:40] == wire[8:40]
    ext = copy[40:]
    want = bytearray(wire[40:len(copy)])
    at = want.index(b"ABCD")
    want[at:at + 4] = bytes(4)                       # 0x3e: the 0x20 bit is set
    assert ext == bytes(want)
    assert b"keep" in ext and ext[2] == 0            # Pad1 kept; router alert (0x05) kept


def test_routing_type0_and_type2_predicted():
    wire = raw(IPv6(src=SRC, dst="2001:db8:1::1") / rh0("2001:db8:2::2", "2001:db8:3::3") / body())
    copy = _icv_copy(wire)
    routed = walk_route(wire)
    assert copy[8:] == routed[8:len(copy)], "the header as the routers leave it at the end"
    assert copy[24:40] == ipaddress.ip_address("2001:db8:3::3").packed
    assert copy[40 + 3] == 0                         # segments left
    assert copy[48:64] == ipaddress.ip_address("2001:db8:1::1").packed
    assert copy[64:80] == ipaddress.ip_address("2001:db8:2::2").packed
    # Type 2 (Mobile IPv6): one address, the home address.
    rh2 = IPv6ExtHdrRouting(type=2, addresses=["2001:db8:ffff::99"], segleft=1)
    wire2 = raw(IPv6(src=SRC, dst="2001:db8:c0a::1") / rh2 / body())
    copy2 = _icv_copy(wire2)
    assert copy2[24:40] == ipaddress.ip_address("2001:db8:ffff::99").packed
    assert copy2[48:64] == ipaddress.ip_address("2001:db8:c0a::1").packed
    # At the destination (segments left 0) the header is taken as it is.
    assert _icv_copy(routed, outbound=False)[8:] == routed[8:len(copy)]


def test_segment_routing_header_predicted():
    srh = IPv6ExtHdrSegmentRouting(addresses=["2001:db8:b::20", "2001:db8:7::7"], segleft=1)
    wire = raw(IPv6(src=SRC, dst="2001:db8:7::7") / srh / body())
    copy = _icv_copy(wire)
    assert copy[24:40] == ipaddress.ip_address("2001:db8:b::20").packed   # segment list [0]
    assert copy[43] == 0 and copy[48:len(copy)] == wire[48:len(copy)]


def test_unpredictable_routing_header_refused():
    rh = raw(IPv6ExtHdrRouting(type=3, addresses=["2001:db8::1"], segleft=1))
    wire = raw(IPv6(src=SRC, dst=DST, nh=43) / Raw(rh) / body())
    with pytest.raises(LocalError, match="not predictable"):
        _icv_copy(wire)
    with pytest.raises(PacketDropped, match="not the final destination"):
        _icv_copy(wire, outbound=False)


def test_spd_selector_looks_past_every_extension_header():
    """RFC 4301 4.4.1.1: the next layer protocol (and its ports) after all IPv6 extension
    headers, destination options for the final destination included; a non-first fragment
    has no ports."""
    from ipsec_core.dataplane.spd import PacketSelector

    for name in ("hbh-dest", "full", "dest", "plain"):
        sel = PacketSelector.from_packet(raw(build(name)))
        assert (sel.protocol, sel.src_port, sel.dst_port) == (17, 1000, 2000), name
    later = raw(IPv6(src=SRC, dst=DST) / IPv6ExtHdrFragment(id=1, offset=3, m=1, nh=17) / Raw(b"x" * 24))
    sel = PacketSelector.from_packet(later)
    assert (sel.protocol, sel.src_port, sel.dst_port) == (17, None, None)

"""SAD inbound lookup and SPD selectors / ordering / inbound policy check."""
import ipaddress
import itertools
import os

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6

from ipsec_core.errors import ConfigError, DropReason, LocalError, PacketDropped
from ipsec_core.transforms.keywords import parse_esp
from ipsec_core.dataplane.sa import Direction, Mode, SaConfig, SecurityAssociation
from ipsec_core.dataplane.sad import Sad, esp_spi_and_destination
from ipsec_core.dataplane.spd import Action, Policy, Selector, Spd

A, B = ipaddress.ip_address("192.0.2.1"), ipaddress.ip_address("192.0.2.2")


def pair(spi, key=None, **kw):
    key = key or os.urandom(20)
    common = dict(spi=spi, mode=Mode.TUNNEL, proposal=parse_esp("aes128gcm16"), enc_key=key, **kw)
    out = SecurityAssociation(SaConfig(name=f"out-{spi:x}", direction=Direction.OUT, local=A, remote=B, **common), now=0.0)
    inb = SecurityAssociation(SaConfig(name=f"in-{spi:x}", direction=Direction.IN, local=B, remote=A, **common), now=0.0)
    return out, inb


INNER = bytes(IP(src="198.51.100.1", dst="203.0.113.1") / UDP(sport=5000, dport=53) / b"q")


def test_sad_finds_inbound_sa_by_spi_and_destination():
    sad = Sad()
    o1, i1 = pair(0x1001)
    o2, i2 = pair(0x1002)
    for sa in (o1, i1, o2, i2):
        sad.add(sa)
    assert len(sad) == 4
    assert esp_spi_and_destination(o2.protect(INNER, now=0.0)) == (0x1002, B.packed)
    sa, inner = sad.unprotect(o2.protect(INNER, now=0.0), now=0.0)
    assert sa is i2 and inner == INNER
    sa, inner = sad.unprotect(o1.protect(INNER, now=0.0), now=0.0)
    assert sa is i1


def test_sad_unknown_spi_is_counted():
    sad = Sad()
    o, i = pair(0x2001)
    sad.add(i)
    other, _ = pair(0x2002)
    with pytest.raises(PacketDropped) as exc:
        sad.unprotect(other.protect(INNER, now=0.0), now=0.0)
    assert exc.value.reason is DropReason.UNKNOWN_SPI
    assert sad.drops["unknown_spi"] == 1
    with pytest.raises(PacketDropped):
        sad.unprotect(INNER, now=0.0)
    assert sad.drops["not_esp"] == 1


def test_sad_refuses_duplicates_and_removes():
    sad = Sad()
    o, i = pair(0x3001)
    sad.add(i)
    with pytest.raises(LocalError, match="already installed"):
        sad.add(i)
    _, i_again = pair(0x3001)
    with pytest.raises(LocalError, match="already used"):
        sad.add(SecurityAssociation(i_again.config.__class__(**{**_fields(i_again.config), "name": "x"}), now=0.0))
    assert sad.remove(i.name) is i
    with pytest.raises(PacketDropped):
        sad.unprotect(o.protect(INNER, now=0.0), now=0.0)


def _fields(cfg):
    return {f: getattr(cfg, f) for f in cfg.__dataclass_fields__}


def test_spd_first_match_wins_and_ports():
    spd = Spd([
        Policy(Selector.parse("198.51.100.0/24", "203.0.113.0/24", "udp", remote_ports=53), Action.BYPASS),
        Policy(Selector.parse("198.51.100.0/24", "203.0.113.0/24"), Action.PROTECT, sa_name="out"),
        Policy(Selector.parse("0.0.0.0/0", "0.0.0.0/0"), Action.DISCARD),
    ])
    assert spd.lookup_outbound(INNER).action is Action.BYPASS
    tcp = bytes(IP(src="198.51.100.1", dst="203.0.113.1") / TCP(sport=1, dport=80))
    assert spd.lookup_outbound(tcp).sa_name == "out"
    other = bytes(IP(src="192.0.2.9", dst="192.0.2.10") / ICMP())
    assert spd.lookup_outbound(other).action is Action.DISCARD
    v6 = bytes(IPv6(src="2001:db8::1", dst="2001:db8::2") / UDP())
    assert spd.lookup_outbound(v6) is None


_NARROW = Policy(Selector.parse("198.51.100.0/24", "203.0.113.0/24", "udp", remote_ports=53), Action.BYPASS)
_WIDE = Policy(Selector.parse("198.51.100.0/24", "203.0.113.0/24"), Action.PROTECT, sa_name="out",
               inbound_sa="in")
_OTHER_SA = Policy(Selector.parse("198.51.100.0/25", "203.0.113.0/24"), Action.PROTECT,
                   sa_name="out2", inbound_sa="in2")
_DENY = Policy(Selector.parse("0.0.0.0/0", "0.0.0.0/0"), Action.DISCARD)
_DNS_OUT = bytes(IP(src="198.51.100.1", dst="203.0.113.1") / UDP(sport=5000, dport=53))
_DNS_IN = bytes(IP(src="203.0.113.1", dst="198.51.100.1") / UDP(sport=53, dport=5000))
_TCP_IN = bytes(IP(src="203.0.113.1", dst="198.51.100.1") / TCP(sport=443, dport=5000))
_HIGH_IN = bytes(IP(src="203.0.113.1", dst="198.51.100.200") / TCP(sport=443, dport=5000))


@pytest.mark.parametrize("order", list(itertools.permutations([_NARROW, _WIDE, _OTHER_SA, _DENY])),
                         ids=lambda order: "-".join(p.action.value + (p.sa_name or "") for p in order))
def test_spd_overlapping_policies_are_decided_by_order(order):
    """Every packet below matches several policies: the first in the SPD's order decides, in
    the outbound lookup, the inbound lookup of plain packets and the inbound SA check."""
    spd = Spd(list(order))
    matching = {_DNS_IN: (_NARROW, _WIDE, _OTHER_SA, _DENY), _TCP_IN: (_WIDE, _OTHER_SA, _DENY),
                _HIGH_IN: (_WIDE, _DENY)}
    first = {packet: next(p for p in order if p in pols) for packet, pols in matching.items()}
    assert spd.lookup_outbound(_DNS_OUT) is first[_DNS_IN]
    for packet, policy in first.items():
        assert spd.lookup_inbound_plain(packet) is policy
        for sa in ("in", "in2"):
            if policy.action is Action.PROTECT and policy.inbound_sa == sa:
                assert spd.check_inbound(packet, sa) is policy
            else:                     # an earlier policy (bypass, discard, another SA's) decides
                with pytest.raises(PacketDropped) as exc:
                    spd.check_inbound(packet, sa)
                assert exc.value.reason is DropReason.POLICY


def test_spd_add_inserts_where_asked():
    spd = Spd([_WIDE])
    spd.add(_DENY)
    spd.add(_NARROW, index=0)
    assert spd.policies == [_NARROW, _WIDE, _DENY]
    assert spd.lookup_outbound(_DNS_OUT) is _NARROW
    spd.add(_DENY, index=0)
    assert spd.lookup_outbound(_DNS_OUT) is _DENY


def test_spd_port_ranges_and_ipv6():
    sel = Selector.parse("2001:db8:1::/48", "2001:db8:2::/48", 17, local_ports="1024-65535")
    spd = Spd([Policy(sel, Action.PROTECT, sa_name="v6")])
    ok = bytes(IPv6(src="2001:db8:1::5", dst="2001:db8:2::9") / UDP(sport=40000, dport=53))
    low = bytes(IPv6(src="2001:db8:1::5", dst="2001:db8:2::9") / UDP(sport=53, dport=53))
    assert spd.lookup_outbound(ok).sa_name == "v6"
    assert spd.lookup_outbound(low) is None


def test_spd_inbound_check():
    spd = Spd([Policy(Selector.parse("198.51.100.0/24", "203.0.113.0/24"), Action.PROTECT,
                      sa_name="out", inbound_sa="in")])
    reply = bytes(IP(src="203.0.113.1", dst="198.51.100.1") / UDP(sport=53, dport=5000))
    assert spd.check_inbound(reply, "in").inbound_sa == "in"
    with pytest.raises(PacketDropped) as exc:
        spd.check_inbound(reply, "other-sa")
    assert exc.value.reason is DropReason.POLICY
    stray = bytes(IP(src="192.0.2.50", dst="198.51.100.1") / UDP())
    with pytest.raises(PacketDropped):
        spd.check_inbound(stray, "in")


def test_selector_errors():
    with pytest.raises(ConfigError, match="mixes IPv4 and IPv6"):
        Selector.parse("192.0.2.0/24", "2001:db8::/32")
    with pytest.raises(ConfigError, match="bad port range"):
        Selector.parse("192.0.2.0/24", "192.0.2.0/24", "tcp", local_ports="80-x")
    with pytest.raises(ConfigError, match="unknown protocol"):
        Selector.parse("192.0.2.0/24", "192.0.2.0/24", "tpc")
    with pytest.raises(ConfigError, match="names the SA"):
        Policy(Selector.parse("192.0.2.0/24", "192.0.2.0/24"), Action.PROTECT)

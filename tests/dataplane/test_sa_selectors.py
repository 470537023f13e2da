"""An inbound SA checks every decrypted packet against its own traffic selectors (RFC 4301 5.2
step 4): a correctly encrypted packet from outside them is dropped as "policy" and counted, a
matching one passes, and every batch path (the scalar fast loop, the numpy paths in tunnel and
transport mode, the generic loop) gives what one-by-one processing gives.  Also the selector
matching itself: address ranges, protocols, port ranges, OPAQUE, ICMP type and code."""
import ipaddress
import random

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment

from dataplane.test_batch import configs
from ipsec_core.dataplane.esp import vec as esp_vec
from ipsec_core.dataplane.sa import SaConfig, SecurityAssociation
from ipsec_core.dataplane.sad import Sad
from ipsec_core.dataplane.spd import OPAQUE_PORTS, TrafficSelector, TrafficSelectors
from ipsec_core.errors import ConfigError, DropReason, PacketDropped

LOCAL_NET, REMOTE_NET = "198.51.100.0/24", "203.0.113.0/24"
V4 = (ipaddress.ip_address("192.0.2.1"), ipaddress.ip_address("192.0.2.2"))
V6 = (ipaddress.ip_address("2001:db8::1"), ipaddress.ip_address("2001:db8::2"))
#: The inbound SA's view: traffic from 203.0.113.0/24 (UDP, any port) and from 203.0.113.7
#: (TCP port 443) to 198.51.100.0/24.
SELECTORS = TrafficSelectors(
    local=[TrafficSelector.of(LOCAL_NET)],
    remote=[TrafficSelector.of(REMOTE_NET, protocol="udp"),
            TrafficSelector.of("203.0.113.7", protocol="tcp", ports=443)])


def inner(src="203.0.113.9", dst="198.51.100.1", layer=None, size=40) -> bytes:
    return bytes(IP(src=src, dst=dst) / (layer if layer is not None else UDP(sport=53, dport=5000))
                 / (b"p" * size))


MATCHING = [inner(), inner(src="203.0.113.7", layer=TCP(sport=443, dport=40000)),
            inner(src="203.0.113.255", dst="198.51.100.0", size=0)]
OUTSIDE = [inner(src="192.0.2.99"),                                    # source outside remote
           inner(dst="198.51.101.1"),                                   # destination outside local
           inner(src="203.0.113.7", layer=TCP(sport=444, dport=40000)),  # port outside
           inner(layer=ICMP())]                                         # protocol outside


def sa_pair(proposal="aes128gcm16", *, selectors=SELECTORS, **kw):
    out_cfg, in_cfg = configs(proposal, **kw)
    in_cfg = SaConfig(**{**{f: getattr(in_cfg, f) for f in in_cfg.__dataclass_fields__},
                         "selectors": selectors})
    return out_cfg, in_cfg


def reason(v):
    return v.reason if isinstance(v, PacketDropped) else v


def test_outside_packet_is_dropped_as_policy_and_counted():
    out_cfg, in_cfg = sa_pair()
    out, inb = SecurityAssociation(out_cfg, now=0.0), SecurityAssociation(in_cfg, now=0.0)
    for packet in MATCHING:
        assert inb.unprotect(out.protect(packet, now=0.0), now=0.0) == packet
    for packet in OUTSIDE:
        wire = out.protect(packet, now=0.0)
        with pytest.raises(PacketDropped) as exc:
            inb.unprotect(wire, now=0.0)
        assert exc.value.reason is DropReason.POLICY
        assert "outside the traffic selectors of SA i" in str(exc.value)
    assert inb.stats.drops == {"policy": len(OUTSIDE)}
    # It was authentic: its sequence number is used up (a replay of it is a replay).
    with pytest.raises(PacketDropped) as exc:
        inb.unprotect(wire, now=0.0)
    assert exc.value.reason is DropReason.REPLAY
    # Through the SAD, as drivers call it.
    sad = Sad()
    sad.add(inb)
    assert sad.unprotect(out.protect(MATCHING[0], now=0.0), now=0.0) == (inb, MATCHING[0])
    with pytest.raises(PacketDropped, match="policy"):
        sad.unprotect(out.protect(OUTSIDE[0], now=0.0), now=0.0)
    assert inb.stats.drops["policy"] == len(OUTSIDE) + 1


def test_without_selectors_nothing_is_checked():
    out_cfg, in_cfg = sa_pair(selectors=None)
    out, inb = SecurityAssociation(out_cfg, now=0.0), SecurityAssociation(in_cfg, now=0.0)
    for packet in OUTSIDE:
        assert inb.unprotect(out.protect(packet, now=0.0), now=0.0) == packet


def _mixed(rng: random.Random, n: int) -> list[bytes]:
    """`n` packets, about one in five outside the selectors, the others plain IPv4/UDP from the
    remote net (the kind every fast path takes)."""
    out = []
    for i in range(n):
        if rng.random() < 0.2:
            out.append(rng.choice(OUTSIDE))
        else:
            out.append(inner(src=f"203.0.113.{rng.randrange(256)}", dst=f"198.51.100.{rng.randrange(256)}",
                             size=rng.randrange(0, 600)))
    return out


BATCH_PATHS = [
    pytest.param("aes128gcm16", {}, 20, id="tunnel-fast-loop"),
    pytest.param("aes128gcm16", {}, 64, id="tunnel-vector"),
    pytest.param("aes256gcm16", {"encap": (4500, 4500)}, 64, id="tunnel-vector-udp"),
    pytest.param("aes128gcm16", {"mode": "transport"}, 64, id="transport-vector"),
    pytest.param("aes128gcm16", {"outer": V6}, 40, id="tunnel-ipv6-generic"),
    pytest.param("aes128-sha256", {}, 40, id="cbc-generic"),
]


@pytest.mark.parametrize("proposal, kw, n", BATCH_PATHS)
def test_batches_agree_with_one_by_one(proposal, kw, n):
    rng = random.Random(f"{proposal}{kw}{n}")
    out_cfg, in_cfg = sa_pair(proposal, **kw)
    out = SecurityAssociation(out_cfg, now=0.0)
    packets = _mixed(rng, 3 * n)
    wire = [out.protect(p, now=0.0) for p in packets]
    # A clean batch too (every packet inside): the fast paths take it whole.
    clean = [p for p in packets if p not in OUTSIDE][:n]
    wire_clean = [out.protect(p, now=0.0) for p in clean]
    one, many = SecurityAssociation(in_cfg, now=0.0), SecurityAssociation(in_cfg, now=0.0)
    single = []
    for w in wire + wire_clean:
        try:
            single.append(one.unprotect(w, now=0.0))
        except PacketDropped as drop:
            single.append(drop)
    batched = []
    for at in range(0, len(wire), n):
        batched += many.unprotect_batch(wire[at:at + n], now=0.0)
    batched += many.unprotect_batch(wire_clean, now=0.0)
    assert [reason(v) for v in batched] == [reason(v) for v in single]
    assert [reason(v) for v in single] == [
        DropReason.POLICY if p in OUTSIDE else p for p in packets + clean]
    assert many.state() == one.state()
    assert one.stats.drops["policy"] == sum(p in OUTSIDE for p in packets) > 0


def test_vector_path_still_taken_with_selectors():
    if not esp_vec.available():
        pytest.skip("numpy is not installed")
    out_cfg, in_cfg = sa_pair()
    out, inb = SecurityAssociation(out_cfg, now=0.0), SecurityAssociation(in_cfg, now=0.0)
    assert inb.engine._fast_unprotect.__module__ == "ipsec_core.dataplane.esp.vec"
    packets = [inner(size=i) for i in range(64)]
    assert inb.unprotect_batch(out.protect_batch(packets, now=0.0), now=0.0) == packets


# -- matching ----------------------------------------------------------------------------------
def test_selector_ranges_ports_and_families():
    ts = TrafficSelector(ipaddress.ip_address("10.0.0.5"), ipaddress.ip_address("10.0.0.9"), 17, (1000, 2000))
    v = 4
    at = int(ipaddress.ip_address("10.0.0.5"))
    assert ts.matches(v, at, 17, 1000) and ts.matches(v, at + 4, 17, 2000)
    assert not ts.matches(v, at - 1, 17, 1500) and not ts.matches(v, at + 5, 17, 1500)
    assert not ts.matches(v, at, 6, 1500) and not ts.matches(v, at, 17, 999)
    assert not ts.matches(v, at, 17, None)             # ports not available: only ANY or OPAQUE
    assert not ts.matches(6, at, 17, 1500)
    opaque = TrafficSelector.of("10.0.0.0/8", protocol=17, ports=OPAQUE_PORTS)
    assert opaque.matches(v, at, 17, None) and not opaque.matches(v, at, 17, 1500)
    assert TrafficSelector.of("2001:db8::/32").matches(6, int(V6[0]), 58, None)


def test_icmp_type_and_code_stand_for_ports_and_v6_fragments():
    echo = TrafficSelectors(local=[TrafficSelector.of("0.0.0.0/0")],
                            remote=[TrafficSelector.of("0.0.0.0/0", protocol="icmp", ports=(0x0800, 0x08FF))])
    assert echo.admits(bytes(IP(src="1.2.3.4", dst="5.6.7.8") / ICMP(type=8, code=0)), inbound=True)
    assert not echo.admits(bytes(IP(src="1.2.3.4", dst="5.6.7.8") / ICMP(type=0)), inbound=True)
    # A non-initial IPv6 fragment carries no ports: only ANY / OPAQUE port ranges match it.
    dns = TrafficSelectors(local=[TrafficSelector.of("2001:db8:1::/48")],
                           remote=[TrafficSelector.of("2001:db8:2::/48", protocol="udp", ports=53)])
    base = IPv6(src="2001:db8:2::1", dst="2001:db8:1::1")
    assert dns.admits(bytes(base / UDP(sport=53, dport=9)), inbound=True)
    assert not dns.admits(bytes(base / UDP(sport=53, dport=9)), inbound=False)
    later = bytes(base / IPv6ExtHdrFragment(offset=8, nh=17) / (b"\0" * 16))
    assert not dns.admits(later, inbound=True)
    anyport = TrafficSelectors(local=dns.local, remote=[TrafficSelector.of("2001:db8:2::/48", protocol="udp")])
    assert anyport.admits(later, inbound=True)


def test_selector_errors_say_what_to_change():
    a, b = ipaddress.ip_address("10.0.0.9"), ipaddress.ip_address("10.0.0.1")
    with pytest.raises(ConfigError, match="ends before it starts"):
        TrafficSelector(a, b)
    with pytest.raises(ConfigError, match="mixes IPv4 and IPv6"):
        TrafficSelector(a, V6[0])
    with pytest.raises(ConfigError, match="protocol"):
        TrafficSelector(b, a, protocol=256)
    with pytest.raises(ConfigError, match="ports"):
        TrafficSelector(b, a, ports=(2000, 1000))
    with pytest.raises(ConfigError, match="non-empty"):
        TrafficSelectors(local=[], remote=[TrafficSelector(b, a)])
    out_cfg, in_cfg = sa_pair(selectors=None)
    bad = SaConfig(**{**{f: getattr(in_cfg, f) for f in in_cfg.__dataclass_fields__},
                      "selectors": [TrafficSelector(b, a)]})
    with pytest.raises(ConfigError, match="selectors"):
        SecurityAssociation(bad, now=0.0)

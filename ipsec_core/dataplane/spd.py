"""The Security Policy Database (RFC 4301 4.4.1): ordered policies with traffic selectors.

Owns: selectors on address prefixes, IP protocol and ports; the actions protect, bypass and
discard; the outbound lookup (first match wins, in order) and the inbound check that a decrypted
packet matches the policy of the SA that carried it (RFC 4301 5.2, step 4).  Also the selectors
an SA carries itself in IKEv2's form (`TrafficSelector`: protocol, address range, port range;
`TrafficSelectors`: a CHILD SA's local and remote lists), which `SecurityAssociation.unprotect`
checks every decrypted packet against.
Must not: do I/O.
"""
from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass, field

from ipsec_core.errors import ConfigError, DropReason, PacketDropped
from ipsec_core.wire.ip import IPPROTO_FRAGMENT, IPV6_HEADER_BYTES, ipv4_header_len, ipv6_headers

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_PORT_PROTOCOLS = {6, 17, 132, 136}   # TCP, UDP, SCTP, UDP-Lite
_ICMP_PROTOCOLS = {1, 58}             # ICMP, ICMPv6: type and code stand for the port
_PROTOCOL_NAMES = {"tcp": 6, "udp": 17, "icmp": 1, "ipv6-icmp": 58, "icmpv6": 58, "sctp": 132,
                   "any": None}
#: IKEv2 port ranges (RFC 7296 3.13.1): every port, and OPAQUE (the ports are not available,
#: as in a non-initial fragment; RFC 4301 4.4.1).
ANY_PORTS = (0, 0xFFFF)
OPAQUE_PORTS = (0xFFFF, 0)


class Action(str, enum.Enum):
    PROTECT = "protect"
    BYPASS = "bypass"
    DISCARD = "discard"


@dataclass(frozen=True, slots=True)
class PacketSelector:
    """The selector values of one packet, seen from this host for outbound traffic."""

    src: ipaddress.IPv4Address | ipaddress.IPv6Address
    dst: ipaddress.IPv4Address | ipaddress.IPv6Address
    protocol: int
    src_port: int | None
    dst_port: int | None

    @classmethod
    def from_packet(cls, packet: bytes) -> "PacketSelector":
        src, dst, proto, start, fragment_offset = _next_layer(packet)
        sport = dport = None
        # Non-initial fragments carry no ports (RFC 4301 7): they match OPAQUE/ANY port selectors only.
        if proto in _PORT_PROTOCOLS and fragment_offset == 0 and len(packet) >= start + 4:
            sport = (packet[start] << 8) | packet[start + 1]
            dport = (packet[start + 2] << 8) | packet[start + 3]
        return cls(ipaddress.ip_address(src), ipaddress.ip_address(dst), proto, sport, dport)


def _next_layer(packet: bytes) -> tuple[bytes, bytes, int, int, int]:
    """(source, destination, next layer protocol, its offset, fragment offset) of an IP packet,
    or PacketDropped(malformed)."""
    version = packet[0] >> 4 if packet else 0
    if version == 4:
        start = ipv4_header_len(packet)
        return (packet[12:16], packet[16:20], packet[9], start,
                ((packet[6] << 8) | packet[7]) & 0x1FFF)
    if version == 6:
        if len(packet) < IPV6_HEADER_BYTES:
            raise PacketDropped(DropReason.MALFORMED, "truncated IPv6 header")
        # The next layer protocol comes after every extension header (RFC 4301 4.4.1.1),
        # destination options for the final destination included.
        chain = ipv6_headers(packet)
        proto, start, _ = chain[-1]
        fragment_offset = next((((packet[off + 2] << 8) | packet[off + 3]) & 0xFFF8
                                for p, off, _ in chain[:-1] if p == IPPROTO_FRAGMENT), 0)
        return packet[8:24], packet[24:40], proto, start, fragment_offset
    raise PacketDropped(DropReason.MALFORMED, f"IP version {version}")


@dataclass(frozen=True, slots=True)
class Selector:
    """Traffic selector: `local`/`remote` prefixes, protocol (None = any), port ranges (None = any)."""

    local: IpNetwork
    remote: IpNetwork
    protocol: int | None = None
    local_ports: tuple[int, int] | None = None
    remote_ports: tuple[int, int] | None = None

    @classmethod
    def parse(cls, local: str, remote: str, protocol: int | str | None = None,
              local_ports: str | int | None = None, remote_ports: str | int | None = None) -> "Selector":
        names = _PROTOCOL_NAMES
        try:
            loc = ipaddress.ip_network(local, strict=False)
            rem = ipaddress.ip_network(remote, strict=False)
        except ValueError as exc:
            raise ConfigError(f"bad selector address: {exc}") from None
        if loc.version != rem.version:
            raise ConfigError(f"selector {local} <-> {remote} mixes IPv4 and IPv6")
        if isinstance(protocol, str):
            if protocol.lower() not in names:
                raise ConfigError(f"unknown protocol {protocol!r}; use a number or {sorted(k for k in names)}")
            protocol = names[protocol.lower()]
        return cls(loc, rem, protocol, _ports(local_ports), _ports(remote_ports))

    def matches(self, local, remote, protocol: int, local_port: int | None, remote_port: int | None) -> bool:
        if local.version != self.local.version:
            return False
        if local not in self.local or remote not in self.remote:
            return False
        if self.protocol is not None and protocol != self.protocol:
            return False
        for rng, port in ((self.local_ports, local_port), (self.remote_ports, remote_port)):
            if rng is not None and (port is None or not rng[0] <= port <= rng[1]):
                return False
        return True


def _ports(value: str | int | None) -> tuple[int, int] | None:
    if value is None or value == "any":
        return None
    try:
        if isinstance(value, int):
            lo = hi = value
        else:
            lo_s, _, hi_s = str(value).partition("-")
            lo, hi = int(lo_s), int(hi_s or lo_s)
    except ValueError:
        raise ConfigError(f"bad port range {value!r}; use 80, \"1024-65535\" or \"any\"") from None
    if not 0 <= lo <= hi <= 65535:
        raise ConfigError(f"bad port range {value!r}")
    return lo, hi


@dataclass(frozen=True, slots=True)
class Policy:
    selector: Selector
    action: Action
    sa_name: str | None = None       # the outbound SA for PROTECT
    inbound_sa: str | None = None    # the inbound SA whose traffic this policy admits

    def __post_init__(self) -> None:
        if self.action == Action.PROTECT and not self.sa_name and not self.inbound_sa:
            raise ConfigError("a protect policy names the SA it uses (sa_name / inbound_sa)")


class Spd:
    """Ordered policies.  The first matching policy decides; no match means discard."""

    def __init__(self, policies: list[Policy] | None = None) -> None:
        self.policies: list[Policy] = list(policies or [])

    def add(self, policy: Policy, *, index: int | None = None) -> None:
        self.policies.insert(len(self.policies) if index is None else index, policy)

    def lookup_outbound(self, packet: bytes) -> Policy | None:
        s = PacketSelector.from_packet(packet)
        for policy in self.policies:
            if policy.selector.matches(s.src, s.dst, s.protocol, s.src_port, s.dst_port):
                return policy
        return None

    def lookup_inbound_plain(self, packet: bytes) -> Policy | None:
        """The policy for an inbound packet that arrived without IPsec (bypass, or discard)."""
        s = PacketSelector.from_packet(packet)
        for policy in self.policies:
            if policy.selector.matches(s.dst, s.src, s.protocol, s.dst_port, s.src_port):
                return policy
        return None

    def check_inbound(self, inner: bytes, sa_name: str) -> Policy:
        """RFC 4301 5.2 step 4: the decrypted packet must match a protect policy of its SA."""
        s = PacketSelector.from_packet(inner)
        for policy in self.policies:
            if policy.selector.matches(s.dst, s.src, s.protocol, s.dst_port, s.src_port):
                if policy.action == Action.PROTECT and policy.inbound_sa == sa_name:
                    return policy
                break
        raise PacketDropped(DropReason.POLICY,
                            f"{s.src} -> {s.dst} proto {s.protocol} is not admitted by SA {sa_name}'s policy")


@dataclass(frozen=True, slots=True)
class TrafficSelector:
    """One traffic selector as IKEv2 negotiates it (RFC 7296 3.13.1): an IP protocol (0: any),
    an inclusive address range `start`..`end` of one family, and an inclusive port range
    (`ANY_PORTS` by default; `OPAQUE_PORTS` matches only packets whose ports are not
    available).  Ports apply to TCP, UDP, SCTP and UDP-Lite; for ICMP and ICMPv6 the 16 bits
    are the message type and code, type high (RFC 4301 4.4.1.1)."""

    start: IpAddress
    end: IpAddress
    protocol: int = 0
    ports: tuple[int, int] = ANY_PORTS
    _range: tuple[int, int, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        start, end = self.start, self.end
        if not isinstance(start, (ipaddress.IPv4Address, ipaddress.IPv6Address)) or \
                not isinstance(end, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
            raise ConfigError(f"traffic selector addresses must be IP addresses, not {start!r}, {end!r}")
        if start.version != end.version:
            raise ConfigError(f"traffic selector {start}..{end} mixes IPv4 and IPv6")
        if start > end:
            raise ConfigError(f"traffic selector {start}..{end}: the range ends before it starts")
        if isinstance(self.protocol, bool) or not isinstance(self.protocol, int) or not 0 <= self.protocol <= 255:
            raise ConfigError(f"traffic selector protocol must be 0 (any) .. 255, not {self.protocol!r}")
        ports = tuple(self.ports)
        if len(ports) != 2 or not all(isinstance(p, int) and 0 <= p <= 0xFFFF for p in ports) or (
                ports[0] > ports[1] and ports != OPAQUE_PORTS):
            raise ConfigError(f"traffic selector ports {self.ports!r}: expected (low, high) in "
                              f"0..65535, or OPAQUE {OPAQUE_PORTS}")
        object.__setattr__(self, "ports", ports)
        object.__setattr__(self, "_range", (start.version, int(start), int(end)))

    @classmethod
    def of(cls, network: str, *, protocol: int | str | None = 0,
           ports: str | int | tuple[int, int] | None = None) -> "TrafficSelector":
        """A selector for an address prefix (`"10.1.0.0/16"`, `"2001:db8::1"`), a protocol
        number or name (`"udp"`), ports as 53, `"1024-65535"`, (lo, hi) or None (any)."""
        try:
            net = ipaddress.ip_network(network, strict=False)
        except ValueError as exc:
            raise ConfigError(f"bad traffic selector address: {exc}") from None
        if isinstance(protocol, str):
            if protocol.lower() not in _PROTOCOL_NAMES:
                raise ConfigError(f"unknown protocol {protocol!r}; use a number or {sorted(_PROTOCOL_NAMES)}")
            protocol = _PROTOCOL_NAMES[protocol.lower()]
        rng = ports if isinstance(ports, tuple) else (_ports(ports) or ANY_PORTS)
        return cls(net.network_address, net.broadcast_address, protocol or 0, rng)

    def matches(self, version: int, address: int, protocol: int, port: int | None) -> bool:
        """Whether a packet's address (as an integer of IP `version`), protocol and port (None:
        not available) fall in this selector."""
        family, low, high = self._range
        if family != version or not low <= address <= high:
            return False
        if self.protocol and protocol != self.protocol:
            return False
        ports = self.ports
        if ports == ANY_PORTS:
            return True
        if port is None:
            return ports == OPAQUE_PORTS
        return ports[0] <= port <= ports[1]


@dataclass(frozen=True, slots=True)
class TrafficSelectors:
    """The traffic selectors of one SA, as this host sees them: `local` and `remote` lists (a
    CHILD SA's TSi and TSr, RFC 7296 2.9).  A packet matches when its local side (the
    destination of an inbound packet) falls in one `local` selector and its remote side (the
    source) in one `remote` selector, each with its protocol and ports."""

    local: tuple[TrafficSelector, ...]
    remote: tuple[TrafficSelector, ...]

    def __post_init__(self) -> None:
        for side in ("local", "remote"):
            value = tuple(getattr(self, side))
            if not value or not all(isinstance(ts, TrafficSelector) for ts in value):
                raise ConfigError(f"traffic selectors: {side} must be a non-empty list of "
                                  "TrafficSelector")
            object.__setattr__(self, side, value)

    def admits(self, packet: bytes, *, inbound: bool) -> bool:
        """Whether `packet` (an inner packet received, or one to send) matches; PacketDropped
        (malformed) when it is not a parseable IP packet."""
        src, dst, proto, start, fragment_offset = _next_layer(packet)
        sport = dport = None
        if fragment_offset == 0 and len(packet) >= start + 4:
            if proto in _PORT_PROTOCOLS:
                sport = (packet[start] << 8) | packet[start + 1]
                dport = (packet[start + 2] << 8) | packet[start + 3]
            elif proto in _ICMP_PROTOCOLS:
                sport = dport = (packet[start] << 8) | packet[start + 1]
        version = 4 if len(src) == 4 else 6
        src_i, dst_i = int.from_bytes(src, "big"), int.from_bytes(dst, "big")
        if inbound:
            local, local_port, remote, remote_port = dst_i, dport, src_i, sport
        else:
            local, local_port, remote, remote_port = src_i, sport, dst_i, dport
        return (any(ts.matches(version, local, proto, local_port) for ts in self.local)
                and any(ts.matches(version, remote, proto, remote_port) for ts in self.remote))

    def check_inbound(self, inner: bytes, sa_name: str) -> bytes:
        """RFC 4301 5.2 step 4 for an SA's own selectors: `inner` itself, or PacketDropped(policy)."""
        if self.admits(inner, inbound=True):
            return inner
        s = PacketSelector.from_packet(inner)
        raise PacketDropped(DropReason.POLICY, f"{s.src} -> {s.dst} proto {s.protocol} is outside "
                                               f"the traffic selectors of SA {sa_name}")

"""The Security Policy Database (RFC 4301 4.4.1): ordered policies with traffic selectors.

Owns: selectors on address prefixes, IP protocol and ports; the actions protect, bypass and
discard; the outbound lookup (first match wins, in order) and the inbound check that a decrypted
packet matches the policy of the SA that carried it (RFC 4301 5.2, step 4).
Must not: do I/O.
"""
from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass

from ipsec_core.errors import ConfigError, DropReason, PacketDropped
from ipsec_core.wire.ip import IPPROTO_FRAGMENT, IPV6_HEADER_BYTES, ipv4_header_len, ipv6_headers

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_PORT_PROTOCOLS = {6, 17, 132, 136}   # TCP, UDP, SCTP, UDP-Lite


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
        version = packet[0] >> 4 if packet else 0
        if version == 4:
            start = ipv4_header_len(packet)
            src, dst, proto = packet[12:16], packet[16:20], packet[9]
            fragment_offset = ((packet[6] << 8) | packet[7]) & 0x1FFF
        elif version == 6:
            if len(packet) < IPV6_HEADER_BYTES:
                raise PacketDropped(DropReason.MALFORMED, "truncated IPv6 header")
            # The next layer protocol comes after every extension header (RFC 4301 4.4.1.1),
            # destination options for the final destination included.
            chain = ipv6_headers(packet)
            proto, start, _ = chain[-1]
            src, dst = packet[8:24], packet[24:40]
            fragment_offset = next((((packet[off + 2] << 8) | packet[off + 3]) & 0xFFF8
                                    for p, off, _ in chain[:-1] if p == IPPROTO_FRAGMENT), 0)
        else:
            raise PacketDropped(DropReason.MALFORMED, f"IP version {version}")
        sport = dport = None
        # Non-initial fragments carry no ports (RFC 4301 7): they match OPAQUE/ANY port selectors only.
        if proto in _PORT_PROTOCOLS and fragment_offset == 0 and len(packet) >= start + 4:
            sport = (packet[start] << 8) | packet[start + 1]
            dport = (packet[start + 2] << 8) | packet[start + 3]
        return cls(ipaddress.ip_address(src), ipaddress.ip_address(dst), proto, sport, dport)


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
        names = {"tcp": 6, "udp": 17, "icmp": 1, "ipv6-icmp": 58, "icmpv6": 58, "sctp": 132, "any": None}
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

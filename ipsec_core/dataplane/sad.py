"""The Security Association Database (RFC 4301 4.4.2).

Owns: the installed SAs (ESP and AH), the inbound lookup by (SPI, protocol, destination), and the
inbound entry point that finds the SA of a packet's outermost ESP or AH header and unprotects it.
Must not: do I/O or per-packet plugin calls.
"""
from __future__ import annotations

import ipaddress
import struct
from collections import Counter

from ipsec_core.errors import DropReason, LocalError, PacketDropped
from ipsec_core.dataplane.esp.engine import NAT_KEEPALIVE, NON_ESP_MARKER
from ipsec_core.wire.ip import (IPPROTO_AH, IPPROTO_ESP, IPPROTO_UDP, IPV6_HEADER_BYTES,
                                  ipv4_header_len, ipv6_split)
from ipsec_core.dataplane.sa import Direction, SecurityAssociation


def esp_spi_and_destination(packet: bytes, udp_ports=frozenset({4500})) -> tuple[int, bytes]:
    """The SPI and outer destination address of an ESP (or ESP-in-UDP) packet, or PacketDropped.

    UDP is taken as ESP-in-UDP only when its destination port is one of `udp_ports`."""
    if not packet:
        raise PacketDropped(DropReason.MALFORMED, "empty packet")
    version = packet[0] >> 4
    if version == 4:
        start, end, proto, dst = ipv4_header_len(packet), (packet[2] << 8) | packet[3], packet[9], packet[16:20]
    elif version == 6:
        if len(packet) < IPV6_HEADER_BYTES:
            raise PacketDropped(DropReason.MALFORMED, "truncated IPv6 header")
        start, _, proto = ipv6_split(packet)
        end, dst = len(packet), packet[24:40]
    else:
        raise PacketDropped(DropReason.MALFORMED, f"IP version {version}")
    if proto == IPPROTO_UDP:
        if end - start < 8 or ((packet[start + 2] << 8) | packet[start + 3]) not in udp_ports:
            raise PacketDropped(DropReason.NOT_ESP, "UDP, not to an ESP-in-UDP port")
        body = packet[start + 8:end]
        if body == NAT_KEEPALIVE:
            raise PacketDropped(DropReason.NAT_KEEPALIVE, "NAT-keepalive (RFC 3948 2.3)")
        if body[:4] == NON_ESP_MARKER:
            raise PacketDropped(DropReason.IKE_PACKET, "non-ESP marker: an IKE message")
        start += 8
    elif proto != IPPROTO_ESP:
        raise PacketDropped(DropReason.NOT_ESP, f"IP protocol {proto}")
    if end - start < 8:
        raise PacketDropped(DropReason.TRUNCATED, "no room for the ESP header")
    return struct.unpack_from("!I", packet, start)[0], dst


def ipsec_spi_and_destination(packet: bytes, udp_ports=frozenset({4500})) -> tuple[int, str, bytes]:
    """(SPI, "esp" or "ah", outer destination) of the outermost IPsec header of `packet`, or
    PacketDropped.  AH is found after the IPv4 header or the IPv6 extension headers that
    precede it; anything else goes through `esp_spi_and_destination`."""
    version = packet[0] >> 4 if packet else 0
    split = ipv6_split(packet) if version == 6 and len(packet) >= IPV6_HEADER_BYTES else None
    if version == 4 and len(packet) >= 20 and packet[9] == IPPROTO_AH:
        start, end, dst = ipv4_header_len(packet), (packet[2] << 8) | packet[3], packet[16:20]
    elif split is not None and split[2] == IPPROTO_AH:
        start, end, dst = split[0], len(packet), packet[24:40]
    else:
        spi, dst = esp_spi_and_destination(packet, udp_ports)
        return spi, "esp", dst
    if end - start < 12:
        raise PacketDropped(DropReason.TRUNCATED, "no room for the AH header")
    return struct.unpack_from("!I", packet, start + 4)[0], "ah", dst


class Sad:
    """Installed SAs: outbound by name, inbound by (SPI, protocol, destination)."""

    def __init__(self) -> None:
        self._by_name: dict[str, SecurityAssociation] = {}
        self._inbound: dict[tuple[int, str, bytes | None], SecurityAssociation] = {}
        self.drops: Counter = Counter()          # drops before any SA was found
        self.udp_ports: frozenset[int] = frozenset({4500})

    def __len__(self) -> int:
        return len(self._by_name)

    def __iter__(self):
        return iter(self._by_name.values())

    def add(self, sa: SecurityAssociation) -> None:
        if sa.name in self._by_name:
            raise LocalError(f"an SA named {sa.name!r} is already installed")
        if sa.direction == Direction.IN:
            local = sa.config.local.packed if sa.config.local is not None else None
            key = (sa.spi, sa.config.protocol, local)
            if key in self._inbound:
                raise LocalError(f"inbound SPI {sa.spi:#010x} is already used by {self._inbound[key].name}")
            self._inbound[key] = sa
            if sa.config.encap_ports:
                self.udp_ports = self.udp_ports | {sa.config.encap_ports[1]}
        self._by_name[sa.name] = sa

    def remove(self, name: str) -> SecurityAssociation:
        sa = self.get(name)
        del self._by_name[name]
        self._inbound = {k: v for k, v in self._inbound.items() if v is not sa}
        return sa

    def get(self, name: str) -> SecurityAssociation:
        try:
            return self._by_name[name]
        except KeyError:
            raise LocalError(f"no SA named {name!r} is installed") from None

    def lookup_inbound(self, spi: int, protocol: str = "esp", destination: bytes | None = None):
        """RFC 4301 4.1: match (SPI, protocol, destination) first, then (SPI, protocol)."""
        sa = self._inbound.get((spi, protocol, destination))
        if sa is None:
            sa = self._inbound.get((spi, protocol, None))
        if sa is None:
            where = f" to {ipaddress.ip_address(destination)}" if destination else ""
            raise PacketDropped(DropReason.UNKNOWN_SPI, f"no inbound SA for SPI {spi:#010x}{where}")
        return sa

    def unprotect(self, packet: bytes, *, now: float) -> tuple[SecurityAssociation, bytes]:
        """Find the inbound SA of `packet` and unprotect it.  Drops without an SA count in `drops`."""
        try:
            spi, protocol, dst = ipsec_spi_and_destination(packet, self.udp_ports)
            sa = self.lookup_inbound(spi, protocol, dst)
        except PacketDropped as drop:
            self.drops[drop.reason.value] += 1
            raise
        return sa, sa.unprotect(packet, now=now)

"""The `ipsec up` process core: an asyncio driver around the sans-I/O IKE endpoint and the data plane.

Owns: the clock (`loop.time()`, handed down as `now`), the UDP endpoint on the local addresses
(IKE on 500, IKE / ESP-in-UDP / keepalives on 4500), the IKE endpoint's timer, the installed
CHILD SAs (inbound by SPI, outbound per child, their traffic selectors), the routes to each
child's remote traffic selectors through the inner interface, NAT keepalives, one log line per
IKE event, and the `--save-keys` tables.  The shape is aioquic's `asyncio/protocol.py`: input goes
into the endpoint, then `_transmit()` drains its events and datagrams and re-arms its timer.
Must not: parse or build IKE messages (beyond the fixed header, for `-v` log lines), make
protocol decisions, or log key material.

The inner side is pluggable (`InnerInterface`): `TunInterface` (a TUN device, its MTU and its
routes through rtnetlink) for `ipsec up`, `MemoryInterface` (packets in lists) for `ipsec demo`
and tests.  Both read and write whole IP packets in batches.

Packets: a batch read from the inner interface is split by the child whose selectors match
(newest CHILD SA first, so traffic moves to a rekeyed SA at once; no match: dropped as
`no_policy`), protected with `protect_batch`, stripped of the outer IP and UDP headers the data
plane builds, and sent as ESP-in-UDP to the peer.  ESP read from the NAT-T socket is grouped by
SPI, given back the outer IP / UDP header the socket took off (the data plane unprotects whole
packets), unprotected with `unprotect_batch` (anti-replay, ICV), checked against the SA's
selectors (RFC 4301 5.2 step 4; mismatch: dropped as `policy`) and written to the inner side.
Every drop is counted in `DriverStats.drops`.

Where the CHILD SA's backend frames whole batches (`SecurityAssociation.frames_batches`), two
paths carry the bulk of TCP traffic with no Python object per packet: a TCP super-packet read
from the TUN is cut into rows one ESP-in-UDP datagram apart, protected in place
(`protect_packets`, ESP only, checksum offload) and sent in UDP_SEGMENT runs (`_send_super`);
the UDP_GRO reads of one drain are opened as one PacketBatch (`esp_runs_received`,
`unprotect_packets`), checked against the selectors once per flow and merged into GSO writes
(`TunDevice.write_packets`).  A CHILD SA whose backend computes whole batches in one call (the
GPU: `prefers_whole_batches`) gets the packets of several reads together, held `batch_wait`
seconds at most.

Also owned here: trap policies (routes at start, the first matching packets held while the
connection comes up), the outbound MTU check (a DF packet longer than fits the path is answered
with ICMP "too big" into the inner side), transport mode (the IKE SA's hosts stand in for the
SA's missing addresses; the peer's route goes through the policy table that the sockets' mark
bypasses), and `status()` / `up()` / `down()` for the control socket (`vpn/control.py`).
"""
from __future__ import annotations

import asyncio
import collections
import dataclasses
import ipaddress
import itertools
import logging
import re
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Protocol, Sequence

from ipsec_core.dataplane.sa import Direction, SecurityAssociation
from ipsec_core.dataplane.spd import PacketSelector, Selector
from ipsec_core.errors import DropReason, LocalError, PacketDropped
from ipsec_core.ike import events as ev
from ipsec_core.ike.config import IkeConfig
from ipsec_core.vpn.udp import UdpEndpoint

log = logging.getLogger("ipsec")

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: How long `stop()` waits for the peer to answer the deletes before it tears down anyway.
CLOSE_TIMEOUT_S = 3.0
#: How long the inbound SA of a CHILD SA replaced by a rekey still takes packets after its
#: delete: ESP the peer sent before it switched may arrive after the IKE message.
REKEYED_INBOUND_GRACE_S = 2.0
DEFAULT_MAX_BATCH = 64
#: A CHILD SA whose backend computes whole batches in one call (the GPU) gets its packets held
#: this long at most, or until BATCH_TARGET of them wait, so each call carries a full batch.
DEFAULT_BATCH_WAIT_S = 0.0005
BATCH_TARGET = 1024
#: Batches read from the inner interface per wake-up, so ESP from the network is not starved.
INNER_BATCHES_PER_WAKEUP = 4
#: libipsec's TUN MTU: room for the outer IP, UDP and ESP headers inside a 1500-byte path.
DEFAULT_TUN_MTU = 1400
#: The outer path MTU assumed when none is given: Ethernet's.
DEFAULT_PATH_MTU = 1500
#: Packets held per connection while a trap policy brings its CHILD SA up.
TRAP_QUEUE_PACKETS = 32
#: The mark on the IKE and ESP sockets (SO_MARK) and the routing table that the policy rule
#: sends unmarked traffic to: routes to networks that hold the peer itself (transport mode) go
#: there, so the tunnel's own datagrams, which carry the mark, still take the main table.
BYPASS_MARK = 0x1A5EC
POLICY_TABLE = 0x1A5
POLICY_RULE_PRIORITY = 0x1A5
#: How often the keepalive check runs; each peer gets one after keepalive_interval of silence.
KEEPALIVE_TICK_S = 1.0

_IPPROTO_UDP = 17
_V4_HEADER = struct.Struct("!BBHHHBBH4s4s")
_V6_HEADER = struct.Struct("!IHBB16s16s")
_UDP_HEADER = struct.Struct("!HHHH")
_IKE_HEADER = struct.Struct("!8s8sBBBBII")
_EXCHANGES = {34: "IKE_SA_INIT", 35: "IKE_AUTH", 36: "CREATE_CHILD_SA", 37: "INFORMATIONAL",
              43: "IKE_INTERMEDIATE"}
_PROTOCOL_NAMES = {"any": 0, "icmp": 1, "tcp": 6, "udp": 17, "ipv6-icmp": 58, "icmpv6": 58,
                   "sctp": 132}


# ------------------------------------------------------------------------------------------
# inner interfaces
# ------------------------------------------------------------------------------------------

class InnerInterface(Protocol):
    """Where cleartext packets come from and go to: a TUN device, or lists in memory."""

    name: str

    def start(self, loop: asyncio.AbstractEventLoop, ready: Callable[[], None]) -> None:
        """Call `ready()` (from the loop) whenever `read_batch` may return packets."""

    def read_batch(self, max_packets: int) -> list[bytes]:
        """Up to `max_packets` IP packets that the local stack sent into the tunnel."""

    def write_batch(self, packets: list[bytes]) -> int:
        """Hand decrypted IP packets to the local stack; returns how many it took."""

    def add_route(self, network: IpNetwork, *, src: IpAddress | None, policy: bool = False) -> None:
        """Send traffic for `network` into this interface (from `src` when given).  `policy`:
        only traffic without the driver's socket mark (the network holds the peer)."""

    def remove_route(self, network: IpNetwork) -> None:
        """Undo `add_route(network)`."""

    def host_addresses(self) -> list[IpAddress]:
        """The addresses of this host (for the routes' source address)."""

    def close(self) -> None:
        """Remove the routes and the device."""


class MemoryInterface:
    """An inner interface in memory: `inject()` packets as if the local stack sent them into the
    tunnel; what comes out of the tunnel is appended to `received`.  Routes are only recorded."""

    def __init__(self, name: str = "mem0", *, addresses: Iterable[str] = ()):
        self.name = name
        self.addresses = [ipaddress.ip_address(a) for a in addresses]
        self.received: list[bytes] = []
        self.routes: dict[IpNetwork, IpAddress | None] = {}
        self.policy_routes: dict[IpNetwork, IpAddress | None] = {}
        self.closed = False
        self._queue: collections.deque[bytes] = collections.deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready: Callable[[], None] | None = None
        self._waiters: list[tuple[int, asyncio.Future]] = []

    def start(self, loop: asyncio.AbstractEventLoop, ready: Callable[[], None]) -> None:
        self._loop, self._ready = loop, ready
        if self._queue:
            loop.call_soon(ready)

    def inject(self, packets: Iterable[bytes]) -> None:
        """Queue packets for the tunnel (as a TUN read would return them)."""
        was_empty = not self._queue
        self._queue.extend(packets)
        if was_empty and self._queue and self._ready is not None:
            self._loop.call_soon(self._ready)

    def read_batch(self, max_packets: int) -> list[bytes]:
        queue = self._queue
        return [queue.popleft() for _ in range(min(max_packets, len(queue)))]

    def write_batch(self, packets: list[bytes]) -> int:
        self.received.extend(packets)
        if self._waiters:
            done = [(n, f) for n, f in self._waiters if len(self.received) >= n]
            for n, fut in done:
                if not fut.done():
                    fut.set_result(None)
            self._waiters = [w for w in self._waiters if w not in done]
        return len(packets)

    async def wait_received(self, count: int, *, timeout: float) -> None:
        """Wait until `received` holds at least `count` packets (asyncio.TimeoutError otherwise)."""
        if len(self.received) >= count:
            return
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append((count, fut))
        await asyncio.wait_for(fut, timeout)

    def add_route(self, network: IpNetwork, *, src: IpAddress | None, policy: bool = False) -> None:
        (self.policy_routes if policy else self.routes)[network] = src

    def remove_route(self, network: IpNetwork) -> None:
        self.routes.pop(network, None)
        self.policy_routes.pop(network, None)

    def host_addresses(self) -> list[IpAddress]:
        return list(self.addresses)

    def close(self) -> None:
        self.routes.clear()
        self.policy_routes.clear()
        self.closed = True


class TunInterface:
    """A TUN device (up, with `mtu`) and the routes into it, set through rtnetlink.

    Opened in the calling thread's network namespace.  `close()` removes the routes it added and
    the device (the kernel deletes a non-persistent TUN when its file descriptor closes).

    Netlink work runs on a thread of its own: pyroute2's synchronous `IPRoute` drives an event
    loop of its own and refuses to run on a thread whose asyncio loop is running (the driver's).
    The thread is started here, so it inherits this thread's network namespace; route changes
    wait for it (milliseconds, and only when a CHILD SA comes or goes).
    """

    NETLINK_TIMEOUT_S = 10.0

    def __init__(self, name: str = "ipsec%d", *, mtu: int = DEFAULT_TUN_MTU, offload: bool = True):
        import concurrent.futures

        from ipsec_core.vpn.tun import TunDevice

        # offload: the stack hands over TCP super-packets (cut here), decrypted TCP segments
        # of one flow go back into it as one GSO write, from a thread of their own
        self.tun = TunDevice(name, read_size=max(mtu, 1500), vnet_hdr=offload, tso=offload,
                             write_thread=offload)
        self.name = self.tun.name
        self.mtu = mtu
        self._loop: asyncio.AbstractEventLoop | None = None
        self._installed: dict[IpNetwork, object] = {}
        self._rules: set[int] = set()
        self._worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"netlink-{self.name}")
        self.netlink = None
        try:
            self._netlink(self._open, mtu)
        except BaseException:
            self._close_netlink()
            self.tun.close()
            raise

    def _netlink(self, fn, *args, **kwargs):
        return self._worker.submit(fn, *args, **kwargs).result(self.NETLINK_TIMEOUT_S)

    def _open(self, mtu: int) -> None:
        from ipsec_core.vpn.netlink import Netlink

        self.netlink = Netlink()
        self.netlink.set_mtu(self.tun.index, mtu)
        self.netlink.set_up(self.tun.index)
        self._routes = self.netlink.route_set()

    def start(self, loop: asyncio.AbstractEventLoop, ready: Callable[[], None]) -> None:
        self._loop = loop
        loop.add_reader(self.tun.fileno(), ready)

    def read_batch(self, max_packets: int) -> list[bytes]:
        return self.tun.read_batch(max_packets)

    def read_offloaded(self, max_packets: int) -> list:
        return self.tun.read_offloaded(max_packets)

    def write_packets(self, batch) -> int:
        return self.tun.write_packets(batch)

    def write_batch(self, packets: list[bytes]) -> int:
        return self.tun.write_batch(packets)

    def add_route(self, network: IpNetwork, *, src: IpAddress | None, policy: bool = False) -> None:
        if policy:
            self._netlink(self._policy_rule, network.version)
            self._installed[network] = self._netlink(self._routes.add, network, dev=self.tun.index,
                                                     src=src, table=POLICY_TABLE)
        else:
            self._installed[network] = self._netlink(self._routes.add, network, dev=self.tun.index,
                                                     src=src)

    def _policy_rule(self, version: int) -> None:
        """`ip rule add not fwmark BYPASS_MARK lookup POLICY_TABLE` for one family, once."""
        if version in self._rules:
            return
        self.netlink.add_bypass_rule(version, mark=BYPASS_MARK, table=POLICY_TABLE,
                                     priority=POLICY_RULE_PRIORITY)
        self._rules.add(version)

    def remove_route(self, network: IpNetwork) -> None:
        route = self._installed.pop(network, None)
        if route is not None:
            self._netlink(self._uninstall, route)

    def _uninstall(self, route) -> None:
        from ipsec_core.vpn.netlink import NetlinkOperationError

        try:
            self.netlink.uninstall_route(route, device=self.name)
        except NetlinkOperationError as exc:
            log.debug("route %s already gone: %s", route.prefix, exc)

    def host_addresses(self) -> list[IpAddress]:
        return self._netlink(_host_addresses)

    def _close_netlink(self) -> None:
        if self.netlink is not None:
            try:
                self._netlink(self.netlink.close)
            except Exception as exc:
                log.debug("closing netlink: %r", exc)
            self.netlink = None
        self._worker.shutdown(wait=True)

    def close(self) -> None:
        if self.tun.closed:
            return
        try:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(self.tun.fileno())
            self._netlink(self._routes.remove_all)
            for version in sorted(self._rules):
                self._netlink(self.netlink.remove_bypass_rule, version, mark=BYPASS_MARK,
                              table=POLICY_TABLE, priority=POLICY_RULE_PRIORITY)
            self._rules.clear()
        finally:
            self.tun.close()
            self._close_netlink()


def _host_addresses() -> list[IpAddress]:
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        return [ipaddress.ip_address(msg.get("IFA_ADDRESS")) for msg in ipr.get_addr()
                if msg.get("IFA_ADDRESS")]


# ------------------------------------------------------------------------------------------
# traffic selectors
# ------------------------------------------------------------------------------------------

_TS_RE = re.compile(r"^\s*(?P<addr>[^\[\]\s]+)\s*(?:\[(?P<proto>[^/\]]*)(?:/(?P<ports>[^\]]*))?\])?\s*$")


@dataclass(frozen=True, slots=True)
class TrafficSelector:
    """One negotiated traffic selector, as the IKE event names it: prefixes (a range becomes the
    prefixes that cover it), a protocol (0 = any) and a port range."""

    networks: tuple[IpNetwork, ...]
    protocol: int = 0
    ports: tuple[int, int] = (0, 65535)

    @classmethod
    def parse(cls, text: str) -> "TrafficSelector":
        """"198.51.100.0/24", "192.0.2.1", "10.0.0.1-10.0.0.9", "203.0.113.0/24[udp/53]",
        "2001:db8::/32[17/1024-65535]", "0.0.0.0/0[any]"."""
        m = _TS_RE.match(str(text))
        if not m:
            raise LocalError(f"cannot read traffic selector {text!r}")
        addr = m.group("addr")
        try:
            if "-" in addr and "/" not in addr:
                lo, hi = (ipaddress.ip_address(a) for a in addr.split("-", 1))
                networks = tuple(ipaddress.summarize_address_range(lo, hi))
            else:
                networks = (ipaddress.ip_network(addr, strict=False),)
        except (ValueError, TypeError) as exc:
            raise LocalError(f"cannot read traffic selector {text!r}: {exc}") from None
        proto_text = (m.group("proto") or "").strip().lower()
        if proto_text in ("", "any", "0"):
            protocol = 0
        elif proto_text.isdigit():
            protocol = int(proto_text)
        elif proto_text in _PROTOCOL_NAMES:
            protocol = _PROTOCOL_NAMES[proto_text]
        else:
            raise LocalError(f"traffic selector {text!r}: unknown protocol {proto_text!r}")
        ports_text = (m.group("ports") or "").strip().lower()
        if ports_text in ("", "any", "0-65535"):
            ports = (0, 65535)
        elif ports_text == "opaque":
            ports = (65535, 0)
        else:
            lo_s, _, hi_s = ports_text.partition("-")
            try:
                ports = (int(lo_s), int(hi_s or lo_s))
            except ValueError:
                raise LocalError(f"traffic selector {text!r}: bad port range {ports_text!r}") from None
        return cls(networks, protocol, ports)


def child_selectors(local_ts: Sequence[str], remote_ts: Sequence[str]) -> list[Selector]:
    """The SPD selectors of a CHILD SA: every (local, remote) pair of one address family."""
    out: list[Selector] = []
    locals_ = [TrafficSelector.parse(t) for t in local_ts]
    remotes = [TrafficSelector.parse(t) for t in remote_ts]
    for lts in locals_:
        for rts in remotes:
            if lts.protocol and rts.protocol and lts.protocol != rts.protocol:
                continue
            protocol = lts.protocol or rts.protocol or None
            lports = None if lts.ports == (0, 65535) else lts.ports
            rports = None if rts.ports == (0, 65535) else rts.ports
            for lnet in lts.networks:
                for rnet in rts.networks:
                    if lnet.version == rnet.version:
                        out.append(Selector(lnet, rnet, protocol, lports, rports))
    return out


# ------------------------------------------------------------------------------------------
# the driver
# ------------------------------------------------------------------------------------------

@dataclass
class DriverStats:
    """Packet counters of one driver.  Every packet dropped is in `drops`, by reason."""

    inner_read: int = 0          # packets read from the inner interface
    inner_written: int = 0       # decrypted packets handed to the inner interface
    esp_sent: int = 0
    esp_received: int = 0
    keepalives_sent: int = 0
    icmp_too_big: int = 0        # ICMP / ICMPv6 "too big" written back into the inner interface
    framed_in_place: int = 0     # TSO segments cut, protected and sent from one buffer
    opened_in_runs: int = 0      # ESP datagrams of UDP_GRO reads unprotected as one batch
    drops: collections.Counter = field(default_factory=collections.Counter)


class ChildSa:
    """One installed CHILD SA: its two SAs, its selectors, where its ESP goes.

    `peer` / `local`: the hosts of the IKE SA (transport mode has no addresses in its SA
    configs).  `max_inner`: the longest inner packet whose ESP-in-UDP datagram fits the outbound
    SA's `mtu` (None: no limit), so the send path checks a length, not a protected size."""

    __slots__ = ("connection", "child", "inbound", "outbound", "selectors", "local_ts",
                 "remote_ts", "proposal", "peer", "send_from", "in_header", "strip",
                 "remote_networks", "tunnel", "max_inner", "installed_at", "gso")

    def __init__(self, event: ev.ChildSaInstalled, inbound: SecurityAssociation,
                 outbound: SecurityAssociation, send_from: str | None, *,
                 peer: IpAddress | None = None, local: IpAddress | None = None,
                 installed_at: float = 0.0):
        self.connection = event.connection
        self.child = event.child
        self.inbound = inbound
        self.outbound = outbound
        self.local_ts = tuple(event.local_ts)
        self.remote_ts = tuple(event.remote_ts)
        self.proposal = event.proposal
        self.installed_at = installed_at
        self.gso = True              # the connection's udp_gso: ESP in UDP_SEGMENT runs
        self.selectors = child_selectors(self.local_ts, self.remote_ts)
        self.remote_networks = [n for t in self.remote_ts for n in TrafficSelector.parse(t).networks]
        out = outbound.config
        self.tunnel = out.mode.value == "tunnel"
        remote = out.remote if out.remote is not None else peer
        here = inbound.config.local if inbound.config.local is not None else local
        if remote is None or here is None:
            raise LocalError(f"CHILD SA {event.child}: no peer or local address for its ESP")
        self.peer = (str(remote), out.encap_ports[1])
        self.send_from = send_from
        # Tunnel mode: the data plane's outer IP + UDP header; transport mode: the packet's own
        # IP header (options and extension headers included) + UDP, measured per packet.
        self.strip = (40 if remote.version == 6 else 20) + 8 if self.tunnel else None
        self.in_header = _inbound_header_maker(inbound.config, remote=remote, local=here)
        self.max_inner = None
        if out.mtu is not None and self.tunnel:
            self.max_inner = _largest_inner(outbound.engine.protected_len, out.mtu)

    @property
    def spis(self) -> tuple[int, int]:
        return self.inbound.spi, self.outbound.spi

    def matches_out(self, s: PacketSelector) -> bool:
        return any(sel.matches(s.src, s.dst, s.protocol, s.src_port, s.dst_port)
                   for sel in self.selectors)

    def admits(self, inner: bytes) -> bool:
        s = PacketSelector.from_packet(inner)
        return any(sel.matches(s.dst, s.src, s.protocol, s.dst_port, s.src_port)
                   for sel in self.selectors)


def _largest_inner(protected_len: Callable[..., int], mtu: int) -> int:
    """The longest tunnel-mode inner packet whose protected form is at most `mtu` bytes."""
    length = mtu
    while length > 0 and protected_len(b"\x45", length) > mtu:
        length -= 1
    return length


# The bytes of an inner IPv4 packet `_admitted` compares across a batch: version/IHL, the
# fragment fields, protocol, addresses and the four bytes after the header (`_flow_key`'s).
_FLOW_COLUMNS = [0, 6, 7, 9, *range(12, 24)]


def _flow_key(packet: bytes) -> bytes | None:
    """The bytes a selector match reads (protocol, addresses, the first four bytes after the IP
    header: ports, or ICMP type and code) for an IPv4 packet without options or fragmentation,
    or an IPv6 TCP / UDP packet without extension headers, whose length field is its length;
    None for any other packet, which is parsed in full."""
    n = len(packet)
    if n >= 24 and packet[0] == 0x45:
        if packet[6] & 0x3F or packet[7] or (packet[2] << 8 | packet[3]) != n:
            return None
        return packet[9:10] + packet[12:24]
    if n >= 44 and packet[0] >> 4 == 6 and packet[6] in (6, 17) and (packet[4] << 8 | packet[5]) + 40 == n:
        return packet[6:7] + packet[8:44]
    return None


def _transport_strip(wire: bytes) -> int:
    """Where the ESP header starts in a transport-mode ESP-in-UDP packet (after its IP headers
    and the UDP header)."""
    if wire[0] >> 4 == 4:
        return (wire[0] & 0x0F) * 4 + 8
    from ipsec_core.wire.ip import ipv6_split

    return ipv6_split(wire)[0] + 8


def _inbound_header_maker(cfg, *, remote: IpAddress, local: IpAddress) -> Callable[[int], bytes]:
    """The outer IP + UDP header the NAT-T socket removed, rebuilt for an ESP payload of n bytes
    (the data plane unprotects whole packets; it reads the ports and the ECN bits, not the IPv4
    checksum).  In transport mode this header becomes the inner packet's: its addresses are the
    IKE SA's hosts."""
    sport, dport = cfg.encap_ports
    src, dst = remote, local
    if src.version == 4:
        pack, s, d = _V4_HEADER.pack, src.packed, dst.packed

        def make(n: int) -> bytes:
            return (pack(0x45, 0, 28 + n, 0, 0, 64, _IPPROTO_UDP, 0, s, d)
                    + _UDP_HEADER.pack(sport, dport, 8 + n, 0))
    else:
        pack6, s, d = _V6_HEADER.pack, src.packed, dst.packed

        def make(n: int) -> bytes:
            return pack6(6 << 28, 8 + n, _IPPROTO_UDP, 64, s, d) + _UDP_HEADER.pack(sport, dport, 8 + n, 0)
    return make


@dataclass
class IkeSaRecord:
    uid: int
    connection: str
    spi_i: int
    spi_r: int
    peer: tuple[str, int] | None
    local: tuple[str, int] | None
    nat_keepalive: bool
    keepalive_interval: float
    initiator: bool = False
    proposal: str = ""
    local_id: str = ""
    remote_id: str = ""
    established_at: float = 0.0


def _notify_name(notify: int | None) -> str | None:
    if notify is None:
        return None
    try:
        from ipsec_core.ike.constants import NotifyType

        return NotifyType(notify).name
    except ValueError:
        return f"notify {notify}"


def describe_ike_message(data: bytes) -> str:
    """"IKE_AUTH request 1" from the fixed IKE header, for -v lines."""
    if len(data) < _IKE_HEADER.size:
        return f"{len(data)} bytes (no IKE header)"
    _, _, _, _, exchange, flags, msgid, _ = _IKE_HEADER.unpack_from(data)
    kind = "response" if flags & 0x20 else "request"
    return f"{_EXCHANGES.get(exchange, exchange)} {kind} {msgid}"


def _host(addr) -> str:
    return str(addr[0]).split("%")[0]


def _address_or_none(text) -> IpAddress | None:
    if text is None:
        return None
    try:
        return ipaddress.ip_address(str(text))
    except ValueError:
        return None


class Driver:
    """Runs IKE connections: sockets, timers, SAs, routes, packets.

    `configs`: the connections; those with a child whose `start_action` is "start" are initiated
    (`initiate`: the names to initiate instead).  `inner`: where cleartext packets come from and
    go to.  `endpoint_factory(configs, registry=, now=, save_keys=)` makes the IKE endpoint
    (default: `ipsec_core.ike.endpoint.IkeEndpoint`).  `local_addresses`, `ike_port`,
    `nat_t_port`: what the UDP sockets bind (default: the configs' `local_addrs`, `local_port`,
    `nat_t_port`).  `save_keys`: a folder for Wireshark's key tables (`keys.KeyTables`).
    `path_mtu`: the largest ESP-in-UDP packet on the outer path (None: no limit); a bigger
    inner packet with DF set (every IPv6 one) is answered with ICMP "too big" into `inner`.
    Children with `start_action = "trap"` get their routes at start; the first packet that
    matches one initiates the connection and is sent once the CHILD SA is up.
    """

    def __init__(self, configs: Sequence[IkeConfig], *, inner: InnerInterface, registry=None,
                 endpoint_factory=None, initiate: Iterable[str] | None = None,
                 local_addresses: Sequence[str] | None = None, ike_port: int | None = None,
                 nat_t_port: int | None = None, save_keys: str | Path | None = None,
                 max_batch: int = DEFAULT_MAX_BATCH, close_timeout: float = CLOSE_TIMEOUT_S,
                 path_mtu: int | None = DEFAULT_PATH_MTU, mark: int | None = BYPASS_MARK,
                 batch_wait: float = DEFAULT_BATCH_WAIT_S, batch_target: int = BATCH_TARGET,
                 udp_gso: bool = True):
        if not configs:
            raise LocalError("no connection to run")
        self.configs = {c.name: c for c in configs}
        self.inner = inner
        if registry is None:
            from ipsec_core.crypto.registry import get_registry

            registry = get_registry()
        self.registry = registry
        self._endpoint_factory = endpoint_factory
        if initiate is None:
            initiate = [c.name for c in configs
                        if any(child.start_action == "start" for child in c.children)]
        self.to_initiate = list(initiate)
        for name in self.to_initiate:
            if name not in self.configs:
                raise LocalError(f"cannot initiate {name!r}: no such connection")
        self.local_addresses = list(local_addresses or _local_addresses(configs))
        self.ike_port = ike_port if ike_port is not None else _one_port(configs, "local_port")
        self.nat_t_port = nat_t_port if nat_t_port is not None else _one_port(configs, "nat_t_port")
        self.max_batch = max_batch
        if batch_wait < 0 or batch_target < 1:
            raise LocalError(f"batch_wait must be >= 0 s and batch_target >= 1, not "
                             f"{batch_wait} / {batch_target}")
        self.batch_wait, self.batch_target = batch_wait, batch_target
        self.udp_gso = udp_gso
        # Packets held for SAs that want whole batches: id(child) -> (child, packets), one
        # dict per direction (inbound keyed by SPI), flushed by a timer or by BATCH_TARGET.
        self._held_out: dict[int, tuple[ChildSa, list[bytes]]] = {}
        self._held_in: dict[int, tuple[ChildSa, list[bytes]]] = {}
        self.close_timeout = close_timeout
        self.path_mtu = path_mtu
        self.mark = mark
        # Trap policies: (connection, child, its selectors); packets waiting per connection.
        self._traps: list[tuple[str, str, list[Selector]]] = []
        self._trap_queue: dict[str, collections.deque[bytes]] = {}
        for cfg in configs:
            for child_cfg in cfg.children:
                if child_cfg.start_action == "trap" and cfg.name not in self.to_initiate:
                    self._traps.append((cfg.name, child_cfg.name, child_selectors(
                        [str(t) for t in child_cfg.local_ts], [str(t) for t in child_cfg.remote_ts])))
        self.stats = DriverStats()
        self.keys = None
        if save_keys is not None:
            from ipsec_core.vpn.keys import KeyTables

            self.keys = KeyTables(Path(save_keys))
        self.endpoint = None
        self._traffic_received = None              # the endpoint's ESP-seen report, if it has one
        self._soft_reported: set[int] = set()
        self._hard_reported: set[int] = set()
        self.udp: UdpEndpoint | None = None
        self.children: list[ChildSa] = []          # newest first: outbound lookups take the first match
        self._by_spi: dict[int, ChildSa] = {}      # the SAD: inbound SAs by SPI
        self._routes: collections.Counter = collections.Counter()
        self._ike_sas: dict[tuple[int, int], IkeSaRecord] = {}
        self._peers_by_spi_i: dict[int, tuple[tuple[str, int], tuple[str, int]]] = {}
        self._uids = itertools.count(1)
        self._last_sent: dict[tuple[str, int], float] = {}
        self.events: list[ev.Event] = []
        self.listeners: list[Callable[[ev.Event], None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._keepalive: asyncio.TimerHandle | None = None
        self._bound_hosts: set[str] = set()
        self._saved_ike: set[tuple[int, int]] = set()
        self._stopping = False
        self._closed: asyncio.Event | None = None
        self._done: asyncio.Event | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind the sockets, start reading, create the IKE endpoint and initiate."""
        loop = self._loop = asyncio.get_running_loop()
        self._closed, self._done = asyncio.Event(), asyncio.Event()
        # A UDP GSO send shows in captures as one datagram per run of ESP packets until a real
        # device cuts it (loopback and veth never do): with --save-keys, or on loopback (ipsec
        # demo), the capture is meant to be read by Wireshark, so datagrams go out one by one.
        loopback = any(a not in ("0.0.0.0", "::") and ipaddress.ip_address(a).is_loopback
                       for a in self.local_addresses)
        self.udp = UdpEndpoint(self, local_addresses=self.local_addresses, ike_port=self.ike_port,
                               nat_t_port=self.nat_t_port, max_batch=self.max_batch, mark=self.mark,
                               offload=self.keys is None and not loopback, gso=self.udp_gso)
        try:
            self._bound_hosts = {_host(addr) for _, addr in self.udp.local_addresses}
            if self.keys is not None:
                self.keys.set_ports(ike_port=self.udp.ike_port, nat_t_port=self.udp.nat_t_port)
            factory = self._endpoint_factory
            extra = {}
            if factory is None:
                from ipsec_core.ike.endpoint import IkeEndpoint as factory
                # certificates are validated at the wall-clock time; IKE's `now` is loop.time()
                extra["wall_offset"] = time.time() - loop.time()
            self.endpoint = factory(list(self.configs.values()), registry=self.registry,
                                    now=loop.time(), save_keys=self.keys is not None, **extra)
            self._traffic_received = getattr(self.endpoint, "traffic_received", None)
            self.udp.start(loop)
            self.inner.start(loop, self._inner_ready)
        except BaseException:
            self.udp.close()
            raise
        for kind, addr in self.udp.local_addresses:
            log.debug("listening on %s[%s] (%s)", _host(addr), addr[1], kind.value)
        self._keepalive = loop.call_later(KEEPALIVE_TICK_S, self._keepalive_tick)
        self._install_traps()
        now = loop.time()
        for name in self.to_initiate:
            log.info("initiating IKE SA %s to %s", name, ", ".join(self.configs[name].remote_addrs))
            self.endpoint.initiate(name, now=now)
        self._transmit()

    async def run(self) -> None:
        """Start, then run until `stop()` has finished (deletes sent, routes and device removed)."""
        await self.start()
        await self._done.wait()

    def stop(self) -> None:
        """Begin an orderly shutdown (safe from a signal handler, safe to call twice)."""
        if self._stopping or self._loop is None:
            return
        self._stopping = True
        self._loop.create_task(self._shutdown())

    async def wait_stopped(self) -> None:
        await self._done.wait()

    async def _shutdown(self) -> None:
        loop = self._loop
        try:
            if self.endpoint is not None and self.endpoint.active():
                log.info("closing: deleting the IKE SAs")
                self.endpoint.close(now=loop.time())
                self._transmit()
                try:
                    await asyncio.wait_for(self._closed.wait(), self.close_timeout)
                except asyncio.TimeoutError:
                    log.warning("peer did not confirm the delete within %.0f s; closing anyway",
                                self.close_timeout)
        finally:
            self._teardown()
            self._done.set()

    def _teardown(self) -> None:
        if self.udp is not None:
            self._flush_held()
        for handle in (self._timer, self._keepalive):
            if handle is not None:
                handle.cancel()
        self._timer = self._keepalive = None
        for child in list(self.children):
            self._remove_child(child)
        for child in list(self._by_spi.values()):    # rekeyed SAs still in their inbound grace
            self._drop_inbound(child)
        for connection, _, _ in self._traps:
            self._remove_trap_routes(connection)
        try:
            self.inner.close()
        except OSError as exc:
            log.error("removing %s: %s", self.inner.name, exc)
        if self.udp is not None:
            self.udp.close()

    # -- commands (for the demo and tests) ---------------------------------------------------

    def rekey_child(self, connection: str, child: str) -> None:
        self.endpoint.rekey_child(connection, child, now=self._loop.time())
        self._transmit()

    def terminate(self, connection: str) -> None:
        self.endpoint.terminate(connection, now=self._loop.time())
        self._transmit()

    # -- commands of the control socket -------------------------------------------------------

    def up(self, connection: str) -> str:
        """Initiate `connection` unless an IKE SA of it is up or on its way; says which."""
        if connection not in self.configs:
            raise LocalError(f"no connection {connection!r}; this process runs "
                             f"{', '.join(sorted(self.configs))}")
        if self._connection_active(connection):
            return f"{connection} is already up (or coming up)"
        cfg = self.configs[connection]
        log.info("initiating IKE SA %s to %s (control socket)", connection, ", ".join(cfg.remote_addrs))
        children = [c.name for c in cfg.children if c.start_action in ("start", "trap")] \
            or [c.name for c in cfg.children]
        self.endpoint.initiate(connection, now=self._loop.time(), children=children)
        self._transmit()
        return f"initiating {connection}"

    def down(self, connection: str) -> str:
        """Delete the IKE SAs of `connection` (their CHILD SAs with them); trap policies stay."""
        if connection not in self.configs:
            raise LocalError(f"no connection {connection!r}; this process runs "
                             f"{', '.join(sorted(self.configs))}")
        if not self._connection_active(connection):
            return f"{connection} is not up"
        log.info("deleting IKE SA %s (control socket)", connection)
        self.terminate(connection)
        return f"deleting {connection}"

    def status(self) -> dict:
        """Everything `ipsec status` shows, as plain JSON types: connections with their IKE and
        CHILD SAs (SPIs, algorithms, backends, counters, seconds to the next rekey), the
        driver's and the sockets' counters, every drop by reason."""
        now = self._loop.time()
        sessions = getattr(self.endpoint, "sessions", None)
        rekey_at: dict[int, float | None] = {}
        ike_rekey: dict[tuple[int, int], float | None] = {}
        ike_state: dict[tuple[int, int], str] = {}
        if sessions is not None:
            for session in sessions():
                key = (int.from_bytes(session.spi_i or bytes(8), "big"),
                       int.from_bytes(session.spi_r or bytes(8), "big"))
                ike_state[key] = getattr(getattr(session, "state", None), "name", "?")
                ike_rekey[key] = getattr(session, "rekey_at", None)
                for spi_in, child in getattr(session, "children", {}).items():
                    rekey_at[spi_in] = getattr(child, "rekey_at", None)

        def seconds(at: float | None) -> float | None:
            return None if at is None else round(max(0.0, at - now), 1)

        out_conns = []
        for name, cfg in self.configs.items():
            ike_sas = [{
                "uid": r.uid, "spi_i": f"{r.spi_i:016x}", "spi_r": f"{r.spi_r:016x}",
                "state": ike_state.get((r.spi_i, r.spi_r), "ESTABLISHED"),
                "initiator": r.initiator, "proposal": r.proposal,
                "local": f"{r.local[0]}[{r.local[1]}]" if r.local else None,
                "remote": f"{r.peer[0]}[{r.peer[1]}]" if r.peer else None,
                "local_id": r.local_id, "remote_id": r.remote_id,
                "established_s": round(now - r.established_at, 1),
                "rekey_in_s": seconds(ike_rekey.get((r.spi_i, r.spi_r))),
            } for r in self._ike_sas.values() if r.connection == name]
            child_sas = []
            for c in self.children:
                if c.connection != name:
                    continue
                ins, outs = c.inbound.stats, c.outbound.stats
                child_sas.append({
                    "name": c.child, "mode": "tunnel" if c.tunnel else "transport",
                    "spi_in": f"{c.inbound.spi:08x}", "spi_out": f"{c.outbound.spi:08x}",
                    "proposal": c.proposal,
                    "backend_in": c.inbound.engine.backend_names,
                    "backend_out": c.outbound.engine.backend_names,
                    "local_ts": list(c.local_ts), "remote_ts": list(c.remote_ts),
                    "peer": f"{c.peer[0]}[{c.peer[1]}]",
                    "packets_in": ins.packets, "bytes_in": ins.bytes,
                    "packets_out": outs.packets, "bytes_out": outs.bytes,
                    "drops_in": dict(ins.drops), "drops_out": dict(outs.drops),
                    "installed_s": round(now - c.installed_at, 1),
                    "rekey_in_s": seconds(rekey_at.get(c.inbound.spi)),
                    "max_inner_bytes": c.max_inner,
                })
            out_conns.append({
                "name": name, "local_addrs": list(cfg.local_addrs),
                "remote_addrs": list(cfg.remote_addrs),
                "children": [{"name": ch.name, "mode": ch.mode, "start_action": ch.start_action,
                              "esp_proposals": list(ch.esp_proposals)} for ch in cfg.children],
                "trap": any(conn == name for conn, _, _ in self._traps),
                "ike_sas": ike_sas, "child_sas": child_sas,
            })
        stats = dataclasses.asdict(self.stats)
        stats["drops"] = dict(self.stats.drops)
        udp = {}
        if self.udp is not None:
            udp = {k: v for k, v in dataclasses.asdict(self.udp.stats).items()
                   if k != "last_send_error"}
        drops = collections.Counter(self.stats.drops)
        for key, reason in (("malformed_received", "udp_malformed"),
                            ("receive_errors", "udp_receive_error")):
            if udp.get(key):
                drops[reason] += udp[key]
        return {"inner": self.inner.name, "path_mtu": self.path_mtu,
                "listening": [f"{_host(addr)}[{addr[1]}] {kind.value}"
                              for kind, addr in (self.udp.local_addresses if self.udp else [])],
                "connections": out_conns, "driver": stats, "udp": udp,
                "drops": dict(sorted(drops.items()))}

    async def wait_for(self, predicate: Callable[[ev.Event], bool], *, timeout: float) -> ev.Event:
        """The first event from now on for which `predicate` is true."""
        fut = self._loop.create_future()

        def listener(event: ev.Event) -> None:
            if not fut.done() and predicate(event):
                fut.set_result(event)

        self.listeners.append(listener)
        try:
            return await asyncio.wait_for(fut, timeout)
        finally:
            self.listeners.remove(listener)

    # -- IKE -------------------------------------------------------------------------------

    def ike_received(self, data: bytes, addr, *, local, nat_t: bool) -> None:
        """UdpHandler: one IKE message (marker already removed)."""
        if self.endpoint is None:
            return
        remote, here = (_host(addr), addr[1]), (_host(local), local[1])
        if log.isEnabledFor(logging.DEBUG):
            log.debug("received packet: from %s[%d] to %s[%d] (%s, %d bytes)", remote[0], remote[1],
                      here[0], here[1], describe_ike_message(data), len(data))
        self._note_peer(data, remote, here)
        try:
            self.endpoint.receive_datagram(data, remote=remote, local=here, nat_t=nat_t,
                                           now=self._loop.time())
        except Exception as exc:  # the endpoint must survive a hostile datagram; still report it
            log.error("IKE message from %s[%d] not processed: %r", remote[0], remote[1], exc)
            log.debug("IKE endpoint traceback", exc_info=True)
        self._transmit()

    def _note_peer(self, data: bytes, remote: tuple[str, int], local: tuple[str, int]) -> None:
        if len(data) >= 8:
            self._peers_by_spi_i[int.from_bytes(data[:8], "big")] = (remote, local)

    def _on_timer(self) -> None:
        self._timer = self._timer_at = None
        if self.endpoint is None:
            return
        try:
            self.endpoint.handle_timer(now=self._loop.time())
        except Exception as exc:
            log.error("IKE timer handling failed: %r", exc)
            log.debug("IKE endpoint traceback", exc_info=True)
        self._transmit()

    def _transmit(self) -> None:
        """Drain the endpoint: events, then datagrams, then re-arm its timer (aioquic's transmit)."""
        endpoint, loop = self.endpoint, self._loop
        if endpoint is None:
            return
        while (event := endpoint.next_event()) is not None:
            try:
                self._handle_event(event)
            except Exception as exc:
                log.error("handling %s failed: %r", type(event).__name__, exc)
                log.debug("traceback", exc_info=True)
        now = loop.time()
        for dgram in endpoint.datagrams_to_send(now=now):
            self._send_ike(dgram)
        if self.keys is not None:
            self._save_ike_keys()
        when = endpoint.get_timer()
        if when != self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = when
            self._timer = None if when is None else loop.call_at(when, self._on_timer)
        if self._stopping and not endpoint.active():
            self._closed.set()

    def _send_ike(self, dgram: ev.Datagram) -> None:
        remote = (dgram.remote[0], dgram.remote[1])
        local = dgram.local[0] if dgram.local and dgram.local[0] in self._bound_hosts else None
        if log.isEnabledFor(logging.DEBUG):
            log.debug("sending packet: from %s[%d] to %s[%d] (%s, %d bytes)",
                      dgram.local[0] if dgram.local else "*",
                      self.nat_t_port if dgram.nat_t else self.ike_port,
                      remote[0], remote[1], describe_ike_message(dgram.data), len(dgram.data))
        self._note_peer(dgram.data, remote, tuple(dgram.local) if dgram.local else None)
        try:
            self.udp.send_ike(dgram.data, remote, nat_t=dgram.nat_t, local=local)
        except LocalError as exc:
            log.error("cannot send IKE message to %s[%d]: %s", remote[0], remote[1], exc)
            return
        self._last_sent[remote] = self._loop.time()

    def _save_ike_keys(self) -> None:
        keys = self.endpoint.ike_keys()
        spis = {(k.spi_i, k.spi_r) for k in keys}
        if not spis <= self._saved_ike:
            self._saved_ike |= spis
            self.keys.add_ike(keys)

    # -- events ----------------------------------------------------------------------------

    def _handle_event(self, event: ev.Event) -> None:
        self.events.append(event)
        handler = getattr(self, f"_on_{type(event).__name__}", None)
        if handler is not None:
            handler(event)
        for listener in list(self.listeners):
            listener(event)

    def _ike_name(self, connection: str, spi_i: int, spi_r: int) -> str:
        record = self._ike_sas.get((spi_i, spi_r))
        return f"{connection}[{record.uid}]" if record else connection

    def _on_IkeSaEstablished(self, e: ev.IkeSaEstablished) -> None:
        peer, local = self._peers_by_spi_i.get(e.spi_i, (None, None))
        cfg = self.configs.get(e.connection)
        record = IkeSaRecord(next(self._uids), e.connection, e.spi_i, e.spi_r, peer, local,
                             nat_keepalive=bool(e.nat_local),
                             keepalive_interval=cfg.keepalive_interval if cfg else 0.0,
                             initiator=e.initiator, proposal=e.proposal, local_id=e.local_id,
                             remote_id=e.remote_id, established_at=self._loop.time())
        self._ike_sas[(e.spi_i, e.spi_r)] = record
        where = peer[0] if peer else (", ".join(cfg.remote_addrs) if cfg else "?")
        nat = ""
        if e.nat_local or e.nat_remote:
            nat = ", NAT-T" + (" (local NAT)" if e.nat_local else "") + (" (remote NAT)" if e.nat_remote else "")
        log.info("IKE SA %s[%d] established with %s (%s), ids %s - %s%s", e.connection, record.uid,
                 where, e.proposal, e.local_id, e.remote_id, nat)
        log.debug("IKE SA %s[%d]: SPIs %016x_i %016x_r, %s, IKE crypto backend %s", e.connection,
                  record.uid, e.spi_i, e.spi_r, "initiator" if e.initiator else "responder", e.backend)

    def _on_IkeSaDeleted(self, e: ev.IkeSaDeleted) -> None:
        self._fail_trap(e.connection)
        name = self._ike_name(e.connection, e.spi_i, e.spi_r)
        self._ike_sas.pop((e.spi_i, e.spi_r), None)
        log.info("IKE SA %s deleted (%s)", name, e.reason)

    def _on_IkeSaFailed(self, e: ev.IkeSaFailed) -> None:
        self._fail_trap(e.connection)
        notify = _notify_name(e.notify)
        if notify and notify not in e.reason:
            log.error("IKE SA %s failed: %s (%s)", e.connection, notify, e.reason)
        else:
            log.error("IKE SA %s failed: %s", e.connection, e.reason)

    def _on_ChildSaFailed(self, e: ev.ChildSaFailed) -> None:
        self._fail_trap(e.connection)
        log.error("CHILD SA %s failed: %s", e.child, e.reason)

    def _on_ChildSaInstalled(self, e: ev.ChildSaInstalled) -> None:
        if e.inbound.encap_ports is None or e.outbound.encap_ports is None:
            log.error("CHILD SA %s not installed: SPIs %08x in / %08x out use plain ESP (IP "
                      "protocol 50), which this driver cannot send; set encap = true on "
                      "connection %s for ESP-in-UDP", e.child, e.inbound.spi, e.outbound.spi,
                      e.connection)
            self.stats.drops["plain_esp_child"] += 1
            return
        now = self._loop.time()
        inbound_cfg = dataclasses.replace(e.inbound, name=f"{e.connection}/{e.child}/in/{e.inbound.spi:08x}")
        outbound_cfg = dataclasses.replace(e.outbound, name=f"{e.connection}/{e.child}/out/{e.outbound.spi:08x}",
                                           mtu=self.path_mtu if e.outbound.mtu is None else e.outbound.mtu)
        try:
            inbound = SecurityAssociation(inbound_cfg, registry=self.registry, now=now)
            outbound = SecurityAssociation(outbound_cfg, registry=self.registry, now=now)
        except Exception as exc:
            log.error("CHILD SA %s not installed: SPIs %08x in / %08x out: %s", e.child,
                      e.inbound.spi, e.outbound.spi, exc)
            return
        if inbound.direction != Direction.IN or outbound.direction != Direction.OUT:
            log.error("CHILD SA %s not installed: SA directions are %s / %s", e.child,
                      inbound.direction.value, outbound.direction.value)
            return
        peer, here = self._child_hosts(e.connection, e.inbound.spi)
        local = outbound_cfg.local if outbound_cfg.local is not None else here
        send_from = str(local) if str(local) in self._bound_hosts else None
        try:
            child = ChildSa(e, inbound, outbound, send_from, peer=peer, local=here, installed_at=now)
            cfg = self.configs.get(e.connection)
            child.gso = cfg.udp_gso if cfg is not None else True
        except LocalError as exc:
            log.error("CHILD SA %s not installed: %s", e.child, exc)
            return
        # Newest first: after a rekey the new SA carries traffic at once, while the old one
        # still decrypts what is in flight until its delete.  The responder's side of a rekey
        # (outbound_active False) goes right behind the SA it replaces: outbound traffic moves
        # to it when that one is deleted, once the peer surely has the new inbound SA.
        at = 0
        if not getattr(e, "outbound_active", True) and e.rekeyed is not None:
            old = self._by_spi.get(e.rekeyed[0])
            at = self.children.index(old) + 1 if old in self.children else len(self.children)
        self.children.insert(at, child)
        self._by_spi[inbound.spi] = child
        self._add_routes(child)
        backends = inbound.engine.backend_names
        if outbound.engine.backend_names != backends:
            backends = f"{backends} in / {outbound.engine.backend_names} out"
        rekey = (f" (rekeyed {e.rekeyed[0]:08x} in / {e.rekeyed[1]:08x} out)"
                 if e.rekeyed is not None else "")
        log.info("CHILD SA %s installed%s: SPIs %08x in / %08x out, %s, backend %s, %s === %s",
                 e.child, rekey, inbound.spi, outbound.spi, e.proposal, backends,
                 ", ".join(child.local_ts), ", ".join(child.remote_ts))
        if self.keys is not None:
            self.keys.add_esp([inbound_cfg, outbound_cfg])
        self._release_trap(e.connection)

    def _child_hosts(self, connection: str, spi_in: int) -> tuple[IpAddress | None, IpAddress | None]:
        """(peer, local) hosts of the IKE SA that carries the CHILD SA `spi_in`."""
        sessions = getattr(self.endpoint, "sessions", None)
        if sessions is not None:
            for session in sessions(connection):
                if spi_in in getattr(session, "children", {}):
                    return _address_or_none(session.remote[0]), _address_or_none(session.local[0])
        records = [r for r in self._ike_sas.values() if r.connection == connection]
        if records:
            r = records[-1]
            return (_address_or_none(r.peer[0]) if r.peer else None,
                    _address_or_none(r.local[0]) if r.local else None)
        cfg = self.configs.get(connection)
        if cfg is None:
            return None, None
        return (_address_or_none(cfg.remote_addrs[0] if cfg.remote_addrs else None),
                _address_or_none(cfg.local_addrs[0] if cfg.local_addrs else None))

    def _child_local(self, connection: str, spi_in: int) -> IpAddress | None:
        return self._child_hosts(connection, spi_in)[1]

    def _on_ChildSaDeleted(self, e: ev.ChildSaDeleted) -> None:
        child = self._by_spi.get(e.inbound_spi)
        if child is not None and e.reason == "rekeyed":
            # Replaced by a rekey: no more outbound traffic, but its inbound SA still takes
            # what the peer sent before it switched, for REKEYED_INBOUND_GRACE_S.
            if child in self.children:
                self.children.remove(child)
                self._remove_routes(child)
            child.outbound.wipe()
            self._loop.call_later(REKEYED_INBOUND_GRACE_S, self._drop_inbound, child)
        elif child is not None:
            self._remove_child(child)
        log.info("CHILD SA %s deleted (%s): SPIs %08x in / %08x out%s", e.child, e.reason,
                 e.inbound_spi, e.outbound_spi,
                 "" if child is None else
                 f", {child.inbound.stats.packets} packets in / {child.outbound.stats.packets} out")

    def _drop_inbound(self, child: ChildSa) -> None:
        if self._by_spi.get(child.inbound.spi) is child:
            del self._by_spi[child.inbound.spi]
        _wipe(child)

    def _on_IkeSaRekeyed(self, e: ev.IkeSaRekeyed) -> None:
        record = self._ike_sas.pop((e.old_spi_i, e.old_spi_r), None)
        if record is not None:
            record.spi_i, record.spi_r = e.spi_i, e.spi_r
            self._ike_sas[(e.spi_i, e.spi_r)] = record
            if e.old_spi_i in self._peers_by_spi_i:
                self._peers_by_spi_i.setdefault(e.spi_i, self._peers_by_spi_i[e.old_spi_i])
        log.info("IKE SA %s rekeyed: SPIs %016x_i %016x_r, %s", self._ike_name(e.connection, e.spi_i, e.spi_r),
                 e.spi_i, e.spi_r, e.proposal)

    def _on_ChildSaTrapped(self, e: ev.ChildSaTrapped) -> None:
        if not any(conn == e.connection and name == e.child for conn, name, _ in self._traps):
            self._traps.append((e.connection, e.child, child_selectors(e.local_ts, e.remote_ts)))
        log.info("CHILD SA %s: peer dead, trap policy %s === %s", e.child, ", ".join(e.local_ts),
                 ", ".join(e.remote_ts))

    def _lifetimes(self, sa: SecurityAssociation, now: float) -> None:
        """Tell the IKE endpoint when an SA reached its soft (rekey) or hard byte/packet limit."""
        if sa.soft_expired and sa.spi not in self._soft_reported:
            self._soft_reported.add(sa.spi)
            report = getattr(self.endpoint, "child_soft_expired", None)
        elif sa.hard_expired and sa.spi not in self._hard_reported:
            self._hard_reported.add(sa.spi)
            report = getattr(self.endpoint, "child_hard_expired", None)
        else:
            return
        if report is not None:
            report(sa.spi, now=now)
            self._loop.call_soon(self._transmit)

    def _remove_child(self, child: ChildSa) -> None:
        if child in self.children:
            self.children.remove(child)
        if self._by_spi.get(child.inbound.spi) is child:
            del self._by_spi[child.inbound.spi]
        self._remove_routes(child)
        _wipe(child)

    # -- routes ----------------------------------------------------------------------------

    def _route_source(self, local_nets: Sequence[IpNetwork], network: IpNetwork,
                      ike_local: IpAddress | None) -> IpAddress | None:
        """An address of this host inside the local traffic selectors (as strongSwan picks the
        `src` of its routes), the IKE address first; None if there is none."""
        local_nets = [n for n in local_nets if n.version == network.version]
        try:
            hosts = self.inner.host_addresses()
        except OSError as exc:
            log.debug("cannot list addresses: %s", exc)
            hosts = []
        candidates = [h for h in hosts if h.version == network.version and not h.is_loopback
                      and not h.is_link_local and any(h in n for n in local_nets)]
        if ike_local in candidates:
            return ike_local
        return candidates[0] if candidates else None

    def _add_routes(self, child: ChildSa) -> None:
        peer = ipaddress.ip_address(child.peer[0])
        local_nets = [n for t in child.local_ts for n in TrafficSelector.parse(t).networks]
        ike_local = _address_or_none(child.send_from) or _address_or_none(
            self._child_local(child.connection, child.inbound.spi))
        for network in child.remote_networks:
            self._route_ref(network, peer=peer, what=f"CHILD SA {child.child}",
                            src=lambda n=network: self._route_source(local_nets, n, ike_local))

    def _route_ref(self, network: IpNetwork, *, peer: IpAddress | None, what: str,
                   src: Callable[[], IpAddress | None]) -> bool:
        """Take a reference on the route of `network` into the inner interface, adding it on
        the first.  A network that holds the peer goes through the policy table, so the
        tunnel's own (marked) datagrams to the peer do not loop into it."""
        policy = peer is not None and peer in network
        if policy and self.mark is None:
            log.warning("%s: not routing %s into %s: it holds the peer %s, whose ESP would loop "
                        "into the tunnel (no socket mark to tell them apart)", what, network,
                        self.inner.name, peer)
            return False
        self._routes[network] += 1
        if self._routes[network] > 1:
            return True
        source = src()
        try:
            self.inner.add_route(network, src=source, policy=policy)
        except OSError as exc:
            self._routes[network] -= 1
            if not self._routes[network]:
                del self._routes[network]
            log.error("%s: cannot route %s into %s: %s", what, network, self.inner.name, exc)
            return False
        log.debug("route %s dev %s%s%s", network, self.inner.name,
                  f" src {source}" if source else "",
                  f" table {POLICY_TABLE} (unmarked traffic)" if policy else "")
        return True

    def _route_unref(self, network: IpNetwork) -> None:
        if self._routes.get(network, 0) <= 0:
            return
        self._routes[network] -= 1
        if self._routes[network] == 0:
            del self._routes[network]
            try:
                self.inner.remove_route(network)
            except OSError as exc:
                log.error("cannot remove route %s from %s: %s", network, self.inner.name, exc)

    def _remove_routes(self, child: ChildSa) -> None:
        for network in child.remote_networks:
            self._route_unref(network)

    # -- trap policies ---------------------------------------------------------------------

    def _install_traps(self) -> None:
        self._trap_routes: dict[str, list[IpNetwork]] = {}
        for connection, child, selectors in self._traps:
            cfg = self.configs[connection]
            peer = _address_or_none(cfg.remote_addrs[0] if cfg.remote_addrs else None)
            ike_local = _address_or_none(cfg.local_addrs[0] if cfg.local_addrs else None)
            local_nets = list(dict.fromkeys(sel.local for sel in selectors))
            added = self._trap_routes.setdefault(connection, [])
            for network in dict.fromkeys(sel.remote for sel in selectors):
                if self._route_ref(network, peer=peer, what=f"trap {connection}/{child}",
                                   src=lambda n=network: self._route_source(local_nets, n, ike_local)):
                    added.append(network)
            log.info("trap %s/%s installed: %s", connection, child,
                     ", ".join(f"{sel.local} === {sel.remote}" for sel in selectors))

    def _remove_trap_routes(self, connection: str) -> None:
        for network in getattr(self, "_trap_routes", {}).pop(connection, []):
            self._route_unref(network)

    def _trap(self, packet: bytes, s: PacketSelector) -> bool:
        """Hold a packet that matches a trap policy and bring its connection up (once)."""
        for connection, child, selectors in self._traps:
            if not any(sel.matches(s.src, s.dst, s.protocol, s.src_port, s.dst_port)
                       for sel in selectors):
                continue
            queue = self._trap_queue.get(connection)
            if queue is None:
                queue = self._trap_queue[connection] = collections.deque(maxlen=TRAP_QUEUE_PACKETS)
                if not self._connection_active(connection):
                    log.info("trap %s/%s: %s -> %s, initiating", connection, child, s.src, s.dst)
                    try:
                        self.endpoint.initiate(connection, now=self._loop.time(), children=[child])
                    except Exception as exc:
                        log.error("trap %s: cannot initiate: %r", connection, exc)
                        del self._trap_queue[connection]
                        self.stats.drops["trap_failed"] += 1
                        return True
                    self._loop.call_soon(self._transmit)
            if len(queue) == queue.maxlen:
                self.stats.drops["trap_queue_full"] += 1
            queue.append(packet)
            return True
        return False

    def _release_trap(self, connection: str) -> None:
        queue = self._trap_queue.pop(connection, None)
        if queue:
            self.send_inner(list(queue), now=self._loop.time())

    def _fail_trap(self, connection: str) -> None:
        queue = self._trap_queue.pop(connection, None)
        if queue:
            self.stats.drops["trap_failed"] += len(queue)

    def _connection_active(self, connection: str) -> bool:
        sessions = getattr(self.endpoint, "sessions", None)
        if sessions is not None:
            return any(not s.finished for s in sessions(connection))
        return any(r.connection == connection for r in self._ike_sas.values())

    # -- packets ---------------------------------------------------------------------------

    def _inner_ready(self) -> None:
        now = self._loop.time()
        offloaded = getattr(self.inner, "read_offloaded", None)
        for _ in range(INNER_BATCHES_PER_WAKEUP):
            if offloaded is None:
                packets = self.inner.read_batch(self.max_batch)
                if not packets:
                    return
                self.stats.inner_read += len(packets)
                self.send_inner(packets, now=now)
                if len(packets) < self.max_batch:
                    return
                continue
            items = offloaded(self.max_batch)
            if not items:
                return
            segments = 0
            for item in items:
                if item.__class__ is list:
                    self.stats.inner_read += len(item)
                    segments += len(item)
                    self.send_inner(item, now=now)
                else:
                    segments += self._send_super(item, now)
            if segments < self.max_batch:
                return
        self._loop.call_soon(self._inner_ready)   # more may be waiting: after the sockets' turn

    def _send_super(self, sup, now: float) -> int:
        """A TCP super-packet from the TUN (TSO): cut straight into rows one ESP-in-UDP
        datagram apart, protected in place with checksum offload (esp_only), sent from that
        buffer in UDP_SEGMENT runs: no Python object per segment.  Where the CHILD SA or its
        backend does not frame in place, the segments take `send_inner`.  Returns the number
        of segments."""
        from ipsec_core.dataplane.batch import PacketBatch, np

        hdrs = sup.headers()
        length = sup.segment_length()
        child = None
        try:
            s = PacketSelector.from_packet(hdrs)
        except PacketDropped:
            s = None
        if s is not None:
            child = next((c for c in self.children if c.matches_out(s)), None)
        if (child is None or child.strip is None or not child.outbound.frames_batches
                or (child.max_inner is not None and length > child.max_inner)):
            packets = sup.segments()
            self.stats.inner_read += len(packets)
            self.send_inner(packets, now=now)
            return len(packets)
        out = child.outbound
        eng = out.engine
        head, tail = 8 + eng.iv_bytes, (-(length + 2)) % eng.block + 2 + eng.icv_bytes
        rows, count, last = sup.rows(head=head, tail=tail, partial=True)
        self.stats.inner_read += count
        stride = rows.shape[1]
        buf = rows.reshape(-1)
        offsets = np.arange(count, dtype=np.int64) * stride + head
        lengths = np.full(count, length, dtype=np.int64)
        lengths[-1] = last
        batch = PacketBatch(buf, offsets, lengths, head, tail)
        try:
            res = out.protect_packets(batch, now=now, esp_only=True, inner_csum=(sup.ip, 16))
        except Exception as exc:   # lifetime, sequence numbers
            reason = getattr(getattr(exc, "reason", None), "value", None) or type(exc).__name__
            self.stats.drops[reason] += count
            log.debug("CHILD SA %s: %d packets not protected: %s", child.child, count, exc)
            return count
        if out.soft_expired or out.hard_expired:
            self._lifetimes(out, now)
        if res.buf is buf and (count == 1 or int(res.lengths[0]) == stride):
            # in place, one ESP datagram per `stride` bytes from the start: one run
            self.stats.framed_in_place += count
            end = int(res.offsets[-1] + res.lengths[-1])
            sent = self.udp.send_esp_run(memoryview(buf)[:end], int(res.lengths[0]), child.peer,
                                         local=child.send_from, gso=child.gso)
        else:
            sent = self.udp.send_esp_batch(res.packets(), child.peer, local=child.send_from,
                                           gso=child.gso)
        self.stats.esp_sent += sent
        if sent < count:
            self.stats.drops["send_failed"] += count - sent
        self._last_sent[child.peer] = now
        return count

    def send_inner(self, packets: list[bytes], *, now: float) -> None:
        """Protect cleartext packets with the CHILD SA whose selectors match, and send them."""
        drops = self.stats.drops
        children = self.children
        groups: dict[int, tuple[ChildSa, list[bytes]]] = {}
        last: ChildSa | None = None
        flows: dict[bytes, ChildSa] = {}      # this batch's flows: a TCP stream matches once
        for packet in packets:
            key = _flow_key(packet)
            child = flows.get(key) if key is not None else None
            if child is None:
                try:
                    s = PacketSelector.from_packet(packet)
                except PacketDropped as drop:
                    drops[drop.reason.value] += 1
                    continue
                if last is not None and last.matches_out(s):
                    child = last
                else:
                    child = next((c for c in children if c.matches_out(s)), None)
                    if child is None:
                        if not (self._traps and self._trap(packet, s)):
                            drops["no_policy"] += 1
                        continue
                    last = child
                if key is not None:
                    flows[key] = child
            group = groups.get(id(child))
            if group is None:
                groups[id(child)] = (child, [packet])
            else:
                group[1].append(packet)
        for child, batch in groups.values():
            limit = child.max_inner
            if limit is not None and max(map(len, batch)) > limit:
                batch = self._too_big(child, batch, limit)
                if not batch:
                    continue
            if self.batch_wait and child.outbound.prefers_whole_batches:
                self._hold(self._held_out, id(child), child, batch, self._flush_out)
                continue
            self._protect_send(child, batch, now)

    def _hold(self, held: dict, key: int, child: ChildSa, batch: list[bytes], flush) -> None:
        """Keep `batch` for `child` until BATCH_TARGET packets wait or `batch_wait` has passed
        since the first of them came (one timer per held batch)."""
        entry = held.get(key)
        if entry is None:
            entry = held[key] = (child, [])
            self._loop.call_later(self.batch_wait, flush, key)
        entry[1].extend(batch)
        if len(entry[1]) >= self.batch_target:
            flush(key)

    def _flush_out(self, key: int) -> None:
        entry = self._held_out.pop(key, None)
        if entry is not None:
            self._protect_send(entry[0], entry[1], self._loop.time())

    def _flush_in(self, key: int) -> None:
        entry = self._held_in.pop(key, None)
        if entry is not None:
            self._open_write(entry[0], key, entry[1], self._loop.time())

    def _flush_held(self) -> None:
        """Everything held goes now (the driver stops)."""
        for key in list(self._held_out):
            self._flush_out(key)
        for key in list(self._held_in):
            self._flush_in(key)

    def _protect_send(self, child: ChildSa, batch: list[bytes], now: float) -> None:
        """Protect `batch` with the CHILD SA's outbound SA and send it to its peer."""
        drops = self.stats.drops
        try:
            wire = child.outbound.protect_batch(batch, now=now)
        except Exception as exc:   # lifetime, sequence numbers, a packet the SA refuses
            wire = getattr(exc, "partial", [])
            reason = getattr(getattr(exc, "reason", None), "value", None) or type(exc).__name__
            drops[reason] += len(batch) - len(wire)
            log.debug("CHILD SA %s: %d packets not protected: %s", child.child,
                      len(batch) - len(wire), exc)
        if not wire:
            return
        strip = child.strip
        if strip is not None:
            payloads = [w[strip:] for w in wire]
        else:
            payloads = [w[_transport_strip(w):] for w in wire]
        if child.outbound.soft_expired or child.outbound.hard_expired:
            self._lifetimes(child.outbound, now)
        sent = self.udp.send_esp_batch(payloads, child.peer, local=child.send_from, gso=child.gso)
        self.stats.esp_sent += sent
        if sent < len(wire):
            drops["send_failed"] += len(wire) - sent
        self._last_sent[child.peer] = now

    def _too_big(self, child: ChildSa, batch: list[bytes], limit: int) -> list[bytes]:
        """The packets of `batch` that may go out: those that fit, and IPv4 ones without DF
        (the kernel fragments their ESP datagram).  Each other one is dropped as too_big and
        answered with ICMP "fragmentation needed" / ICMPv6 "packet too big" (RFC 4301 8.2)
        into the inner interface, naming `limit` (the SA's `mtu` less the overhead, as the
        data plane's `protected_len` gives it), from the packet's destination: an address of
        this host as the source would be a martian to the local stack."""
        from ipsec_core.dataplane import fragments

        keep, icmps = [], []
        for packet in batch:
            if len(packet) <= limit or (packet[0] >> 4 == 4 and not packet[6] & 0x40):
                keep.append(packet)
            elif packet[0] >> 4 == 4:
                icmps.append(fragments.icmp_frag_needed(
                    packet, mtu=max(limit, fragments.IPV4_MIN_MTU), src=packet[16:20]))
            else:
                icmps.append(fragments.icmpv6_packet_too_big(
                    packet, mtu=max(limit, fragments.IPV6_MIN_MTU), src=packet[24:40]))
        if icmps:
            self.stats.drops[DropReason.TOO_BIG.value] += len(icmps)
            self.stats.icmp_too_big += len(icmps)
            self.inner.write_batch(icmps)
        return keep

    def esp_runs_received(self, runs: list, *, local) -> None:
        """UdpHandler: the UDP_GRO reads of one drain, each a run of ESP datagrams `size` bytes
        apart in `data` (the last may be shorter).  Consecutive runs of one SPI whose SA frames
        batches (one sender's stream) are unprotected together as one PacketBatch and written
        to the inner interface as one (no Python object per packet where it takes
        PacketBatches); any other run takes `esp_received`, in its place."""
        by_spi = self._by_spi
        group: list = []
        group_spi = None
        for data, size, addr in runs:
            n = len(data)
            spi = data[:4]
            child = by_spi.get(int.from_bytes(spi, "big"))
            whole = child is not None and child.strip is not None and child.inbound.frames_batches \
                and not any(data[k:k + 4] != spi for k in range(size, n, size))
            if group and (not whole or spi != group_spi):
                self._open_runs(by_spi[int.from_bytes(group_spi, "big")], group)
                group = []
            if whole:
                group.append((data, size))
                group_spi = spi
                continue
            count = -(-n // size)
            self.esp_received([data[k:k + size] for k in range(0, n, size)], [addr] * count,
                              local=local)
        if group:
            self._open_runs(by_spi[int.from_bytes(group_spi, "big")], group)

    def _open_runs(self, child: ChildSa, parts: list) -> None:
        """Runs of ESP datagrams of the CHILD SA's inbound SA ((data, size) each) as one
        PacketBatch: unprotected, checked against the selectors, written."""
        from ipsec_core.dataplane.batch import PacketBatch, np

        now = self._loop.time()
        drops = self.stats.drops
        data = parts[0][0] if len(parts) == 1 else b"".join(d for d, _ in parts)
        offs, lens, base = [], [], 0
        for d, size in parts:
            o = np.arange(base, base + len(d), size, dtype=np.int64)
            ln = np.full(len(o), size, dtype=np.int64)
            ln[-1] = base + len(d) - int(o[-1])
            offs.append(o)
            lens.append(ln)
            base += len(d)
        offsets = offs[0] if len(offs) == 1 else np.concatenate(offs)
        lengths = lens[0] if len(lens) == 1 else np.concatenate(lens)
        count = len(offsets)
        self.stats.esp_received += count
        self.stats.opened_in_runs += count
        inners, drop_list = child.inbound.unprotect_packets(
            PacketBatch(data, offsets, lengths), now=now, esp_only=True)
        for drop in drop_list:
            drops[drop.reason.value] += 1
        if len(inners):
            out = self._admitted(child, inners)
            if out is inners and hasattr(self.inner, "write_packets"):
                self.stats.inner_written += self.inner.write_packets(inners)
            elif out is not None and len(out):
                self.stats.inner_written += self.inner.write_batch(
                    out.packets() if out is inners else out)
            if self._traffic_received is not None:
                self._traffic_received(child.inbound.spi, now=now)
        if child.inbound.soft_expired or child.inbound.hard_expired:
            self._lifetimes(child.inbound, now)

    def _admitted(self, child: ChildSa, inners):
        """The packets of `inners` (a PacketBatch) inside the CHILD SA's selectors, the rest
        counted as drops: `inners` itself when all are, else a list.  When every packet is
        IPv4 without options or fragmentation, one check per flow (protocol, addresses, the
        four bytes after the header: what a selector reads) with no object per packet; else
        `_admit`, one check per flow over the packets as bytes."""
        from ipsec_core.dataplane.batch import np

        if int(inners.lengths.min()) >= 24:
            keys = np.frombuffer(inners.buf, np.uint8)[inners.offsets[:, None] + _FLOW_COLUMNS]
            if (keys[:, 0] == 0x45).all() and not (keys[:, 1] & 0x3F).any() and not keys[:, 2].any():
                flows = keys[:, 3:]
                if (flows == flows[0]).all():
                    firsts = [0]
                else:
                    _, firsts = np.unique(np.ascontiguousarray(flows).view(f"V{flows.shape[1]}").ravel(),
                                          return_index=True)
                    firsts = firsts.tolist()
                try:
                    if all(child.admits(inners.packet(i)) for i in firsts):
                        return inners
                except PacketDropped:
                    pass
        return self._admit(child, inners.packets())

    def _admit(self, child: ChildSa, packets: list[bytes]) -> list[bytes]:
        """The inner packets inside the CHILD SA's selectors (RFC 4301 5.2), one check per flow;
        the others counted as drops ("policy", or why they do not parse)."""
        out = []
        flows: dict[bytes, bool] = {}
        drops = self.stats.drops
        for packet in packets:
            key = _flow_key(packet)
            admitted = flows.get(key) if key is not None else None
            if admitted is None:
                try:
                    admitted = child.admits(packet)
                except PacketDropped as drop:
                    drops[drop.reason.value] += 1
                    continue
                if key is not None:
                    flows[key] = admitted
            if admitted:
                out.append(packet)
            else:
                drops["policy"] += 1
        return out

    def esp_received(self, packets: list[bytes], addrs: list, *, local) -> None:
        """UdpHandler: ESP packets (SPI first) from one drain of a NAT-T socket."""
        now = self._loop.time()
        self.stats.esp_received += len(packets)
        drops = self.stats.drops
        by_spi = self._by_spi
        groups: dict[int, list[bytes]] = {}
        for packet in packets:
            spi = int.from_bytes(packet[:4], "big")
            child = by_spi.get(spi)
            if child is None:
                drops["unknown_spi"] += 1
                continue
            batch = groups.get(spi)
            if batch is None:
                batch = groups[spi] = []
            batch.append(child.in_header(len(packet)) + packet)
        for spi, batch in groups.items():
            child = by_spi[spi]
            if self.batch_wait and child.inbound.prefers_whole_batches:
                self._hold(self._held_in, spi, child, batch, self._flush_in)
                continue
            self._open_write(child, spi, batch, now)

    def _open_write(self, child: ChildSa, spi: int, batch: list[bytes], now: float) -> None:
        """Unprotect `batch` (whole packets of one inbound SA), check the selectors, write the
        inner packets to the inner interface."""
        drops = self.stats.drops
        inners = []
        for verdict in child.inbound.unprotect_batch(batch, now=now):
            if verdict.__class__ is bytes:
                inners.append(verdict)
            else:
                drops[verdict.reason.value] += 1
        out = self._admit(child, inners)
        if out:
            self.stats.inner_written += self.inner.write_batch(out)
            if self._traffic_received is not None:
                self._traffic_received(spi, now=now)     # no liveness check needed
        if child.inbound.soft_expired or child.inbound.hard_expired:
            self._lifetimes(child.inbound, now)

    # -- NAT keepalives --------------------------------------------------------------------

    def _keepalive_tick(self) -> None:
        now = self._loop.time()
        for record in self._ike_sas.values():
            if not record.nat_keepalive or record.keepalive_interval <= 0:
                continue
            peer = self._nat_t_peer(record)
            if peer is None:
                continue
            if now - self._last_sent.get(peer, 0.0) >= record.keepalive_interval:
                try:
                    if self.udp.send_keepalive(peer, local=self._local_for(record)):
                        self.stats.keepalives_sent += 1
                        log.debug("sending keep-alive to %s[%d]", *peer)
                except LocalError as exc:
                    log.debug("no keep-alive to %s: %s", peer, exc)
                self._last_sent[peer] = now
        self._keepalive = self._loop.call_later(KEEPALIVE_TICK_S, self._keepalive_tick)

    def _nat_t_peer(self, record: IkeSaRecord) -> tuple[str, int] | None:
        for child in self.children:
            if child.connection == record.connection:
                return child.peer
        return record.peer

    def _local_for(self, record: IkeSaRecord) -> str | None:
        if record.local and record.local[0] in self._bound_hosts:
            return record.local[0]
        return None


def _wipe(child: ChildSa) -> None:
    """Forget the keys of a CHILD SA the driver no longer uses, both directions (best effort:
    `SecurityAssociation.wipe` says what Python can and cannot overwrite).  Its counters stay
    readable for the log line and `ipsec status`."""
    for sa in (child.inbound, child.outbound):
        if not sa.wiped:
            sa.wipe()


def inner_mtu(configs: Sequence[IkeConfig], *, path_mtu: int = DEFAULT_PATH_MTU) -> int:
    """The TUN MTU for `configs`: the longest inner packet whose tunnel-mode ESP-in-UDP packet
    (outer IP, UDP, ESP header, IV, padding, ICV) still fits `path_mtu`, for the costliest of
    the configured ESP proposals and outer address families (IPv6 where a peer's is unknown).
    A proposal this build cannot read counts as DEFAULT_TUN_MTU."""
    from ipsec_core.transforms.keywords import parse_esp

    best = None
    for cfg in configs:
        versions = {v for v in (_address_or_none(a) for a in cfg.remote_addrs) if v is not None}
        outer = 40 if not versions or any(a.version == 6 for a in versions) else 20
        for child in cfg.children:
            for text in child.esp_proposals:
                try:
                    proposal = parse_esp(text)
                except Exception:
                    fits = DEFAULT_TUN_MTU
                else:
                    info = proposal.encr_info
                    icv = info.icv_bytes or (proposal.integ_info.icv_bytes if proposal.integ_info else 0)
                    block = max(info.block_bytes, 4)
                    fixed = outer + 8 + 8 + info.iv_bytes + icv     # IP, UDP, SPI + sequence, IV, ICV
                    fits = (path_mtu - fixed) // block * block - 2  # pad length + next header
                best = fits if best is None else min(best, fits)
    return DEFAULT_TUN_MTU if best is None else best


def _local_addresses(configs: Sequence[IkeConfig]) -> list[str]:
    out: list[str] = []
    for cfg in configs:
        for addr in cfg.local_addrs or ("0.0.0.0",):
            addr = {"%any": "0.0.0.0", "%any4": "0.0.0.0", "%any6": "::"}.get(addr, addr)
            if addr not in out:
                out.append(addr)
    # A wildcard socket would collide with a specific one of its family on the same port.
    for wildcard, version in (("0.0.0.0", 4), ("::", 6)):
        if wildcard in out:
            out = [a for a in out if a == wildcard or ipaddress.ip_address(a).version != version]
    return out


def _one_port(configs: Sequence[IkeConfig], attr: str) -> int:
    ports = {getattr(c, attr) for c in configs}
    if len(ports) != 1:
        raise LocalError(f"connections disagree on {attr} ({sorted(ports)}): one process binds one "
                         "IKE port and one NAT-T port")
    return ports.pop()


__all__ = ["Driver", "DriverStats", "ChildSa", "InnerInterface", "MemoryInterface", "TunInterface",
           "TrafficSelector", "child_selectors", "describe_ike_message", "inner_mtu", "CLOSE_TIMEOUT_S",
           "DEFAULT_PATH_MTU", "BYPASS_MARK", "POLICY_TABLE"]

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Protocol, Sequence

from ipsec_core.dataplane.sa import Direction, SecurityAssociation
from ipsec_core.dataplane.spd import PacketSelector, Selector
from ipsec_core.errors import LocalError, PacketDropped
from ipsec_core.ike import events as ev
from ipsec_core.ike.config import IkeConfig
from ipsec_core.vpn.udp import UdpEndpoint

log = logging.getLogger("ipsec")

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: How long `stop()` waits for the peer to answer the deletes before it tears down anyway.
CLOSE_TIMEOUT_S = 3.0
DEFAULT_MAX_BATCH = 64
#: Batches read from the inner interface per wake-up, so ESP from the network is not starved.
INNER_BATCHES_PER_WAKEUP = 4
#: libipsec's TUN MTU: room for the outer IP, UDP and ESP headers inside a 1500-byte path.
DEFAULT_TUN_MTU = 1400
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

    def add_route(self, network: IpNetwork, *, src: IpAddress | None) -> None:
        """Send traffic for `network` into this interface (from `src` when given)."""

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

    def add_route(self, network: IpNetwork, *, src: IpAddress | None) -> None:
        self.routes[network] = src

    def remove_route(self, network: IpNetwork) -> None:
        self.routes.pop(network, None)

    def host_addresses(self) -> list[IpAddress]:
        return list(self.addresses)

    def close(self) -> None:
        self.routes.clear()
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

    def __init__(self, name: str = "ipsec%d", *, mtu: int = DEFAULT_TUN_MTU):
        import concurrent.futures

        from ipsec_core.vpn.tun import TunDevice

        self.tun = TunDevice(name, read_size=max(mtu, 1500))
        self.name = self.tun.name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._installed: dict[IpNetwork, object] = {}
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

    def write_batch(self, packets: list[bytes]) -> int:
        return self.tun.write_batch(packets)

    def add_route(self, network: IpNetwork, *, src: IpAddress | None) -> None:
        self._installed[network] = self._netlink(self._routes.add, network, dev=self.tun.index, src=src)

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
    drops: collections.Counter = field(default_factory=collections.Counter)


class ChildSa:
    """One installed CHILD SA: its two SAs, its selectors, where its ESP goes."""

    __slots__ = ("connection", "child", "inbound", "outbound", "selectors", "local_ts",
                 "remote_ts", "proposal", "peer", "send_from", "in_header", "strip",
                 "remote_networks")

    def __init__(self, event: ev.ChildSaInstalled, inbound: SecurityAssociation,
                 outbound: SecurityAssociation, send_from: str | None):
        self.connection = event.connection
        self.child = event.child
        self.inbound = inbound
        self.outbound = outbound
        self.local_ts = tuple(event.local_ts)
        self.remote_ts = tuple(event.remote_ts)
        self.proposal = event.proposal
        self.selectors = child_selectors(self.local_ts, self.remote_ts)
        self.remote_networks = [n for t in self.remote_ts for n in TrafficSelector.parse(t).networks]
        out = outbound.config
        self.peer = (str(out.remote), out.encap_ports[1])
        self.send_from = send_from
        self.strip = (40 if out.remote.version == 6 else 20) + 8
        self.in_header = _inbound_header_maker(inbound.config)

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


def _inbound_header_maker(cfg) -> Callable[[int], bytes]:
    """The outer IP + UDP header the NAT-T socket removed, rebuilt for an ESP payload of n bytes
    (the data plane unprotects whole packets; it reads the ports and the ECN bits, not the IPv4
    checksum)."""
    sport, dport = cfg.encap_ports
    src, dst = cfg.remote, cfg.local
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


class Driver:
    """Runs IKE connections: sockets, timers, SAs, routes, packets.

    `configs`: the connections; those with a child whose `start_action` is "start" are initiated
    (`initiate`: the names to initiate instead).  `inner`: where cleartext packets come from and
    go to.  `endpoint_factory(configs, registry=, now=, save_keys=)` makes the IKE endpoint
    (default: `ipsec_core.ike.endpoint.IkeEndpoint`).  `local_addresses`, `ike_port`,
    `nat_t_port`: what the UDP sockets bind (default: the configs' `local_addrs`, `local_port`,
    `nat_t_port`).  `save_keys`: a folder for Wireshark's key tables (`keys.KeyTables`).
    """

    def __init__(self, configs: Sequence[IkeConfig], *, inner: InnerInterface, registry=None,
                 endpoint_factory=None, initiate: Iterable[str] | None = None,
                 local_addresses: Sequence[str] | None = None, ike_port: int | None = None,
                 nat_t_port: int | None = None, save_keys: str | Path | None = None,
                 max_batch: int = DEFAULT_MAX_BATCH, close_timeout: float = CLOSE_TIMEOUT_S):
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
        self.close_timeout = close_timeout
        self.stats = DriverStats()
        self.keys = None
        if save_keys is not None:
            from ipsec_core.vpn.keys import KeyTables

            self.keys = KeyTables(Path(save_keys))
        self.endpoint = None
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
        self.udp = UdpEndpoint(self, local_addresses=self.local_addresses, ike_port=self.ike_port,
                               nat_t_port=self.nat_t_port, max_batch=self.max_batch)
        try:
            self._bound_hosts = {_host(addr) for _, addr in self.udp.local_addresses}
            if self.keys is not None:
                self.keys.set_ports(ike_port=self.udp.ike_port, nat_t_port=self.udp.nat_t_port)
            factory = self._endpoint_factory
            if factory is None:
                from ipsec_core.ike.endpoint import IkeEndpoint as factory
            self.endpoint = factory(list(self.configs.values()), registry=self.registry,
                                    now=loop.time(), save_keys=self.keys is not None)
            self.udp.start(loop)
            self.inner.start(loop, self._inner_ready)
        except BaseException:
            self.udp.close()
            raise
        for kind, addr in self.udp.local_addresses:
            log.debug("listening on %s[%s] (%s)", _host(addr), addr[1], kind.value)
        self._keepalive = loop.call_later(KEEPALIVE_TICK_S, self._keepalive_tick)
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
        for handle in (self._timer, self._keepalive):
            if handle is not None:
                handle.cancel()
        self._timer = self._keepalive = None
        for child in list(self.children):
            self._remove_child(child)
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
                             keepalive_interval=cfg.keepalive_interval if cfg else 0.0)
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
        name = self._ike_name(e.connection, e.spi_i, e.spi_r)
        self._ike_sas.pop((e.spi_i, e.spi_r), None)
        log.info("IKE SA %s deleted (%s)", name, e.reason)

    def _on_IkeSaFailed(self, e: ev.IkeSaFailed) -> None:
        notify = _notify_name(e.notify)
        if notify and notify not in e.reason:
            log.error("IKE SA %s failed: %s (%s)", e.connection, notify, e.reason)
        else:
            log.error("IKE SA %s failed: %s", e.connection, e.reason)

    def _on_ChildSaFailed(self, e: ev.ChildSaFailed) -> None:
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
        outbound_cfg = dataclasses.replace(e.outbound, name=f"{e.connection}/{e.child}/out/{e.outbound.spi:08x}")
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
        send_from = str(outbound_cfg.local) if str(outbound_cfg.local) in self._bound_hosts else None
        child = ChildSa(e, inbound, outbound, send_from)
        # Newest first: after a rekey the new SA carries traffic at once, while the old one
        # still decrypts what is in flight until its delete.
        self.children.insert(0, child)
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

    def _on_ChildSaDeleted(self, e: ev.ChildSaDeleted) -> None:
        child = self._by_spi.get(e.inbound_spi)
        if child is not None:
            self._remove_child(child)
        log.info("CHILD SA %s deleted (%s): SPIs %08x in / %08x out%s", e.child, e.reason,
                 e.inbound_spi, e.outbound_spi,
                 "" if child is None else
                 f", {child.inbound.stats.packets} packets in / {child.outbound.stats.packets} out")

    def _remove_child(self, child: ChildSa) -> None:
        if child in self.children:
            self.children.remove(child)
        if self._by_spi.get(child.inbound.spi) is child:
            del self._by_spi[child.inbound.spi]
        self._remove_routes(child)

    # -- routes ----------------------------------------------------------------------------

    def _route_source(self, child: ChildSa, network: IpNetwork) -> IpAddress | None:
        """An address of this host inside the child's local traffic selectors (as strongSwan
        picks the `src` of its routes), the IKE address first; None if there is none."""
        local_nets = [n for t in child.local_ts for n in TrafficSelector.parse(t).networks
                      if n.version == network.version]
        try:
            hosts = self.inner.host_addresses()
        except OSError as exc:
            log.debug("cannot list addresses: %s", exc)
            hosts = []
        ike_local = child.outbound.config.local
        candidates = [h for h in hosts if h.version == network.version and not h.is_loopback
                      and not h.is_link_local and any(h in n for n in local_nets)]
        if ike_local in candidates:
            return ike_local
        return candidates[0] if candidates else None

    def _add_routes(self, child: ChildSa) -> None:
        peer = ipaddress.ip_address(child.peer[0])
        for network in child.remote_networks:
            if peer in network:
                log.warning("CHILD SA %s: not routing %s into %s: it holds the peer %s, whose ESP "
                            "would loop into the tunnel", child.child, network, self.inner.name, peer)
                continue
            self._routes[network] += 1
            if self._routes[network] > 1:
                continue
            src = self._route_source(child, network)
            try:
                self.inner.add_route(network, src=src)
            except OSError as exc:
                self._routes[network] -= 1
                log.error("CHILD SA %s: cannot route %s into %s: %s", child.child, network,
                          self.inner.name, exc)
                continue
            log.debug("route %s dev %s%s", network, self.inner.name, f" src {src}" if src else "")

    def _remove_routes(self, child: ChildSa) -> None:
        for network in child.remote_networks:
            if self._routes.get(network, 0) <= 0:
                continue
            self._routes[network] -= 1
            if self._routes[network] == 0:
                del self._routes[network]
                try:
                    self.inner.remove_route(network)
                except OSError as exc:
                    log.error("cannot remove route %s from %s: %s", network, self.inner.name, exc)

    # -- packets ---------------------------------------------------------------------------

    def _inner_ready(self) -> None:
        now = self._loop.time()
        for _ in range(INNER_BATCHES_PER_WAKEUP):
            packets = self.inner.read_batch(self.max_batch)
            if not packets:
                return
            self.stats.inner_read += len(packets)
            self.send_inner(packets, now=now)
            if len(packets) < self.max_batch:
                return
        self._loop.call_soon(self._inner_ready)   # more may be waiting: after the sockets' turn

    def send_inner(self, packets: list[bytes], *, now: float) -> None:
        """Protect cleartext packets with the CHILD SA whose selectors match, and send them."""
        drops = self.stats.drops
        children = self.children
        groups: dict[int, tuple[ChildSa, list[bytes]]] = {}
        last: ChildSa | None = None
        for packet in packets:
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
                    drops["no_policy"] += 1
                    continue
                last = child
            group = groups.get(id(child))
            if group is None:
                groups[id(child)] = (child, [packet])
            else:
                group[1].append(packet)
        for child, batch in groups.values():
            try:
                wire = child.outbound.protect_batch(batch, now=now)
            except Exception as exc:   # lifetime, sequence numbers, a packet the SA refuses
                wire = getattr(exc, "partial", [])
                reason = getattr(getattr(exc, "reason", None), "value", None) or type(exc).__name__
                drops[reason] += len(batch) - len(wire)
                log.debug("CHILD SA %s: %d packets not protected: %s", child.child,
                          len(batch) - len(wire), exc)
            if not wire:
                continue
            strip = child.strip
            sent = self.udp.send_esp_batch([w[strip:] for w in wire], child.peer, local=child.send_from)
            self.stats.esp_sent += sent
            if sent < len(wire):
                drops["send_failed"] += len(wire) - sent
            self._last_sent[child.peer] = now

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
            out = []
            for verdict in child.inbound.unprotect_batch(batch, now=now):
                if verdict.__class__ is bytes:
                    try:
                        admitted = child.admits(verdict)
                    except PacketDropped as drop:
                        drops[drop.reason.value] += 1
                        continue
                    if admitted:
                        out.append(verdict)
                    else:
                        drops["policy"] += 1
                else:
                    drops[verdict.reason.value] += 1
            if out:
                self.stats.inner_written += self.inner.write_batch(out)

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
           "TrafficSelector", "child_selectors", "describe_ike_message", "CLOSE_TIMEOUT_S"]

"""UDP sockets for IKE (port 500) and NAT-T (port 4500: IKE with a marker, ESP-in-UDP, keepalives).

Owns: binding the sockets on the local addresses, draining them from the asyncio loop in bounded
batches, telling IKE, ESP and NAT keepalives apart on the NAT-T port (RFC 3948 2.2, 2.3), and
sending each kind with the right framing.
Must not: parse IKE or ESP beyond the first four bytes, or keep any per-peer state.  What arrives
goes to a handler (`UdpHandler`): IKE one datagram at a time, ready for a sans-I/O
`session.receive_datagram(data, addr, now)`; ESP as one batch per drained socket, ready for the
data plane's `*_batch` calls.

Reads do not go through `loop.create_datagram_endpoint`: its transport makes one `recvfrom` per
readiness event.  Each socket is registered with `loop.add_reader` instead, and a wake-up reads
until the socket is empty or `max_batch` datagrams were read, so a burst of ESP costs one loop
turn and one handler call (Python has no recvmmsg).  Sends are plain non-blocking `sendto`: a
datagram the kernel cannot queue is dropped and counted, as the network would drop it (IKE
retransmits; ESP carries its own end-to-end recovery), never buffered in user space.
"""
from __future__ import annotations

import asyncio
import enum
import errno
import ipaddress
import logging
import socket
from dataclasses import dataclass, field
from typing import Iterable, Protocol, Sequence

from ipsec_core.errors import LocalError

from ipsec_core.dataplane.esp import NAT_KEEPALIVE, NON_ESP_MARKER

log = logging.getLogger(__name__)

IKE_PORT = 500
NAT_T_PORT = 4500
#: Larger than any UDP payload over IPv4 or IPv6 (without jumbograms).
MAX_DATAGRAM_BYTES = 65535
DEFAULT_MAX_BATCH = 64
SO_MARK = getattr(socket, "SO_MARK", 36)

_MARKER_LEN = len(NON_ESP_MARKER)
_KEEPALIVE_BYTE = NAT_KEEPALIVE[0]

#: (host, port) for IPv4, (host, port, flowinfo, scope_id) for IPv6 as the socket module gives them.
Address = tuple


class SocketKind(str, enum.Enum):
    IKE = "ike"        # port 500: every datagram is IKE, no marker
    NAT_T = "nat_t"    # port 4500: IKE behind the non-ESP marker, ESP, NAT keepalives


class UdpHandler(Protocol):
    """What the endpoint calls for each datagram it reads (from the event loop's thread).

    An exception raised here goes to the loop's exception handler; ESP already read in that
    drain is still handed over first.
    """

    def ike_received(self, data: bytes, addr: Address, *, local: Address, nat_t: bool) -> None:
        """One IKE message, the non-ESP marker already removed (`nat_t` says which port)."""

    def esp_received(self, packets: list[bytes], addrs: list[Address], *, local: Address) -> None:
        """ESP packets (SPI first) read in one drain of one NAT-T socket, with their senders."""


@dataclass(frozen=True, slots=True)
class IkeDatagram:
    data: bytes
    addr: Address
    local: Address
    nat_t: bool


@dataclass(frozen=True, slots=True)
class EspBatch:
    packets: list[bytes]
    addrs: list[Address]
    local: Address


class QueueHandler:
    """A `UdpHandler` that puts what arrives on two asyncio queues: `ike` (`IkeDatagram`) and
    `esp` (`EspBatch`).  Convenient for tests and for a driver that awaits instead of being called."""

    def __init__(self) -> None:
        self.ike: asyncio.Queue[IkeDatagram] = asyncio.Queue()
        self.esp: asyncio.Queue[EspBatch] = asyncio.Queue()

    def ike_received(self, data: bytes, addr: Address, *, local: Address, nat_t: bool) -> None:
        self.ike.put_nowait(IkeDatagram(data, addr, local, nat_t))

    def esp_received(self, packets: list[bytes], addrs: list[Address], *, local: Address) -> None:
        self.esp.put_nowait(EspBatch(packets, addrs, local))


@dataclass(slots=True)
class UdpStats:
    """Counters of one endpoint.  Every dropped datagram is in one of them."""

    ike_received: int = 0
    esp_received: int = 0
    keepalives_received: int = 0     # one 0xFF byte on the NAT-T port: dropped (RFC 3948 2.3)
    malformed_received: int = 0      # empty, shorter than an SPI, or a marker with nothing after
    receive_errors: int = 0          # recvfrom failed (an ICMP error reported on the socket)
    ike_sent: int = 0
    esp_sent: int = 0
    keepalives_sent: int = 0
    send_dropped: int = 0            # the socket buffer was full (EAGAIN)
    send_errors: int = 0             # any other send failure; the last one is in `last_send_error`
    last_send_error: OSError | None = field(default=None, repr=False)


class _BoundSocket:
    __slots__ = ("sock", "kind", "local", "host", "family")

    def __init__(self, sock: socket.socket, kind: SocketKind):
        self.sock = sock
        self.kind = kind
        self.local: Address = sock.getsockname()
        self.host = ipaddress.ip_address(self.local[0].split("%")[0])
        self.family = sock.family


def _family_of(addr: Address) -> int:
    return socket.AF_INET6 if len(addr) == 4 or ":" in addr[0] else socket.AF_INET


class UdpEndpoint:
    """The IKE and NAT-T sockets on `local_addresses`, read from an asyncio loop.

    The sockets are bound in the constructor (in the caller's thread, hence in its network
    namespace) and read once `start()` registers them with the loop; `open()` does both.
    `ike_port` / `nat_t_port`: 0 picks a free port (the same one on every address of that kind,
    see `.ike_port`, `.nat_t_port`); None opens no socket of that kind.
    `mark`: SO_MARK on every socket (needs CAP_NET_ADMIN; skipped without), so policy routing
    can tell the tunnel's own datagrams from the traffic it carries.
    """

    def __init__(self, handler: UdpHandler, *, local_addresses: Sequence[str],
                 ike_port: int | None = IKE_PORT, nat_t_port: int | None = NAT_T_PORT,
                 max_batch: int = DEFAULT_MAX_BATCH, rcvbuf: int | None = None,
                 sndbuf: int | None = None, mark: int | None = None):
        if not local_addresses:
            raise LocalError("UdpEndpoint needs at least one local address (\"0.0.0.0\", \"::\", ...)")
        if ike_port is None and nat_t_port is None:
            raise LocalError("UdpEndpoint: ike_port and nat_t_port are both None: nothing to open")
        if ike_port and nat_t_port and ike_port == nat_t_port:
            raise LocalError(f"UdpEndpoint: ike_port and nat_t_port are both {ike_port}; they must differ")
        if max_batch < 1:
            raise LocalError(f"UdpEndpoint: max_batch must be at least 1, not {max_batch}")
        self.handler = handler
        self.max_batch = max_batch
        self.stats = UdpStats()
        self._buffer = bytearray(MAX_DATAGRAM_BYTES)
        self._view = memoryview(self._buffer)
        self._sockets: list[_BoundSocket] = []
        self._default: dict[tuple[SocketKind, int], _BoundSocket] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self.ike_port: int | None = None
        self.nat_t_port: int | None = None
        try:
            for kind, port in ((SocketKind.IKE, ike_port), (SocketKind.NAT_T, nat_t_port)):
                if port is None:
                    continue
                for host in local_addresses:
                    bound = self._bind(kind, host, port, rcvbuf=rcvbuf, sndbuf=sndbuf, mark=mark)
                    port = bound.local[1]  # port 0: the others reuse the port the first one got
                    self._sockets.append(bound)
                    self._default.setdefault((kind, bound.family), bound)
                if kind is SocketKind.IKE:
                    self.ike_port = port
                else:
                    self.nat_t_port = port
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _bind(kind: SocketKind, host: str, port: int, *, rcvbuf: int | None,
              sndbuf: int | None, mark: int | None = None) -> _BoundSocket:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM,
                                       flags=socket.AI_NUMERICHOST | socket.AI_PASSIVE)
        except socket.gaierror as exc:
            raise LocalError(f"bad local address {host!r}: give a numeric IPv4 or IPv6 address "
                             f"({exc.strerror})") from None
        family, _, _, _, sockaddr = infos[0]
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            if family == socket.AF_INET6:
                # Separate IPv4 sockets own the IPv4 side; a dual-stack socket would collide.
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if rcvbuf:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            if sndbuf:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
            if mark is not None:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, SO_MARK, mark)
                except PermissionError:
                    # Without CAP_NET_ADMIN (ipsec demo as a user) there is no policy routing
                    # to bypass either.
                    log.debug("no SO_MARK on %s socket %s: not permitted", kind.value, host)
            sock.setblocking(False)
            try:
                sock.bind(sockaddr)
            except OSError as exc:
                hint = {errno.EACCES: " (ports below 1024 need root or CAP_NET_BIND_SERVICE)",
                        errno.EADDRINUSE: " (another IKE daemon running?)",
                        errno.EADDRNOTAVAIL: " (not an address of this host/namespace)"}.get(exc.errno, "")
                where = f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"
                raise OSError(exc.errno, f"cannot bind UDP {where} for {kind.value}: "
                                         f"{exc.strerror}{hint}") from None
        except BaseException:
            sock.close()
            raise
        return _BoundSocket(sock, kind)

    # -- lifecycle -----------------------------------------------------------------------

    @classmethod
    async def open(cls, handler: UdpHandler, **kwargs) -> "UdpEndpoint":
        """Bind (keyword arguments as for the constructor) and start reading on the running loop."""
        endpoint = cls(handler, **kwargs)
        endpoint.start()
        return endpoint

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Register the sockets with `loop` (default: the running loop)."""
        if self._loop is not None:
            raise LocalError("UdpEndpoint.start: already started")
        loop = loop or asyncio.get_running_loop()
        for bound in self._sockets:
            reader = self._drain_nat_t if bound.kind is SocketKind.NAT_T else self._drain_ike
            loop.add_reader(bound.sock.fileno(), reader, bound)
        self._loop = loop

    def close(self) -> None:
        """Stop reading and close every socket.  Safe to call twice."""
        for bound in self._sockets:
            if self._loop is not None and bound.sock.fileno() >= 0 and not self._loop.is_closed():
                self._loop.remove_reader(bound.sock.fileno())
            bound.sock.close()
        self._sockets.clear()
        self._default.clear()
        self._loop = None

    def __enter__(self) -> "UdpEndpoint":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    @property
    def local_addresses(self) -> list[tuple[SocketKind, Address]]:
        """(kind, bound address) of every socket."""
        return [(bound.kind, bound.local) for bound in self._sockets]

    # -- receive -------------------------------------------------------------------------

    def _drain_ike(self, bound: _BoundSocket) -> None:
        recv_into, buffer, view = bound.sock.recvfrom_into, self._buffer, self._view
        handler, local, stats = self.handler, bound.local, self.stats
        for _ in range(self.max_batch):
            try:
                n, addr = recv_into(buffer)
            except BlockingIOError:
                return
            except OSError as exc:
                stats.receive_errors += 1
                log.debug("recvfrom on %s: %s", local, exc)
                continue
            if n == 0:
                stats.malformed_received += 1
                continue
            stats.ike_received += 1
            handler.ike_received(bytes(view[:n]), addr, local=local, nat_t=False)

    def _drain_nat_t(self, bound: _BoundSocket) -> None:
        recv_into, buffer, view = bound.sock.recvfrom_into, self._buffer, self._view
        handler, local, stats = self.handler, bound.local, self.stats
        packets: list[bytes] = []
        addrs: list[Address] = []
        try:
            for _ in range(self.max_batch):
                try:
                    n, addr = recv_into(buffer)
                except BlockingIOError:
                    break
                except OSError as exc:
                    stats.receive_errors += 1
                    log.debug("recvfrom on %s: %s", local, exc)
                    continue
                if n <= _MARKER_LEN:
                    if n == 1 and buffer[0] == _KEEPALIVE_BYTE:
                        stats.keepalives_received += 1
                    else:
                        stats.malformed_received += 1
                elif buffer.startswith(NON_ESP_MARKER):
                    stats.ike_received += 1
                    handler.ike_received(bytes(view[_MARKER_LEN:n]), addr, local=local, nat_t=True)
                else:
                    packets.append(bytes(view[:n]))
                    addrs.append(addr)
        finally:
            if packets:
                stats.esp_received += len(packets)
                handler.esp_received(packets, addrs, local=local)

    # -- send ----------------------------------------------------------------------------

    def _socket_for(self, kind: SocketKind, addr: Address, local: str | None) -> socket.socket:
        family = _family_of(addr)
        if local is None:
            bound = self._default.get((kind, family))
        else:
            want = ipaddress.ip_address(local)
            bound = next((b for b in self._sockets if b.kind is kind and b.host == want), None)
        if bound is None:
            version = 6 if family == socket.AF_INET6 else 4
            raise LocalError(f"no {kind.value} socket for IPv{version} destination {addr[0]}"
                             + (f" on local address {local}" if local else "")
                             + ": add a local address of that family")
        return bound.sock

    def _failed(self, exc: OSError, addr: Address) -> bool:
        if isinstance(exc, BlockingIOError):
            self.stats.send_dropped += 1
        else:
            self.stats.send_errors += 1
            self.stats.last_send_error = exc
            log.debug("send to %s: %s", addr, exc)
        return False

    def send_ike(self, data: bytes, addr: Address, *, nat_t: bool, local: str | None = None) -> bool:
        """Send an IKE message to `addr`; on the NAT-T port behind the non-ESP marker.
        False when the kernel did not take it (counted in `stats`)."""
        if nat_t:
            sock = self._socket_for(SocketKind.NAT_T, addr, local)
            try:
                sock.sendmsg((NON_ESP_MARKER, data), (), 0, addr)
            except OSError as exc:
                return self._failed(exc, addr)
        else:
            sock = self._socket_for(SocketKind.IKE, addr, local)
            try:
                sock.sendto(data, addr)
            except OSError as exc:
                return self._failed(exc, addr)
        self.stats.ike_sent += 1
        return True

    def send_esp(self, data: bytes, addr: Address, *, local: str | None = None) -> bool:
        """Send one ESP packet (SPI first) in UDP from the NAT-T port.  False when dropped."""
        sock = self._socket_for(SocketKind.NAT_T, addr, local)
        try:
            sock.sendto(data, addr)
        except OSError as exc:
            return self._failed(exc, addr)
        self.stats.esp_sent += 1
        return True

    def send_esp_batch(self, packets: Iterable[bytes], addr: Address, *,
                       local: str | None = None) -> int:
        """Send ESP packets to one peer; returns how many the kernel took (the rest are counted)."""
        sock = self._socket_for(SocketKind.NAT_T, addr, local)
        sendto = sock.sendto
        sent = 0
        for packet in packets:
            try:
                sendto(packet, addr)
            except OSError as exc:
                self._failed(exc, addr)
                continue
            sent += 1
        self.stats.esp_sent += sent
        return sent

    def send_keepalive(self, addr: Address, *, local: str | None = None) -> bool:
        """Send a NAT keepalive (one 0xFF byte, RFC 3948 2.3) from the NAT-T port."""
        sock = self._socket_for(SocketKind.NAT_T, addr, local)
        try:
            sock.sendto(NAT_KEEPALIVE, addr)
        except OSError as exc:
            return self._failed(exc, addr)
        self.stats.keepalives_sent += 1
        return True

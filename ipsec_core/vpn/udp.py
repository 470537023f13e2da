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
until the socket is empty or `max_batch` ESP packets were read, so a burst of ESP costs one loop
turn and one handler call (Python has no recvmmsg).  Sends are plain non-blocking: a datagram
the kernel cannot queue is dropped and counted, as the network would drop it (IKE retransmits;
ESP carries its own end-to-end recovery), never buffered in user space.

Python makes one system call per datagram, and at VPN rates the calls are the cost, so the NAT-T
sockets use the kernel's UDP segmentation offloads where it has them (Linux 4.18 / 5.0):
`send_esp_batch` sends each run of equal-size ESP packets to one peer as one `sendmsg` with a
UDP_SEGMENT control message (the kernel, or the NIC, cuts it into datagrams), and UDP_GRO lets
one `recvmsg` return a run of equal-size datagrams of one flow, which the drain cuts apart again
by the segment size the kernel reports.  Where the kernel or the route refuses segmentation
(EIO: no checksum offload on the device; EINVAL), the socket falls back to one `sendto` per
packet for good.  A capture sees a segmented send as one datagram until a real device cuts it
(loopback and veth never do): `offload=False` where captures must show one ESP packet each.  The NAT-T sockets also get large buffers (ESP_BUFFER_BYTES, forced past
net.core.rmem_max where the process may): a burst that overflows the default 208 KiB receive
buffer is lost to TCP inside the tunnel, which halves its window for it.
"""
from __future__ import annotations

import asyncio
import enum
import errno
import ipaddress
import logging
import socket
import struct
from dataclasses import dataclass, field
from typing import Protocol, Sequence

from ipsec_core.errors import LocalError

from ipsec_core.dataplane.esp import NAT_KEEPALIVE, NON_ESP_MARKER

log = logging.getLogger(__name__)

IKE_PORT = 500
NAT_T_PORT = 4500
#: Larger than any UDP payload over IPv4 or IPv6 (without jumbograms).
MAX_DATAGRAM_BYTES = 65535
DEFAULT_MAX_BATCH = 64
SO_MARK = getattr(socket, "SO_MARK", 36)
# <linux/udp.h>, <asm-generic/socket.h>; the socket module names none of them.
SOL_UDP = 17
UDP_SEGMENT = 103
UDP_GRO = 104
SO_SNDBUFFORCE = 32
SO_RCVBUFFORCE = 33
#: The kernel's cap on segments per UDP_SEGMENT send (UDP_MAX_SEGMENTS in older kernels).
GSO_MAX_SEGMENTS = 64
#: The largest UDP payload one send may carry: an IPv4 datagram's 65535 less its headers.
GSO_MAX_BYTES = 65535 - 20 - 8
#: Send and receive buffer of a NAT-T socket when none is given.
ESP_BUFFER_BYTES = 4 << 20
_GRO_CMSG_SPACE = socket.CMSG_SPACE(4)
_U16 = struct.Struct("=H")
_INT = struct.Struct("=i")

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
        """ESP packets (SPI first) read in one drain of one NAT-T socket, with their senders.

        A handler may also have `esp_runs_received(runs, *, local)`: then the UDP_GRO reads of
        a drain whose datagrams are all ESP come to it whole, as (data, size, addr) runs,
        `size` bytes per datagram (the last one may be shorter): no Python object per
        datagram."""


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
    truncated_received: int = 0      # a datagram longer than the receive buffer (cut short): dropped
    gso_sends: int = 0               # sendmsg calls that carried several ESP packets (UDP_SEGMENT)
    gro_receives: int = 0            # recvmsg calls that returned several ESP packets (UDP_GRO)
    send_errors: int = 0             # any other send failure; the last one is in `last_send_error`
    last_send_error: OSError | None = field(default=None, repr=False)


class _BoundSocket:
    __slots__ = ("sock", "kind", "local", "host", "family", "gso", "gro")

    def __init__(self, sock: socket.socket, kind: SocketKind, *, gso: bool = False, gro: bool = False):
        self.sock = sock
        self.kind = kind
        self.local: Address = sock.getsockname()
        self.host = ipaddress.ip_address(self.local[0].split("%")[0])
        self.family = sock.family
        self.gso = gso       # UDP_SEGMENT sends work on this socket (until the kernel says no)
        self.gro = gro       # UDP_GRO is on: a read may hold several datagrams


def _set_buffer(sock: socket.socket, option: int, force: int, size: int) -> None:
    """Set a socket buffer to `size`, past net.core.[rw]mem_max where the process may (root)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, force, size)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, option, size)


def _gso_supported(sock: socket.socket) -> bool:
    """Whether the kernel knows UDP_SEGMENT (reading it back is harmless)."""
    try:
        sock.getsockopt(SOL_UDP, UDP_SEGMENT)
    except OSError:
        return False
    return True


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
    `rcvbuf` / `sndbuf`: socket buffer sizes (default: the kernel's, ESP_BUFFER_BYTES on NAT-T
    sockets).  `offload`: use UDP_SEGMENT and UDP_GRO on the NAT-T sockets where the kernel has
    them (False: one system call per datagram, as before Linux 4.18).  `gso=False` keeps UDP_GRO
    but sends one datagram per system call: a receiver that reads one datagram at a time
    (strongSwan's kernel-libipsec) loses fewer of them when they do not arrive in bursts.
    """

    def __init__(self, handler: UdpHandler, *, local_addresses: Sequence[str],
                 ike_port: int | None = IKE_PORT, nat_t_port: int | None = NAT_T_PORT,
                 max_batch: int = DEFAULT_MAX_BATCH, rcvbuf: int | None = None,
                 sndbuf: int | None = None, mark: int | None = None, offload: bool = True,
                 gso: bool = True):
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
                    bound = self._bind(kind, host, port, rcvbuf=rcvbuf, sndbuf=sndbuf, mark=mark,
                                       offload=offload, gso=gso)
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
              sndbuf: int | None, mark: int | None = None, offload: bool = False,
              gso: bool = True) -> _BoundSocket:
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
            if kind is SocketKind.NAT_T:
                rcvbuf = rcvbuf or ESP_BUFFER_BYTES
                sndbuf = sndbuf or ESP_BUFFER_BYTES
            if rcvbuf:
                _set_buffer(sock, socket.SO_RCVBUF, SO_RCVBUFFORCE, rcvbuf)
            if sndbuf:
                _set_buffer(sock, socket.SO_SNDBUF, SO_SNDBUFFORCE, sndbuf)
            use_gso = gso
            gso = gro = False
            if offload and kind is SocketKind.NAT_T:
                gso = use_gso and _gso_supported(sock)
                try:
                    sock.setsockopt(SOL_UDP, UDP_GRO, 1)
                    gro = True
                except OSError:
                    log.debug("no UDP_GRO on %s socket %s: the kernel predates 5.0", kind.value, host)
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
        return _BoundSocket(sock, kind, gso=gso, gro=gro)

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
        if bound.gro:
            return self._drain_nat_t_gro(bound)
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
                self._sort_one(view, 0, n, addr, local, packets, addrs)
        finally:
            if packets:
                stats.esp_received += len(packets)
                handler.esp_received(packets, addrs, local=local)

    def _drain_nat_t_gro(self, bound: _BoundSocket) -> None:
        """The drain with UDP_GRO on: one read may hold a run of equal-size datagrams of one
        sender, `size` bytes each (the last one may be shorter), the size in a control message."""
        recvmsg_into, buffer, view = bound.sock.recvmsg_into, self._buffer, self._view
        handler, local, stats = self.handler, bound.local, self.stats
        max_batch, sort_one = self.max_batch, self._sort_one
        runs_to = getattr(handler, "esp_runs_received", None)
        runs: list = []
        packets: list[bytes] = []
        addrs: list[Address] = []
        try:
            for _ in range(max_batch):
                if len(packets) >= max_batch:
                    break
                try:
                    n, ancdata, flags, addr = recvmsg_into((buffer,), _GRO_CMSG_SPACE)
                except BlockingIOError:
                    break
                except OSError as exc:
                    stats.receive_errors += 1
                    log.debug("recvmsg on %s: %s", local, exc)
                    continue
                if flags & socket.MSG_TRUNC:
                    stats.truncated_received += 1
                    continue
                size = 0
                for level, kind, data in ancdata:
                    if level == SOL_UDP and kind == UDP_GRO:
                        size = (_INT if len(data) >= 4 else _U16).unpack_from(data)[0]
                if size <= 0 or size >= n:
                    size = n or 1                           # one datagram (maybe empty)
                else:
                    stats.gro_receives += 1
                if runs_to is not None and n > size and n - (n - 1) // size * size > _MARKER_LEN and all(
                        view[k:k + _MARKER_LEN] != NON_ESP_MARKER for k in range(0, n, size)):
                    # every datagram ESP (none a keepalive or IKE): the handler takes the run
                    # in one buffer, with the drain's other runs (in order with the rest)
                    if packets:
                        stats.esp_received += len(packets)
                        handler.esp_received(packets, addrs, local=local)
                        packets, addrs = [], []
                    stats.esp_received += -(-n // size)
                    runs.append((bytes(view[:n]), size, addr))
                    continue
                if runs:                                    # before what follows them
                    runs_to(runs, local=local)
                    runs = []
                for start in range(0, n or 1, size):
                    sort_one(view, start, min(n, start + size), addr, local, packets, addrs)
        finally:
            if runs:
                runs_to(runs, local=local)
            if packets:
                stats.esp_received += len(packets)
                handler.esp_received(packets, addrs, local=local)

    def _sort_one(self, view: memoryview, start: int, end: int, addr: Address, local: Address,
                  packets: list[bytes], addrs: list[Address]) -> None:
        """RFC 3948: one datagram of the NAT-T port (view[start:end]) is a keepalive, IKE behind
        the marker, or ESP (appended to `packets`)."""
        n = end - start
        stats = self.stats
        if n <= _MARKER_LEN:
            if n == 1 and view[start] == _KEEPALIVE_BYTE:
                stats.keepalives_received += 1
            else:
                stats.malformed_received += 1
        elif view[start:start + _MARKER_LEN] == NON_ESP_MARKER:
            stats.ike_received += 1
            self.handler.ike_received(bytes(view[start + _MARKER_LEN:end]), addr, local=local, nat_t=True)
        else:
            packets.append(bytes(view[start:end]))
            addrs.append(addr)

    # -- send ----------------------------------------------------------------------------

    def _socket_for(self, kind: SocketKind, addr: Address, local: str | None) -> socket.socket:
        return self._bound_for(kind, addr, local).sock

    def _bound_for(self, kind: SocketKind, addr: Address, local: str | None) -> _BoundSocket:
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
        return bound

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

    def send_esp_batch(self, packets: Sequence[bytes], addr: Address, *,
                       local: str | None = None, gso: bool = True) -> int:
        """Send ESP packets to one peer; returns how many the kernel took (the rest are counted).
        Runs of equal-size packets go out as one UDP_SEGMENT send where the socket can (and
        `gso`: False sends one datagram per system call, for a peer that reads them one by one)."""
        bound = self._bound_for(SocketKind.NAT_T, addr, local)
        if not (bound.gso and gso) or len(packets) < 2:
            return self._send_each(bound.sock, packets, addr)
        sent = 0
        i, count = 0, len(packets)
        while i < count:
            size = len(packets[i])
            j, total = i + 1, size
            # a run: packets of `size` bytes, the last one may be shorter (the kernel's rule)
            limit = min(count, i + GSO_MAX_SEGMENTS)
            while j < limit and total + size <= GSO_MAX_BYTES:
                n = len(packets[j])
                if n > size:
                    break
                total += n
                j += 1
                if n < size:
                    break
            if j - i == 1:
                sent += self._send_each(bound.sock, packets[i:j], addr)
                i = j
                continue
            done = self._send_gso(bound, b"".join(packets[i:j]), size, j - i, addr)
            if done is None:
                sent += self._send_each(bound.sock, packets[i:], addr)
                return sent
            sent += done
            i = j
        return sent

    def send_esp_run(self, data, size: int, addr: Address, *, local: str | None = None,
                     gso: bool = True) -> int:
        """Send `data` (bytes-like) as ESP datagrams of `size` bytes each, the last one maybe
        shorter: ESP packets laid back to back, as `SecurityAssociation.protect_packets`
        leaves them (esp_only) in one buffer.  UDP_SEGMENT sends of up to 64 datagrams where
        the socket can, else one send each; returns how many datagrams the kernel took."""
        bound = self._bound_for(SocketKind.NAT_T, addr, local)
        view = memoryview(data).cast("B")
        total = len(view)
        if size <= 0 or not total:
            return 0
        per = max(1, min(GSO_MAX_SEGMENTS, GSO_MAX_BYTES // size))
        sent = at = 0
        while at < total:
            end = min(total, at + per * size)
            count = -(-(end - at) // size)
            if bound.gso and gso and count > 1:
                done = self._send_gso(bound, view[at:end], size, count, addr)
                if done is not None:
                    sent += done
                    at = end
                    continue
            sent += self._send_each(bound.sock, [view[k:min(k + size, total)]
                                                 for k in range(at, end, size)], addr)
            at = end
        return sent

    def _send_gso(self, bound: _BoundSocket, payload, size: int, count: int, addr: Address) -> int | None:
        """One UDP_SEGMENT send of `count` datagrams; how many went (0 when the kernel dropped
        them), or None when the route refuses segmentation (then `bound.gso` is off)."""
        try:
            bound.sock.sendmsg((payload,), [(SOL_UDP, UDP_SEGMENT, _U16.pack(size))], 0, addr)
        except BlockingIOError as exc:
            self.stats.send_dropped += count
            log.debug("send to %s: %s", addr, exc)
            return 0
        except OSError as exc:
            if exc.errno not in (errno.EIO, errno.EINVAL, errno.ENOPROTOOPT, errno.EOPNOTSUPP):
                self._failed(exc, addr)
                self.stats.send_errors += count - 1
                return 0
            # the route's device cannot segment (or checksum) for us: one by one from now on
            log.debug("UDP_SEGMENT refused on %s (%s): sending datagrams one by one", bound.local, exc)
            bound.gso = False
            return None
        self.stats.esp_sent += count
        self.stats.gso_sends += 1
        return count

    def _send_each(self, sock: socket.socket, packets: Sequence[bytes], addr: Address) -> int:
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

"""TUN devices: the VPN's door to the local IP stack.

Owns: opening /dev/net/tun as a layer-3 device without packet information (IFF_TUN | IFF_NO_PI),
so each read is one whole IPv4 or IPv6 packet and each write injects one; non-blocking reads
drained in batches for the data plane.
Must not: configure addresses, MTU or routes (that is `netlink`), or look inside packets beyond
the IP and TCP headers that write coalescing compares.

With `vnet_hdr=True` (IFF_VNET_HDR) every read and write carries a virtio_net_hdr in front of
the packet.  `write_batch` then coalesces runs of TCP segments of one flow (contiguous sequence
numbers, equal headers but for PSH on the last one, as Linux's GRO would) into one packet with a
TCP GSO header: the local stack takes the run in one write and one pass through its TCP receive
path.  The merged packet's TCP checksum is marked partial (NEEDS_CSUM): the ESP ICV already
vouched for every byte of it.  With `tso=True` as well (numpy needed), TUNSETOFFLOAD lets the
local stack hand over TCP super-packets of up to 64 KiB instead of MTU-size segments, and
`read_batch` cuts them here (sequence numbers, IPv4 IDs, lengths, FIN and PSH on the last
segment, CWR on the first) and completes the TCP / UDP checksums the kernel left partial.
Without `tso` reads come with an all-zero header (whole, checksummed packets).
`read_offloaded` leaves TCP super-packets whole instead (`TcpSuper`), for a caller that cuts
them straight into its own buffer with room around each segment and partial checksums
(`TcpSuper.rows`: the VPN cuts them one ESP datagram apart and seals them in place), and
`write_packets` takes a `PacketBatch` and merges its TCP runs with `coalesce_batch`, the same
rules as `coalesce_tcp` checked over the whole batch with numpy.
`write_thread=True` moves the writes to a thread of their own: a TUN write carries the local
stack's receive path, with the GIL released, so it runs beside the event loop on another core.

The device lives in the network namespace of the thread that opens it (see `netns`), and
disappears when the last file descriptor on it closes (it is not made persistent).  The fd is
opened close-on-exec, so a child started with fork+exec does not keep the device alive.
"""
from __future__ import annotations

import errno
import fcntl
import os
import queue
import socket
import struct
import threading

TUN_DEVICE_PATH = "/dev/net/tun"

# <linux/if_tun.h>
TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
TUNSETOFFLOAD = 0x400454D0
TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6 = 0x01, 0x02, 0x04

# <linux/virtio_net.h>: flags, gso_type, hdr_len, gso_size, csum_start, csum_offset
VNET_HDR = struct.Struct("=BBHHHH")
VNET_HDR_BYTES = VNET_HDR.size
VIRTIO_NET_HDR_F_NEEDS_CSUM = 1
VIRTIO_NET_HDR_GSO_TCPV4 = 1
VIRTIO_NET_HDR_GSO_TCPV6 = 4
_PLAIN_HDR = bytes(VNET_HDR_BYTES)
#: Packets waiting for the write thread at most; more are dropped (as a full device queue would).
WRITE_QUEUE_PACKETS = 4096
#: Batches up to this size are written on the caller's thread when the write thread is idle.
INLINE_WRITE_PACKETS = 8
#: Segments merged into one write at most (Linux's GRO stops at 64 as well).
COALESCE_MAX_SEGMENTS = 64
_TCP_ACK, _TCP_PSH = 0x10, 0x08
_TCP_FIN, _TCP_CWR = 0x01, 0x80
VIRTIO_NET_HDR_GSO_ECN = 0x80

try:
    import numpy as _np
except ImportError:       # pragma: no cover - numpy is optional; without it no TSO reads
    _np = None
if _np is not None:
    _COLUMNS = _np.arange(128, dtype=_np.int64)      # coalesce_batch's header gather
_U16 = struct.Struct("!H")

IFNAMSIZ = 16
_IFREQ = struct.Struct("16sH22x")  # struct ifreq: the name, then ifr_flags in the 24-byte union

#: The largest IP packet; reads use this size unless told the device's MTU.
MAX_PACKET_BYTES = 65535
DEFAULT_NAME_TEMPLATE = "ipsec%d"


class TunDevice:
    """One TUN device, open for non-blocking reads and writes of whole IP packets.

    `name` may be a fixed name (`"ipsec0"`) or a template with `%d` for the kernel to fill in;
    the name actually given is in `.name`, its interface index in `.index`.  `read_size` bounds
    one packet (the device MTU is enough; a longer packet would be cut short).
    """

    __slots__ = ("name", "index", "read_size", "_fd", "packets_read", "packets_written",
                 "write_errors", "vnet_hdr", "coalesced_writes", "tso", "super_packets_read",
                 "read_errors", "write_dropped", "_queue", "_queued", "_done", "_writer")

    def __init__(self, name: str = DEFAULT_NAME_TEMPLATE, *, read_size: int = MAX_PACKET_BYTES,
                 vnet_hdr: bool = False, tso: bool = False, write_thread: bool = False):
        if not name or len(name.encode()) >= IFNAMSIZ or "/" in name or " " in name:
            raise ValueError(f"bad TUN device name {name!r}: 1 to {IFNAMSIZ - 1} bytes, no '/' or space")
        if not 0 < read_size <= MAX_PACKET_BYTES:
            raise ValueError(f"read_size must be 1..{MAX_PACKET_BYTES}, not {read_size}")
        self.read_size = read_size
        self.packets_read = 0
        self.packets_written = 0
        self.write_errors = 0
        self.coalesced_writes = 0       # writes that carried several TCP segments (vnet_hdr)
        self.vnet_hdr = vnet_hdr or tso
        self.tso = tso and _np is not None
        self.super_packets_read = 0     # TCP super-packets cut into segments (tso)
        self.read_errors = 0            # reads with an offload this code does not know: dropped
        self.write_dropped = 0          # packets the write thread was too far behind to take
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        # packets handed to the write thread, and those it is done with: each counter has one
        # writer, so their difference is exact from the loop's side
        self._queued = self._done = 0
        self._writer: threading.Thread | None = None
        try:
            fd = os.open(TUN_DEVICE_PATH, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            raise type(exc)(exc.errno, f"cannot open {TUN_DEVICE_PATH} for TUN device {name!r}: "
                                       f"{exc.strerror} (needs the tun module and CAP_NET_ADMIN)") from None
        try:
            request = _IFREQ.pack(name.encode(), IFF_TUN | IFF_NO_PI | (IFF_VNET_HDR if self.vnet_hdr else 0))
            try:
                answer = fcntl.ioctl(fd, TUNSETIFF, request)
            except OSError as exc:
                hint = {errno.EPERM: " (needs CAP_NET_ADMIN)",
                        errno.EBUSY: " (a device of that name exists and is in use or not a TUN)",
                        errno.EINVAL: " (a device of that name exists and is not a TUN)"}.get(exc.errno, "")
                raise type(exc)(exc.errno, f"cannot create TUN device {name!r}: {exc.strerror}{hint}") from None
            self.name = _IFREQ.unpack(answer)[0].rstrip(b"\0").decode()
            if self.vnet_hdr:
                # without tso no offloads towards us: reads stay whole, checksummed packets
                offloads = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 if self.tso else 0
                fcntl.ioctl(fd, TUNSETOFFLOAD, offloads)
            # The index is looked up now: the calling thread is in the device's namespace.
            self.index = socket.if_nametoindex(self.name)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        if write_thread:
            self._writer = threading.Thread(target=self._write_loop, name=f"tun-write-{self.name}",
                                            daemon=True)
            self._writer.start()

    def fileno(self) -> int:
        """The file descriptor, for `loop.add_reader` / selectors.  -1 once closed."""
        return self._fd

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def read(self) -> bytes | None:
        """One packet, or None when none is waiting."""
        try:
            packet = os.read(self._fd, MAX_PACKET_BYTES + VNET_HDR_BYTES if self.tso else
                             self.read_size + (VNET_HDR_BYTES if self.vnet_hdr else 0))
        except BlockingIOError:
            return None
        self.packets_read += 1
        if self.tso:
            packets = self._segment([packet])
            return packets[0] if packets else None
        return packet[VNET_HDR_BYTES:] if self.vnet_hdr else packet

    def read_batch(self, max_packets: int = 64) -> list[bytes]:
        """Up to `max_packets` packets that are ready now; an empty list when none is."""
        packets: list[bytes] = []
        append = packets.append
        read, fd, size = os.read, self._fd, self.read_size
        if self.tso:
            size = MAX_PACKET_BYTES + VNET_HDR_BYTES
        elif self.vnet_hdr:
            size += VNET_HDR_BYTES
        try:
            if self.tso:
                # a read may be a 64 KiB super-packet: bound the batch by bytes, not reads
                budget = max_packets * 1500
                while budget > 0:
                    packet = read(fd, size)
                    if not packet:
                        break
                    append(packet)
                    budget -= len(packet)
            else:
                for _ in range(max_packets):
                    packet = read(fd, size)
                    if not packet:
                        break
                    append(packet)
        except BlockingIOError:
            pass
        self.packets_read += len(packets)
        if self.tso:
            return self._segment(packets)
        if self.vnet_hdr:
            return [p[VNET_HDR_BYTES:] for p in packets]
        return packets

    def read_offloaded(self, max_packets: int = 64) -> list:
        """`read_batch`, with the TCP super-packets (TSO) that cut as rows left whole, for a
        caller that cuts them straight into its own buffer (`TcpSuper.rows`): a list, in read
        order, of lists of packets and `TcpSuper`s.  Without `tso`, [read_batch()]."""
        if not self.tso:
            packets = self.read_batch(max_packets)
            return [packets] if packets else []
        raws: list[bytes] = []
        read, fd, size = os.read, self._fd, MAX_PACKET_BYTES + VNET_HDR_BYTES
        budget = max_packets * 1500
        try:
            while budget > 0:
                raw = read(fd, size)
                if not raw:
                    break
                raws.append(raw)
                budget -= len(raw)
        except BlockingIOError:
            pass
        self.packets_read += len(raws)
        out: list = []
        plain: list[bytes] = []
        unpack = VNET_HDR.unpack_from
        for raw in raws:
            _, gso, _, mss, _, _ = unpack(raw)
            gso &= ~VIRTIO_NET_HDR_GSO_ECN
            if gso:
                sup = TcpSuper.parse(raw, gso, mss)
                if sup is not None and sup.even:
                    if plain:
                        out.append(self._segment(plain))
                        plain = []
                    self.super_packets_read += 1
                    out.append(sup)
                    continue
            plain.append(raw)
        if plain:
            out.append(self._segment(plain))
        return out

    def _segment(self, raw: list[bytes]) -> list[bytes]:
        """Reads with their virtio_net_hdr -> whole IP packets: super-packets cut into segments,
        partial checksums completed (see `segment_offloaded`)."""
        out, supers, errors = segment_offloaded(raw)
        self.super_packets_read += supers
        self.read_errors += errors
        return out

    def write(self, packet: bytes | bytearray | memoryview) -> int:
        """Inject one IP packet into the local stack.  Raises OSError (EINVAL: not an IP packet,
        EIO: device down)."""
        if self.vnet_hdr:
            return os.write(self._fd, _PLAIN_HDR + bytes(packet)) - VNET_HDR_BYTES
        n = os.write(self._fd, packet)
        self.packets_written += 1
        return n

    def write_batch(self, packets) -> int:
        """Inject packets; one that the kernel refuses is counted in `write_errors` and skipped.
        Returns how many were written (TCP segments merged into one write count one each)."""
        if self._writer is not None:
            return self._enqueue(packets)
        return self._write_coalesced(packets) if self.vnet_hdr else self._write_plain(packets)

    def write_packets(self, batch) -> int:
        """`write_batch` for a `PacketBatch` (ipsec_core.dataplane.batch): with `vnet_hdr`,
        runs of TCP segments of one flow are merged by `coalesce_batch` over the whole batch
        at once, on the caller's thread, and only the ready writes go to the write thread."""
        if not self.vnet_hdr or _np is None:
            return self.write_batch(batch.packets())
        writes = coalesce_batch(batch)
        count = len(batch)
        if self._writer is None or (self._queued == self._done and len(writes) <= 2):
            return self._write_framed(writes)
        if self._queued - self._done > WRITE_QUEUE_PACKETS:
            self.write_dropped += count
            return 0
        self._queued += count
        self._queue.put(_Framed(writes))
        return count

    def _write_framed(self, writes) -> int:
        """Write (virtio_net_hdr + packet, segments) pairs; returns the segments written."""
        write, fd = os.write, self._fd
        written = 0
        for data, count in writes:
            try:
                write(fd, data)
            except OSError:
                self.write_errors += count
                continue
            written += count
            if count > 1:
                self.coalesced_writes += 1
        self.packets_written += written
        return written

    def _write_coalesced(self, packets) -> int:
        return self._write_framed((header + packet, count) for header, packet, count in coalesce_tcp(packets))

    def _enqueue(self, packets) -> int:
        """Hand a batch to the write thread; returns how many it took (all, unless it is more
        than WRITE_QUEUE_PACKETS behind: then the batch is dropped and counted).  A small batch
        while the thread has nothing to do (TCP ACKs going back) is written here: waking the
        thread would cost more than the write, and nothing is in flight to overtake."""
        pending = self._queued - self._done
        if not pending and len(packets) <= INLINE_WRITE_PACKETS:
            return self._write_coalesced(packets) if self.vnet_hdr else self._write_plain(packets)
        packets = list(packets)
        if pending > WRITE_QUEUE_PACKETS:
            self.write_dropped += len(packets)
            return 0
        self._queued += len(packets)
        self._queue.put(packets)
        return len(packets)

    def _write_plain(self, packets) -> int:
        write, fd = os.write, self._fd
        written = 0
        for packet in packets:
            try:
                write(fd, packet)
            except OSError:
                self.write_errors += 1
                continue
            written += 1
        self.packets_written += written
        return written

    def _write_loop(self) -> None:
        # The writes run here, outside the event loop's thread: a TUN write carries the local
        # stack's receive path with it, and the GIL is released for it, so it overlaps with
        # the loop's reads and decryption on the other core.
        get, get_nowait = self._queue.get, self._queue.get_nowait
        held = _NOTHING                               # taken from the queue, not yet handled
        while True:
            batch, held = (get() if held is _NOTHING else held), _NOTHING
            if batch is None:
                return
            if batch.__class__ is _Framed:            # coalesced already (write_packets)
                if self._fd < 0:
                    return
                self._write_framed(batch.writes)
                self._done += sum(c for _, c in batch.writes)
                continue
            while len(batch) < 256:                   # what else waits goes in the same pass
                try:
                    more = get_nowait()
                except queue.Empty:
                    break
                if more is None or more.__class__ is _Framed:
                    held = more                       # next, in its place
                    break
                batch += more
            if self._fd < 0:
                return
            if self.vnet_hdr:
                self._write_coalesced(batch)
            else:
                self._write_plain(batch)
            self._done += len(batch)

    def close(self) -> None:
        """Close the device; the kernel deletes it (and the routes through it)."""
        if self._writer is not None:
            self._queue.put(None)
            self._writer.join(2)
            fd, self._fd = self._fd, -1
            self._writer = None
            if fd >= 0:
                os.close(fd)
            return
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    def __enter__(self) -> "TunDevice":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"fd={self._fd}"
        return f"<TunDevice {getattr(self, 'name', '?')} index={getattr(self, 'index', '?')} {state}>"


def _tcp_segment(p) -> tuple[int, int, int] | None:
    """(IP header bytes, TCP header end, version) of a packet that may be merged: IPv4 without
    options or fragmentation, or IPv6 without extension headers, carrying TCP with payload and
    only ACK (and PSH) set; None otherwise."""
    n = len(p)
    if n < 41:
        return None
    v = p[0] >> 4
    if v == 4:
        if p[0] != 0x45 or p[9] != 6 or (p[6] & 0x3F) or p[7] or (p[2] << 8 | p[3]) != n:
            return None
        ip = 20
    elif v == 6:
        if p[6] != 6 or (p[4] << 8 | p[5]) + 40 != n:
            return None
        ip = 40
    else:
        return None
    end = ip + (p[ip + 12] >> 4) * 4
    flags = p[ip + 13]
    if end >= n or end < ip + 20 or not flags & _TCP_ACK or flags & ~(_TCP_ACK | _TCP_PSH) & 0xFF:
        return None
    return ip, end, v


def _fold(total: int) -> int:
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


_WORDS: dict[int, struct.Struct] = {}


def _sum16(data) -> int:
    """The sum of the big-endian 16-bit words of `data` (even length), not folded."""
    n = len(data) // 2
    words = _WORDS.get(n)
    if words is None:
        words = _WORDS[n] = struct.Struct(f"!{n}H")
    return sum(words.unpack(data))


def coalesce_tcp(packets):
    """Yield (virtio_net_hdr, packet, segments) for `packets` in order: runs of TCP segments of one
    flow merged into one GSO packet (its IPv4 header checksum recomputed, its TCP checksum field
    holding the pseudo-header sum with NEEDS_CSUM), every other packet as it is with a plain
    header.  A run continues while the next segment has the same IP and TCP headers but for the
    length, IPv4 ID, IPv4 checksum, sequence number and TCP checksum, starts where the run ends,
    and is no longer than the first; PSH, a shorter segment or 64 segments end it."""
    count = len(packets)
    i = 0
    while i < count:
        p = packets[i]
        info = _tcp_segment(p)
        if info is None or i + 1 == count or p[info[0] + 13] & _TCP_PSH:
            yield _PLAIN_HDR, p, 1
            i += 1
            continue
        ip, end, v = info
        mss = len(p) - end
        seq = int.from_bytes(p[ip + 4:ip + 8], "big") + mss
        # what must be equal in every segment of the run
        if v == 4:
            same = (p[1], p[8:10], p[12:20])
        else:
            same = (p[0:4], p[7:40])
        tcp_same = (p[ip:ip + 4], p[ip + 8:ip + 16], p[ip + 18:end])
        j, total = i + 1, len(p)
        limit = min(count, i + COALESCE_MAX_SEGMENTS)
        while j < limit:
            q = packets[j]
            qn = len(q)
            if qn <= end or qn - end > mss or total + qn - end > 65535:
                break
            q_info = _tcp_segment(q)
            if q_info != info or int.from_bytes(q[ip + 4:ip + 8], "big") != seq & 0xFFFFFFFF:
                break
            q_flags = q[ip + 13]
            if ((q[1], q[8:10], q[12:20]) if v == 4 else (q[0:4], q[7:40])) != same \
                    or (q[ip:ip + 4], q[ip + 8:ip + 12], q[ip + 12], q_flags & ~_TCP_PSH, q[ip + 14:ip + 16],
                        q[ip + 18:end]) != (tcp_same[0], tcp_same[1][:4], p[ip + 12], _TCP_ACK,
                                           tcp_same[1][6:8], tcp_same[2]):
                break
            total += qn - end
            seq += qn - end
            j += 1
            if q_flags & _TCP_PSH or qn - end < mss:
                break
        if j - i == 1:
            yield _PLAIN_HDR, p, 1
            i += 1
            continue
        run = packets[i:j]
        head = bytearray(p[:end])
        head[ip + 13] = run[-1][ip + 13]                     # PSH of the last segment
        vnet = _gso_head(head, v == 4, end, mss, total)
        yield vnet, bytes(head) + b"".join(memoryview(q)[end:] for q in run), j - i
        i = j


def _gso_head(head: bytearray, v4: bool, end: int, mss: int, total: int) -> bytes:
    """Turn the first segment's IP and TCP headers (`head`, `end` bytes) into those of a merged
    GSO packet of `total` bytes (IP length, IPv4 checksum, the pseudo-header sum in the TCP
    checksum field); returns its virtio_net_hdr (NEEDS_CSUM, segments of `mss`)."""
    ip = 20 if v4 else 40
    tcp_len = total - ip
    if v4:
        head[2:4] = _U16.pack(total)
        head[10:12] = b"\0\0"
        head[10:12] = _U16.pack(~_fold(_sum16(head[:20])) & 0xFFFF)
        pseudo = _sum16(head[12:20]) + 6 + tcp_len
        gso = VIRTIO_NET_HDR_GSO_TCPV4
    else:
        head[4:6] = _U16.pack(total - 40)
        pseudo = _sum16(head[8:40]) + 6 + tcp_len
        gso = VIRTIO_NET_HDR_GSO_TCPV6
    head[ip + 16:ip + 18] = _U16.pack(_fold(pseudo))
    return VNET_HDR.pack(VIRTIO_NET_HDR_F_NEEDS_CSUM, gso, end, mss, ip, 16)


class _Framed:
    """A write-thread queue item: writes coalesced already, (virtio_net_hdr + packet, segments)."""

    __slots__ = ("writes",)

    def __init__(self, writes):
        self.writes = writes


_NOTHING = object()


def coalesce_batch(batch) -> list[tuple[bytes, int]]:
    """`coalesce_tcp` over a PacketBatch, vectorised: [(virtio_net_hdr + packet, segments)]
    in order, runs of TCP segments of one flow merged into one GSO packet, every other packet
    as it is.  The merge rules are `coalesce_tcp`'s, checked for all neighbours at once (a
    little stricter: a segment after a shorter one starts a new run), the payloads of a run
    of equally spaced segments copied in one step.  A batch that mixes IP versions, IPv4
    options or TCP header lengths takes `coalesce_tcp` itself."""
    np = _np
    n = len(batch)
    buf = batch.buf
    offs, lens = batch.offsets, batch.lengths
    if n < 2 or int(lens.min()) < 41:
        return [(_PLAIN_HDR + p, 1) for p in batch.packets()]
    u = np.frombuffer(buf, np.uint8)
    first = u[offs]
    v4 = bool(first[0] == 0x45)
    ip = 20 if v4 else 40
    doff = u[offs + ip + 12] >> 4
    end = ip + int(doff[0]) * 4
    if not ((first == first[0]).all() and (v4 or first[0] >> 4 == 6) and (doff == doff[0]).all()
            and end >= ip + 20 and end < int(lens.min())):
        return [(h + p, c) for h, p, c in coalesce_tcp(batch.packets())]
    h = u[offs[:, None] + _COLUMNS[:end]]                 # every packet's headers, one gather
    flags = h[:, ip + 13]
    if v4:
        tot = h[:, 2].astype(np.int64) << 8 | h[:, 3]
        valid = (h[:, 9] == 6) & ((h[:, 6] & 0x3F) == 0) & (h[:, 7] == 0) & (tot == lens)
    else:
        plen = (h[:, 4].astype(np.int64) << 8 | h[:, 5]) + 40
        valid = (h[:, 6] == 6) & (plen == lens)
    valid &= ((flags & _TCP_ACK) != 0) & ((flags & (0xFF ^ (_TCP_ACK | _TCP_PSH))) == 0)
    pay = lens - end
    seq = np.ascontiguousarray(h[:, ip + 4:ip + 8]).view(">u4")[:, 0].astype(np.int64)
    # What must be equal in neighbours: IPv4 TOS, TTL, protocol, addresses; IPv6 the first 4
    # and bytes 7..39; TCP ports, ACK number, header length, window, urgent pointer, options.
    same = h[:, _same_columns(v4, end)]
    psh = (flags & _TCP_PSH) != 0
    c0 = (valid[1:] & valid[:-1] & (same[1:] == same[:-1]).all(axis=1)
          & (seq[1:] == (seq[:-1] + pay[:-1]) & 0xFFFFFFFF) & ~psh[:-1] & (pay[1:] <= pay[:-1]))
    short = np.zeros(n - 1, bool)
    short[1:] = c0[:-1] & (pay[1:-1] < pay[:-2])
    cont = c0 & ~short
    bounds = [0, *(np.flatnonzero(~cont) + 1).tolist(), n]
    out: list[tuple[bytes, int]] = []
    lens_l, offs_l, pay_l = lens.tolist(), offs.tolist(), pay.tolist()
    gaps = np.diff(offs)
    for a, b in zip(bounds[:-1], bounds[1:]):
        while a < b:
            # at most 64 segments and 65535 bytes in one merged packet
            k, total = a + 1, lens_l[a]
            while k < b and k - a < COALESCE_MAX_SEGMENTS and total + pay_l[k] <= 65535:
                total += pay_l[k]
                k += 1
            if k - a == 1:
                o = offs_l[a]
                out.append((_PLAIN_HDR + bytes(buf[o:o + lens_l[a]]), 1))
            else:
                even = k - a > 2 and bool((gaps[a:k - 2] == gaps[a]).all())
                out.append(_merge_run(buf, u, offs_l, lens_l, pay_l, a, k, end, v4, total, even))
            a = k
    return out


_SAME: dict = {}


def _same_columns(v4: bool, end: int):
    """The header columns `coalesce_batch` requires equal in neighbours (see there)."""
    key = (v4, end)
    cols = _SAME.get(key)
    if cols is None:
        ip = 20 if v4 else 40
        fixed = [1, 8, 9, *range(12, 20)] if v4 else [0, 1, 2, 3, *range(7, 40)]
        tcp = [ip + r for r in (0, 1, 2, 3, 8, 9, 10, 11, 12, 14, 15, *range(18, end - ip))]
        cols = _SAME[key] = _np.array(fixed + tcp, dtype=_np.int64)
    return cols


def _merge_run(buf, u, offs, lens, pay, a: int, b: int, end: int, v4: bool, total: int,
               even: bool):
    """Segments a..b-1 of a batch as one GSO write (see `coalesce_tcp`); `even`: the first
    b-1-a lie equally far apart.  The payloads are copied once into the result (joined)."""
    o = offs[a]
    ip = 20 if v4 else 40
    head = bytearray(buf[o:o + end])
    last = offs[b - 1]
    head[ip + 13] = buf[last + ip + 13]                    # PSH of the last segment
    d = offs[a + 1] - o
    mss = pay[a]
    view = memoryview(buf)
    if even and d >= lens[a]:
        body = [u[o:o + (b - 1 - a) * d].reshape(b - 1 - a, d)[:, end:end + mss].tobytes()]
    else:
        body = [view[offs[k] + end:offs[k] + lens[k]] for k in range(a, b - 1)]
    vnet = _gso_head(head, v4, end, mss, total)
    return b"".join((vnet, head, *body, view[last + end:last + lens[b - 1]])), b - a


class TcpSuper:
    """A TCP super-packet read from a TUN device with TSO on (virtio GSO_TCPV4 / TCPV6), not
    cut yet: `p` the packet (a memoryview after the virtio_net_hdr), `ip` / `end` where its TCP
    header and its payload start, `mss` the segment payload size, `v4`.  `even`: an even mss
    and more than one segment, which `rows` cuts as numpy rows (else segment_offloaded's loop)."""

    __slots__ = ("p", "ip", "end", "mss", "v4", "even")

    def __init__(self, p: memoryview, ip: int, end: int, mss: int, v4: bool):
        self.p, self.ip, self.end, self.mss, self.v4 = p, ip, end, mss, v4
        self.even = not mss & 1 and len(p) - end > mss

    @classmethod
    def parse(cls, r: bytes, gso: int, mss: int) -> "TcpSuper | None":
        """The super-packet of read `r` (virtio_net_hdr first; `gso` its type without the ECN
        bit), or None when it is not TCP GSO with headers that add up (a bad read)."""
        if gso not in (VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6) or not mss:
            return None
        p = memoryview(r)[VNET_HDR_BYTES:]
        v4 = gso == VIRTIO_NET_HDR_GSO_TCPV4
        ip = (p[0] & 0x0F) * 4 if v4 else 40
        if len(p) < ip + 20 or (p[0] >> 4) != (4 if v4 else 6) or (not v4 and p[6] != 6) or (v4 and p[9] != 6):
            return None
        end = ip + (p[ip + 12] >> 4) * 4
        if end >= len(p):
            return None
        return cls(p, ip, end, mss, v4)

    def headers(self) -> bytes:
        """Its IP and TCP headers as one payload-less packet (for flow and selector lookups)."""
        h = bytearray(self.p[:self.end])
        if self.v4:
            h[2:4] = self.end.to_bytes(2, "big")
        else:
            h[4:6] = (self.end - 40).to_bytes(2, "big")
        return bytes(h)

    def segment_length(self) -> int:
        """The length of every segment but maybe the last."""
        return self.end + self.mss

    def segments(self) -> list[bytes]:
        """The segments as whole packets with complete checksums, one bytes object each."""
        return _segment_tcp(self.p, ip=self.ip, end=self.end, mss=self.mss, v4=self.v4)

    def rows(self, *, head: int = 0, tail: int = 0, partial: bool = False):
        """`_segment_rows` of this super-packet (`even` ones only): (rows, count, last)."""
        return _segment_rows(self.p, ip=self.ip, end=self.end, mss=self.mss, v4=self.v4,
                             head=head, tail=tail, partial=partial)


def segment_offloaded(raw: list[bytes]) -> tuple[list[bytes], int, int]:
    """Reads of a TUN device with TSO and checksum offload on (each a virtio_net_hdr, then a
    packet) -> (whole packets with valid checksums, super-packets cut, reads dropped).

    A TCPv4 / TCPv6 GSO packet becomes segments of `gso_size` payload bytes (the last one may be
    shorter), each with its own IP length (and IPv4 ID + k, header checksum), sequence number,
    FIN and PSH only on the last, CWR only on the first.  A packet marked NEEDS_CSUM gets the
    ones' complement sum from `csum_start` written at `csum_start + csum_offset` (the kernel
    left the pseudo-header sum there).  The sums of all payload bytes are taken in one numpy
    call over the batch.  A read with another GSO type, or headers that do not add up, is
    dropped and counted."""
    out: list = []
    # (index in out, checksum field offset, int sum of what is not in `regions`, is_udp)
    fixups: list[tuple[int, int, int, bool]] = []
    regions: list = []            # byte strings whose 16-bit sums go to the fixups, in order
    supers = errors = 0
    hdr = VNET_HDR_BYTES
    for r in raw:
        flags, gso, _, gso_size, csum_start, csum_offset = VNET_HDR.unpack_from(r)
        gso &= ~VIRTIO_NET_HDR_GSO_ECN
        if not gso:
            packet = r[hdr:]
            if flags & VIRTIO_NET_HDR_F_NEEDS_CSUM:
                at = csum_start + csum_offset
                if at + 2 > len(packet):
                    errors += 1
                    continue
                packet = bytearray(packet)
                fixups.append((len(out), at, 0, csum_offset == 6))
                regions.append(packet[csum_start:])
            out.append(packet)
            continue
        sup = TcpSuper.parse(r, gso, gso_size)
        if sup is None:
            errors += 1
            continue
        supers += 1
        p, ip, end, v4 = sup.p, sup.ip, sup.end, sup.v4
        payload = p[end:]
        if sup.even:
            out.extend(_segment_tcp(p, ip=ip, end=end, mss=gso_size, v4=v4))
            continue
        ip_head = bytearray(p[:ip])
        tcp_head = bytearray(p[ip:end])
        seq0 = int.from_bytes(tcp_head[4:8], "big")
        flags0 = tcp_head[13]
        # the headers' sums without the fields that change per segment, which are added below
        tcp_head[4:8] = b"\0\0\0\0"
        tcp_head[13] = 0
        tcp_head[16:18] = b"\0\0"
        tcp_base = _sum16(tcp_head)
        if v4:
            ident0 = ip_head[4] << 8 | ip_head[5]
            ip_head[2:6] = b"\0\0\0\0"
            ip_head[10:12] = b"\0\0"
            ip_base = _sum16(ip_head)
            addr_sum = _sum16(ip_head[12:20])
        else:
            addr_sum = _sum16(ip_head[8:40])
        header = ip_head + tcp_head
        n = len(payload)
        pack_into, th_len = _U16.pack_into, end - ip
        for k, start in enumerate(range(0, n, gso_size)):
            chunk = payload[start:start + gso_size]
            f = flags0
            if start + gso_size < n:
                f &= ~(_TCP_FIN | _TCP_PSH)
            if k:
                f &= ~_TCP_CWR
            seq = (seq0 + start) & 0xFFFFFFFF
            tcp_len = th_len + len(chunk)
            segment = bytearray(header)
            segment[ip + 4:ip + 8] = seq.to_bytes(4, "big")
            segment[ip + 13] = f
            if v4:
                ident = (ident0 + k) & 0xFFFF
                pack_into(segment, 2, ip + tcp_len)
                pack_into(segment, 4, ident)
                c = ip_base + ip + tcp_len + ident
                c = (c & 0xFFFF) + (c >> 16)
                pack_into(segment, 10, ~((c & 0xFFFF) + (c >> 16)) & 0xFFFF)
            else:
                pack_into(segment, 4, tcp_len)
            segment += chunk
            # the payload's sum comes with the batch's (its word alignment holds: the TCP
            # header has an even length)
            fixups.append((len(out), ip + 16, addr_sum + 6 + tcp_len + tcp_base + f
                           + (seq >> 16) + (seq & 0xFFFF), False))
            regions.append(chunk)
            out.append(segment)
    if fixups:
        sums = _region_sums(regions)
        pack_into = _U16.pack_into
        for (index, at, extra, udp), total in zip(fixups, sums):
            c = total + extra                       # < 2**48: three folds are enough
            c = (c & 0xFFFF) + (c >> 16)
            c = (c & 0xFFFF) + (c >> 16)
            value = ~((c & 0xFFFF) + (c >> 16)) & 0xFFFF
            if udp and value == 0:
                value = 0xFFFF
            pack_into(out[index], at, value)
    return [bytes(p) if p.__class__ is not bytes else p for p in out], supers, errors


def _region_sums(regions: list) -> list[int]:
    """The 16-bit big-endian word sums of each region (an odd one padded with a zero byte)."""
    padded = [bytes(r) + b"\0" if len(r) & 1 else r for r in regions]
    if _np is None:      # pragma: no cover - numpy absent: tso is never on then
        return [_sum16(r) for r in padded]
    lengths = [len(r) // 2 for r in padded]
    words = _np.frombuffer(b"".join(padded), dtype=">u2")
    starts = _np.zeros(len(lengths), dtype=_np.int64)
    _np.cumsum(lengths[:-1], out=starts[1:])
    sums = _np.add.reduceat(words, starts, dtype=_np.uint64) if len(words) else _np.zeros(len(lengths))
    # reduceat gives a region of length 0 the next word, not zero
    return [0 if n == 0 else int(x) for n, x in zip(lengths, sums.tolist())]


def _segment_tcp(p: memoryview, *, ip: int, end: int, mss: int, v4: bool) -> list[bytes]:
    """`segment_offloaded`'s cut of one TCP super-packet with an even `mss`: the segments of
    `_segment_rows`, one bytes object each."""
    rows, count, last = _segment_rows(p, ip=ip, end=end, mss=mss, v4=v4)
    out = [row.tobytes() for row in rows[:count - 1]]
    out.append(rows[count - 1, :last].tobytes())
    return out


def _segment_rows(p: memoryview, *, ip: int, end: int, mss: int, v4: bool, head: int = 0,
                  tail: int = 0, partial: bool = False):
    """The cut of one TCP super-packet with an even `mss` as numpy rows: (rows, count, last),
    segment k in row k from column `head`, `head` bytes before it and `tail` after it (of
    the row's own, for whoever frames it), the last segment `last` bytes long; the payload
    copied once, every per-segment field and both checksums computed for all rows at once.
    Segments: `gso_size` payload bytes each (the last may be shorter), each with its own IP
    length (IPv4: ID + k and header checksum), sequence number, FIN and PSH only on the last,
    CWR only on the first, and its TCP checksum; with `partial`, only the pseudo-header sum in
    the TCP checksum field, for whoever completes it (checksum offload: the ESP framing
    does, `SecurityAssociation.protect_packets(inner_csum=...)`)."""
    np = _np
    hdr = np.frombuffer(p[:end], dtype=np.uint8).copy()
    payload = np.frombuffer(p[end:], dtype=np.uint8)
    n = len(payload)
    full, rest = divmod(n, mss)
    count = full + (rest > 0)
    seq0 = int.from_bytes(p[ip + 4:ip + 8], "big")
    flags0 = p[ip + 13]
    hdr[ip + 4:ip + 8] = 0
    hdr[ip + 13] = 0
    hdr[ip + 16:ip + 18] = 0
    if v4:
        ident0 = p[4] << 8 | p[5]
        hdr[2:6] = 0
        hdr[10:12] = 0
    words = hdr.view(">u2").astype(np.uint64)
    tcp_base = int(words[ip // 2:].sum())
    addr_sum = int(words[6:10].sum()) if v4 else int(words[4:20].sum())
    width = head + end + mss + tail
    rows = np.empty((count, width), dtype=np.uint8)
    h, e = head, head + end
    rows[:, h:e] = hdr
    body = payload[:full * mss].reshape(full, mss)
    rows[:full, e:e + mss] = body
    lengths = np.full(count, mss, dtype=np.uint64)
    if rest:
        rows[full, e:e + rest] = payload[full * mss:]
        lengths[full] = rest
    tcp_len = (end - ip) + lengths
    k = np.arange(count, dtype=np.uint64)
    seqs = (seq0 + k * mss) & 0xFFFFFFFF
    rows[:, h + ip + 4:h + ip + 8] = seqs.astype(">u4").view(np.uint8).reshape(count, 4)
    flags = np.full(count, flags0 & ~(_TCP_FIN | _TCP_PSH | _TCP_CWR) & 0xFF, dtype=np.uint64)
    flags[0] |= flags0 & _TCP_CWR
    flags[-1] |= flags0 & (_TCP_FIN | _TCP_PSH)
    rows[:, h + ip + 13] = flags
    if partial:
        pseudo = addr_sum + 6 + tcp_len
        rows[:, h + ip + 16:h + ip + 18] = (~_fold_np(pseudo) & 0xFFFF).astype(">u2").view(np.uint8).reshape(count, 2)
    else:
        _tcp_checksums(rows, body, payload, h, e, ip, full, rest, mss, count, addr_sum, tcp_base,
                       tcp_len, flags, seqs)
    if v4:
        idents = (ident0 + k) & 0xFFFF
        rows[:, h + 2:h + 4] = (ip + tcp_len).astype(">u2").view(np.uint8).reshape(count, 2)
        rows[:, h + 4:h + 6] = idents.astype(">u2").view(np.uint8).reshape(count, 2)
        ip_base = int(words[:ip // 2].sum())
        rows[:, h + 10:h + 12] = _fold_np(ip_base + ip + tcp_len + idents).astype(">u2").view(np.uint8).reshape(count, 2)
    else:
        rows[:, h + 4:h + 6] = tcp_len.astype(">u2").view(np.uint8).reshape(count, 2)
    return rows, count, end + (rest or mss)


def _tcp_checksums(rows, body, payload, h, e, ip, full, rest, mss, count, addr_sum, tcp_base,
                   tcp_len, flags, seqs) -> None:
    """Every segment's TCP checksum into its row (see `_segment_rows`)."""
    np = _np
    sums = np.empty(count, dtype=np.uint64)
    # The ones' complement sum is byte-order independent (RFC 1071 2(B)): sum native words,
    # fold, swap the two bytes once.
    if mss % 4 == 0:
        sums[:full] = body.view("<u4").sum(axis=1, dtype=np.uint64)
    else:
        sums[:full] = body.view("<u2").sum(axis=1, dtype=np.uint64)
    if rest:
        tail_bytes = np.zeros(rest + (rest & 1), dtype=np.uint8)   # an odd end padded with zero
        tail_bytes[:rest] = payload[full * mss:]
        sums[full] = tail_bytes.view("<u2").sum(dtype=np.uint64)
    sums = _fold_le(sums)
    total = addr_sum + 6 + tcp_len + tcp_base + flags + (seqs >> 16) + (seqs & 0xFFFF) + sums
    rows[:, h + ip + 16:h + ip + 18] = _fold_np(total).astype(">u2").view(np.uint8).reshape(count, 2)


def _fold_le(sums):
    """Sums of little-endian words -> the same 16-bit ones' complement sums in network order
    (not complemented)."""
    sums = (sums & 0xFFFF) + (sums >> 16)
    sums = (sums & 0xFFFF) + (sums >> 16)
    sums = (sums & 0xFFFF) + (sums >> 16)
    return ((sums & 0xFF) << 8) | (sums >> 8)


def _fold_np(total):
    """The ones' complement of the 16-bit fold of each value (values below 2**48)."""
    total = (total & 0xFFFF) + (total >> 16)
    total = (total & 0xFFFF) + (total >> 16)
    total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF

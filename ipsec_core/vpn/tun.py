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
        write, fd = os.write, self._fd
        if self.vnet_hdr:
            return self._write_coalesced(packets)
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

    def _write_coalesced(self, packets) -> int:
        write, fd = os.write, self._fd
        written = 0
        for header, packet, count in coalesce_tcp(packets):
            try:
                write(fd, header + packet)
            except OSError:
                self.write_errors += count
                continue
            written += count
            if count > 1:
                self.coalesced_writes += 1
        self.packets_written += written
        return written

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
        while True:
            batch = get()
            if batch is None:
                return
            while len(batch) < 256:                   # what else waits goes in the same pass
                try:
                    more = get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)
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
        merged = bytearray(p[:end])
        last = run[-1]
        merged[ip + 13] = last[ip + 13]                      # PSH of the last segment
        merged += b"".join(memoryview(q)[end:] for q in run)
        tcp_len = total - ip
        if v == 4:
            merged[2:4] = _U16.pack(total)
            merged[10:12] = b"\0\0"
            merged[10:12] = _U16.pack(~_fold(_sum16(merged[:20])) & 0xFFFF)
            pseudo = _sum16(merged[12:20]) + 6 + tcp_len
            gso = VIRTIO_NET_HDR_GSO_TCPV4
        else:
            merged[4:6] = _U16.pack(total - 40)
            pseudo = _sum16(merged[8:40]) + 6 + tcp_len
            gso = VIRTIO_NET_HDR_GSO_TCPV6
        merged[ip + 16:ip + 18] = _U16.pack(_fold(pseudo))
        yield (VNET_HDR.pack(VIRTIO_NET_HDR_F_NEEDS_CSUM, gso, end, mss, ip, 16), bytes(merged), j - i)
        i = j


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
        if gso not in (VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6) or not gso_size:
            errors += 1
            continue
        p = memoryview(r)[hdr:]
        v4 = gso == VIRTIO_NET_HDR_GSO_TCPV4
        ip = (p[0] & 0x0F) * 4 if v4 else 40
        if len(p) < ip + 20 or (p[0] >> 4) != (4 if v4 else 6) or (not v4 and p[6] != 6) or (v4 and p[9] != 6):
            errors += 1
            continue
        end = ip + (p[ip + 12] >> 4) * 4
        payload = p[end:]
        if end > len(p) or not payload:
            errors += 1
            continue
        supers += 1
        if not gso_size & 1 and len(payload) > gso_size:
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
    """`segment_offloaded`'s cut of one TCP super-packet with an even `mss`, as numpy rows: the
    payload copied once into a (segments, header + mss) array, every per-segment field and both
    checksums computed for all rows at once."""
    np = _np
    head = np.frombuffer(p[:end], dtype=np.uint8).copy()
    payload = np.frombuffer(p[end:], dtype=np.uint8)
    n = len(payload)
    full, rest = divmod(n, mss)
    count = full + (rest > 0)
    seq0 = int.from_bytes(p[ip + 4:ip + 8], "big")
    flags0 = p[ip + 13]
    head[ip + 4:ip + 8] = 0
    head[ip + 13] = 0
    head[ip + 16:ip + 18] = 0
    if v4:
        ident0 = p[4] << 8 | p[5]
        head[2:6] = 0
        head[10:12] = 0
    words = head.view(">u2").astype(np.uint64)
    tcp_base = int(words[ip // 2:].sum())
    addr_sum = int(words[6:10].sum()) if v4 else int(words[4:20].sum())
    rows = np.empty((count, end + mss), dtype=np.uint8)
    rows[:, :end] = head
    rows[:full, end:] = payload[:full * mss].reshape(full, mss)
    sums = np.empty(count, dtype=np.uint64)
    sums[:full] = rows[:full, end:].view(">u2").sum(axis=1, dtype=np.uint64)
    lengths = np.full(count, mss, dtype=np.uint64)
    if rest:
        rows[full, end:end + rest] = payload[full * mss:]
        rows[full, end + rest:] = 0               # the zero pad of an odd last segment
        sums[full] = rows[full, end:end + rest + (rest & 1)].view(">u2").sum(dtype=np.uint64)
        lengths[full] = rest
    k = np.arange(count, dtype=np.uint64)
    seqs = (seq0 + k * mss) & 0xFFFFFFFF
    rows[:, ip + 4:ip + 8] = seqs.astype(">u4").view(np.uint8).reshape(count, 4)
    flags = np.full(count, flags0 & ~(_TCP_FIN | _TCP_PSH | _TCP_CWR) & 0xFF, dtype=np.uint64)
    flags[0] |= flags0 & _TCP_CWR
    flags[-1] |= flags0 & (_TCP_FIN | _TCP_PSH)
    rows[:, ip + 13] = flags
    tcp_len = (end - ip) + lengths
    total = addr_sum + 6 + tcp_len + tcp_base + flags + (seqs >> 16) + (seqs & 0xFFFF) + sums
    rows[:, ip + 16:ip + 18] = _fold_np(total).astype(">u2").view(np.uint8).reshape(count, 2)
    if v4:
        idents = (ident0 + k) & 0xFFFF
        rows[:, 2:4] = (ip + tcp_len).astype(">u2").view(np.uint8).reshape(count, 2)
        rows[:, 4:6] = idents.astype(">u2").view(np.uint8).reshape(count, 2)
        ip_base = int(words[:ip // 2].sum())
        rows[:, 10:12] = _fold_np(ip_base + ip + tcp_len + idents).astype(">u2").view(np.uint8).reshape(count, 2)
    else:
        rows[:, 4:6] = tcp_len.astype(">u2").view(np.uint8).reshape(count, 2)
    out = [row.tobytes() for row in rows[:full]] if full else []
    if rest:
        out.append(rows[full, :end + rest].tobytes())
    return out


def _fold_np(total):
    """The ones' complement of the 16-bit fold of each value (values below 2**48)."""
    total = (total & 0xFFFF) + (total >> 16)
    total = (total & 0xFFFF) + (total >> 16)
    total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF

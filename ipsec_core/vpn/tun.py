"""TUN devices: the VPN's door to the local IP stack.

Owns: opening /dev/net/tun as a layer-3 device without packet information (IFF_TUN | IFF_NO_PI),
so each read is one whole IPv4 or IPv6 packet and each write injects one; non-blocking reads
drained in batches for the data plane.
Must not: configure addresses, MTU or routes (that is `netlink`), or look inside packets.

The device lives in the network namespace of the thread that opens it (see `netns`), and
disappears when the last file descriptor on it closes (it is not made persistent).  The fd is
opened close-on-exec, so a child started with fork+exec does not keep the device alive.
"""
from __future__ import annotations

import errno
import fcntl
import os
import socket
import struct

TUN_DEVICE_PATH = "/dev/net/tun"

# <linux/if_tun.h>
TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000

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
                 "write_errors")

    def __init__(self, name: str = DEFAULT_NAME_TEMPLATE, *, read_size: int = MAX_PACKET_BYTES):
        if not name or len(name.encode()) >= IFNAMSIZ or "/" in name or " " in name:
            raise ValueError(f"bad TUN device name {name!r}: 1 to {IFNAMSIZ - 1} bytes, no '/' or space")
        if not 0 < read_size <= MAX_PACKET_BYTES:
            raise ValueError(f"read_size must be 1..{MAX_PACKET_BYTES}, not {read_size}")
        self.read_size = read_size
        self.packets_read = 0
        self.packets_written = 0
        self.write_errors = 0
        try:
            fd = os.open(TUN_DEVICE_PATH, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            raise type(exc)(exc.errno, f"cannot open {TUN_DEVICE_PATH} for TUN device {name!r}: "
                                       f"{exc.strerror} (needs the tun module and CAP_NET_ADMIN)") from None
        try:
            request = _IFREQ.pack(name.encode(), IFF_TUN | IFF_NO_PI)
            try:
                answer = fcntl.ioctl(fd, TUNSETIFF, request)
            except OSError as exc:
                hint = {errno.EPERM: " (needs CAP_NET_ADMIN)",
                        errno.EBUSY: " (a device of that name exists and is in use or not a TUN)",
                        errno.EINVAL: " (a device of that name exists and is not a TUN)"}.get(exc.errno, "")
                raise type(exc)(exc.errno, f"cannot create TUN device {name!r}: {exc.strerror}{hint}") from None
            self.name = _IFREQ.unpack(answer)[0].rstrip(b"\0").decode()
            # The index is looked up now: the calling thread is in the device's namespace.
            self.index = socket.if_nametoindex(self.name)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def fileno(self) -> int:
        """The file descriptor, for `loop.add_reader` / selectors.  -1 once closed."""
        return self._fd

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def read(self) -> bytes | None:
        """One packet, or None when none is waiting."""
        try:
            packet = os.read(self._fd, self.read_size)
        except BlockingIOError:
            return None
        self.packets_read += 1
        return packet

    def read_batch(self, max_packets: int = 64) -> list[bytes]:
        """Up to `max_packets` packets that are ready now; an empty list when none is."""
        packets: list[bytes] = []
        append = packets.append
        read, fd, size = os.read, self._fd, self.read_size
        try:
            for _ in range(max_packets):
                packet = read(fd, size)
                if not packet:
                    break
                append(packet)
        except BlockingIOError:
            pass
        self.packets_read += len(packets)
        return packets

    def write(self, packet: bytes | bytearray | memoryview) -> int:
        """Inject one IP packet into the local stack.  Raises OSError (EINVAL: not an IP packet,
        EIO: device down)."""
        n = os.write(self._fd, packet)
        self.packets_written += 1
        return n

    def write_batch(self, packets) -> int:
        """Inject packets; one that the kernel refuses is counted in `write_errors` and skipped.
        Returns how many were written."""
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

    def close(self) -> None:
        """Close the device; the kernel deletes it (and the routes through it)."""
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

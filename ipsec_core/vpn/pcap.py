"""Classic pcap files (the libpcap format, not pcapng): reading, writing, and getting the IP
packet in and out of a captured frame.

Owns: the pcap file and record headers (both byte orders, microsecond and nanosecond
timestamps), the link types this project understands (Ethernet 1, raw IP 101, Linux cooked
capture v1 113), and the link-layer framing around an IP packet.
Must not: know about SAs or crypto; it only moves bytes between a file object and the caller.

Everything works on binary file objects the caller opened: `PcapReader(f)` parses the file
header and iterates `PcapRecord`s, `PcapWriter(f, header)` writes them.  `ip_from_frame` and
`frame_with_ip` take a frame apart and put a new IP packet back into a frame of the same link
type, so a tool can rewrite the IP layer and keep everything else (timestamps, MACs, VLAN tag).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, replace
from typing import BinaryIO, Iterator

from ipsec_core.errors import LocalError

MAGIC_MICROSECONDS = 0xA1B2C3D4
MAGIC_NANOSECONDS = 0xA1B23C4D
_PCAPNG_MAGIC = 0x0A0D0D0A

LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LINUX_SLL = 113
SUPPORTED_LINKTYPES = {
    LINKTYPE_ETHERNET: "Ethernet",
    LINKTYPE_RAW: "raw IP",
    LINKTYPE_LINUX_SLL: "Linux cooked capture",
}

ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_IPV6 = 0x86DD
ETHERTYPE_VLAN = 0x8100          # IEEE 802.1Q
ETHERTYPE_QINQ = 0x88A8          # IEEE 802.1ad service tag (one tag is handled like 802.1Q)
ETHERNET_HEADER_BYTES = 14
VLAN_TAG_BYTES = 4
SLL_HEADER_BYTES = 16

#: snaplen written when the input's cannot hold a whole IP packet (262144 is libpcap's maximum).
DEFAULT_SNAPLEN = 262144
#: A record longer than this is a corrupt length field, not a packet: refuse it before reading.
MAX_RECORD_BYTES = 256 * 1024 * 1024

_FILE_HEADER_BYTES = 24
_RECORD_HEADER_BYTES = 16


class PcapError(LocalError):
    """A pcap file is unreadable: bad magic, truncated, or of a link type not supported.

    The message names the file (when known) and what to change.
    """

    def __init__(self, message: str, *, file: str | None = None):
        self.file = file
        self.bare_message = message
        super().__init__(f"{file}: {message}" if file else message)


@dataclass(frozen=True, slots=True)
class PcapHeader:
    """The pcap file header.  `byteorder` is "<" or ">" (struct notation); `nanoseconds` tells
    whether `PcapRecord.ts_frac` counts nanoseconds (else microseconds)."""

    linktype: int
    snaplen: int = DEFAULT_SNAPLEN
    nanoseconds: bool = False
    byteorder: str = "<"
    version: tuple[int, int] = (2, 4)
    thiszone: int = 0
    sigfigs: int = 0

    @property
    def linktype_name(self) -> str:
        return SUPPORTED_LINKTYPES.get(self.linktype, f"link type {self.linktype}")


@dataclass(frozen=True, slots=True)
class PcapRecord:
    """One captured frame.  `ts_frac` is in the file's unit (micro- or nanoseconds);
    `orig_len` is the length on the wire (larger than `len(data)` when the capture was cut)."""

    ts_sec: int
    ts_frac: int
    data: bytes
    orig_len: int | None = None

    def __post_init__(self) -> None:
        if self.orig_len is None:
            object.__setattr__(self, "orig_len", len(self.data))

    def timestamp(self, header: PcapHeader) -> float:
        return self.ts_sec + self.ts_frac / (1e9 if header.nanoseconds else 1e6)

    def with_data(self, data: bytes) -> "PcapRecord":
        """The same record (timestamp kept) carrying a new frame, captured whole."""
        return replace(self, data=data, orig_len=len(data))


def _name_of(f: BinaryIO, name: str | None) -> str | None:
    if name is not None:
        return name
    fname = getattr(f, "name", None)
    return fname if isinstance(fname, str) else None


def read_header(f: BinaryIO, *, name: str | None = None) -> PcapHeader:
    """Parse the 24-byte file header at the current position of `f`."""
    file = _name_of(f, name)
    raw = f.read(_FILE_HEADER_BYTES)
    if not raw:
        raise PcapError("empty file, not a pcap capture", file=file)
    if len(raw) < 4:
        raise PcapError(f"not a pcap file ({len(raw)} bytes, shorter than the magic number)",
                        file=file)
    if struct.unpack("<I", raw[:4])[0] == _PCAPNG_MAGIC:
        raise PcapError("this is a pcapng file; only classic pcap is supported "
                        "(convert it with: editcap -F pcap IN.pcapng OUT.pcap)", file=file)
    for order in ("<", ">"):
        magic = struct.unpack(order + "I", raw[:4])[0]
        if magic in (MAGIC_MICROSECONDS, MAGIC_NANOSECONDS):
            break
    else:
        raise PcapError(f"not a pcap file (magic {raw[:4].hex()}, expected a1b2c3d4 or a1b23c4d "
                        "in either byte order)", file=file)
    if len(raw) < _FILE_HEADER_BYTES:
        raise PcapError(f"truncated file header ({len(raw)} of {_FILE_HEADER_BYTES} bytes)",
                        file=file)
    _, major, minor, thiszone, sigfigs, snaplen, network = struct.unpack(order + "IHHiIII", raw)
    if major != 2:
        raise PcapError(f"pcap version {major}.{minor} is not supported (expected 2.4)", file=file)
    # The upper bits of the link-type field may carry FCS information (draft-ietf-opsawg-pcap);
    # the link type itself is the low 16 bits.
    linktype = network & 0xFFFF
    return PcapHeader(linktype=linktype, snaplen=snaplen, nanoseconds=magic == MAGIC_NANOSECONDS,
                      byteorder=order, version=(major, minor), thiszone=thiszone, sigfigs=sigfigs)


def iter_records(f: BinaryIO, header: PcapHeader, *,
                 name: str | None = None) -> Iterator[PcapRecord]:
    """Yield the records that follow the file header; PcapError on a truncated record."""
    file = _name_of(f, name)
    rec = struct.Struct(header.byteorder + "IIII")
    index = 0
    while True:
        raw = f.read(_RECORD_HEADER_BYTES)
        if not raw:
            return
        index += 1
        if len(raw) < _RECORD_HEADER_BYTES:
            raise PcapError(f"record {index}: truncated record header ({len(raw)} of "
                            f"{_RECORD_HEADER_BYTES} bytes)", file=file)
        ts_sec, ts_frac, incl_len, orig_len = rec.unpack(raw)
        if incl_len > MAX_RECORD_BYTES:
            raise PcapError(f"record {index}: claims {incl_len} captured bytes; the file is "
                            "corrupt", file=file)
        data = f.read(incl_len)
        if len(data) < incl_len:
            raise PcapError(f"record {index}: truncated ({len(data)} of {incl_len} bytes present)",
                            file=file)
        yield PcapRecord(ts_sec, ts_frac, data, orig_len)


class PcapReader:
    """Iterate the records of a classic pcap file: ``for rec in PcapReader(f): ...``.

    The header is parsed on construction (`reader.header`).  With `require_supported` the link
    type must be one of `SUPPORTED_LINKTYPES`, so a tool fails before it writes anything.
    """

    def __init__(self, f: BinaryIO, *, name: str | None = None, require_supported: bool = False):
        self.file = _name_of(f, name)
        self._f = f
        self.header = read_header(f, name=self.file)
        if require_supported:
            check_linktype(self.header.linktype, file=self.file)

    def __iter__(self) -> Iterator[PcapRecord]:
        return iter_records(self._f, self.header, name=self.file)


def write_header(f: BinaryIO, header: PcapHeader) -> None:
    magic = MAGIC_NANOSECONDS if header.nanoseconds else MAGIC_MICROSECONDS
    f.write(struct.pack(header.byteorder + "IHHiIII", magic, header.version[0], header.version[1],
                        header.thiszone, header.sigfigs, header.snaplen, header.linktype))


def write_record(f: BinaryIO, header: PcapHeader, record: PcapRecord) -> None:
    orig_len = max(record.orig_len or 0, len(record.data))
    f.write(struct.pack(header.byteorder + "IIII", record.ts_sec, record.ts_frac,
                        len(record.data), orig_len))
    f.write(record.data)


class PcapWriter:
    """Write a classic pcap file: the header on construction, then `write(record)`."""

    def __init__(self, f: BinaryIO, header: PcapHeader):
        self.header = header
        self._f = f
        write_header(f, header)

    def write(self, record: PcapRecord) -> None:
        write_record(self._f, self.header, record)


def output_header(input_header: PcapHeader) -> PcapHeader:
    """The header of a file that rewrites `input_header`'s packets: same link type, byte order
    and timestamp unit (so timestamps copy verbatim).  The snaplen is kept when it admits whole
    IP packets (65535 or more: readers accept records a little over it, as libpcap and
    Wireshark do); a smaller one, of a cut capture, becomes `DEFAULT_SNAPLEN` since rewritten
    packets are whole."""
    if input_header.snaplen >= 65535:
        return input_header
    return replace(input_header, snaplen=DEFAULT_SNAPLEN)


# ------------------------------------------------------------------------------------------
# link layer
# ------------------------------------------------------------------------------------------
def check_linktype(linktype: int, *, file: str | None = None) -> None:
    if linktype not in SUPPORTED_LINKTYPES:
        known = ", ".join(f"{v} ({k})" for k, v in SUPPORTED_LINKTYPES.items())
        raise PcapError(f"link type {linktype} is not supported; supported: {known}", file=file)


def _ip_length(packet: bytes) -> int | None:
    """The length an IP packet declares for itself, or None when its header is unusable."""
    if not packet:
        return None
    version = packet[0] >> 4
    if version == 4 and len(packet) >= 20:
        total = (packet[2] << 8) | packet[3]
        return total if 20 <= total <= len(packet) else None
    if version == 6 and len(packet) >= 40:
        total = 40 + ((packet[4] << 8) | packet[5])
        # Payload length 0 means a jumbogram (RFC 2675): keep the whole frame.
        return total if (packet[4] or packet[5]) and total <= len(packet) else None
    return None


def _ip_offset(linktype: int, frame: bytes) -> tuple[int, int] | None:
    """(offset of the IP packet, offset of the ethertype/protocol field) or None if not IP."""
    if linktype == LINKTYPE_RAW:
        if frame and frame[0] >> 4 in (4, 6):
            return 0, -1
        return None
    if linktype == LINKTYPE_ETHERNET:
        at = 12
        if len(frame) < ETHERNET_HEADER_BYTES:
            return None
        etype = (frame[at] << 8) | frame[at + 1]
        if etype in (ETHERTYPE_VLAN, ETHERTYPE_QINQ):
            at += VLAN_TAG_BYTES
            if len(frame) < at + 2:
                return None
            etype = (frame[at] << 8) | frame[at + 1]
        if etype in (ETHERTYPE_IPV4, ETHERTYPE_IPV6):
            return at + 2, at
        return None
    if linktype == LINKTYPE_LINUX_SLL:
        if len(frame) < SLL_HEADER_BYTES:
            return None
        etype = (frame[14] << 8) | frame[15]
        if etype in (ETHERTYPE_IPV4, ETHERTYPE_IPV6):
            return SLL_HEADER_BYTES, 14
        return None
    check_linktype(linktype)
    return None  # pragma: no cover


def ip_from_frame(linktype: int, frame: bytes) -> bytes | None:
    """The IP packet carried by `frame`, or None when the frame carries no IPv4/IPv6 packet.

    Ethernet: 14-byte header, at most one 802.1Q (or 802.1ad) tag, ethertype 0x0800 / 0x86DD.
    The packet is cut to the length its IP header declares, so Ethernet padding (frames under
    60 bytes) is not taken for payload.  A header too short or inconsistent to tell the length
    is returned as captured, and the caller's IP code decides what is wrong with it.
    """
    where = _ip_offset(linktype, frame)
    if where is None:
        return None
    packet = frame[where[0]:]
    if not packet or packet[0] >> 4 not in (4, 6):
        return None
    length = _ip_length(packet)
    return packet[:length] if length is not None else packet


def frame_with_ip(linktype: int, frame: bytes, packet: bytes) -> bytes:
    """A frame like `frame` (same link type, MACs, VLAN tag, cooked header) carrying `packet`.

    The ethertype is set for the new packet's IP version.  `frame` must carry IP (see
    `ip_from_frame`); Ethernet padding is not added back (a capture holds frames as the host
    passed them, usually unpadded).
    """
    if linktype == LINKTYPE_RAW:
        return bytes(packet)
    where = _ip_offset(linktype, frame)
    if where is None:
        check_linktype(linktype)
        raise LocalError("frame_with_ip: the original frame carries no IP packet")
    offset, type_at = where
    version = packet[0] >> 4 if packet else 0
    if version == 4:
        etype = ETHERTYPE_IPV4
    elif version == 6:
        etype = ETHERTYPE_IPV6
    else:
        raise LocalError(f"frame_with_ip: not an IPv4/IPv6 packet (version {version})")
    head = bytearray(frame[:offset])
    head[type_at:type_at + 2] = etype.to_bytes(2, "big")
    return bytes(head) + bytes(packet)


__all__ = [
    "DEFAULT_SNAPLEN", "LINKTYPE_ETHERNET", "LINKTYPE_LINUX_SLL", "LINKTYPE_RAW",
    "MAGIC_MICROSECONDS", "MAGIC_NANOSECONDS", "PcapError", "PcapHeader", "PcapReader",
    "PcapRecord", "PcapWriter", "SUPPORTED_LINKTYPES", "check_linktype", "frame_with_ip",
    "ip_from_frame", "iter_records", "output_header", "read_header", "write_header",
    "write_record",
]

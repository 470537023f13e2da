"""A batch of packets in one buffer, as VPP vectors and kernel skbs hold them.

Owns: `PacketBatch` (one writable `bytearray`, int64 numpy arrays of per-packet offsets and
lengths, and the room each packet has before and after it), and the conversions from and to a
list of bytes, which is what `protect_batch` / `unprotect_batch` take and give.
Must not: know any protocol.  The ESP batch path (`ipsec_core.dataplane.esp.bulk`) writes
headers into the room before a packet and trailers into the room after it, in place, and hands
the buffer to a backend's batch call (`ipsec_core.crypto.base.BatchAead`).

Layout made by `from_packets`: `gap` zero bytes, packet 0, `gap` bytes, packet 1, ..., `gap`
bytes, with `gap = headroom + tailroom`: the last `headroom` bytes of each gap belong to the
packet after it, the first `tailroom` to the packet before it.  numpy is needed (the `fast`
extra); `available()` says whether it is there.
"""
from __future__ import annotations

from dataclasses import dataclass

try:
    import numpy as np
except ImportError:       # pragma: no cover - exercised where numpy is absent
    np = None


def available() -> bool:
    return np is not None


@dataclass(eq=False, slots=True)
class PacketBatch:
    """`buf[offsets[i]:offsets[i] + lengths[i]]` is packet i; each has at least `headroom`
    bytes before it and `tailroom` after it that no other packet uses."""

    buf: bytearray
    offsets: "np.ndarray"
    lengths: "np.ndarray"
    headroom: int = 0
    tailroom: int = 0

    @classmethod
    def from_packets(cls, packets, *, headroom: int = 0, tailroom: int = 0) -> "PacketBatch":
        """Copy `packets` (bytes-like) into one buffer with the room asked for around each."""
        if headroom < 0 or tailroom < 0:
            raise ValueError(f"room must be >= 0 bytes, not {headroom}/{tailroom}")
        n = len(packets)
        lengths = np.array(list(map(len, packets)), np.int64)
        gap = headroom + tailroom
        if gap:
            filler = bytes(gap)
            buf = bytearray(filler.join((b"", *packets, b"")))
        else:
            buf = bytearray(b"".join(packets))
        offsets = np.empty(n, np.int64)
        if n:
            offsets[0] = gap
            np.cumsum(lengths[:-1] + gap, out=offsets[1:])
            offsets[1:] += gap
        return cls(buf, offsets, lengths, headroom, tailroom)

    def __len__(self) -> int:
        return len(self.offsets)

    def view(self) -> "np.ndarray":
        """The buffer as a uint8 array (shares memory with `buf`)."""
        return np.frombuffer(self.buf, np.uint8)

    def packet(self, i: int) -> bytes:
        o = int(self.offsets[i])
        return bytes(self.buf[o:o + int(self.lengths[i])])

    def packets(self, offsets=None, lengths=None) -> list[bytes]:
        """Every packet (or the regions given) as bytes, in order."""
        offsets = self.offsets if offsets is None else offsets
        lengths = self.lengths if lengths is None else lengths
        return slices(bytes(self.buf), offsets, lengths)


def slices(data: bytes, offsets, lengths) -> list[bytes]:
    """`[data[o:o + l] for o, l in zip(offsets, lengths)]`, with the loop in C."""
    starts = offsets.tolist() if hasattr(offsets, "tolist") else list(offsets)
    ends = (offsets + lengths).tolist() if hasattr(offsets, "tolist") else [
        o + l for o, l in zip(offsets, lengths)]
    return list(map(data.__getitem__, map(slice, starts, ends)))


def complete_checksums(packets, start: int, offset: int) -> list[bytes]:
    """Checksum offload done in software (virtio NEEDS_CSUM, Linux CHECKSUM_PARTIAL): in each
    packet the 16-bit field at `start + offset` holds the pseudo-header sum; the RFC 1071
    checksum from `start` to the end (that field included) goes there.  UDP (offset 6) never
    gets 0.  A packet too short for the field is left as it is."""
    from ipsec_core.wire.ip import checksum

    out = []
    for p in packets:
        if start < 0 or start + offset + 2 > len(p):
            out.append(bytes(p))
            continue
        c = checksum(memoryview(p)[start:])
        if c == 0 and offset == 6:
            c = 0xFFFF
        q = bytearray(p)
        q[start + offset:start + offset + 2] = c.to_bytes(2, "big")
        out.append(bytes(q))
    return out


__all__ = ["PacketBatch", "available", "complete_checksums", "slices"]

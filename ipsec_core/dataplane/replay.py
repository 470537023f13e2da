"""Anti-replay window with extended sequence numbers (RFC 4303 section 3.4.3 and Appendix A).

Owns: the receive window of one inbound SA and the reconstruction of the ESN high-order bits.
The check and the update are split, as in strongSwan's libipsec: `check` runs before the ICV is
verified and changes nothing; `update` runs only after the packet was authenticated, so a forged
packet can never move the window.
"""
from __future__ import annotations

from ipsec_core.errors import DropReason, PacketDropped

SEQ32 = 1 << 32
#: Window size used by strongSwan when none is configured (charon's replay_window default).
DEFAULT_REPLAY_WINDOW_BITS = 32
MAX_REPLAY_WINDOW_BITS = 1 << 20


class ReplayWindow:
    """`size` bits wide; size 0 disables the replay check (the ESN high bits are still estimated).

    `top` is the highest authenticated sequence number (64-bit with ESN); bit i of `bitmap` says
    that `top - i` was received.
    """

    __slots__ = ("size", "esn", "top", "bitmap", "_mask")

    def __init__(self, size: int = DEFAULT_REPLAY_WINDOW_BITS, *, esn: bool = False):
        if not 0 <= size <= MAX_REPLAY_WINDOW_BITS:
            raise ValueError(f"replay window must be 0..{MAX_REPLAY_WINDOW_BITS} bits, not {size}")
        self.size = size
        self.esn = esn
        self.top = 0
        self.bitmap = 0
        self._mask = (1 << size) - 1 if size else 0

    def estimate(self, seq_low: int) -> int:
        """The full sequence number a received low-order 32 bits most likely stands for
        (RFC 4303 Appendix A2.2).  Without ESN that is the number itself."""
        if not self.esn:
            return seq_low
        w = max(self.size, 1)
        th, tl = self.top >> 32, self.top & 0xFFFFFFFF
        if tl >= w - 1:                         # case A: window within one sub-space
            seqh = th if seq_low >= tl - w + 1 else th + 1
        else:                                   # case B: window spans two sub-spaces
            seqh = th - 1 if seq_low >= (tl - w + 1) % SEQ32 else th
        if not 0 <= seqh <= 0xFFFFFFFF:         # before 0 or past 2^64 - 1: no such number
            return -1
        return (seqh << 32) | seq_low

    def check(self, seq_low: int) -> int:
        """Return the full sequence number, or raise PacketDropped(REPLAY).  Changes nothing."""
        seq = self.estimate(seq_low)
        if seq <= 0:
            raise PacketDropped(DropReason.REPLAY, f"sequence number {seq_low} is not valid here")
        if self.size == 0 or seq > self.top:
            return seq
        behind = self.top - seq
        if behind >= self.size:
            raise PacketDropped(DropReason.REPLAY,
                                f"sequence number {seq} is left of the window (top {self.top})")
        if (self.bitmap >> behind) & 1:
            raise PacketDropped(DropReason.REPLAY, f"sequence number {seq} was already received")
        return seq

    def update(self, seq: int) -> None:
        """Record an authenticated packet's full sequence number."""
        if seq > self.top:
            shift = seq - self.top
            self.bitmap = ((self.bitmap << shift) | 1) & self._mask if shift < self.size else 1 & self._mask
            self.top = seq
        elif self.size:
            self.bitmap |= 1 << (self.top - seq)

    def advance(self, top: int, received: int) -> None:
        """Record many authenticated sequence numbers at once, all above the window's top (a
        batch that arrived in order): `top` is the highest of them and bit i of `received` says
        that `top - i` is one of them (bits at or past the window's size are ignored).  Leaves
        the state `update` of each of them in turn would leave."""
        if top <= self.top:
            raise ValueError(f"advance() needs a top above the window's {self.top}, not {top}")
        shift = top - self.top
        kept = self.bitmap << shift if shift < self.size else 0
        self.bitmap = (kept | received) & self._mask
        self.top = top

    def snapshot(self) -> tuple[int, int]:
        return self.top, self.bitmap

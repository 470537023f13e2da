"""The anti-replay window checked against a plain model (RFC 4303 3.4.3 and Appendix A): the
set of accepted sequence numbers and the highest one.  A number is accepted when it is new and
not more than window-size - 1 below the highest; with ESN, the 32 bits on the wire stand for
the smallest full number at or right of the window's left edge (Appendix A2.2 says the same
case by case), and a full number below 1 or above 2^64 - 1 does not exist.

Driven by hypothesis: window sizes 32 to 65536, with and without ESN, starting just below
2^32 and 2^64; then the same through `SecurityAssociation.unprotect_batch` with duplicates,
reordering and forged packets inside one batch (a forged packet never moves the window).
"""
from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ipsec_core.crypto.registry import get_registry
from ipsec_core.dataplane.replay import ReplayWindow
from ipsec_core.dataplane.sa import Direction, Mode, SaConfig, SecurityAssociation
from ipsec_core.errors import DropReason, PacketDropped
from ipsec_core.transforms.keywords import parse_esp

SEQ32, SEQ64_MAX = 1 << 32, (1 << 64) - 1


class Model:
    def __init__(self, size: int, esn: bool, top: int):
        self.size, self.esn = size, esn
        self.accepted = {top} if top else set()
        self.top = top

    def full(self, low: int) -> int | None:
        """The full number `low` stands for, or None when it stands for none."""
        if not self.esn:
            return low
        left = self.top - max(self.size, 1) + 1
        high = self.top >> 32
        candidates = [(h << 32) | low for h in (high - 1, high, high + 1)]
        chosen = min(c for c in candidates if c >= left)
        return chosen if 1 <= chosen <= SEQ64_MAX else None

    def verdict(self, low: int) -> int | None:
        seq = self.full(low)
        if seq is None or seq < 1:
            return None
        if seq > self.top:
            return seq
        if self.top - seq >= self.size or seq in self.accepted:
            return None
        return seq

    def accept(self, seq: int) -> None:
        self.accepted.add(seq)
        self.top = max(self.top, seq)


SIZES = st.sampled_from([32, 33, 64, 100, 128, 1024, 4096, 65536]) | st.integers(32, 65536)


@st.composite
def scenarios(draw):
    size = draw(SIZES)
    esn = draw(st.booleans())
    edges = [0, 1000, SEQ32 - 1 - draw(st.integers(0, 3 * size))]
    if esn:
        edges += [SEQ32 + draw(st.integers(0, 3 * size)), SEQ64_MAX - draw(st.integers(0, 3 * size))]
    start = draw(st.sampled_from(edges))
    near = st.integers(-2 * size - 3, 2 * size + 3)
    far = st.sampled_from([-SEQ32, SEQ32, SEQ32 // 2, -(SEQ32 // 2), size, -size, 1 - size])
    steps = draw(st.lists(st.tuples(near | far, st.booleans()), min_size=1, max_size=120))
    return size, esn, start, steps


@settings(max_examples=300, database=None, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_window_matches_the_model(scenario):
    size, esn, start, steps = scenario
    w = ReplayWindow(size, esn=esn)
    w.top, w.bitmap = start, 1 if start else 0
    model = Model(size, esn, start)
    for delta, authentic in steps:
        target = model.top + delta
        if not esn and not 0 <= target < SEQ32:
            continue
        low = target % SEQ32
        want = model.verdict(low)
        before = w.snapshot()
        try:
            got = w.check(low)
        except PacketDropped as drop:
            assert drop.reason is DropReason.REPLAY
            got = None
        assert w.snapshot() == before, "check() changed the window"
        assert got == want, f"seq low {low} (top {model.top}, size {size}, esn {esn}): {got} != model {want}"
        if got is not None and authentic:
            w.update(got)
            model.accept(got)
        assert w.top == model.top


# -- through the SA, in batches --------------------------------------------------------------

def _inner(i: int) -> bytes:
    payload = struct.pack("!HHHH", 1000 + i % 50000, 53, 16, 0) + i.to_bytes(8, "big")
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, 0, 64, 17, 0,
                       ipaddress.ip_address("198.51.100.1").packed,
                       ipaddress.ip_address("203.0.113.1").packed) + payload


_PAIRS: dict = {}


def _pair(proposal: str, size: int):
    key = (proposal, size)
    if key not in _PAIRS:
        prop = parse_esp(proposal)
        enc = bytes(range(1, 1 + prop.enc_key_bytes))
        integ = bytes(range(60, 60 + prop.integ_info.key_bytes)) if prop.integ_info else b""

        def make(direction):
            a, b = ("192.0.2.1", "192.0.2.2") if direction is Direction.OUT else ("192.0.2.2", "192.0.2.1")
            return SaConfig(name=direction.value, spi=0x5000, direction=direction, mode=Mode.TUNNEL,
                            proposal=prop, enc_key=enc, integ_key=integ, replay_window=size,
                            local=ipaddress.ip_address(a), remote=ipaddress.ip_address(b))
        _PAIRS[key] = (make(Direction.OUT), make(Direction.IN))
    out_cfg, in_cfg = _PAIRS[key]
    reg = get_registry()
    return SecurityAssociation(out_cfg, registry=reg, now=0.0), SecurityAssociation(in_cfg, registry=reg, now=0.0)


@st.composite
def batch_scenarios(draw):
    proposal = draw(st.sampled_from(["aes128gcm16", "aes128gcm16-esn", "aes128-sha256",
                                     "aes128-sha256-esn", "chacha20poly1305-esn"]))
    size = draw(st.sampled_from([32, 64, 128, 1024]))
    esn = proposal.endswith("-esn")
    start = draw(st.sampled_from([0, SEQ32 - 200] + ([SEQ32 + 10, SEQ64_MAX - 400] if esn else [])))
    batches = draw(st.lists(st.lists(st.tuples(st.integers(-size - 8, size + 40), st.booleans()),
                                     min_size=1, max_size=70), min_size=1, max_size=4))
    return proposal, size, start, batches


@settings(max_examples=60, database=None, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch_scenarios())
def test_unprotect_batch_matches_the_model(scenario):
    proposal, size, start, batches = scenario
    out, inb = _pair(proposal, size)
    inb.replay.top, inb.replay.bitmap = start, 1 if start else 0
    model = Model(size, inb.esn, start)
    max_seq = SEQ64_MAX if inb.esn else SEQ32 - 1
    base = start
    for batch in batches:
        packets, expect = [], []
        for delta, forged in batch:
            seq = min(max(base + delta, 1), max_seq)
            out.seq = seq - 1
            wire = bytearray(out.protect(_inner(seq), now=0.0))
            if forged:
                wire[-1] ^= 0x01
            packets.append(bytes(wire))
            verdict = model.verdict(seq % SEQ32)
            if verdict is not None and verdict != seq:
                verdict = None           # the low bits stand for another number: not this packet
                expect.append(DropReason.AUTH_FAILED)
            elif verdict is None:
                expect.append(DropReason.REPLAY)
            elif forged:
                expect.append(DropReason.AUTH_FAILED)
            else:
                model.accept(seq)
                expect.append(_inner(seq))
        got = inb.unprotect_batch(packets, now=0.0)
        for i, (g, e) in enumerate(zip(got, expect)):
            if isinstance(e, DropReason):
                assert isinstance(g, PacketDropped) and g.reason is e, (i, g, e)
            else:
                assert g == e, (i, g)
        assert inb.replay.top == model.top
        base = model.top
    # The window's bits agree with the model's set for every number it still covers.
    for behind in range(size):
        seq = model.top - behind
        if seq < 1:
            break
        assert bool((inb.replay.bitmap >> behind) & 1) == (seq in model.accepted), seq

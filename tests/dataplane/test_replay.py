"""Anti-replay window (RFC 4303 3.4.3, Appendix A) with and without ESN."""
import random

import pytest

from ipsec_core.errors import DropReason, PacketDropped
from ipsec_core.dataplane.replay import ReplayWindow


def accept(w: ReplayWindow, seq_low: int) -> int:
    seq = w.check(seq_low)
    w.update(seq)
    return seq


def test_in_order_and_duplicates():
    w = ReplayWindow(32)
    for s in range(1, 100):
        assert accept(w, s) == s
    with pytest.raises(PacketDropped) as exc:
        w.check(99)
    assert exc.value.reason is DropReason.REPLAY


def test_sequence_zero_is_never_valid():
    with pytest.raises(PacketDropped):
        ReplayWindow(32).check(0)


@pytest.mark.parametrize("size", [32, 64, 4096])
def test_left_edge_of_window(size):
    w = ReplayWindow(size)
    accept(w, size + 100)
    accept(w, 101)                      # exactly the last slot inside the window
    with pytest.raises(PacketDropped, match="left of the window"):
        w.check(100)
    accept(w, 102)


def test_out_of_order_inside_window():
    w = ReplayWindow(64)
    order = list(range(1, 65))
    random.Random(7).shuffle(order)
    for s in order:
        accept(w, s)
    for s in order:
        with pytest.raises(PacketDropped):
            w.check(s)


def test_check_does_not_change_state():
    w = ReplayWindow(32)
    accept(w, 10)
    before = w.snapshot()
    w.check(50)
    w.check(5)
    assert w.snapshot() == before


def test_window_zero_disables_check():
    w = ReplayWindow(0)
    accept(w, 5)
    assert accept(w, 5) == 5


def test_esn_crosses_subspace():
    w = ReplayWindow(64, esn=True)
    w.top, w.bitmap = 2**32 - 3, 1
    assert accept(w, 2**32 - 1 & 0xFFFFFFFF) == 2**32 - 1
    assert accept(w, 0) == 2**32          # low bits wrap: high bits move to 1
    assert accept(w, 5) == 2**32 + 5
    assert accept(w, 2**32 - 2) == 2**32 - 2   # late packet of the previous sub-space (case B)
    with pytest.raises(PacketDropped):
        w.check(2**32 - 1)


def test_esn_case_a_far_ahead_guesses_next_subspace():
    w = ReplayWindow(32, esn=True)
    w.top, w.bitmap = (7 << 32) | 1000, 1
    assert w.estimate(2000) == (7 << 32) | 2000
    assert w.estimate(10) == (8 << 32) | 10      # below the window: the next sub-space


def test_bad_size():
    with pytest.raises(ValueError):
        ReplayWindow(-1)

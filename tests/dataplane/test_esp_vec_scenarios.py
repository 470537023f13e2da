"""Replay-window and lifetime scenarios for both vectorised paths of `esp_vec` (tunnel mode over
the `esp_fast` loop, transport mode over the generic loop): after every batch the bytes,
verdicts and `sa.state()` equal one-by-one processing, and the fallbacks happen where the
module says they do.

Shows, per mode:
0. sequence numbers up to 2^32 - 1 on the vector path, then SequenceOverflow;
1. replay window after batches with lost packets, after jumps past the window, and window 0;
2. packet and byte lifetimes reached inside vector-sized batches, time lifetimes checked once
   per batch, `.partial` after a hard expiry, and no lifetime mark from a batch in which no
   packet reaches the lifetime check (all wrong SPI);
3. a seeded mix of damage (flipped bits, truncation, duplicates, reordering) in batches of
   varied sizes.
The packet makers, rigs and counted fallbacks are those of `test_esp_vec` (tunnel) and
`test_esp_vec_transport` (transport).
"""
import dataclasses
import random
from typing import Callable

import pytest

from dataplane import test_esp_vec as tunnel
from dataplane import test_esp_vec_transport as transport
from ipsec_core.dataplane.esp import vec as esp_vec
from ipsec_core.errors import DropReason, LifetimeExpired, SequenceOverflow
from ipsec_core.dataplane.sa import Lifetime, SecurityAssociation
from dataplane.test_batch import configs, pair_of
from dataplane.test_esp_vec import (ENCAP, check_inbound, chunks, protect_batch, protect_single,
                          unprotect_batch, unprotect_single, with_outer)

pytestmark = pytest.mark.skipif(not esp_vec.available(), reason="numpy is not installed")

MIN_P, MIN_U = esp_vec.MIN_PROTECT_BATCH, esp_vec.MIN_UNPROTECT_BATCH


@dataclasses.dataclass(frozen=True)
class Mode:
    name: str
    config: dict                                   # extra `configs` arguments
    module: object                                 # rig, instrument, clean
    hundreds: Callable[[int], list]                # n packets of 100 bytes
    expect: Callable[[bytes], bytes]               # what unprotect gives back for a packet

    def rig(self, **kw):
        return self.module.rig(**kw)                # each module's rig knows its mode

    def configs(self, **kw):
        return configs("aes128gcm16", **self.config, **kw)

    def clean(self, rng, n):
        return self.module.clean(rng, n)

    def instrument(self, sa):
        return self.module.instrument(sa)


def _tunnel_hundreds(n: int) -> list[bytes]:
    rng = random.Random(12)
    return [tunnel.ipv4(rng, 100, tos=i % 4, ident=i) for i in range(n)]


MODES = [Mode("tunnel", {}, tunnel, _tunnel_hundreds, lambda p: p),
         Mode("transport", {"mode": "transport"}, transport, transport._hundreds, transport.fixed)]
each_mode = pytest.mark.parametrize("m", MODES, ids=[m.name for m in MODES])


# -- 0. sequence numbers ------------------------------------------------------------------------
@each_mode
def test_sequence_numbers_up_to_the_32_bit_limit(m):
    r = m.rig()
    r.sender.seq = r.out.seq = 2**32 - 1 - MIN_P
    packets = m.clean(random.Random(3), MIN_P)
    wire = r.out.protect_batch(packets, now=0.0)
    assert wire == [r.sender.protect(p, now=0.0) for p in packets] and r.out.seq == 2**32 - 1
    assert r.fallback_out.calls == 0
    assert protect_batch(r.out, packets) == protect_single(r.sender, packets) == ([], (SequenceOverflow, None))
    assert r.out.state() == r.sender.state()
    assert check_inbound(r, [wire]) == list(map(m.expect, packets)) and r.fallback_in.calls == 0
    assert r.inb.replay.top == 2**32 - 1


# -- 1. replay window ------------------------------------------------------------------------------
@each_mode
@pytest.mark.parametrize("window", [32, 64, 1000])
def test_replay_window_with_lost_packets(m, window):
    r = m.rig(window=window)
    packets = m.clean(random.Random(9), 300)
    wire = [w for i, w in enumerate(r.sender.protect(p, now=0.0) for p in packets) if i % 7 != 6]
    batches = chunks(wire, [64] * 5)
    assert check_inbound(r, batches) == [m.expect(p) for i, p in enumerate(packets) if i % 7 != 6]
    assert r.fallback_in.calls == sum(len(b) < MIN_U for b in batches) == 1
    # A second pass: every packet is now a replay (or left of the window).
    assert {v[1] for v in check_inbound(r, batches)} == {DropReason.REPLAY}


@each_mode
@pytest.mark.parametrize("jump", [1, 2, 63, 64, 65, 1000])
def test_replay_window_after_a_jump(m, jump):
    """Window 64: a batch starting `jump` past the top, with a second jump of `jump` inside it,
    then a batch of older packets (some never received, some replays)."""
    r = m.rig(window=64)
    rng = random.Random(10)
    first = [r.sender.protect(p, now=0.0) for p in m.clean(rng, 40)]
    held = [r.sender.protect(p, now=0.0) for p in m.clean(rng, jump - 1)]      # not delivered yet
    second = [r.sender.protect(p, now=0.0) for p in m.clean(rng, 20)]
    held += [r.sender.protect(p, now=0.0) for p in m.clean(rng, jump - 1)]
    second += [r.sender.protect(p, now=0.0) for p in m.clean(rng, 20)]
    check_inbound(r, [first, second])
    assert r.fallback_in.calls == 0
    assert r.inb.replay.top == 40 + 2 * (jump - 1) + 40
    late = (held + first[-5:] + second[:3])[-40:]
    check_inbound(r, [late + second[-1:]])
    assert r.inb.stats.drops["replay"] == r.ref.stats.drops["replay"] > 0


@each_mode
@pytest.mark.parametrize("back", [0, 1], ids=["newest", "newest-but-one"])
def test_replay_as_the_first_packet_of_a_batch(m, back):
    """A batch that starts with a repeat of the newest sequence number (the top of the window)
    or of the one before, then only new ones: the repeat is a replay, the rest pass."""
    r = m.rig(window=64)
    rng = random.Random(13)
    first_packets, second_packets = m.clean(rng, 40), m.clean(rng, 40)
    first = [r.sender.protect(p, now=0.0) for p in first_packets]
    second = [r.sender.protect(p, now=0.0) for p in second_packets]
    check_inbound(r, [first])
    assert r.inb.replay.top == 40
    seen = check_inbound(r, [[first[-1 - back]] + second])
    assert seen[0][:2] == ("drop", DropReason.REPLAY)
    assert seen[1:] == list(map(m.expect, second_packets))
    assert r.inb.replay.top == 80 and r.inb.stats.drops == {"replay": 1}


@each_mode
def test_replay_window_0_uses_the_loop(m):
    r = m.rig(window=0)
    packets = m.clean(random.Random(11), 100)
    wire = [r.sender.protect(p, now=0.0) for p in packets]
    stream = wire[:50] + wire[10:60] + wire[90:] + wire[60:90]     # duplicates and going back
    seen = check_inbound(r, chunks(stream, [64, 64, 64]))
    assert seen == list(map(m.expect, packets[:50] + packets[10:60] + packets[90:] + packets[60:90]))
    assert r.fallback_in.calls == 3                                # all accepted, by the loop


# -- 2. lifetimes ----------------------------------------------------------------------------------
LIFETIMES = {       # 100-byte packets, batches of 64
    "packets": dict(soft=Lifetime(packets=100), hard=Lifetime(packets=200)),
    "bytes": dict(soft=Lifetime(bytes=100 * 100), hard=Lifetime(bytes=200 * 100)),
    "bytes-odd": dict(soft=Lifetime(bytes=9876), hard=Lifetime(bytes=17777)),
    "soft-only": dict(soft=Lifetime(packets=150, bytes=10**9)),
    "hard-at-batch-edge": dict(hard=Lifetime(packets=128)),
    "hard-one-past-edge": dict(hard=Lifetime(packets=129)),
}


@each_mode
@pytest.mark.parametrize("limits", list(LIFETIMES.values()), ids=list(LIFETIMES))
def test_lifetime_reached_inside_vector_batches(m, limits):
    out_cfg, in_cfg = m.configs(**limits)
    single, batch = pair_of(out_cfg)
    fallback, _ = m.instrument(batch)
    packets = m.hundreds(260)
    for i, part in enumerate(chunks(packets, [64] * 4)):
        assert protect_batch(batch, part) == protect_single(single, part)
        assert batch.state() == single.state()
        if i == 0:
            assert fallback.calls == 0            # no limit within reach: the vector path
    assert fallback.calls >= 1 and (single.soft_expired or single.hard_expired)
    # Inbound: the sender has no lifetime, the receiving SAs have these.
    sender = SecurityAssociation(dataclasses.replace(out_cfg, soft=Lifetime(), hard=Lifetime()), now=0.0)
    wire = [sender.protect(p, now=0.0) for p in packets]
    ref, inb = SecurityAssociation(in_cfg, now=0.0), SecurityAssociation(in_cfg, now=0.0)
    _, fallback_in = m.instrument(inb)
    for i, part in enumerate(chunks(wire, [64] * 4)):
        assert unprotect_batch(inb, part) == unprotect_single(ref, part)
        assert inb.state() == ref.state()
        if i == 0 and "bytes" not in str(limits):
            assert fallback_in.calls == 0         # (byte limits: inbound assumes 65535-byte packets)
    assert fallback_in.calls >= 1 and (ref.soft_expired or ref.hard_expired)


@each_mode
def test_time_lifetimes_inside_vector_batches(m):
    """Soft and hard time limits (explicit `now`): checked once per batch, as at each packet."""
    out_cfg, in_cfg = m.configs(soft=Lifetime(seconds=10), hard=Lifetime(seconds=20))
    single, batch = (SecurityAssociation(out_cfg, now=0.0) for _ in range(2))
    batch.engine.ident = single.engine.ident
    fallback, _ = m.instrument(batch)
    packets = m.clean(random.Random(14), 3 * MIN_P)
    times = (5.0, 15.0, 19.5)
    for part, now in zip(chunks(packets, [MIN_P] * 3), times):
        assert protect_batch(batch, part, now) == protect_single(single, part, now)
        assert batch.state() == single.state()
    assert single.soft_expired and fallback.calls == 0     # time limits need no fallback
    more = packets[:MIN_P]
    assert protect_batch(batch, more, 25.0) == protect_single(single, more, 25.0) == ([], (LifetimeExpired, None))
    assert batch.state() == single.state() and single.hard_expired
    sender = SecurityAssociation(dataclasses.replace(out_cfg, soft=Lifetime(), hard=Lifetime()), now=0.0)
    wire = [sender.protect(p, now=0.0) for p in packets + more]
    ref, inb = (SecurityAssociation(in_cfg, now=0.0) for _ in range(2))
    _, fallback_in = m.instrument(inb)
    for part, now in zip(chunks(wire, [MIN_P] * 4), times + (25.0,)):
        assert unprotect_batch(inb, part, now) == unprotect_single(ref, part, now)
        assert inb.state() == ref.state()
    # Inbound, the batch that crosses the soft limit (15 s) and the one past the hard limit go
    # to the loop, which notes the limit at the first packet that gets that far.
    assert ref.stats.drops["sa_expired"] == MIN_P and fallback_in.calls == 2


@each_mode
@pytest.mark.parametrize("n", [MIN_P, MIN_P - 1], ids=["vector", "loop"])
def test_protect_batch_after_hard_expiry_carries_partial(m, n):
    out_cfg, _ = m.configs(hard=Lifetime(seconds=20))
    single, batch = (SecurityAssociation(out_cfg, now=0.0) for _ in range(2))
    batch.engine.ident = single.engine.ident
    packets = m.clean(random.Random(19), n)
    assert protect_batch(batch, packets, 25.0) == protect_single(single, packets, 25.0) == ([], (LifetimeExpired, None))
    assert batch.state() == single.state()


@each_mode
@pytest.mark.parametrize("now,field", [(15.0, "soft_expired"), (25.0, "hard_expired")])
def test_lifetime_not_checked_when_no_packet_gets_that_far(m, now, field):
    out_cfg, in_cfg = m.configs(soft=Lifetime(seconds=10), hard=Lifetime(seconds=20))
    sender = SecurityAssociation(dataclasses.replace(out_cfg, soft=Lifetime(), hard=Lifetime()), now=0.0)
    wrong_spi = [w[:20] + b"\0\0\x99\x99" + w[24:] for w in (sender.protect(p, now=0.0) for p in m.clean(random.Random(16), MIN_U))]
    ref, inb = (SecurityAssociation(in_cfg, now=0.0) for _ in range(2))
    assert unprotect_batch(inb, wrong_spi, now) == unprotect_single(ref, wrong_spi, now)
    assert getattr(ref, field) is None                        # one-by-one: never reached
    assert inb.state() == ref.state()                         # and the batch leaves it so too


# -- 3. a seeded mix of everything ---------------------------------------------------------------
@each_mode
@pytest.mark.parametrize("seed", range(4))
def test_random_damage_matches_single(m, seed):
    rng = random.Random(seed)
    proposal = rng.choice(["aes128gcm16", "aes128ccm12", "chacha20poly1305", "aes256gcm12"])
    r = m.module.rig(proposal, encap=rng.choice([None, ENCAP]), window=rng.choice([32, 64, 128]))
    wire = [r.sender.protect(p, now=0.0) for p in m.clean(rng, 600)]
    for _ in range(25):
        k, op = rng.randrange(len(wire)), rng.random()
        if op < 0.4:
            b = bytearray(wire[k])
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
            wire[k] = with_outer(b) if rng.random() < 0.5 and len(b) >= 20 and b[0] == 0x45 else bytes(b)
        elif op < 0.6:
            wire[k] = wire[k][:rng.randrange(len(wire[k]))]
        elif op < 0.8:
            wire.insert(rng.randrange(len(wire)), wire[k])
        else:
            j = rng.randrange(len(wire))
            wire[k], wire[j] = wire[j], wire[k]
    check_inbound(r, chunks(wire, [rng.choice([32, 40, 64, 100]) for _ in range(20)]))

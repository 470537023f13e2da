"""The batch path on one buffer (`ipsec_core.dataplane.esp.bulk` over `PacketBatch`) gives
exactly what one-by-one `EspEngine.protect` / `unprotect` gives: the same bytes, verdicts, drop
reasons, sequence numbers, replay window and counters, for every proposal it takes, both
address families inside and outside, ESN and UDP encapsulation; on `ipsecmb` (the backend's
batch calls) and on `aesni` (the core's loops over single-packet primitives)."""
from __future__ import annotations

import hashlib
import ipaddress
import os
import random

import pytest

np = pytest.importorskip("numpy")

from ipsec_core.crypto.registry import get_registry  # noqa: E402
from ipsec_core.dataplane.batch import PacketBatch  # noqa: E402
from ipsec_core.dataplane.sa import Direction, Mode, SaConfig, SecurityAssociation  # noqa: E402
from ipsec_core.errors import PacketDropped  # noqa: E402
from ipsec_core.transforms.keywords import parse_esp  # noqa: E402
from ipsec_core.wire.ip import fix_ipv4_header  # noqa: E402

V4 = (ipaddress.ip_address("192.0.2.1"), ipaddress.ip_address("192.0.2.2"))
V6 = (ipaddress.ip_address("2001:db8::1"), ipaddress.ip_address("2001:db8::2"))
REGISTRY = get_registry()
BACKENDS = [b for b in ("ipsecmb", "aesni") if REGISTRY.get(b).available]
PROPOSALS = ["aes128gcm16", "aes256gcm12", "aes192gcm8", "chacha20poly1305", "aes128-sha1",
             "aes256-sha256", "aes192-sha384", "aes128-sha512", "aes128ctr-sha256",
             "aes256ctr-aesxcbc", "aes128-aescmac", "null-sha256"]
SHAPES = [dict(outer=V4), dict(outer=V6), dict(outer=V4, encap=(4500, 4500)), dict(outer=V4, esn=True),
          dict(outer=V6, esn=True)]


def configs(proposal, *, backend, outer=V4, encap=None, esn=False, window=64):
    prop = parse_esp(proposal + ("-esn" if esn else ""))
    rng = random.Random(proposal)
    key = rng.randbytes(prop.enc_key_bytes) if prop.key_bits else b""
    integ = rng.randbytes(prop.integ_info.key_bytes) if prop.integ_info else b""
    common = dict(spi=0x4242, mode=Mode.TUNNEL, proposal=prop, enc_key=key, integ_key=integ,
                  encap_ports=encap, backend=backend, replay_window=window)
    return (SaConfig(name="o", direction=Direction.OUT, local=outer[0], remote=outer[1], **common),
            SaConfig(name="i", direction=Direction.IN, local=outer[1], remote=outer[0], **common))


def inner(rng: random.Random, i: int) -> bytes:
    """IPv4 (some with options, some DF, ECN codepoints) and IPv6 packets of 0..1400 bytes."""
    size = rng.choice([0, 1, 3, 20, 63, 64, 575, 1400, rng.randrange(1400)])
    if rng.random() < 0.7:
        opts = b"\x01\x01\x01\x00" if rng.random() < 0.1 else b""
        ihl = 5 + len(opts) // 4
        head = bytearray(bytes((0x40 | ihl, rng.choice([0, 1, 2, 3, 0xb8]))) + (ihl * 4 + size).to_bytes(2, "big")
                         + i.to_bytes(2, "big") + rng.choice([b"\x40\x00", b"\0\0"]) + b"\x40\x11\0\0"
                         + bytes((198, 51, 100, 1, 203, 0, 113, 1)) + opts)
        fix_ipv4_header(head)
        return bytes(head) + rng.randbytes(size)
    tc = rng.choice([0, 1, 2, 3, 0xb8])
    return (bytes((0x60 | tc >> 4, (tc & 0xF) << 4, 0, 0)) + size.to_bytes(2, "big") + b"\x11\x40"
            + bytes(16) + bytes(15) + b"\x01" + rng.randbytes(size))


class _Stream:
    """A deterministic os.urandom: both paths draw CBC IVs from it in packet order."""

    def __init__(self):
        self.counter = 0

    def __call__(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            self.counter += 1
            out += hashlib.sha256(self.counter.to_bytes(8, "big")).digest()[:16]
        return out[:n]


def chunks(items, sizes):
    i = k = 0
    while i < len(items):
        yield items[i:i + sizes[k % len(sizes)]]
        i += sizes[k % len(sizes)]
        k += 1


def verdict(v):
    return (v.reason, type(v)) if isinstance(v, PacketDropped) else v


def run_both(out_cfg, in_cfg, packets, monkeypatch, *, sizes=(64, 37, 8, 1, 3, 200)):
    """Protect one by one and in batches; then unprotect a damaged mix both ways."""
    single, batch = (SecurityAssociation(out_cfg, now=0.0) for _ in range(2))
    batch.engine.ident = single.engine.ident
    monkeypatch.setattr(os, "urandom", _Stream())
    one = [single.protect(p, now=0.0) for p in packets]
    monkeypatch.setattr(os, "urandom", _Stream())
    many = [w for part in chunks(packets, sizes) for w in batch.protect_batch(part, now=0.0)]
    monkeypatch.undo()
    assert many == one
    assert single.state() == batch.state()
    return one


def damaged(wire: list[bytes], rng: random.Random, out: SecurityAssociation) -> list[bytes]:
    """Valid packets with replays, old ones, forgeries, foreign SPIs, truncations, dummies,
    outer CE marks, fragments and non-ESP packets mixed in."""
    mix = list(wire)
    for _ in range(len(wire) // 3):
        k = rng.randrange(len(wire))
        p = bytearray(wire[k])
        kind = rng.randrange(9)
        if kind == 0:
            p[-1] ^= 1                                 # forged ICV
        elif kind == 1:
            p[len(p) // 2] ^= 0x80                     # forged body
        elif kind == 2:
            p = p[:rng.randrange(len(p))]              # truncated
        elif kind == 3:
            at = (20 if p[0] >> 4 == 4 else 40) + (8 if p[9 if p[0] >> 4 == 4 else 6] == 17 else 0)
            p[at] ^= 0xFF                              # foreign SPI
        elif kind == 4 and p[0] >> 4 == 4:
            p[1] |= 3                                  # outer CE
            fix_ipv4_header(p)
        elif kind == 5 and p[0] >> 4 == 4:
            p[6] |= 0x20                               # a fragment
            fix_ipv4_header(p)
        elif kind == 6:                                # dummy, after the valid ones
            mix.append(out.dummy(rng.randrange(40), now=0.0))
            continue
        elif kind == 7 and p[0] >> 4 == 4:
            p[9] = 6                                   # not ESP
            fix_ipv4_header(p)
        mix.insert(rng.randrange(len(mix)), bytes(p))  # replays and reordering too
    return mix


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "-".join(
    ["v6" if s["outer"] == V6 else "v4"] + (["udp"] if s.get("encap") else []) + (["esn"] if s.get("esn") else [])))
@pytest.mark.parametrize("proposal", PROPOSALS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_batch_path_equals_one_by_one(backend, proposal, shape, monkeypatch):
    out_cfg, in_cfg = configs(proposal, backend=backend, **shape)
    rng = random.Random(f"{backend}{proposal}{shape}")
    packets = [inner(rng, i) for i in range(150)]
    wire = run_both(out_cfg, in_cfg, packets, monkeypatch)
    out = SecurityAssociation(out_cfg, now=0.0)
    out.seq = len(wire)
    mix = damaged(wire, rng, out)
    single, batch = (SecurityAssociation(in_cfg, now=0.0) for _ in range(2))
    if batch.engine._fast_unprotect is not None:
        assert batch.engine._fast_unprotect.__qualname__ in ("_Bulk.unprotect_batch",) or (
            backend == "aesni" and "gcm" in proposal or "chacha" in proposal)
    one = [verdict(v) for v in _each(single, mix)]
    many = [verdict(v) for part in chunks(mix, (64, 9, 1, 2, 100)) for v in batch.unprotect_batch(part, now=0.0)]
    assert many == one
    assert single.state() == batch.state()
    assert sum(isinstance(v, bytes) for v in one) >= len(wire) // 3     # not all dropped


def _each(sa, packets):
    for p in packets:
        try:
            yield sa.unprotect(p, now=0.0)
        except PacketDropped as drop:
            yield drop


@pytest.mark.parametrize("backend", BACKENDS)
def test_bulk_takes_the_batches(backend):
    """The SAs above really run on the buffer path (not on a fallback that would pass trivially)."""
    for proposal in ("aes128-sha256", "aes128gcm16-esn"):
        out_cfg, in_cfg = configs(proposal, backend=backend)
        for cfg in (out_cfg, in_cfg):
            sa = SecurityAssociation(cfg, now=0.0)
            fn = sa.engine._fast_protect if cfg.direction == Direction.OUT else sa.engine._fast_unprotect
            assert fn.__module__ == "ipsec_core.dataplane.esp.bulk"


def test_packet_batch_round_trip():
    packets = [os.urandom(n) for n in (0, 1, 64, 1400, 3)]
    batch = PacketBatch.from_packets(packets, headroom=52, tailroom=50)
    assert batch.packets() == packets and len(batch) == 5
    offs = batch.offsets.tolist()
    for i, o in enumerate(offs):
        assert batch.buf[o - 52:o] == bytes(52)        # its own headroom, untouched by others
        end = o + len(packets[i])
        assert batch.buf[end:end + 50] == bytes(50)
    assert PacketBatch.from_packets([]).packets() == []


@pytest.mark.parametrize("size", [32, 64, 1024])
def test_window_advance_equals_updates(size):
    """One shift of the bitmap over a batch equals one update per sequence number."""
    import numpy as np

    from ipsec_core.dataplane.esp.bulk import _advance
    from ipsec_core.dataplane.replay import ReplayWindow

    rng = random.Random(size)
    for _ in range(200):
        one, many = ReplayWindow(size), ReplayWindow(size)
        start = rng.randrange(1, 5000)
        for w in (one, many):
            w.update(start)
        top = one.top
        seqs = sorted(rng.sample(range(top + 1, top + rng.choice([3, 40, 3 * size])),
                                 rng.randrange(1, 3)))
        if rng.random() < 0.5:
            seqs = list(range(top + rng.randrange(1, 50), top + 50 + rng.randrange(1, 300)))
        for s in seqs:
            one.update(s)
        _advance(many, np.array(seqs, np.int64))
        assert one.snapshot() == many.snapshot()


AEADS = ["aes128gcm16", "aes256gcm12", "chacha20poly1305", "aes128-sha256"]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "-".join(
    ["v6" if s["outer"] == V6 else "v4"] + (["udp"] if s.get("encap") else []) + (["esn"] if s.get("esn") else [])))
@pytest.mark.parametrize("proposal", AEADS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_packet_batch_calls_equal_one_by_one(backend, proposal, shape, monkeypatch):
    """protect_packets / unprotect_packets (a PacketBatch in and out, ESP framed in place where
    the backend frames batches) end exactly as one-by-one protect / unprotect: the same bytes,
    the accepted packets in order, the drops with their reasons, the same state."""
    out_cfg, in_cfg = configs(proposal, backend=backend, **shape)
    rng = random.Random(f"pb{backend}{proposal}{shape}")
    packets = [inner(rng, i) for i in range(150)]
    single, batched = (SecurityAssociation(out_cfg, now=0.0) for _ in range(2))
    batched.engine.ident = single.engine.ident
    monkeypatch.setattr(os, "urandom", _Stream())
    one = [single.protect(p, now=0.0) for p in packets]
    monkeypatch.setattr(os, "urandom", _Stream())
    many = []
    for k, part in enumerate(chunks(packets, (64, 37, 8, 41))):
        room = (64, 32) if k % 2 == 0 else (3, 0)          # too little room: a new buffer
        src = PacketBatch.from_packets(part, headroom=room[0], tailroom=room[1])
        res = batched.protect_packets(src, now=0.0)
        if room[0] == 64 and backend == "ipsecmb" and ("gcm" in proposal or "chacha" in proposal):
            assert res.buf is src.buf                     # framed in place
        many += res.packets()
    monkeypatch.undo()
    assert many == one
    assert single.state() == batched.state()
    out = SecurityAssociation(out_cfg, now=0.0)
    out.seq = len(one)
    mix = damaged(one, rng, out)
    ref, sa = (SecurityAssociation(in_cfg, now=0.0) for _ in range(2))
    expect = list(_each(ref, mix))
    got_inner, got_drops = [], []
    for part in chunks(mix, (64, 9, 100)):
        inners, drops = sa.unprotect_packets(PacketBatch.from_packets(part), now=0.0)
        got_inner += inners.packets()
        got_drops += drops
    assert got_inner == [v for v in expect if isinstance(v, bytes)]
    assert [d.reason for d in got_drops] == [v.reason for v in expect if isinstance(v, PacketDropped)]
    assert ref.state() == sa.state()
    assert ref.stats.drops == sa.stats.drops


def test_packet_batch_calls_check_inbound_selectors():
    """unprotect_packets applies the SA's traffic selectors as unprotect_batch does."""
    from ipsec_core.dataplane.spd import TrafficSelector, TrafficSelectors
    out_cfg, in_cfg = configs("aes128gcm16", backend=BACKENDS[0] if BACKENDS else None)
    rng = random.Random(5)
    packets = [inner(rng, i) for i in range(40)]
    packets = [p for p in packets if p[0] >> 4 == 4]
    wire = SecurityAssociation(out_cfg, now=0.0).protect_batch(packets, now=0.0)
    import dataclasses
    sel = TrafficSelectors(local=[TrafficSelector.of("203.0.113.0/24")],
                           remote=[TrafficSelector.of("198.51.100.0/31")])
    in_cfg = dataclasses.replace(in_cfg, selectors=sel)
    a, b = (SecurityAssociation(in_cfg, now=0.0) for _ in range(2))
    ref = a.unprotect_batch(wire, now=0.0)
    inners, drops = b.unprotect_packets(PacketBatch.from_packets(wire), now=0.0)
    assert inners.packets() == [v for v in ref if isinstance(v, bytes)]
    assert len(drops) == sum(isinstance(v, PacketDropped) for v in ref)
    assert a.stats.drops == b.stats.drops


@pytest.mark.parametrize("proposal", ["aes128gcm16", "chacha20poly1305", "aes128-sha256"])
@pytest.mark.parametrize("shape", [dict(outer=V4, encap=(4500, 4500)), dict(outer=V4, encap=(4500, 4500), esn=True),
                                   dict(outer=V6, encap=(4500, 4500))], ids=["v4", "v4-esn", "v6"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_esp_only_calls_equal_one_by_one(backend, proposal, shape, monkeypatch):
    """protect_packets / unprotect_packets with esp_only (ESP alone, SPI first, as a UDP socket
    sends and receives it) give the one-by-one results without their outer IP and UDP
    headers; laid out one ESP packet apart, the results lie back to back in the buffer."""
    out_cfg, in_cfg = configs(proposal, backend=backend, **shape)
    strip = (40 if shape["outer"] == V6 else 20) + 8
    rng = random.Random(f"bare{backend}{proposal}{shape}")
    packets = [inner(rng, i) for i in range(120)]
    single, batched = (SecurityAssociation(out_cfg, now=0.0) for _ in range(2))
    batched.engine.ident = single.engine.ident
    monkeypatch.setattr(os, "urandom", _Stream())
    one = [single.protect(p, now=0.0)[strip:] for p in packets]
    monkeypatch.setattr(os, "urandom", _Stream())
    many = []
    for part in chunks(packets, (64, 33, 23)):
        res = batched.protect_packets(PacketBatch.from_packets(part, headroom=24, tailroom=32),
                                      now=0.0, esp_only=True)
        many += res.packets()
    monkeypatch.undo()
    assert many == one
    assert single.state() == batched.state()
    # equal-size packets one ESP packet apart: the results are contiguous (one GSO send)
    same = [packets[0][:20] + bytes(1380)] * 10
    same = [bytes((0x45, 0)) + (1400).to_bytes(2, "big") + s[4:] for s in same]
    wire_len = len(single.protect(same[0], now=0.0)) - strip
    stride = wire_len
    head = 8 + batched.engine.iv_bytes
    buf = bytearray(stride * len(same))
    for k, p in enumerate(same):
        buf[k * stride + head:k * stride + head + len(p)] = p
    offs = np.arange(len(same), dtype=np.int64) * stride + head
    res = batched.protect_packets(PacketBatch(buf, offs, np.full(len(same), 1400, np.int64), head,
                                              stride - 1400 - head), now=0.0, esp_only=True)
    assert batched.frames_batches == (backend == "ipsecmb" and shape["outer"] == V4
                                      and not ("sha" in proposal and shape.get("esn")))
    if batched.frames_batches:
        assert res.buf is buf and res.offsets.tolist() == list(range(0, stride * len(same), stride))
        assert res.lengths.tolist() == [stride] * len(same)
    # inbound: the damaged mix without outer headers
    out = SecurityAssociation(out_cfg, now=0.0)
    out.seq = single.seq
    full = [single.engine.received_header(0)[:0] + w for w in one]
    mix = [m[strip:] if len(m) > strip else m for m in damaged([bytes(strip) + w for w in full], rng, out)]
    ref, sa = (SecurityAssociation(in_cfg, now=0.0) for _ in range(2))
    expect = [v for v in _each(ref, [ref.engine.received_header(len(m)) + m for m in mix])]
    got_inner, got_drops = [], []
    for part in chunks(mix, (64, 9, 100)):
        inners, drops = sa.unprotect_packets(PacketBatch.from_packets(part), now=0.0, esp_only=True)
        got_inner += inners.packets()
        got_drops += drops
    assert got_inner == [v for v in expect if isinstance(v, bytes)]
    assert [d.reason for d in got_drops] == [v.reason for v in expect if isinstance(v, PacketDropped)]
    assert ref.state() == sa.state()
    assert sum(isinstance(v, bytes) for v in expect) >= len(one) // 3


def _tcp(rng, size, *, partial):
    """An IPv4 TCP packet with `size` payload bytes; its checksum complete, or (partial) the
    pseudo-header sum only, as a TSO / checksum-offload read leaves it."""
    from ipsec_core.wire.ip import checksum
    src, dst = bytes((198, 51, 100, 1)), bytes((203, 0, 113, 1))
    tcp = bytearray(rng.randbytes(20) + rng.randbytes(size))
    tcp[12] = 5 << 4
    tcp[16:18] = b"\0\0"
    pseudo = src + dst + bytes((0, 6)) + len(tcp).to_bytes(2, "big")
    if partial:
        s = sum(int.from_bytes(pseudo[k:k + 2], "big") for k in range(0, 12, 2))
        while s >> 16:
            s = (s & 0xFFFF) + (s >> 16)
        tcp[16:18] = s.to_bytes(2, "big")
    else:
        tcp[16:18] = checksum(pseudo + bytes(tcp)).to_bytes(2, "big")
    head = bytearray(bytes((0x45, 0)) + (20 + len(tcp)).to_bytes(2, "big") + b"\0\1\x40\0\x40\x06\0\0" + src + dst)
    fix_ipv4_header(head)
    return bytes(head) + bytes(tcp)


@pytest.mark.parametrize("proposal", ["aes128gcm16", "aes128-sha256"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_inner_checksum_offload(backend, proposal):
    """protect_packets(inner_csum=...) completes each TCP checksum (odd lengths too) before
    protecting: the peer decrypts packets whose checksums verify, on every path."""
    out_cfg, in_cfg = configs(proposal, backend=backend, encap=(4500, 4500))
    sizes = [0, 1, 7, 1360, 1361, 1400, 33] * 3
    whole = [_tcp(random.Random(k), n, partial=False) for k, n in enumerate(sizes)]
    partial = [_tcp(random.Random(k), n, partial=True) for k, n in enumerate(sizes)]
    assert whole != partial
    out = SecurityAssociation(out_cfg, now=0.0)
    res = out.protect_packets(PacketBatch.from_packets(partial, headroom=16, tailroom=32), now=0.0,
                              esp_only=True, inner_csum=(20, 16))
    inb = SecurityAssociation(in_cfg, now=0.0)
    inners, drops = inb.unprotect_packets(res, now=0.0, esp_only=True)
    assert not drops and inners.packets() == whole


@pytest.mark.parametrize("backend", BACKENDS)
def test_unprotect_packets_of_packets_the_engine_decides(backend):
    """A PacketBatch whose packets all go to the engine (foreign, replayed) gives their drops,
    and one with a good packet after them gives it (a case the fuzz target found)."""
    out_cfg, in_cfg = configs("aes128gcm16", backend=backend)
    out = SecurityAssociation(out_cfg, now=0.0)
    wire = out.protect_batch([inner(random.Random(1), i) for i in range(3)], now=0.0)
    sa = SecurityAssociation(in_cfg, now=0.0)
    inners, drops = sa.unprotect_packets(PacketBatch.from_packets([b"\x45" + bytes(40)]), now=0.0)
    assert len(inners) == 0 and len(drops) == 1
    inners, drops = sa.unprotect_packets(PacketBatch.from_packets(wire[:1]), now=0.0)
    assert len(inners) == 1 and not drops
    inners, drops = sa.unprotect_packets(PacketBatch.from_packets([wire[0]]), now=0.0)    # replay
    assert len(inners) == 0 and [d.reason.value for d in drops] == ["replay"]
    inners, drops = sa.unprotect_packets(PacketBatch.from_packets([wire[0], wire[1]]), now=0.0)
    assert len(inners) == 1 and [d.reason.value for d in drops] == ["replay"]


@pytest.mark.skipif("ipsecmb" not in BACKENDS, reason="the ipsecmb extension is not built here")
def test_frames_batches_per_direction():
    """frames_batches says whether this SA's own direction runs on the buffer: an outbound SA
    with TFC padding (which the batch path does not write) does not, its inbound peer does."""
    import dataclasses
    out_cfg, in_cfg = configs("aes128gcm16", backend="ipsecmb")
    assert SecurityAssociation(out_cfg, now=0.0).frames_batches
    assert SecurityAssociation(in_cfg, now=0.0).frames_batches
    padded = SecurityAssociation(dataclasses.replace(out_cfg, tfc_padding=300), now=0.0)
    assert not padded.frames_batches
    batch = PacketBatch.from_packets([inner(random.Random(2), 0)], headroom=64, tailroom=32)
    res = padded.protect_packets(batch, now=0.0)
    assert res.buf is not batch.buf and len(res.packet(0)) > 300           # padded, by the engine


@pytest.mark.skipif("ipsecmb" not in BACKENDS, reason="the ipsecmb extension is not built here")
def test_a_failed_fused_call_never_reuses_its_sequence_numbers(monkeypatch):
    """If the backend's fused call fails part way (the library refusing a job), the sequence
    numbers (the IVs and nonces of AES-GCM and AES-CTR) it was given are burnt, not handed out
    again with other plaintext."""
    out_cfg, _ = configs("aes128ctr-sha256", backend="ipsecmb")
    sa = SecurityAssociation(out_cfg, now=0.0)
    bulk = sa.engine._bulk_protect
    assert bulk.fused

    class Failing:
        def __getattr__(self, name):
            return getattr(real, name)

        def esp_protect_into(self, *args):
            raise RuntimeError("intel-ipsec-mb refused a job of the batch")

    real = bulk.crypto
    monkeypatch.setattr(bulk, "crypto", Failing())
    batch = PacketBatch.from_packets([inner(random.Random(4), i) for i in range(5)], headroom=64, tailroom=32)
    with pytest.raises(RuntimeError):
        sa.protect_packets(batch, now=0.0)
    assert sa.seq == 5
    monkeypatch.undo()
    res = sa.protect_packets(PacketBatch.from_packets([inner(random.Random(5), 0)], headroom=64, tailroom=32),
                             now=0.0)
    assert int.from_bytes(res.packet(0)[24:28], "big") == 6                  # the next number

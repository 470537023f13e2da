"""Whole ESP packets on the device (`ipsec_plugins.gpu.framing`, kernels esp_seal / esp_open),
checked on the CPU build of the kernel source against one-by-one processing on a software
backend (`SecurityAssociation.protect` / `unprotect`): byte for byte on the way out, verdict for
verdict on the way in, and the SA state (sequence numbers, replay window, counters) after both,
for every proposal the gpu backend offers, with and without ESN, tunnel mode over IPv4 and IPv6
and transport mode, IPv4 and IPv6 inside, several SAs in one launch, and forged, truncated,
replayed and badly padded packets of sizes up to 9000 bytes.  SAs on the gpu backend take the
framing through their own `protect_batch` / `unprotect_batch` (`GpuAead` is the core's
`FramingAead`); `framing.protect_batches` / `unprotect_batches` put several SAs into one
launch.  One launch per batch is checked by counting the CPU build's launches per kernel.
"""
from __future__ import annotations

import ipaddress
import os
import random
import shutil

import pytest

np = pytest.importorskip("numpy", reason="the gpu backend stages batches with numpy")

from ipsec_core.cli.backends import algorithms_of  # noqa: E402
from ipsec_core.crypto.base import BatchAead, FramingAead  # noqa: E402
from ipsec_core.crypto.registry import Registry  # noqa: E402
from ipsec_core.dataplane.batch import PacketBatch  # noqa: E402
from ipsec_core.dataplane.sa import DfBit, Direction, Lifetime, Mode, SaConfig, SecurityAssociation  # noqa: E402
from ipsec_core.errors import DropReason, PacketDropped  # noqa: E402
from ipsec_core.transforms.keywords import parse_esp  # noqa: E402
from ipsec_core.wire.ip import IPPROTO_UDP, build_ipv4, build_ipv6, fix_ipv4_header  # noqa: E402
from ipsec_plugins.gpu import GpuBackend, framing  # noqa: E402

V4 = (ipaddress.ip_address("192.0.2.1"), ipaddress.ip_address("192.0.2.2"))
V6 = (ipaddress.ip_address("2001:db8::1"), ipaddress.ip_address("2001:db8::2"))


@pytest.fixture(scope="module")
def launcher():
    if shutil.which(os.environ.get("CXX", "g++")) is None:
        pytest.skip("the CPU build of the GPU kernels needs g++ with C++20")
    from ipsec_plugins.gpu.cpu_launcher import CpuLauncher

    return CpuLauncher(target_threads=256, max_block=64)


@pytest.fixture(scope="module")
def registry(launcher):
    reg = Registry(load_entry_points=False)
    reg.records.pop("gpu", None)
    record = reg.add(GpuBackend(launcher=launcher), plugin="tests")
    assert record.available and not record.failed, record.failed
    return reg


@pytest.fixture(scope="module")
def oracle(registry):
    for name in ("aesni", "cryptodome", "reference"):
        if name in registry.records and registry.records[name].available:
            return name
    pytest.skip("no software backend to compare with")


def _configs(proposal, *, backend, outer=V4, mode="tunnel", window=64, **extra):
    prop = parse_esp(proposal)
    common = dict(spi=0x5E5E0001, mode=Mode(mode), proposal=prop, enc_key=os.urandom(prop.enc_key_bytes),
                  backend=backend, replay_window=window, **extra)
    return (SaConfig(name="o", direction=Direction.OUT, local=outer[0], remote=outer[1], **common),
            SaConfig(name="i", direction=Direction.IN, local=outer[1], remote=outer[0], **common))


def _rebackend(cfg, name, **changes):
    return cfg.__class__(**{**{f: getattr(cfg, f) for f in cfg.__dataclass_fields__}, "backend": name,
                            **changes})


def _packet(rng, size: int, *, v6: bool, i: int = 0) -> bytes:
    """A UDP packet of `size` bytes in all (at least 28 / 48)."""
    head = 48 if v6 else 28
    body = rng.randbytes(max(size, head) - head)
    udp = (1000 + i % 60000).to_bytes(2, "big") + b"\x00\x35" + (8 + len(body)).to_bytes(2, "big") + b"\0\0"
    if v6:
        return build_ipv6(src=bytes(15) + b"\x01", dst=bytes(15) + b"\x02", next_header=IPPROTO_UDP,
                          payload_len=8 + len(body), traffic_class=rng.choice((0, 0x2e, 0xb9))) + udp + body
    return build_ipv4(src=bytes((198, 51, 100, 1)), dst=bytes((203, 0, 113, 1)), proto=IPPROTO_UDP,
                      payload_len=8 + len(body), tos=rng.choice((0, 0x10, 0xb8, 0x03)), ident=i,
                      flags_frag=rng.choice((0, 0x4000))) + udp + body


def _traffic(rng, n, *, max_size=1500, v4_share=0.6):
    return [_packet(rng, rng.randrange(28, max_size), v6=rng.random() >= v4_share, i=i) for i in range(n)]


def _pair(registry, oracle, proposal, **kw):
    """(gpu outbound, oracle outbound, gpu inbound, oracle inbound), same keys; the IPv4
    identification counters start equal."""
    out_cfg, in_cfg = _configs(proposal, backend="gpu", **kw)
    ours = SecurityAssociation(out_cfg, registry=registry, now=0.0)
    theirs = SecurityAssociation(_rebackend(out_cfg, oracle), registry=registry, now=0.0)
    theirs.engine.ident = ours.engine.ident
    return (ours, theirs, SecurityAssociation(in_cfg, registry=registry, now=0.0),
            SecurityAssociation(_rebackend(in_cfg, oracle), registry=registry, now=0.0))


def _one_by_one(sa, packets, now=0.0):
    out = []
    for p in packets:
        try:
            out.append(sa.unprotect(p, now=now))
        except PacketDropped as drop:
            out.append(drop.reason)
    return out


def _reasons(verdicts):
    return [v.reason if isinstance(v, PacketDropped) else v for v in verdicts]


def _launches(launcher):
    return dict(launcher.launches)


def _delta(before, after):
    return {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}


def test_gpu_framing_covers_every_proposal_the_backend_offers(registry):
    offered = algorithms_of(registry.records["gpu"])
    assert set(offered) == {p.split("-")[0] for p in PROPOSALS}


PROPOSALS = ["aes128gcm16", "aes256gcm16", "aes128gmac", "aes256gmac",
             "aes128gcm16-esn", "aes256gcm16-esn", "aes128gmac-esn", "aes256gmac-esn"]
LAYOUTS = [("tunnel", V4), ("tunnel", V6), ("transport", V4)]


@pytest.mark.parametrize("mode,outer", LAYOUTS, ids=["tunnel4", "tunnel6", "transport"])
@pytest.mark.parametrize("proposal", PROPOSALS)
def test_gpu_framing_matches_one_by_one(registry, oracle, launcher, proposal, mode, outer):
    rng = random.Random(f"{proposal}{mode}{outer[0]}")
    ours, theirs, inbound, reference = _pair(registry, oracle, proposal, mode=mode, outer=outer)
    packets = _traffic(rng, 24)
    assert ours.engine._framing is ours.engine.aead and inbound.engine._framing is inbound.engine.aead
    before = _launches(launcher)
    wire = ours.protect_batch(packets, now=0.0)
    assert _delta(before, _launches(launcher)) == {"esp_seal": 1}
    assert wire == [theirs.protect(p, now=0.0) for p in packets]
    assert ours.state() == theirs.state() and ours.engine.ident == theirs.engine.ident
    wire.insert(5, wire[3])                                           # a replay inside the batch
    before = _launches(launcher)
    opened = inbound.unprotect_batch(wire, now=0.0)
    assert _delta(before, _launches(launcher)) == {"esp_open": 1}
    assert _reasons(opened) == _one_by_one(reference, wire)
    assert opened[5].reason is DropReason.REPLAY and inbound.state() == reference.state()


@pytest.mark.parametrize("df_bit", [DfBit.SET, DfBit.CLEAR], ids=lambda d: f"gpu-df-{d.value}")
def test_gpu_framing_outer_header_policy(registry, oracle, launcher, df_bit):
    ours, theirs, _, _ = _pair(registry, oracle, "aes128gcm16", df_bit=df_bit, outer_ttl=17)
    packets = _traffic(random.Random(3), 12)
    assert ours.protect_batch(packets, now=0.0) == [theirs.protect(p, now=0.0) for p in packets]


def test_gpu_framing_mixed_sas_in_one_launch(registry, oracle, launcher):
    rng = random.Random(9)
    setups = [("aes128gcm16", dict(mode="tunnel", outer=V4)), ("aes256gmac-esn", dict(mode="tunnel", outer=V6)),
              ("aes256gcm16", dict(mode="transport")), ("aes128gcm16-esn", dict(mode="tunnel", outer=V4))]
    pairs = [_pair(registry, oracle, p, **kw) for p, kw in setups]
    batches = [_traffic(rng, rng.randrange(3, 12)) for _ in pairs]
    before = _launches(launcher)
    wires = framing.protect_batches([(p[0], b) for p, b in zip(pairs, batches)], now=0.0)
    assert _delta(before, _launches(launcher)) == {"esp_seal": 1}
    for p, b, w in zip(pairs, batches, wires):
        assert w == [p[1].protect(x, now=0.0) for x in b] and p[0].state() == p[1].state()
    wires[1][2] = wires[1][2][:-1] + bytes([wires[1][2][-1] ^ 0x80])  # a forged ICV in one SA
    before = _launches(launcher)
    opened = framing.unprotect_batches([(p[2], w) for p, w in zip(pairs, wires)], now=0.0)
    assert _delta(before, _launches(launcher)) == {"esp_open": 1}
    for p, w, o in zip(pairs, wires, opened):
        assert _reasons(o) == _one_by_one(p[3], w) and p[2].state() == p[3].state()
    assert opened[1][2].reason is DropReason.AUTH_FAILED


def _forge(packet: bytes, at: int, bit: int = 1) -> bytes:
    b = bytearray(packet)
    b[at] ^= bit
    return bytes(b)


def _cut(packet: bytes, keep: int) -> bytes:
    """The first `keep` bytes of an IPv4 packet, its header made consistent again."""
    head = bytearray(packet[:20])
    head[2:4] = keep.to_bytes(2, "big")
    fix_ipv4_header(head)
    return bytes(head) + packet[20:keep]


SIZES = sorted({*range(28, 100), *range(100, 8900, 89), *range(8900, 8944)})


@pytest.mark.parametrize("proposal", ["aes128gcm16", "aes256gmac-esn"])
def test_gpu_framing_forged_truncated_and_replayed_at_every_size(registry, oracle, launcher, proposal):
    """Inner packets of sizes from 28 to 8943 bytes (ESP packets up to 9000 bytes), each intact
    or forged (ICV, ciphertext, SPI, sequence number), truncated (below and above the smallest
    ESP), or replayed; one batch each way, verdicts and state as one by one."""
    rng = random.Random(proposal)
    ours, theirs, inbound, reference = _pair(registry, oracle, proposal, window=128)
    packets = [_packet(rng, size, v6=rng.random() < 0.3, i=i) for i, size in enumerate(SIZES)]
    wire = ours.protect_batch(packets, now=0.0)
    assert wire == [theirs.protect(p, now=0.0) for p in packets]
    assert max(map(len, wire)) <= 9000 and min(map(len, wire)) < 100
    stream = []
    for w in wire:
        r = rng.random()
        if r < 0.1:
            stream.append(_forge(w, len(w) - 1 - rng.randrange(16)))            # ICV
        elif r < 0.2:
            stream.append(_forge(w, rng.randrange(36, len(w) - 16), 0x20))     # ciphertext / payload
        elif r < 0.25:
            stream.append(_forge(w, 20 + rng.randrange(4)))                    # SPI
        elif r < 0.3:
            stream.append(_forge(w, 24 + rng.randrange(4)))                    # sequence number
        elif r < 0.35:
            stream.append(_cut(w, rng.randrange(20, 56)))                      # shorter than any ESP
        elif r < 0.45:
            stream.append(_cut(w, rng.randrange(56, len(w))))                  # cut inside
        elif r < 0.5:
            stream.append(w)
            stream.append(w)                                                   # replayed
            continue
        stream.append(w)
    expect = _one_by_one(reference, stream)
    before = _launches(launcher)
    got = _reasons(inbound.unprotect_batch(stream, now=0.0))
    assert _delta(before, _launches(launcher)) == {"esp_open": 1}
    assert got == expect
    assert inbound.state() == reference.state()
    reasons = {v for v in got if isinstance(v, DropReason)}
    assert {DropReason.AUTH_FAILED, DropReason.TRUNCATED, DropReason.UNKNOWN_SPI, DropReason.REPLAY} <= reasons
    assert sum(isinstance(v, bytes) for v in got) == len(wire)


def _craft(sa, plaintext: bytes, seq: int) -> bytes:
    """A tunnel-mode ESP packet of `sa` (outbound, AEAD) around `plaintext` as given: any
    padding and trailer, with a valid ICV."""
    e = sa.engine
    iv = seq.to_bytes(8, "big")
    header = e.spi_bytes + (seq & 0xFFFFFFFF).to_bytes(4, "big")
    aad = e.spi_bytes + seq.to_bytes(8, "big") if e.esn else header
    esp = header + iv + e.aead.encrypt(e.salt + iv, plaintext, aad)
    return build_ipv4(src=e.src, dst=e.dst, proto=50, payload_len=len(esp)) + esp


def test_gpu_framing_padding_trailer_and_dummy_verdicts(registry, oracle, launcher):
    ours, theirs, inbound, reference = _pair(registry, oracle, "aes128gcm16")
    inner = _packet(random.Random(1), 100, v6=False)
    cases = [
        inner + bytes((1, 2, 2, 4)),                 # pad length 2, nh 4: fine
        inner + bytes((1, 3, 2, 4)),                 # a wrong padding byte
        inner + bytes((1, 2, 9, 4)),                 # pad length past the padding
        inner + bytes((200, 4)),                     # pad length 200 over payload bytes
        bytes((1, 250, 4)),                          # pad length past the whole body
        inner + bytes((0, 99)),                      # next header 99 in tunnel mode
        os.urandom(40) + bytes((0, 59)),             # dummy packet
        inner[:-6] + bytes((1, 2, 3, 4, 5, 6, 6, 4)),  # the longest pad of a 4-byte block and more
        inner + bytes(range(1, 256)) + bytes((255, 4)),  # 255 bytes of padding: valid
    ]
    wire = [_craft(theirs, pt, seq) for seq, pt in enumerate(cases, start=1)]
    before = _launches(launcher)
    got = _reasons(inbound.unprotect_batch(wire, now=0.0))
    assert _delta(before, _launches(launcher)) == {"esp_open": 1}
    assert got == _one_by_one(reference, wire)
    assert {DropReason.BAD_PADDING, DropReason.BAD_NEXT_HEADER, DropReason.DUMMY} <= set(got)
    assert inbound.state() == reference.state()


def test_gpu_framing_esn_estimate_moving_inside_a_batch(registry, oracle, launcher):
    """ESN around 2^32: the high half of a packet's sequence number depends on the window,
    which moves inside the batch; packets whose estimate moved take the engine's path."""
    ours, theirs, inbound, reference = _pair(registry, oracle, "aes128gcm16-esn", window=32)
    ours.seq = theirs.seq = (1 << 32) - 40
    packets = _traffic(random.Random(4), 80, max_size=200)
    wire = ours.protect_batch(packets, now=0.0)
    assert wire == [theirs.protect(p, now=0.0) for p in packets]
    early, late = wire[:20], wire[20:]
    shuffled = late[:30] + early[10:20] + late[30:]                  # old ones after the wrap
    for sa in (inbound, reference):
        sa.replay.top = (1 << 32) - 45
    got = _reasons(inbound.unprotect_batch(shuffled, now=0.0))
    assert got == _one_by_one(reference, shuffled) and inbound.state() == reference.state()


def test_gpu_framing_batches_at_an_edge_go_the_exact_way(registry, oracle, launcher):
    """A hard lifetime reached inside the batch, a sequence number space that runs out, and a
    transport-mode fragment: the batch leaves the device framing and ends exactly as one by one
    (the same packets, the same error with the packets before it), through the SAs' own
    protect_batch: framing declines the batch and the AEAD kernel seals what one by one would."""
    rng = random.Random(6)
    packets = _traffic(rng, 10)
    for changes, setup in ((dict(hard=Lifetime(packets=6)), None),
                           ({}, lambda sa: setattr(sa, "seq", 0xFFFFFFFF - 4))):
        out_cfg, _ = _configs("aes128gcm16", backend="gpu", **changes)
        ours = SecurityAssociation(out_cfg, registry=registry, now=0.0)
        theirs = SecurityAssociation(_rebackend(out_cfg, oracle), registry=registry, now=0.0)
        theirs.engine.ident = ours.engine.ident
        if setup:
            setup(ours)
            setup(theirs)
        before = _launches(launcher)
        with pytest.raises(Exception) as mine:
            ours.protect_batch(packets, now=0.0)
        assert _delta(before, _launches(launcher)) == {"gcm_batch": 1}
        with pytest.raises(Exception) as ref:
            theirs.protect_batch(packets, now=0.0)
        assert type(mine.value) is type(ref.value) and mine.value.partial == ref.value.partial
        assert ours.state() == theirs.state()
    ours, theirs, _, _ = _pair(registry, oracle, "aes128gcm16", mode="transport")
    v4 = _traffic(rng, 3, v4_share=1.0)
    frag = bytearray(v4[2])
    frag[6] |= 0x20                                                   # more fragments
    fix_ipv4_header(frag)
    with pytest.raises(Exception) as mine:
        ours.protect_batch(v4[:2] + [bytes(frag)], now=0.0)
    with pytest.raises(Exception) as ref:
        theirs.protect_batch(v4[:2] + [bytes(frag)], now=0.0)
    assert type(mine.value) is type(ref.value) and mine.value.partial == ref.value.partial


def test_gpu_framing_takes_the_cores_packet_batch(registry, oracle, launcher):
    ours, theirs, inbound, reference = _pair(registry, oracle, "aes256gcm16")
    packets = _traffic(random.Random(7), 15)
    batch = PacketBatch.from_packets(packets, headroom=56, tailroom=20)
    out = framing.protect_batch(ours, batch, now=0.0, as_batch=True)
    assert isinstance(out, PacketBatch)
    wire = out.packets()
    assert wire == [theirs.protect(p, now=0.0) for p in packets]
    assert framing.unprotect_batch(inbound, PacketBatch.from_packets(wire, headroom=3), now=0.0) == packets


def test_gpu_aead_is_a_batch_aead_of_the_core(registry, oracle):
    """GpuAead implements `BatchAead` (seal_batch / open_batch on one buffer, in place): the
    core's buffer batch path gets one launch per batch; same bytes as the core's loop."""
    from ipsec_core.dataplane.esp.bulk import LoopAead

    key = os.urandom(16)
    ours = registry.records["gpu"].backend.aead("aes-gcm", key, tag_bytes=16, nonce_bytes=12)
    loop = LoopAead(registry.records[oracle].backend.aead("aes-gcm", key, tag_bytes=16, nonce_bytes=12))
    assert isinstance(ours, BatchAead)
    rng = random.Random(8)
    sizes = [rng.randrange(0, 3000) for _ in range(20)]
    offsets = np.cumsum([0] + [s + 16 + 5 for s in sizes[:-1]]).astype(np.int64)
    lengths = np.array(sizes, dtype=np.int64)
    buf = bytearray(rng.randbytes(int(offsets[-1]) + sizes[-1] + 16 + 7))
    nonces, aads = rng.randbytes(12 * 20), rng.randbytes(8 * 20)
    a, b = bytearray(buf), bytearray(buf)
    ours.seal_batch(a, offsets, lengths, nonces, aads)
    loop.seal_batch(b, offsets, lengths, nonces, aads)
    assert a == b
    a[int(offsets[4]) + 3] ^= 1
    b[int(offsets[4]) + 3] ^= 1
    assert ours.open_batch(a, offsets, lengths, nonces, aads) == loop.open_batch(b, offsets, lengths, nonces, aads)
    assert a == b
    with pytest.raises(ValueError, match="outside"):
        ours.seal_batch(bytearray(10), np.array([0]), np.array([5]), nonces[:12], aads[:8])


def test_gpu_framing_inbound_at_a_lifetime_edge_goes_the_exact_way(registry, oracle, launcher):
    ours, theirs, _, _ = _pair(registry, oracle, "aes256gcm16")
    wire = ours.protect_batch(_traffic(random.Random(10), 12), now=0.0)
    _, in_cfg = _configs("aes256gcm16", backend="gpu")
    in_cfg = _rebackend(in_cfg, "gpu", enc_key=ours.config.enc_key, soft=Lifetime(packets=5),
                        hard=Lifetime(packets=9))
    inbound = SecurityAssociation(in_cfg, registry=registry, now=0.0)
    reference = SecurityAssociation(_rebackend(in_cfg, oracle), registry=registry, now=0.0)
    before = _launches(launcher)
    got = _reasons(inbound.unprotect_batch(wire, now=0.0))
    assert _delta(before, _launches(launcher)) == {"gcm_batch": 1}
    assert got == _one_by_one(reference, wire) and inbound.state() == reference.state()
    assert got[-1] is DropReason.SA_EXPIRED and inbound.soft_expired


def test_gpu_framing_is_chosen_once_at_sa_install(registry, oracle, launcher):
    """The engine takes `GpuAead` as its `FramingAead` when the kernels frame the SA, and keeps
    the core's batch path (the AEAD kernel, one launch per batch) when they cannot: UDP
    encapsulation, TFC padding; a software backend is no `FramingAead`; a wiped SA drops it."""
    ours, theirs, inbound, _ = _pair(registry, oracle, "aes128gcm16")
    assert isinstance(ours.engine.aead, FramingAead) and not isinstance(theirs.engine.aead, FramingAead)
    assert ours.engine._framing is ours.engine.aead and theirs.engine._framing is None
    packets = _traffic(random.Random(12), 8)
    for changes, why in ((dict(encap_ports=(4500, 4500)), "UDP encapsulation"), (dict(tfc_padding=300), "TFC")):
        out_cfg, _ = _configs("aes128gcm16", backend="gpu", **changes)
        sa = SecurityAssociation(out_cfg, registry=registry, now=0.0)
        ref = SecurityAssociation(_rebackend(out_cfg, oracle), registry=registry, now=0.0)
        ref.engine.ident = sa.engine.ident
        assert sa.engine._framing is None and why in sa.engine.aead.framing_refusal(sa.engine)
        before = _launches(launcher)
        assert sa.protect_batch(packets, now=0.0) == [ref.protect(p, now=0.0) for p in packets]
        assert _delta(before, _launches(launcher)) == {"gcm_batch": 1}
    inbound.wipe()
    assert inbound.engine._framing is None


@pytest.mark.parametrize("proposal,window,start", [
    ("aes128gcm16", 0, 0), ("aes128gcm16", 32, 0), ("aes256gmac", 1024, 0),
    ("aes128gcm16-esn", 64, (1 << 32) - 30), ("aes256gmac-esn", 32, (1 << 33) - 5)],
    ids=["gpu-w0", "gpu-w32", "gpu-gmac-w1024", "gpu-esn-w64-wrap", "gpu-gmac-esn-w32-wrap"])
def test_gpu_framing_in_order_batches_move_the_window_in_one_step(registry, oracle, launcher, monkeypatch,
                                                                  proposal, window, start):
    """Batches whose sequence numbers rise and start right of the window (with gaps wider than
    the window, forged ICVs, dummies, an ESN high half that changes inside the batch) update the
    window in one step at the end; a batch that opens with the window's top again, or has a
    number left of its predecessor, goes packet by packet.  Verdicts and SA state as one by one, one launch per batch."""
    rng = random.Random(f"{proposal}{window}")
    ours, theirs, inbound, reference = _pair(registry, oracle, proposal, window=window)
    for sa in (ours, theirs):
        sa.seq = start
    for sa in (inbound, reference):
        sa.replay.top = max(start - 3, 0)
    wire = [theirs.protect(p, now=0.0) if i % 11 != 5 else theirs.dummy(40, now=0.0)
            for i, p in enumerate(_traffic(rng, 300, max_size=300))]
    in_order = [w for i, w in enumerate(wire) if not 40 <= i < 40 + window + 7 and rng.random() < 0.8]
    forged = [rng.random() < 0.1 for _ in in_order]
    replayed = next(w for w, f in zip(in_order[-11::-1], forged[-11::-1]) if not f)
    newest = next(w for w, f in zip(in_order[-15::-1], forged[-15::-1]) if not f)    # the window's top
    j = forged[-14:-10].index(False)
    twice = in_order[-14:-13 + j] + in_order[-14 + j:-10]
    in_order = [_forge(w, len(w) - 1) if f else w for w, f in zip(in_order, forged)]
    steps = []
    real = framing._advance
    monkeypatch.setattr(framing, "_advance", lambda replay, seqs: (steps.append(len(seqs)), real(replay, seqs)))
    cut = len(in_order) // 2
    seen = set()
    for part, one_step in ((in_order[:cut], True), (in_order[cut:-14], True),
                           ([newest], False),                                    # the window's top again
                           (twice, False),                                       # one number twice
                           (in_order[-1:-11:-1] + [replayed], False)):       # reversed, then a replay
        steps.clear()
        expect = _one_by_one(reference, part)
        before = _launches(launcher)
        got = _reasons(inbound.unprotect_batch(part, now=0.0))
        assert _delta(before, _launches(launcher)) == {"esp_open": 1}
        assert got == expect and inbound.state() == reference.state()
        assert bool(steps) is one_step
        seen |= {v for v in got if isinstance(v, DropReason)}
    assert {DropReason.AUTH_FAILED, DropReason.DUMMY} <= seen and (DropReason.REPLAY in seen) is (window > 0)

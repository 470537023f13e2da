"""Whole ESP packets on the device: `esp_seal` / `esp_open` of kernels/aes_gcm.cu driven from a
batch in one buffer (`ipsec_core.dataplane.batch.PacketBatch`, or a list of bytes).

Owns: the host half of device framing: which SAs and batches the kernels can frame, the per-SA
public parameters (`sa_params`), the launch layout of a batch (numpy over the whole batch:
version and header checks, payload and output lengths, 16-byte alignment of every packet's
GHASH input, sequence numbers and IPv4 identifications), one launch per batch whatever the
number of SAs in it, and the commit of the SA state afterwards.  `GpuAead` is the core's
`FramingAead` through `unframable` (asked once at SA install), `frame_protect` and
`frame_unprotect` (every batch of an SA on the gpu backend); `protect_batches` /
`unprotect_batches` put batches of several SAs into one launch.
Must not: decide anything differently from `EspEngine.protect` / `unprotect`.  The core's rules
stay the core's: a batch the vector checks do not clear on the way out (a malformed packet, a
lifetime or sequence-number edge inside the batch) is declined whole, before anything changes,
and takes the core's batch path (still one launch of crypto); so is a batch with a lifetime
edge on the way in.  On the way in, a packet the kernel cannot take (foreign, malformed,
extension headers, a sequence number whose ESN estimate moves inside the batch) goes through
`EspEngine.unprotect` in its place, and every packet the kernel opened passes the replay check,
the update, decapsulation (the core's `decapsulate` / `_detransport`) and the counters in
order, exactly as one by one.

Per batch the host does a fixed number of numpy operations and one transfer each way.  A batch
that arrives in order (every sequence number right of the window and above the one before it:
the common case) has its replay window and counters updated in one step at its end; other
batches check and update the window packet by packet.  Decapsulation is still a loop over the
packets in Python (no crypto in it).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Sequence

from ipsec_core.dataplane.batch import PacketBatch, np, slices
from ipsec_core.dataplane.esp.fast import _limits_allow
from ipsec_core.errors import DropReason, PacketDropped
from ipsec_core.transforms.iana import CipherKind
from ipsec_core.wire.ip import IPPROTO_ESP, IPPROTO_NONE, IPV6_EXTENSION_HEADERS
from ipsec_plugins.gpu import source

# Must match ESP_F_* of kernels/aes_gcm.cu.
F_TUNNEL, F_ESN, F_GMAC, F_OUTER_V6, F_DF_SET, F_DF_CLEAR = 1, 2, 4, 8, 16, 32
_PARAMS = struct.Struct("<4s4sIII16s16s12x")
_SEQ32_MAX = 0xFFFFFFFF
_SEQ64_MAX = (1 << 64) - 1
_EXT = np.array(sorted(IPV6_EXTENSION_HEADERS), dtype=np.uint8) if np is not None else None


def sa_params(engine) -> bytes:
    """The public per-SA parameters the kernels read (ESP_P_* of the kernel): SPI, salt, mode,
    ESN, GMAC, outer family, DF policy, TTL, padding block, outer addresses."""
    flags = ((F_TUNNEL if engine.tunnel else 0) | (F_ESN if engine.esn else 0)
             | (F_GMAC if engine.kind is CipherKind.GMAC else 0) | (F_OUTER_V6 if engine.outer_v6 else 0)
             | (F_DF_SET if engine.df_bit == "set" else 0) | (F_DF_CLEAR if engine.df_bit == "clear" else 0))
    return _PARAMS.pack(engine.spi_bytes, engine.salt, flags, engine.ttl, engine.block,
                        engine.src.ljust(16, b"\0"), engine.dst.ljust(16, b"\0"))


def unframable(engine) -> str | None:
    """Why the kernels cannot frame this SA's packets, or None when they can."""
    from ipsec_plugins.gpu.engine import GpuAead

    if not isinstance(engine.aead, GpuAead):
        return "its AEAD is not on the gpu backend"
    if engine.kind not in (CipherKind.AEAD, CipherKind.GMAC) or engine.iv_bytes != 8 or len(engine.salt) != 4:
        return f"{engine.kind.value} with a {engine.iv_bytes}-byte IV is not AES-GCM/GMAC as RFC 4106/4543 frame it"
    if engine.encap:
        return "UDP encapsulation (the IPv6 UDP checksum covers the whole packet)"
    if engine.tfc_pad_to:
        return "TFC padding"
    if engine.tunnel and not engine.src:
        return "tunnel mode without the SA's addresses"
    return None


def _phase(engine) -> int:
    """Bytes from the ESP header to the first 16-byte aligned GHASH input byte, mod 16: the
    ciphertext (GCM), the ESP header (GMAC), or the IV after a 12-byte ESN prefix (GMAC + ESN)."""
    if engine.kind is CipherKind.GMAC:
        return 12 if engine.esn else 0
    return 16


def _bind(engine) -> int:
    """The SA's key slot, with its public parameters written to the device table once."""
    aead = engine.aead
    params = sa_params(engine)
    if aead.esp_params != params:
        aead.engine.launcher.set_params(aead.slot, params)
        aead.esp_params = params
    return aead.slot


def _byte(buf, at):
    """buf[at] as int64, where `at` past the end reads the last byte (callers mask those
    packets out by their lengths): header reads without copying the batch to pad it."""
    return buf[np.minimum(at, len(buf) - 1)].astype(np.int64)


def _be16(buf, at):
    return (_byte(buf, at) << 8) | _byte(buf, at + 1)


def _be32(buf, at):
    return (_be16(buf, at) << 16) | _be16(buf, at + 2)


def _excl_cumsum(sizes):
    out = np.zeros(len(sizes), dtype=np.int64)
    if len(sizes) > 1:
        np.cumsum(sizes[:-1], out=out[1:])
    return out


def _as_batch(packets) -> PacketBatch:
    if isinstance(packets, PacketBatch):
        return packets
    return PacketBatch.from_packets(list(packets))


def _lifetime_clear(sa, n: int, octets: int, now: float) -> bool:
    """True when no lifetime check inside this batch can raise or note anything."""
    if sa.hard_expired:
        return False
    return not sa._has_lifetime or (not sa.lifetime_event_due(now) and _limits_allow(sa, n, octets))


# ----------------------------------------------------------------------------------------------
# outbound
# ----------------------------------------------------------------------------------------------
@dataclass(eq=False)
class SealStaged:
    """One esp_seal launch (arrays from the launcher's `alloc`; see the kernel's comment)."""

    n: int
    inp: "np.ndarray"        # uint8: the inner packets
    in_bytes: int
    in_off: "np.ndarray"     # uint64
    hdr_len: "np.ndarray"    # uint32
    pay_len: "np.ndarray"    # uint32
    out: "np.ndarray"        # uint8: the ESP packets
    out_bytes: int
    out_off: "np.ndarray"    # uint64
    out_len: "np.ndarray"    # int64 (host only)
    seqs: "np.ndarray"       # uint64
    idents: "np.ndarray"     # uint32
    slots: "np.ndarray"      # uint32
    verdicts: "np.ndarray"   # uint8
    ghash_blocks: int


@dataclass(eq=False)
class _SealPlan:
    engine: object
    batch: PacketBatch
    hdr: "np.ndarray"
    pay: "np.ndarray"
    out_len: "np.ndarray"
    key_at: "np.ndarray"     # output byte that must be 16-byte aligned, from the packet start
    seqs: "np.ndarray"
    idents: "np.ndarray"
    octets: int


def _seal_plan(engine, batch: PacketBatch, now: float) -> _SealPlan | None:
    """The layout of one SA's batch, or None when one-by-one processing could differ from a
    vector path somewhere in it (then the whole batch takes the offload path)."""
    sa = engine.sa
    n = len(batch)
    lens = batch.lengths
    octets = int(lens.sum())
    if sa.seq + n > (_SEQ64_MAX if sa.esn else _SEQ32_MAX) or not _lifetime_clear(sa, n, octets, now):
        return None
    if (lens < 20).any():
        return None
    buf = batch.view()
    off = batch.offsets
    b0 = _byte(buf, off)
    version = b0 >> 4
    v4 = version == 4
    ihl = (b0 & 15).astype(np.int64) * 4
    total = _be16(buf, off + 2)
    ok4 = v4 & (lens >= 20) & (ihl >= 20) & (total >= ihl) & (total <= lens)
    if engine.tunnel:
        ok = ok4 | ((version == 6) & (lens >= 40))
        hdr = np.zeros(n, np.int64)
        pay = lens
        ohl = np.full(n, 40 if engine.outer_v6 else 20, np.int64)
    else:
        frag = _be16(buf, off + 6) & 0x3FFF
        ok = (ok4 & (frag == 0)) | ((version == 6) & (lens >= 40) & ~np.isin(_byte(buf, off + 6), _EXT))
        hdr = np.where(v4, ihl, 40)
        pay = np.where(v4, total - ihl, lens - 40)
        ohl = hdr
    if not ok.all():
        return None
    block = engine.block
    body = pay + 2 + (-(pay + 2)) % block
    esp = 16 + body + engine.icv_bytes
    if engine.tunnel:
        length_field = esp if engine.outer_v6 else 20 + esp
    else:
        length_field = np.where(v4, ohl + esp, esp)
    if (length_field > 0xFFFF).any():
        return None
    seqs = sa.seq + 1 + np.arange(n, dtype=np.uint64)
    if engine.tunnel and not engine.outer_v6:
        idents = ((engine.ident + 1 + np.arange(n, dtype=np.int64)) & 0xFFFF).astype(np.uint32)
    else:
        idents = np.zeros(n, np.uint32)
    return _SealPlan(engine, batch, hdr, pay, ohl + esp, ohl + _phase(engine), seqs, idents, octets)


def _stage_seal(alloc, plans: Sequence[_SealPlan]) -> SealStaged:
    n = sum(len(p.batch) for p in plans)
    in_sizes = [len(p.batch.buf) for p in plans]
    in_bytes = sum(in_sizes)
    inp = alloc("seal_in", in_bytes + source.SLACK_BYTES, np.uint8)
    at = 0
    in_off_parts = []
    for p, size in zip(plans, in_sizes):
        inp[at:at + size] = p.batch.view()
        in_off_parts.append(p.batch.offsets + at)
        at += size
    cat = np.concatenate
    out_len = cat([p.out_len for p in plans])
    key_at = cat([p.key_at for p in plans])
    lead = (-key_at) % 16
    span = (lead + out_len + 15) & ~15
    out_off = _excl_cumsum(span) + lead
    out_bytes = int(span.sum())

    def put(name, values, dtype):
        arr = alloc(name, n, dtype)
        arr[:] = values
        return arr

    pay = cat([p.pay for p in plans])
    return SealStaged(
        n=n, inp=inp, in_bytes=in_bytes, in_off=put("seal_in_off", cat(in_off_parts), np.uint64),
        hdr_len=put("seal_hdr", cat([p.hdr for p in plans]), np.uint32),
        pay_len=put("seal_pay", pay, np.uint32),
        out=alloc("seal_out", out_bytes + source.SLACK_BYTES, np.uint8), out_bytes=out_bytes,
        out_off=put("seal_out_off", out_off, np.uint64), out_len=out_len,
        seqs=put("seal_seqs", cat([p.seqs for p in plans]), np.uint64),
        idents=put("seal_idents", cat([p.idents for p in plans]), np.uint32),
        slots=put("seal_slots", cat([np.full(len(p.batch), _bind(p.engine), np.uint32) for p in plans]),
                  np.uint32),
        verdicts=put("seal_verdicts", 0, np.uint8),
        ghash_blocks=int(((pay + 2 + 15) // 16 + 3).sum()))


def _seal(planned: Sequence[_SealPlan], *, now: float, as_batch: bool) -> list:
    """One esp_seal launch over the planned batches (of one or more SAs of one gpu backend),
    then each SA's state committed: sequence number, IPv4 identification, counters, soft
    limit.  Per plan the ESP packets, a list of bytes or with `as_batch` one PacketBatch."""
    gpu = planned[0].engine.aead.engine
    launcher = gpu.launcher
    if any(p.engine.aead.engine.launcher is not launcher for p in planned):
        raise ValueError("one framing launch needs SAs of one gpu backend (one device SA table)")
    with gpu._lock:
        st = _stage_seal(launcher.alloc, planned)
        launcher.run_seal(st, lanes=gpu.lanes)
        if (st.verdicts != source.VERDICT_OK).any():
            i = int(np.argmax(st.verdicts != source.VERDICT_OK))
            raise RuntimeError(f"esp_seal left packet {i} of {st.n} with verdict {int(st.verdicts[i])}: "
                               "launch geometry or transfer bug")
        data = bytearray(st.out[:st.out_bytes]) if as_batch else st.out[:st.out_bytes].tobytes()
    results = []
    first = 0
    for plan in planned:
        n = len(plan.batch)
        offsets = st.out_off[first:first + n].astype(np.int64)
        lengths = st.out_len[first:first + n]
        results.append(PacketBatch(data, offsets, lengths) if as_batch else slices(data, offsets, lengths))
        first += n
        engine, sa = plan.engine, plan.engine.sa
        sa.seq = int(plan.seqs[-1])
        if engine.tunnel and not engine.outer_v6:
            engine.ident = int(plan.idents[-1])
        sa.stats.packets += n
        sa.stats.bytes += plan.octets
        sa.note_soft_limit(now)
    return results


def frame_protect(engine, packets, *, now: float) -> list[bytes] | None:
    """`EspEngine.protect_batch` for an SA the kernels frame (`unframable(engine)` is None), in
    one esp_seal launch; None, with nothing changed, for a batch that one-by-one processing
    could end differently from the vector layout somewhere (the core's path takes it)."""
    batch = _as_batch(packets)
    plan = _seal_plan(engine, batch, now) if len(batch) else None
    return None if plan is None else _seal([plan], now=now, as_batch=False)[0]


def protect_batches(groups: Sequence[tuple[object, object]], *, now: float, as_batch: bool = False) -> list:
    """Protect several SAs' batches, `(sa, packets)` each (packets: a list of bytes or a
    `PacketBatch`), with one esp_seal launch for every batch the device can frame; the ESP
    packets of each, as `sa.protect` would make them one by one: lists of bytes, or with
    `as_batch` one `PacketBatch` each (no object per packet: all share one buffer).  A batch
    the device cannot frame goes through `sa.protect_batch`, before the launch."""
    results: list = [None] * len(groups)
    plans, where = [], []
    for g, (sa, packets) in enumerate(groups):
        batch = _as_batch(packets)
        plan = None
        if len(batch) and unframable(sa.engine) is None:
            plan = _seal_plan(sa.engine, batch, now)
        if plan is None:
            done = sa.protect_batch(batch.packets(), now=now)
            results[g] = PacketBatch.from_packets(done) if as_batch else done
            continue
        plans.append(plan)
        where.append(g)
    if plans:
        for g, out in zip(where, _seal(plans, now=now, as_batch=as_batch)):
            results[g] = out
    return results


def protect_batch(sa, packets, *, now: float, as_batch: bool = False):
    """`sa.protect_batch(packets, now=now)` with the ESP framing on the device (a PacketBatch
    back with `as_batch`)."""
    return protect_batches([(sa, packets)], now=now, as_batch=as_batch)[0]


# ----------------------------------------------------------------------------------------------
# inbound
# ----------------------------------------------------------------------------------------------
@dataclass(eq=False)
class OpenStaged:
    """One esp_open launch (see the kernel's comment)."""

    n: int
    inp: "np.ndarray"        # uint8: the received packets
    in_bytes: int
    in_off: "np.ndarray"     # uint64
    esp_at: "np.ndarray"     # uint32
    esp_len: "np.ndarray"    # uint32
    out: "np.ndarray"        # uint8: decrypted bodies
    out_bytes: int
    out_off: "np.ndarray"    # uint64
    seqs: "np.ndarray"       # uint64
    slots: "np.ndarray"      # uint32
    verdicts: "np.ndarray"   # uint8
    trailers: "np.ndarray"   # uint32: pad length | next header << 8
    ghash_blocks: int


@dataclass(eq=False)
class _OpenPlan:
    engine: object
    batch: PacketBatch
    dev: "np.ndarray"        # indices of the packets the kernel opens
    esp_at: "np.ndarray"     # per packet of the batch
    esp_len: "np.ndarray"
    seq_low: "np.ndarray"
    seqs: "np.ndarray"       # uint64: the estimate the kernel uses (ESN), per packet of the batch


def _estimate(replay, seq_low):
    """ReplayWindow.estimate over an array, from the window as it is now: (the full sequence
    numbers as uint64, where they are valid: > 0)."""
    if not replay.esn:
        return seq_low.astype(np.uint64), seq_low > 0
    w = max(replay.size, 1)
    th, tl = replay.top >> 32, replay.top & 0xFFFFFFFF
    if tl >= w - 1:
        seqh = np.where(seq_low >= tl - w + 1, th, th + 1)
    else:
        seqh = np.where(seq_low >= (tl - w + 1) % (1 << 32), th - 1, th)
    valid = (seqh >= 0) & (seqh <= 0xFFFFFFFF)
    full = (np.clip(seqh, 0, 0xFFFFFFFF).astype(np.uint64) << np.uint64(32)) | seq_low.astype(np.uint64)
    return full, valid & (full > 0)


def _open_plan(engine, batch: PacketBatch, now: float) -> _OpenPlan | None:
    sa = engine.sa
    n = len(batch)
    lens = batch.lengths
    if not _lifetime_clear(sa, n, int(lens.sum()), now):
        return None
    buf = batch.view()
    if not len(buf):
        buf = np.zeros(1, np.uint8)
    off = batch.offsets
    nonempty = lens >= 1
    b0 = np.where(nonempty, _byte(buf, off), 0)
    version = b0 >> 4
    ihl = (b0 & 15).astype(np.int64) * 4
    total = _be16(buf, off + 2)
    ok4 = ((version == 4) & (lens >= 20) & (ihl >= 20) & (total >= ihl) & (total <= lens)
           & ((_be16(buf, off + 6) & 0x3FFF) == 0) & (_byte(buf, off + 9) == IPPROTO_ESP))
    end6 = 40 + _be16(buf, off + 4)
    ok6 = (version == 6) & (lens >= 40) & (end6 <= lens) & (_byte(buf, off + 6) == IPPROTO_ESP)
    esp_at = np.where(ok4, ihl, 40)
    esp_len = np.where(ok4, total - ihl, end6 - 40)
    start = off + esp_at
    spi = np.frombuffer(engine.spi_bytes, np.uint8)
    dev = (ok4 | ok6) & (esp_len >= engine.min_esp)
    for k in range(4):
        dev &= _byte(buf, start + k) == spi[k]
    seq_low = _be32(buf, start + 4)
    seqs, valid = _estimate(sa.replay, seq_low)
    dev &= valid
    return _OpenPlan(engine, batch, np.flatnonzero(dev), esp_at, esp_len, seq_low, seqs)


def _stage_open(alloc, plans: Sequence[_OpenPlan]) -> OpenStaged:
    in_sizes = [len(p.batch.buf) for p in plans]
    in_bytes = sum(in_sizes)
    inp = alloc("open_in", in_bytes + source.SLACK_BYTES, np.uint8)
    at = 0
    offs, esp_at, esp_len, seqs, slots = [], [], [], [], []
    for p, size in zip(plans, in_sizes):
        inp[at:at + size] = p.batch.view()
        d = p.dev
        offs.append(p.batch.offsets[d] + at)
        esp_at.append(p.esp_at[d])
        esp_len.append(p.esp_len[d])
        seqs.append(p.seqs[d].astype(np.uint64))
        slots.append(np.full(len(d), _bind(p.engine), np.uint32))
        at += size
    cat = np.concatenate
    n = sum(len(p.dev) for p in plans)
    lens = cat(esp_len) if n else np.zeros(0, np.int64)
    body = lens - 32
    span = (body + 15) & ~15
    out_bytes = int(span.sum())

    def put(name, values, dtype):
        arr = alloc(name, n, dtype)
        arr[:] = values
        return arr

    return OpenStaged(
        n=n, inp=inp, in_bytes=in_bytes, in_off=put("open_in_off", cat(offs), np.uint64),
        esp_at=put("open_esp_at", cat(esp_at), np.uint32), esp_len=put("open_esp_len", lens, np.uint32),
        out=alloc("open_out", out_bytes + source.SLACK_BYTES, np.uint8), out_bytes=out_bytes,
        out_off=put("open_out_off", _excl_cumsum(span), np.uint64),
        seqs=put("open_seqs", cat(seqs), np.uint64), slots=put("open_slots", cat(slots), np.uint32),
        verdicts=put("open_verdicts", 0, np.uint8), trailers=put("open_trailers", 0, np.uint32),
        ghash_blocks=int(((body + 15) // 16 + 3).sum()))


def _in_order(plan: _OpenPlan, replay) -> bool:
    """Whether every packet of the batch goes to the kernel with a sequence number right of the
    window and above the one before it.  Then no replay check can drop one of them, and no ESN
    estimate can move inside the batch (each number lies within 2^32 - window of the top, and
    the top only rises towards it), so the window takes the batch in one step (`_advance`)."""
    seqs = plan.seqs
    return (len(plan.dev) == len(seqs) and int(seqs[0]) > replay.top
            and bool((seqs[1:] > seqs[:-1]).all()))


def _advance(replay, seqs) -> None:
    """`replay.update` of each of `seqs` (uint64, increasing, all right of the window) in turn,
    as one step: the new top and the bitmap of the numbers that stay inside the window."""
    top = int(seqs[-1])
    behind = np.uint64(top) - seqs
    behind = behind[behind < replay.size].astype(np.int64)
    received = 0
    if len(behind):
        bits = np.zeros(int(behind[0]) + 1, np.uint8)           # behind[0] is the largest
        bits[behind] = 1
        received = int.from_bytes(np.packbits(bits, bitorder="little").tobytes(), "little")
    replay.advance(top, received)


def _finish_open(plan: _OpenPlan, st: OpenStaged, first: int, now: float) -> list:
    """The verdict of every packet of one SA's batch, in order, as `EspEngine.unprotect` gives
    it: the replay check, ICV, padding, decapsulation, the window update and the counters.  A
    batch in order (`_in_order`) skips the per-packet replay check and updates the window and
    the counters once at the end; any other goes the exact way, packet by packet."""
    engine = plan.engine
    sa = engine.sa
    replay = sa.replay
    stats = sa.stats
    batch = plan.batch
    n = len(batch)
    exact = not _in_order(plan, replay)
    at = np.full(n, -1, np.int64)
    at[plan.dev] = np.arange(first, first + len(plan.dev))
    at_l = at.tolist()
    gmac = engine.kind is CipherKind.GMAC
    what = "GMAC tag mismatch" if gmac else "AEAD tag mismatch"
    verdicts = st.verdicts.tolist()
    trailers = st.trailers.tolist()
    out_off = st.out_off.tolist()
    in_off = st.in_off.tolist()
    esp_at = st.esp_at.tolist()
    esp_len = st.esp_len.tolist()
    seq_low = plan.seq_low.tolist()
    est = plan.seqs.tolist()
    bodies = st.out[:st.out_bytes].tobytes() if not gmac else st.inp[:st.in_bytes].tobytes()
    packets = batch.packets()
    tunnel = engine.tunnel
    res = []
    took = np.zeros(n, bool)         # in order: the packets the window records at the end
    count = octets = 0
    for i, packet in enumerate(packets):
        k = at_l[i]
        if exact:
            if k < 0:
                try:
                    res.append(engine.unprotect(packet, now))
                except PacketDropped as drop:
                    res.append(drop)
                continue
            try:
                seq = replay.check(seq_low[i])
            except PacketDropped as drop:
                res.append(drop)
                continue
            if seq != est[i]:                             # the ESN estimate moved in this batch
                try:
                    res.append(engine.unprotect(packet, now))
                except PacketDropped as drop:
                    res.append(drop)
                continue
        v = verdicts[k]
        if v == source.VERDICT_BAD_TAG:
            res.append(PacketDropped(DropReason.AUTH_FAILED, what))
            continue
        pad, nh = trailers[k] & 0xFF, trailers[k] >> 8
        if v == source.VERDICT_BAD_PADDING:
            res.append(PacketDropped(DropReason.BAD_PADDING, f"pad length {pad} or padding bytes wrong"))
            continue
        if v != source.VERDICT_OK:
            raise RuntimeError(f"esp_open left packet {k} of {st.n} with verdict {v}: launch geometry "
                               "or transfer bug")
        body_len = esp_len[k] - 34 - pad
        begin = in_off[k] + esp_at[k] + 16 if gmac else out_off[k]
        payload = bodies[begin:begin + body_len]
        if nh == IPPROTO_NONE:
            if exact:
                replay.update(seq)
            else:
                took[i] = True
            res.append(PacketDropped(DropReason.DUMMY, "dummy packet (next header 59)"))
            continue
        version = packet[0] >> 4
        try:
            if tunnel:
                inner = engine._detunnel(payload, nh, packet, version)
            else:
                inner = engine._detransport(packet, esp_at[k], 9 if version == 4 else 6, nh, payload, version)
        except PacketDropped as drop:
            res.append(drop)
            continue
        if exact:
            replay.update(seq)
            stats.packets += 1
            stats.bytes += len(inner)
            sa.note_soft_limit(now)
        else:
            took[i] = True
            count += 1
            octets += len(inner)
        res.append(inner)
    if not exact and took.any():
        _advance(replay, plan.seqs[took])
        if count:
            # _lifetime_clear: no limit is reached inside the batch, so one note at its end
            # leaves what a note per packet would.
            stats.packets += count
            stats.bytes += octets
            sa.note_soft_limit(now)
    return res


def _open(planned: Sequence[_OpenPlan], *, now: float) -> list[list]:
    """One esp_open launch over the planned batches (of one or more SAs of one gpu backend);
    per plan the verdicts of `_finish_open`."""
    gpu = planned[0].engine.aead.engine
    launcher = gpu.launcher
    if any(p.engine.aead.engine.launcher is not launcher for p in planned):
        raise ValueError("one framing launch needs SAs of one gpu backend (one device SA table)")
    results = []
    with gpu._lock:
        st = _stage_open(launcher.alloc, planned)
        if st.n:
            launcher.run_open(st, lanes=gpu.lanes)
        first = 0
        for plan in planned:
            results.append(_finish_open(plan, st, first, now))
            first += len(plan.dev)
    return results


def frame_unprotect(engine, packets, *, now: float) -> list | None:
    """`EspEngine.unprotect_batch` for an SA the kernels frame (`unframable(engine)` is None), in
    one esp_open launch: per packet the inner packet or the PacketDropped (not yet counted);
    None, with nothing changed, for a batch with a lifetime edge inside it (the core's path
    takes it)."""
    batch = _as_batch(packets)
    plan = _open_plan(engine, batch, now) if len(batch) else None
    return None if plan is None else _open([plan], now=now)[0]


def unprotect_engine_batches(groups: Sequence[tuple[object, object]], *, now: float) -> list[list]:
    """`EspEngine.unprotect_batch` for several SAs' batches, `(engine, packets)` each, with one
    esp_open launch; per packet the inner packet or the PacketDropped (not yet counted).  A
    batch the device cannot frame goes through `engine.unprotect_batch`, before the launch."""
    results: list = [None] * len(groups)
    plans, where = [], []
    for g, (engine, packets) in enumerate(groups):
        batch = _as_batch(packets)
        plan = None
        if len(batch) and unframable(engine) is None:
            plan = _open_plan(engine, batch, now)
        if plan is None:
            results[g] = engine.unprotect_batch(batch.packets(), now)
            continue
        plans.append(plan)
        where.append(g)
    if plans:
        for g, out in zip(where, _open(plans, now=now)):
            results[g] = out
    return results


def unprotect_batches(groups: Sequence[tuple[object, object]], *, now: float) -> list[list]:
    """`sa.unprotect_batch` for several SAs' batches, `(sa, packets)` each, with one esp_open
    launch: traffic selectors checked and drops counted as `SecurityAssociation` does."""
    out = unprotect_engine_batches([(sa.engine, packets) for sa, packets in groups], now=now)
    for (sa, _), verdicts in zip(groups, out):
        if sa._inbound_selectors is not None:
            verdicts[:] = sa._check_selectors(verdicts)
        drops = sa.stats.drops
        for verdict in verdicts:
            if verdict.__class__ is PacketDropped:
                drops[verdict.reason.value] += 1
    return out


def unprotect_batch(sa, packets, *, now: float) -> list:
    """`sa.unprotect_batch(packets, now=now)` with ICV, padding and trailer checked on the device."""
    return unprotect_batches([(sa, packets)], now=now)[0]


__all__ = ["OpenStaged", "SealStaged", "frame_protect", "frame_unprotect", "protect_batch", "protect_batches",
           "sa_params", "unframable", "unprotect_batch", "unprotect_batches", "unprotect_engine_batches"]

"""Vectorised batch paths (numpy) for the common ESP cases: a combined-mode cipher (AES-GCM,
AES-CCM, ChaCha20-Poly1305) with 32-bit sequence numbers, with or without UDP encapsulation, in
tunnel mode over IPv4 (the case of `esp_fast`) and in transport mode for IPv4 packets.

Owns: one pass per batch instead of one Python iteration per packet.  The header fields of all
packets are read with one `join` and checked with numpy; outer IPv4 headers, UDP headers, ESP
headers, nonces and AADs for the whole batch are computed as arrays (checksums by the RFC 1071
fold, vectorised) and turned into bytes with one `tolist()` each; the per-packet work left is
C-level `map` over the library's own bound methods (trailer append, AEAD, header prepend, or
decrypt, trailer check, cut).  This removes the interpreter's per-packet overhead that keeps the
scalar loop of `esp_fast` at about 0.4 of the bare AEAD call (perf/RESULTS.md).
Must not: change behaviour, or change any state before the whole batch is known to be the
common case.  A batch with anything else in it (a non-IPv4 or optioned packet, a wrong SPI, a
sequence number that is not right of the window and increasing, a forged tag, padding over 3
bytes, an ECN combination, a lifetime edge, a batch too small to gain) goes to the scalar
fast loop, which handles every packet exactly as one-by-one processing does; so bytes, verdicts,
sequence numbers, replay state and counters are always those of `protect` / `unprotect` in
order (`tests/dataplane/test_esp_vec.py`).  Transport mode has no per-packet fast loop: its unusual
batches (IPv6, options, fragments, dummy packets...) go to the engine's generic loop
(`tests/dataplane/test_esp_vec_transport.py`).  numpy is optional: without it the loops are used.
"""
from __future__ import annotations

import operator
from itertools import repeat

from ipsec_core.errors import AuthenticationError
from ipsec_core.dataplane.esp.fast import _limits_allow, check_lifetime_before_protect
from ipsec_core.wire.ip import IPPROTO_ESP, IPPROTO_IPIP, IPPROTO_UDP
from ipsec_core.transforms.iana import CipherKind

try:                      # optional accelerator (the `fast` extra)
    import numpy as np
except ImportError:       # pragma: no cover - exercised where numpy is absent
    np = None

# Below these many packets the fixed cost of the numpy calls (~30 us a batch) outweighs the
# saving (both break even at about 32 packets and gain at 64: perf/RESULTS.md).
MIN_PROTECT_BATCH = 64
MIN_UNPROTECT_BATCH = 32
MIN_BATCH = max(MIN_PROTECT_BATCH, MIN_UNPROTECT_BATCH)    # both directions vectorised from here
_PAD = bytes(range(1, 256))


def available() -> bool:
    return np is not None


def vector_paths(engine, scalar_protect, scalar_unprotect):
    """(protect_batch, unprotect_batch): vectorised versions falling back to the scalar fast
    loops given, or the scalar loops themselves when numpy is missing."""
    if np is None:
        return scalar_protect, scalar_unprotect
    protect = _make_protect(engine, scalar_protect) if scalar_protect is not None else None
    unprotect = _make_unprotect(engine, scalar_unprotect) if scalar_unprotect is not None else None
    return protect, unprotect


def _struct(fields: list[tuple[str, str, int]], size: int):
    return np.dtype({"names": [f[0] for f in fields], "formats": [f[1] for f in fields],
                     "offsets": [f[2] for f in fields], "itemsize": size})


def _grower(make):
    """`get(n)`: the first n records of arrays built by `make(capacity)` (constant fields filled
    there, once), rebuilt twice as large when a batch outgrows them."""
    held = {"cap": 0}

    def get(n):
        if n > held["cap"]:
            held["cap"] = max(n, 2 * held["cap"])
            held["arrays"] = make(held["cap"])
        return [a[:n] for a in held["arrays"]]
    return get


def _nonces(salt: bytes, iv_format: str, cap: int):
    """`cap` nonces: the SA's salt, then an 8-byte IV field (`iv_format` ">u4" at offset 4 of
    it, the low half of a 64-bit sequence number, or "V8" for IVs copied from packets)."""
    at = len(salt) + (4 if iv_format == ">u4" else 0)
    nonces = np.zeros(cap, _struct([("salt", f"V{len(salt)}", 0), ("iv", iv_format, at)],
                                   len(salt) + 8))
    nonces["salt"] = np.frombuffer(salt, f"V{len(salt)}")[0]
    return nonces


def _esp_heads(dtype, cap: int, engine):
    """`cap` header records with the SPI [and the UDP ports] filled in."""
    heads = np.zeros(cap, dtype)
    heads["spi"] = np.frombuffer(engine.spi_bytes, "V4")[0]
    if engine.encap:
        heads["sport"], heads["dport"] = engine.encap
    return heads


def _ipv4_starts(packets, k: int, first=None):
    """The first `k` bytes of every packet, joined, when every packet has them and starts as
    IPv4 without options (0x45); else None."""
    joined = b"".join(map(first or operator.itemgetter(slice(0, k)), packets))
    if len(joined) != k * len(packets) or joined[::k].strip(b"\x45"):
        return None
    return joined


def _seal(encrypt, heads, head_bytes, aad_view, nonces, plaintexts):
    """header + AEAD(nonce, plaintext, AAD) per packet: C-level `map` over the library's method."""
    return list(map(operator.concat, heads.view(head_bytes).tolist(),
                    map(encrypt, nonces.view(f"V{nonces.dtype.itemsize}").tolist(), plaintexts,
                        heads.view(aad_view)["aad"].tolist())))


def _protect_commit(sa, n: int, octets: int) -> None:
    sa.seq += n
    sa.stats.packets += n
    sa.stats.bytes += octets


class _Opener:
    """What batch unprotect does the same way in both modes: the checks that the batch is the
    common case (lengths, fixed header bytes, SPI, [UDP port], sequence numbers right of the
    window and increasing, no lifetime edge), the AEAD over the batch, and at the end the
    replay window and counters as one-by-one processing leaves them."""

    def __init__(self, engine):
        sa = self.sa = engine.sa
        self.replay = sa.replay
        encap = engine.encap
        self.esp_at = esp_at = 28 if encap else 20
        self.ct_at = ct_at = esp_at + 16
        proto = IPPROTO_UDP if encap else IPPROTO_ESP
        self.min_len = esp_at + engine.min_esp
        self.in_dt = _struct([("ip", "V20", 0), ("w0", ">u2", 0), ("tot", ">u2", 2),
                              ("aad", "V8", esp_at), ("seq", ">u4", esp_at + 4),
                              ("iv", "V8", esp_at + 8)], ct_at)
        # Bytes that must hold fixed values: version/IHL 0x45, no fragment (flags other than DF,
        # offset), the protocol, the SPI, and with UDP encapsulation the destination port.
        fixed = [(0, 0xFF, 0x45), (6, 0x3F, 0), (7, 0xFF, 0), (9, 0xFF, proto)]
        fixed += [(esp_at + i, 0xFF, b) for i, b in enumerate(engine.spi_bytes)]
        if encap:
            fixed += [(22, 0xFF, encap[1] >> 8), (23, 0xFF, encap[1] & 0xFF)]
        self.cols, self.masks, self.values = (np.array(c, dtype=np.intp if i == 0 else np.uint8)
                                              for i, c in enumerate(zip(*fixed)))
        self.head = operator.itemgetter(slice(0, ct_at))
        self.body = operator.itemgetter(slice(ct_at, None))
        self.decrypt = getattr(engine.aead, "fast_decrypt", engine.aead.decrypt)
        self.bad_tag = tuple(getattr(engine.aead, "fast_decrypt_errors", ())) + (AuthenticationError,)
        self.nonces = _grower(lambda cap: [_nonces(engine.salt, "V8", cap)])

    def open(self, packets, now):
        """(header fields, lengths, sequence numbers, plaintexts) of a common-case batch, or
        None (then nothing has changed: the caller hands the batch to its loop)."""
        sa, replay = self.sa, self.replay
        n = len(packets)
        if n < MIN_UNPROTECT_BATCH or not replay.size:
            return None
        if sa._has_lifetime and not _limits_allow(sa, n, 65535 * n):
            return None
        # A batch at a lifetime edge goes to the loop, which meets it at the first packet that
        # gets that far (one-by-one processing never checks for packets dropped earlier).
        if (sa._has_lifetime or sa.hard_expired) and sa.lifetime_event_due(now):
            return None
        ct_at = self.ct_at
        joined = b"".join(map(self.head, packets))
        if len(joined) != ct_at * n:
            return None
        h = np.frombuffer(joined, self.in_dt)
        lens = h["tot"].astype(np.int64)
        seqs = h["seq"].astype(np.int64)
        # Replay: every packet right of the window and increasing, so each is new when its
        # turn comes (whatever the verdicts before it).
        if (list(map(len, packets)) != lens.tolist() or lens.min() < self.min_len
                or seqs[0] <= replay.top
                or ((np.frombuffer(joined, np.uint8).reshape(n, ct_at)[:, self.cols] & self.masks)
                    != self.values).any() or (seqs[1:] <= seqs[:-1]).any()):
            return None
        nonces, = self.nonces(n)
        nonces["iv"] = h["iv"]
        try:
            pts = list(map(self.decrypt, nonces.view(f"V{nonces.dtype.itemsize}").tolist(),
                           map(self.body, packets), h["aad"].tolist()))
        except self.bad_tag:
            return None                 # a forged packet: the loop drops exactly that one
        return h, lens, seqs, pts

    def commit(self, seqs, octets: int) -> None:
        """Advance the window over `seqs` (all accepted, increasing) and count the packets."""
        replay = self.replay
        size, top, n = replay.size, replay.top, len(seqs)
        last = int(seqs[-1])
        shift = last - top
        bitmap = (replay.bitmap << shift) & ((1 << size) - 1) if shift < size else 0
        if last - int(seqs[0]) == n - 1:            # consecutive: a run of n bits
            bitmap |= (1 << min(n, size)) - 1
        else:
            for back in (last - seqs).tolist():
                if back < size:
                    bitmap |= 1 << back
        replay.top, replay.bitmap = last, bitmap
        self.sa.stats.packets += n
        self.sa.stats.bytes += octets


def _pad_table(with_next_header: int | None):
    """(mask, want) arrays indexed by pad length for the RFC 4303 2.4 trailer check on the last
    8 plaintext bytes as one integer: pad length p needs 1, 2, ..., p, p [and the next header]
    at the end.  Pad lengths over 3 (legal, never sent for 4-byte alignment) get mask 0 and
    want 1: they fail, and the batch goes to the loop."""
    mask, want = np.zeros(256, np.uint64), np.ones(256, np.uint64)
    for p in range(4):
        tail = _PAD[:p] + bytes((p,)) + (bytes((with_next_header,)) if with_next_header is not None else b"")
        mask[p] = (1 << (8 * len(tail))) - 1
        want[p] = int.from_bytes(tail, "big")
    return mask, want


def _tails(pts):
    """The last 8 bytes of every plaintext as big-endian integers, or None if one is shorter."""
    tails = b"".join(map(_LAST8, pts))
    if len(tails) != 8 * len(pts):
        return None
    return np.frombuffer(tails, ">u8").astype(np.uint64)


_LAST8 = operator.itemgetter(slice(-8, None))


def _make_protect(engine, scalar):
    sa = engine.sa
    encap = engine.encap
    udp = 8 if encap else 0
    proto = IPPROTO_UDP if encap else IPPROTO_ESP
    ttl = engine.ttl
    addrs = engine.src + engine.dst
    esp_at = 20 + udp
    head_len = esp_at + 16
    # Outer header, [UDP header], ESP header and IV (= the 64-bit sequence number, whose high
    # half is 0 without ESN); `aad` (SPI || sequence number) overlaps the ESP header.
    fields = [("w0", ">u2", 0), ("tot", ">u2", 2), ("id", ">u2", 4), ("frag", ">u2", 6),
              ("ttl", "u1", 8), ("proto", "u1", 9), ("csum", ">u2", 10), ("addrs", "V8", 12),
              ("spi", "V4", esp_at), ("seq", ">u4", esp_at + 4), ("iv", ">u4", esp_at + 12)]
    if encap:
        fields += [("sport", ">u2", 20), ("dport", ">u2", 22), ("ulen", ">u2", 24)]
    head_dt = _struct(fields, head_len)
    head_bytes = np.dtype(f"V{head_len}")
    aad_view = _struct([("aad", "V8", esp_at)], head_len)
    words = np.dtype(">u2")
    first8 = operator.itemgetter(slice(0, 8))
    concat = operator.concat      # faster through map() than bytes.__add__
    # Checksum words that never change (TTL/protocol, addresses): RFC 1071 sum, unfolded.  The
    # first word (version/IHL/TOS) is the inner packet's, as both are 0x45 with the same TOS.
    base = ((ttl << 8) | proto) + sum(int.from_bytes(addrs[i:i + 2], "big") for i in range(0, 8, 2))
    trailers = [_PAD[:-(r + 2) % 4] + bytes((-(r + 2) % 4, IPPROTO_IPIP)) for r in range(4)]
    grow = np.array([head_len + len(t) + engine.icv_bytes for t in trailers], dtype=np.int64)
    largest = 0xFFFF - int(grow.max())

    def make(cap):
        heads = _esp_heads(head_dt, cap, engine)
        heads["ttl"], heads["proto"] = ttl, proto
        heads["addrs"] = np.frombuffer(addrs, "V8")[0]
        return heads, _nonces(engine.salt, ">u4", cap)
    buffers = _grower(make)

    def protect_batch(packets, now):
        n = len(packets)
        if n < MIN_PROTECT_BATCH or sa.seq + n > 0xFFFFFFFF:
            return scalar(packets, now)
        first = _ipv4_starts(packets, 8, first8)
        if first is None:
            return scalar(packets, now)
        w = np.frombuffer(first, words).reshape(n, 4)
        # Lengths: usually each packet is exactly its IPv4 total length (one C-level list
        # compare shows it); otherwise measured one by one (the total length must not exceed
        # the packet, as in the scalar loop).
        lens = w[:, 1].astype(np.int64)
        if list(map(len, packets)) != lens.tolist():
            lens = np.fromiter(map(len, packets), np.int64, n)
            if (w[:, 1] > lens).any() or w[:, 1].min() < 20:
                return scalar(packets, now)
        if (lens.min() < 20 or lens.max() > largest
                or sa._has_lifetime and not _limits_allow(sa, n, int(lens.sum()))):
            return scalar(packets, now)
        if sa._has_lifetime or sa.hard_expired:
            check_lifetime_before_protect(sa, now)
        ident = engine.ident
        seq = sa.seq
        r = lens & 3
        total = lens + grow[r]
        seqs = np.arange(seq + 1, seq + n + 1, dtype=np.int64)
        idents = (seqs + (ident - seq)) & 0xFFFF
        df = w[:, 3] & 0x4000
        s = total + idents + df + w[:, 0] + base
        s = (s & 0xFFFF) + (s >> 16)
        s = (s & 0xFFFF) + (s >> 16)
        heads, nonces = buffers(n)
        heads["w0"], heads["tot"], heads["id"], heads["frag"] = w[:, 0], total, idents, df
        heads["csum"] = 0xFFFF - s
        heads["seq"] = heads["iv"] = nonces["iv"] = seqs
        if encap:
            heads["ulen"] = total - 20
        rl = r.tolist()
        trail = repeat(trailers[rl[0]], n) if rl.count(rl[0]) == n else map(trailers.__getitem__, rl)
        try:
            out = _seal(engine.aead.encrypt, heads, head_bytes, aad_view, nonces,
                        map(concat, packets, trail))
        except Exception:
            # Something the scalar loop treats differently (a packet type `+` refuses...):
            # nothing has changed yet, so it decides the batch.
            return scalar(packets, now)
        engine.ident = (ident + n) & 0xFFFF
        _protect_commit(sa, n, int(lens.sum()))
        return out

    return protect_batch


def _make_unprotect(engine, scalar):
    opener = _Opener(engine)
    icv = engine.icv_bytes
    overhead = opener.ct_at + icv + 2
    words = np.dtype(">u2")
    first4 = operator.itemgetter(slice(0, 4))
    getitem = operator.getitem
    trail_mask, trail_want = _pad_table(IPPROTO_IPIP)

    def uniform(pts, lens, h):
        """True when every plaintext has the first one's trailer and inner header start and
        that one passes the checks: a bulk batch of one size and TOS, checked with two C-level
        scans instead of two joins and the per-packet arithmetic."""
        first = pts[0]
        n = len(pts)
        sizes = lens.tolist()
        if type(first) is not bytes or len(first) < 22 or sizes.count(sizes[0]) != n:
            return False
        pad = first[-2]
        tail = first[-pad - 2:]
        start = first[:4]
        cut = len(first) - 2 - pad
        if (pad > 3 or tail != _PAD[:pad] + bytes((pad, IPPROTO_IPIP)) or start[0] != 0x45
                or ((start[2] << 8) | start[3]) != cut or cut < 20):
            return False
        tos = h["w0"]
        if tos.min() != tos.max() or (start[1] ^ int(tos[0])) & 3:
            return False
        try:
            return all(map(bytes.endswith, pts, repeat(tail, n))) and all(
                map(bytes.startswith, pts, repeat(start, n)))
        except TypeError:               # a backend that returned another buffer type
            return False

    def unprotect_batch(packets, now):
        opened = opener.open(packets, now)
        if opened is None:
            return scalar(packets, now)
        h, lens, seqs, pts = opened
        n = len(pts)
        if uniform(pts, lens, h):
            cl = [len(pts[0]) - 2 - pts[0][-2]] * n
            out = list(map(operator.itemgetter(slice(0, cl[0])), pts))
        else:
            x = _tails(pts)
            inner = b"".join(map(first4, pts))
            if x is None or len(inner) != 4 * n:
                return scalar(packets, now)
            pad = ((x >> np.uint64(8)) & np.uint64(0xFF)).astype(np.intp)
            cut = lens - overhead - pad
            w = np.frombuffer(inner, words).reshape(n, 2)
            # Inner IPv4 without options, its length exactly up to the padding, the same ECN
            # as the outer header (else RFC 6040 rewrites it: the scalar loop does that).
            if ((x & trail_mask[pad]) != trail_want[pad]).any() or cut.min() < 20 \
                    or (w[:, 1] != cut).any() or ((w[:, 0] ^ h["w0"]) & 0xFF03).any():
                return scalar(packets, now)
            cl = cut.tolist()
            out = list(map(getitem, pts, map(slice, cl)))
        opener.commit(seqs, sum(cl))
        return out

    return unprotect_batch


# -- transport mode ------------------------------------------------------------------------------
def transport_paths(engine):
    """(protect_batch, unprotect_batch) for an AEAD transport-mode SA without ESN, vectorised
    for IPv4 packets without options or fragments; anything else goes to the engine's generic
    loops (there is no per-packet fast loop for transport mode).  (None, None) when this SA is
    not such an SA or numpy is missing."""
    if np is None or engine.kind is not CipherKind.AEAD or engine.tunnel or engine.esn:
        return None, None
    return (_make_transport_protect(engine, engine.protect_batch_generic),
            _make_transport_unprotect(engine, engine.unprotect_batch_generic))


def _ipv4_checksums(heads, n: int, head_len: int):
    """RFC 1071 checksums of the 20-byte IPv4 headers at the start of each record of `heads`
    (whose checksum fields are zero), as an array."""
    s = np.ascontiguousarray(heads.view(np.uint8).reshape(n, head_len)[:, :20]).view(">u2").sum(axis=1)
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    return 0xFFFF - s


def _make_transport_protect(engine, generic):
    sa = engine.sa
    encap = engine.encap
    udp = 8 if encap else 0
    proto = IPPROTO_UDP if encap else IPPROTO_ESP
    esp_at = 20 + udp
    head_len = esp_at + 16
    # The packet's own IPv4 header (protocol, total length and checksum rewritten), [UDP], ESP
    # header and IV (the 64-bit sequence number; its high half is 0 without ESN).
    fields = [("ip", "V20", 0), ("tot", ">u2", 2), ("proto", "u1", 9), ("csum", ">u2", 10),
              ("spi", "V4", esp_at), ("seq", ">u4", esp_at + 4), ("iv", ">u4", esp_at + 12)]
    if encap:
        fields += [("sport", ">u2", 20), ("dport", ">u2", 22), ("ulen", ">u2", 24)]
    head_dt = _struct(fields, head_len)
    head_bytes = np.dtype(f"V{head_len}")
    aad_view = _struct([("aad", "V8", esp_at)], head_len)
    in_dt = _struct([("ip", "V20", 0), ("tot", ">u2", 2), ("frag", ">u2", 6), ("proto", "u1", 9)], 20)
    first20 = operator.itemgetter(slice(0, 20))
    body = operator.itemgetter(slice(20, None))
    concat = operator.concat
    # Trailer per (payload length mod 4, next header): index r * 256 + next header.
    trailers = [_PAD[:-(r + 2) % 4] + bytes((-(r + 2) % 4, nh)) for r in range(4) for nh in range(256)]
    grow = np.array([head_len + 2 + -(r + 2) % 4 + engine.icv_bytes - 20 for r in range(4)],
                    dtype=np.int64)
    largest = 0xFFFF - int(grow.max())

    def make(cap):
        return _esp_heads(head_dt, cap, engine), _nonces(engine.salt, ">u4", cap)
    buffers = _grower(make)

    def protect_batch(packets, now):
        n = len(packets)
        if n < MIN_PROTECT_BATCH or sa.seq + n > 0xFFFFFFFF:
            return generic(packets, now)
        first = _ipv4_starts(packets, 20, first20)
        if first is None:
            return generic(packets, now)
        h = np.frombuffer(first, in_dt)
        lens = h["tot"].astype(np.int64)
        if (list(map(len, packets)) != lens.tolist() or lens.min() < 20 or lens.max() > largest
                or (h["frag"] & 0x3FFF).any()
                or sa._has_lifetime and not _limits_allow(sa, n, int(lens.sum()))):
            return generic(packets, now)
        if sa._has_lifetime or sa.hard_expired:
            check_lifetime_before_protect(sa, now)
        seq = sa.seq
        r = lens & 3                        # payload length = total - 20: the same mod 4
        total = lens + grow[r]
        heads, nonces = buffers(n)
        heads["ip"] = h["ip"]
        heads["tot"], heads["proto"], heads["csum"] = total, proto, 0
        heads["csum"] = _ipv4_checksums(heads, n, head_len)
        heads["seq"] = heads["iv"] = nonces["iv"] = np.arange(seq + 1, seq + n + 1, dtype=np.int64)
        if encap:
            heads["ulen"] = total - 20
        try:
            out = _seal(engine.aead.encrypt, heads, head_bytes, aad_view, nonces,
                        map(concat, map(body, packets),
                            map(trailers.__getitem__, (r * 256 + h["proto"]).tolist())))
        except Exception:
            return generic(packets, now)    # nothing has changed yet: the generic loop decides
        _protect_commit(sa, n, int(lens.sum()))
        return out

    return protect_batch


def _make_transport_unprotect(engine, generic):
    opener = _Opener(engine)
    overhead = opener.ct_at + engine.icv_bytes + 2
    head_dt = _struct([("ip", "V20", 0), ("tot", ">u2", 2), ("proto", "u1", 9), ("csum", ">u2", 10)], 20)
    head_bytes = np.dtype("V20")
    getitem, concat = operator.getitem, operator.concat
    pad_mask, pad_want = _pad_table(None)       # any next header
    heads_for = _grower(lambda cap: [np.zeros(cap, head_dt)])

    def unprotect_batch(packets, now):
        opened = opener.open(packets, now)
        if opened is None:
            return generic(packets, now)
        h, lens, seqs, pts = opened
        n = len(pts)
        x = _tails(pts)
        if x is None:
            return generic(packets, now)
        body = x >> np.uint64(8)
        pad = (body & np.uint64(0xFF)).astype(np.intp)
        nh = (x & np.uint64(0xFF)).astype(np.int64)
        cut = lens - overhead - pad
        # Valid padding, not a dummy packet (next header 59: dropped, by the generic loop).
        if ((body & pad_mask[pad]) != pad_want[pad]).any() or cut.min() < 0 or (nh == 59).any():
            return generic(packets, now)
        # The inner packet: the outer IPv4 header with the next header as protocol, its length
        # and checksum rewritten (RFC 4303 3.1.1), then the payload.
        heads, = heads_for(n)
        heads["ip"] = h["ip"]
        heads["tot"], heads["proto"], heads["csum"] = cut + 20, nh, 0
        heads["csum"] = _ipv4_checksums(heads, n, 20)
        cl = cut.tolist()
        out = list(map(concat, heads.view(head_bytes).tolist(), map(getitem, pts, map(slice, cl))))
        opener.commit(seqs, sum(cl) + 20 * n)
        return out

    return unprotect_batch

"""The ESP batch path on `PacketBatch`: tunnel mode, IPv4 or IPv6 inside and outside, AEADs
and cipher + integrity (or integrity only), with or without ESN and UDP encapsulation.

Owns: the protocol work over a whole batch (outer IP and UDP headers, ESP headers, IVs,
nonces, AADs, padding and trailer, checksums, the replay pre-check, lifetimes, counters) done
with numpy over one buffer, and the crypto done by one backend call per run of packets
(`BatchAead.seal_batch` / `open_batch`, or `BatchEncryptThenMac`); a backend without them gets
`LoopAead` / `LoopEncryptThenMac`, loops over its single-packet primitives.  A backend whose
batch objects frame ESP themselves gets the whole batch in one call instead: `EspFraming`
(the numpy-computed header rows, sealed per packet), or the fused calls (`esp_protect`,
`esp_protect_into`, `esp_unprotect`: ipsecmb, for AEADs with an 8-byte IV and for AES-CBC /
AES-CTR with a MAC without ESN), which take a template of the fixed header bytes and apply
these rules in C, stopping at the first packet they leave to the engine.  `protect_packets` /
`unprotect_packets` run those on a `PacketBatch` in place, with no object per packet.
Must not: decide anything differently from `engine.EspEngine.protect` / `unprotect`.  Every
packet the vector checks do not recognise (malformed, foreign, too big, a sequence number that
is not right of the window and increasing, odd padding, a dummy packet, an ECN rewrite, ...)
goes through the engine itself, in its place in the batch, with the SA's state synced before
and after; so bytes, verdicts, sequence numbers, the replay window and counters are those of
one-by-one processing (`tests/dataplane/test_batch_buffer.py` checks it for every proposal,
both families, ESN, UDP encapsulation and every drop reason).

Which SAs take it (`bulk_paths`): tunnel mode with both addresses, a built-in AEAD other than
GMAC or a cipher of the CBC or counter layout, no TFC padding and `df_bit = copy` (protect),
a replay window (unprotect), and not IPv6 outside with UDP encapsulation (its checksum covers
the whole packet).  Among those, the engine prefers the older vectorised paths (`vec`) for an
AEAD without a batch call in the cases they cover; see `EspEngine.__init__`.
"""
from __future__ import annotations

import operator
import os
import struct
from typing import Protocol, runtime_checkable

from ipsec_core.crypto.base import BatchAead, BatchEncryptThenMac
from ipsec_core.dataplane.batch import PacketBatch, complete_checksums, np, slices
from ipsec_core.dataplane.esp.fast import _limits_allow, check_lifetime_before_protect
from ipsec_core.errors import AuthenticationError, DropReason, PacketDropped
from ipsec_core.transforms.iana import CipherKind
from ipsec_core.wire.ip import IPPROTO_ESP, IPPROTO_IPIP, IPPROTO_IPV6, IPPROTO_UDP

_PAD = bytes(range(1, 256))
# The fused batch calls' flags (plugins/ipsecmb/_ipsecmb.c): outer IPv6, ESP in UDP, ESN.
FUSED_V6, FUSED_UDP, FUSED_ESN, FUSED_BARE = 1, 2, 4, 8
_SEQ32 = 1 << 32
_INT64_SAFE = 1 << 62
_U32 = struct.Struct("!I")
# Batches shorter than this go to the engine's loop: numpy's fixed cost per batch.
MIN_BULK_BATCH = 8


@runtime_checkable
class EspFraming(Protocol):
    """A batch object (`BatchAead` / `BatchEncryptThenMac`) that also frames ESP itself over a
    list of packets (ipsecmb): `peek` gives every packet's length and first bytes in one call,
    `esp_seal` writes the header rows the core computed, the packet, the trailer and the ICV
    into one new bytes object per packet, `esp_open` decrypts into one plaintext buffer that
    the core checks and `cut`s into the inner packets.  Offsets and lengths are checked by the
    object; every protocol decision stays here."""

    def peek(self, packets, k): ...
    def cut(self, buf, offsets, lengths): ...
    def esp_seal(self, packets, heads, head_len, nhs, block, rows, aads): ...
    def esp_open(self, packets, at, lengths, rows, *aads): ...


class LoopAead:
    """`BatchAead` over any `Aead`: one `encrypt` / `decrypt` per message."""

    __slots__ = ("aead", "tag_bytes")

    def __init__(self, aead):
        self.aead = aead
        self.tag_bytes = aead.tag_bytes

    def seal_batch(self, buf, offsets, lengths, nonces, aads) -> None:
        n = len(offsets)
        nw, aw = (len(nonces) // n, len(aads) // n) if n else (0, 0)
        mv, t, enc = memoryview(buf), self.tag_bytes, self.aead.encrypt
        for i, (o, ln) in enumerate(zip(offsets.tolist(), lengths.tolist())):
            mv[o:o + ln + t] = enc(bytes(nonces[i * nw:(i + 1) * nw]), bytes(mv[o:o + ln]),
                                   bytes(aads[i * aw:(i + 1) * aw]))

    def open_batch(self, buf, offsets, lengths, nonces, aads) -> bytes:
        n = len(offsets)
        nw, aw = (len(nonces) // n, len(aads) // n) if n else (0, 0)
        mv, t, dec = memoryview(buf), self.tag_bytes, self.aead.decrypt
        verdicts = bytearray(n)
        for i, (o, ln) in enumerate(zip(offsets.tolist(), lengths.tolist())):
            try:
                mv[o:o + ln] = dec(bytes(nonces[i * nw:(i + 1) * nw]), bytes(mv[o:o + ln + t]),
                                   bytes(aads[i * aw:(i + 1) * aw]))
            except AuthenticationError:
                continue
            verdicts[i] = 1
        return bytes(verdicts)


class LoopEncryptThenMac:
    """`BatchEncryptThenMac` over any cipher (or None) and MAC: one call each per message."""

    __slots__ = ("cipher", "mac", "icv_bytes", "cipher_at")

    def __init__(self, cipher, mac, *, icv_bytes: int, cipher_at: int):
        self.cipher, self.mac = cipher, mac
        self.icv_bytes, self.cipher_at = icv_bytes, cipher_at

    def seal_batch(self, buf, starts, lengths, ivs, his) -> None:
        mv, at, icv = memoryview(buf), self.cipher_at, self.icv_bytes
        for i, (s, ln) in enumerate(zip(starts.tolist(), lengths.tolist())):
            if self.cipher is not None:
                mv[s + at:s + ln] = self.cipher.encrypt(bytes(ivs[16 * i:16 * i + 16]),
                                                        bytes(mv[s + at:s + ln]))
            signed = bytes(mv[s:s + ln]) + (bytes(his[4 * i:4 * i + 4]) if his is not None else b"")
            mv[s + ln:s + ln + icv] = self.mac.mac(signed)[:icv]

    def open_batch(self, buf, starts, lengths, ivs, his) -> bytes:
        import hmac

        mv, at, icv = memoryview(buf), self.cipher_at, self.icv_bytes
        verdicts = bytearray(len(starts))
        for i, (s, ln) in enumerate(zip(starts.tolist(), lengths.tolist())):
            signed = bytes(mv[s:s + ln]) + (bytes(his[4 * i:4 * i + 4]) if his is not None else b"")
            if not hmac.compare_digest(self.mac.mac(signed)[:icv], bytes(mv[s + ln:s + ln + icv])):
                continue
            verdicts[i] = 1
            if self.cipher is not None:
                mv[s + at:s + ln] = self.cipher.decrypt(bytes(ivs[16 * i:16 * i + 16]),
                                                        bytes(mv[s + at:s + ln]))
        return bytes(verdicts)


def bulk_paths(engine, registry_backends=None):
    """(protect_batch, unprotect_batch) on the batch path for `engine`, or (None, None) when the
    SA is not one it takes (see the module docstring); each may be None for one direction."""
    if np is None or not engine.tunnel or not engine.src or engine.kind is CipherKind.GMAC:
        return None, None
    if engine.outer_v6 and engine.encap:
        return None, None
    if engine.kind is CipherKind.AEAD:
        if engine.iv_bytes != 8:
            return None, None
        crypto = engine.aead if isinstance(engine.aead, BatchAead) else LoopAead(engine.aead)
    else:
        if engine.kind is CipherKind.CIPHER and not (
                (engine.ctr and engine.iv_bytes == 8 and len(engine.salt) == 4)
                or (not engine.ctr and engine.iv_bytes == 16 and engine.block == 16)):
            return None, None
        crypto = engine.chain
    path = _Bulk(engine, crypto)
    protect = path.protect_batch if not engine.tfc_pad_to and engine.df_bit == "copy" else None
    unprotect = path.unprotect_batch if engine.sa.replay.size else None
    return protect, unprotect


def make_chain(engine, backend):
    """The `BatchEncryptThenMac` for a cipher + integrity SA: the backend's own when it makes
    one for these primitives, else the loop."""
    cipher = engine.cipher if engine.kind is CipherKind.CIPHER else None
    at = 8 + engine.iv_bytes
    make = getattr(backend, "encrypt_then_mac", None)
    chain = make(cipher, engine.mac, icv_bytes=engine.icv_bytes, cipher_at=at) if make else None
    if chain is not None and isinstance(chain, BatchEncryptThenMac):
        return chain
    return LoopEncryptThenMac(cipher, engine.mac, icv_bytes=engine.icv_bytes, cipher_at=at)


def _runs(ok) -> list[tuple[int, int, bool]]:
    """(start, end, ok) of the maximal runs of equal values in a bool array."""
    n = len(ok)
    if not n:
        return []
    edges = np.flatnonzero(ok[1:] != ok[:-1]) + 1
    bounds = [0, *edges.tolist(), n]
    flags = ok[bounds[:-1]].tolist()
    return [(bounds[k], bounds[k + 1], flags[k]) for k in range(len(flags))]


class _Bulk:
    def __init__(self, engine, crypto):
        self.engine = engine
        self.sa = engine.sa
        self.crypto = crypto
        self.aead = engine.kind is CipherKind.AEAD
        self.null = engine.kind is CipherKind.NULL
        self.ivb = engine.iv_bytes
        self.icv = engine.icv_bytes
        self.block = engine.block
        self.udp = 8 if engine.encap else 0
        self.outer = 40 if engine.outer_v6 else 20
        self.esp_at = self.outer + self.udp
        self.head = self.esp_at + 8 + self.ivb
        self.proto = IPPROTO_UDP if engine.encap else IPPROTO_ESP
        self.salt = engine.salt
        self.min_esp = engine.min_esp
        # Trailers by (payload length mod block, next header 4 / 41), with the ICV's room.
        self.tails = {}
        for r in range(self.block):
            pad = -(r + 2) % self.block
            for nh in (IPPROTO_IPIP, IPPROTO_IPV6):
                self.tails[(r, nh)] = _PAD[:pad] + bytes((pad, nh)) + bytes(self.icv)
        self.pad_rows = np.zeros((16, 16), np.uint8)   # expected last 16 pad bytes by pad length
        self.pad_mask = np.zeros((16, 16), bool)
        for p in range(16):
            if p:
                self.pad_rows[p, 16 - p:] = np.frombuffer(_PAD[:p], np.uint8)
                self.pad_mask[p, 16 - p:] = True
        fields = [("spi", "V4", self.esp_at), ("seq", ">u4", self.esp_at + 4)]
        if engine.outer_v6:
            fields += [("w0", ">u4", 0), ("plen", ">u2", 4), ("nh", "u1", 6), ("hop", "u1", 7),
                       ("addrs", "V32", 8)]
        else:
            fields += [("w0", ">u2", 0), ("tot", ">u2", 2), ("id", ">u2", 4), ("frag", ">u2", 6),
                       ("ttl", "u1", 8), ("proto", "u1", 9), ("csum", ">u2", 10), ("addrs", "V8", 12)]
        if engine.encap:
            fields += [("sport", ">u2", 20), ("dport", ">u2", 22), ("ulen", ">u2", 24)]
        if self.ivb == 8:
            fields += [("iv", ">u8", self.esp_at + 8)]
        elif self.ivb:
            fields += [("iv", f"V{self.ivb}", self.esp_at + 8)]
        self.head_dt = np.dtype({"names": [f[0] for f in fields], "formats": [f[1] for f in fields],
                                 "offsets": [f[2] for f in fields], "itemsize": self.head})
        # ESN with a cipher + integrity SA puts the high bits after the ICV input, which the
        # received packet does not hold: that direction keeps the buffer path.
        self.framing = isinstance(crypto, EspFraming)
        self.framing_open = self.framing and (self.aead or not engine.esn)
        # The header fields no packet changes, written once per batch as one row.
        t = np.zeros(1, self.head_dt)
        t["spi"] = np.frombuffer(engine.spi_bytes, "V4")[0]
        if engine.outer_v6:
            t["w0"] = 6 << 28
            t["nh"], t["hop"] = self.proto, engine.ttl
            t["addrs"] = np.frombuffer(engine.src + engine.dst, "V32")[0]
            self.csum_base = 0
        else:
            t["w0"] = 0x4500
            t["ttl"], t["proto"] = engine.ttl, self.proto
            t["addrs"] = np.frombuffer(engine.src + engine.dst, "V8")[0]
            # the checksum's sum over the fixed words: version/IHL, TTL/protocol, addresses
            fixed = np.frombuffer(t.tobytes()[:20], ">u2").astype(np.int64)
            self.csum_base = int(fixed.sum())
        if engine.encap:
            t["sport"], t["dport"] = engine.encap
        self.template = np.frombuffer(t.tobytes(), np.uint8)
        # The same layout for reading received headers, the SPI as a number.
        self.in_dt = np.dtype({"names": self.head_dt.names,
                               "formats": [">u4" if f == "spi" else self.head_dt.fields[f][0]
                                           for f in self.head_dt.names],
                               "offsets": [self.head_dt.fields[f][1] for f in self.head_dt.names],
                               "itemsize": self.head})
        self.spi_int = int.from_bytes(engine.spi_bytes, "big")
        # A backend that frames a whole AEAD batch in one call (ipsecmb: `esp_protect`,
        # `esp_protect_into`, `esp_unprotect`) gets the template and these rules' parameters;
        # what it leaves (an odd packet) comes back here, to the numpy path and the engine.
        fused_aead = self.aead and self.ivb == 8 and len(self.salt) == 4
        fused_chain = (not self.aead and not self.null and not engine.esn and (
            (not engine.ctr and self.ivb == 16) or (engine.ctr and self.ivb == 8 and len(self.salt) == 4)))
        self.fused = (fused_aead or fused_chain) and hasattr(crypto, "esp_unprotect")
        self.fused_list_protect = self.fused and hasattr(crypto, "esp_protect")
        self.fused_cbc = self.fused and fused_chain and not engine.ctr
        if self.fused:
            self.fused_tmpl = self.template.tobytes()
            self.fused_flags = ((FUSED_V6 if engine.outer_v6 else 0) | (FUSED_UDP if engine.encap else 0)
                                | (FUSED_ESN if engine.esn else 0))
            self.fused_min = self.esp_at + self.min_esp
            self.bare_tmpl = self.fused_tmpl[self.esp_at:]

    # -- outbound --------------------------------------------------------------------------
    def protect_batch(self, packets, now):
        engine, sa = self.engine, self.sa
        n = len(packets)
        if n < MIN_BULK_BATCH and not self.fused_list_protect:
            return engine.protect_batch_generic(packets, now)
        limit = 0xFFFFFFFFFFFFFFFF if engine.esn else 0xFFFFFFFF
        if self.fused_list_protect and sa.seq + n <= min(limit, _INT64_SAFE) and (
                not sa._has_lifetime or _limits_allow(sa, n, 65535 * n)):
            packets = packets if type(packets) is list else list(packets)
            if sa._has_lifetime or sa.hard_expired:
                check_lifetime_before_protect(sa, now)
            try:
                done = self.crypto.esp_protect(packets, self.fused_tmpl, self.fused_flags, self.salt,
                                               self.block, sa.seq, engine.ident)
            except Exception:
                self._burn(n)
                raise
            if done.__class__ is tuple:
                self._count_protected(n, done[1])
                return done[0]
            # a packet the fused rules leave to the engine: the numpy path sorts the batch
        if n < MIN_BULK_BATCH:
            return engine.protect_batch_generic(packets, now)
        if self.framing:
            packets = packets if type(packets) is list else list(packets)
            lens_b, first = self.crypto.peek(packets, 8)
            lens = np.frombuffer(lens_b, np.int64)
        else:
            lens = np.array(list(map(len, packets)), np.int64)
            first = None
        # numpy's int64 holds the sequence numbers: an SA near 2^63 (ESN) takes the loop
        if sa.seq + n > min(limit, _INT64_SAFE) or (sa._has_lifetime and not _limits_allow(sa, n, int(lens.sum()))):
            return engine.protect_batch_generic(packets, now)
        if first is not None:
            pass
        elif (lens < 8).any():
            first = b"".join((p[:8] + bytes(8))[:8] for p in packets)
        else:
            first = b"".join(map(_FIRST8, packets))
        w = np.frombuffer(first, np.uint8).reshape(n, 8)
        version = w[:, 0] >> 4
        ihl = (w[:, 0] & 0x0F).astype(np.int64) * 4
        total = (w[:, 2].astype(np.int64) << 8) | w[:, 3]
        v4 = (version == 4) & (lens >= 20) & (ihl >= 20) & (total >= ihl) & (total <= lens)
        v6 = version == 6
        esp_len = 8 + self.ivb + lens + 2 + (-(lens + 2) % self.block) + self.icv + self.udp
        fits = (esp_len if engine.outer_v6 else 20 + esp_len) <= 0xFFFF
        ok = (v4 | v6) & fits & (lens >= 8)
        if sa._has_lifetime or sa.hard_expired:
            check_lifetime_before_protect(sa, now)
        if ok.all():
            return self._protect_run(packets, lens, w)
        out = []
        for start, end, good in _runs(ok):
            if good and end - start >= 1:
                out += self._protect_run(packets[start:end], lens[start:end], w[start:end])
                continue
            for p in packets[start:end]:
                try:
                    out.append(engine.protect(p, now))
                except Exception as exc:
                    exc.partial = out
                    raise
        return out

    def _burn(self, n: int) -> None:
        """A fused call that failed may have sealed some packets under the next n sequence
        numbers (IVs, for counter modes): never hand them out again.  A gap is harmless to the
        receiver (RFC 4303 3.3.3 leaves it to the window)."""
        self.sa.seq += n

    def _nonces(self, ivs, iv_dtype: str) -> bytes:
        """salt || IV of every packet (the AEAD nonces, RFC 4106 / 7634): the IVs are sequence
        numbers (">u8") going out, the received 8 bytes ("V8") coming in."""
        rows = np.empty(len(ivs), [("salt", f"V{len(self.salt)}"), ("iv", iv_dtype)])
        rows["salt"] = np.frombuffer(self.salt, f"V{len(self.salt)}")[0]
        rows["iv"] = ivs
        return rows.tobytes()

    def _ctr_blocks(self, ivs, iv_dtype: str) -> bytes:
        """salt || IV || counter 1 of every packet (AES-CTR, RFC 3686)."""
        rows = np.empty(len(ivs), [("salt", "V4"), ("iv", iv_dtype), ("ctr", ">u4")])
        rows["salt"] = np.frombuffer(self.salt, "V4")[0]
        rows["iv"], rows["ctr"] = ivs, 1
        return rows.tobytes()

    def _esn_aads(self, seqs) -> bytes:
        """SPI || 64-bit sequence number of every packet (the ESN AAD, RFC 4106 5)."""
        rows = np.empty(len(seqs), [("spi", "V4"), ("seq", ">u8")])
        rows["spi"] = np.frombuffer(self.engine.spi_bytes, "V4")[0]
        rows["seq"] = np.asarray(seqs).astype(np.uint64)
        return rows.tobytes()

    def _count_protected(self, n: int, octets: int) -> None:
        sa, engine = self.sa, self.engine
        sa.seq += n
        if not engine.outer_v6:
            engine.ident = (engine.ident + n) & 0xFFFF
        sa.stats.packets += n
        sa.stats.bytes += octets

    def protect_packets(self, batch: PacketBatch, now, esp_only: bool = False,
                        inner_csum: tuple[int, int] | None = None) -> PacketBatch:
        """`protect_batch` on a `PacketBatch`, in place where the backend frames batches
        (each packet's header goes into its headroom, its trailer and ICV into its tailroom):
        the result shares `batch.buf`.  Anything else goes through `protect_batch` and comes
        back as a new batch.  `esp_only`: the results are the ESP part alone (SPI first, what
        a UDP socket sends), and only its 16 header and IV bytes go before each packet.
        `inner_csum` (start, offset): complete each inner packet's partial checksum first
        (`ipsec_core.dataplane.batch.complete_checksums`)."""
        engine, sa = self.engine, self.sa
        n = len(batch)
        limit = 0xFFFFFFFFFFFFFFFF if engine.esn else 0xFFFFFFFF
        head = 8 + self.ivb if esp_only else self.head
        if (self.fused and n and batch.headroom >= head
                and (batch.tailroom >= self.block + 1 + self.icv or (
                    batch.tailroom >= 2 + self.icv and bool(
                        (-(batch.lengths + 2) % self.block <= batch.tailroom - 2 - self.icv).all())))
                and sa.seq + n <= min(limit, _INT64_SAFE)
                and (not sa._has_lifetime or _limits_allow(sa, n, 65535 * n))):
            if sa._has_lifetime or sa.hard_expired:
                check_lifetime_before_protect(sa, now)
            try:
                done = self.crypto.esp_protect_into(
                    batch.buf, batch.offsets, batch.lengths,
                    self.bare_tmpl if esp_only else self.fused_tmpl,
                    self.fused_flags | (FUSED_BARE if esp_only else 0), self.salt, self.block, sa.seq,
                    engine.ident, *(inner_csum or (-1, 0)), *((os.urandom(16 * n),) if self.fused_cbc else ()))
            except Exception:
                self._burn(n)
                raise
            if done.__class__ is tuple:
                self._count_protected(n, done[1])
                return PacketBatch(batch.buf, batch.offsets - head, np.frombuffer(done[0], np.int64))
        packets = batch.packets()
        if inner_csum is not None:
            packets = complete_checksums(packets, *inner_csum)
        wire = self.protect_batch(packets, now)
        if esp_only:
            at = self.esp_at
            wire = [w[at:] for w in wire]
        return PacketBatch.from_packets(wire)

    def _protect_run(self, packets, lens, w):
        if self.framing:
            return self._protect_framed(packets, lens, w)
        engine, sa = self.engine, self.sa
        n = len(packets)
        v6 = (w[:, 0] >> 4) == 6
        pad = -(lens + 2) % self.block
        plen = lens + pad + 2
        esp_len = 8 + self.ivb + plen + self.icv
        wire = self.head + plen + self.icv
        seq0 = sa.seq
        seqs = np.arange(seq0 + 1, seq0 + n + 1, dtype=np.uint64)
        heads = np.zeros(n, self.head_dt)
        heads["spi"] = np.frombuffer(engine.spi_bytes, "V4")[0]
        heads["seq"] = (seqs & 0xFFFFFFFF).astype(np.uint32)
        tos = np.where(v6, ((w[:, 0] & 0x0F) << 4) | (w[:, 1] >> 4), w[:, 1]).astype(np.int64)
        if engine.outer_v6:
            heads["w0"] = (6 << 28) | (tos << 20)
            heads["plen"] = esp_len + self.udp
            heads["nh"], heads["hop"] = self.proto, engine.ttl
            heads["addrs"] = np.frombuffer(engine.src + engine.dst, "V32")[0]
            ident = None
        else:
            ident = engine.ident
            heads["w0"] = 0x4500 | tos
            heads["tot"] = 20 + self.udp + esp_len
            heads["id"] = (np.arange(1, n + 1, dtype=np.int64) + ident) & 0xFFFF
            heads["frag"] = np.where(v6, 0, (w[:, 6].astype(np.int64) << 8) & 0x4000)
            heads["ttl"], heads["proto"] = engine.ttl, self.proto
            heads["addrs"] = np.frombuffer(engine.src + engine.dst, "V8")[0]
            words = np.ascontiguousarray(heads.view(np.uint8).reshape(n, self.head)[:, :20])
            s = words.view(">u2").astype(np.int64).sum(axis=1)
            s = (s & 0xFFFF) + (s >> 16)
            s = (s & 0xFFFF) + (s >> 16)
            heads["csum"] = 0xFFFF - s
        if self.udp:
            heads["sport"], heads["dport"] = engine.encap
            heads["ulen"] = 8 + esp_len
        cbc = not self.aead and not self.null and not engine.ctr
        if cbc:
            ivs = os.urandom(16 * n)
            heads["iv"] = np.frombuffer(ivs, "V16")
        elif self.ivb == 8:
            heads["iv"] = seqs
        nh = np.where(v6, IPPROTO_IPV6, IPPROTO_IPIP).tolist()
        tails = self.tails
        pieces = [None] * (3 * n)
        pieces[0::3] = heads.view(f"V{self.head}").tolist()
        pieces[1::3] = packets
        pieces[2::3] = list(map(tails.__getitem__, zip((lens % self.block).tolist(), nh)))
        buf = bytearray(b"".join(pieces))
        starts = np.zeros(n, np.int64)
        np.cumsum(wire[:-1], out=starts[1:])
        esp = starts + self.esp_at
        hi = (seqs >> np.uint64(32)).astype(">u4").tobytes() if engine.esn else None
        if self.aead:
            aad = self._esn_aads(seqs) if engine.esn else \
                heads.view(np.uint8).reshape(n, self.head)[:, self.esp_at:self.esp_at + 8].tobytes()
            self.crypto.seal_batch(buf, starts + self.head, plen, self._nonces(seqs, ">u8"), aad)
        else:
            ivb = ivs if cbc else bytes(16 * n) if self.null else self._ctr_blocks(seqs, ">u8")
            self.crypto.seal_batch(buf, esp, esp_len - self.icv, ivb, hi)
        out = slices(bytes(buf), starts, wire)
        sa.seq = seq0 + n
        if ident is not None:
            engine.ident = (ident + n) & 0xFFFF
        sa.stats.packets += n
        sa.stats.bytes += int(lens.sum())
        return out

    def _protect_framed(self, packets, lens, w):
        """`_protect_run` with the framing object: the header rows are computed here over the
        batch, the crypto object writes rows, packets, trailers and ICVs into the results."""
        engine, sa = self.engine, self.sa
        n = len(packets)
        v6 = (w[:, 0] >> 4) == 6
        esp_len = 8 + self.ivb + lens + 2 + (-(lens + 2) % self.block) + self.icv
        seq0 = sa.seq
        seqs = np.arange(seq0 + 1, seq0 + n + 1, dtype=np.uint64)
        rows = np.empty((n, self.head), np.uint8)
        rows[:] = self.template
        heads = rows.view(self.head_dt)[:, 0]
        heads["seq"] = seqs.astype(np.uint32)
        tos = np.where(v6, ((w[:, 0] & 0x0F) << 4) | (w[:, 1] >> 4), w[:, 1]).astype(np.int64)
        ident = None
        if engine.outer_v6:
            heads["w0"] = (6 << 28) | (tos << 20)
            heads["plen"] = esp_len + self.udp
        else:
            ident = engine.ident
            tot = 20 + self.udp + esp_len
            ids = (np.arange(ident + 1, ident + n + 1, dtype=np.int64)) & 0xFFFF
            frag = np.where(v6, 0, (w[:, 6].astype(np.int64) << 8) & 0x4000)
            heads["w0"] = 0x4500 | tos
            heads["tot"], heads["id"], heads["frag"] = tot, ids, frag
            s = self.csum_base + tos + tot + ids + frag
            s = (s & 0xFFFF) + (s >> 16)
            s = (s & 0xFFFF) + (s >> 16)
            heads["csum"] = 0xFFFF - s
        if self.udp:
            heads["ulen"] = 8 + esp_len
        cbc = not self.aead and not self.null and not engine.ctr
        if cbc:
            ivs = os.urandom(16 * n)
            heads["iv"] = np.frombuffer(ivs, "V16")
        elif self.ivb == 8:
            heads["iv"] = seqs
        nhs = np.where(v6, IPPROTO_IPV6, IPPROTO_IPIP).astype(np.uint8)
        if self.aead:
            aad = self._esn_aads(seqs) if engine.esn else rows[:, self.esp_at:self.esp_at + 8].tobytes()
            out = self.crypto.esp_seal(packets, rows, self.head, nhs, self.block,
                                       self._nonces(seqs, ">u8"), aad)
        else:
            ivb = ivs if cbc else bytes(16 * n) if self.null else self._ctr_blocks(seqs, ">u8")
            hi = (seqs >> np.uint64(32)).astype(">u4") if engine.esn else None
            out = self.crypto.esp_seal(packets, rows, self.head, nhs, self.block, ivb, hi)
        sa.seq = seq0 + n
        if ident is not None:
            engine.ident = (ident + n) & 0xFFFF
        sa.stats.packets += n
        sa.stats.bytes += int(lens.sum())
        return out

    # -- inbound ---------------------------------------------------------------------------
    def unprotect_batch(self, packets, now):
        engine, sa = self.engine, self.sa
        n = len(packets)
        if n < MIN_BULK_BATCH and not self.fused:
            return engine.unprotect_batch_generic(packets, now)
        if sa._has_lifetime and not _limits_allow(sa, n, 65535 * n):
            return engine.unprotect_batch_generic(packets, now)
        if (sa._has_lifetime or sa.hard_expired) and sa.lifetime_event_due(now):
            return engine.unprotect_batch_generic(packets, now)
        if self.fused and sa.replay.top < _INT64_SAFE:
            packets = packets if type(packets) is list else list(packets)
            return self._unprotect_fused(packets, None, None, now)[0]
        if n < MIN_BULK_BATCH:
            return engine.unprotect_batch_generic(packets, now)
        esp_at, hl = self.esp_at, self.head
        if self.framing_open:
            packets = packets if type(packets) is list else list(packets)
            lens_b, hb = self.crypto.peek(packets, hl)
            lens = np.frombuffer(lens_b, np.int64)
            h = np.frombuffer(hb, np.uint8).reshape(n, hl)
            buf = u = starts = None
            ok = lens >= esp_at + self.min_esp
        else:
            lens = np.array(list(map(len, packets)), np.int64)
            buf = bytearray(b"".join(packets))
            starts = np.zeros(n, np.int64)
            np.cumsum(lens[:-1], out=starts[1:])
            u = np.frombuffer(buf, np.uint8)
            ok = lens >= esp_at + self.min_esp
            at = np.where(ok, starts, 0)
            # The fixed part of every packet's first bytes; rows of short packets are not used.
            grab = np.minimum(at[:, None] + np.arange(hl), len(buf) - 1)
            h = u[grab]
        hv = h.view(self.in_dt)[:, 0]
        if self.outer == 20:
            ok &= (hv["w0"] >> 8 == 0x45) & (hv["tot"] == lens) & ((hv["frag"] & 0x3FFF) == 0) \
                & (hv["proto"] == self.proto)
        else:
            ok &= (hv["w0"] >> 28 == 6) & (hv["plen"] + 40 == lens) & (hv["nh"] == self.proto)
        if self.udp:
            ok &= hv["dport"] == engine.encap[1]
            # a non-ESP marker (IKE) is a zero SPI: never this SA's (checked below)
        ok &= hv["spi"] == self.spi_int
        body = lens - esp_at - 8 - self.ivb - self.icv
        if not self.aead and not self.null and not engine.ctr:
            ok &= body % 16 == 0
        low = hv["seq"].astype(np.int64)
        if engine.esn:
            ok &= low < _SEQ32 - sa.replay.size
        out: list = []
        replay = sa.replay
        done = 0
        for start, end, good in _runs(ok):
            i = start
            while i < end:
                if not good:
                    out.append(self._one(packets[i], now))
                    i += 1
                    continue
                # a run of increasing sequence numbers right of the window
                top = replay.top
                if top >= _INT64_SAFE:                 # past int64: the engine, one by one
                    out.append(self._one(packets[i], now))
                    i += 1
                    continue
                if engine.esn:
                    full = ((top >> 32) << 32) + low[i:end]
                else:
                    full = low[i:end]
                if int(full[0]) <= top:
                    out.append(self._one(packets[i], now))
                    i += 1
                    continue
                inc = np.flatnonzero(full[1:] <= full[:-1])
                j = i + (int(inc[0]) + 1 if len(inc) else end - i)
                out += self._unprotect_run(packets, buf, u, None if starts is None else starts[i:j],
                                           lens[i:j], h[i:j], full[:j - i], i, now)
                i = j
            done = end
        assert done == n
        return out

    def _unprotect_fused(self, src, offsets, lengths, now, bare: bool = False):
        """The fused call over `src` (a list of packets, or a buffer with `offsets` and
        `lengths`), with the engine deciding each packet the call leaves and the call resumed
        after it.  Returns (verdicts, parts): with a list, verdicts is the `unprotect_batch`
        list; with a buffer, verdicts is None and parts lists, in order, (plain, inner_at,
        inner_len, codes) per fused stretch and ("one", index, verdict) per engine packet."""
        sa, crypto = self.sa, self.crypto
        replay, stats = sa.replay, sa.stats
        listed = offsets is None
        n = len(src) if listed else len(offsets)
        tmpl, flags = (self.bare_tmpl, self.fused_flags | FUSED_BARE) if bare else (self.fused_tmpl, self.fused_flags)
        min_len = self.min_esp if bare else self.fused_min
        out: list | None = [] if listed else None
        parts: list = []
        i = 0
        while i < n:
            if replay.top >= _INT64_SAFE:
                stop = i
            else:
                if listed:
                    chunk = src[i:] if i else src
                    res = crypto.esp_unprotect(chunk, None, None, tmpl, flags, self.salt, replay.top,
                                               replay.size, min_len)
                else:
                    res = crypto.esp_unprotect(src, offsets[i:], lengths[i:], tmpl, flags, self.salt,
                                               replay.top, replay.size, min_len)
                k, codes, seqs, plain, iat, ilen, accepted, octets, inners = res
                if accepted:
                    if accepted == k:
                        _advance(replay, np.frombuffer(seqs, np.int64))
                    else:
                        ok = np.frombuffer(codes, np.uint8) == 0
                        _advance(replay, np.frombuffer(seqs, np.int64)[ok])
                    stats.packets += accepted
                    stats.bytes += octets
                if listed:
                    if accepted < k:
                        why = PacketDropped(DropReason.AUTH_FAILED, "AEAD tag mismatch")
                        inners = [why if v is None else v for v in inners]
                    out += inners
                elif k:
                    parts.append((plain, np.frombuffer(iat, np.int64), np.frombuffer(ilen, np.int64),
                                  codes))
                stop = i + k
            if stop >= n:
                break
            if listed:
                one = src[stop]
                out.append(self._one(self.engine.received_header(len(one)) + one if bare else one, now))
            else:
                o = int(offsets[stop])
                one = bytes(src[o:o + int(lengths[stop])])
                parts.append(("one", stop, self._one(self.engine.received_header(len(one)) + one if bare else one, now)))
            i = stop + 1
        return out, parts

    def unprotect_packets(self, batch: PacketBatch, now, esp_only: bool = False):
        """`unprotect_batch` on a `PacketBatch`: (a PacketBatch of the accepted inner packets,
        in order, in a buffer of its own; the list of `PacketDropped` for the others).  Where
        the backend frames batches no Python object is made per accepted packet.  `esp_only`:
        the packets are the ESP part alone (SPI first, as a UDP socket receives them)."""
        n = len(batch)
        sa = self.sa
        if not (self.fused and n and sa.replay.top < _INT64_SAFE) or (
                sa._has_lifetime and not _limits_allow(sa, n, 65535 * n)) or (
                (sa._has_lifetime or sa.hard_expired) and sa.lifetime_event_due(now)):
            packets = batch.packets()
            if esp_only:
                packets = [self.engine.received_header(len(p)) + p for p in packets]
            return _split(self.unprotect_batch(packets, now))
        _, parts = self._unprotect_fused(batch.buf, batch.offsets, batch.lengths, now, esp_only)
        if len(parts) == 1 and parts[0][0] != "one" and parts[0][3].count(0) == len(parts[0][3]):
            plain, iat, ilen, _ = parts[0]
            return PacketBatch(plain, iat, ilen), []
        inners, drops = [], []
        why = PacketDropped(DropReason.AUTH_FAILED, "AEAD tag mismatch")
        for part in parts:
            if part[0] == "one":
                (drops if part[2].__class__ is PacketDropped else inners).append(part[2])
                continue
            plain, iat, ilen, codes = part
            for o, ln, c in zip(iat.tolist(), ilen.tolist(), codes):
                if c:
                    drops.append(why)
                else:
                    inners.append(plain[o:o + ln])
        return PacketBatch.from_packets(inners), drops

    def _one(self, packet, now):
        try:
            return self.engine.unprotect(packet, now)
        except PacketDropped as drop:
            return drop

    def _unprotect_run(self, packets, buf, u, starts, lens, h, seqs, first, now):
        engine, sa = self.engine, self.sa
        n = len(lens)
        icv = self.icv
        ct_len = lens - self.head - icv
        received_ivs = np.ascontiguousarray(h[:, self.esp_at + 8:self.esp_at + 16]).view("V8")[:, 0] \
            if self.ivb == 8 else None
        if self.aead:
            nonces = self._nonces(received_ivs, "V8")
            aad = self._esn_aads(seqs) if engine.esn else h[:, self.esp_at:self.esp_at + 8].tobytes()
            why = "AEAD tag mismatch"
        else:
            if self.null:
                ivb = bytes(16 * n)
            elif engine.ctr:
                ivb = self._ctr_blocks(received_ivs, "V8")
            else:
                ivb = h[:, self.esp_at + 8:self.esp_at + 24].tobytes()
            why = "ICV mismatch"
        if buf is None:
            # framed: the plaintexts come back to back in a buffer of their own
            sub = packets[first:first + n]
            if self.aead:
                verdicts, data = self.crypto.esp_open(sub, self.head, ct_len, nonces, aad)
            else:
                verdicts, data = self.crypto.esp_open(sub, self.esp_at, lens - self.esp_at - icv, ivb)
            u = np.frombuffer(data, np.uint8)
            inner_at = np.zeros(n, np.int64)
            np.cumsum(ct_len[:-1], out=inner_at[1:])
        else:
            if self.aead:
                verdicts = self.crypto.open_batch(buf, starts + self.head, ct_len, nonces, aad)
            else:
                hi = (seqs >> 32).astype(">u4").tobytes() if engine.esn else None
                verdicts = self.crypto.open_batch(buf, starts + self.esp_at, lens - self.esp_at - icv,
                                                  ivb, hi)
            data = None
            inner_at = starts + self.head
        passed = np.frombuffer(verdicts, np.uint8).astype(bool)
        # Trailer: pad length and next header before the ICV; padding 1, 2, ... before them.
        end = inner_at + ct_len
        # the last 18 bytes: up to 16 of padding, pad length, next header (one gather)
        t = u[np.maximum(end[:, None] + _BACK18, 0)]
        pad = t[:, 16].astype(np.int64)
        nh = t[:, 17]
        body = ct_len - 2 - pad
        small = np.minimum(pad, 15)
        pad_ok = (pad <= 15) & ((t[:, :16] == self.pad_rows[small]) | ~self.pad_mask[small]).all(axis=1)
        ih = u[np.minimum(inner_at[:, None] + _FWD8, len(u) - 1)]
        iv = ih.view(_INNER_DT)[:, 0]
        iv4 = (nh == IPPROTO_IPIP) & ((ih[:, 0] >> 4) == 4)
        iv6 = (nh == IPPROTO_IPV6) & ((ih[:, 0] >> 4) == 6)
        i_ihl = (ih[:, 0] & 0x0F).astype(np.int64) * 4
        i_tot = iv["tot"].astype(np.int64)
        i6_len = 40 + iv["plen"].astype(np.int64)
        inner_len = np.where(iv4, i_tot, i6_len)
        shape_ok = np.where(iv4, (body >= 20) & (i_ihl >= 20) & (i_tot >= i_ihl) & (i_tot <= body),
                            iv6 & (body >= 40) & (i6_len <= body))
        outer_ecn = (h[:, 1] & 3) if self.outer == 20 else ((h[:, 1] >> 4) & 3)
        inner_ecn = np.where(iv4, ih[:, 1] & 3, (ih[:, 1] >> 4) & 3)
        # RFC 6040 4.2: only where the inner codepoint passes unchanged; a rewrite or a drop
        # is the engine's (it is rare: outer CE, or ECT(1) outside ECT(0)).
        ecn_ok = ~((outer_ecn == 3) & (inner_ecn != 3)) & ~((inner_ecn == 2) & (outer_ecn == 1))
        good = passed & pad_ok & (body >= 0) & (iv4 | iv6) & shape_ok & ecn_ok
        odd = passed & ~good
        cut = self.crypto.cut if self.framing else _slices
        inners = cut(data if data is not None else bytes(buf), inner_at,
                     np.where(good, inner_len, 0))
        replay, stats = sa.replay, sa.stats
        if not odd.any():
            # The common case: every packet that verified is accepted, in increasing order
            # right of the window, so the window moves once over all of them.
            accepted = seqs[passed]
            if len(accepted):
                _advance(replay, accepted)
                stats.packets += len(accepted)
                stats.bytes += int(inner_len[passed].sum())
            if len(accepted) < n:
                for k in np.flatnonzero(~passed).tolist():
                    inners[k] = PacketDropped(DropReason.AUTH_FAILED, why)
            return inners
        seq_list = seqs.tolist()
        passed_l, odd_l = passed.tolist(), odd.tolist()
        out = []
        octets = accepted = 0
        for k in range(n):
            if odd_l[k]:
                # the engine decides, on the packet as received, with the window synced
                stats.packets += accepted
                stats.bytes += octets
                accepted = octets = 0
                out.append(self._one(packets[first + k], now))
                continue
            if not passed_l[k]:
                out.append(PacketDropped(DropReason.AUTH_FAILED, why))
                continue
            replay.update(seq_list[k])
            inner = inners[k]
            accepted += 1
            octets += len(inner)
            out.append(inner)
        stats.packets += accepted
        stats.bytes += octets
        return out


def _split(verdicts):
    """An `unprotect_batch` list -> (PacketBatch of the inner packets, list of drops)."""
    drops = [v for v in verdicts if v.__class__ is PacketDropped]
    inners = [v for v in verdicts if v.__class__ is not PacketDropped] if drops else verdicts
    return PacketBatch.from_packets(inners), drops


def _slices(data, offsets, lengths):
    return slices(data, offsets, lengths)


def _advance(replay, seqs) -> None:
    """`replay.update(s)` for every s of `seqs` (increasing, all right of the window), as one
    shift of the bitmap and one OR of the new bits."""
    size, top = replay.size, replay.top
    last = int(seqs[-1])
    k = len(seqs)
    shift = last - top
    mask = (1 << size) - 1
    bitmap = (replay.bitmap << shift) & mask if shift < size else 0
    if last - int(seqs[0]) == k - 1:              # consecutive: a run of k bits
        bitmap |= (1 << min(k, size)) - 1
    else:
        back = last - seqs
        back = back[back < size]
        bits = np.zeros(int(back.max()) + 1, bool)
        bits[back] = True
        bitmap |= int.from_bytes(np.packbits(bits, bitorder="little").tobytes(), "little")
    replay.top, replay.bitmap = last, bitmap


_FIRST8 = operator.itemgetter(slice(0, 8))
_BACK18 = np.arange(-18, 0) if np is not None else None
_FWD8 = np.arange(8) if np is not None else None
# The inner header's first 8 bytes: IPv4 total length at 2, IPv6 payload length at 4.
_INNER_DT = np.dtype({"names": ["tot", "plen"], "formats": [">u2", ">u2"], "offsets": [2, 4],
                      "itemsize": 8}) if np is not None else None

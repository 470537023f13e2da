"""The numpy-vectorised batch paths of `esp_vec` give exactly what one-by-one processing gives.

Shows:
1. clean batches of plain IPv4 packets (at least MIN_PROTECT_BATCH / MIN_UNPROTECT_BATCH)
   really take the vector path: the scalar fast loop of `esp_fast` they fall back to is
   wrapped and counted, and is not called;
2. the same bytes, verdicts and `sa.state()` as `protect` / `unprotect` in order, for every
   AEAD the vector path serves (GCM 8/12/16-byte ICVs, CCM with its 3-byte salt, ChaCha20-
   Poly1305), with and without UDP encapsulation, batches of 32, 64, 200 and 256; mixed sizes
   (every length mod 4 inside one batch), uniform sizes with varied TOS, and bulk batches (one
   size, one TOS: the `uniform` shortcut of unprotect); TOS values with ECN bits, DF set/unset;
3. a batch with one uncommon packet in it (IPv6 or optioned inner, short or malformed packets,
   a forged ICV, truncation, replay, reordering, a wrong SPI, ECN to combine, padding longer
   than 3 bytes, ...) is handed whole to the scalar loop and still matches one-by-one;
4. (replay window and lifetimes: `test_esp_vec_scenarios.py`, for both modes) a lifetime far
   away keeps the vector path;
6. without numpy the scalar paths are used unchanged;
7. bytearray and memoryview packets.

Writing this file found four differences from one-by-one processing, since fixed (tests below):
an IPv4 total length under 20, an inner packet too big for IP's length field (protect() now
refuses it as too_big, before spending a sequence number), memoryview packets, and `.partial`
on an SA whose hard lifetime had passed.
"""
import dataclasses
import random

import pytest
from scapy.layers.inet import IP, UDP, IPOption_RR
from scapy.layers.inet6 import IPv6

from ipsec_core.dataplane.esp import fast as esp_fast

from ipsec_core.dataplane.esp import vec as esp_vec
from ipsec_core.crypto.registry import get_registry
from ipsec_core.errors import DropReason, LocalError, PacketDropped
from ipsec_core.wire.ip import build_ipv4, fix_ipv4_header
from ipsec_core.dataplane.sa import Lifetime, SecurityAssociation

from dataplane.test_batch import configs, pair_of

pytestmark = pytest.mark.skipif(not esp_vec.available(), reason="numpy is not installed")

SRC, DST = bytes((198, 51, 100, 1)), bytes((203, 0, 113, 1))
TOS = (0x00, 0x01, 0x02, 0x03, 0x10, 0xB8, 0xB9, 0xBA, 0xBB, 0xFE)   # DSCP with each ECN codepoint
BATCHES = (32, 64, 200, 256)
ENCAP = (4500, 4500)
MIN_P, MIN_U = esp_vec.MIN_PROTECT_BATCH, esp_vec.MIN_UNPROTECT_BATCH
MIN = esp_vec.MIN_BATCH          # both directions vectorised from here


# -- packets ----------------------------------------------------------------------------------
def ipv4(rng: random.Random, size: int, *, tos: int = 0, df: bool = False, ident: int = 0) -> bytes:
    """A plain IPv4/UDP packet (IHL 5) of exactly `size` bytes."""
    return build_ipv4(src=SRC, dst=DST, proto=17, payload_len=size - 20, tos=tos, ident=ident,
                      flags_frag=0x4000 if df else 0) + rng.randbytes(size - 20)


def clean(rng: random.Random, n: int, sizes: str = "mixed") -> list[bytes]:
    """`n` packets the vector path takes.  "mixed": 20..1500 bytes, the length mod 4 cycling so
    every batch holds all four trailer lengths; "uniform": all 1400 bytes; "bulk": all 1400
    bytes with one TOS."""
    edges = [20, 21, 22, 23, 1500, 1497, 1498, 1499]
    bulk_tos = rng.choice(TOS)
    out = []
    for i in range(n):
        if sizes == "bulk":
            out.append(ipv4(rng, 1400, tos=bulk_tos, df=rng.random() < 0.5, ident=i))
            continue
        if sizes == "uniform":
            size = 1400
        elif i < len(edges):
            size = edges[i]
        else:
            size = (rng.randrange(20, 1497) & ~3) + i % 4
        out.append(ipv4(rng, size, tos=rng.choice(TOS), df=rng.random() < 0.5, ident=i))
    return out


def chunks(items: list, sizes) -> list[list]:
    """`items` cut into consecutive batches of the given sizes (the last takes the rest)."""
    out, at = [], 0
    for size in sizes:
        out.append(items[at:at + size])
        at += size
    if at < len(items):
        out.append(items[at:])
    return [c for c in out if c]


def esp_offset(sa) -> int:
    return 28 if sa.engine.encap else 20


def with_outer(wire: bytes, changes: dict[int, int] = {}) -> bytes:
    """`wire` with outer IPv4 header bytes changed ({offset: value}) and its checksum fixed."""
    w = bytearray(wire)
    for at, value in changes.items():
        w[at] = value
    fix_ipv4_header(w)
    return bytes(w)


def repad(wire: bytes, inbound, pad_len: int) -> bytes:
    """`wire` re-encrypted with `pad_len` bytes of (valid, RFC 4303 2.4) padding."""
    eng = inbound.engine
    at = esp_offset(inbound)
    aad, nonce = wire[at:at + 8], eng.salt + wire[at + 8:at + 16]
    pt = eng.aead.decrypt(nonce, wire[at + 16:], aad)
    body = pt[:len(pt) - 2 - pt[-2]]
    out = bytearray(wire[:at + 16] + eng.aead.encrypt(
        nonce, body + bytes(range(1, pad_len + 1)) + bytes((pad_len, pt[-1])), aad))
    out[2:4] = len(out).to_bytes(2, "big")
    if eng.encap:
        out[24:26] = (len(out) - 20).to_bytes(2, "big")
    fix_ipv4_header(out)
    return bytes(out)


# -- running both ways ------------------------------------------------------------------------
class Counted:
    """A scalar fast loop of `esp_fast`, counting the batches handed to it."""

    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, packets, now):
        self.calls += 1
        return self.fn(packets, now)


def instrument(sa) -> tuple[Counted, Counted]:
    """Rebuild the SA's batch paths over counted scalar loops: (protect, unprotect) counters."""
    engine = sa.engine
    scalar_protect, scalar_unprotect = (Counted(f) for f in esp_fast.fast_paths(engine))
    engine._fast_protect, engine._fast_unprotect = esp_vec.vector_paths(
        engine, scalar_protect, scalar_unprotect)
    return scalar_protect, scalar_unprotect


def verdict(v):
    return ("drop", v.reason, str(v)) if isinstance(v, PacketDropped) else v


def protect_single(sa, packets, now=0.0):
    """One by one until the first error: (outputs, (error type, drop reason) or None)."""
    out = []
    try:
        for p in packets:
            out.append(sa.protect(p, now=now))
    except Exception as exc:
        return out, (type(exc), getattr(exc, "reason", None))
    return out, None


def protect_batch(sa, packets, now=0.0):
    try:
        return sa.protect_batch(packets, now=now), None
    except Exception as exc:
        return getattr(exc, "partial", "no .partial"), (type(exc), getattr(exc, "reason", None))


def unprotect_single(sa, packets, now=0.0) -> list:
    out = []
    for p in packets:
        try:
            out.append(sa.unprotect(p, now=now))
        except PacketDropped as drop:
            out.append(drop)
    return [verdict(v) for v in out]


def unprotect_batch(sa, packets, now=0.0) -> list:
    return [verdict(v) for v in sa.unprotect_batch(packets, now=now)]


@dataclasses.dataclass
class Rig:
    """Outbound and inbound SAs twice over: the one-by-one reference and the batched, counted one."""
    sender: SecurityAssociation          # one-by-one outbound (also makes the inbound traffic)
    out: SecurityAssociation             # batched outbound, same ident as `sender`
    ref: SecurityAssociation             # one-by-one inbound
    inb: SecurityAssociation             # batched inbound
    fallback_out: Counted
    fallback_in: Counted
    warm: list = dataclasses.field(default_factory=list)    # a first batch, for the tests' use


def rig(proposal: str = "aes128gcm16", **kw) -> Rig:
    out_cfg, in_cfg = configs(proposal, **kw)
    sender, out = pair_of(out_cfg)
    ref, inb = SecurityAssociation(in_cfg, now=0.0), SecurityAssociation(in_cfg, now=0.0)
    fallback_out, _ = instrument(out)
    _, fallback_in = instrument(inb)
    return Rig(sender, out, ref, inb, fallback_out, fallback_in)


def check_inbound(r: Rig, batches: list[list[bytes]], now=0.0) -> list:
    """Unprotect each batch both ways; verdicts and state must agree after every batch."""
    seen = []
    for batch in batches:
        one = unprotect_single(r.ref, batch, now)
        many = unprotect_batch(r.inb, batch, now)
        assert many == one
        assert r.inb.state() == r.ref.state()
        seen += one
    return seen


# -- 1. the vector path is taken ----------------------------------------------------------------
def test_sas_get_the_vector_paths():
    sa = SecurityAssociation(configs("aes128gcm16")[0], now=0.0)
    assert sa.engine._fast_protect.__module__ == "ipsec_core.dataplane.esp.vec"
    assert sa.engine._fast_unprotect.__module__ == "ipsec_core.dataplane.esp.vec"


@pytest.mark.parametrize("encap", [None, ENCAP], ids=["esp", "udp"])
def test_clean_batches_take_the_vector_path(encap):
    r = rig(encap=encap)
    packets = clean(random.Random(1), 3 * MIN_P)
    wire = r.out.protect_batch(packets[:MIN_P], now=0.0) + r.out.protect_batch(packets[MIN_P:], now=0.0)
    assert r.fallback_out.calls == 0
    assert wire == [r.sender.protect(p, now=0.0) for p in packets]
    assert all(type(w) is bytes for w in wire)
    inner = r.inb.unprotect_batch(wire[:MIN_U], now=0.0) + r.inb.unprotect_batch(wire[MIN_U:], now=0.0)
    assert r.fallback_in.calls == 0
    assert inner == packets and all(type(p) is bytes for p in inner)
    n = len(packets)
    assert r.inb.state() == (0, (n, (1 << 64) - 1), n, sum(map(len, packets)), {}, None, None)
    # One packet fewer than the threshold: the scalar loop, once per direction.
    more = clean(random.Random(2), MIN_P - 1)
    wire = r.out.protect_batch(more, now=0.0)
    assert wire == [r.sender.protect(p, now=0.0) for p in more] and r.fallback_out.calls == 1
    assert r.inb.unprotect_batch(wire[:MIN_U - 1], now=0.0) == more[:MIN_U - 1] and r.fallback_in.calls == 1


# -- 2. equality with one-by-one processing ------------------------------------------------------
def _cryptodome(proposal):
    ok = get_registry().get("cryptodome").available
    return pytest.param(proposal, "cryptodome", marks=pytest.mark.skipif(not ok, reason="no pycryptodome"),
                        id=f"{proposal}-cryptodome")


PROPOSALS = [pytest.param(p, "aesni", id=f"{p}-aesni") for p in
             ("aes128gcm16", "aes256gcm16", "aes128gcm8", "aes256gcm12", "aes128ccm16", "aes128ccm12",
              "chacha20poly1305")] + [_cryptodome("aes128gcm16"), _cryptodome("chacha20poly1305")]


@pytest.mark.parametrize("sizes", ["mixed", "uniform", "bulk"])
@pytest.mark.parametrize("encap", [None, ENCAP], ids=["esp", "udp"])
@pytest.mark.parametrize("proposal,backend", PROPOSALS)
def test_vector_batches_equal_single(proposal, backend, encap, sizes):
    r = rig(proposal, encap=encap, backend=backend)
    packets = clean(random.Random(f"{proposal}{encap}{sizes}"), sum(BATCHES), sizes)
    one = [r.sender.protect(p, now=0.0) for p in packets]
    batches = chunks(packets, BATCHES)
    many = [w for batch in batches for w in r.out.protect_batch(batch, now=0.0)]
    assert many == one
    assert r.out.state() == r.sender.state() and r.out.engine.ident == r.sender.engine.ident
    assert r.fallback_out.calls == sum(len(b) < MIN_P for b in batches)
    assert check_inbound(r, chunks(one, BATCHES)) == packets
    assert r.fallback_in.calls == sum(len(b) < MIN_U for b in batches)


# -- 3. a batch with one uncommon packet goes to the scalar loop, with the same result ----------
def _short(n):
    return lambda rng: b"\x45" + bytes(n - 1)


def _total_length(value):
    def make(rng):
        p = bytearray(ipv4(rng, 100))
        p[2:4] = value.to_bytes(2, "big")
        fix_ipv4_header(p)
        return bytes(p)
    return make


def ipv6_packet(rng=None) -> bytes:
    return bytes(IPv6(src="2001:db8:a::1", dst="2001:db8:b::1", tc=0xB9) / UDP() / b"six")


def optioned_packet(rng=None) -> bytes:
    return bytes(IP(src="198.51.100.1", dst="203.0.113.1", options=[IPOption_RR()]) / UDP() / b"opt")


DROP = (PacketDropped, DropReason.MALFORMED)
ODD_INNER = {   # name: (the packet, what one-by-one protect does with it: None or the error, fallback?)
    "ipv6": (ipv6_packet, None, True),
    "ipv4-options": (optioned_packet, None, True),
    "trailing-bytes": (lambda rng: ipv4(rng, 100) + b"tail", None, False),   # protected whole, by the vector path
    "version-5": (lambda rng: b"\x55" + rng.randbytes(39), (LocalError, None), True),
    "empty": (lambda rng: b"", (LocalError, None), True),
    "5-bytes": (_short(5), DROP, True),
    "12-bytes": (_short(12), DROP, True),
    "19-bytes": (_short(19), DROP, True),
    "total-length-over-packet": (_total_length(101), DROP, True),
    "oversized": (lambda rng: ipv4(rng, 65535), (PacketDropped, DropReason.TOO_BIG), True),
    "total-length-under-20": (_total_length(0), DROP, True),
}


@pytest.mark.parametrize("make,error,falls_back", list(ODD_INNER.values()), ids=list(ODD_INNER))
@pytest.mark.parametrize("encap", [None, ENCAP], ids=["esp", "udp"])
def test_protect_batch_with_one_uncommon_packet(make, error, falls_back, encap):
    check_protect_with_one_odd_packet(rig("aes128gcm16", encap=encap), clean, make, error, falls_back)


def check_protect_with_one_odd_packet(r: Rig, clean, make, error, falls_back) -> None:
    """A clean vector batch, then one with `make(rng)` at index 20 (`error`: what one-by-one
    protect raises for it, or None; `falls_back`: whether the batch goes to the loop), then a
    clean batch again: outputs or `.partial` and the error, state and fallbacks as expected."""
    rng = random.Random(4)
    warmup = clean(rng, MIN_P)
    assert r.out.protect_batch(warmup, now=0.0) == [r.sender.protect(p, now=0.0) for p in warmup]
    batch = clean(rng, MIN_P)
    batch.insert(20, make(rng))
    one = protect_single(r.sender, batch)
    assert protect_batch(r.out, batch) == one            # outputs or .partial, and the error
    assert one[1] == error and len(one[0]) == (20 if error else len(batch))
    assert r.out.state() == r.sender.state() and r.out.engine.ident == r.sender.engine.ident
    assert r.fallback_out.calls == falls_back            # the warm-up went vector; this batch?
    after = clean(rng, MIN_P)
    assert protect_batch(r.out, after) == protect_single(r.sender, after)
    assert r.out.state() == r.sender.state()
    assert r.fallback_out.calls == falls_back            # and the next batch went vector again


def _swap(batch, r):
    batch[10], batch[11] = batch[11], batch[10]


def _replace(k, fn):
    def mutate(batch, r):
        batch[k] = fn(batch[k], r)
    return mutate


def _append(make):
    def mutate(batch, r):
        batch.append(make(r))
    return mutate


def _cut(length, fix_total):
    def cut(w, r):
        w = w[:length(w, r)]
        return with_outer(w, {2: len(w) >> 8, 3: len(w) & 0xFF}) if fix_total and len(w) >= 20 else w
    return cut


def _flip(at):
    def flip(w, r):
        b = bytearray(w)
        b[at] ^= 0x01
        return bytes(b)
    return flip


def _outer_ecn(inner_tos, outer_ecn):
    def make(r):
        w = r.sender.protect(ipv4(random.Random(5), 60, tos=inner_tos), now=0.0)
        return with_outer(w, {1: (w[1] & 0xFC) | outer_ecn})
    return make


def _not_esp(w, r):
    if r.sender.engine.encap:
        b = bytearray(w)
        b[22:24] = (4501).to_bytes(2, "big")         # another UDP port
        return bytes(b)
    return with_outer(w, {9: 51})                    # IP protocol AH


AUTH, MALFORMED, REPLAY = DropReason.AUTH_FAILED, DropReason.MALFORMED, DropReason.REPLAY
ODD_WIRE = {          # name: (change to a 48-packet batch, the one drop reason it causes or None)
    "forged-icv": (_replace(20, _flip(-1)), AUTH),
    "forged-ciphertext": (_replace(20, _flip(60)), AUTH),
    "forged-seq": (_replace(20, lambda w, r: _flip(esp_offset(r.sender) + 6)(w, r)), AUTH),
    "truncated-to-0": (_replace(20, _cut(lambda w, r: 0, False)), MALFORMED),
    "truncated-to-7": (_replace(20, _cut(lambda w, r: 7, False)), MALFORMED),
    "truncated-in-header": (_replace(20, _cut(lambda w, r: esp_offset(r.sender) + 10, False)), MALFORMED),
    "truncated-by-1": (_replace(20, _cut(lambda w, r: len(w) - 1, False)), MALFORMED),
    "truncated-by-1-total-fixed": (_replace(20, _cut(lambda w, r: len(w) - 1, True)), AUTH),
    "truncated-under-min-total-fixed": (_replace(20, _cut(
        lambda w, r: esp_offset(r.sender) + r.sender.engine.min_esp - 1, True)), DropReason.TRUNCATED),
    "replayed-inside-batch": (lambda batch, r: batch.insert(25, batch[10]), REPLAY),
    "replayed-from-previous-batch": (lambda batch, r: batch.insert(0, r.warm[-3]), REPLAY),
    "replayed-as-first-and-last": (lambda batch, r: batch.append(batch[0]), REPLAY),
    "out-of-order": (_swap, None),
    "wrong-spi": (_replace(15, lambda w, r: w[:esp_offset(r.sender)] + b"\0\0\x42\x43"
                           + w[esp_offset(r.sender) + 4:]), DropReason.UNKNOWN_SPI),
    "not-esp": (_replace(15, _not_esp), DropReason.NOT_ESP),
    "outer-fragment": (_replace(15, lambda w, r: with_outer(w, {6: w[6] | 0x20})), MALFORMED),
    "outer-ce-inner-ect0": (_append(_outer_ecn(0x02, 3)), None),         # inner becomes CE
    "outer-ect1-inner-ect0": (_append(_outer_ecn(0xB8 | 0x02, 1)), None),  # inner becomes ECT(1)
    "outer-ce-inner-not-ect": (_append(_outer_ecn(0x00, 3)), DropReason.ECN_DROP),
    "outer-ect0-inner-ce": (_append(_outer_ecn(0x03, 2)), None),
    "dummy": (_append(lambda r: r.sender.dummy(40, now=0.0)), DropReason.DUMMY),
    "tfc-padding": (_append(lambda r: r.sender.protect(ipv4(random.Random(6), 40) + bytes(64), now=0.0)), None),
    "inner-ipv6": (_append(lambda r: r.sender.protect(ipv6_packet(), now=0.0)), None),
    "inner-ipv4-options": (_append(lambda r: r.sender.protect(optioned_packet(), now=0.0)), None),
}


@pytest.mark.parametrize("mutate,reason", list(ODD_WIRE.values()), ids=list(ODD_WIRE))
@pytest.mark.parametrize("encap", [None, ENCAP], ids=["esp", "udp"])
def test_unprotect_batch_with_one_uncommon_packet(mutate, reason, encap):
    r = rig("aes128gcm16", encap=encap)
    rng = random.Random(7)
    r.warm = [r.sender.protect(p, now=0.0) for p in clean(rng, MIN_U)]
    batch = [r.sender.protect(p, now=0.0) for p in clean(rng, 48)]
    mutate(batch, r)
    after = [r.sender.protect(p, now=0.0) for p in clean(rng, MIN_U)]
    seen = check_inbound(r, [r.warm, batch, after])
    assert [v[1] for v in seen if isinstance(v, tuple)] == ([reason] if reason else [])
    assert r.fallback_in.calls == 1              # only the batch with the odd packet


BULK_ODD = {   # name: (a packet for the bulk batch, given the SAs and a bulk inner packet; fallback?)
    "dummy-same-size": (lambda r, p: r.sender.dummy(1400, now=0.0), True),
    "tfc-padded-same-size": (lambda r, p: r.sender.protect(ipv4(random.Random(20), 1380, tos=p[1]) + bytes(20), now=0.0), True),
    "inner-dscp-differs": (lambda r, p: with_outer(r.sender.protect(ipv4(random.Random(21), 1400, tos=p[1] ^ 0x04), now=0.0),
                                                   {1: p[1]}), False),
    "outer-ecn-differs": (lambda r, p: with_outer(r.sender.protect(p, now=0.0), {1: p[1] ^ 0x01}), True),
}


@pytest.mark.parametrize("at", [0, 20, -1])
@pytest.mark.parametrize("make,falls_back", list(BULK_ODD.values()), ids=list(BULK_ODD))
def test_bulk_batch_with_one_odd_packet(make, falls_back, at):
    """Bulk batches (one size, one TOS) take unprotect's `uniform` shortcut; one packet of the
    same size that differs must make it decline (to the full vector checks, or the scalar loop)."""
    r = rig()
    packets = clean(random.Random(22), 2 * MIN_U, "bulk")
    wire = [r.sender.protect(p, now=0.0) for p in packets[:MIN_U]]
    batch = []
    for i, p in enumerate(packets[MIN_U:]):
        batch.append(make(r, p) if i == at % MIN_U else r.sender.protect(p, now=0.0))
    assert len(set(map(len, batch))) == 1
    check_inbound(r, [wire, batch])
    assert r.fallback_in.calls == falls_back


@pytest.mark.parametrize("inner_tos,outer_ecn", [(0x02, 3), (0x00, 3), (0x01, 2), (0xB9, 0)])
def test_bulk_batch_with_every_outer_ecn_changed(inner_tos, outer_ecn):
    """One size, one outer TOS, but outer ECN != inner ECN in every packet: RFC 6040 decides."""
    r = rig()
    rng = random.Random(23)
    wire = [r.sender.protect(ipv4(rng, 1400, tos=inner_tos, ident=i), now=0.0) for i in range(2 * MIN_U)]
    wire = [with_outer(w, {1: (w[1] & 0xFC) | outer_ecn}) for w in wire]
    check_inbound(r, [wire[:MIN_U], wire[MIN_U:]])
    assert r.fallback_in.calls == 2


@pytest.mark.parametrize("proposal", ["aes128gcm16", "aes128ccm12", "chacha20poly1305"])
@pytest.mark.parametrize("encap", [None, ENCAP], ids=["esp", "udp"])
@pytest.mark.parametrize("extra", [1, 2, 63])
def test_padding_longer_than_3_bytes_is_accepted(proposal, encap, extra):
    """RFC 4303 2.4 allows 0..255 bytes of padding; 4-byte alignment kept, `extra` * 4 more."""
    r = rig(proposal, encap=encap)
    rng = random.Random(8)
    packets = clean(rng, 2 * MIN_U)
    r.warm = [r.sender.protect(p, now=0.0) for p in packets[:MIN_U]]
    batch = [r.sender.protect(p, now=0.0) for p in packets[MIN_U:]]
    body = len(packets[MIN_U + 5])
    batch[5] = repad(batch[5], r.ref, -(body + 2) % 4 + 4 * extra)
    assert check_inbound(r, [r.warm, batch]) == packets      # accepted, the same inner packet
    assert r.fallback_in.calls == 1


# -- 4, 5. replay window and lifetimes: tests/dataplane/test_esp_vec_scenarios.py (both modes) --------------


def test_lifetime_far_away_keeps_the_vector_path():
    out_cfg, in_cfg = configs("aes128gcm16", soft=Lifetime(packets=1000), hard=Lifetime(bytes=10**8))
    single, batch = pair_of(out_cfg)
    fallback, _ = instrument(batch)
    packets = clean(random.Random(13), 64)
    assert batch.protect_batch(packets, now=0.0) == [single.protect(p, now=0.0) for p in packets]
    assert batch.state() == single.state() and fallback.calls == 0


# -- 6. without numpy ------------------------------------------------------------------------------
def test_without_numpy_the_scalar_paths_are_used(monkeypatch):
    monkeypatch.setattr(esp_vec, "np", None)
    assert not esp_vec.available()
    out_cfg, in_cfg = configs("aes128gcm16", encap=ENCAP)
    engine = SecurityAssociation(out_cfg, now=0.0).engine
    scalar = esp_fast.fast_paths(engine)
    paths = esp_vec.vector_paths(engine, *scalar)
    assert paths[0] is scalar[0] and paths[1] is scalar[1]
    assert esp_vec.vector_paths(engine, None, None) == (None, None)
    single, batch = pair_of(out_cfg)
    assert batch.engine._fast_protect.__module__ == "ipsec_core.dataplane.esp.fast"
    packets = clean(random.Random(15), 100)
    packets.insert(40, ipv6_packet())
    wire = [single.protect(p, now=0.0) for p in packets]
    assert batch.protect_batch(packets[:64], now=0.0) + batch.protect_batch(packets[64:], now=0.0) == wire
    assert batch.state() == single.state()
    ref, inb = SecurityAssociation(in_cfg, now=0.0), SecurityAssociation(in_cfg, now=0.0)
    assert inb.engine._fast_unprotect.__module__ == "ipsec_core.dataplane.esp.fast"
    stream = wire[:30] + [wire[3], _flip(-1)(wire[31], None)] + wire[30:]
    assert unprotect_batch(inb, stream) == unprotect_single(ref, stream)
    assert inb.state() == ref.state()


# -- 7. packets that are not bytes -------------------------------------------------------------------
def test_bytearray_packets():
    r = rig(encap=ENCAP)
    packets = clean(random.Random(16), 2 * MIN)
    one = [r.sender.protect(bytearray(p), now=0.0) for p in packets]
    assert r.out.protect_batch([bytearray(p) for p in packets], now=0.0) == one
    assert r.out.state() == r.sender.state() and r.fallback_out.calls == 0
    assert check_inbound(r, [[bytearray(w) for w in one]]) == packets
    assert r.fallback_in.calls == 0


def test_memoryview_packets_inbound():
    r = rig()
    packets = clean(random.Random(17), 2 * MIN)
    wire = [r.sender.protect(p, now=0.0) for p in packets]
    assert check_inbound(r, [[memoryview(w) for w in wire]]) == packets
    assert r.fallback_in.calls == 0


def test_memoryview_packets_outbound():
    r = rig()
    packets = clean(random.Random(18), 2 * MIN)
    one = protect_single(r.sender, [memoryview(p) for p in packets])
    assert one[1] is None
    assert protect_batch(r.out, [memoryview(p) for p in packets]) == one
    assert r.out.state() == r.sender.state()

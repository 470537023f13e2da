"""The numpy batch paths for transport mode (`esp_vec.transport_paths`) give exactly what
one-by-one `protect` / `unprotect` give.

Shows:
1. clean batches (at least MIN_PROTECT_BATCH / MIN_UNPROTECT_BATCH IPv4 packets without
   options) really take the vector path: the paths are rebuilt over the engine's generic loops
   wrapped in a counter, which is not called; one packet fewer than the threshold gives exactly
   one fallback.  Transport AEAD SAs get these paths by default; tunnel, ESN and non-AEAD SAs
   get (None, None) from `transport_paths`;
2. the same bytes, verdicts and `sa.state()` as one-by-one processing for every AEAD (GCM
   8/12/16-byte ICVs, CCM with its 3-byte salt, ChaCha20-Poly1305; aesni, and cryptodome where
   installed), with and without UDP encapsulation, batches of 32, 64, 200 and 256, mixed sizes
   (every length mod 4 in one batch), mixed upper-layer protocols (including 0, 4, 41, 50, 255),
   TOS / TTL / DF, and IPv4 header checksums that are wrong on input;
3. a batch with one odd packet at index 20 goes to the generic loop and still matches
   one-by-one (protect: the exception and `.partial` too); a few odd packets the vector path
   handles itself (bytearray, unaligned padding) are shown to need no fallback;
4, 5. replay window and lifetimes: `test_esp_vec_scenarios.py`, for both modes;
6. without numpy `transport_paths` gives (None, None) and the SA still matches one-by-one.

Found while writing this file, since fixed: an inbound batch in which no packet reaches the
lifetime check (all wrong SPI, say) marked a passed time lifetime as reached, where one-by-one
processing leaves the SA unchanged (`test_lifetime_not_checked_when_no_packet_gets_that_far`
in `test_esp_vec_scenarios.py`;
the batch paths now ask `sa.lifetime_event_due`).  Not vectorised, by design: an inbound batch
holding an IPv4 packet of 20..22 bytes (a 4-byte ESP plaintext) goes to the generic loop; the
results are the same (`test_tiny_payloads_equal_single`).
"""
import random
import struct

import pytest

from ipsec_core.dataplane.esp import vec as esp_vec
from ipsec_core.crypto.registry import get_registry
from ipsec_core.errors import DropReason, LocalError, PacketDropped
from ipsec_core.wire.ip import build_ipv4, fix_ipv4_header
from ipsec_core.dataplane.sa import SecurityAssociation

from dataplane.test_batch import configs, pair_of
from dataplane.test_esp_vec import (Counted, Rig, _cut, _flip, check_inbound, check_protect_with_one_odd_packet,
                          chunks, esp_offset, ipv6_packet, optioned_packet, unprotect_batch,
                          unprotect_single, with_outer)

pytestmark = pytest.mark.skipif(not esp_vec.available(), reason="numpy is not installed")

SRC, DST = bytes((198, 51, 100, 1)), bytes((203, 0, 113, 1))
PROTOS = (17, 6, 1, 0, 4, 41, 50, 255)      # UDP, TCP, ICMP and unusual (legal) next headers
TOS = (0x00, 0x02, 0x03, 0x10, 0xB8, 0xBB, 0xFE)
TTLS = (1, 2, 64, 128, 255)
BATCHES = (32, 64, 200, 256)
ENCAP = (4500, 4500)
MIN_P, MIN_U = esp_vec.MIN_PROTECT_BATCH, esp_vec.MIN_UNPROTECT_BATCH
AUTH, MALFORMED, REPLAY = DropReason.AUTH_FAILED, DropReason.MALFORMED, DropReason.REPLAY


# -- packets ----------------------------------------------------------------------------------
def ipv4(rng: random.Random, size: int, *, proto: int = 17, tos: int = 0, ttl: int = 64,
         frag: int = 0, ident: int = 0, bad_checksum: bool = False) -> bytes:
    """An IPv4 packet (IHL 5) of exactly `size` bytes; optionally with a wrong header checksum."""
    head = bytearray(build_ipv4(src=SRC, dst=DST, proto=proto, payload_len=size - 20, tos=tos,
                                ident=ident, flags_frag=frag, ttl=ttl))
    if bad_checksum:
        head[10] ^= rng.randrange(1, 256)
    return bytes(head) + rng.randbytes(size - 20)


def fixed(packet: bytes) -> bytes:
    """`packet` with its IPv4 header checksum recomputed (what unprotect gives back)."""
    p = bytearray(packet)
    fix_ipv4_header(p)
    return bytes(p)


def clean(rng: random.Random, n: int) -> list[bytes]:
    """`n` packets the vector path takes: 23..1500 bytes (see TINY for 20..22) with the length mod 4 cycling, every
    protocol of PROTOS, assorted TOS, TTL and DF, and a wrong header checksum in about a third."""
    edges = [23, 24, 25, 26, 1500, 1497, 1498, 1499]
    out = []
    for i in range(n):
        size = edges[i] if i < len(edges) else (rng.randrange(24, 1497) & ~3) + i % 4
        out.append(ipv4(rng, size, proto=PROTOS[i % len(PROTOS)], tos=rng.choice(TOS),
                        ttl=rng.choice(TTLS), frag=0x4000 if rng.random() < 0.5 else 0,
                        ident=rng.randrange(0x10000), bad_checksum=i % 3 == 1))
    return out


def reseal(wire: bytes, inbound, plaintext) -> bytes:
    """`wire` with its ESP plaintext replaced by `plaintext(old plaintext)`, encrypted again
    under the same SPI, sequence number and IV; the IP (and UDP) lengths and checksum fixed."""
    eng = inbound.engine
    at = esp_offset(inbound)
    aad, nonce = wire[at:at + 8], eng.salt + wire[at + 8:at + 16]
    pt = eng.aead.decrypt(nonce, wire[at + 16:], aad)
    out = bytearray(wire[:at + 16] + eng.aead.encrypt(nonce, plaintext(pt), aad))
    out[2:4] = len(out).to_bytes(2, "big")
    if eng.encap:
        out[24:26] = (len(out) - 20).to_bytes(2, "big")
    fix_ipv4_header(out)
    return bytes(out)


def body_of(pt: bytes) -> bytes:
    return pt[:len(pt) - 2 - pt[-2]]


def padded(pad: bytes, nh=None):
    """A plaintext change: the same payload, then `pad` as padding, its length, next header."""
    return lambda pt: body_of(pt) + pad + bytes((len(pad), pt[-1] if nh is None else nh))


def _aligned(pt: bytes, extra: int) -> bytes:
    """Valid padding (1, 2, 3, ...) aligning `pt`'s payload to 4 bytes, and `extra` bytes more."""
    return bytes(range(1, 1 + -(len(body_of(pt)) + 2) % 4 + extra))


def udp_to(port: int, payload: bytes) -> bytes:
    """An IPv4/UDP packet from port 4500 to `port` (a NAT keepalive, an IKE message...)."""
    udp = struct.pack("!HHHH", 4500, port, 8 + len(payload), 0) + payload
    return build_ipv4(src=DST, dst=SRC, proto=17, payload_len=len(udp)) + udp


# -- running both ways ------------------------------------------------------------------------
def instrument(sa) -> tuple[Counted, Counted]:
    """Rebuild the SA's transport batch paths over counted generic loops: (protect, unprotect)."""
    engine = sa.engine
    protect = Counted(engine.protect_batch_generic)
    unprotect = Counted(engine.unprotect_batch_generic)
    engine._fast_protect = esp_vec._make_transport_protect(engine, protect)
    engine._fast_unprotect = esp_vec._make_transport_unprotect(engine, unprotect)
    return protect, unprotect


def rig(proposal: str = "aes128gcm16", **kw) -> Rig:
    """One-by-one and batched (counted) outbound and inbound transport-mode SAs."""
    out_cfg, in_cfg = configs(proposal, mode="transport", **kw)
    sender, out = pair_of(out_cfg)
    ref, inb = SecurityAssociation(in_cfg, now=0.0), SecurityAssociation(in_cfg, now=0.0)
    fallback_out, _ = instrument(out)
    _, fallback_in = instrument(inb)
    return Rig(sender, out, ref, inb, fallback_out, fallback_in)


def reasons(seen: list) -> list:
    return [v[1] for v in seen if isinstance(v, tuple)]


# -- 1. the vector path is taken ----------------------------------------------------------------
def test_transport_sas_get_the_transport_paths():
    for cfg in configs("aes128gcm16", mode="transport"):
        engine = SecurityAssociation(cfg, now=0.0).engine
        assert engine._fast_protect is not None and engine._fast_unprotect is not None
        assert "_make_transport_protect" in engine._fast_protect.__qualname__
        assert "_make_transport_unprotect" in engine._fast_unprotect.__qualname__


@pytest.mark.parametrize("proposal,mode", [("aes128gcm16", "tunnel"), ("aes128gcm16-esn", "transport"),
                                           ("aes128-sha256", "transport"), ("aes128gmac", "transport")])
def test_other_sas_do_not_get_the_transport_paths(proposal, mode):
    engine = SecurityAssociation(configs(proposal, mode=mode)[0], now=0.0).engine
    assert esp_vec.transport_paths(engine) == (None, None)
    if mode == "transport":
        assert engine._fast_protect is None and engine._fast_unprotect is None


@pytest.mark.parametrize("encap", [None, ENCAP], ids=["esp", "udp"])
def test_clean_batches_take_the_vector_path(encap):
    r = rig(encap=encap)
    packets = clean(random.Random(1), 3 * MIN_P)
    wire = r.out.protect_batch(packets[:MIN_P], now=0.0) + r.out.protect_batch(packets[MIN_P:], now=0.0)
    assert r.fallback_out.calls == 0
    assert wire == [r.sender.protect(p, now=0.0) for p in packets] and all(type(w) is bytes for w in wire)
    assert r.out.state() == r.sender.state()
    inner = r.inb.unprotect_batch(wire[:MIN_U], now=0.0) + r.inb.unprotect_batch(wire[MIN_U:], now=0.0)
    assert r.fallback_in.calls == 0
    assert inner == list(map(fixed, packets)) and all(type(p) is bytes for p in inner)
    n = len(packets)
    assert r.inb.state() == (0, (n, (1 << 64) - 1), n, sum(map(len, packets)), {}, None, None)
    # One packet fewer than the threshold: the generic loop, exactly once per direction.
    more = clean(random.Random(2), MIN_P - 1)
    wire = r.out.protect_batch(more, now=0.0)
    assert wire == [r.sender.protect(p, now=0.0) for p in more] and r.fallback_out.calls == 1
    assert r.inb.unprotect_batch(wire[:MIN_U - 1], now=0.0) == list(map(fixed, more[:MIN_U - 1]))
    assert r.fallback_in.calls == 1


# -- 2. equality with one-by-one processing ------------------------------------------------------
def _cryptodome(proposal):
    ok = get_registry().get("cryptodome").available
    return pytest.param(proposal, "cryptodome", id=f"{proposal}-cryptodome",
                        marks=pytest.mark.skipif(not ok, reason="no pycryptodome"))


PROPOSALS = [pytest.param(p, "aesni", id=f"{p}-aesni") for p in
             ("aes128gcm16", "aes256gcm16", "aes128gcm8", "aes256gcm12", "aes128ccm16", "aes128ccm12",
              "chacha20poly1305")] + [_cryptodome("aes128gcm16"), _cryptodome("chacha20poly1305")]


def test_clean_traffic_is_what_it_claims():
    packets = clean(random.Random(0), 64)
    assert {p[9] for p in packets} == set(PROTOS) and {len(p) % 4 for p in packets} == {0, 1, 2, 3}
    assert sum(p != fixed(p) for p in packets) == 21            # wrong checksums on input
    assert {p[6] & 0x40 for p in packets} == {0, 0x40} and len({p[8] for p in packets}) > 1


@pytest.mark.parametrize("encap", [None, ENCAP], ids=["esp", "udp"])
@pytest.mark.parametrize("proposal,backend", PROPOSALS)
def test_vector_batches_equal_single(proposal, backend, encap):
    r = rig(proposal, encap=encap, backend=backend)
    packets = clean(random.Random(f"{proposal}{encap}"), sum(BATCHES))
    one = [r.sender.protect(p, now=0.0) for p in packets]
    batches = chunks(packets, BATCHES)
    many = [w for batch in batches for w in r.out.protect_batch(batch, now=0.0)]
    assert many == one
    assert r.out.state() == r.sender.state()
    assert r.fallback_out.calls == sum(len(b) < MIN_P for b in batches) == 1
    assert check_inbound(r, chunks(one, BATCHES)) == list(map(fixed, packets))
    assert r.fallback_in.calls == 0


TINY = (20, 21, 22)     # payloads of 0..2 bytes: ESP plaintexts of 4 bytes


def _with_tiny(seed) -> list[bytes]:
    rng = random.Random(seed)
    packets = clean(rng, 2 * MIN_P)
    for i, size in enumerate(TINY):
        packets[10 + 40 * i] = ipv4(rng, size, proto=PROTOS[i], bad_checksum=True)
    return packets


@pytest.mark.parametrize("encap", [None, ENCAP], ids=["esp", "udp"])
def test_tiny_payloads_equal_single(encap):
    r = rig(encap=encap)
    packets = _with_tiny(5)
    one = [r.sender.protect(p, now=0.0) for p in packets]
    assert r.out.protect_batch(packets, now=0.0) == one and r.out.state() == r.sender.state()
    assert r.fallback_out.calls == 0
    assert check_inbound(r, [one[:MIN_P], one[MIN_P:]]) == list(map(fixed, packets))


# -- 3a. protect: a batch with one odd packet ----------------------------------------------------
def _total_length(value):
    def make(rng):
        p = bytearray(ipv4(rng, 100))
        p[2:4] = value.to_bytes(2, "big")
        return fixed(p)
    return make


DROP = (PacketDropped, MALFORMED)
FRAGMENT = (LocalError, None)      # transport mode applies to whole packets (RFC 4301 7)
ODD_INNER = {   # name: (the packet, what one-by-one protect does with it: None or the error, fallback?)
    "ipv6": (ipv6_packet, None, True),
    "ipv4-options": (optioned_packet, None, True),
    "fragment-mf": (lambda rng: ipv4(rng, 100, frag=0x2000), FRAGMENT, True),
    "fragment-offset": (lambda rng: ipv4(rng, 100, frag=0x0010), FRAGMENT, True),
    "fragment-df-and-offset": (lambda rng: ipv4(rng, 100, frag=0x4001), FRAGMENT, True),
    "trailing-bytes": (lambda rng: ipv4(rng, 100) + b"tail", None, True),
    "total-length-under-20": (_total_length(19), DROP, True),
    "total-length-0": (_total_length(0), DROP, True),
    "total-length-over-packet": (_total_length(101), DROP, True),
    "empty": (lambda rng: b"", (LocalError, None), True),
    "5-bytes": (lambda rng: b"\x45" + bytes(4), DROP, True),
    "19-bytes": (lambda rng: b"\x45" + bytes(18), DROP, True),
    "version-5": (lambda rng: b"\x55" + rng.randbytes(39), (LocalError, None), True),
    "oversized": (lambda rng: ipv4(rng, 65535), (PacketDropped, DropReason.TOO_BIG), True),
    "largest-that-fits": (lambda rng: ipv4(rng, 65535 - 60), None, False),
    "bytearray": (lambda rng: bytearray(ipv4(rng, 333, proto=6)), None, False),
    "memoryview": (lambda rng: memoryview(ipv4(rng, 334, proto=1)), None, True),
}


@pytest.mark.parametrize("make,error,falls_back", list(ODD_INNER.values()), ids=list(ODD_INNER))
@pytest.mark.parametrize("encap", [None, ENCAP], ids=["esp", "udp"])
def test_protect_batch_with_one_odd_packet(make, error, falls_back, encap):
    check_protect_with_one_odd_packet(rig(encap=encap), clean, make, error, falls_back)


# -- 3b. unprotect: a batch with one odd packet --------------------------------------------------
def _new(r, rng):
    """The next clean packet (23..1500 bytes, any protocol), protected by the one-by-one sender."""
    packet = ipv4(rng, rng.randrange(23, 1501), proto=rng.choice(PROTOS), tos=rng.choice(TOS),
                  ttl=rng.choice(TTLS), bad_checksum=rng.random() < 0.3)
    return r.sender.protect(packet, now=0.0)


def _changed(change):
    """The packet at this position, changed by `change(wire, r)`."""
    return lambda r, rng, before: [change(_new(r, rng), r)]


def _with_options(w, r):
    """Four bytes of IPv4 options (NOP NOP NOP EOL) inserted in the outer header; ESP is unchanged."""
    b = bytearray(w[:20] + b"\x01\x01\x01\x00" + w[20:])
    b[0] = 0x46
    b[2:4] = len(b).to_bytes(2, "big")
    fix_ipv4_header(b)
    return bytes(b)


def _resealed(plaintext):
    return _changed(lambda w, r: reseal(w, r.ref, plaintext))


def _swapped(r, rng, before):
    a, b = _new(r, rng), _new(r, rng)
    return [b, a]


ODD_WIRE = {   # name: (the packet(s) at index 20 given (rig, rng, the packets before), drops, fallback?)
    "forged-icv": (_changed(_flip(-1)), [AUTH], True),
    "forged-ciphertext": (_changed(_flip(-30)), [AUTH], True),
    "forged-seq": (_changed(lambda w, r: _flip(esp_offset(r.sender) + 6)(w, r)), [AUTH], True),
    "truncated-to-0": (_changed(_cut(lambda w, r: 0, False)), [MALFORMED], True),
    "truncated-to-10": (_changed(_cut(lambda w, r: 10, False)), [MALFORMED], True),
    "truncated-in-esp-header": (_changed(_cut(lambda w, r: esp_offset(r.sender) + 6, False)), [MALFORMED], True),
    "truncated-by-1": (_changed(_cut(lambda w, r: len(w) - 1, False)), [MALFORMED], True),
    "truncated-by-1-total-fixed": (_changed(_cut(lambda w, r: len(w) - 1, True)), [AUTH], True),
    "truncated-under-min-total-fixed": (_changed(_cut(
        lambda w, r: esp_offset(r.sender) + r.sender.engine.min_esp - 1, True)), [DropReason.TRUNCATED], True),
    "replayed-inside-batch": (lambda r, rng, before: [before[10]], [REPLAY], True),
    "replayed-from-previous-batch": (lambda r, rng, before: [r.warm[-3]], [REPLAY], True),
    "replayed-left-of-window": (lambda r, rng, before: [r.warm[0]], [REPLAY], True),
    "reordered": (_swapped, [], True),
    "wrong-spi": (_changed(lambda w, r: w[:esp_offset(r.sender)] + b"\0\0\x42\x43"
                           + w[esp_offset(r.sender) + 4:]), [DropReason.UNKNOWN_SPI], True),
    "not-esp": (_changed(lambda w, r: with_outer(w, {9: 51})), [DropReason.NOT_ESP], True),
    "outer-fragment-mf": (_changed(lambda w, r: with_outer(w, {6: w[6] | 0x20})), [MALFORMED], True),
    "outer-fragment-offset": (_changed(lambda w, r: with_outer(w, {7: 1})), [MALFORMED], True),
    "outer-ipv4-options": (_changed(_with_options), [], True),
    "trailing-bytes": (_changed(lambda w, r: w + b"tail"), [], True),
    "ipv6": (lambda r, rng, before: [r.sender.protect(ipv6_packet(), now=0.0)], [], True),
    "inner-ipv4-options": (lambda r, rng, before: [r.sender.protect(optioned_packet(), now=0.0)], [], True),
    "dummy": (lambda r, rng, before: [r.sender.dummy(40, now=0.0)], [DropReason.DUMMY], True),
    "dummy-empty": (lambda r, rng, before: [r.sender.dummy(0, now=0.0)], [DropReason.DUMMY], True),
    "next-header-59-resealed": (_resealed(lambda pt: padded(_aligned(pt, 0), nh=59)(pt)),
                                [DropReason.DUMMY], True),
    "padding-4-to-7": (_resealed(lambda pt: padded(_aligned(pt, 4))(pt)), [], True),
    "padding-255": (_resealed(padded(bytes(range(1, 256)))), [], True),
    "padding-unaligned": (_resealed(padded(b"\x01")), [], False),   # no alignment check either way
    "bad-padding-bytes": (_resealed(padded(b"\x01\x02\x04")), [DropReason.BAD_PADDING], True),
    "bad-padding-byte-1": (_resealed(padded(b"\x02")), [DropReason.BAD_PADDING], True),
    "bad-long-padding": (_resealed(padded(bytes(range(1, 8)) + b"\x09")), [DropReason.BAD_PADDING], True),
    "pad-length-over-plaintext": (_resealed(lambda pt: b"\x01\x02" + bytes((200, 6))),
                                  [DropReason.BAD_PADDING], True),
    "pad-length-1-over-plaintext": (_resealed(lambda pt: bytes(range(1, 7)) + bytes((7, 17))),
                                    [DropReason.BAD_PADDING], True),
}

ODD_UDP = {    # ESP-in-UDP only
    "wrong-udp-port": (_changed(lambda w, r: w[:22] + (4501).to_bytes(2, "big") + w[24:]),
                       [DropReason.NOT_ESP], True),
    "nat-keepalive": (lambda r, rng, before: [udp_to(4500, b"\xff")], [DropReason.NAT_KEEPALIVE], True),
    "non-esp-marker": (lambda r, rng, before: [udp_to(4500, bytes(4) + rng.randbytes(120))],
                       [DropReason.IKE_PACKET], True),
}


def _odd_batch(r: Rig, rng, odd) -> list[bytes]:
    """64 packets protected in turn, the one at index 20 made by `odd` (which may protect
    packets itself, so that the sequence numbers stay in order)."""
    batch = []
    while len(batch) < MIN_P:
        batch += odd(r, rng, batch) if len(batch) == 20 else [_new(r, rng)]
    return batch


def _check_odd_wire(odd, drops, falls_back, encap):
    r = rig(encap=encap)
    rng = random.Random(7)
    r.warm = [_new(r, rng) for _ in range(MIN_U)]
    batch = _odd_batch(r, rng, odd)
    after = [_new(r, rng) for _ in range(MIN_U)]
    seen = check_inbound(r, [r.warm, batch, after])     # verdicts and state after every batch
    assert reasons(seen) == drops
    assert r.fallback_in.calls == falls_back            # only the batch with the odd packet


@pytest.mark.parametrize("odd,drops,falls_back", list(ODD_WIRE.values()), ids=list(ODD_WIRE))
@pytest.mark.parametrize("encap", [None, ENCAP], ids=["esp", "udp"])
def test_unprotect_batch_with_one_odd_packet(odd, drops, falls_back, encap):
    _check_odd_wire(odd, drops, falls_back, encap)


@pytest.mark.parametrize("odd,drops,falls_back", list(ODD_UDP.values()), ids=list(ODD_UDP))
def test_unprotect_batch_with_one_odd_udp_packet(odd, drops, falls_back):
    _check_odd_wire(odd, drops, falls_back, ENCAP)


def test_outer_options_are_kept_in_the_inner_packet():
    """What one-by-one does with an optioned outer header (and so the batch): the options stay."""
    r = rig()
    packet = ipv4(random.Random(8), 100, proto=6)
    wire = _with_options(r.sender.protect(packet, now=0.0), r)
    inner = r.ref.unprotect(wire, now=0.0)
    assert inner[:1] == b"\x46" and inner[20:24] == b"\x01\x01\x01\x00" and inner[24:] == packet[20:]


@pytest.mark.parametrize("kind", [bytearray, memoryview])
@pytest.mark.parametrize("encap", [None, ENCAP], ids=["esp", "udp"])
def test_unprotect_batch_of_buffers(kind, encap):
    r = rig(encap=encap)
    packets = clean(random.Random(9), 2 * MIN_U)
    wire = [r.sender.protect(p, now=0.0) for p in packets]
    assert check_inbound(r, [[kind(w) for w in wire]]) == list(map(fixed, packets))
    assert r.fallback_in.calls == 0


# -- 4, 5. replay window and lifetimes: tests/test_esp_vec_scenarios.py (both modes) --------------

def _hundreds(n: int) -> list[bytes]:
    """100-byte packets of every protocol, a wrong header checksum in every fifth."""
    rng = random.Random(13)
    return [ipv4(rng, 100, proto=PROTOS[i % 8], tos=i % 4, ident=i, bad_checksum=i % 5 == 0)
            for i in range(n)]


# -- 6. without numpy ------------------------------------------------------------------------------
@pytest.mark.parametrize("encap", [None, ENCAP], ids=["esp", "udp"])
def test_without_numpy_the_generic_loops_are_used(monkeypatch, encap):
    monkeypatch.setattr(esp_vec, "np", None)
    assert not esp_vec.available()
    out_cfg, in_cfg = configs("aes128gcm16", mode="transport", encap=encap)
    single, batch = pair_of(out_cfg)
    assert esp_vec.transport_paths(batch.engine) == (None, None)
    assert batch.engine._fast_protect is None and batch.engine._fast_unprotect is None
    packets = clean(random.Random(17), 150)
    packets.insert(40, ipv6_packet())
    wire = [single.protect(p, now=0.0) for p in packets]
    assert batch.protect_batch(packets[:64], now=0.0) + batch.protect_batch(packets[64:], now=0.0) == wire
    assert batch.state() == single.state()
    ref, inb = SecurityAssociation(in_cfg, now=0.0), SecurityAssociation(in_cfg, now=0.0)
    assert inb.engine._fast_unprotect is None
    stream = wire[:30] + [wire[3], _flip(-1)(wire[31], None)] + wire[30:]
    assert unprotect_batch(inb, stream) == unprotect_single(ref, stream)
    assert inb.state() == ref.state()

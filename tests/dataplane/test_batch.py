"""protect_batch / unprotect_batch give exactly what one-by-one processing gives: the same bytes,
the same verdicts, the same sequence numbers, replay state and counters (the `ipsec perf` issue).
Covers the fast path (AEAD, tunnel, IPv4 outer) and the generic loop, with every kind of packet
the fast loop hands back to the generic path mixed in."""
import ipaddress
import os
import random

import pytest
from scapy.layers.inet import IP, UDP, IPOption_RR
from scapy.layers.inet6 import IPv6

from ipsec_core.errors import PacketDropped, SequenceOverflow
from ipsec_core.transforms.keywords import parse_esp
from ipsec_core.dataplane.sa import Direction, Lifetime, Mode, SaConfig, SecurityAssociation

V4 = (ipaddress.ip_address("192.0.2.1"), ipaddress.ip_address("192.0.2.2"))
V6 = (ipaddress.ip_address("2001:db8::1"), ipaddress.ip_address("2001:db8::2"))


def configs(proposal, *, outer=V4, encap=None, mode="tunnel", backend="aesni", window=64, **kw):
    prop = parse_esp(proposal)
    key = os.urandom(prop.enc_key_bytes) if prop.key_bits else b""
    integ = os.urandom(prop.integ_info.key_bytes) if prop.integ_info else b""
    common = dict(spi=0x4242, mode=Mode(mode), proposal=prop, enc_key=key, integ_key=integ,
                  encap_ports=encap, backend=backend, replay_window=window, **kw)
    out = SaConfig(name="o", direction=Direction.OUT, local=outer[0], remote=outer[1], **common)
    inb = SaConfig(name="i", direction=Direction.IN, local=outer[1], remote=outer[0], **common)
    return out, inb


def traffic(rng: random.Random, n: int) -> list[bytes]:
    out = []
    for i in range(n):
        kind = rng.random()
        size = rng.randrange(0, 1400)
        if kind < 0.7:
            pkt = IP(src="198.51.100.1", dst="203.0.113.1", tos=rng.choice([0, 0x10, 0xb8, 0xb9, 0x02]),
                     flags=rng.choice(["", "DF"]), id=i) / UDP(sport=1000 + i, dport=53) / (b"x" * size)
        elif kind < 0.85:
            pkt = IPv6(src="2001:db8:a::1", dst="2001:db8:b::1", tc=rng.choice([0, 0xb8])) / UDP() / (b"y" * size)
        else:
            pkt = IP(src="198.51.100.1", dst="203.0.113.1", options=[IPOption_RR()]) / UDP() / (b"z" * size)
        out.append(bytes(pkt))
    return out


def pair_of(cfg):
    a, b = SecurityAssociation(cfg, now=0.0), SecurityAssociation(cfg, now=0.0)
    b.engine.ident = a.engine.ident
    return a, b


CASES = [
    ("aes128gcm16", {}),
    ("aes256gcm16", {"encap": (4500, 4500)}),
    ("aes128gcm8", {}),
    ("chacha20poly1305", {}),
    ("aes128ccm12", {"encap": (4500, 4501)}),
    ("aes128gcm16-esn", {}),                    # generic path (ESN)
    ("aes128gcm16", {"outer": V6}),             # generic path (IPv6 outer)
    ("aes128gcm16", {"mode": "transport"}),     # generic path (transport)
    ("aes128ctr-sha256", {}),
    ("aes128gmac", {}),
]


@pytest.mark.parametrize("proposal,kw", CASES, ids=[f"{p}-{'-'.join(map(str, k.values())) or 'v4'}" for p, k in CASES])
def test_protect_batch_equals_single(proposal, kw):
    if kw.get("mode") == "transport":
        kw = {**kw, "outer": V4}
    out_cfg, in_cfg = configs(proposal, **kw)
    single, batch = pair_of(out_cfg)
    packets = traffic(random.Random(proposal), 300)
    if kw.get("mode") == "transport":
        packets = [p for p in packets if p[0] >> 4 == 4]
    one = [single.protect(p, now=0.0) for p in packets]
    many = [q for i in range(0, len(packets), 37) for q in batch.protect_batch(packets[i:i + 37], now=0.0)]
    if "ctr" in proposal or "gcm" in proposal or "gmac" in proposal or "ccm" in proposal or "chacha" in proposal:
        assert many == one                      # counter modes: IV = sequence number, deterministic
    assert single.state() == batch.state()
    inbound = SecurityAssociation(in_cfg, now=0.0)
    assert [inbound.unprotect(q, now=0.0) for q in many] == packets


def forge(p: bytes, at: int) -> bytes:
    b = bytearray(p)
    b[at % len(b)] ^= 0x01
    return bytes(b)


@pytest.mark.parametrize("proposal,kw", CASES[:7], ids=[c[0] + str(i) for i, c in enumerate(CASES[:7])])
def test_unprotect_batch_equals_single(proposal, kw):
    out_cfg, in_cfg = configs(proposal, **kw)
    sender = SecurityAssociation(out_cfg, now=0.0)
    rng = random.Random(99)
    packets = traffic(rng, 200)
    wire = [sender.protect(p, now=0.0) for p in packets]
    stream = []
    for i, w in enumerate(wire):
        r = rng.random()
        stream.append(w)
        if r < 0.08:
            stream.append(w)                                  # replay
        elif r < 0.14:
            stream.insert(len(stream) - 1, forge(w, rng.randrange(36, len(w))))  # forged, first
        elif r < 0.18 and i > 70:
            stream.append(wire[i - 70])                       # left of a 64-bit window
        elif r < 0.22:
            stream.append(w[: rng.randrange(0, len(w))])      # truncated
    rng.shuffle(stream[50:90])          # some reordering inside the window
    # ECN: outer CE on an ECT inner must set CE inside (RFC 6040) -> generic path
    ce = bytearray(sender.protect(bytes(IP(src="198.51.100.1", dst="203.0.113.1", tos=0x02) / UDP()), now=0.0))
    if ce[0] == 0x45:
        ce[1] |= 3
        from ipsec_core.wire.ip import fix_ipv4_header
        hdr = bytearray(ce[:20]); fix_ipv4_header(hdr); ce[:20] = hdr
    stream.append(bytes(ce))
    # TFC padding after the inner packet (RFC 4303 2.7): stripped at the inner IP length
    stream.append(sender.protect(bytes(IP(src="198.51.100.1", dst="203.0.113.1") / UDP() / b"tfc") + bytes(40), now=0.0))
    a, b = SecurityAssociation(in_cfg, now=0.0), SecurityAssociation(in_cfg, now=0.0)

    def one(sa, p):
        try:
            return sa.unprotect(p, now=0.0)
        except PacketDropped as d:
            return d.reason
    singles = [one(a, p) for p in stream]
    batched = []
    for i in range(0, len(stream), 64):
        for v in b.unprotect_batch(stream[i:i + 64], now=0.0):
            batched.append(v.reason if isinstance(v, PacketDropped) else v)
    assert batched == singles
    assert a.state() == b.state()
    assert {"replay", "auth_failed"} <= set(a.stats.drops)


def test_lifetime_reached_inside_a_batch_matches_single():
    out_cfg, _ = configs("aes128gcm16", soft=Lifetime(packets=10), hard=Lifetime(packets=25))
    single, batch = pair_of(out_cfg)
    packets = traffic(random.Random(5), 40)
    one = []
    with pytest.raises(Exception) as exc_single:
        for p in packets:
            one.append(single.protect(p, now=0.0))
    with pytest.raises(Exception) as exc_batch:
        batch.protect_batch(packets, now=0.0)
    assert type(exc_single.value) is type(exc_batch.value)
    assert exc_batch.value.partial == one
    assert single.state() == batch.state() and single.soft_expired


def test_sequence_overflow_inside_a_batch():
    out_cfg, _ = configs("aes128gcm16")
    single, batch = pair_of(out_cfg)
    single.seq = batch.seq = 2**32 - 5
    packets = traffic(random.Random(6), 10)
    with pytest.raises(SequenceOverflow) as exc:
        batch.protect_batch(packets, now=0.0)
    assert len(exc.value.partial) == 4
    done = [single.protect(p, now=0.0) for p in packets[:4]]
    assert done == exc.value.partial and single.state() == batch.state()


def test_fast_path_is_used_where_expected():
    fast = SecurityAssociation(configs("aes128gcm16")[0], now=0.0)
    assert fast.engine._fast_protect is not None and fast.engine._fast_unprotect is not None
    # ESN, cipher + integrity and IPv6 outside take the batch path on one buffer (esp.bulk)
    for proposal, kw in [("aes128gcm16-esn", {}), ("aes128-sha256", {}), ("aes128gcm16", {"outer": V6})]:
        sa = SecurityAssociation(configs(proposal, **kw)[0], now=0.0)
        assert sa.engine._fast_protect.__qualname__ == "_Bulk.protect_batch"
    sa = SecurityAssociation(configs("aes128gcm16", mode="transport")[0], now=0.0)
    assert sa.engine._fast_protect.__qualname__ != "_Bulk.protect_batch"


# -- backends with a native batch AEAD (encrypt_batch / decrypt_batch), as the GPU has --------

from ipsec_core.crypto.registry import Registry  # noqa: E402
from ipsec_core.testing import batch_backend  # noqa: E402


@pytest.fixture(scope="module")
def batch_registry():
    reg = Registry(load_entry_points=False)
    reg.add(batch_backend(reg.get("aesni").backend), plugin="tests")
    return reg


@pytest.mark.parametrize("proposal,kw", [("aes128gcm16", {}), ("aes256gcm16", {"encap": (4500, 4500), "outer": V6}),
                                         ("aes128gmac", {}), ("aes128gcm16-esn", {"mode": "transport"})])
def test_offload_batch_equals_single(batch_registry, proposal, kw):
    out_cfg, in_cfg = configs(proposal, backend="batchy", **kw)
    ref_out, ref_in = (c.__class__(**{**{f: getattr(c, f) for f in c.__dataclass_fields__}, "backend": "aesni"})
                       for c in (out_cfg, in_cfg))
    single = SecurityAssociation(ref_out, now=0.0)
    batch = SecurityAssociation(out_cfg, registry=batch_registry, now=0.0)
    batch.engine.ident = single.engine.ident
    packets = [p for p in traffic(random.Random(3), 120) if kw.get("mode") != "transport" or p[0] >> 4 == 4]
    one = [single.protect(p, now=0.0) for p in packets]
    many = batch.protect_batch(packets[:50], now=0.0) + batch.protect_batch(packets[50:], now=0.0)
    assert many == one and single.state() == batch.state()
    assert batch.engine.aead.batch_calls == 2 and batch.engine.aead.single_calls == 0
    stream = one[:30] + [one[3], forge(one[31], 40)] + one[30:]       # replay + forgery inside a batch
    a, b = SecurityAssociation(ref_in, now=0.0), SecurityAssociation(in_cfg, registry=batch_registry, now=0.0)

    def verdict(v):
        return v.reason if isinstance(v, PacketDropped) else v
    singles = []
    for p in stream:
        try:
            singles.append(a.unprotect(p, now=0.0))
        except PacketDropped as d:
            singles.append(d.reason)
    batched = [verdict(v) for v in b.unprotect_batch(stream, now=0.0)]
    assert batched == singles and a.state() == b.state()
    assert b.engine.aead.batch_calls == 1 and b.engine.aead.single_calls == 0

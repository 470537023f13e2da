"""Nonce and lifetime safety of the data plane and IKE.

- No SA emits two packets with the same IV under one key, whatever mix of single packets,
  batches, dummy packets and fragmented packets (`protect_wire` with an mtu) it sends, on every
  available backend that offers the proposal; the counter-mode IVs are the sequence numbers,
  one per packet, consecutive.
- Sequence numbers run out (2^32 - 1, or 2^64 - 1 with ESN) with SequenceOverflow, never a
  wrap, whatever the send path, and leave the SA as it was.
- A soft limit (bytes, packets, seconds) is noted exactly once; a hard limit stops the SA.
- The AEAD IV of IKE's Encrypted payload never repeats within an IKE SA.
"""
from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ipsec_core.crypto.registry import get_registry
from ipsec_core.dataplane.fragments import Reassembler
from ipsec_core.dataplane.sa import Direction, Lifetime, Mode, SaConfig, SecurityAssociation
from ipsec_core.errors import (BackendError, DropReason, LifetimeExpired, PacketDropped,
                               SequenceOverflow)
from ipsec_core.ike.keymat import IkeCrypto
from ipsec_core.ike.proposals import parse_ike_proposal
from ipsec_core.transforms.iana import CipherKind
from ipsec_core.transforms.keywords import parse_esp

REGISTRY = get_registry()
PROPOSALS = ["aes128gcm16", "aes256gcm16-esn", "aes128ccm16", "chacha20poly1305", "aes128gmac",
             "aes128ctr-sha256", "aes128-sha256", "aes256-sha512-esn"]


def _backends(keyword: str) -> list[str]:
    prop = parse_esp(keyword)
    info = prop.encr_info
    tag = info.icv_bytes if info.kind in (CipherKind.AEAD, CipherKind.GMAC) else None
    return [r.backend.name for r in REGISTRY.candidates(info.family, prop.key_bits, tag)]


CASES = [(kw, b) for kw in PROPOSALS for b in _backends(kw)]


def _config(keyword: str, direction: Direction, *, backend: str | None = None, mtu=None,
            soft=Lifetime(), hard=Lifetime(), encap=False) -> SaConfig:
    prop = parse_esp(keyword)
    a, b = ("192.0.2.1", "192.0.2.2") if direction is Direction.OUT else ("192.0.2.2", "192.0.2.1")
    return SaConfig(name=direction.value, spi=0x7000, direction=direction, mode=Mode.TUNNEL,
                    proposal=prop, enc_key=bytes(range(3, 3 + prop.enc_key_bytes)),
                    integ_key=bytes(range(40, 40 + prop.integ_info.key_bytes)) if prop.integ_info else b"",
                    local=ipaddress.ip_address(a), remote=ipaddress.ip_address(b), backend=backend,
                    mtu=mtu, soft=soft, hard=hard, encap_ports=(4500, 4500) if encap else None)


def _inner(size: int, tag: int = 0) -> bytes:
    payload = struct.pack("!HHHH", 1000, 53, 8 + size, 0) + bytes((tag + i) & 0xFF for i in range(size))
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, 0, 64, 17, 0,
                       ipaddress.ip_address("198.51.100.1").packed,
                       ipaddress.ip_address("203.0.113.1").packed) + payload


def _esp_fields(packet: bytes, iv_bytes: int, encap: bool) -> tuple[int, bytes]:
    """(sequence number low bits, IV) of an outer IPv4 ESP packet."""
    at = (packet[0] & 0x0F) * 4 + (8 if encap else 0)
    return struct.unpack_from("!I", packet, at + 4)[0], packet[at + 8:at + 8 + iv_bytes]


OPS = st.lists(st.one_of(
    st.tuples(st.just("one"), st.integers(0, 200)),
    st.tuples(st.just("batch"), st.integers(1, 40)),
    st.tuples(st.just("dummy"), st.integers(0, 64)),
    st.tuples(st.just("wire"), st.integers(300, 1400)),
), min_size=1, max_size=8)


@pytest.mark.parametrize(("keyword", "backend"), CASES, ids=[f"{k}[{b}]" for k, b in CASES])
@settings(max_examples=8, database=None, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=OPS, encap=st.booleans())
def test_no_iv_repeats_under_one_key(keyword, backend, ops, encap):
    try:
        sa = SecurityAssociation(_config(keyword, Direction.OUT, backend=backend, mtu=576, encap=encap),
                                 registry=REGISTRY, now=0.0)
    except BackendError as exc:
        pytest.skip(str(exc))
    assert backend in sa.engine.backend_names.split(",")
    iv_bytes = sa.engine.iv_bytes
    counter_mode = sa.engine.kind is not CipherKind.CIPHER or bool(sa.engine.ctr)
    reassembler = Reassembler()
    wire: list[bytes] = []
    for op, n in ops:
        if op == "one":
            wire.append(sa.protect(_inner(n, len(wire)), now=0.0))
        elif op == "batch":
            wire.extend(sa.protect_batch([_inner(16 + i, i) for i in range(n)], now=0.0))
        elif op == "dummy":
            wire.append(sa.dummy(n, now=0.0))
        else:
            for frag in sa.protect_wire(_inner(n, 7), now=0.0):
                whole = reassembler.push(frag, now=0.0)
                if whole is not None:
                    wire.append(whole)
    fields = [_esp_fields(p, iv_bytes, encap) for p in wire]
    seqs = [s for s, _ in fields]
    ivs = [iv for _, iv in fields]
    assert seqs == list(range(1, len(wire) + 1)), "sequence numbers not one per packet, in order"
    assert len(set(ivs)) == len(ivs), "an IV was used twice under one key"
    if counter_mode:
        assert ivs == [s.to_bytes(8, "big") for s in seqs]
    assert sa.seq == len(wire)


@pytest.mark.parametrize("keyword", ["aes128gcm16", "aes128gcm16-esn", "aes128-sha256-esn"])
@pytest.mark.parametrize("path", ["one", "batch", "dummy", "wire"])
def test_sequence_exhaustion_refuses_to_send(keyword, path):
    sa = SecurityAssociation(_config(keyword, Direction.OUT, mtu=576), registry=REGISTRY, now=0.0)
    last = (1 << 64) - 1 if sa.esn else (1 << 32) - 1
    sa.seq = last - 2
    send = {"one": lambda: [sa.protect(_inner(10), now=0.0)],
            "batch": lambda: sa.protect_batch([_inner(10)] * 3, now=0.0),
            "dummy": lambda: [sa.dummy(now=0.0)],
            "wire": lambda: sa.protect_wire(_inner(1000), now=0.0)}[path]
    sent = []
    with pytest.raises(SequenceOverflow):
        for _ in range(3):
            sent.extend(send())
    assert sa.seq == last, "the last sequence number was not used, or one past it was"
    state = sa.state()
    with pytest.raises(SequenceOverflow):
        send()
    assert sa.state() == state


def _sa_pair(**limits):
    out = SecurityAssociation(_config("aes128gcm16", Direction.OUT, **limits), registry=REGISTRY, now=0.0)
    inb = SecurityAssociation(_config("aes128gcm16", Direction.IN, **limits), registry=REGISTRY, now=0.0)
    return out, inb


@pytest.mark.parametrize("kind", ["bytes", "packets", "seconds"])
@pytest.mark.parametrize("batched", [False, True])
def test_soft_limit_noted_once_and_hard_limit_stops(kind, batched):
    soft = Lifetime(**{kind: {"bytes": 1000, "packets": 10, "seconds": 10.0}[kind]})
    hard = Lifetime(**{kind: {"bytes": 3000, "packets": 30, "seconds": 30.0}[kind]})
    out, inb = _sa_pair(soft=soft, hard=hard)
    packet = _inner(72)                      # 100 bytes
    noted = {"out": [], "in": []}
    now = 0.0
    for _ in range(100):
        now += 1.0
        try:
            wires = out.protect_batch([packet] * 2, now=now) if batched else [out.protect(packet, now=now)]
        except LifetimeExpired:
            break
        verdicts = inb.unprotect_batch(wires, now=now) if batched else [inb.unprotect(w, now=now) for w in wires]
        assert verdicts == [packet] * len(wires)
        for name, sa in (("out", out), ("in", inb)):
            if sa.soft_expired is not None and sa.soft_expired not in noted[name]:
                noted[name].append(sa.soft_expired)
    else:
        pytest.fail(f"hard {kind} limit never stopped the outbound SA")
    for name in ("out", "in"):
        assert len(noted[name]) == 1, f"{name}: soft limit noted {noted[name]}"
    # Stopped for good, both ways and on every path.
    for _ in range(2):
        with pytest.raises(LifetimeExpired):
            out.protect(packet, now=now + 1)
        with pytest.raises(LifetimeExpired):
            out.protect_batch([packet], now=now + 1)
    late = _late_packet()
    with pytest.raises(PacketDropped) as exc:
        inb.unprotect(late, now=now + 1)
    assert exc.value.reason is DropReason.SA_EXPIRED
    [verdict] = inb.unprotect_batch([late], now=now + 1)
    assert isinstance(verdict, PacketDropped) and verdict.reason is DropReason.SA_EXPIRED
    assert len(noted["in"]) == 1 and inb.soft_expired == noted["in"][0]


def _late_packet() -> bytes:
    """A valid packet of the SA from a peer that kept sending."""
    peer = SecurityAssociation(_config("aes128gcm16", Direction.OUT), registry=REGISTRY, now=0.0)
    peer.seq = 10_000
    return peer.protect(_inner(72), now=0.0)


@pytest.mark.parametrize("proposal", ["aes128gcm16-prfsha256-x25519", "chacha20poly1305-prfsha256-x25519",
                                      "aes256gcm16-prfsha384-ecp384"])
def test_ike_encrypted_payload_iv_never_repeats(proposal):
    suite = parse_ike_proposal(proposal)[0]
    crypto = IkeCrypto(suite, registry=REGISTRY, backend=None)
    key = bytes(range(suite.encr_key_bytes))
    other = bytes(reversed(key))
    mine = crypto.protector((key, other), (b"", b""))
    theirs = crypto.protector((other, key), (b"", b""))
    head = bytes(32)
    ivs = []
    for i in range(500):
        sealed = mine.seal(head, bytes(i % 37))
        ivs.append(sealed[:mine.iv_bytes])
        assert theirs.open(head, sealed) == bytes(i % 37)
    assert len(set(ivs)) == len(ivs)
    assert ivs == [n.to_bytes(8, "big") for n in range(1, 501)]

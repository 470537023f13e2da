"""Differential tests: random IP packets protected by each available backend are unprotected by
every backend (itself included) to the same bytes, for every ESP proposal of the issue.

The plan is drawn from `random.Random(1234)` at import, so a failure reproduces by its test id
(`aes192ccm12-esn-tunnel-v4-udp` ...).  Every proposal gets one case: ESN or not (ESN cases
start just below 2**32 or anywhere in the 64-bit space), tunnel or transport, IPv4 or IPv6
outside, ESP-in-UDP or not, and a few random packets (IPv4 and IPv6, 20..1500 bytes, random
DSCP/ECN/DF, IPv4 options, an IPv6 hop-by-hop header).  About 240 packets in all, each
protected three times and unprotected nine times, so the pure-Python reference stays quick.

Counter modes take the sequence number as IV, so their ESP bytes must also be the same whatever
the backend; CBC uses a random IV, so only the round trip is compared there.
"""
from __future__ import annotations

import ipaddress
import random
import struct
from dataclasses import dataclass

import pytest

from ipsec_core.crypto.registry import get_registry
from ipsec_core.transforms.keywords import parse_esp
from ipsec_core.dataplane.sa import Direction, Mode, SaConfig, SecurityAssociation

REGISTRY = get_registry()
BACKENDS = [record.name for record in REGISTRY.available()]

_INTEG = ("sha1", "sha256", "sha384", "sha512", "aesxcbc", "aescmac")
PROPOSALS = (
    [f"aes{bits}gcm{icv}" for bits in (128, 192, 256) for icv in (8, 12, 16)]
    + [f"aes{bits}ccm{icv}" for bits in (128, 192, 256) for icv in (8, 12, 16)]
    + ["chacha20poly1305"]
    + [f"aes{bits}gmac" for bits in (128, 192, 256)]
    + [f"aes{bits}-{integ}" for bits in (128, 192, 256) for integ in _INTEG]
    + [f"aes{bits}ctr-{integ}" for bits in (128, 192, 256) for integ in _INTEG]
    + ["null-sha256"]
)
PACKETS_PER_CASE = 4
ADDRESSES = {4: ("203.0.113.1", "203.0.113.2"), 6: ("2001:db8:ffff::1", "2001:db8:ffff::2")}


def _checksum(data: bytes) -> int:
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def random_ipv4(rng: random.Random, size: int) -> bytes:
    """An IPv4 packet of exactly `size` bytes (20..1500) with a valid header checksum."""
    options = b""
    if size >= 32 and rng.random() < 0.25:
        options = b"\x01" * (4 * rng.randint(1, 3))          # NOPs: IHL 6..8
    ihl = 5 + len(options) // 4
    proto = rng.choice((1, 6, 17, 47, 132))
    flags = 0x4000 if rng.random() < 0.5 else 0
    header = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, rng.randrange(256), size, rng.randrange(65536),
                         flags, rng.randint(1, 255), proto, 0, rng.randbytes(4), rng.randbytes(4)) + options
    header = header[:10] + _checksum(header).to_bytes(2, "big") + header[12:]
    return header + rng.randbytes(size - len(header))


def random_ipv6(rng: random.Random, size: int) -> bytes:
    """An IPv6 packet of exactly `size` bytes (40..1500), sometimes with a hop-by-hop header."""
    first = (6 << 28) | (rng.randrange(256) << 20) | rng.randrange(1 << 20)
    nh = rng.choice((6, 17, 58, 132))
    ext = b""
    if size >= 48 and rng.random() < 0.3:
        ext = bytes((nh, 0, 1, 4)) + b"\0" * 4                 # hop-by-hop, one PadN option
        nh = 0
    header = struct.pack("!IHBB16s16s", first, size - 40, nh, rng.randint(1, 255),
                         rng.randbytes(16), rng.randbytes(16))
    return header + ext + rng.randbytes(size - 40 - len(ext))


@dataclass(frozen=True)
class Case:
    keyword: str            # proposal, "-esn" included
    mode: Mode
    outer: int              # outer IP version (tunnel mode; transport: per packet)
    encap: bool
    start: int              # last sequence number before the first packet
    seed: int

    @property
    def id(self) -> str:
        where = f"tunnel-v{self.outer}" if self.mode == Mode.TUNNEL else "transport"
        return f"{self.keyword}-{where}{'-udp' if self.encap else ''}"


def _plan() -> list[Case]:
    rng = random.Random(1234)
    cases = []
    for keyword in PROPOSALS:
        esn = rng.random() < 0.5
        if esn:
            start = rng.choice((2**32 - 2, 2**32 - 3, rng.randrange(2**33, 2**63)))
        else:
            start = rng.choice((0, rng.randrange(2**31)))
        cases.append(Case(keyword + ("-esn" if esn else ""),
                          rng.choice((Mode.TUNNEL, Mode.TRANSPORT)), rng.choice((4, 6)),
                          rng.random() < 0.4, start, rng.randrange(2**32)))
    return cases


CASES = _plan()


def _sa(case: Case, direction: Direction, backend: str, outer: int, keys: tuple[bytes, bytes]):
    prop = parse_esp(case.keyword)
    tunnel = case.mode == Mode.TUNNEL
    local, remote = ADDRESSES[outer]
    config = SaConfig(name=f"{direction.value}-{backend}", spi=0xC0DE0000 + outer, direction=direction,
                      mode=case.mode, proposal=prop, enc_key=keys[0], integ_key=keys[1],
                      local=ipaddress.ip_address(local) if tunnel else None,
                      remote=ipaddress.ip_address(remote) if tunnel else None,
                      encap_ports=(4500, 4500) if case.encap else None, replay_window=128,
                      backend=backend)
    sa = SecurityAssociation(config, registry=REGISTRY, now=0.0)
    if direction == Direction.OUT:
        sa.seq = case.start
    else:
        sa.replay.top = case.start
    return sa


def _esp_start(wire: bytes, encap: bool) -> int:
    if wire[0] >> 4 == 4:
        off = (wire[0] & 0x0F) * 4
    else:
        off, nh = 40, wire[6]
        while nh == 0:                                   # hop-by-hop kept in front of ESP
            nh, off = wire[off], off + (wire[off + 1] + 1) * 8
    return off + (8 if encap else 0)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_every_backend_unprotects_every_backend(case: Case):
    rng = random.Random(case.seed)
    prop = parse_esp(case.keyword)
    keys = (rng.randbytes(prop.enc_key_bytes),
            rng.randbytes(prop.integ_info.key_bytes) if prop.integ_info else b"")
    families = [] if prop.encr_info.family == "null" else [(prop.encr_info.family, prop.key_bits)]
    if prop.integ_info:
        integ = prop.integ_info
        families.append((integ.family, None if integ.family.startswith("hmac") else integ.key_bytes * 8))
    backends = [b for b in BACKENDS if all(REGISTRY.records[b].offers(f, k) for f, k in families)]
    if len(backends) < 2:
        pytest.skip(f"fewer than two backends offer {case.keyword}: {backends}")
    counter_mode = prop.encr_info.family != "aes-cbc"

    # Transport mode keeps the packet's own header, so its IP version is the outer one; one SA
    # set per version (an SA is bound to one address family in tunnel mode only, but this keeps
    # the sequence numbers of the two streams apart).
    versions = (case.outer,) if case.mode == Mode.TUNNEL else (4, 6)
    sas = {}
    for v in versions:
        outs = {b: _sa(case, Direction.OUT, b, v, keys) for b in backends}
        ins = {(p, u): _sa(case, Direction.IN, u, v, keys) for p in backends for u in backends}
        sas[v] = (outs, ins)

    for n in range(PACKETS_PER_CASE):
        inner_version = rng.choice((4, 6))
        size = rng.randint(20 if inner_version == 4 else 40, 1500)
        inner = random_ipv4(rng, size) if inner_version == 4 else random_ipv6(rng, size)
        outs, ins = sas[case.outer if case.mode == Mode.TUNNEL else inner_version]
        wires = {b: sa.protect(inner, now=0.0) for b, sa in outs.items()}
        if counter_mode:
            esps = {b: w[_esp_start(w, case.encap):] for b, w in wires.items()}
            assert len(set(esps.values())) == 1, f"packet {n}: ESP bytes differ between backends " \
                                                 f"{sorted(esps)} (size {size}, v{inner_version})"
        for (protector, unprotector), sa in ins.items():
            got = sa.unprotect(wires[protector], now=0.0)
            assert got == inner, (f"packet {n} (size {size}, v{inner_version}) protected by "
                                  f"{protector}, unprotected by {unprotector}")
    for outs, ins in sas.values():
        tops = {sa.replay.top for sa in ins.values()}
        seqs = {sa.seq for sa in outs.values()}
        assert tops == seqs and len(tops) == 1
        assert all(not sa.stats.drops for sa in ins.values())


def test_plan_covers_everything():
    assert len(PROPOSALS) == 59 and len(set(PROPOSALS)) == 59
    for keyword in PROPOSALS:
        assert parse_esp(keyword).keyword == keyword
    assert {c.mode for c in CASES} == {Mode.TUNNEL, Mode.TRANSPORT}
    assert {c.encap for c in CASES} == {True, False}
    assert {c.outer for c in CASES if c.mode == Mode.TUNNEL} == {4, 6}
    assert any(c.keyword.endswith("-esn") for c in CASES)
    assert any(not c.keyword.endswith("-esn") for c in CASES)
    assert any(c.start >> 32 == 0 and c.start > 2**32 - 8 for c in CASES), "no case crosses 2**32"
    assert len(CASES) * PACKETS_PER_CASE < 400

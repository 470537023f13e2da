"""Throughput measurement of the ESP data plane, as `ipsec perf` and `perf/` run it.

Owns: building test traffic, SA pairs for a backend and proposal, timing protect/unprotect
through the same batch path the drivers use, and timing the backend's bare primitive call on the
same payload in the same run, so the two compare as a ratio on a noisy shared machine.
Must not: be imported by the data plane.  Timing lives here, never in tests.
"""
from __future__ import annotations

import ipaddress
import os
import time
from dataclasses import asdict, dataclass
from typing import Callable

from ipsec_core.dataplane.esp import vec as esp_vec
from ipsec_core.errors import BackendError
from ipsec_core.transforms.keywords import parse_esp
from ipsec_core.wire.ip import IPPROTO_UDP, build_ipv4
from ipsec_core.dataplane.sa import Direction, Mode, SaConfig, SecurityAssociation
from ipsec_core.transforms.iana import CipherKind
from ipsec_core.vpn.tuning import allocator_state

LOCAL = ipaddress.ip_address("192.0.2.1")
REMOTE = ipaddress.ip_address("192.0.2.2")
INNER_SRC = bytes((198, 51, 100, 1))
INNER_DST = bytes((203, 0, 113, 1))
MIN_PACKET_BYTES = 28   # IPv4 + UDP headers


@dataclass
class PerfRecord:
    backend: str
    proposal: str
    size: int            # inner packet bytes
    direction: str       # "protect" or "unprotect"
    mode: str
    batch: int
    count: int
    pps: float
    gbps: float          # pps x size x 8 / 1e9 (inner bytes)
    bare_pps: float      # the backend's bare primitive call on the same payload, same run
    ratio: float         # pps / bare_pps
    overhead_bytes: int  # bytes on the wire added per packet by ESP in this mode
    repeats: int
    backend_names: str   # what the SA really bound, e.g. "aesni" or "aesni,cryptodome"
    allocator: str       # ipsec_core.vpn.tuning.allocator_state() during the run
    vectorised: bool     # whether the numpy batch path (ipsec_core.dataplane.esp.vec) was available
    batch_path: str = ""  # the batch path that ran: bulk (one buffer), vec, fast, offload or loop
    aesgcm_pps: float = 0.0   # cryptography's bare AESGCM call (AES-128, same payload), same run
    vs_aesgcm: float = 0.0    # pps / aesgcm_pps: the yardstick
    api: str = "list"         # list: protect_batch / unprotect_batch; batch: *_packets on a PacketBatch

    def as_dict(self) -> dict:
        return asdict(self)


def make_packets(size: int, count: int) -> list[bytes]:
    """`count` distinct IPv4/UDP packets of exactly `size` bytes."""
    if size < MIN_PACKET_BYTES:
        raise ValueError(f"packet size must be at least {MIN_PACKET_BYTES} bytes (IPv4 + UDP), not {size}")
    out = []
    body = os.urandom(size - 28)
    for i in range(count):
        udp = (40000 + i % 20000).to_bytes(2, "big") + b"\x00\x35" + (size - 20).to_bytes(2, "big") + b"\0\0"
        out.append(build_ipv4(src=INNER_SRC, dst=INNER_DST, proto=IPPROTO_UDP, payload_len=size - 20,
                              ident=i & 0xFFFF) + udp + body)
    return out


def sa_pair(proposal: str, *, backend: str | None, mode: str = "tunnel", esn: bool = False,
            registry=None) -> tuple[SecurityAssociation, Callable[[], SecurityAssociation]]:
    """An outbound SA and a factory of fresh matching inbound SAs (empty replay window).

    A named backend that has the cipher but not the proposal's integrity algorithm (a plugin
    such as ipsec-camellia) computes the cipher, and the default choice the MAC
    (`Registry.preferring`); the record's `backend_names` says which backend bound what."""
    from ipsec_core.crypto.registry import get_registry

    registry = registry or get_registry()
    prop = parse_esp(proposal + ("-esn" if esn and "esn" not in proposal else ""),
                     catalog=registry.transforms)
    key = os.urandom(prop.enc_key_bytes) if prop.key_bits else b""
    integ = os.urandom(prop.integ_info.key_bytes) if prop.integ_info else b""
    split = backend is not None and _lacks_integrity(registry, backend, prop)
    common = dict(spi=0xC0FFEE01, mode=Mode(mode), proposal=prop, enc_key=key, integ_key=integ,
                  backend=None if split else backend, replay_window=128)

    def install(config: SaConfig) -> SecurityAssociation:
        if not split:
            return SecurityAssociation(config, registry=registry, now=time.monotonic())
        with registry.preferring(backend):
            sa = SecurityAssociation(config, registry=registry, now=time.monotonic())
        if sa.engine.backend_names.split(",")[0] != backend:
            raise BackendError(f"backend {backend!r} does not offer {prop.keyword}")
        return sa

    out = install(SaConfig(name="perf-out", direction=Direction.OUT, local=LOCAL, remote=REMOTE,
                           **common))

    def inbound() -> SecurityAssociation:
        return install(SaConfig(name="perf-in", direction=Direction.IN, local=REMOTE,
                                remote=LOCAL, **common))
    return out, inbound


def _lacks_integrity(registry, backend: str, prop) -> bool:
    integ = prop.integ_info
    if integ is None or prop.encr_info.kind is CipherKind.NULL:
        return False
    record = registry.get(backend)
    bits = None if integ.family.startswith("hmac") else integ.key_bytes * 8
    return record.available and not record.offers(integ.family, bits)


def bare_call(sa: SecurityAssociation, size: int, direction: str) -> tuple[Callable, tuple]:
    """The SA's bare primitive work for one packet of `size` inner bytes, as (function, args):
    the AEAD (or cipher + MAC) on the same plaintext length, nothing else.  For AEADs the
    function is the backend's own bound method (for aesni: cryptography's AESGCM.encrypt), so
    the bare rate is what a plain Python loop over the library reaches."""
    eng = sa.engine
    pt_len = size + 2 + (-(size + 2) % eng.block)
    pt = os.urandom(pt_len)
    nonce = os.urandom(len(eng.salt) + eng.iv_bytes)
    aad = os.urandom(8)
    iv = os.urandom(eng.iv_bytes)
    if eng.kind is CipherKind.AEAD:
        if direction == "protect":
            return eng.aead.encrypt, (nonce, pt, aad)
        decrypt = getattr(eng.aead, "fast_decrypt", eng.aead.decrypt)
        return decrypt, (nonce, eng.aead.encrypt(nonce, pt, aad), aad)
    if eng.kind is CipherKind.GMAC:
        signed = aad + iv + pt
        if direction == "protect":
            return eng.aead.encrypt, (nonce, b"", signed)
        return eng.aead.decrypt, (nonce, eng.aead.encrypt(nonce, b"", signed), signed)
    mac = eng.mac.mac
    if eng.kind is CipherKind.NULL:
        return mac, (aad + pt,)
    cipher = eng.cipher
    start = eng.salt + iv + b"\0\0\0\1" if eng.ctr else iv   # counter modes: the counter block
    if direction == "protect":
        return (lambda: mac(aad + iv + cipher.encrypt(start, pt))), ()
    ct = cipher.encrypt(start, pt)
    return (lambda: (mac(aad + iv + ct), cipher.decrypt(start, ct))), ()


def aesgcm_call(size: int, direction: str) -> tuple[Callable, tuple]:
    """cryptography's bare AES-128-GCM call on the ESP payload of a `size`-byte packet: the
    yardstick every backend's ESP rate is also compared with."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    aead = AESGCM(os.urandom(16))
    pt = os.urandom(size + 2 + (-(size + 2) % 4))
    nonce, aad = os.urandom(12), os.urandom(8)
    if direction == "protect":
        return aead.encrypt, (nonce, pt, aad)
    return aead.decrypt, (nonce, aead.encrypt(nonce, pt, aad), aad)


def batch_path(sa: SecurityAssociation, direction: str, api: str = "list") -> str:
    """Which batch path `protect_batch` / `unprotect_batch` of `sa` takes (for the record)."""
    eng = sa.engine
    if getattr(eng, "_offload", False):
        return "offload"
    fn = eng._fast_protect if direction == "protect" else eng._fast_unprotect
    if fn is None:
        return "loop"
    path = fn.__module__.rsplit(".", 1)[-1]
    bulk = getattr(fn, "__self__", None)
    if path == "bulk" and getattr(bulk, "fused", False) and (
            direction == "unprotect" or api == "batch" or bulk.fused_list_protect):
        return "bulk+fused"      # the backend frames the whole batch in one call (ipsecmb)
    return path


def _bare_seconds(call: tuple[Callable, tuple], count: int) -> float:
    """Seconds for `count` bare calls in a plain Python loop."""
    fn, args = call
    start = time.perf_counter()
    if len(args) == 3:
        a, b, c = args
        for _ in range(count):
            fn(a, b, c)
    else:
        for _ in range(count):
            fn(*args)
    return time.perf_counter() - start


def measure(*, backend: str | None, proposal: str, size: int, count: int, batch: int,
            directions: tuple[str, ...] = ("protect", "unprotect"), mode: str = "tunnel",
            repeats: int = 5, registry=None, tick: Callable[[], None] | None = None,
            api: str = "list") -> list[PerfRecord]:
    """Time protect and/or unprotect of `count` packets of `size` bytes, `batch` at a time, and
    the bare primitive on the same payload, alternating batch by batch; `repeats` runs, the one
    with the median ratio reported.

    Packets are handled the way a driver handles them: a batch is read (here: built, or
    protected by the peer, untimed) and then processed while it is in cache; results of one batch
    are dropped before the next, as a driver writes them out.  The bare call likewise runs on
    one payload in cache.

    `api`: "list" times protect_batch / unprotect_batch (a list of bytes in and out); "batch"
    times protect_packets / unprotect_packets on a PacketBatch (in place where the backend
    frames batches; the batch is laid out untimed, as a driver's read would lay it out).
    """
    if api not in ("list", "batch"):
        raise ValueError(f"api must be 'list' or 'batch', not {api!r}")
    from ipsec_core.dataplane.batch import PacketBatch

    batch = max(1, min(batch, count))
    out_sa, new_inbound = sa_pair(proposal, backend=backend, mode=mode, registry=registry)
    packets = make_packets(size, batch)
    rounds = max(1, count // batch)
    count = rounds * batch
    overhead = len(out_sa.protect(packets[0], now=time.monotonic())) - size
    records = []
    for direction in directions:
        bare = bare_call(out_sa, size, direction)
        gcm = aesgcm_call(size, direction)
        runs = []                  # (ratio, pps, bare_pps, aesgcm_pps) per repeat
        for _ in range(repeats):
            # The bare calls and the ESP path alternate batch by batch, so all see the same
            # machine: on a shared VM the CPU's speed moves by 2-3x within seconds.
            elapsed = bare_elapsed = gcm_elapsed = 0.0
            if direction == "protect":
                fn = out_sa.protect_batch if api == "list" else out_sa.protect_packets
                for _ in range(rounds):
                    bare_elapsed += _bare_seconds(bare, batch)
                    gcm_elapsed += _bare_seconds(gcm, batch)
                    todo = packets if api == "list" else PacketBatch.from_packets(packets, headroom=64, tailroom=32)
                    start = time.perf_counter()
                    fn(todo, now=time.monotonic())     # a driver reads the clock per batch
                    elapsed += time.perf_counter() - start
            else:
                inbound = new_inbound()
                fn = inbound.unprotect_batch if api == "list" else inbound.unprotect_packets
                for _ in range(rounds):
                    wire = out_sa.protect_batch(packets, now=time.monotonic())
                    if api == "batch":
                        wire = PacketBatch.from_packets(wire)
                    bare_elapsed += _bare_seconds(bare, batch)
                    gcm_elapsed += _bare_seconds(gcm, batch)
                    start = time.perf_counter()
                    fn(wire, now=time.monotonic())
                    elapsed += time.perf_counter() - start
            runs.append((bare_elapsed / elapsed, count / elapsed, count / bare_elapsed,
                         count / gcm_elapsed))
            if tick:
                tick()
        # The median run by ratio, and its rates (so ratio == pps / bare_pps).
        _, pps, bare_pps, gcm_pps = sorted(runs)[len(runs) // 2]
        records.append(PerfRecord(
            backend=backend or out_sa.engine.backend_names, proposal=out_sa.config.proposal.keyword,
            size=size, direction=direction, mode=mode, batch=batch, count=count, pps=round(pps, 1),
            gbps=round(pps * size * 8 / 1e9, 4), bare_pps=round(bare_pps, 1),
            ratio=round(pps / bare_pps, 4), overhead_bytes=overhead, repeats=repeats,
            backend_names=out_sa.engine.backend_names, allocator=allocator_state(),
            vectorised=esp_vec.available(), batch_path=batch_path(out_sa if direction == "protect"
                                                             else new_inbound(), direction, api),
            aesgcm_pps=round(gcm_pps, 1), vs_aesgcm=round(pps / gcm_pps, 4), api=api))
    return records

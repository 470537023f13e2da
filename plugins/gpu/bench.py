"""`ipsec perf --backend gpu`: what the gpu backend computes per second, measured three ways.

- kernel: the kernel alone over a whole batch already resident in device memory (CUDA events
  around repeated launches; on the CPU build, the wall clock of one launch);
- device end-to-end: a batch already staged in pinned host memory goes to the device, through
  the kernel and back (chunked, two streams), as `run` does it;
- end-to-end: `encrypt_batch` / `decrypt_batch` from Python `bytes` to Python `bytes`, staging
  and result slicing included: what `protect_batch` / `unprotect_batch` pay for the crypto.
  Its median per call is the batch latency.

Gbit/s count inner packet bytes, as `ipsec perf` does for every backend (a packet of `size`
bytes carries an ESP payload of size + 2 rounded up to 4, plus the 16-byte tag).  Next to them,
the bare `aesni` AEAD on one core and the same payload, when that backend is available.

Owns: the measurement and its records.  Must not: be imported by the data plane or the plugin's
`__init__` (timing code stays out of the registry's import).
"""
from __future__ import annotations

import os
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

from ipsec_plugins.gpu import staging

DEFAULT_SIZES = (64, 576, 1400, 9000)
DEFAULT_BATCHES = (1024, 4096, 16384, 65536)
DIRECTIONS = ("protect", "unprotect")
ESP_AAD_BYTES = 8            # SPI || sequence number


@dataclass
class GpuPerfRecord:
    backend: str
    launcher: str
    device: str
    proposal: str
    size: int                 # inner packet bytes
    payload_bytes: int        # ESP plaintext per packet (inner packet, padding, trailer)
    direction: str
    batch: int
    lanes: int                # threads per packet of the kernel launch
    kernel_ms: float          # one launch over the batch, data resident on the device
    kernel_gbps: float
    kernel_pps: float
    device_e2e_ms: float      # pinned host -> device -> kernel -> host, staged batch
    device_e2e_gbps: float
    batch_latency_ms: float   # encrypt_batch / decrypt_batch, bytes in -> bytes out (median)
    e2e_gbps: float
    e2e_pps: float
    aesni_gbps: float | None  # bare aesni AEAD, one core, same payload
    vs_aesni: float | None    # e2e_gbps / aesni_gbps
    repeats: int

    def as_dict(self) -> dict:
        return asdict(self)


def payload_bytes(size: int) -> int:
    """ESP plaintext of an AES-GCM tunnel-mode packet of `size` inner bytes (RFC 4303 padding to
    a multiple of 4, plus pad length and next header)."""
    return size + 2 + (-(size + 2) % 4)


def _gbps(packets: int, size: int, seconds: float) -> float:
    return round(packets * size * 8 / seconds / 1e9, 4) if seconds > 0 else 0.0


def _aesni_gbps(size: int, direction: str, key: bytes, registry, cache: dict) -> float | None:
    if (size, direction) in cache:
        return cache[(size, direction)]
    result = None
    record = registry.records.get("aesni") if registry is not None else None
    if record is not None and record.available and record.offers("aes-gcm", 8 * len(key)):
        aead = record.backend.aead("aes-gcm", key, tag_bytes=16, nonce_bytes=12)
        pt, nonce, aad = os.urandom(payload_bytes(size)), os.urandom(12), os.urandom(ESP_AAD_BYTES)
        call = (lambda: aead.encrypt(nonce, pt, aad)) if direction == "protect" else None
        if call is None:
            sealed = aead.encrypt(nonce, pt, aad)
            call = lambda: aead.decrypt(nonce, sealed, aad)   # noqa: E731
        count, elapsed = 0, 0.0
        start = time.perf_counter()
        while elapsed < 0.25:
            for _ in range(200):
                call()
            count += 200
            elapsed = time.perf_counter() - start
        result = _gbps(count, size, elapsed)
    cache[(size, direction)] = result
    return result


def measure(backend, *, size: int, batch: int, direction: str, key_bits: int = 128,
            repeats: int = 5, registry=None, aesni_cache: dict | None = None) -> GpuPerfRecord:
    """One (size, batch, direction) point on `backend` (a GpuBackend, any launcher)."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, not {direction!r}")
    key = os.urandom(key_bits // 8)
    aead = backend.aead("aes-gcm", key, tag_bytes=16, nonce_bytes=12)
    launcher = backend.engine.launcher
    salt = os.urandom(4)
    nonces = [salt + seq.to_bytes(8, "big") for seq in range(1, batch + 1)]
    aads = [os.urandom(ESP_AAD_BYTES)] * batch
    items: Sequence[bytes] = [os.urandom(payload_bytes(size))] * batch
    decrypt = direction == "unprotect"
    if decrypt:
        items = aead.encrypt_batch(nonces, items, aads)
    call = aead.decrypt_batch if decrypt else aead.encrypt_batch
    call(nonces, items, aads)                                    # warm-up: buffers, module
    latencies = []
    for _ in range(repeats):
        start = time.perf_counter()
        call(nonces, items, aads)
        latencies.append(time.perf_counter() - start)
    latency = statistics.median(latencies)

    engine = backend.engine
    with engine._lock:                                           # the launcher's buffers
        st = staging.stage(launcher.alloc, slots=aead.slot, nonces=nonces, items=items,
                           aads=aads, decrypt=decrypt)
        if hasattr(launcher, "time_kernel"):
            kernel = launcher.time_kernel(st, repeats=max(repeats, 10))
            transfers = launcher.time_transfers(st, repeats=repeats)
            launch = launcher.run(st)
        else:                                                    # the CPU build: wall clock
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                launch = launcher.run(st)
                times.append(time.perf_counter() - start)
            kernel = transfers = statistics.median(times)
    e2e = _gbps(batch, size, latency)
    aesni = _aesni_gbps(size, direction, key, registry, aesni_cache if aesni_cache is not None else {})
    return GpuPerfRecord(
        backend=backend.name, launcher=getattr(launcher, "name", type(launcher).__name__),
        device=getattr(launcher, "device_name", "cpu"), proposal=f"aes{key_bits}gcm16",
        size=size, payload_bytes=payload_bytes(size), direction=direction, batch=batch,
        lanes=launch.lanes if launch is not None else 0,
        kernel_ms=round(kernel * 1e3, 4), kernel_gbps=_gbps(batch, size, kernel),
        kernel_pps=round(batch / kernel, 1) if kernel > 0 else 0.0,
        device_e2e_ms=round(transfers * 1e3, 4), device_e2e_gbps=_gbps(batch, size, transfers),
        batch_latency_ms=round(latency * 1e3, 4), e2e_gbps=e2e,
        e2e_pps=round(batch / latency, 1) if latency > 0 else 0.0,
        aesni_gbps=aesni, vs_aesni=round(e2e / aesni, 2) if aesni else None, repeats=repeats)


def run(backend, *, sizes: Sequence[int] = DEFAULT_SIZES, batches: Sequence[int] = DEFAULT_BATCHES,
        directions: Sequence[str] = DIRECTIONS, key_bits: Sequence[int] = (128,), repeats: int = 5,
        registry=None, tick: Callable[[], None] | None = None) -> list[GpuPerfRecord]:
    """Every (key size, packet size, batch, direction) point, in that nesting."""
    records = []
    aesni_cache: dict = {}
    for bits in key_bits:
        for size in sizes:
            for batch in batches:
                for direction in directions:
                    records.append(measure(backend, size=size, batch=batch, direction=direction,
                                           key_bits=bits, repeats=repeats, registry=registry,
                                           aesni_cache=aesni_cache))
                    if tick:
                        tick()
    return records

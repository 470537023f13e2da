"""Micro-benchmark of the `cryptodome` backend: its fast paths (`CryptodomeBackend()`) against the
plain per-message use of pycryptodome (`CryptodomeBackend(fast=False)`), both timed in the same
run, interleaved, medians of several repeats (the ratio is what survives a shared machine).

    python -m ipsec_plugins.cryptodome.bench [--count N] [--repeats R] [--sizes 80,1424]
    python -m ipsec_plugins.cryptodome.bench --esp aes128gcm16,aes128-sha256 --sizes 64,1400

Sizes are the bytes the primitive sees (a 64-byte inner packet in tunnel mode is an 80-byte ESP
payload with AES-GCM; 1400 bytes is 1424).  With --esp they are inner packet sizes, and both
variants go through `ipsec_core.tools.perf.measure` (what `ipsec perf` runs) on one registry, the
backend's `fast` switched between runs.  Not used by the data plane or tests.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

from . import CryptodomeBackend


def _cases(backend, size):
    """(name, direction, callable) per primitive, on one payload of `size` bytes."""
    pt, aad, nonce, iv = os.urandom(size), os.urandom(8), os.urandom(12), os.urandom(16)
    out = []
    for family, key_bytes, nonce_bytes, tag in (("aes-gcm", 16, 12, 16), ("aes-gcm", 16, 12, 12),
                                                ("aes-ccm", 16, 11, 16), ("chacha20-poly1305", 32, 12, 16)):
        aead = backend.aead(family, bytes(range(key_bytes)), tag_bytes=tag, nonce_bytes=nonce_bytes)
        n = nonce[:nonce_bytes]
        sealed = aead.encrypt(n, pt, aad)
        out.append((f"{family}/{tag}", "encrypt", lambda a=aead, n=n: a.encrypt(n, pt, aad)))
        out.append((f"{family}/{tag}", "decrypt", lambda a=aead, n=n, s=sealed: a.decrypt(n, s, aad)))
    block = pt[:len(pt) - len(pt) % 16] or bytes(16)
    cbc = backend.cipher("aes-cbc", bytes(16))
    ct = cbc.encrypt(iv, block)
    out.append(("aes-cbc", "encrypt", lambda: cbc.encrypt(iv, block)))
    out.append(("aes-cbc", "decrypt", lambda: cbc.decrypt(iv, ct)))
    ctr = backend.cipher("aes-ctr", bytes(16))
    ctr_iv = iv[:12] + b"\x00\x00\x00\x01"
    out.append(("aes-ctr", "encrypt", lambda: ctr.encrypt(ctr_iv, pt)))
    for family in ("hmac-sha1", "hmac-sha256", "aes-cmac", "aes-xcbc"):
        mac = backend.mac(family, bytes(16) if "aes" in family else bytes(32))
        out.append((family, "mac", lambda m=mac: m.mac(pt)))
    return out


def run(sizes=(80, 1424), count=2000, repeats=5):
    """[(size, name, direction, fast_us, public_us)], medians over `repeats` interleaved runs."""
    rows = []
    for size in sizes:
        fast, public = _cases(CryptodomeBackend(), size), _cases(CryptodomeBackend(fast=False), size)
        for (name, direction, f), (_, _, p) in zip(fast, public):
            times = {"fast": [], "public": []}
            for _ in range(repeats):
                for label, fn in (("fast", f), ("public", p)):
                    start = time.perf_counter()
                    for _ in range(count):
                        fn()
                    times[label].append((time.perf_counter() - start) / count * 1e6)
            rows.append((size, name, direction, statistics.median(times["fast"]),
                         statistics.median(times["public"])))
    return rows


def run_esp(proposals, sizes=(64, 1400), count=2000, repeats=5, batch=256):
    """[(proposal, size, direction, fast_pps, public_pps)] through `ipsec_core.tools.perf.measure`."""
    from ipsec_core.crypto.registry import Registry
    from ipsec_core.tools.perf import measure

    registry = Registry()
    backend = registry.get("cryptodome").backend
    rows = []
    for proposal in proposals:
        for size in sizes:
            pps = {}
            for fast in (False, True):
                backend.fast = fast
                pps[fast] = measure(backend="cryptodome", proposal=proposal, size=size, count=count,
                                    batch=batch, repeats=repeats, registry=registry)
            for slow, quick in zip(pps[False], pps[True]):
                rows.append((proposal, size, quick.direction, quick.pps, slow.pps))
    backend.fast = True
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sizes", default=None)
    parser.add_argument("--esp", default=None, help="comma-separated ESP proposals: time ESP, not primitives")
    args = parser.parse_args(argv)
    if args.esp:
        sizes = tuple(int(s) for s in (args.sizes or "64,1400").split(","))
        print(f"{'proposal':<18} {'size':>5} {'direction':<10} {'fast pkt/s':>11} {'public pkt/s':>13} "
              f"{'speed-up':>9}")
        for proposal, size, direction, fast_pps, public_pps in run_esp(args.esp.split(","), sizes,
                                                                        args.count, args.repeats):
            print(f"{proposal:<18} {size:>5} {direction:<10} {fast_pps:>11,.0f} {public_pps:>13,.0f} "
                  f"{fast_pps / public_pps:>8.1f}x")
        return
    sizes = tuple(int(s) for s in (args.sizes or "80,1424").split(","))
    print(f"{'bytes':>6} {'primitive':<22} {'op':<8} {'fast us':>9} {'public us':>10} {'speed-up':>9}")
    for size, name, direction, fast_us, public_us in run(sizes, args.count, args.repeats):
        print(f"{size:>6} {name:<22} {direction:<8} {fast_us:>9.2f} {public_us:>10.2f} "
              f"{public_us / fast_us:>8.1f}x")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""CPU benchmark of the ESP data plane: every CPU backend, the proposals users ask about, three
packet sizes, plus scapy's ESP on the same packets, all in one run (ratios, not absolute
figures, are what compare on a shared machine).

    python3 perf/cpu_bench.py [--quick] [--out perf/results/cpu.json] [--plot perf/results/cpu.png]

Writes JSON: {"command", "machine", "records": [ipsec perf records], "scapy": [...]}.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

from ipsec_core.tools.perf import make_packets, measure

PROPOSALS = ["aes128gcm16", "chacha20poly1305", "aes128-sha256"]
SIZES = [64, 576, 1400]


def scapy_rates(size: int, count: int, repeats: int) -> dict:
    """scapy's ESP (AES-GCM-16, tunnel) on the same kind of packets, and ours in the same run."""
    from scapy.layers.inet import IP
    from scapy.layers.ipsec import ESP, SecurityAssociation as ScapySA

    key = os.urandom(20)
    sa = ScapySA(ESP, spi=0xC0FFEE01, crypt_algo="AES-GCM", crypt_key=key,
                 tunnel_header=IP(src="192.0.2.1", dst="192.0.2.2"))
    packets = make_packets(size, count)
    # Bytes in, bytes out, as for our data plane: scapy parses, encrypts and serialises.
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        enc = [bytes(sa.encrypt(IP(p))) for p in packets]
        rates.append(count / (time.perf_counter() - start))
    dec_rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for e in enc:
            bytes(sa.decrypt(IP(e)))
        dec_rates.append(count / (time.perf_counter() - start))
    ours = measure(backend="aesni", proposal="aes128gcm16", size=size, count=count * 20,
                   batch=256, repeats=repeats)
    return {
        "size": size, "proposal": "aes128gcm16", "mode": "tunnel",
        "scapy_protect_pps": round(statistics.median(rates), 1),
        "scapy_unprotect_pps": round(statistics.median(dec_rates), 1),
        "ours_protect_pps": ours[0].pps, "ours_unprotect_pps": ours[1].pps,
        "speedup_protect": round(ours[0].pps / statistics.median(rates), 1),
        "speedup_unprotect": round(ours[1].pps / statistics.median(dec_rates), 1),
    }


IMIX = [64] * 7 + [576] * 4 + [1400]       # the classic simple IMIX, 7:4:1


def imix_rates(count: int, repeats: int, batch: int = 256, *, proposal: str = "aes128gcm16",
               backend: str = "aesni", api: str = "list") -> dict:
    """`proposal` on `backend` on batches of mixed sizes (IMIX, shuffled), against the backend's
    bare call and cryptography's bare AES-128-GCM call looping over the same payload sizes."""
    import random

    from ipsec_core.dataplane.batch import PacketBatch
    from ipsec_core.tools.perf import aesgcm_call, bare_call, sa_pair

    out_sa, new_inbound = sa_pair(proposal, backend=backend)
    rng = random.Random(7)
    sizes = [IMIX[i % len(IMIX)] for i in range(batch)]
    rng.shuffle(sizes)
    packets = [make_packets(s, 1)[0] for s in sizes]
    rounds = max(1, count // batch)
    calls = {(s, d): bare_call(out_sa, s, d) for s in set(IMIX) for d in ("protect", "unprotect")}
    gcms = {(s, d): aesgcm_call(s, d) for s in set(IMIX) for d in ("protect", "unprotect")}
    row = {"proposal": proposal, "backend": backend, "batch": batch, "mix": "64:576:1400 = 7:4:1",
           "api": api}
    for direction in ("protect", "unprotect"):
        runs = []
        work = [(calls[(s, direction)][0], calls[(s, direction)][1]) for s in sizes]
        gcm_work = [(gcms[(s, direction)][0], *gcms[(s, direction)][1]) for s in sizes]
        for _ in range(repeats):
            elapsed = bare_elapsed = gcm_elapsed = 0.0
            inbound = new_inbound()
            for _ in range(rounds):         # bare and ESP alternate batch by batch
                wire = out_sa.protect_batch(packets, now=time.monotonic()) if direction == "unprotect" else None
                if api == "batch":        # laid out untimed, as a driver's read lays it out
                    todo = PacketBatch.from_packets(packets if wire is None else wire, headroom=64, tailroom=32)
                start = time.perf_counter()
                for fn, args in work:
                    fn(*args)
                bare_elapsed += time.perf_counter() - start
                start = time.perf_counter()
                for fn, a, b, c in gcm_work:
                    fn(a, b, c)
                gcm_elapsed += time.perf_counter() - start
                start = time.perf_counter()
                if api == "batch":
                    if direction == "protect":
                        out_sa.protect_packets(todo, now=time.monotonic())
                    else:
                        inbound.unprotect_packets(todo, now=time.monotonic())
                elif direction == "protect":
                    out_sa.protect_batch(packets, now=time.monotonic())
                else:
                    inbound.unprotect_batch(wire, now=time.monotonic())
                elapsed += time.perf_counter() - start
            runs.append((bare_elapsed / elapsed, rounds * batch / elapsed, rounds * batch / bare_elapsed,
                         rounds * batch / gcm_elapsed))
        ratio, pps, bare, gcm = sorted(runs)[len(runs) // 2]
        row[f"{direction}_pps"], row[f"{direction}_bare_pps"] = round(pps, 1), round(bare, 1)
        row[f"{direction}_ratio"] = round(ratio, 4)
        row[f"{direction}_aesgcm_pps"] = round(gcm, 1)
        row[f"{direction}_vs_aesgcm"] = round(pps / gcm, 4)
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer packets (a smoke run)")
    ap.add_argument("--out", default="perf/results/cpu.json")
    ap.add_argument("--plot", default="perf/results/cpu.png")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--backends", default="aesni,cryptodome,reference",
                    help="comma-separated (ipsecmb too: then IMIX runs for every proposal on "
                         "ipsecmb and aesni); unavailable ones are skipped with a line saying so")
    ap.add_argument("--no-scapy", action="store_true", help="skip scapy's rows")
    ap.add_argument("--api", choices=("list", "batch", "both"), default="list",
                    help="protect_batch/unprotect_batch on lists, *_packets on PacketBatches, or both")
    ap.add_argument("--no-tune-allocator", action="store_true",
                    help="leave glibc's malloc at its defaults (see ipsec_core.vpn.tuning)")
    args = ap.parse_args()
    if not args.no_tune_allocator:
        from ipsec_core.vpn.tuning import tune_allocator
        tune_allocator()
    count = 4000 if args.quick else 40000
    apis = ("list", "batch") if args.api == "both" else (args.api,)
    records = []
    from ipsec_core.crypto.registry import get_registry

    registry = get_registry()
    counts = {"ipsecmb": count, "aesni": count, "cryptodome": count // 10, "reference": 64}
    chosen = []
    for backend in args.backends.split(","):
        record = registry.get(backend)
        if not record.available:
            print(f"{backend}: unavailable ({record.reason}), skipped", flush=True)
            continue
        chosen.append(backend)
    load_before = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else []
    for backend in chosen:
        n = counts.get(backend, count // 10)
        for proposal in PROPOSALS:
            for size in SIZES:
                for api in apis:
                    rs = measure(backend=backend, proposal=proposal, size=size, count=n,
                                 batch=min(256, n), api=api,
                                 repeats=args.repeats if backend in ("aesni", "ipsecmb") else 3)
                    for r in rs:
                        print(f"{r.backend:10} {r.proposal:17} {r.size:5} {r.direction:9} {api:5} "
                              f"{r.pps:12,.0f} pps {r.gbps:7.3f} Gbit/s  bare {r.bare_pps:12,.0f}  "
                              f"ratio {r.ratio:.2f}  AESGCM {r.aesgcm_pps:12,.0f}  "
                              f"x{r.vs_aesgcm:.2f}  [{r.batch_path}]", flush=True)
                    records += [r.as_dict() for r in rs]
    imix = []
    imix_combos = ([(b, p) for b in chosen if b in ("ipsecmb", "aesni") for p in PROPOSALS]
                   if "ipsecmb" in chosen else [("aesni", "aes128gcm16")])
    for backend, proposal in imix_combos:
        for api in apis:
            row = imix_rates(4096 if args.quick else 40960, args.repeats, proposal=proposal,
                             backend=backend, api=api)
            print("imix", row, flush=True)
            imix.append(row)
    scapy = []
    for size in (() if args.no_scapy else (64, 1400)):
        row = scapy_rates(size, 500 if args.quick else 2000, 3)
        print("scapy", row, flush=True)
        scapy.append(row)
    result = {
        "command": "python3 perf/cpu_bench.py" + (" --quick" if args.quick else "")
                   + (f" --backends {args.backends}" if args.backends != "aesni,cryptodome,reference" else "")
                   + (f" --api {args.api}" if args.api != "list" else "")
                   + (" --no-tune-allocator" if args.no_tune_allocator else ""),
        "machine": {"python": sys.version.split()[0], "platform": platform.platform(),
                    "cpus": os.cpu_count()},
        "loadavg_before": load_before,
        "loadavg_after": Path("/proc/loadavg").read_text().split()[:3] if load_before else [],
        "records": records,
        "imix": imix[0] if imix else {},
        "imix_rows": imix,
        "scapy": scapy,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    if args.plot:
        from ipsec_core.cli.perf import _plot
        _plot([r for r in records if r["backend"] != "reference"], args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())

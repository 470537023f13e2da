#!/usr/bin/env python3
"""What each step of the CPU batch path is worth, in one process (aesni, aes128gcm16, tunnel and
transport mode):

  1. the per-packet loop (numpy hidden from `esp_vec`: `esp_fast` in tunnel mode, the generic
     loop in transport mode), glibc malloc defaults;
  2. the vectorised path (`esp_vec`), malloc defaults;
  3. the vectorised path after `ipsec_core.vpn.tuning.tune_allocator()` (as `ipsec perf` runs).

The order is fixed because the allocator setting cannot be undone in a process.

    python3 perf/paths_bench.py [--batch N] [--out perf/results/paths.json]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ipsec_core.dataplane.esp import vec as esp_vec
from ipsec_core.tools.perf import measure
from ipsec_core.vpn.tuning import tune_allocator

SIZES = (64, 1400)


def run(label: str, count: int, repeats: int, batch: int = 256) -> list[dict]:
    rows = []
    for mode in ("tunnel", "transport"):
        for size in SIZES:
            for r in measure(backend="aesni", proposal="aes128gcm16", size=size, count=count,
                             batch=batch, repeats=repeats, mode=mode):
                row = {"path": label, **r.as_dict()}
                print(f"{label:28} {mode:9} {size:5} {r.direction:9} {r.pps:12,.0f} pps  bare "
                      f"{r.bare_pps:12,.0f}  ratio {r.ratio:.2f}", flush=True)
                rows.append(row)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="perf/results/paths.json")
    ap.add_argument("--count", type=int, default=40960)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--batch", type=int, default=256,
                    help="packets per batch (esp_vec starts at 64 to protect, 32 to unprotect)")
    ap.add_argument("--vector-from", type=int, default=None,
                    help="let esp_vec take batches from this many packets (to measure the thresholds)")
    args = ap.parse_args()
    if not esp_vec.available():
        print("numpy is not installed: nothing to compare", file=sys.stderr)
        return 1
    if args.vector_from is not None:
        esp_vec.MIN_PROTECT_BATCH = esp_vec.MIN_UNPROTECT_BATCH = args.vector_from
    numpy = esp_vec.np
    esp_vec.np = None                    # SAs built now get the per-packet loop
    rows = run("per-packet loop", args.count, args.repeats, args.batch)
    esp_vec.np = numpy
    rows += run("vectorised (esp_vec)", args.count, args.repeats, args.batch)
    tune_allocator()
    rows += run("vectorised + tune_allocator", args.count, args.repeats, args.batch)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"command": " ".join(["python3", "perf/paths_bench.py", *sys.argv[1:]]), "records": rows},
                                         indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

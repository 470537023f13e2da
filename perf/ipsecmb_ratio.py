#!/usr/bin/env python3
"""ESP rate on one backend against cryptography's bare AES-128-GCM call, alternating batch by batch
(256 packets), 150 rounds; prints the median per-round ratio and the best rates.  Shared-machine
friendly: the ratio of each round is taken on the same few milliseconds of CPU.

Two ways in and out of the ESP path: `list` (protect_batch / unprotect_batch: a list of bytes in,
one new bytes object per packet out) and `batch` (protect_packets / unprotect_packets on a
PacketBatch: ESP framed in place in the batch's own buffer on the way out, the inner packets
in one new buffer on the way in; no Python object per packet).

    python3 perf/ipsecmb_ratio.py [--json perf/results/ipsecmb_ratio.json]
"""
import argparse, json, statistics, time
from ipsec_core.vpn.tuning import tune_allocator; tune_allocator()
from ipsec_core.dataplane.batch import PacketBatch
from ipsec_core.tools.perf import sa_pair, make_packets, aesgcm_call

ROOM = (64, 32)          # headroom, tailroom: enough for every proposal's header and trailer


def run(prop, size, backend="ipsecmb", mode="list", rounds=150, n=256):
    out, newin = sa_pair(prop, backend=backend)
    pk = make_packets(size, n)
    res = {}
    for d in ("protect", "unprotect"):
        fn_g, a = aesgcm_call(size, d)
        ratios, esp_t, gcm_t = [], [], []
        inb = newin()
        for _ in range(rounds):
            wire = out.protect_batch(pk, now=0.0) if d == "unprotect" else None   # fresh numbers
            if mode == "batch":
                src = PacketBatch.from_packets(pk if d == "protect" else wire, headroom=ROOM[0],
                                               tailroom=ROOM[1])
                call = (lambda: out.protect_packets(src, now=0.0)) if d == "protect" else \
                    (lambda: inb.unprotect_packets(src, now=0.0))
            else:
                call = (lambda: out.protect_batch(pk, now=0.0)) if d == "protect" else \
                    (lambda: inb.unprotect_batch(wire, now=0.0))
            t = time.perf_counter()
            for _ in range(n):
                fn_g(*a)
            g = time.perf_counter() - t
            t = time.perf_counter()
            call()
            e = time.perf_counter() - t
            ratios.append(g / e); esp_t.append(e); gcm_t.append(g)
        res[d] = dict(backend=backend, proposal=prop, size=size, direction=d, mode=mode,
                      ratio=round(statistics.median(ratios), 3), esp_pps=round(n / min(esp_t)),
                      aesgcm_pps=round(n / min(gcm_t)))
        r = res[d]
        print(f"{backend:8} {prop:16} {size:5} {d:9} {mode:5} ESP/AESGCM median x{r['ratio']:.2f}  "
              f"best ESP {r['esp_pps']:,} pps  best AESGCM {r['aesgcm_pps']:,}", flush=True)
    return list(res.values())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", help="also write the rows here")
    args = ap.parse_args()
    load = [open("/proc/loadavg").read().strip()]
    print(load[0])
    rows = []
    for mode in ("list", "batch"):
        for prop in ("aes128gcm16", "aes128-sha256", "chacha20poly1305"):
            for size in (64, 576, 1400):
                rows += run(prop, size, mode=mode)
    for mode in ("list", "batch"):
        rows += run("aes128gcm16", 64, "aesni", mode) + run("aes128gcm16", 1400, "aesni", mode)
    load.append(open("/proc/loadavg").read().strip())
    print(load[1])
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"loadavg": load, "rounds": 150, "batch": 256, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()

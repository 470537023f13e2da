#!/usr/bin/env python3
"""ESP rate on one backend against cryptography's bare AES-128-GCM call, alternating batch by batch
(256 packets), 150 rounds; prints the median per-round ratio and the best rates.  Shared-machine
friendly: the ratio of each round is taken on the same few milliseconds of CPU."""
import time, statistics, sys
from ipsec_core.vpn.tuning import tune_allocator; tune_allocator()
from ipsec_core.tools.perf import sa_pair, make_packets, aesgcm_call
def run(prop, size, backend="ipsecmb", rounds=150):
    out, newin = sa_pair(prop, backend=backend)
    pk = make_packets(size, 256)
    res = {}
    for d in ("protect", "unprotect"):
        fn_g, a = aesgcm_call(size, d)
        inb = newin()
        ratios, esp_t, gcm_t = [], [], []
        for _ in range(rounds):
            wire = out.protect_batch(pk, now=0.0) if d == "unprotect" else None
            t = time.perf_counter()
            for _ in range(256): fn_g(*a)
            g = time.perf_counter() - t
            t = time.perf_counter()
            (out.protect_batch(pk, now=0.0) if d == "protect" else inb.unprotect_batch(wire, now=0.0))
            e = time.perf_counter() - t
            ratios.append(g / e); esp_t.append(e); gcm_t.append(g)
        res[d] = (statistics.median(ratios), 256 / min(esp_t), 256 / min(gcm_t))
        print(f"{backend:8} {prop:16} {size:5} {d:9} ESP/AESGCM median x{res[d][0]:.2f}  best ESP {res[d][1]:,.0f} pps  best AESGCM {res[d][2]:,.0f}", flush=True)
print(open("/proc/loadavg").read().strip())
for prop in ("aes128gcm16", "aes128-sha256", "chacha20poly1305"):
    for size in (64, 576, 1400):
        run(prop, size)
run("aes128gcm16", 64, "aesni"); run("aes128gcm16", 1400, "aesni")
print(open("/proc/loadavg").read().strip())

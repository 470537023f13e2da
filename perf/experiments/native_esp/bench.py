"""Experiment: the native prototype `espnative` against the bare `cryptography` AEAD
loop and the project's own batch path, alternating batch by batch in one process (aesni,
aes128gcm16, tunnel, batches of 256, 7 runs, medians).  Build first with ./build.sh.

    python3 perf/experiments/native_esp/bench.py [--out perf/results/native_experiment.json]
"""
import json
import sys, os, time, statistics
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "build"))
import espnative
from ipsec_core.tools import perf
from ipsec_core.vpn import tuning
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
print("allocator:", tuning.tune_allocator())
BATCH, ROUNDS, RUNS = 256, 160, 7
pc = time.perf_counter

def bare_loop(fn, a, b, c, n=BATCH):
    t = pc()
    for _ in range(n):
        fn(a, b, c)
    return pc() - t

def run(size, direction):
    out, inbound = perf.sa_pair("aes128gcm16", backend="aesni")
    k = out.config.enc_key
    key, salt = k[:16], k[-4:]
    src, dst, spi = bytes(out.engine.src), bytes(out.engine.dst), out.config.spi
    pk = perf.make_packets(size, BATCH)
    aes = AESGCM(key)
    ptlen = size + 2 + (-(size + 2) % 4)
    pt, nonce, aad = os.urandom(ptlen), os.urandom(12), os.urandom(8)
    res = []
    for _ in range(RUNS):
        tb = tn = tp = 0.0
        if direction == "protect":
            enc = aes.encrypt
            proj = out.protect_batch
            seal = espnative.seal_batch
            for _ in range(ROUNDS):
                tb += bare_loop(enc, nonce, pt, aad)
                seq0, id0 = out.seq, out.engine.ident
                t = pc(); r = seal(key, salt, spi, seq0, id0, src, dst, pk); tn += pc() - t
                del r
                t = pc(); r = proj(pk, now=0.0); tp += pc() - t
                del r
        else:
            dec = aes.decrypt
            ct = aes.encrypt(nonce, pt, aad)
            proj = inbound().unprotect_batch
            opn = espnative.open_batch
            for _ in range(ROUNDS):
                wire = out.protect_batch(pk, now=0.0)
                tb += bare_loop(dec, nonce, ct, aad)
                t = pc(); r = opn(key, salt, wire); tn += pc() - t
                assert r[0] is not None
                del r
                t = pc(); r = proj(wire, now=0.0); tp += pc() - t
                assert r[-1] is not None
                del r
        n = ROUNDS * BATCH
        res.append(dict(bare=n / tb, native=n / tn, proj=n / tp, rn=tb / tn, rp=tb / tp))
    med = {f: statistics.median(r[f] for r in res) for f in res[0]}
    RESULTS.append({"size": size, "direction": direction, "bare_pps": round(med["bare"], 1),
                    "project_pps": round(med["proj"], 1), "project_ratio": round(med["rp"], 3),
                    "native_pps": round(med["native"], 1), "native_ratio": round(med["rn"], 3)})
    print(f"{size:5d} {direction:9s} bare {med['bare']:10.0f} pkt/s | project {med['proj']:10.0f} pkt/s ratio {med['rp']:.3f} "
          f"| native {med['native']:10.0f} pkt/s ratio {med['rn']:.3f}  "
          f"(native ratios per run: {' '.join('%.2f' % r['rn'] for r in res)}; project: {' '.join('%.2f' % r['rp'] for r in res)})", flush=True)

RESULTS = []
for size in (1400, 64):
    for d in ("protect", "unprotect"):
        run(size, d)
out = sys.argv[sys.argv.index("--out") + 1] if "--out" in sys.argv else None
if out:
    with open(out, "w") as f:
        json.dump({"command": "python3 perf/experiments/native_esp/bench.py", "runs": RUNS,
                   "batch": BATCH, "records": RESULTS}, f, indent=2)
        f.write("\n")

"""The device check of the `gpu` backend (run by perf/gpu_check.sh): correctness of full-size
batches against `cryptography`, the figures of the issue's targets, and a verdict on each.

Owns: what the check measures and the JSON it writes (`OUTDIR/gpu_check.json`, rewritten after
every figure, so a time-out still leaves everything measured so far), and the summary.
Must not: be imported by the backend or the data plane.

Steps (each one's failure is recorded and the next one runs):
  env        device, CUDA driver and runtime, CuPy, the kernels' register use
  correct    65536 packets of 1400 bytes sealed by esp_seal == one by one on `aesni` (OpenSSL
             through `cryptography`), byte for byte, and opened back; 9000-byte packets at every
             lane width (1..32 threads per packet), both ways
  kernel     AES-128-GCM kernel-only Gbit/s at 1400 bytes, 65536 packets, data resident:
             gcm_batch and esp_seal, per lane width and register budget (GCM_MIN_BLOCKS 1, 2)
  e2e        `sa.protect_batch` / `unprotect_batch` (the engine hands a gpu SA's batches to the
             framing kernels) from Python bytes to Python bytes, and framing.protect_batch from a
             PacketBatch to a PacketBatch, 65536 x 1400 bytes
  aesni      the `aesni` backend's protect_batch on one core, same packets, same run
  summary    each target, its figure, met or not

`--cpu` runs every step on the CPU build of the kernels with small batches: the code paths,
not the figures (timings there say nothing about a GPU).
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import os
import platform
import random
import sys
import time
import traceback

TARGETS = {
    "kernel_aes128gcm_1400_gbps": 1000.0,        # kernel-only, H100
    "e2e_protect_batch_1400_gbps": 200.0,        # end to end through protect_batch
    "vs_aesni_one_core": 10.0,                   # end to end / aesni on one core, same run
}
V4 = (ipaddress.ip_address("192.0.2.1"), ipaddress.ip_address("192.0.2.2"))


class Report:
    def __init__(self, path: str):
        self.path = path
        self.data: dict = {"started": time.time(), "steps": {}, "figures": {}, "errors": {}}
        self.write()

    def write(self) -> None:
        tmp = self.path + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(self.data, fh, indent=2, default=str)
        os.replace(tmp, self.path)

    def figure(self, name: str, value, **detail) -> None:
        self.data["figures"][name] = {"value": value, **detail}
        self.write()
        print(f"{name}: {value} {detail if detail else ''}", flush=True)

    def step(self, name: str, fn, *args) -> None:
        start = time.perf_counter()
        try:
            fn(self, *args)
            self.data["steps"][name] = {"ok": True, "seconds": round(time.perf_counter() - start, 2)}
        except Exception as exc:
            self.data["steps"][name] = {"ok": False, "seconds": round(time.perf_counter() - start, 2)}
            self.data["errors"][name] = "".join(traceback.format_exception(exc))[-4000:]
            print(f"step {name} failed: {exc!r}", flush=True)
        self.write()


def _packets(n: int, size: int, seed: int = 1) -> list[bytes]:
    from ipsec_core.wire.ip import IPPROTO_UDP, build_ipv4

    rng = random.Random(seed)
    body = rng.randbytes(size - 28)
    out = []
    for i in range(n):
        udp = (1024 + i % 50000).to_bytes(2, "big") + b"\x00\x35" + (size - 20).to_bytes(2, "big") + b"\0\0"
        out.append(build_ipv4(src=bytes((198, 51, 100, 1)), dst=bytes((203, 0, 113, 1)), proto=IPPROTO_UDP,
                              payload_len=size - 20, ident=i & 0xFFFF, tos=0x10) + udp + body)
    return out


class Check:
    def __init__(self, *, cpu: bool, batch: int, jumbo_batch: int, repeats: int):
        from ipsec_core.crypto.registry import Registry
        from ipsec_plugins.gpu import GpuBackend

        self.cpu = cpu
        self.batch = batch
        self.jumbo_batch = jumbo_batch
        self.repeats = repeats
        if cpu:
            from ipsec_plugins.gpu.cpu_launcher import CpuLauncher

            self.launcher = CpuLauncher(target_threads=256, max_block=64)
        else:
            from ipsec_plugins.gpu.cupy_launcher import CupyLauncher

            self.launcher = CupyLauncher()
        self.backend = GpuBackend(launcher=self.launcher)
        self.registry = Registry(load_entry_points=False)
        self.registry.records.pop("gpu", None)
        record = self.registry.add(self.backend, plugin="gpu-check")
        if not record.available or record.failed:
            raise RuntimeError(f"the gpu backend failed its self-test: {record.failed or record.reason}")
        aesni = self.registry.records.get("aesni")
        self.reference = "aesni" if aesni is not None and aesni.available else None

    def sas(self, proposal: str, backend: str, key: bytes):
        from ipsec_core.dataplane.sa import Direction, Mode, SaConfig, SecurityAssociation
        from ipsec_core.transforms.keywords import parse_esp

        common = dict(spi=0x51A0001, mode=Mode.TUNNEL, proposal=parse_esp(proposal), enc_key=key,
                      backend=backend, replay_window=1024)
        out = SecurityAssociation(SaConfig(name="o", direction=Direction.OUT, local=V4[0], remote=V4[1],
                                           **common), registry=self.registry, now=0.0)
        inb = SecurityAssociation(SaConfig(name="i", direction=Direction.IN, local=V4[1], remote=V4[0],
                                           **common), registry=self.registry, now=0.0)
        return out, inb


def step_env(report: Report, check: Check) -> None:
    env = {"python": sys.version, "platform": platform.platform(), "launcher": check.launcher.name,
           "device": getattr(check.launcher, "device_name", "cpu build")}
    if not check.cpu:
        from ipsec_plugins.gpu.cupy_launcher import cuda_versions

        env.update(cuda_versions())
        try:
            import cupy as cp

            for name, fn in check.launcher._kernels.items():
                env[f"{name}_registers"] = getattr(fn, "num_regs", None)
                env[f"{name}_local_bytes"] = getattr(fn, "local_size_bytes", None)
            env["sm_count"] = cp.cuda.runtime.getDeviceProperties(0)["multiProcessorCount"]
        except Exception as exc:
            env["kernel_attributes"] = f"unavailable: {exc!r}"
    try:
        import cryptography

        env["cryptography"] = cryptography.__version__
    except ImportError:
        env["cryptography"] = "missing"
    report.data["env"] = env
    print(json.dumps(env, indent=2), flush=True)


def step_correct(report: Report, check: Check) -> None:
    if check.reference is None:
        raise RuntimeError("no aesni backend (cryptography) to compare with: run perf/gpu_check.sh fetch")
    key = os.urandom(20)
    ours, inbound = check.sas("aes128gcm16", "gpu", key)
    theirs, _ = check.sas("aes128gcm16", check.reference, key)
    theirs.engine.ident = ours.engine.ident
    packets = _packets(check.batch, 1400)
    wire = ours.protect_batch(packets, now=0.0)
    expect = [theirs.protect(p, now=0.0) for p in packets]
    bad = [i for i, (a, b) in enumerate(zip(wire, expect)) if a != b]
    report.figure("correct_seal_1400", not bad and len(wire) == len(expect), packets=len(packets),
                  mismatches=len(bad), first=bad[:5])
    back = inbound.unprotect_batch(wire, now=0.0)
    bad = [i for i, (a, b) in enumerate(zip(back, packets)) if a != b]
    report.figure("correct_open_1400", not bad, packets=len(packets), mismatches=len(bad), first=bad[:5])
    gpu = ours.engine.aead.engine
    results = {}
    for lanes in (1, 2, 4, 8, 16, 32):
        key = os.urandom(36)
        ours, inbound = check.sas("aes256gcm16", "gpu", key)
        theirs, _ = check.sas("aes256gcm16", check.reference, key)
        theirs.engine.ident = ours.engine.ident
        jumbo = _packets(check.jumbo_batch, 8944, seed=lanes)
        gpu.lanes = lanes
        try:
            wire = ours.protect_batch(jumbo, now=0.0)
            back = inbound.unprotect_batch(wire, now=0.0)
        finally:
            gpu.lanes = None
        ok = wire == [theirs.protect(p, now=0.0) for p in jumbo] and back == jumbo
        results[lanes] = ok
        report.figure(f"correct_9000_lanes{lanes}", ok, packets=len(jumbo), wire_bytes=len(wire[0]))
    if not all(results.values()):
        raise AssertionError(f"9000-byte packets differ at lane widths {[k for k, v in results.items() if not v]}")


def _gbps(packets: int, size: int, seconds: float) -> float:
    return round(packets * size * 8 / seconds / 1e9, 3) if seconds > 0 else 0.0


def step_kernel(report: Report, check: Check) -> None:
    from ipsec_plugins.gpu import framing, staging

    n = check.batch
    variants = [(None, check.launcher)]
    if not check.cpu:
        from ipsec_plugins.gpu.cupy_launcher import CupyLauncher

        try:
            variants.append((2, CupyLauncher(defines=("GCM_MIN_BLOCKS=2",))))
        except Exception as exc:
            report.figure("kernel_min_blocks2", None, error=repr(exc))
    best = 0.0
    for min_blocks, launcher in variants:
        from ipsec_plugins.gpu import GpuBackend

        backend = check.backend if launcher is check.launcher else GpuBackend(launcher=launcher)
        aead = backend.aead("aes-gcm", os.urandom(16), tag_bytes=16, nonce_bytes=12)
        nonces = [os.urandom(4) + i.to_bytes(8, "big") for i in range(n)]
        payload = os.urandom(1400)
        with backend.engine._lock:
            st = staging.stage(launcher.alloc, slots=aead.slot, nonces=nonces, items=[payload] * n,
                               aads=[os.urandom(8)] * n, decrypt=False)
            for lanes in (1, 2, 4, 8):
                seconds = _time_kernel(launcher, st, lanes=lanes, kind="gcm", repeats=check.repeats)
                gbps = _gbps(n, 1400, seconds)
                tag = f"kernel_gcm_1400_lanes{lanes}" + (f"_minblocks{min_blocks}" if min_blocks else "")
                report.figure(tag, gbps, ms=round(seconds * 1e3, 3), packets=n)
                best = max(best, gbps)
        if launcher is check.launcher:
            ours, _ = check.sas("aes128gcm16", "gpu", os.urandom(20))
            plan = framing._seal_plan(ours.engine, framing._as_batch(_packets(n, 1400)), 0.0)
            with backend.engine._lock:
                fs = framing._stage_seal(launcher.alloc, [plan])
                for lanes in (1, 2, 4):
                    seconds = _time_kernel(launcher, fs, lanes=lanes, kind="seal", repeats=check.repeats)
                    report.figure(f"kernel_esp_seal_1400_lanes{lanes}", _gbps(n, 1400, seconds),
                                  ms=round(seconds * 1e3, 3), packets=n)
    report.figure("kernel_aes128gcm_1400_gbps", best, packets=n, note="best of lane widths and register budgets")


def _time_kernel(launcher, st, *, lanes, kind, repeats) -> float:
    if hasattr(launcher, "time_kernel"):
        return launcher.time_kernel(st, repeats=repeats, lanes=lanes, kind=kind)
    runner = {"gcm": launcher.run, "seal": launcher.run_seal, "open": launcher.run_open}[kind]
    start = time.perf_counter()
    for _ in range(repeats):
        runner(st, lanes=lanes)
    return (time.perf_counter() - start) / repeats


def _best(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def step_e2e(report: Report, check: Check) -> None:
    from ipsec_core.dataplane.batch import PacketBatch
    from ipsec_plugins.gpu import framing

    n = check.batch
    packets = _packets(n, 1400)
    key = os.urandom(20)
    ours, inbound = check.sas("aes128gcm16", "gpu", key)
    seconds = _best(lambda: ours.protect_batch(packets, now=0.0), check.repeats)
    report.figure("e2e_protect_batch_1400_gbps", _gbps(n, 1400, seconds), ms=round(seconds * 1e3, 2),
                  packets=n, path="SecurityAssociation.protect_batch (framed on the device), list of bytes in and out")
    batch = PacketBatch.from_packets(packets)
    seconds = _best(lambda: framing.protect_batch(ours, batch, now=0.0, as_batch=True), check.repeats)
    report.figure("e2e_protect_packetbatch_1400_gbps", _gbps(n, 1400, seconds), ms=round(seconds * 1e3, 2),
                  packets=n, path="framing.protect_batch, PacketBatch in and out")
    wire = ours.protect_batch(packets, now=0.0)
    fresh = []

    def open_once():
        _, sa = check.sas("aes128gcm16", "gpu", key)
        fresh.append(sa)
        start = time.perf_counter()
        sa.unprotect_batch(wire, now=0.0)
        return time.perf_counter() - start

    open_once()
    seconds = min(open_once() for _ in range(check.repeats))
    report.figure("e2e_unprotect_batch_1400_gbps", _gbps(n, 1400, seconds), ms=round(seconds * 1e3, 2),
                  packets=n, path="SecurityAssociation.unprotect_batch (framed on the device), in order")


def step_aesni(report: Report, check: Check) -> None:
    if check.reference is None:
        raise RuntimeError("no aesni backend (cryptography)")
    packets = _packets(min(check.batch, 16384), 1400)
    sa, _ = check.sas("aes128gcm16", check.reference, os.urandom(20))
    chunks = [packets[i:i + 256] for i in range(0, len(packets), 256)]

    def run():
        for c in chunks:
            sa.protect_batch(c, now=0.0)
    seconds = _best(run, 3)
    report.figure("aesni_protect_batch_1400_gbps", _gbps(len(packets), 1400, seconds),
                  packets=len(packets), batch=256, note="one core, same run")


def summarize(report: Report) -> dict:
    figs = report.data["figures"]

    def value(name):
        return figs.get(name, {}).get("value")
    kernel = value("kernel_aes128gcm_1400_gbps")
    e2e = value("e2e_protect_batch_1400_gbps")
    aesni = value("aesni_protect_batch_1400_gbps")
    ratio = round(e2e / aesni, 2) if e2e and aesni else None
    correct = all(v.get("value") is True for k, v in figs.items() if k.startswith("correct_"))
    summary = {
        "device": report.data.get("env", {}).get("device"),
        "correct_every_packet": correct and any(k.startswith("correct_") for k in figs),
        "targets": {
            "kernel_aes128gcm_1400_gbps": {"figure": kernel, "target": TARGETS["kernel_aes128gcm_1400_gbps"],
                                           "met": kernel is not None and kernel >= TARGETS["kernel_aes128gcm_1400_gbps"]},
            "e2e_protect_batch_1400_gbps": {"figure": e2e, "target": TARGETS["e2e_protect_batch_1400_gbps"],
                                            "met": e2e is not None and e2e >= TARGETS["e2e_protect_batch_1400_gbps"]},
            "vs_aesni_one_core": {"figure": ratio, "target": TARGETS["vs_aesni_one_core"],
                                  "met": ratio is not None and ratio >= TARGETS["vs_aesni_one_core"]},
        },
        "failed_steps": [k for k, v in report.data["steps"].items() if not v["ok"]],
    }
    report.data["summary"] = summary
    report.data["finished"] = time.time()
    report.write()
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir")
    parser.add_argument("--cpu", action="store_true", help="the CPU build of the kernels, small batches")
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--jumbo-batch", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args(argv)
    os.makedirs(args.outdir, exist_ok=True)
    report = Report(os.path.join(args.outdir, "gpu_check.json"))
    try:
        check = Check(cpu=args.cpu, batch=args.batch or (96 if args.cpu else 65536),
                      jumbo_batch=args.jumbo_batch or (4 if args.cpu else 2048),
                      repeats=args.repeats or (2 if args.cpu else 5))
    except Exception as exc:
        report.data["errors"]["setup"] = "".join(traceback.format_exception(exc))[-4000:]
        report.write()
        print(f"setup failed: {exc!r}", flush=True)
        summarize(report)
        return 2
    report.data["mode"] = "cpu build (code paths only; no GPU figures)" if args.cpu else "gpu"
    for name, fn in (("env", step_env), ("correct", step_correct), ("kernel", step_kernel),
                     ("e2e", step_e2e), ("aesni", step_aesni)):
        report.step(name, fn, check)
    summary = summarize(report)
    print(json.dumps(summary, indent=2), flush=True)
    for name, t in summary["targets"].items():
        print(f"target {name}: {t['figure']} (target {t['target']}): {'MET' if t['met'] else 'NOT MET'}")
    return 0 if summary["correct_every_packet"] and not summary["failed_steps"] else 1


if __name__ == "__main__":
    sys.exit(main())

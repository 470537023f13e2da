"""VPN throughput: iperf3 TCP through strongSwan to strongSwan, `ipsec up` to `ipsec up`, and
`ipsec up` to strongSwan, in network namespaces this script creates (and removes).

For each ESP proposal the tunnel comes up once per pairing, then iperf3 runs from a's inner
address to b's, with one stream and with four.  Each run records the goodput iperf3's receiver
saw, the CPU seconds of each side's daemon (utime + stime from /proc/PID/stat, summed over its
threads and child processes, before and after the run), that CPU per Gbit/s carried, and the
machine's load (its busy share over the run, from /proc/stat, and what the rest of the machine
used).  A profile of `ipsec up` (py-spy on both peers of the first ours-to-ours pairing, if
py-spy is installed) says where its time goes: self and inclusive samples per function.

    python3 perf/vpn_bench.py                       # perf/results/vpn.json, a table on stdout
    python3 perf/vpn_bench.py --quick --out /tmp/vpn.json    # aes128gcm16, one stream, 2 s
    python3 perf/vpn_bench.py --pairings up-up --proposals aes128gcm16 --streams 1 --seconds 3

Needs root, strongSwan (tests/setup-system.sh) and iperf3.  Ratios are taken within one run:
this machine is shared, and both peers and iperf3 share its two cores.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.interop import strongswan as ss  # noqa: E402

PROPOSALS = ("aes128gcm16", "aes256-sha256", "chacha20poly1305")
IKE_PROPOSAL = "aes128gcm16-prfsha256-ecp256"
PAIRINGS = ("ss-ss", "up-up", "up-ss")
#: pairings that are measured only when asked for: `ipsec up --no-offload` at both ends, and
#: `ipsec up --no-gso` to strongSwan
EXTRA_PAIRINGS = ("up-up-nooffload", "up-ss-nogso")
#: with --baseline DIR: `ipsec up` from another source tree at both ends (e.g. `git archive` of
#: an older commit), measured in the same run as the others
PAIRING_TEXT = {"ss-ss": "strongSwan -> strongSwan", "up-up": "ipsec up -> ipsec up",
                "up-ss": "ipsec up -> strongSwan", "up-up-nooffload": "ipsec up --no-offload (both)",
                "up-ss-nogso": "ipsec up --no-gso -> strongSwan",
                "base-base": "baseline ipsec up -> baseline ipsec up"}
A_ID, B_ID = "a.example.org", "b.example.org"
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------- CPU accounting

def _tree(pid: int) -> list[int]:
    """pid and its descendants (worker processes count towards their daemon)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return out


def cpu_seconds(pid: int) -> float:
    """utime + stime of `pid` and of its live descendants, in seconds."""
    total = 0
    for p in _tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])     # utime, stime (fields 14 and 15)
    return total / CLK_TCK


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def machine_ticks() -> tuple[int, int, int]:
    """(busy, total, softirq) jiffies of all CPUs from /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values), values[6]


# ---------------------------------------------------------------------------- peers

class UpPeer:
    """`ipsec up` in a namespace (no -v: the data path is measured, not the log)."""

    def __init__(self, conf: Path, netns: str, control: Path, *, env: dict | None = None,
                 extra: tuple[str, ...] = (), tree: Path | None = None):
        argv = [sys.executable, "-m", "ipsec_core.cli", "up", "--config", str(conf), "--netns", netns,
                "--control", str(control), *extra]
        self.lines: list[str] = []
        env = {**os.environ, **(env or {})}
        if tree is not None:        # `-m` puts the working directory first on sys.path
            env["PYTHONPATH"] = str(tree)
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                     env=env, cwd=tree or ROOT)
        self.pid = self.proc.pid
        self._reader = threading.Thread(target=lambda: self.lines.extend(self.proc.stderr), daemon=True)
        self._reader.start()

    def wait_for(self, pattern: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not any(re.search(pattern, line) for line in list(self.lines)):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ipsec up: no {pattern!r} (rc {self.proc.poll()}):\n" + "".join(self.lines))
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(8)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def up_conf(path: Path, *, local, remote, local_id, remote_id, local_ts, remote_ts, start, esp) -> Path:
    path.write_text(f"""
[connections.net]
local_addrs = ["{local}"]
remote_addrs = ["{remote}"]
local_id = "{local_id}"
remote_id = "{remote_id}"
psk = "{ss.DEFAULT_PSK}"
proposals = ["{IKE_PROPOSAL}"]
encap = true

[connections.net.children.net]
local_ts = ["{local_ts}"]
remote_ts = ["{remote_ts}"]
esp_proposals = ["{esp}"]
start_action = "{start}"
""")
    return path


class Tunnel:
    """One pairing for one proposal, up: `.net` (the namespaces), `.pids` {"a": pid, "b": pid}."""

    def __init__(self, pairing: str, esp: str, workdir: Path, *, up_env: dict | None = None,
                 baseline: Path | None = None):
        self.pairing, self.esp, self.workdir = pairing, esp, workdir
        self.tree = baseline if pairing == "base-base" else None
        self.up_env = up_env
        self.stack: list = []
        self.ups: list[UpPeer] = []

    def __enter__(self) -> "Tunnel":
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _start(self) -> None:
        conn = {"proposals": IKE_PROPOSAL, "esp_proposals": self.esp}
        if self.pairing == "ss-ss":
            pair = ss.StrongswanPair(conn_a=conn, conn_b=conn, workdir=self.workdir / "ss")
            self.stack.append(pair.__enter__())
            pair.initiate(timeout=15)
            pair.b.wait_established(ike="net", child="net", timeout=10)
            self.net, self.pids = pair.net, {"a": pair.a.proc.pid, "b": pair.b.proc.pid}
            return
        if self.pairing.startswith("up-ss"):
            pair = ss.StrongswanPair(start_a=False, conn_b=conn, workdir=self.workdir / "ss")
            self.stack.append(pair.__enter__())
            self.net = pair.net
            b_pid = pair.b.proc.pid
        else:
            self.net = ss.NetnsPair(tag="vb")
            self.stack.append(self.net.__enter__())
            b_pid = None
        a, b = self.net.a, self.net.b
        extra = {"up-up-nooffload": ("--no-offload",), "up-ss-nogso": ("--no-gso",)}.get(self.pairing, ())
        both = self.pairing.startswith("up-up") or self.pairing == "base-base"
        if both:
            conf_b = up_conf(self.workdir / "b.toml", local=b.ip, remote=a.ip, local_id=B_ID, remote_id=A_ID,
                             local_ts=f"{b.inner_ip}/32", remote_ts=f"{a.inner_ip}/32", start="none",
                             esp=self.esp)
            up_b = UpPeer(conf_b, b.netns, self.workdir / "b.sock", env=self.up_env, extra=extra,
                          tree=self.tree)
            self.ups.append(up_b)
            up_b.wait_for(r"up: net on ")
            b_pid = up_b.pid
        conf_a = up_conf(self.workdir / "a.toml", local=a.ip, remote=b.ip, local_id=A_ID, remote_id=B_ID,
                         local_ts=f"{a.inner_ip}/32", remote_ts=f"{b.inner_ip}/32", start="start",
                         esp=self.esp)
        up_a = UpPeer(conf_a, a.netns, self.workdir / "a.sock", env=self.up_env, extra=extra,
                      tree=self.tree)
        self.ups.append(up_a)
        up_a.wait_for(r"CHILD SA net installed")
        if both:
            self.ups[0].wait_for(r"CHILD SA net installed")
        else:
            self.stack[0].b.wait_established(ike="net", child="net", timeout=10)
        self.pids = {"a": up_a.pid, "b": b_pid}

    def close(self) -> None:
        for up in self.ups:
            up.stop()
        self.ups.clear()
        while self.stack:
            self.stack.pop().__exit__(None, None, None)


# ---------------------------------------------------------------------------- one iperf3 run

def iperf(tunnel: Tunnel, *, streams: int, seconds: float, profile_dir: Path | None = None) -> dict:
    """One iperf3 TCP run a -> b through the tunnel, with CPU and load figures."""
    a, b = tunnel.net.a, tunnel.net.b
    server = subprocess.Popen(["ip", "netns", "exec", b.netns, "iperf3", "-s", "-1", "-B", b.inner_ip],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    profilers = []
    try:
        time.sleep(0.3)
        # a first byte through the tunnel before the clock starts (a trap, ARP, TCP slow start)
        ss.run(["ping", "-c", "1", "-W", "2", "-I", a.inner_ip, b.inner_ip], netns=a.netns, check=False)
        before = {side: cpu_seconds(pid) for side, pid in tunnel.pids.items()}
        children0 = _children_cpu()
        busy0, total0, softirq0 = machine_ticks()
        load0 = os.getloadavg()[0]
        if profile_dir is not None:
            for side, pid in tunnel.pids.items():
                out = profile_dir / f"{tunnel.pairing}-{tunnel.esp}-{side}.txt"
                profilers.append((side, out, subprocess.Popen(
                    ["py-spy", "record", "--pid", str(pid), "--format", "raw", "--rate", "200",
                     "--duration", str(int(seconds)), "--nonblocking", "-o", str(out)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)))
        started = time.monotonic()
        client = ss.run(["iperf3", "-c", b.inner_ip, "-B", a.inner_ip, "-t", str(seconds), "-P", str(streams),
                         "-J"], netns=a.netns, check=False, timeout=seconds + 30)
        wall = time.monotonic() - started
        after = {side: cpu_seconds(pid) for side, pid in tunnel.pids.items()}
        busy1, total1, softirq1 = machine_ticks()
    finally:
        if server.poll() is None:
            server.kill()
        server.wait()
    iperf_cpu = _children_cpu() - children0       # the iperf3 client and server, both reaped
    try:
        result = json.loads(client.stdout)
    except ValueError:
        result = {"error": (client.stdout + client.stderr)[-400:]}
    if "error" in result:
        raise RuntimeError(f"iperf3 through {tunnel.pairing} {tunnel.esp}: {result['error']}")
    end = result["end"]
    gbps = end["sum_received"]["bits_per_second"] / 1e9
    cpu = {side: round(after[side] - before[side], 3) for side in before}
    ncpu = os.cpu_count() or 1
    machine_cpu_s = (busy1 - busy0) / CLK_TCK
    run = {
        "streams": streams, "seconds": seconds, "wall_s": round(wall, 2),
        "gbps": round(gbps, 4),
        "retransmits": end.get("sum_sent", {}).get("retransmits"),
        "cpu_s": cpu,
        "cpu_s_per_gbit": {side: (round(cpu[side] / (gbps * wall), 3) if gbps > 0 else None) for side in cpu},
        "cpu_share": {side: round(cpu[side] / wall, 3) for side in cpu},
        "machine_busy": round((busy1 - busy0) / max(1, total1 - total0), 3),
        "iperf3_cpu_s": round(iperf_cpu, 2),
        # softirq time is charged to no process: the packets' kernel work (veth, UDP, TCP) that
        # ran in softirq context is here, whoever's packets they were
        "softirq_cpu_s": round((softirq1 - softirq0) / CLK_TCK, 2),
        "others_cpu_s": round(machine_cpu_s - sum(cpu.values()) - iperf_cpu - (softirq1 - softirq0) / CLK_TCK, 2),
        "loadavg_before": round(load0, 2), "cpus": ncpu,
    }
    for side, out, proc in profilers:
        try:
            proc.wait(seconds + 15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        run.setdefault("profile_files", {})[side] = str(out)
    return run


# ---------------------------------------------------------------------------- profiles

def summarize_profile(path: Path, top: int = 15) -> dict:
    """py-spy's raw (collapsed) stacks -> self and inclusive sample shares of the top functions."""
    self_counts: collections.Counter = collections.Counter()
    incl: collections.Counter = collections.Counter()
    total = 0
    try:
        text = path.read_text()
    except OSError:
        return {"error": f"no profile at {path}"}
    for line in text.splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        n = int(n)
        raw = [f for f in stack.split(";") if f]
        if not raw:
            continue
        total += n
        self_counts[_frame_name(raw[-1])] += n
        # inclusive: this project's functions only (the rest is the CLI and asyncio around them)
        for frame in {_frame_name(f) for f in raw if "ipsec_core" in f or "plugins" in f}:
            incl[frame] += n
    if not total:
        return {"samples": 0}
    return {"samples": total,
            "self": [[name, round(c / total, 3)] for name, c in self_counts.most_common(top)],
            "inclusive": [[name, round(c / total, 3)] for name, c in incl.most_common(top)
                          if not name.startswith(_CLI_FRAMES)]}


_CLI_FRAMES = ("_up (", "up (", "_serve (", "handle_errors.", "main (", "<module> (")


def _frame_name(frame: str) -> str:
    # "function (path/to/file.py:123)" -> "function (file.py)"
    m = re.match(r"(.*?) \((.*?)(?::\d+)?\)$", frame)
    if not m:
        return frame
    return f"{m.group(1)} ({Path(m.group(2)).name})"


# ---------------------------------------------------------------------------- the run

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="aes128gcm16, one stream, 2 s per run")
    p.add_argument("--pairings", nargs="+", choices=PAIRINGS + EXTRA_PAIRINGS, default=list(PAIRINGS))
    p.add_argument("--proposals", nargs="+", default=None, help=f"ESP proposals (default {' '.join(PROPOSALS)})")
    p.add_argument("--streams", nargs="+", type=int, default=None, help="iperf3 -P values (default 1 4)")
    p.add_argument("--seconds", type=float, default=None, help="seconds per iperf3 run (default 5)")
    p.add_argument("--no-profile", action="store_true", help="skip the py-spy profile")
    p.add_argument("--baseline", type=Path, default=None, metavar="DIR",
                   help="also measure `ipsec up` from this source tree at both ends (pairing base-base)")
    p.add_argument("--out", type=Path, default=ROOT / "perf" / "results" / "vpn.json")
    p.add_argument("--markdown", type=Path, default=None, help="also write the table to this file")
    args = p.parse_args(argv)
    proposals = args.proposals or (["aes128gcm16"] if args.quick else list(PROPOSALS))
    streams = args.streams or ([1] if args.quick else [1, 4])
    seconds = args.seconds or (2.0 if args.quick else 5.0)

    reason = ss.skip_reason() or ss.tool_missing("iperf3", "ping")
    if reason:
        print(f"vpn_bench: cannot run: {reason}", file=sys.stderr)
        return 2
    pairings = list(args.pairings) + (["base-base"] if args.baseline else [])
    profile = not args.no_profile and shutil.which("py-spy") is not None and "up-up" in args.pairings

    report = {
        "bench": "vpn", "command": "python3 perf/vpn_bench.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                    "loadavg_start": [round(x, 2) for x in os.getloadavg()]},
        "ike_proposal": IKE_PROPOSAL, "seconds": seconds, "streams": streams, "proposals": proposals,
        "pairings": pairings, "runs": [], "profile": None,
        "baseline": str(args.baseline) if args.baseline else None,
    }
    with tempfile.TemporaryDirectory(prefix="vpn-bench-") as tmp:
        tmp = Path(tmp)
        for esp in proposals:
            for pairing in pairings:
                work = tmp / f"{pairing}-{esp}"
                work.mkdir()
                try:
                    with Tunnel(pairing, esp, work, baseline=args.baseline) as tunnel:
                        for n in streams:
                            run = iperf(tunnel, streams=n, seconds=seconds)
                            run.update(pairing=pairing, proposal=esp)
                            report["runs"].append(run)
                            print(f"{PAIRING_TEXT[pairing]:26} {esp:18} P{n}: {run['gbps']:.3f} Gbit/s  "
                                  f"cpu a {run['cpu_s']['a']:.2f}s b {run['cpu_s']['b']:.2f}s  "
                                  f"machine busy {run['machine_busy']:.0%}", file=sys.stderr, flush=True)
                        if profile and pairing == "up-up" and report["profile"] is None:
                            prof = iperf(tunnel, streams=streams[0], seconds=seconds, profile_dir=tmp)
                            report["profile"] = {
                                "pairing": pairing, "proposal": esp, "streams": streams[0],
                                "gbps_while_profiled": prof["gbps"],
                                "a_sender": summarize_profile(Path(prof["profile_files"]["a"])),
                                "b_receiver": summarize_profile(Path(prof["profile_files"]["b"])),
                            }
                except Exception as exc:
                    report["runs"].append({"pairing": pairing, "proposal": esp, "error": str(exc)[-2000:]})
                    print(f"{PAIRING_TEXT[pairing]} {esp}: failed: {str(exc)[-600:]}", file=sys.stderr)
    add_ratios(report)
    report["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    table = markdown(report)
    print(table)
    if args.markdown:
        args.markdown.write_text(table)
    return 0 if all("error" not in r for r in report["runs"]) else 1


def add_ratios(report: dict) -> None:
    """Each run's goodput over strongSwan-to-strongSwan's for the same proposal and streams."""
    base = {(r["proposal"], r["streams"]): r["gbps"] for r in report["runs"]
            if r.get("pairing") == "ss-ss" and "gbps" in r}
    for r in report["runs"]:
        ref = base.get((r.get("proposal"), r.get("streams")))
        if "gbps" in r and ref:
            r["ratio_to_ss_ss"] = round(r["gbps"] / ref, 2)


def markdown(report: dict) -> str:
    lines = ["| proposal | pairing | streams | Gbit/s | x ss-ss | TCP retransmits | CPU s/Gbit a | CPU s/Gbit b "
             "| CPU a | CPU b | iperf3 CPU s | softirq CPU s | others' CPU s | machine busy |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["runs"]:
        if "error" in r:
            lines.append(f"| {r['proposal']} | {PAIRING_TEXT[r['pairing']]} | | failed | | | | | | | | | | |")
            continue
        per = r["cpu_s_per_gbit"]
        lines.append(f"| {r['proposal']} | {PAIRING_TEXT[r['pairing']]} | {r['streams']} | {r['gbps']:.3f} | "
                     f"{r.get('ratio_to_ss_ss', '')} | {r['retransmits']} | {per['a']} | {per['b']} | "
                     f"{r['cpu_share']['a']:.0%} | {r['cpu_share']['b']:.0%} | {r['iperf3_cpu_s']} | "
                     f"{r['softirq_cpu_s']} | {r['others_cpu_s']} | {r['machine_busy']:.0%} |")
    prof = report.get("profile")
    if prof:
        for side in ("a_sender", "b_receiver"):
            s = prof[side]
            if not s.get("samples"):
                continue
            lines.append("")
            lines.append(f"`ipsec up` {side.replace('_', ' (')}), {prof['proposal']}, {s['samples']} samples, "
                         "self share: " + ", ".join(f"{name} {share:.0%}" for name, share in s["self"][:10]))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())

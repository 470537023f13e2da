"""`ipsec perf`: the record shape scripts rely on, and its errors.  (Speed itself is measured
under perf/, never asserted in tests.)"""
import json
import subprocess
import sys

import pytest

from typer.testing import CliRunner

from ipsec_core.cli import app
from ipsec_core.tools.perf import make_packets, measure

runner = CliRunner()
FIELDS = {"backend", "proposal", "size", "direction", "mode", "batch", "pps", "gbps", "bare_pps", "ratio"}


def test_json_records():
    result = runner.invoke(app, ["perf", "-b", "aesni", "-p", "aes128gcm16,aes128-sha256", "-s", "64,200",
                                 "-n", "64", "--batch", "16", "--repeats", "1", "--json",
                                 "--no-tune-allocator"])     # in-process: leave pytest's malloc alone
    assert result.exit_code == 0, result.output
    records = json.loads(result.stdout)
    assert len(records) == 2 * 2 * 2
    for r in records:
        assert FIELDS <= set(r)
        assert r["backend"] == "aesni" and r["mode"] == "tunnel" and r["batch"] == 16
        assert abs(r["gbps"] - r["pps"] * r["size"] * 8 / 1e9) < 1e-3
        assert abs(r["ratio"] - r["pps"] / r["bare_pps"]) < 1e-3
    assert {r["direction"] for r in records} == {"protect", "unprotect"}
    gcm = [r for r in records if r["proposal"] == "aes128gcm16"]
    assert all(r["overhead_bytes"] == 20 + 8 + 8 + 2 + 16 + (-(r["size"] + 2) % 4) for r in gcm)


def test_transport_mode_overhead_has_no_outer_header():
    [r] = measure(backend="aesni", proposal="aes128gcm16", size=100, count=8, batch=8,
                  directions=("protect",), mode="transport", repeats=1)
    assert r.overhead_bytes == 8 + 8 + 2 + 16 + (-(80 + 2) % 4)


def test_make_packets_are_valid_ipv4():
    for p in make_packets(64, 3):
        assert len(p) == 64 and p[0] == 0x45 and int.from_bytes(p[2:4], "big") == 64


def test_gpu_without_device_is_one_clear_line():
    from ipsec_core.crypto.registry import get_registry
    if get_registry().get("gpu").available:
        pytest.skip("this machine has a usable GPU")
    proc = subprocess.run([sys.executable, "-m", "ipsec_core.cli", "perf", "--backend", "gpu"],
                          capture_output=True, text=True)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: backend 'gpu' is unavailable")
    assert "Traceback" not in proc.stderr


def test_bad_options():
    for args, message in ((["-s", "10"], "at least"), (["-p", "aes128gcm17"], "unknown keyword"),
                          (["-d", "sideways"], "expected protect"), (["-b", "nosuch"], "not installed")):
        result = runner.invoke(app, ["perf", "-n", "8", "--repeats", "1", "--no-tune-allocator", *args])
        assert result.exit_code == 1 and message in result.output


def _perf_json(*extra):
    out = subprocess.run([sys.executable, "-m", "ipsec_core.cli", "perf", "-b", "aesni", "-p", "aes128gcm16",
                          "-s", "100", "-n", "128", "--batch", "64", "--repeats", "1", "--json", *extra],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.skipif(__import__("platform").libc_ver()[0] != "glibc", reason="allocator tuning is for glibc")
def test_records_say_which_allocator_and_path_were_used():
    from ipsec_core.dataplane.esp import vec as esp_vec

    tuned, untuned = _perf_json(), _perf_json("--no-tune-allocator")
    assert {r["allocator"] for r in tuned} == {"glibc: keeps 64 MiB of freed heap"}
    assert {r["allocator"] for r in untuned} == {"default"}
    assert {r["vectorised"] for r in tuned + untuned} == {esp_vec.available()}


def test_tune_allocator_reports_state():
    # In a child process: the setting is process-wide and must not leak into other tests' runs.
    code = ("from ipsec_core import tuning; before = tuning.allocator_state(); "
            "after = tuning.tune_allocator(8 << 20); print(before, '|', after, '|', tuning.allocator_state())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    before, after, state = (part.strip() for part in out.stdout.split("|"))
    assert before == "default" and after == state
    if __import__("platform").libc_ver()[0] == "glibc":
        assert after == "glibc: keeps 8 MiB of freed heap"


# -- the benchmark scripts under perf/ (their shape, not their speed) ---------------------------
PERF_DIR = __import__("pathlib").Path(__file__).resolve().parents[2] / "perf"


def test_paths_bench_compares_the_three_paths(tmp_path):
    out = tmp_path / "paths.json"
    done = subprocess.run([sys.executable, str(PERF_DIR / "paths_bench.py"), "--count", "512", "--repeats", "1",
                           "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = json.loads(out.read_text())["records"]
    paths = ["per-packet loop", "vectorised (esp_vec)", "vectorised + tune_allocator"]
    assert [r["path"] for r in rows] == [p for p in paths for _ in range(8)]
    assert [r["mode"] for r in rows[:8]] == ["tunnel"] * 4 + ["transport"] * 4
    assert [r["vectorised"] for r in rows] == [False] * 8 + [True] * 16
    assert {r["allocator"] for r in rows[:16]} == {"default"}
    assert all(FIELDS <= set(r) and r["ratio"] > 0 for r in rows)


def test_cpu_bench_quick_run_writes_records_imix_scapy_and_plot(tmp_path):
    out, plot = tmp_path / "cpu.json", tmp_path / "cpu.png"
    done = subprocess.run([sys.executable, str(PERF_DIR / "cpu_bench.py"), "--quick", "--repeats", "1",
                           "--out", str(out), "--plot", str(plot)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert result["command"] == "python3 perf/cpu_bench.py --quick"
    combos = {(r["backend"], r["proposal"], r["size"], r["direction"]) for r in result["records"]}
    assert len(combos) == 3 * 3 * 3 * 2 == len(result["records"])
    assert {"protect_ratio", "unprotect_ratio", "protect_pps", "unprotect_pps"} <= set(result["imix"])
    assert [s["size"] for s in result["scapy"]] == [64, 1400]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

"""`ipsec perf`: the record shape scripts rely on, and its errors.  (Speed itself is measured
under perf/, never asserted in tests.)"""
import json
import subprocess
import sys

import pytest

from typer.testing import CliRunner

from ipsec_core.cli import app
from ipsec_core.perf import make_packets, measure

runner = CliRunner()
FIELDS = {"backend", "proposal", "size", "direction", "mode", "batch", "pps", "gbps", "bare_pps", "ratio"}


def test_json_records():
    result = runner.invoke(app, ["perf", "-b", "aesni", "-p", "aes128gcm16,aes128-sha256", "-s", "64,200",
                                 "-n", "64", "--batch", "16", "--repeats", "1", "--json"])
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
        result = runner.invoke(app, ["perf", "-n", "8", "--repeats", "1", *args])
        assert result.exit_code == 1 and message in result.output

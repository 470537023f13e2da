"""perf/vpn_bench.py in --quick mode (one proposal, one stream, 2 s per pairing): the JSON it
writes has the shape the RESULTS.md table is made from.  The figures are not judged here."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from . import strongswan as ss

pytestmark = [pytest.mark.root, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def test_vpn_bench_quick_writes_the_json_shape(tmp_path):
    reason = ss.skip_reason() or ss.tool_missing("iperf3", "ping")
    if reason:
        pytest.skip(reason)
    out = tmp_path / "vpn.json"
    proc = subprocess.run([sys.executable, str(ROOT / "perf" / "vpn_bench.py"), "--quick", "--out", str(out),
                           "--markdown", str(tmp_path / "vpn.md")],
                          capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text())
    assert report["bench"] == "vpn" and report["proposals"] == ["aes128gcm16"] and report["streams"] == [1]
    assert "--quick" in report["command"] and report["seconds"] == 2.0
    runs = report["runs"]
    assert sorted(r["pairing"] for r in runs) == ["ss-ss", "up-ss", "up-up"]
    for run in runs:
        assert run["proposal"] == "aes128gcm16" and run["streams"] == 1
        assert run["gbps"] > 0 and run["wall_s"] > 0
        assert set(run["cpu_s"]) == set(run["cpu_s_per_gbit"]) == set(run["cpu_share"]) == {"a", "b"}
        assert all(v > 0 for v in run["cpu_s"].values())
        assert 0 <= run["machine_busy"] <= 1 and run["iperf3_cpu_s"] > 0
        assert "others_cpu_s" in run and "softirq_cpu_s" in run and "loadavg_before" in run
        assert run["ratio_to_ss_ss"] > 0
    assert next(r for r in runs if r["pairing"] == "ss-ss")["ratio_to_ss_ss"] == 1.0
    if report["profile"] is not None:        # py-spy installed
        for side in ("a_sender", "b_receiver"):
            prof = report["profile"][side]
            assert prof["samples"] > 0 and prof["self"] and all(0 < share <= 1 for _, share in prof["self"])
    table = (tmp_path / "vpn.md").read_text()
    assert table.startswith("| proposal | pairing |") and table.count("aes128gcm16 |") == 3

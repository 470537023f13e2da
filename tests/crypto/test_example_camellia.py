"""The example third-party plugin (examples/camellia, distribution ipsec-camellia) as the core
sees it once `pip install ./examples/camellia` ran: found through its entry point, listed by
`ipsec plugins` and `ipsec backends`, left out by IPSEC_PLUGINS, and carrying traffic from an SA
file through `ipsec pcap protect/unprotect` and `ipsec perf`.  The plugin's own suite (its
conformance-kit run, vectors, wire format) is examples/camellia/tests.

Not covered, because IKEv2 is not in this project yet: negotiating camellia SAs with strongSwan,
and in an in-memory IKEv2 exchange.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from typer.testing import CliRunner

ipsec_camellia = pytest.importorskip(
    "ipsec_camellia", reason="the example plugin is not installed: pip install ./examples/camellia")

from ipsec_core.cli import app  # noqa: E402
from ipsec_core.crypto.registry import get_registry, reset_registry  # noqa: E402
from ipsec_core.errors import ProposalError  # noqa: E402
from ipsec_core.vpn.pcap import PcapReader  # noqa: E402
from ipsec_core.transforms.keywords import parse_esp  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CLEAR = ROOT / "examples" / "clear.pcap"
runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def autoload(monkeypatch):
    """Entry-point plugins on, as outside the test suite; a fresh process-wide registry."""
    monkeypatch.delenv("IPSEC_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    monkeypatch.delenv("IPSEC_PLUGINS", raising=False)
    reset_registry()
    yield
    reset_registry()


def sa_file(tmp_path: Path, proposal: str, *, key: str, integ: str) -> Path:
    path = tmp_path / "camellia.toml"
    path.write_text(f"""
[[sa]]
name = "a-to-b"
spi = "0xca3e0001"
direction = "out"
proposal = "{proposal}"
key = "{key}"
integrity_key = "{integ}"
tunnel = {{ local = "192.0.2.1", remote = "192.0.2.2" }}

[[sa]]
name = "b-from-a"
spi = "0xca3e0001"
direction = "in"
proposal = "{proposal}"
key = "{key}"
integrity_key = "{integ}"
tunnel = {{ local = "192.0.2.2", remote = "192.0.2.1" }}
""")
    return path


def test_installed_as_its_own_distribution_with_an_entry_point():
    dist = metadata.distribution("ipsec-camellia")
    assert dist.version == ipsec_camellia.__version__
    eps = [ep for ep in dist.entry_points if ep.group == "ipsec"]
    assert [(ep.name, ep.value) for ep in eps] == [("camellia", "ipsec_camellia")]


def test_loaded_through_its_entry_point(autoload):
    registry = get_registry()
    info = registry.plugins["ipsec_camellia"]
    assert (info.entry_point, info.distribution, info.version, info.loaded) == (
        "camellia", "ipsec-camellia", ipsec_camellia.__version__, True)
    assert registry.hooks_of("ipsec_camellia") == ["ipsec_register_backends",
                                                   "ipsec_register_transforms"]
    assert not [p for p in registry.problems if p.plugin == "ipsec_camellia"]
    assert registry.records["camellia"].available and not registry.records["camellia"].failed
    assert parse_esp("camellia128-sha256", catalog=registry.transforms).encr == 23
    with pytest.raises(ProposalError):                       # no catalogue: built-ins alone
        parse_esp("camellia128-sha256")


def test_listed_by_plugins_and_backends(autoload):
    result = invoke("plugins", "--json")
    assert result.exit_code == 0, result.output
    row = {r["name"]: r for r in json.loads(result.stdout)}["ipsec_camellia"]
    assert (row["distribution"], row["version"], row["entry_point"]) == (
        "ipsec-camellia", ipsec_camellia.__version__, "camellia")
    assert row["hooks"] == ["ipsec_register_backends", "ipsec_register_transforms"]
    assert [(f["feature"], f["selftest"]) for f in row["features"]] == [
        ("camellia-cbc(128/192/256)", "passed"), ("camellia-ctr(128/192/256)", "passed")]
    assert [(t["id"], t["name"], t["state"]) for t in row["transforms"]] == [
        (23, "ENCR_CAMELLIA_CBC", "offered"), (24, "ENCR_CAMELLIA_CTR", "offered")]
    result = invoke("backends", "--json")
    camellia = {b["name"]: b for b in json.loads(result.stdout)}["camellia"]
    assert camellia["available"] and camellia["priority"] == 150
    expected = ["camellia128", "camellia192", "camellia256",
                "camellia128ctr", "camellia192ctr", "camellia256ctr"]
    assert camellia["algorithms"] == expected and camellia["default_for"] == expected
    table = invoke("backends")
    assert "camellia" in table.stdout and "Default choice" in table.stdout
    result = invoke("selftest", "--backend", "camellia", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["passed"] == 21


def test_allowlist_leaves_it_out(autoload, monkeypatch):
    monkeypatch.setenv("IPSEC_PLUGINS", "someone-else")
    registry = get_registry()
    assert "ipsec_camellia" not in registry.plugins and "camellia" not in registry.records
    with pytest.raises(ProposalError, match="unknown keyword 'camellia128'"):
        parse_esp("camellia128-sha256")
    reset_registry()
    monkeypatch.setenv("IPSEC_PLUGINS", "camellia")
    assert "camellia" in get_registry().records


@pytest.mark.parametrize("proposal,key", [
    ("camellia128-sha256", "0x00112233445566778899aabbccddeeff"),
    ("camellia256ctr-sha256-esn", "0x" + "5a" * 32 + "c0ffee01"),
])
def test_sa_file_round_trip_through_ipsec_pcap(autoload, tmp_path, proposal, key):
    config = sa_file(tmp_path, proposal, key=key, integ="0x" + "42" * 32)
    esp, back = tmp_path / "esp.pcap", tmp_path / "back.pcap"
    result = invoke("pcap", "protect", "--config", config, "--sa", "a-to-b", CLEAR, esp)
    assert result.exit_code == 0, result.output
    result = invoke("pcap", "unprotect", "--config", config, "--sa", "b-from-a", esp, back, "--json")
    assert result.exit_code == 0, result.output
    counts = json.loads(result.stdout)
    assert counts["decrypted"] == counts["packets"] > 0 and counts["dropped"] == {}
    assert back.read_bytes() == CLEAR.read_bytes()
    with open(esp, "rb") as fh:
        frames = [r.data for r in PcapReader(fh)]
    assert all(b"\xca\x3e\x00\x01" in f for f in frames)          # the SPI: ESP on the wire


def test_without_the_plugin_the_sa_file_is_refused_with_the_reason(tmp_path, monkeypatch):
    monkeypatch.setenv("IPSEC_DISABLE_PLUGIN_AUTOLOAD", "1")
    reset_registry()
    try:
        config = sa_file(tmp_path, "camellia128-sha256", key="0x" + "00" * 16, integ="0x" + "42" * 32)
        result = invoke("pcap", "protect", "--config", config, "--sa", "a-to-b", CLEAR,
                        tmp_path / "x.pcap")
        assert result.exit_code == 1
        assert "sa[a-to-b].proposal: 'camellia128-sha256': unknown keyword 'camellia128'" in result.stderr
    finally:
        reset_registry()


def test_console_script_and_perf_with_the_plugin(tmp_path, preferred):
    exe = shutil.which("ipsec") or str(Path(sys.executable).parent / "ipsec")
    if not Path(exe).exists():
        pytest.skip("the ipsec console script is not installed")
    env = {k: v for k, v in os.environ.items() if k not in ("IPSEC_DISABLE_PLUGIN_AUTOLOAD", "IPSEC_PLUGINS")}
    config = sa_file(tmp_path, "camellia192-sha384", key="0x" + "17" * 24, integ="0x" + "99" * 48)
    esp = tmp_path / "esp.pcap"
    done = subprocess.run([exe, "pcap", "protect", "--config", str(config), "--sa", "a-to-b",
                           str(CLEAR), str(esp)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    done = subprocess.run([exe, "perf", "-b", "camellia", "-p", "camellia128-sha256,camellia128ctr-sha256",
                           "-s", "64", "-n", "64", "--batch", "16", "--repeats", "1", "--json"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    # the plugin has no MAC: HMAC-SHA-256 keeps the usual choice (the same built-ins load here)
    mac = preferred(get_registry(), "hmac-sha256", None)
    assert mac != "camellia"
    assert {(r["proposal"], r["backend_names"]) for r in rows} == {
        ("camellia128-sha256", f"camellia,{mac}"), ("camellia128ctr-sha256", f"camellia,{mac}")}

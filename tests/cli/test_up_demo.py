"""`ipsec demo` end to end (the real IKE, loopback UDP, no root) and `ipsec up`'s command line:
its errors, and (root) a foreground run in a namespace stopped by SIGTERM.

The demo runs as a user would run it, in a subprocess: it sets up logging and an event loop of
its own.
"""
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from typer.testing import CliRunner

from ipsec_core.cli import app

try:
    import ipsec_core.ike.endpoint  # noqa: F401
    WHY_NO_IKE = None
except ImportError as exc:
    WHY_NO_IKE = f"the IKE endpoint is not importable yet: {exc}"

needs_ike = pytest.mark.skipif(WHY_NO_IKE is not None, reason=WHY_NO_IKE or "")


def ipsec(*args, timeout=60, **kw):
    return subprocess.run([sys.executable, "-m", "ipsec_core.cli", *args], capture_output=True,
                          text=True, timeout=timeout, **kw)


@pytest.fixture(autouse=True)
def _forget_cli_log_handlers():
    """`ipsec up` in-process attaches a handler to the runner's stderr: drop it afterwards."""
    yield
    logger = logging.getLogger("ipsec")
    for handler in list(logger.handlers):
        if getattr(handler, "_ipsec_cli", False):
            logger.removeHandler(handler)
    logger.propagate = True
    logger.setLevel(logging.NOTSET)


@needs_ike
def test_demo_text():
    proc = ipsec("demo")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "IKE SA established: aes128gcm16-prfsha256-ecp256" in out
    assert "CHILD SA installed: aes128gcm16, ESP in UDP, 198.51.100.0/24 === 203.0.113.0/24" in out
    assert "16 of 16 initiator -> responder, 16 of 16 responder -> initiator" in out
    assert "CHILD SA rekeyed" in out and "IKE SA deleted" in out
    assert "backend " in out
    assert proc.stderr == ""                       # no warnings, no log lines without -v


@needs_ike
def test_demo_json(tmp_path):
    proc = ipsec("demo", "--json", "--save-keys", str(tmp_path / "keys"))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["proposal"] == {"ike": "aes128gcm16-prfsha256-ecp256", "esp": "aes128gcm16"}
    assert result["rekeyed"] is True and result["deleted"] is True
    assert result["packets"]["initiator_to_responder"] == result["packets"]["sent_each_way"] == 16
    assert result["packets"]["responder_to_initiator"] == 16
    assert result["packets"]["through_new_sa"] == {"in": 8, "out": 8}
    before, after = result["spis"]["before_rekey"], result["spis"]["after_rekey"]
    assert before["spi_in"] != after["spi_in"] and len(before["spi_in"]) == 8
    assert set(result["backends"]["esp"]) == {"initiator", "responder"}
    assert result["drops"] == {"initiator": {}, "responder": {}}
    # keys: one IKE SA, two CHILD SAs x two directions, all 0600
    ike = (tmp_path / "keys" / "ikev2_decryption_table").read_text().splitlines()
    esp = (tmp_path / "keys" / "esp_sa").read_text().splitlines()
    assert len(ike) == 2 and ike[1].startswith(result["ike_sa"]["spi_i"] + "," + result["ike_sa"]["spi_r"])
    assert len(esp) == 5
    assert {f'"0x{s}"' for s in (before["spi_in"], before["spi_out"], after["spi_in"], after["spi_out"])} \
        == {row.split(",")[3] for row in esp[1:]}
    for name in ("ikev2_decryption_table", "esp_sa"):
        assert (tmp_path / "keys" / name).stat().st_mode & 0o777 == 0o600


@needs_ike
@pytest.mark.parametrize("ike,esp,chosen", [
    ("chacha20poly1305-prfsha256-x25519", "chacha20poly1305", {"chacha20poly1305", "prfsha256"}),
    ("aes256-sha256-ecp256", "aes256-sha256", {"aes256", "sha256", "ecp256"})])
def test_demo_other_proposals(ike, esp, chosen):
    proc = ipsec("demo", "--json", "--proposal", ike, "--esp-proposal", esp)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    # the IKE names the chosen transforms its own way (x25519 as curve25519, the PRF spelled out)
    assert chosen <= set(result["proposal"]["ike"].split("-"))
    assert result["proposal"]["esp"] == esp
    assert result["packets"]["initiator_to_responder"] == 16


@needs_ike
def test_demo_bad_proposal_is_one_line():
    proc = ipsec("demo", "--proposal", "aes128-nosuchprf-ecp256")
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr


@needs_ike
def test_demo_verbose_logs_events_and_exchanges_but_no_keys(tmp_path):
    proc = ipsec("demo", "-vv", "--save-keys", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    log = proc.stderr
    assert "IKE SA demo[1] established with 127.0.0.2 (aes128gcm16-prfsha256-ecp256), ids " \
           "a.example.org - b.example.org" in log
    assert "CHILD SA net installed: SPIs " in log and "=== 203.0.113.0/24" in log
    assert "(IKE_AUTH request 1," in log and "CREATE_CHILD_SA response 2" in log
    keys = [line.split(",") for line in (tmp_path / "ikev2_decryption_table").read_text().splitlines()[1:]]
    keys += [line.split(",") for line in (tmp_path / "esp_sa").read_text().splitlines()[1:]]
    secrets = {field.strip('"').removeprefix("0x") for row in keys for field in row
               if len(field.strip('"').removeprefix("0x")) >= 32}
    assert secrets and not any(s in log.lower() for s in secrets)


# --------------------------------------------------------------------------- ipsec up: errors

CONNECTIONS = """
[connections.site]
local_addrs = ["{local}"]
remote_addrs = ["{remote}"]
local_id = "a.example.org"
remote_id = "b.example.org"
psk = "a long shared secret for the tests"
proposals = ["aes128gcm16-prfsha256-ecp256"]
encap = true

[connections.site.children.net]
local_ts = ["198.51.100.0/24"]
remote_ts = ["203.0.113.0/24"]
esp_proposals = ["aes128gcm16"]
start_action = "{start}"
"""


def write_conf(path, *, local="192.0.2.1", remote="192.0.2.2", start="none"):
    path.write_text(CONNECTIONS.format(local=local, remote=remote, start=start))
    return path


def test_up_unknown_connection(tmp_path):
    conf = write_conf(tmp_path / "c.toml")
    result = CliRunner().invoke(app, ["up", "--config", str(conf), "--connection", "nope"])
    assert result.exit_code == 1
    assert "no connection 'nope'; the file has site" in result.output


def test_up_without_root_says_so(tmp_path, monkeypatch):
    import ipsec_core.vpn.driver as driver

    def refuse(*a, **k):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(driver, "TunInterface", refuse)
    conf = write_conf(tmp_path / "c.toml")
    result = CliRunner().invoke(app, ["up", "--config", str(conf)])
    assert result.exit_code == 1
    assert "needs root (or CAP_NET_ADMIN)" in result.output and "sudo" in result.output


# --------------------------------------------------------------------------- ipsec up: a run

@needs_ike
@pytest.mark.root
def test_up_runs_in_a_namespace_and_stops_on_sigterm(tmp_path, netns_with_address):
    from ipsec_core.vpn.netlink import Netlink

    ns = netns_with_address
    conf = write_conf(tmp_path / "c.toml", local="192.0.2.1", remote="192.0.2.2", start="none")
    proc = subprocess.Popen([sys.executable, "-m", "ipsec_core.cli", "up", "--config", str(conf),
                             "--netns", ns, "--tun", "ipsut%d"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 20
        while not any("up: site on" in line for line in lines):
            assert proc.poll() is None, "".join(lines)
            assert time.monotonic() < deadline, "not up: " + "".join(lines)
            time.sleep(0.05)
        with Netlink(netns=ns) as nl:
            assert nl.link_info("ipsut0")["up"]
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
        reader.join(5)
        err = "".join(lines)
        assert proc.returncode == 0, err
        assert time.monotonic() - started < 4
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "up: site on 192.0.2.1, TUN ipsut0" in err and "stopped" in err
    with Netlink(netns=ns) as nl:
        assert not nl.exists("ipsut0")


@pytest.fixture
def netns_with_address():
    """A fresh namespace with 192.0.2.1/24 and 198.51.100.1/32 on its loopback."""
    from ipsec_core.vpn.netlink import Netlink
    from ipsec_core.vpn.netns import temporary_netns

    if os.geteuid() != 0 or not os.path.exists("/dev/net/tun"):
        pytest.skip("needs root and /dev/net/tun: creates a namespace and a TUN device")
    with temporary_netns("upcli") as ns:
        with Netlink(netns=ns) as nl:
            nl.set_up("lo")
            nl.add_address("lo", "192.0.2.1/24")
            nl.add_address("lo", "198.51.100.1/32")
        yield ns

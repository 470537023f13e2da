"""`ipsec up` against strongSwan 5.9.8 (kernel-libipsec, ESP-in-UDP) in network namespaces, two
`ipsec up` processes against each other, and tshark decrypting a capture of `ipsec demo`.

Each test runs `ipsec up` as a user would: a foreground process in a namespace (`--netns`),
with a connection file, stopped by SIGTERM.  It checks the tunnel with ping both ways, the
peer's own counters, the delete reaching the peer, and that no TUN device is left behind.
Root, strongSwan, ping and tshark come from tests/setup-system.sh; without them the tests skip
with the reason.
"""
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

from ipsec_core.testing import TCP_HASH_CLIENT, TCP_HASH_SERVER

from . import strongswan as ss

pytestmark = [pytest.mark.root, pytest.mark.slow]

try:
    import ipsec_core.ike.endpoint  # noqa: F401
    import ipsec_core.connections  # noqa: F401
    WHY_NO_IKE = None
except ImportError as exc:
    WHY_NO_IKE = f"the IKE endpoint or the connection loader is not importable: {exc}"

A_ID, B_ID = "a.example.org", "b.example.org"
DEFAULT_SUITE = ("aes128gcm16-prfsha256-ecp256", "aes128gcm16")


def skip_unless_ready(*tools):
    reason = WHY_NO_IKE or ss.skip_reason() or ss.tool_missing("ping", *tools)
    if reason:
        pytest.skip(reason)


def connection_file(path, *, local, remote, local_id, remote_id, local_ts, remote_ts, start,
                    proposals=DEFAULT_SUITE, name="net"):
    ike, esp = proposals
    path.write_text(f"""
[connections.{name}]
local_addrs = ["{local}"]
remote_addrs = ["{remote}"]
local_id = "{local_id}"
remote_id = "{remote_id}"
psk = "{ss.DEFAULT_PSK}"
proposals = ["{ike}"]
encap = true

[connections.{name}.children.{name}]
local_ts = ["{local_ts}"]
remote_ts = ["{remote_ts}"]
esp_proposals = ["{esp}"]
start_action = "{start}"
""")
    return path


class UpProcess:
    """`ipsec up` in a namespace; its stderr collected line by line."""

    def __init__(self, conf, netns, *, save_keys=None):
        argv = [sys.executable, "-m", "ipsec_core.cli", "up", "--config", str(conf), "--netns", netns, "-v"]
        if save_keys:
            argv += ["--save-keys", str(save_keys)]
        self.netns = netns
        self.lines: list[str] = []
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self._reader = threading.Thread(target=lambda: self.lines.extend(self.proc.stderr), daemon=True)
        self._reader.start()

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            for line in list(self.lines):
                if re.search(pattern, line):
                    return line
            if self.proc.poll() is not None:
                self._reader.join(2)
                raise AssertionError(f"ipsec up exited ({self.proc.returncode}) before {pattern!r}:\n{self.log}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {pattern!r} after {timeout} s:\n{self.log}")
            time.sleep(0.05)

    def stop(self, timeout: float = 8.0) -> float:
        """SIGTERM; the seconds until it exited.  Asserts exit status 0."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"ipsec up did not exit within {timeout} s of SIGTERM:\n{self.log}")
        self._reader.join(2)
        assert self.proc.returncode == 0, self.log
        return time.monotonic() - started

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def tun_devices(netns: str) -> list[str]:
    out = ss.run(["ip", "-o", "link", "show"], netns=netns).stdout
    return [m.group(1) for m in re.finditer(r"^\d+: (ipsec\d+)[:@]", out, re.M)]


def ping(pair_net, side, dst, count=3):
    return pair_net.exec(side, ["ping", "-c", str(count), "-i", "0.2", "-W", "2", "-I", side.inner_ip, dst],
                         check=False)


def our_conf(tmp_path, net, *, us, peer, us_id, peer_id, start, proposals=DEFAULT_SUITE, file="ipsec.toml"):
    return connection_file(tmp_path / file, local=us.ip, remote=peer.ip, local_id=us_id,
                           remote_id=peer_id, local_ts=f"{us.inner_ip}/32",
                           remote_ts=f"{peer.inner_ip}/32", start=start, proposals=proposals)


def strongswan_conn(proposals):
    return {"proposals": proposals[0], "esp_proposals": proposals[1]}


# --------------------------------------------------------------------------- against strongSwan

def _initiator_against_strongswan(tmp_path, proposals):
    with ss.StrongswanPair(start_a=False, conn_b=strongswan_conn(proposals)) as pair:
        a, b = pair.net.a, pair.net.b
        conf = our_conf(tmp_path, pair.net, us=a, peer=b, us_id=A_ID, peer_id=B_ID, start="start",
                        proposals=proposals)
        up = UpProcess(conf, a.netns)
        try:
            up.wait_for(r"CHILD SA net installed")
            sa = pair.b.wait_established(ike="net", child="net", timeout=10)
            for side, dst in ((a, b.inner_ip), (b, a.inner_ip)):
                result = ping(pair.net, side, dst)
                assert result.returncode == 0, result.stdout + result.stderr + up.log
            (child,) = pair.b.list_sas()[0]["child-sas"]
            assert child["packets-in"] >= 6 and child["packets-out"] >= 6, child
            assert child["encap"] == "yes"
            assert re.search(r"IKE SA net\[1\] established with 192\.0\.2\.2 \(", up.log)
            took = up.stop()
        finally:
            up.kill()
        assert took < 4, up.log
        assert "closing: deleting the IKE SAs" in up.log and "IKE SA net[1] deleted (deleted)" in up.log
        deadline = time.monotonic() + 5
        while pair.b.list_sas() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert pair.b.list_sas() == [], "strongSwan still has the IKE SA after our delete"
        assert tun_devices(a.netns) == []
        return sa


def test_up_initiator_against_strongswan(tmp_path):
    skip_unless_ready()
    sa = _initiator_against_strongswan(tmp_path, DEFAULT_SUITE)
    assert sa["encr-alg"] == "AES_GCM_16" and sa["dh-group"] == "ECP_256"


@pytest.mark.parametrize("proposals,encr,group", [
    (("aes256-sha512-modp4096", "aes256-sha384"), "AES_CBC", "MODP_4096"),
    (("chacha20poly1305-prfsha512-x448", "chacha20poly1305"), "CHACHA20_POLY1305", "CURVE_448"),
], ids=["aes256-sha512-modp4096", "chacha20poly1305-x448"])
def test_up_initiator_proposal_matrix(tmp_path, proposals, encr, group):
    skip_unless_ready()
    sa = _initiator_against_strongswan(tmp_path, proposals)
    assert sa["encr-alg"] == encr and sa["dh-group"] == group


def test_up_responder_to_strongswan(tmp_path):
    skip_unless_ready()
    with ss.StrongswanPair(start_b=False, conn_a=strongswan_conn(DEFAULT_SUITE)) as pair:
        a, b = pair.net.a, pair.net.b
        conf = our_conf(tmp_path, pair.net, us=b, peer=a, us_id=B_ID, peer_id=A_ID, start="none")
        up = UpProcess(conf, b.netns)
        try:
            up.wait_for(r"up: net on ")
            pair.initiate(timeout=10)
            up.wait_for(r"CHILD SA net installed")
            for side, dst in ((a, b.inner_ip), (b, a.inner_ip)):
                result = ping(pair.net, side, dst)
                assert result.returncode == 0, result.stdout + result.stderr + up.log
            (child,) = pair.a.list_sas()[0]["child-sas"]
            assert child["packets-in"] >= 6 and child["packets-out"] >= 6, child
            # strongSwan deletes: we log it and take the routes down, but keep running
            pair.a.terminate(ike="net")
            up.wait_for(r"IKE SA net\[1\] deleted \(deleted by peer\)")
            assert up.proc.poll() is None
            took = up.stop()
        finally:
            up.kill()
        assert took < 4
        assert tun_devices(b.netns) == []


def test_two_up_processes_ping_each_other(tmp_path):
    skip_unless_ready()
    with ss.NetnsPair(tag="up") as net:
        a, b = net.a, net.b
        conf_b = our_conf(tmp_path, net, us=b, peer=a, us_id=B_ID, peer_id=A_ID, start="none", file="b.toml")
        conf_a = our_conf(tmp_path, net, us=a, peer=b, us_id=A_ID, peer_id=B_ID, start="start", file="a.toml")
        up_b = UpProcess(conf_b, b.netns)
        up_a = None
        try:
            up_b.wait_for(r"up: net on ")
            up_a = UpProcess(conf_a, a.netns)
            up_a.wait_for(r"CHILD SA net installed")
            up_b.wait_for(r"CHILD SA net installed")
            for side, dst in ((a, b.inner_ip), (b, a.inner_ip)):
                result = ping(net, side, dst)
                assert result.returncode == 0, result.stdout + result.stderr + up_a.log + up_b.log
            up_a.stop()
            up_b.wait_for(r"IKE SA net\[1\] deleted \(deleted by peer\)")
            up_b.stop()
        finally:
            for up in (up_a, up_b):
                if up is not None:
                    up.kill()
        assert tun_devices(a.netns) == [] and tun_devices(b.netns) == []


# --------------------------------------------------------------------------- tshark

def test_tshark_decrypts_a_capture_of_the_demo(tmp_path):
    skip_unless_ready("tshark", "tcpdump")
    keys, capture = tmp_path / "keys", tmp_path / "demo.pcap"
    ns = f"updemo-{os.getpid()}"
    ss.run(["ip", "netns", "add", ns])
    try:
        ss.run(["ip", "link", "set", "lo", "up"], netns=ns)
        dump = subprocess.Popen(["ip", "netns", "exec", ns, "tcpdump", "--immediate-mode", "-i", "lo", "-U", "-w", str(capture), "udp"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            seen = ""
            while "listening on" not in seen:              # "listening on lo, ...": capturing now
                line = dump.stderr.readline()
                assert line, seen + dump.stderr.read()
                seen += line
            demo = ss.run([sys.executable, "-m", "ipsec_core.cli", "demo", "--json", "--save-keys", str(keys)],
                          netns=ns, timeout=60)
            time.sleep(1.0)
        finally:
            dump.send_signal(signal.SIGINT)
            dump.wait(10)
    finally:
        ss.run(["ip", "netns", "del", ns], check=False)
    result = json.loads(demo.stdout)
    env = {**os.environ, "WIRESHARK_CONFIG_DIR": str(keys)}

    def tshark(*args):
        proc = subprocess.run(["tshark", "-r", str(capture), *args], capture_output=True, text=True, env=env,
                              timeout=60)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    exchanges = tshark("-Y", "isakmp", "-T", "fields", "-e", "isakmp.exchangetype").split()
    assert {"34", "35", "36", "37"} <= set(exchanges), tshark()
    # IKE_AUTH decrypted: the identities inside the Encrypted payload are readable
    ids = tshark("-Y", "isakmp.exchangetype == 35", "-T", "fields", "-e", "isakmp.id.data").split()
    assert ids, "IKE_AUTH not decrypted"
    # every ESP packet decrypted, ICV checked good, the inner UDP of the demo inside
    esp = tshark("-Y", "esp", "-T", "fields", "-e", "esp.spi", "-e", "esp.icv_good", "-e", "ip.dst").splitlines()
    sent = result["packets"]["initiator_to_responder"] + result["packets"]["responder_to_initiator"]
    assert len(esp) == sent, (esp, dump.stderr.read(), tshark())
    assert all(line.split("\t")[1] == "1" for line in esp), esp
    assert all("203.0.113.1" in line or "198.51.100.1" in line for line in esp)
    assert tshark("-Y", "_ws.malformed || _ws.expert.severity >= warning") == ""


@pytest.mark.parametrize("esp", ["aes128gcm16", "aes256-sha256"])
def test_tcp_byte_exact_both_ways_with_strongswan(tmp_path, esp):
    """16 MB from `ipsec up` to charon and 2 MB back, hashed at both ends: our sending side cuts
    TCP super-packets into a buffer, completes their checksums and seals them in place (checksum
    offload in the fused ESP call); strongSwan's kernel checks every TCP checksum it decrypts."""
    skip_unless_ready()
    proposals = ("aes128gcm16-prfsha256-ecp256", esp)
    with ss.StrongswanPair(start_a=False, conn_b=strongswan_conn(proposals)) as pair:
        a, b = pair.net.a, pair.net.b
        conf = our_conf(tmp_path, pair.net, us=a, peer=b, us_id=A_ID, peer_id=B_ID, start="start",
                        proposals=proposals)
        up = UpProcess(conf, a.netns)
        server = None
        try:
            up.wait_for(r"CHILD SA net installed")
            pair.b.wait_established(ike="net", child="net", timeout=10)
            size = 16 << 20
            server = subprocess.Popen(["ip", "netns", "exec", b.netns, sys.executable, "-c", TCP_HASH_SERVER,
                                       str(size), b.inner_ip, "8000"], stdout=subprocess.PIPE, text=True)
            assert server.stdout.readline().strip() == "ready"
            client = pair.net.exec(a, [sys.executable, "-c", TCP_HASH_CLIENT, str(size), b.inner_ip, a.inner_ip],
                                   check=False, timeout=120)
            assert client.returncode == 0, client.stderr + up.log[-3000:]
            sent_hash, reply_hash, reply_len = client.stdout.split()
            got_hash, left = server.stdout.readline().split()
            assert (got_hash, left) == (sent_hash, "0")
            assert reply_hash == hashlib.sha256(bytes(range(251)) * 8000).hexdigest()
            assert int(reply_len) == 251 * 8000
            (child,) = pair.b.list_sas()[0]["child-sas"]
            assert child["bytes-in"] > size, child
            up.stop()
        finally:
            if server is not None and server.poll() is None:
                server.kill()
            up.kill()

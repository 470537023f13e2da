"""The `ipsec` command line, run through typer's CliRunner and once as the installed console
script.  SA files and pcaps are real files under tmp_path; keys come from `secrets`.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ipsec_core.cli import app
from ipsec_core.vpn.pcap import (LINKTYPE_ETHERNET, LINKTYPE_RAW, PcapHeader, PcapReader, PcapRecord,
                                PcapWriter)
from ipsec_core.transforms.keywords import parse_esp

scapy_all = pytest.importorskip("scapy.all",
                                reason="scapy builds the test packets (pip install scapy)")
Ether, IP, IPv6, ICMP, UDP, ARP, Raw = (scapy_all.Ether, scapy_all.IP, scapy_all.IPv6,
                                        scapy_all.ICMP, scapy_all.UDP, scapy_all.ARP, scapy_all.Raw)

runner = CliRunner()

# Documentation addresses (RFC 5737, RFC 3849): outer 192.0.2.1 <-> 192.0.2.2, inner nets behind.
OUTER = {4: ("192.0.2.1", "192.0.2.2"), 6: ("2001:db8::1", "2001:db8::2")}
MAC_A, MAC_B = "02:00:00:00:00:0a", "02:00:00:00:00:0b"
MARKER = b"ipsec-suite test payload"


def sa_pair(tmp_path: Path, proposal: str, *, spi: int = 0xC0FFEE01, mode: str = "tunnel",
            family: int = 4, encap: bool = False, esn: bool | None = None,
            name: str = "sa.toml") -> Path:
    """An SA file with `out` (192.0.2.1 -> 192.0.2.2) and its twin `in`, as the peer holds it."""
    prop = parse_esp(proposal)
    enc_key = secrets.token_bytes(prop.enc_key_bytes) if prop.enc_key_bytes else b""
    integ_key = secrets.token_bytes(prop.integ_info.key_bytes) if prop.integ_info else b""
    local, remote = OUTER[family]
    tables = []
    for direction in ("out", "in"):
        lines = ["[[sa]]", f'name = "{direction}"', f'spi = "{spi:#010x}"',
                 f'direction = "{direction}"', f'mode = "{mode}"', f'proposal = "{proposal}"']
        if enc_key:
            lines.append(f'key = "{enc_key.hex()}"')
        if integ_key:
            lines.append(f'integrity_key = "{integ_key.hex()}"')
        if mode == "tunnel":
            lo, re_ = (local, remote) if direction == "out" else (remote, local)
            lines.append(f'tunnel = {{ local = "{lo}", remote = "{re_}" }}')
        if encap:
            lines.append('encap = "udp"')
        if esn is not None:
            lines.append(f"esn = {'true' if esn else 'false'}")
        tables.append("\n".join(lines))
    path = tmp_path / name
    path.write_text("\n\n".join(tables) + "\n")
    return path


def inner_packets(family: int = 4) -> list:
    """A few ICMP and UDP packets between documentation networks."""
    if family == 4:
        src, dst, L3 = "198.51.100.10", "203.0.113.20", IP
        pkts = [L3(src=src, dst=dst) / ICMP(id=7, seq=i) / Raw(MARKER + bytes(i))
                for i in range(1, 4)]
    else:
        src, dst, L3 = "2001:db8:1::10", "2001:db8:2::20", IPv6
        pkts = [L3(src=src, dst=dst) / scapy_all.ICMPv6EchoRequest(id=7, seq=i, data=MARKER)
                for i in range(1, 4)]
    pkts.append(L3(src=src, dst=dst) / UDP(sport=40000, dport=5001) / Raw(MARKER * 3))
    pkts.append(L3(src=src, dst=dst) / UDP(sport=40001, dport=5001) / Raw(b"x" * 1200))
    return pkts


def write_input(tmp_path: Path, linktype: int, family: int = 4, *, extra_frames=(),
                name: str = "in.pcap") -> Path:
    path = tmp_path / name
    frames = []
    for pkt in inner_packets(family):
        frames.append(bytes(Ether(src=MAC_A, dst=MAC_B) / pkt) if linktype == LINKTYPE_ETHERNET
                      else bytes(pkt))
    frames.extend(extra_frames)
    with open(path, "wb") as f:
        writer = PcapWriter(f, PcapHeader(linktype=linktype, snaplen=65535))
        for i, frame in enumerate(frames):
            writer.write(PcapRecord(1_700_000_000 + i, 123_456 + i, frame))
    return path


def read_records(path: Path) -> tuple[PcapHeader, list[PcapRecord]]:
    with open(path, "rb") as f:
        reader = PcapReader(f)
        return reader.header, list(reader)


def write_records(path: Path, header: PcapHeader, records) -> Path:
    with open(path, "wb") as f:
        writer = PcapWriter(f, header)
        for rec in records:
            writer.write(rec)
    return path


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.exit_code != 0, result.output
    lines = result.stderr.strip().splitlines()
    # Warnings may come first; the error itself is one line, the last.
    assert lines and lines[-1].startswith("error: "), result.stderr
    assert all(ln.startswith("warning: ") for ln in lines[:-1]), result.stderr
    err = lines[-1]
    assert "Traceback" not in result.output
    assert result.stdout == ""
    for fragment in fragments:
        assert fragment in err, err


# --------------------------------------------------------------------------------------------
# backends and selftest
# --------------------------------------------------------------------------------------------
def test_backends_json_shape():
    result = invoke("backends", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert isinstance(data, list) and data
    by_name = {b["name"]: b for b in data}
    assert {"reference", "aesni", "cryptodome", "gpu"} <= set(by_name)
    for b in data:
        assert {"name", "available", "reason", "algorithms"} <= set(b)
        assert isinstance(b["available"], bool)
        assert all(isinstance(a, str) for a in b["algorithms"])
        assert (b["reason"] is None) == b["available"]
        if not b["available"]:
            assert b["reason"] and b["algorithms"] == []
    ref = by_name["reference"]
    assert ref["available"]
    for keyword in ("aes128gcm16", "aes256", "aes128ctr", "chacha20poly1305", "aes128gmac",
                    "aes256ccm8", "sha256", "aesxcbc", "aescmac"):
        assert keyword in ref["algorithms"]


def test_backends_table():
    result = invoke("backends")
    assert result.exit_code == 0
    assert "reference" in result.stdout and "aesni" in result.stdout


def test_selftest_aesni_json_passes():
    result = invoke("selftest", "--backend", "aesni", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["failed"] == 0 and data["passed"] > 100
    assert len(data["results"]) == data["passed"]
    assert {r["backend"] for r in data["results"]} == {"aesni"}
    assert {"id", "family", "passed"} <= set(data["results"][0])
    families = {r["family"] for r in data["results"]}
    assert {"aes-gcm", "aes-cbc", "chacha20-poly1305", "hmac-sha256"} <= families


def test_selftest_table_for_one_family():
    result = invoke("selftest", "--backend", "reference", "--family", "aes-ctr")
    assert result.exit_code == 0, result.output
    assert "aes-ctr" in result.stdout and "all passed" in result.stdout


def test_selftest_failure_exits_nonzero(monkeypatch):
    from ipsec_core.crypto import selftest

    monkeypatch.setattr(selftest, "run_all", lambda backend, family=None, catalog=None: [
        selftest.Result("rfc0000-case1", "aes-gcm", True, ""),
        selftest.Result("rfc0000-case2", "aes-gcm", False, "tag mismatch [deliberate]"),
    ])
    result = invoke("selftest", "--backend", "aesni", "--json")
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert (data["passed"], data["failed"]) == (1, 1)
    result = invoke("selftest", "--backend", "aesni")
    assert result.exit_code == 1
    assert "rfc0000-case2" in result.stdout and "1 failed" in result.stdout


def test_selftest_unknown_or_unavailable_backend():
    assert_one_line_error(invoke("selftest", "--backend", "nosuch"), "nosuch", "not installed")
    result = invoke("backends", "--json")
    unavailable = [b["name"] for b in json.loads(result.stdout) if not b["available"]]
    if unavailable:
        assert_one_line_error(invoke("selftest", "--backend", unavailable[0]), "unavailable")


# --------------------------------------------------------------------------------------------
# pcap protect / unprotect
# --------------------------------------------------------------------------------------------
ROUND_TRIPS = [
    pytest.param("aes128gcm16", {}, id="aes128gcm16"),
    pytest.param("aes256-sha256", {}, id="aes256-sha256"),
    pytest.param("chacha20poly1305", {}, id="chacha20poly1305"),
    pytest.param("aes128ctr-sha1", {}, id="aes128ctr-sha1"),
    pytest.param("aes256gcm16-esn", {}, id="aes256gcm16-esn"),
    pytest.param("aes128-sha256", {"esn": True}, id="aes128-sha256-esn-key"),
    pytest.param("aes128gcm16", {"encap": True}, id="aes128gcm16-udp-encap"),
    pytest.param("aes256-sha512", {"encap": True, "family": 6}, id="aes256-sha512-udp-encap-v6"),
    pytest.param("aes128gcm12", {"mode": "transport"}, id="aes128gcm12-transport"),
]


@pytest.mark.parametrize("linktype", [LINKTYPE_ETHERNET, LINKTYPE_RAW], ids=["ethernet", "raw-ip"])
@pytest.mark.parametrize("proposal, options", ROUND_TRIPS)
def test_protect_unprotect_round_trip(tmp_path, proposal, options, linktype):
    family = options.get("family", 4)
    sa_file = sa_pair(tmp_path, proposal, **options)
    src = write_input(tmp_path, linktype, family)
    protected, back = tmp_path / "protected.pcap", tmp_path / "back.pcap"

    result = invoke("pcap", "protect", "--config", sa_file, "--sa", "out", src, protected, "--json")
    assert result.exit_code == 0, result.output
    counts = json.loads(result.stdout)
    assert counts == {"packets": 5, "protected": 5, "passed": 0, "dropped": {}}

    header, records = read_records(protected)
    _, originals = read_records(src)
    assert header.linktype == linktype
    assert [(r.ts_sec, r.ts_frac) for r in records] == [(r.ts_sec, r.ts_frac) for r in originals]
    for rec in records:
        assert MARKER not in rec.data                      # encrypted
        if linktype == LINKTYPE_ETHERNET:
            pkt = Ether(rec.data)
            assert (pkt.src, pkt.dst) == (MAC_A, MAC_B)
        else:
            pkt = IP(rec.data) if rec.data[0] >> 4 == 4 else IPv6(rec.data)
        if options.get("encap"):
            assert pkt.haslayer(UDP) and pkt[UDP].dport == 4500
        elif options.get("mode") != "transport":
            outer = pkt[IPv6] if family == 6 else pkt[IP]
            assert (outer.src, outer.dst) == OUTER[family]

    result = invoke("pcap", "unprotect", "-c", sa_file, "-s", "in", protected, back, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"packets": 5, "decrypted": 5, "dropped": {}}
    assert back.read_bytes() == src.read_bytes()          # byte for byte, headers included


def test_unprotect_counts_forged_and_replayed(tmp_path):
    sa_file = sa_pair(tmp_path, "aes256-sha256")
    src = write_input(tmp_path, LINKTYPE_ETHERNET)
    protected = tmp_path / "protected.pcap"
    assert invoke("pcap", "protect", "-c", sa_file, "--sa", "out", src, protected).exit_code == 0
    header, recs = read_records(protected)
    forged = bytearray(recs[1].data)
    forged[-20] ^= 0x01                                    # one bit of the ciphertext
    arp = bytes(Ether(src=MAC_A, dst="ff:ff:ff:ff:ff:ff") / ARP(psrc="192.0.2.1", pdst="192.0.2.2"))
    mixed = [recs[0], recs[1].with_data(bytes(forged)), recs[2], recs[0],   # replay of #1
             recs[2].with_data(arp), recs[1]]                               # genuine #2 still fine
    tampered = write_records(tmp_path / "tampered.pcap", header, mixed)
    out = tmp_path / "out.pcap"

    result = invoke("pcap", "unprotect", "-c", sa_file, "--sa", "in", tampered, out, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "packets": 6, "decrypted": 3, "dropped": {"auth_failed": 1, "replay": 1, "not_ip": 1}}
    _, decrypted = read_records(out)
    _, originals = read_records(src)
    assert [r.data for r in decrypted] == [originals[0].data, originals[2].data, originals[1].data]

    result = invoke("pcap", "unprotect", "-c", sa_file, "--sa", "in", tampered, out)
    assert result.exit_code == 0
    assert "auth_failed: 1" in result.stdout and "replay: 1" in result.stdout


def test_protect_copies_non_ip_frames(tmp_path):
    sa_file = sa_pair(tmp_path, "aes128gcm16")
    arp = bytes(Ether(src=MAC_A, dst="ff:ff:ff:ff:ff:ff") / ARP(psrc="192.0.2.1", pdst="192.0.2.2"))
    src = write_input(tmp_path, LINKTYPE_ETHERNET, extra_frames=[arp])
    protected = tmp_path / "protected.pcap"
    result = invoke("pcap", "protect", "-c", sa_file, "--sa", "out", src, protected, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"packets": 6, "protected": 5, "passed": 1, "dropped": {}}
    _, recs = read_records(protected)
    assert recs[-1].data == arp
    result = invoke("pcap", "protect", "--help")
    assert "copied through unchanged" in " ".join(result.stdout.split())


def test_protect_then_unprotect_with_each_backend(tmp_path):
    """A file protected by one backend unprotects with another (SA override --backend)."""
    sa_file = sa_pair(tmp_path, "aes128gcm16")
    src = write_input(tmp_path, LINKTYPE_RAW)
    protected, back = tmp_path / "p.pcap", tmp_path / "b.pcap"
    assert invoke("pcap", "protect", "-c", sa_file, "--sa", "out", "--backend", "reference",
                  src, protected).exit_code == 0
    result = invoke("pcap", "unprotect", "-c", sa_file, "--sa", "in", "--backend", "cryptodome",
                    protected, back, "--json")
    assert json.loads(result.stdout)["decrypted"] == 5
    assert back.read_bytes() == src.read_bytes()


def test_pcap_runs_on_the_capture_clock(tmp_path):
    """The SA's `now` is the record's timestamp (the SA installed at the first one): a seconds
    lifetime counts capture time, so the result is the same however fast or often it runs."""
    sa_file = sa_pair(tmp_path, "aes128gcm16")
    sa_file.write_text(sa_file.read_text().replace(
        'direction = "out"', 'direction = "out"\nlifetime = { hard_seconds = 10 }'))
    header = PcapHeader(linktype=LINKTYPE_RAW, snaplen=65535)
    # Seconds after the first record: 0, 9.5, 9.999, 10 (hard limit), 3 (a timestamp going back
    # is still past the limit: the SA stays expired).
    times = [(1_700_000_000, 0), (1_700_000_009, 500_000), (1_700_000_009, 999_000),
             (1_700_000_010, 0), (1_700_000_003, 0)]
    packets = [bytes(p) for p in inner_packets(4)]
    src = write_records(tmp_path / "timed.pcap", header,
                        [PcapRecord(sec, usec, pkt) for (sec, usec), pkt in zip(times, packets)])
    for _ in range(2):
        out = tmp_path / "protected.pcap"
        result = invoke("pcap", "protect", "-c", sa_file, "--sa", "out", src, out, "--json")
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout) == {"packets": 5, "protected": 3, "passed": 0,
                                             "dropped": {"sa_expired": 2}}
        assert [r.ts_sec for r in read_records(out)[1]] == [t[0] for t in times[:3]]


# --------------------------------------------------------------------------------------------
# errors: one line on stderr, non-zero exit, no traceback
# --------------------------------------------------------------------------------------------
def test_wrong_sa_name(tmp_path):
    sa_file = sa_pair(tmp_path, "aes128gcm16")
    src = write_input(tmp_path, LINKTYPE_RAW)
    assert_one_line_error(invoke("pcap", "protect", "-c", sa_file, "--sa", "nope", src,
                                 tmp_path / "o.pcap"), "nope", "out, in")


def test_wrong_direction(tmp_path):
    sa_file = sa_pair(tmp_path, "aes128gcm16")
    src = write_input(tmp_path, LINKTYPE_RAW)
    out = tmp_path / "o.pcap"
    assert_one_line_error(invoke("pcap", "protect", "-c", sa_file, "--sa", "in", src, out),
                          "'in'", 'direction = "out"')
    assert_one_line_error(invoke("pcap", "unprotect", "-c", sa_file, "--sa", "out", src, out),
                          "'out'", 'direction = "in"')
    assert not out.exists()


def test_bad_key_in_file(tmp_path):
    sa_file = sa_pair(tmp_path, "aes128gcm16")
    text = sa_file.read_text()
    short = text.replace('key = "', 'key = "00', 1)          # one byte too many
    sa_file.write_text(short)
    src = write_input(tmp_path, LINKTYPE_RAW)
    assert_one_line_error(invoke("pcap", "protect", "-c", sa_file, "--sa", "out", src,
                                 tmp_path / "o.pcap"), str(sa_file), "key", "20 bytes")
    sa_file.write_text(text.replace('key = "', 'key = "zz', 1))
    assert_one_line_error(invoke("pcap", "protect", "-c", sa_file, "--sa", "out", src,
                                 tmp_path / "o.pcap"), "not hex")


def test_missing_files(tmp_path):
    sa_file = sa_pair(tmp_path, "aes128gcm16")
    src = write_input(tmp_path, LINKTYPE_RAW)
    out = tmp_path / "o.pcap"
    assert_one_line_error(invoke("pcap", "protect", "-c", tmp_path / "missing.toml", "--sa", "out",
                                 src, out), "missing.toml", "no such file")
    assert_one_line_error(invoke("pcap", "unprotect", "-c", sa_file, "--sa", "in",
                                 tmp_path / "missing.pcap", out), "missing.pcap")
    assert_one_line_error(invoke("pcap", "protect", "-c", sa_file, "--sa", "out", src,
                                 tmp_path / "nodir" / "o.pcap"), "nodir")
    assert_one_line_error(invoke("wireshark-keys", "-c", tmp_path / "missing.toml"), "no such file")


def test_not_a_pcap_and_bad_backend(tmp_path):
    sa_file = sa_pair(tmp_path, "aes128gcm16")
    out = tmp_path / "o.pcap"
    assert_one_line_error(invoke("pcap", "protect", "-c", sa_file, "--sa", "out", sa_file, out),
                          "not a pcap file")
    assert not out.exists() and not (tmp_path / "o.pcap.partial").exists()
    src = write_input(tmp_path, LINKTYPE_RAW)
    assert_one_line_error(invoke("pcap", "protect", "-c", sa_file, "--sa", "out",
                                 "--backend", "nosuch", src, out), "'out'", "nosuch")


def test_no_args_shows_help():
    result = invoke()
    assert "pcap" in result.output and "wireshark-keys" in result.output
    result = invoke("pcap")
    assert "protect" in result.output and "unprotect" in result.output


# --------------------------------------------------------------------------------------------
# wireshark-keys (tshark itself: tests/interop/test_wireshark.py)
# --------------------------------------------------------------------------------------------
def test_wireshark_keys_uat_rows(tmp_path):
    sa_file = sa_pair(tmp_path, "aes256-sha256", spi=0x1234)
    text = sa_file.read_text()
    key = text.split('key = "')[1].split('"')[0]
    ikey = text.split('integrity_key = "')[1].split('"')[0]
    result = invoke("wireshark-keys", "--config", sa_file)
    assert result.exit_code == 0, result.output
    lines = [ln for ln in result.stdout.splitlines() if not ln.startswith("#")]
    # out and in of one pair are the same flow (192.0.2.1 -> 192.0.2.2): one row.
    assert lines == [f'"IPv4","192.0.2.1","192.0.2.2","0x00001234","AES-CBC [RFC3602]",'
                     f'"0x{key}","HMAC-SHA-256-128 [RFC4868]","0x{ikey}"']


def test_wireshark_keys_in_direction_and_skips(tmp_path):
    out_file = sa_pair(tmp_path, "aes128gcm8", spi=0x1001, name="a.toml")
    in_file = sa_pair(tmp_path, "chacha20poly1305", spi=0x2002, name="b.toml")
    combined = tmp_path / "both.toml"
    # The in SA (local 192.0.2.2) gets its peer moved to 192.0.2.9: on the wire that is
    # remote -> local, 192.0.2.9 -> 192.0.2.2.
    combined.write_text(out_file.read_text().replace(
        'remote = "192.0.2.1"', 'remote = "192.0.2.9"') + "\n" +
        in_file.read_text().replace('name = "out"', 'name = "c-out"').replace(
            'name = "in"', 'name = "c-in"'))
    result = invoke("wireshark-keys", "-c", combined, "--sa", "in", "--sa", "c-in")
    assert result.exit_code == 0, result.output
    rows = [ln.split('","') for ln in result.stdout.splitlines() if not ln.startswith("#")]
    assert len(rows) == 1 and rows[0][1:4] == ["192.0.2.9", "192.0.2.2", "0x00001001"]
    assert rows[0][4] == "AES-GCM with 8 octet ICV [RFC4106]" and rows[0][6] == "NULL"
    assert "c-in" in result.stderr and "cannot decrypt" in result.stderr
    assert_one_line_error(invoke("wireshark-keys", "-c", combined, "--sa", "c-in"), "no SA")


def test_wireshark_keys_tshark_args_and_config_dir(tmp_path):
    import shlex

    sa_file = sa_pair(tmp_path, "aes128-aesxcbc", mode="transport")
    result = invoke("wireshark-keys", "-c", sa_file, "--format", "tshark-args",
                    "--write-config", tmp_path / "ws")
    assert result.exit_code == 0, result.output
    args = shlex.split(result.stdout)
    assert args[:4] == ["-o", "esp.enable_encryption_decode:TRUE",
                        "-o", "esp.enable_authentication_check:TRUE"]
    uat = [a for a in args if a.startswith("uat:esp_sa:")]
    assert len(uat) == 2                                    # transport, no addresses: v4 and v6
    assert all('"*","*"' in a and "ANY 96 bit authentication [no checking]" in a for a in uat)
    assert "AES_XCBC" in result.stderr
    assert (tmp_path / "ws" / "esp_sa").read_text().count("AES-CBC [RFC3602]") == 2
    assert "esp.enable_encryption_decode: TRUE" in (tmp_path / "ws" / "preferences").read_text()
    assert invoke("wireshark-keys", "-c", sa_file, "--format", "xml").exit_code != 0


# --------------------------------------------------------------------------------------------
# the installed console script
# --------------------------------------------------------------------------------------------
def _console_script() -> str | None:
    here = Path(sys.executable).parent / "ipsec"
    return str(here) if here.exists() else shutil.which("ipsec")


def test_console_script(tmp_path):
    exe = _console_script()
    if exe is None:
        pytest.skip("the `ipsec` console script is not installed (pip install -e .)")
    env = dict(os.environ, COLUMNS="200")
    done = subprocess.run([exe, "backends", "--json"], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert {"name", "available", "reason", "algorithms"} <= set(json.loads(done.stdout)[0])

    sa_file = sa_pair(tmp_path, "aes128gcm16", encap=True)
    src = write_input(tmp_path, LINKTYPE_ETHERNET)
    protected, back = tmp_path / "p.pcap", tmp_path / "b.pcap"
    done = subprocess.run([exe, "pcap", "protect", "--config", str(sa_file), "--sa", "out",
                           str(src), str(protected)], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    done = subprocess.run([exe, "pcap", "unprotect", "--config", str(sa_file), "--sa", "in",
                           str(protected), str(back), "--json"], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"packets": 5, "decrypted": 5, "dropped": {}}
    assert back.read_bytes() == src.read_bytes()

    done = subprocess.run([exe, "pcap", "unprotect", "--config", str(sa_file), "--sa", "out",
                           str(protected), str(back)], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 1
    # One error line, after the warning that the SA file (mode 0644 here) holds keys.
    assert [ln[:7] for ln in done.stderr.splitlines()] in (["error: "], ["warning", "error: "])
    assert "Traceback" not in done.stderr

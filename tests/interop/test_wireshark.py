"""Interop with Wireshark: `ipsec wireshark-keys` lets tshark 4.0 decrypt what
`ipsec pcap protect` writes, with the ICV reported correct.

For every proposal Wireshark 4.0 supports, inner ICMP and UDP packets (built with scapy) are
protected, the keys are written into a private Wireshark configuration folder
(WIRESHARK_CONFIG_DIR: an `esp_sa` table and a `preferences` file turning on
esp.enable_encryption_decode and esp.enable_authentication_check, both off by default), and
tshark must show the inner layers of every packet and `esp.icv_good` true, and its decrypted
bytes (the "Decrypted Data" tshark -x prints) must be the original inner packet (tunnel mode) or
its payload (transport mode), followed by RFC 4303 padding 1, 2, 3, ..., the pad length and the
next header.
"""
from __future__ import annotations

import os
import re
import secrets
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ipsec_core.cli import app
from ipsec_core.vpn.pcap import (LINKTYPE_ETHERNET, LINKTYPE_RAW, PcapHeader, PcapReader, PcapRecord,
                                 PcapWriter, ip_from_frame)
from ipsec_core.wire.ip import ipv4_header_len, ipv6_split
from ipsec_core.transforms.keywords import parse_esp

TSHARK = shutil.which("tshark")
pytestmark = pytest.mark.skipif(TSHARK is None, reason="tshark is not installed "
                                "(apt-get install tshark); Wireshark interop not checked")
scapy_all = pytest.importorskip("scapy.all",
                                reason="scapy builds the test packets (pip install scapy)")

runner = CliRunner()
OUTER = {4: ("192.0.2.1", "192.0.2.2"), 6: ("2001:db8::1", "2001:db8::2")}


def write_sa_file(path: Path, proposal: str, *, spi: int, mode: str = "tunnel", family: int = 4,
                  encap: bool = False, encap_ports: tuple[int, int] | None = None) -> Path:
    prop = parse_esp(proposal)
    lines = ["[[sa]]", 'name = "out"', f"spi = {spi}", 'direction = "out"', f'mode = "{mode}"',
             f'proposal = "{proposal}"']
    if prop.enc_key_bytes:
        lines.append(f'key = "{secrets.token_hex(prop.enc_key_bytes)}"')
    if prop.integ_info:
        lines.append(f'integrity_key = "{secrets.token_hex(prop.integ_info.key_bytes)}"')
    if mode == "tunnel":
        local, remote = OUTER[family]
        lines.append(f'tunnel = {{ local = "{local}", remote = "{remote}" }}')
    if encap:
        lines.append('encap = "udp"')
    if encap_ports:
        lines.append(f"encap_ports = [{encap_ports[0]}, {encap_ports[1]}]")
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)       # it holds keys: readable by others, the CLI would warn about it
    return path


def write_traffic(path: Path, *, family: int, linktype: int) -> list[str]:
    """ICMP echo requests and UDP datagrams; returns the inner protocol of each packet."""
    if family == 4:
        L3, src, dst = scapy_all.IP, "198.51.100.10", "203.0.113.20"
        icmp = [L3(src=src, dst=dst) / scapy_all.ICMP(id=1, seq=i) / (b"ping" * i)
                for i in range(1, 4)]
        kinds = ["icmp"] * 3
    else:
        L3, src, dst = scapy_all.IPv6, "2001:db8:1::10", "2001:db8:2::20"
        icmp = [L3(src=src, dst=dst) / scapy_all.ICMPv6EchoRequest(id=1, seq=i, data=b"ping" * i)
                for i in range(1, 4)]
        kinds = ["icmpv6"] * 3
    udp = [L3(src=src, dst=dst) / scapy_all.UDP(sport=40000 + i, dport=5001)
           / (b"u" * (10 + 90 * i)) for i in range(3)]
    packets = icmp + udp
    with open(path, "wb") as f:
        writer = PcapWriter(f, PcapHeader(linktype=linktype, snaplen=65535))
        for i, pkt in enumerate(packets):
            frame = (bytes(scapy_all.Ether(src="02:00:00:00:00:0a", dst="02:00:00:00:00:0b") / pkt)
                     if linktype == LINKTYPE_ETHERNET else bytes(pkt))
            writer.write(PcapRecord(1_700_000_000 + i, 0, frame))
    return kinds + ["udp"] * 3


def protect(tmp_path: Path, proposal: str, *, family: int = 4, mode: str = "tunnel",
            encap: bool = False, linktype: int = LINKTYPE_ETHERNET, spi: int = 0xC0FFEE01,
            encap_ports: tuple[int, int] | None = None):
    sa_file = write_sa_file(tmp_path / "sa.toml", proposal, spi=spi, mode=mode, family=family,
                            encap=encap, encap_ports=encap_ports)
    src, out = tmp_path / "inner.pcap", tmp_path / "esp.pcap"
    kinds = write_traffic(src, family=family, linktype=linktype)
    result = runner.invoke(app, ["pcap", "protect", "-c", str(sa_file), "--sa", "out", str(src),
                                 str(out)])
    assert result.exit_code == 0, result.output
    return sa_file, out, kinds


def tshark_fields(pcap: Path, *, config_dir: Path | None = None,
                  extra: list[str] = ()) -> list[list[str]]:
    env = dict(os.environ)
    if config_dir is not None:
        env["WIRESHARK_CONFIG_DIR"] = str(config_dir)
    else:  # an empty private folder: no personal settings leak in
        env["WIRESHARK_CONFIG_DIR"] = str(pcap.parent / "empty-ws-config")
        os.makedirs(env["WIRESHARK_CONFIG_DIR"], exist_ok=True)
    done = subprocess.run(
        [TSHARK, "-n", "-r", str(pcap), *extra, "-T", "fields", "-E", "separator=|",
         "-e", "frame.protocols", "-e", "esp.spi", "-e", "esp.icv_good", "-e", "esp.icv_bad"],
        capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    return [line.split("|") for line in done.stdout.splitlines()]


_SOURCE = re.compile(r"^(\S.*) \((\d+) bytes\):$")
_HEX_LINE = re.compile(r"^[0-9a-f]{4,8}  ")


def tshark_decrypted(pcap: Path, *, config_dir: Path | None = None,
                     extra: list[str] = ()) -> list[list[bytes]]:
    """Per frame, the bytes of each "Decrypted Data" source of `tshark -x` (ESP decrypted with
    the keys of `config_dir` or the `extra` options): usually one per ESP packet."""
    env = dict(os.environ, WIRESHARK_CONFIG_DIR=str(config_dir or pcap.parent / "empty-ws-config"))
    os.makedirs(env["WIRESHARK_CONFIG_DIR"], exist_ok=True)
    done = subprocess.run([TSHARK, "-n", "-r", str(pcap), *extra, "-x"], capture_output=True,
                          text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    frames: list[list[bytes]] = []
    for block in done.stdout.split("\n\n"):
        if not block.strip():
            continue
        found, name, size, data = [], None, 0, bytearray()
        for line in block.splitlines() + ["end (0 bytes):"]:
            source = _SOURCE.match(line)
            if source:
                if name == "Decrypted Data":
                    assert len(data) == size, (line, size, len(data))
                    found.append(bytes(data))
                name, size, data = source[1], int(source[2]), bytearray()
            elif _HEX_LINE.match(line):
                data += bytes.fromhex(line.split("  ", 1)[1][:47])
        frames.append(found)
    return frames


def esp_plaintext(inner: bytes, *, mode: str) -> tuple[bytes, int]:
    """(the bytes ESP encrypts before its trailer, next header) for an inner packet: the whole
    packet in tunnel mode, what follows the IP header(s) in transport mode."""
    version = inner[0] >> 4
    if mode == "tunnel":
        return inner, 4 if version == 4 else 41
    if version == 4:
        return inner[ipv4_header_len(inner):], inner[9]
    off, nh_at, nh = ipv6_split(inner)
    return inner[off:], nh


def assert_plaintext(decrypted: bytes, body: bytes, nh: int, what: str = "") -> None:
    """`decrypted` is `body`, padding 1, 2, 3, ..., the pad length and next header `nh`."""
    pad = decrypted[-2]
    assert decrypted[-1] == nh, (what, decrypted[-1], nh)
    assert decrypted[-2 - pad:-2] == bytes(range(1, pad + 1)), (what, decrypted[-2 - pad:])
    assert decrypted[:-2 - pad] == body, f"{what}: tshark decrypted other bytes than the original"


def assert_payloads(frames: list[list[bytes]], inner_pcap: Path, *, mode: str) -> None:
    """Every frame decrypted to the packet of the same record of `inner_pcap`."""
    with open(inner_pcap, "rb") as f:
        reader = PcapReader(f)
        originals = [ip_from_frame(reader.header.linktype, rec.data) for rec in reader]
    assert len(frames) == len(originals)
    for i, (found, inner) in enumerate(zip(frames, originals)):
        assert len(found) == 1, f"packet {i}: {len(found)} decrypted data sources"
        assert_plaintext(found[0], *esp_plaintext(inner, mode=mode), what=f"packet {i}")


def write_wireshark_config(tmp_path: Path, sa_file: Path) -> tuple[Path, str]:
    """`ipsec wireshark-keys` into WIRESHARK_CONFIG_DIR/esp_sa, plus the preferences it needs."""
    result = runner.invoke(app, ["wireshark-keys", "--config", str(sa_file)])
    assert result.exit_code == 0, result.output
    config_dir = tmp_path / "ws-config"
    config_dir.mkdir()
    (config_dir / "esp_sa").write_text(result.stdout)
    (config_dir / "preferences").write_text("esp.enable_encryption_decode: TRUE\n"
                                            "esp.enable_authentication_check: TRUE\n")
    return config_dir, result.stderr


def assert_decrypted(rows: list[list[str]], kinds: list[str], *, mode: str, icv: str) -> None:
    """Every packet shows its inner layers after ESP; `icv` is "good", "bad" or "unchecked"."""
    assert len(rows) == len(kinds)
    inner_ip = {"icmp": "ip", "udp": None, "icmpv6": "ipv6"}
    for (protocols, spi, good, bad), kind in zip(rows, kinds):
        after_esp = protocols.split(":esp:", 1)[1] if ":esp:" in protocols else ""
        layers = after_esp.split(":")
        if mode == "tunnel":
            assert layers[0] in ("ip", "ipv6") and kind in layers[1:2], protocols
            if inner_ip[kind]:
                assert layers[0] == inner_ip[kind]
        else:
            assert layers[0] == kind, protocols
        expected = {"good": ("1", "0"), "bad": ("0", "1"), "unchecked": ("0", "0")}[icv]
        assert (good, bad) == expected, (protocols, good, bad)


# Proposals Wireshark 4.0 decrypts and authenticates.
CHECKED = [
    "aes128gcm8", "aes192gcm12", "aes256gcm16",
    "aes128-sha1", "aes256-sha256", "aes192-sha384", "aes128-sha512",
    "aes128ctr-sha256", "aes256ctr-sha1", "null-sha256",
]


@pytest.mark.parametrize("proposal", CHECKED)
def test_tshark_decrypts_with_icv_good(tmp_path, proposal):
    sa_file, pcap, kinds = protect(tmp_path, proposal)
    assert all(":esp:ip" not in row[0] for row in tshark_fields(pcap))   # no keys: opaque
    config_dir, warnings = write_wireshark_config(tmp_path, sa_file)
    assert warnings == ""
    assert_decrypted(tshark_fields(pcap, config_dir=config_dir), kinds, mode="tunnel", icv="good")
    assert_payloads(tshark_decrypted(pcap, config_dir=config_dir), pcap.parent / "inner.pcap",
                    mode="tunnel")


@pytest.mark.parametrize("proposal, family, mode, encap, linktype", [
    ("aes128gcm16", 4, "tunnel", True, LINKTYPE_ETHERNET),
    ("aes256-sha256", 4, "tunnel", True, LINKTYPE_RAW),
    ("aes256gcm16", 6, "tunnel", False, LINKTYPE_ETHERNET),
    ("aes128-sha512", 6, "tunnel", True, LINKTYPE_RAW),
    ("aes128gcm16", 4, "transport", False, LINKTYPE_ETHERNET),
    ("aes128ctr-sha256", 6, "transport", False, LINKTYPE_RAW),
], ids=["gcm-udp-encap", "cbc-udp-encap-rawip", "gcm-ipv6", "cbc-ipv6-udp-encap",
        "gcm-transport", "ctr-transport-ipv6"])
def test_tshark_decrypts_variants(tmp_path, proposal, family, mode, encap, linktype):
    sa_file, pcap, kinds = protect(tmp_path, proposal, family=family, mode=mode, encap=encap,
                                   linktype=linktype)
    config_dir, _ = write_wireshark_config(tmp_path, sa_file)
    assert_decrypted(tshark_fields(pcap, config_dir=config_dir), kinds, mode=mode, icv="good")
    assert_payloads(tshark_decrypted(pcap, config_dir=config_dir), pcap.parent / "inner.pcap",
                    mode=mode)


def test_tshark_args_format(tmp_path):
    """The --format tshark-args lines, split as a shell would, work on tshark's command line."""
    sa_file, pcap, kinds = protect(tmp_path, "aes256gcm16", encap=True)
    result = runner.invoke(app, ["wireshark-keys", "-c", str(sa_file), "--format", "tshark-args"])
    assert result.exit_code == 0, result.output
    args = shlex.split(result.stdout)
    assert_decrypted(tshark_fields(pcap, extra=args), kinds, mode="tunnel", icv="good")
    assert_payloads(tshark_decrypted(pcap, extra=args), pcap.parent / "inner.pcap", mode="tunnel")


def test_udp_encap_on_other_ports(tmp_path):
    """ESP-in-UDP off port 4500 needs Decode As: written by --write-config and tshark-args."""
    sa_file, pcap, kinds = protect(tmp_path, "aes128gcm16", encap=True, encap_ports=(4501, 4502))
    result = runner.invoke(app, ["wireshark-keys", "-c", str(sa_file)])
    assert "Decode As" in result.stderr
    config_dir = tmp_path / "ws"
    result = runner.invoke(app, ["wireshark-keys", "-c", str(sa_file), "--write-config",
                                 str(config_dir)])
    assert result.exit_code == 0 and result.stderr == ""
    assert "udp.port,4502,(none),UDPENCAP" in (config_dir / "decode_as_entries").read_text()
    assert_decrypted(tshark_fields(pcap, config_dir=config_dir), kinds, mode="tunnel", icv="good")
    result = runner.invoke(app, ["wireshark-keys", "-c", str(sa_file), "-f", "tshark-args"])
    args = shlex.split(result.stdout)
    assert "udp.port==4502,udpencap" in args
    assert_decrypted(tshark_fields(pcap, extra=args), kinds, mode="tunnel", icv="good")
    assert_payloads(tshark_decrypted(pcap, extra=args), pcap.parent / "inner.pcap", mode="tunnel")


@pytest.mark.parametrize("proposal, icv, warning", [
    ("aes128-aesxcbc", "unchecked", "AUTH_AES_XCBC_96"),
    ("aes256-aescmac", "unchecked", "AUTH_AES_CMAC_96"),
    ("aes128-sha256-esn", "unchecked", "ESN"),
    ("aes128gcm16-esn", "bad", "ESN"),
])
def test_best_effort_rows(tmp_path, proposal, icv, warning):
    """Wireshark 4.0 lacks XCBC/CMAC integrity and ESN: payloads still decrypt, with a warning."""
    sa_file, pcap, kinds = protect(tmp_path, proposal)
    config_dir, warnings = write_wireshark_config(tmp_path, sa_file)
    assert warning in warnings
    assert_decrypted(tshark_fields(pcap, config_dir=config_dir), kinds, mode="tunnel", icv=icv)
    assert_payloads(tshark_decrypted(pcap, config_dir=config_dir), pcap.parent / "inner.pcap",
                    mode="tunnel")


@pytest.mark.parametrize("proposal", ["chacha20poly1305", "aes128ccm16", "aes256gmac"])
def test_undecryptable_proposals_are_skipped(tmp_path, proposal):
    sa_file = write_sa_file(tmp_path / "sa.toml", proposal, spi=0x1000)
    result = runner.invoke(app, ["wireshark-keys", "-c", str(sa_file)])
    assert result.exit_code == 1
    assert "cannot decrypt" in result.stderr and "skipped" in result.stderr

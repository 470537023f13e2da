"""tshark (Wireshark 4.0) dissects every AH and ESP packet this project produces without a
malformed-packet warning: IPv4 (with options) and IPv6 (with hop-by-hop, destination options and
routing headers), tunnel and transport mode, every AH algorithm, TFC padding, dummy packets,
ESP inside AH, and outer fragments.

How "malformed" is checked: tshark's `_ws.malformed` field (present on any frame where a
dissector threw a malformed-packet exception) must be absent, and no expert info of severity
warning or error (`_ws.expert.severity` >= 0x00600000) may appear.  Expert *notes* are allowed:
Wireshark notes that a type 0 routing header is deprecated (RFC 5095); the packets here use one
on purpose, because it is the routing header AH must predict.  Each SA has its own SPI, so
ESP sequence analysis sees one sequence per SA.

Wireshark 4.0 cannot check AH ICVs: its AH dissector has only ah.next_header, ah.length,
ah.reserved, ah.spi, ah.sequence and ah.icv, and there is no `ah.*` preference; the `esp_sa`
table's "Protocol" column is the IP version, not ESP/AH.  So AH is checked for dissection
(fields equal ours) and `ipsec wireshark-keys` skips AH SAs with that reason; ESP behind AH is
decrypted from the ESP SA's row with its ICV good, and tshark's decrypted bytes of every ESP
packet are the original inner packet (or its payload) with a valid RFC 4303 trailer.
"""
from __future__ import annotations

import ipaddress
import itertools
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ipsec_core.dataplane.bundle import SaBundle
from ipsec_core.cli import app
from ipsec_core.tools.wireshark import esp_sa_rows, preferences_text, uat_text
from ipsec_core.vpn.pcap import LINKTYPE_ETHERNET, LINKTYPE_RAW, PcapHeader, PcapRecord, PcapWriter
from ipsec_core.transforms.keywords import parse_ah, parse_esp
from ipsec_core.dataplane.sa import Direction, Mode, SaConfig, SecurityAssociation
from interop.test_wireshark import assert_plaintext, esp_plaintext, tshark_decrypted

TSHARK = shutil.which("tshark")
pytestmark = pytest.mark.skipif(TSHARK is None, reason="tshark is not installed "
                                "(apt-get install tshark); Wireshark dissection not checked")
scapy_all = pytest.importorskip("scapy.all", reason="scapy builds the test packets (pip install scapy)")

WARNING = 0x00600000
OUTER = {4: ("192.0.2.1", "192.0.2.2"), 6: ("2001:db8::1", "2001:db8::2")}
_spis = itertools.count(0x00A0_0001)


def inner_packets(version: int) -> list[bytes]:
    """UDP to a port no dissector claims, and an ICMP echo; IPv4 with a router alert option,
    IPv6 with hop-by-hop (a mutable option), destination options, a routing header, and
    destination options for the final destination."""
    s = scapy_all
    if version == 4:
        base = dict(src="198.51.100.10", dst="203.0.113.20", options=[s.IPOption_Router_Alert()])
        return [bytes(s.IP(**base) / s.UDP(sport=40001, dport=5001) / (b"u" * 77)),
                bytes(s.IP(**base) / s.ICMP(id=1, seq=1) / (b"ping" * 9))]
    exts = (s.IPv6ExtHdrHopByHop(options=[s.HBHOptUnknown(otype=0x3E, optdata=b"mutable")])
            / s.IPv6ExtHdrDestOpt(options=[s.HBHOptUnknown(otype=0x1E, optdata=b"x")])
            / s.IPv6ExtHdrRouting(addresses=["2001:db8:2::20"])
            / s.IPv6ExtHdrDestOpt(options=[s.HBHOptUnknown(otype=0x1E, optdata=b"end")]))
    base = s.IPv6(src="2001:db8:1::10", dst="2001:db8:3::30")
    return [bytes(base / exts / s.UDP(sport=40001, dport=5001) / (b"u" * 77)),
            bytes(base / exts / s.ICMPv6EchoRequest(id=1, seq=1, data=b"ping" * 9))]


def make_sa(protocol: str, proposal: str, mode: Mode, outer: int, **kw) -> SecurityAssociation:
    prop = parse_ah(proposal) if protocol == "ah" else parse_esp(proposal)
    if protocol == "ah":
        keys = dict(integ_key=os.urandom(prop.integ_info.key_bytes))
    else:
        keys = dict(enc_key=os.urandom(prop.enc_key_bytes),
                    integ_key=os.urandom(prop.integ_info.key_bytes) if prop.integ_info else b"")
    local, remote = (ipaddress.ip_address(a) for a in OUTER[outer])
    tunnel = mode == Mode.TUNNEL or kw.pop("addresses", False)
    cfg = SaConfig(name=f"{protocol}-{proposal}-{mode.value}-{outer}-{next(_spis)}", spi=next(_spis),
                   direction=Direction.OUT, mode=mode, proposal=prop, protocol=protocol,
                   local=local if tunnel else None, remote=remote if tunnel else None, **keys, **kw)
    return SecurityAssociation(cfg, now=0.0)


AH_PROPOSALS = ["sha1", "sha256", "sha384", "sha512", "aesxcbc", "aescmac", "aes128gmac",
                "aes256gmac-esn"]
ESP_PROPOSALS = ["aes128gcm16", "aes256-sha256", "aes128ctr-sha1", "null-sha512"]


def production() -> tuple[list[tuple[str, bytes]], list, list]:
    """(what, packet) for everything this project writes, the ESP SA configs, and per packet
    what its ESP encrypted before the trailer as (bytes, next header), or None (AH, dummy)."""
    out: list[tuple[str, bytes]] = []
    esp_configs = []
    plain: list = []

    def add(what: str, wires: list[bytes], plaintexts=None) -> None:
        out.extend((what, w) for w in wires)
        plain.extend(plaintexts or [None] * len(wires))

    for version in (4, 6):
        packets = inner_packets(version)
        for proposal in AH_PROPOSALS:
            for mode in (Mode.TRANSPORT, Mode.TUNNEL):
                sa = make_sa("ah", proposal, mode, version)
                add(f"ah {proposal} {mode.value} v{version}", [sa.protect(p, now=0.0) for p in packets])
        for proposal in ESP_PROPOSALS:
            for mode in (Mode.TRANSPORT, Mode.TUNNEL):
                sa = make_sa("esp", proposal, mode, version)
                esp_configs.append(sa.config)
                add(f"esp {proposal} {mode.value} v{version}", [sa.protect(p, now=0.0) for p in packets],
                    [esp_plaintext(p, mode=mode.value) for p in packets])
        tfc = make_sa("esp", "aes256gcm16", Mode.TUNNEL, version, tfc_padding=400)
        esp_configs.append(tfc.config)
        add(f"esp tfc v{version}", [tfc.protect(p, now=0.0) for p in packets],
            [(p + bytes(400 - len(p)), esp_plaintext(p, mode="tunnel")[1]) for p in packets])
        add(f"esp dummy v{version}", [tfc.dummy(now=0.0)])
        bundle = SaBundle(make_sa("ah", "sha256", Mode.TRANSPORT, version),
                          make_sa("esp", "aes128gcm16", Mode.TRANSPORT, version))
        esp_configs.append(bundle.esp.config)
        add(f"esp in ah v{version}", [bundle.protect(p, now=0.0) for p in packets],
            [esp_plaintext(p, mode="transport") for p in packets])
        tunnel_bundle = SaBundle(make_sa("ah", "sha512", Mode.TUNNEL, version),
                                 make_sa("esp", "aes128gcm16", Mode.TRANSPORT, version))
        esp_configs.append(tunnel_bundle.esp.config)
        add(f"esp in ah tunnel v{version}", [tunnel_bundle.protect(p, now=0.0) for p in packets],
            [esp_plaintext(p, mode="transport") for p in packets])
        frag = make_sa("esp", "aes128gcm16", Mode.TUNNEL, version, mtu=1280)
        esp_configs.append(frag.config)
        s = scapy_all
        if version == 4:
            big = bytes(s.IP(src="198.51.100.10", dst="203.0.113.20") / s.UDP(sport=40001, dport=5001)
                        / (b"f" * 1240))
        else:
            big = bytes(s.IPv6(src="2001:db8:1::10", dst="2001:db8:3::30") / s.UDP(sport=40001, dport=5001)
                        / (b"f" * 1200))
        wires = frag.protect_wire(big, now=0.0)
        add(f"esp fragment v{version}", wires, [esp_plaintext(big, mode="tunnel")] * len(wires))
        ah_frag = make_sa("ah", "sha256", Mode.TUNNEL, version, mtu=1280)
        add(f"ah fragment v{version}", ah_frag.protect_wire(big, now=0.0))
    return out, esp_configs, plain


def write_pcap(path: Path, packets: list[bytes], linktype: int = LINKTYPE_RAW) -> None:
    with open(path, "wb") as f:
        writer = PcapWriter(f, PcapHeader(linktype=linktype, snaplen=65535))
        for i, p in enumerate(packets):
            frame = p if linktype == LINKTYPE_RAW else bytes(
                scapy_all.Ether(type=0x0800 if p[0] >> 4 == 4 else 0x86DD)) + p
            writer.write(PcapRecord(1_700_000_000 + i, i, frame))


def tshark(pcap: Path, fields: list[str], *, config_dir: Path) -> list[list[str]]:
    env = dict(os.environ, WIRESHARK_CONFIG_DIR=str(config_dir))
    config_dir.mkdir(exist_ok=True)
    args = [TSHARK, "-n", "-r", str(pcap), "-T", "fields", "-E", "separator=|", "-E", "occurrence=a"]
    for f in fields:
        args += ["-e", f]
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    return [line.split("|") for line in done.stdout.splitlines()]


@pytest.mark.parametrize("linktype", [LINKTYPE_RAW, LINKTYPE_ETHERNET], ids=["rawip", "ethernet"])
def test_tshark_dissects_everything_we_produce(tmp_path, linktype):
    produced, esp_configs, plaintexts = production()
    pcap = tmp_path / "ours.pcap"
    write_pcap(pcap, [p for _, p in produced], linktype)
    # With the ESP keys, so the decrypted payloads are dissected (and checked) too.
    config_dir = tmp_path / "ws"
    config_dir.mkdir()
    rows = [row for cfg in esp_configs for row in esp_sa_rows(cfg)[0]]
    (config_dir / "esp_sa").write_text(uat_text(rows))
    (config_dir / "preferences").write_text(preferences_text())
    result = tshark(pcap, ["frame.protocols", "_ws.malformed", "_ws.expert.severity",
                           "_ws.expert.message", "esp.icv_good", "ip.flags.mf", "ipv6.fraghdr.more"],
                    config_dir=config_dir)
    assert len(result) == len(produced)
    decrypted = tshark_decrypted(pcap, config_dir=config_dir)
    assert len(decrypted) == len(produced)
    fragments_seen = checked = 0
    for (what, _), (protocols, malformed, severity, message, icv_good, mf, more), found, plaintext in zip(
            produced, result, decrypted, plaintexts):
        assert not malformed, f"{what}: {protocols}: {message}"
        severities = [int(s) for s in severity.split(",") if s]
        assert all(s < WARNING for s in severities), f"{what}: {message}"
        if mf == "1" or more == "1":
            fragments_seen += 1           # held by tshark's reassembly; the last one shows it all
            continue
        layers = protocols.split(":")
        if what.startswith("ah"):
            assert "ah" in layers, f"{what}: {protocols}"
            after = layers[layers.index("ah") + 1:]
            assert {"udp", "icmp", "icmpv6"} & set(after), f"{what}: {protocols}"
        else:
            assert "esp" in layers, f"{what}: {protocols}"
            if "dummy" not in what:
                after = layers[layers.index("esp") + 1:]
                assert {"udp", "icmp", "icmpv6"} & set(after), f"{what}: not decrypted: {protocols}"
                if "null" not in what:
                    assert icv_good == "1", f"{what}: ICV not good"
                assert len(found) == 1, f"{what}: {len(found)} decrypted data sources"
                assert_plaintext(found[0], *plaintext, what=what)
                checked += 1
        if "in ah" in what:
            assert layers.index("ah") < layers.index("esp")
    assert fragments_seen == 4
    assert checked == sum(p is not None for p in plaintexts) - 2     # fragments: the last one shows it


def test_tshark_reads_our_ah_fields(tmp_path):
    """Wireshark's ah.* fields carry what we wrote: next header, length, SPI, sequence, and
    the whole authentication data (IV, ICV and padding for GMAC over IPv6)."""
    cases = []
    for proposal, version, mode in [("sha256", 6, Mode.TRANSPORT), ("aes128gmac", 6, Mode.TUNNEL),
                                    ("sha384", 4, Mode.TRANSPORT), ("aescmac", 4, Mode.TUNNEL)]:
        sa = make_sa("ah", proposal, mode, version)
        for n in range(2):
            cases.append((sa, version, mode, sa.protect(inner_packets(version)[0], now=0.0)))
    pcap = tmp_path / "ah.pcap"
    write_pcap(pcap, [w for *_, w in cases])
    rows = tshark(pcap, ["ah.next_header", "ah.length", "ah.spi", "ah.sequence", "ah.icv"],
                  config_dir=tmp_path / "ws")
    for (sa, version, mode, wire), (nh, length, spi, seq, icv) in zip(cases, rows):
        pkt = scapy_all.IP(wire) if version == 4 else scapy_all.IPv6(wire)
        ah_at = len(wire) - len(bytes(pkt[scapy_all.AH]))
        ah_len = (wire[ah_at + 1] + 2) * 4
        assert int(nh) == wire[ah_at] and int(length) == wire[ah_at + 1]
        assert int(spi, 16) == sa.spi and int(seq) == int.from_bytes(wire[ah_at + 8:ah_at + 12], "big")
        assert bytes.fromhex(icv.replace(":", "")) == wire[ah_at + 12:ah_at + ah_len]


def _sa_file(path: Path, tables: list[dict]) -> Path:
    lines = []
    for t in tables:
        lines.append("[[sa]]")
        for k, v in t.items():
            lines.append(f"{k} = {v!r}".replace("'", '"') if not isinstance(v, dict) else
                         f'{k} = {{ local = "{v["local"]}", remote = "{v["remote"]}" }}')
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)       # it holds keys: readable by others, loading it would warn
    return path


def test_wireshark_keys_skips_ah_with_the_reason(tmp_path):
    ah = {"name": "ah-out", "spi": 4096, "direction": "out", "mode": "transport", "protocol": "ah",
          "proposal": "sha256", "integrity_key": "11" * 32}
    result = CliRunner().invoke(app, ["wireshark-keys", "-c", str(_sa_file(tmp_path / "ah.toml", [ah]))])
    assert result.exit_code == 1
    assert "is AH" in result.stderr and "cannot check AH ICVs" in result.stderr
    assert "no SA that Wireshark 4.0 can decrypt" in result.stderr


def test_esp_inside_ah_decrypts_from_the_esp_row(tmp_path):
    """An SA file with both SAs of a bundle: `wireshark-keys` writes the ESP row (with a
    warning about AH), and tshark decrypts the ESP behind AH with its ICV good."""
    ah_key, esp_key = os.urandom(32), os.urandom(20)
    tables = [
        {"name": "ah-out", "spi": 0x1111, "direction": "out", "mode": "tunnel", "protocol": "ah",
         "proposal": "sha256", "integrity_key": ah_key.hex(),
         "tunnel": {"local": "192.0.2.1", "remote": "192.0.2.2"}},
        {"name": "esp-out", "spi": 0x2222, "direction": "out", "mode": "transport",
         "proposal": "aes128gcm16", "key": esp_key.hex()},
    ]
    sa_file = _sa_file(tmp_path / "bundle.toml", tables)
    from ipsec_core.config import load_sa_file
    ah_cfg, esp_cfg = load_sa_file(sa_file)
    bundle = SaBundle(SecurityAssociation(ah_cfg, now=0.0), SecurityAssociation(esp_cfg, now=0.0))
    packets = inner_packets(4)
    pcap = tmp_path / "bundle.pcap"
    write_pcap(pcap, [bundle.protect(p, now=0.0) for p in packets])
    config_dir = tmp_path / "ws"
    result = CliRunner().invoke(app, ["wireshark-keys", "-c", str(sa_file), "--write-config",
                                      str(config_dir)])
    assert result.exit_code == 0, result.output
    assert "is AH" in result.stderr and '"0x00002222"' in result.stdout
    assert '"0x00001111"' not in result.stdout
    rows = tshark(pcap, ["frame.protocols", "esp.icv_good", "_ws.malformed"], config_dir=config_dir)
    assert [r[1] for r in rows] == ["1"] * len(packets)
    assert all(r[0].startswith("raw:ip:ah:ip:esp:") and not r[2] for r in rows)
    decrypted = tshark_decrypted(pcap, config_dir=config_dir)
    assert [len(found) for found in decrypted] == [1] * len(packets)
    for found, p in zip(decrypted, packets):
        assert_plaintext(found[0], *esp_plaintext(p, mode="transport"))

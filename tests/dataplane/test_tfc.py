"""Traffic flow confidentiality (RFC 4303 2.7) and dummy packets (RFC 4303 2.6).

- `tfc_padding = N` pads the inner packet of tunnel-mode ESP to N bytes (zeros, before the ESP
  trailer), checked by decrypting with `cryptography` alone; `tfc_padding = "mtu"` fills the
  SA's `mtu`; packets of different sizes look alike on the wire; the receiver cuts the padding
  at the inner IPv4 total length / IPv6 payload length.  Refused in transport mode and for AH.
- `sa.dummy()` sends next header 59 with random bytes; the receiver drops it silently: a
  counted drop ("dummy", `PacketDropped.silent`), the replay window updated (the same dummy
  again is a replay), no inner packet.
- Batches give the same bytes with TFC padding as one by one (the fast loop steps aside).
"""
from __future__ import annotations

import ipaddress

import pytest

pytest.importorskip("scapy")
from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: E402
from scapy.compat import raw  # noqa: E402
from scapy.layers.inet import IP, UDP  # noqa: E402
from scapy.layers.inet6 import IPv6  # noqa: E402
from scapy.packet import Raw  # noqa: E402

from ipsec_core.config import sa_from_dict  # noqa: E402
from ipsec_core.crypto.registry import get_registry  # noqa: E402
from ipsec_core.errors import ConfigError, DropReason, LocalError, PacketDropped  # noqa: E402
from ipsec_core.transforms.keywords import parse_ah, parse_esp  # noqa: E402
from ipsec_core.dataplane.sa import Direction, Mode, SaConfig, SecurityAssociation  # noqa: E402

REGISTRY = get_registry()
KEY = bytes(range(48))
ADDR = {4: ("203.0.113.1", "203.0.113.2"), 6: ("2001:db8:ffff::1", "2001:db8:ffff::2")}
SPI = 0x7FC00001


def pair(proposal: str = "aes128gcm16", *, outer: int = 4, mode: Mode = Mode.TUNNEL, **kw):
    prop = parse_esp(proposal)
    a, b = (ipaddress.ip_address(x) for x in ADDR[outer])
    common = dict(spi=SPI, mode=mode, proposal=prop, enc_key=KEY[:prop.enc_key_bytes] if prop.enc_key_bytes else b"",
                  integ_key=bytes(prop.integ_info.key_bytes) if prop.integ_info else b"", **kw)
    out = SecurityAssociation(SaConfig(name="o", direction=Direction.OUT, local=a, remote=b, **common),
                              registry=REGISTRY, now=0.0)
    inb = SecurityAssociation(SaConfig(name="i", direction=Direction.IN, local=b, remote=a, **common),
                              registry=REGISTRY, now=0.0)
    return out, inb


def v4(size: int) -> bytes:
    return raw(IP(src="192.0.2.10", dst="198.51.100.20") / UDP(sport=1, dport=2) / Raw(b"v" * size))


def v6(size: int) -> bytes:
    return raw(IPv6(src="2001:db8:a::10", dst="2001:db8:b::20") / UDP(sport=1, dport=2) / Raw(b"s" * size))


def decrypt(wire: bytes, outer: int = 4) -> bytes:
    """The ESP plaintext (payload, padding, pad length, next header) of an AES-GCM packet,
    decrypted here with cryptography only."""
    esp = wire[20 if outer == 4 else 40:]
    iv = esp[8:16]
    return AESGCM(KEY[:16]).decrypt(KEY[16:20] + iv, esp[16:], esp[:8])


@pytest.mark.parametrize("outer", [4, 6])
@pytest.mark.parametrize("inner", [v4, v6], ids=["inner-v4", "inner-v6"])
def test_tfc_padding_to_a_size(inner, outer):
    out, inb = pair(outer=outer, tfc_padding=600)
    sizes = set()
    for n in (0, 17, 200, 511):
        packet = inner(n)
        wire = out.protect(packet, now=0.0)
        sizes.add(len(wire))
        plaintext = decrypt(wire, outer)
        pad_len, nh = plaintext[-2], plaintext[-1]
        body = plaintext[:-2 - pad_len]
        assert len(body) == 600 and body[:len(packet)] == packet
        assert body[len(packet):] == bytes(600 - len(packet)), "TFC padding is zeros"
        assert nh == (4 if packet[0] >> 4 == 4 else 41)
        assert inb.unprotect(wire, now=0.0) == packet
    assert len(sizes) == 1, "every packet shorter than the TFC size looks the same"
    big = inner(1000)
    assert inb.unprotect(out.protect(big, now=0.0), now=0.0) == big and len(decrypt(out.protect(big, now=0.0), outer)) < 1100
    assert inb.stats.bytes == sum(len(inner(n)) for n in (0, 17, 200, 511)) + len(big)


@pytest.mark.parametrize("proposal", ["aes128gcm16", "aes256-sha256", "aes128ctr-sha1", "null-sha256"])
@pytest.mark.parametrize("outer", [4, 6])
def test_tfc_padding_to_the_mtu(proposal, outer):
    """`tfc_padding = "mtu"`: every packet that fits becomes exactly as long as the largest
    protected packet the mtu allows (within the cipher's block alignment)."""
    out, inb = pair(proposal, outer=outer, tfc_padding="mtu", mtu=1400)
    block = 16 if proposal.startswith("aes256-") else 4
    lengths = set()
    for packet in (v4(10), v6(300), v4(1000)):
        wire = out.protect(packet, now=0.0)
        lengths.add(len(wire))
        assert inb.unprotect(wire, now=0.0) == packet
    (length,) = lengths
    assert 1400 - block < length <= 1400


def test_dummy_packets_are_dropped_silently():
    out, inb = pair(tfc_padding=300)
    data = out.protect(v4(50), now=0.0)
    dummy = out.dummy(now=0.0)
    assert len(dummy) == len(data), "a dummy looks like the padded data packets"
    plaintext = decrypt(dummy)
    assert plaintext[-1] == 59 and len(plaintext[:-2 - plaintext[-2]]) == 300
    assert out.seq == 2 and out.stats.dummies == 1 and out.stats.packets == 1
    assert inb.unprotect(data, now=0.0) == v4(50)
    with pytest.raises(PacketDropped) as exc:
        inb.unprotect(dummy, now=0.0)
    assert exc.value.reason is DropReason.DUMMY and exc.value.silent
    assert inb.stats.drops == {"dummy": 1} and inb.stats.packets == 1
    assert inb.replay.top == 2, "the dummy's sequence number is recorded"
    with pytest.raises(PacketDropped) as exc:
        inb.unprotect(dummy, now=0.0)
    assert exc.value.reason is DropReason.REPLAY and not exc.value.silent
    # Sizes on request, and the batch path gives the same verdicts.
    more = [out.dummy(0, now=0.0), out.protect(v4(5), now=0.0), out.dummy(1000, now=0.0)]
    assert len(decrypt(more[2])) > 1000
    verdicts = inb.unprotect_batch(more, now=0.0)
    assert verdicts[1] == v4(5)
    assert [v.reason for v in (verdicts[0], verdicts[2])] == [DropReason.DUMMY, DropReason.DUMMY]


def test_dummy_without_tfc_and_over_udp_and_ipv6():
    out, inb = pair(outer=6, encap_ports=(4500, 4500))
    dummy = out.dummy(now=0.0)
    assert IPv6(dummy)[UDP].dport == 4500
    with pytest.raises(PacketDropped) as exc:
        inb.unprotect(dummy, now=0.0)
    assert exc.value.reason is DropReason.DUMMY


def test_dummy_refused_where_it_cannot_be():
    out = SecurityAssociation(SaConfig(name="t", spi=SPI, direction=Direction.OUT, mode=Mode.TRANSPORT,
                                       proposal=parse_esp("aes128gcm16"), enc_key=KEY[:20]), registry=REGISTRY, now=0.0)
    with pytest.raises(LocalError, match="addresses"):
        out.dummy(now=0.0)
    ah = SecurityAssociation(SaConfig(name="a", spi=SPI, direction=Direction.OUT, mode=Mode.TRANSPORT,
                                      proposal=parse_ah("sha256"), integ_key=bytes(32), protocol="ah"),
                             registry=REGISTRY, now=0.0)
    with pytest.raises(LocalError, match="ESP feature"):
        ah.dummy(now=0.0)


def test_batches_with_tfc_equal_one_by_one():
    out1, in1 = pair(tfc_padding=256)
    out2, in2 = pair(tfc_padding=256)
    out2.engine.ident = out1.engine.ident          # the outer IPv4 identification, for equal bytes
    packets = [v4(n) for n in range(0, 400, 37)] + [v6(10)]
    ones = [out1.protect(p, now=0.0) for p in packets]
    assert out2.protect_batch(packets, now=0.0) == ones
    assert out1.engine._fast_protect is None
    assert in2.unprotect_batch(ones, now=0.0) == packets
    assert [in1.unprotect(w, now=0.0) for w in ones] == packets
    assert in1.state() == in2.state()


@pytest.mark.parametrize(("change", "message"), [
    ({"mode": "transport"}, "needs tunnel mode"),
    ({"tfc_padding": "mtu"}, '"mtu" needs the mtu key'),
    ({"tfc_padding": -1}, "0..65535"),
    ({"tfc_padding": True}, "expected bytes"),
    ({"tfc_padding": "lots"}, "expected bytes"),
])
def test_tfc_config_errors(change, message):
    raw_sa = {"name": "x", "spi": 4096, "direction": "out", "proposal": "aes128gcm16",
              "key": "00" * 20, "tunnel": {"local": "192.0.2.1", "remote": "192.0.2.2"},
              "tfc_padding": 500}
    raw_sa.update(change)
    with pytest.raises(ConfigError, match=message) as exc:
        sa_from_dict(raw_sa, file="tfc.toml")
    assert str(exc.value).startswith("tfc.toml: sa[x].tfc_padding: ")


def test_pcap_report_calls_dummies_silent(tmp_path):
    """`ipsec pcap unprotect` counts dummy packets like any drop but says they are expected."""
    from typer.testing import CliRunner

    from ipsec_core.cli import app
    from ipsec_core.vpn.pcap import LINKTYPE_RAW, PcapHeader, PcapRecord, PcapWriter

    out, _ = pair()
    wires = [out.protect(v4(10), now=0.0), out.dummy(40, now=0.0), out.protect(v4(20), now=0.0)]
    with open(tmp_path / "esp.pcap", "wb") as f:
        w = PcapWriter(f, PcapHeader(linktype=LINKTYPE_RAW, snaplen=65535))
        for i, p in enumerate(wires):
            w.write(PcapRecord(1_700_000_000 + i, 0, p))
    (tmp_path / "sa.toml").write_text(
        f'[[sa]]\nname = "i"\nspi = {SPI}\ndirection = "in"\nproposal = "aes128gcm16"\n'
        f'key = "{KEY[:20].hex()}"\ntunnel = {{ local = "203.0.113.2", remote = "203.0.113.1" }}\n')
    result = CliRunner().invoke(app, ["pcap", "unprotect", "-c", str(tmp_path / "sa.toml"), "-s", "i",
                                      str(tmp_path / "esp.pcap"), str(tmp_path / "out.pcap")])
    assert result.exit_code == 0, result.output
    assert "2 decrypted" in result.stdout and "dropped dummy: 1 (silent" in result.stdout

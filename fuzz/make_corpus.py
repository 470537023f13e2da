"""Write the seed corpora under fuzz/corpus/<target>/ from real captures and packets the project
produces: examples/clear.pcap, the strongSwan 5.9.8 exchanges of tests/ike/data, the example SA
and connection files, and ESP / AH packets of every fuzzed SA variant.

`python3 -m fuzz.make_corpus` rewrites the seed-* files (deterministic but for the random IVs
of AES-CBC and the IKE nonces); files a fuzzer added under other names are kept.
"""
from __future__ import annotations

import ipaddress
import json
import struct
from pathlib import Path

from ipsec_core.vpn.pcap import PcapReader, ip_from_frame

from fuzz import _sa
from fuzz._harness import write_corpus

ROOT = Path(__file__).resolve().parent.parent
IKE_DATA = sorted((ROOT / "tests" / "ike" / "data").glob("strongswan-*.json"))


def clear_packets() -> list[bytes]:
    with open(ROOT / "examples" / "clear.pcap", "rb") as f:
        reader = PcapReader(f)
        return [p for rec in reader if (p := ip_from_frame(reader.header.linktype, rec.data))]


def strongswan() -> list[dict]:
    return [json.loads(p.read_text()) for p in IKE_DATA]


def ipv6_with_extensions() -> list[bytes]:
    """IPv6 packets with hop-by-hop options, a segment routing header and destination
    options: the headers AH's ICV treats specially."""
    src, dst = (ipaddress.ip_address(a).packed for a in _sa.ADDR[6])
    udp = _sa.udp_payload(3)
    srh = struct.pack("!BBBBBBH", 60, 4, 4, 1, 1, 0, 0) + dst + ipaddress.ip_address("2001:db8::99").packed
    dstopts = bytes((17, 0, 0x1E, 4, 0, 0, 0, 0))          # a mutable option (bit 0x20 clear: 0x1E)
    hbh = bytes((43, 0, 0x3E, 4, 1, 2, 3, 4))              # mutable option type 0x3E
    body = hbh + srh + dstopts + udp
    head = struct.pack("!IHBB", 6 << 28, len(body), 0, 64) + src + dst
    plain_srh = srh[:0] + bytes((17,)) + srh[1:]
    return [head + body,
            struct.pack("!IHBB", 6 << 28, len(plain_srh + udp), 43, 64) + src + dst + plain_srh + udp]


def esp_seeds() -> list[bytes]:
    out = []
    clear = clear_packets()
    for i, v in enumerate(_sa.ESP_VARIANTS):
        p = _sa.pair(v)
        idx = i.to_bytes(1, "big")
        p.reset(0, 0)
        out.append(idx + b"\x00\x00\x00" + p.packet(1))                 # raw: a valid packet
        out.append(idx + b"\x01\x04\x00" + bytes((0, 30, 0x55, 0, 9, 1)))  # damaged, at the top edge
        if i % 4 == 0:
            out.append(idx + b"\x02\x00\x00" + clear[i % len(clear)])    # round trip
            out.append(idx + b"\x03\x01\x00" + b"\x02" + b"\x00\x20" + b"\x04" + p.inner)  # authentic
            out.append(idx + b"\x04\x01\x00" + bytes((40,)) + bytes(range(0, 240)))         # batch
    return out


def ah_seeds() -> list[bytes]:
    out = []
    v6 = ipv6_with_extensions()
    for i, v in enumerate(_sa.AH_VARIANTS):
        p = _sa.pair(v)
        idx = i.to_bytes(1, "big")
        p.reset(0, 0)
        out.append(idx + b"\x00\x00\x00" + p.packet(1))
        out.append(idx + b"\x01\x04\x00" + bytes((0, 30, 0x55, 0, 9, 1)))
        if not v.tunnel and v.version == 6:
            for packet in v6:
                p.reset(0, 0)
                try:
                    out.append(idx + b"\x00\x00\x00" + p.packet(1, packet))
                except Exception:               # noqa: BLE001 - an inner this SA refuses
                    pass
                out.append(idx + b"\x02\x00\x00" + packet)
        if i % 4 == 0:
            out.append(idx + b"\x04\x01\x00" + bytes((40,)) + bytes(range(0, 240)))
    return out


def wire_seeds() -> list[bytes]:
    packets = clear_packets() + ipv6_with_extensions()
    for v in (_sa.ESP_VARIANTS[0], _sa.ESP_VARIANTS[2], _sa.AH_VARIANTS[2], _sa.AH_VARIANTS[6]):
        p = _sa.pair(v)
        p.reset(0, 0)
        packets.append(p.packet(1))
    return [bytes((i % 3,)) + pkt for i, pkt in enumerate(packets)]


def fragment_seeds() -> list[bytes]:
    out = []
    for version_bit in (0, 2):
        # every fragment of one datagram, in order and reversed, then a duplicate and an overlap
        steps = b"".join(bytes((version_bit, 1, 0x05, 0xDC, 0, k)) for k in range(6))
        out.append(steps)
        out.append(b"".join(bytes((version_bit, 1, 0x05, 0xDC, 0, 5 - k)) for k in range(6)))
        out.append(steps + bytes((version_bit | 4, 1, 0x05, 0xDC, 0, 1, 0, 50, 0x33)))
        out.append(steps + bytes((version_bit | 0xF0, 2, 0x01, 0x00, 0, 0)))
    for pkt in clear_packets():
        out.append(bytes((1, len(pkt))) + pkt)
    return out


def pcap_seeds() -> list[bytes]:
    return [(ROOT / "examples" / "clear.pcap").read_bytes()]


def sa_config_seeds() -> list[bytes]:
    text = (ROOT / "examples" / "site-to-site.toml").read_bytes()
    return [b"\x00" + text] + [bytes((1, i, i * 7 % 256, i * 13 % 256, 3, 200, i)) for i in range(16)]


def connections_seeds() -> list[bytes]:
    folder = ROOT / "examples" / "connections"
    out = [b"\x00" + (folder / n).read_bytes() for n in ("a.toml", "b.toml")]
    return out + [bytes((1, i, i * 5 % 256, i * 11 % 256, 2, 7, i)) for i in range(16)]


def ike_payload_seeds() -> list[bytes]:
    out = []
    for capture in strongswan():
        for d in capture["datagrams"]:
            out.append(b"\x00" + bytes.fromhex(d["hex"]))
    return out


def ike_endpoint_seeds() -> list[bytes]:
    out = []
    datagrams = [bytes.fromhex(d["hex"]) for c in strongswan() for d in c["datagrams"]][:8]
    for state in range(6):
        for suite in range(3):
            out.append(bytes((state, suite, 1, 0, 40, 0x11)))
            out.append(bytes((state, suite, 2, 1, 0, 0x20, 1, 41)) + bytes(40))
            out.append(bytes((state, suite, 3, 0, 0, 41)) + bytes((0, 0, 0, 8, 0, 0, 0, 0)))
        out.append(bytes((state, 0, 0)) + datagrams[state % len(datagrams)])
    return out


TARGETS = {
    "esp_unprotect": esp_seeds, "ah_unprotect": ah_seeds, "wire_ip": wire_seeds,
    "fragments": fragment_seeds, "pcap_reader": pcap_seeds, "sa_config": sa_config_seeds,
    "connections_config": connections_seeds, "ike_payloads": ike_payload_seeds,
    "ike_endpoint": ike_endpoint_seeds,
}


if __name__ == "__main__":
    for name, make in TARGETS.items():
        print(f"{name}: {write_corpus(name, make())} seeds")

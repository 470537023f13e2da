"""ipsec_core.vpn.pcap: classic pcap reading/writing and the link layer around IP packets.

scapy is the oracle: files it writes are read back, and files written here are read by it.
"""
from __future__ import annotations

import io
import struct

import pytest

from ipsec_core.errors import IpsecError
from ipsec_core.vpn.pcap import (DEFAULT_SNAPLEN, LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL,
                                LINKTYPE_RAW, PcapError, PcapHeader, PcapReader, PcapRecord, PcapWriter,
                                frame_with_ip, ip_from_frame, output_header)

scapy_all = pytest.importorskip("scapy.all", reason="scapy is the test oracle (pip install scapy)")
Ether, Dot1Q, IP, IPv6, ICMP, UDP, ARP, Raw = (scapy_all.Ether, scapy_all.Dot1Q, scapy_all.IP,
                                               scapy_all.IPv6, scapy_all.ICMP, scapy_all.UDP,
                                               scapy_all.ARP, scapy_all.Raw)

MAC_A, MAC_B = "02:00:00:00:00:0a", "02:00:00:00:00:0b"


def ipv4_packet(n: int = 0) -> bytes:
    return bytes(IP(src="198.51.100.1", dst="203.0.113.1", id=n) / UDP(sport=1000 + n, dport=9)
                 / Raw(b"payload %d" % n))


def ipv6_packet(n: int = 0) -> bytes:
    return bytes(IPv6(src="2001:db8:1::1", dst="2001:db8:2::1") / UDP(sport=1000 + n, dport=9)
                 / Raw(b"v6 payload %d" % n))


def write_file(path, header: PcapHeader, records) -> None:
    with open(path, "wb") as f:
        writer = PcapWriter(f, header)
        for rec in records:
            writer.write(rec)


def read_file(path) -> tuple[PcapHeader, list[PcapRecord]]:
    with open(path, "rb") as f:
        reader = PcapReader(f)
        return reader.header, list(reader)


# --------------------------------------------------------------------------------------------
# round trips
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("byteorder", ["<", ">"], ids=["little-endian", "big-endian"])
@pytest.mark.parametrize("nanoseconds", [False, True], ids=["usec", "nsec"])
@pytest.mark.parametrize("linktype", [LINKTYPE_ETHERNET, LINKTYPE_RAW, LINKTYPE_LINUX_SLL],
                         ids=["ethernet", "raw", "sll"])
def test_round_trip(tmp_path, byteorder, nanoseconds, linktype):
    header = PcapHeader(linktype=linktype, snaplen=65535, nanoseconds=nanoseconds,
                        byteorder=byteorder, thiszone=-3600, sigfigs=0)
    frac = 999_999_999 if nanoseconds else 999_999
    records = [PcapRecord(1_700_000_000 + i, frac - i, bytes([i]) * (20 + i)) for i in range(5)]
    records.append(PcapRecord(1_700_000_100, 0, b"cut", orig_len=1500))   # a snapped capture
    path = tmp_path / "rt.pcap"
    write_file(path, header, records)
    got_header, got = read_file(path)
    assert got_header == header
    assert got == records
    assert got[-1].orig_len == 1500
    magic = path.read_bytes()[:4]
    expected = 0xA1B23C4D if nanoseconds else 0xA1B2C3D4
    assert struct.unpack(byteorder + "I", magic)[0] == expected


def test_timestamp_units():
    us = PcapHeader(linktype=LINKTYPE_RAW)
    ns = PcapHeader(linktype=LINKTYPE_RAW, nanoseconds=True)
    assert PcapRecord(10, 500_000, b"").timestamp(us) == pytest.approx(10.5)
    assert PcapRecord(10, 500_000_000, b"").timestamp(ns) == pytest.approx(10.5)


def test_with_data_keeps_timestamp():
    rec = PcapRecord(5, 6, b"abc", orig_len=100)
    new = rec.with_data(b"xyzw")
    assert (new.ts_sec, new.ts_frac, new.data, new.orig_len) == (5, 6, b"xyzw", 4)


def test_reads_scapy_ethernet_file(tmp_path):
    packets = [Ether(src=MAC_A, dst=MAC_B) / IP(ipv4_packet(i)) for i in range(3)]
    packets.append(Ether(src=MAC_A, dst=MAC_B) / IPv6(ipv6_packet(9)))
    for i, p in enumerate(packets):
        p.time = 1_700_000_000 + i + 0.25
    path = tmp_path / "scapy.pcap"
    scapy_all.wrpcap(str(path), packets)
    header, records = read_file(path)
    assert header.linktype == LINKTYPE_ETHERNET and not header.nanoseconds
    assert [r.data for r in records] == [bytes(p) for p in packets]
    assert [r.timestamp(header) for r in records] == pytest.approx([float(p.time) for p in packets])
    assert ip_from_frame(header.linktype, records[0].data) == ipv4_packet(0)
    assert ip_from_frame(header.linktype, records[3].data) == ipv6_packet(9)


def test_reads_scapy_raw_ip_nanosecond_file(tmp_path):
    packets = [IP(ipv4_packet(i)) for i in range(3)]
    for i, p in enumerate(packets):
        p.time = 1_700_000_000 + i
    path = tmp_path / "raw.pcap"
    scapy_all.wrpcap(str(path), packets, linktype=LINKTYPE_RAW, nano=True)
    header, records = read_file(path)
    assert header.linktype == LINKTYPE_RAW and header.nanoseconds
    got = [ip_from_frame(LINKTYPE_RAW, r.data) for r in records]
    assert got == [ipv4_packet(i) for i in range(3)]


@pytest.mark.parametrize("byteorder", ["<", ">"])
def test_scapy_reads_our_file(tmp_path, byteorder):
    frames = [bytes(Ether(src=MAC_A, dst=MAC_B) / IP(ipv4_packet(i))) for i in range(3)]
    path = tmp_path / "ours.pcap"
    write_file(path, PcapHeader(linktype=LINKTYPE_ETHERNET, byteorder=byteorder),
               [PcapRecord(1_700_000_000, i * 1000, f) for i, f in enumerate(frames)])
    got = scapy_all.rdpcap(str(path))
    assert [bytes(p) for p in got] == frames
    assert got[2].haslayer(UDP) and got[2][UDP].sport == 1002


def test_output_header_keeps_input_format():
    big = PcapHeader(linktype=LINKTYPE_RAW, snaplen=65535, nanoseconds=True, byteorder=">")
    assert output_header(big) == big
    cut = PcapHeader(linktype=LINKTYPE_ETHERNET, snaplen=96)
    assert output_header(cut).snaplen == DEFAULT_SNAPLEN
    assert output_header(cut).linktype == LINKTYPE_ETHERNET


# --------------------------------------------------------------------------------------------
# link layer
# --------------------------------------------------------------------------------------------
def test_ethernet_ip_in_and_out():
    frame = bytes(Ether(src=MAC_A, dst=MAC_B) / IP(ipv4_packet(1)))
    assert ip_from_frame(LINKTYPE_ETHERNET, frame) == ipv4_packet(1)
    # A new IPv6 packet: MACs kept, ethertype changed to 0x86DD.
    new = frame_with_ip(LINKTYPE_ETHERNET, frame, ipv6_packet(2))
    parsed = Ether(new)
    assert (parsed.src, parsed.dst, parsed.type) == (MAC_A, MAC_B, 0x86DD)
    assert bytes(parsed[IPv6]) == ipv6_packet(2)
    back = frame_with_ip(LINKTYPE_ETHERNET, new, ipv4_packet(1))
    assert back == frame


def test_ethernet_vlan_tag_kept():
    frame = bytes(Ether(src=MAC_A, dst=MAC_B) / Dot1Q(vlan=42) / IPv6(ipv6_packet(3)))
    assert ip_from_frame(LINKTYPE_ETHERNET, frame) == ipv6_packet(3)
    new = Ether(frame_with_ip(LINKTYPE_ETHERNET, frame, ipv4_packet(4)))
    assert new[Dot1Q].vlan == 42 and new[Dot1Q].type == 0x0800
    assert bytes(new[IP]) == ipv4_packet(4)


def test_ethernet_padding_is_not_payload():
    small = bytes(IP(src="192.0.2.1", dst="192.0.2.2") / ICMP())       # 28 bytes
    frame = bytes(Ether(src=MAC_A, dst=MAC_B) / IP(small)) + b"\0" * 18  # padded to 60
    assert len(frame) == 60
    assert ip_from_frame(LINKTYPE_ETHERNET, frame) == small


def test_non_ip_frames_give_none():
    arp = bytes(Ether(src=MAC_A, dst="ff:ff:ff:ff:ff:ff") / ARP(psrc="192.0.2.1", pdst="192.0.2.2"))
    assert ip_from_frame(LINKTYPE_ETHERNET, arp) is None
    assert ip_from_frame(LINKTYPE_ETHERNET, b"\x02" * 10) is None          # runt
    assert ip_from_frame(LINKTYPE_RAW, b"") is None
    assert ip_from_frame(LINKTYPE_RAW, b"\x10garbage") is None
    with pytest.raises(IpsecError):
        frame_with_ip(LINKTYPE_ETHERNET, arp, ipv4_packet(0))


def test_raw_and_sll():
    assert ip_from_frame(LINKTYPE_RAW, ipv6_packet(1)) == ipv6_packet(1)
    assert frame_with_ip(LINKTYPE_RAW, ipv6_packet(1), ipv4_packet(2)) == ipv4_packet(2)
    # Linux cooked capture v1: packet type, ARPHRD, address length, 8 address bytes, protocol.
    sll = struct.pack("!HHH8sH", 0, 1, 6, bytes.fromhex("02000000000a0000"), 0x0800)
    frame = sll + ipv4_packet(5)
    assert ip_from_frame(LINKTYPE_LINUX_SLL, frame) == ipv4_packet(5)
    new = frame_with_ip(LINKTYPE_LINUX_SLL, frame, ipv6_packet(6))
    assert new[:14] == sll[:14] and new[14:16] == b"\x86\xdd" and new[16:] == ipv6_packet(6)


# --------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------
def _valid_file_bytes(linktype: int = LINKTYPE_RAW) -> bytes:
    buf = io.BytesIO()
    writer = PcapWriter(buf, PcapHeader(linktype=linktype))
    writer.write(PcapRecord(1, 2, ipv4_packet(0)))
    writer.write(PcapRecord(3, 4, ipv4_packet(1)))
    return buf.getvalue()


@pytest.mark.parametrize("content, message", [
    (b"", "empty file"),
    (b"\xd4\xc3", "not a pcap file"),
    (b"GET / HTTP/1.1\r\n" + b"x" * 20, "not a pcap file (magic 47455420"),
    (b"\x0a\x0d\x0d\x0a" + b"\0" * 28, "pcapng"),
    (_valid_file_bytes()[:20], "truncated file header"),
    (_valid_file_bytes()[:24 + 10], "record 1: truncated record header"),
    (_valid_file_bytes()[:-5], "record 2: truncated"),
    (_valid_file_bytes()[:4] + struct.pack("<H", 3) + _valid_file_bytes()[6:], "version 3"),
], ids=["empty", "short", "bad-magic", "pcapng", "short-header", "short-record-header",
        "short-record", "version"])
def test_errors_name_the_file(tmp_path, content, message):
    path = tmp_path / "broken.pcap"
    path.write_bytes(content)
    with pytest.raises(PcapError) as info:
        read_file(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)
    assert isinstance(info.value, IpsecError)


def test_unsupported_linktype(tmp_path):
    path = tmp_path / "wifi.pcap"
    path.write_bytes(_valid_file_bytes(linktype=105))    # IEEE 802.11
    with open(path, "rb") as f:
        assert PcapReader(f).header.linktype == 105      # readable as such...
    with open(path, "rb") as f, pytest.raises(PcapError, match="link type 105 is not supported"):
        PcapReader(f, require_supported=True)            # ...but refused by the tools
    with pytest.raises(PcapError, match="link type 105"):
        ip_from_frame(105, b"\0" * 40)


def test_corrupt_record_length_is_refused(tmp_path):
    data = bytearray(_valid_file_bytes())
    struct.pack_into("<I", data, 24 + 8, 0x7FFFFFFF)     # incl_len of record 1
    path = tmp_path / "huge.pcap"
    path.write_bytes(bytes(data))
    with pytest.raises(PcapError, match="record 1: claims 2147483647"):
        read_file(path)


def test_linktype_fcs_bits_are_ignored(tmp_path):
    data = bytearray(_valid_file_bytes(linktype=LINKTYPE_ETHERNET))
    struct.pack_into("<I", data, 20, LINKTYPE_ETHERNET | 0x10000000)
    path = tmp_path / "fcs.pcap"
    path.write_bytes(bytes(data))
    assert read_file(path)[0].linktype == LINKTYPE_ETHERNET

"""Fuzz target: the classic pcap reader (`vpn/pcap.py`): file header (both byte orders,
micro- and nanosecond magic, pcapng refused), records, and the IP packet of each frame (raw
IP, Ethernet with or without a VLAN tag, Linux cooked capture), then writing the records back.

The input is the file.  Allowed: records, or PcapError (a LocalError naming the file) for a
file that is not a readable classic pcap.  Checked: every frame that carries IP gives an IP
packet inside the frame; putting that packet back gives a frame of the same link type from
which the same packet comes out; a written file reads back as the same records.
"""
from __future__ import annotations

import io

from ipsec_core.vpn.pcap import (SUPPORTED_LINKTYPES, PcapError, PcapReader, PcapWriter,
                                 frame_with_ip, ip_from_frame, output_header)

from fuzz._harness import main

TARGET = "pcap_reader"
MAX_RECORDS = 256


def test_one_input(data: bytes) -> None:
    records = []
    try:
        reader = PcapReader(io.BytesIO(data), name="fuzz.pcap")
        for record in reader:
            records.append(record)
            if len(records) >= MAX_RECORDS:
                break
    except PcapError as exc:
        assert "fuzz.pcap" in str(exc), f"PcapError without the file name: {exc}"
        if not records:
            return
    header = reader.header
    linktype = header.linktype
    for record in records:
        assert len(record.data) <= len(data)
        if linktype not in SUPPORTED_LINKTYPES:
            continue
        packet = ip_from_frame(linktype, record.data)
        if packet is None:
            continue
        assert packet and packet[0] >> 4 in (4, 6)
        frame = frame_with_ip(linktype, record.data, packet)
        assert ip_from_frame(linktype, frame) == packet, "frame_with_ip / ip_from_frame disagree"
    out = io.BytesIO()
    writer = PcapWriter(out, output_header(header))
    for record in records:
        writer.write(record)
    again = list(PcapReader(io.BytesIO(out.getvalue()), name="again.pcap"))
    assert [r.data for r in again] == [r.data for r in records], "write / read changed records"


if __name__ == "__main__":
    main(TARGET, test_one_input)

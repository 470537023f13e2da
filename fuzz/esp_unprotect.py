"""Fuzz target: ESP unprotect, one by one and in batches, every proposal family, tunnel and
transport, IPv4 and IPv6 outer headers, ESN, UDP encapsulation (fuzz/_sa.py lists them).

Input layout: byte 0 picks the variant, byte 1 the operation, byte 2 the window edge, byte 3
the window bitmap; the rest is the operation's material:
  0  raw bytes as a received packet;
  1  a valid packet with a few bytes changed (header fields, SPI, sequence number, ICV);
  2  any bytes as the inner packet (lengths made true): protect, then unprotect must give it back
     (in transport mode an upper protocol of 59, No Next Header, arrives as a dummy packet);
  3  an authentic packet (good ICV) around any plaintext and next header: what the inner-packet
     checks see after decryption;
  4  a batch of up to 80 packets mixing valid ones (duplicates, reordering), damaged ones,
     authentic junk and raw bytes: `unprotect_batch` (or, by the next byte, `unprotect_packets`
     on a PacketBatch) must give exactly the verdicts and the end state of the same packets
     unprotected one by one on a twin SA.
Allowed: the inner packet, or PacketDropped with a DropReason.  A drop of anything but an
authentic packet leaves the SA as it was; after every input the next valid packet is accepted.
"""
from __future__ import annotations

from ipsec_core.dataplane.batch import PacketBatch
from ipsec_core.errors import DropReason, LocalError, PacketDropped

from fuzz._harness import Reader, main
from fuzz._sa import ESP_VARIANTS, NOW, Pair, fix_lengths, pair, quiet_state

TARGET = "esp_unprotect"
#: Drops of authentic packets, which may move the window (RFC 4303 2.6; RFC 4301 5.2).
AUTHENTIC_DROPS = frozenset({DropReason.DUMMY, DropReason.POLICY})


def unprotect_checked(p: Pair, packet: bytes) -> None:
    sa = p.inb
    before = quiet_state(sa)
    drops_before = sum(sa.stats.drops.values())
    try:
        sa.unprotect(packet, now=NOW)
    except PacketDropped as drop:
        assert isinstance(drop.reason, DropReason), drop
        assert sum(sa.stats.drops.values()) == drops_before + 1, "drop not counted once"
        if drop.reason not in AUTHENTIC_DROPS:
            assert quiet_state(sa) == before, f"{p.variant.label}: {drop} changed the SA"


def damaged(p: Pair, r: Reader, seq: int) -> bytes:
    buf = bytearray(p.packet(seq))
    for _ in range(1 + r.int() % 4):
        at = r.int(2) % len(buf)
        buf[at] ^= r.int() or 1
    cut = r.int()
    if cut & 0x80:
        del buf[len(buf) - (cut & 0x3F):]
    return bytes(buf)


def one_batch_packet(p: Pair, r: Reader, top: int) -> bytes:
    kind = r.int() % 5
    seq = min(max(top + r.int() % 48 - 24, 1), p.max_seq)
    if kind <= 1:
        return p.packet(seq)
    if kind == 2:
        return damaged(p, r, seq)
    if kind == 3 and p.variant.protocol == "esp":
        return p.sealed(seq, r.bytes(r.int() % 64), r.int())
    return r.bytes(r.int())


def batch(p: Pair, r: Reader, top: int) -> None:
    as_packet_batch = r.int()
    packets = [one_batch_packet(p, r, top) for _ in range(1 + r.int() % 80)]
    want = []
    if not (as_packet_batch & 3 == 3 and p.variant.tunnel and p.variant.encap):
        for packet in packets:
            try:
                want.append(p.twin.unprotect(packet, now=NOW))
            except PacketDropped as drop:
                want.append(drop)
    if as_packet_batch & 1 and hasattr(p.inb, "unprotect_packets"):
        esp_only = bool(as_packet_batch & 2) and p.variant.tunnel and p.variant.encap
        if esp_only:
            # as a UDP socket hands them over: the ESP part alone; the twin gets the outer
            # header the SA itself would rebuild
            strip = (20 if p.variant.version == 4 else 40) + 8
            esp = [pk[strip:] for pk in packets if len(pk) > strip]
            want = []
            for e in esp:
                try:
                    want.append(p.twin_unprotect_esp(e))
                except PacketDropped as drop:
                    want.append(drop)
            packets = esp
        inners, drops = p.inb.unprotect_packets(PacketBatch.from_packets(packets), now=NOW,
                                                esp_only=esp_only)
        assert inners.packets() == [w for w in want if not isinstance(w, PacketDropped)], \
            f"{p.variant.label}: PacketBatch and one by one differ"
        assert [d.reason for d in drops] == [w.reason for w in want if isinstance(w, PacketDropped)]
        assert p.inb.state() == p.twin.state(), f"{p.variant.label}: PacketBatch state differs"
        return
    got = p.inb.unprotect_batch(packets, now=NOW)
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        if isinstance(w, PacketDropped):
            assert isinstance(g, PacketDropped) and g.reason is w.reason, \
                f"{p.variant.label} packet {i}: batch {g!r}, one by one {w!r}"
        else:
            assert g == w, f"{p.variant.label} packet {i}: batch and one by one differ"
    assert p.inb.state() == p.twin.state(), f"{p.variant.label}: batch state differs"


def test_one_input(data: bytes) -> None:
    r = Reader(data)
    p = pair(r.pick(ESP_VARIANTS))
    op = r.int() % 5
    top = p.reset(r.int(), r.int(8))
    if op == 0:
        unprotect_checked(p, r.rest())
    elif op == 1:
        unprotect_checked(p, damaged(p, r, top + 1 + r.int() % 3))
    elif op == 2:
        inner = fix_lengths(r.rest())
        if inner is None:
            return
        try:
            wire = p.packet(top + 1, inner)
        except (LocalError, PacketDropped):
            return                  # not a packet this SA can send: refused on our side
        try:
            got = p.inb.unprotect(wire, now=NOW)
        except PacketDropped as drop:
            # Transport mode copies the inner packet's protocol into the ESP next header, and
            # 59 there marks a dummy packet the receiver discards (RFC 4303 2.6).
            assert not p.variant.tunnel and drop.reason is DropReason.DUMMY, \
                f"{p.variant.label}: round trip dropped: {drop}"
        else:
            assert got == inner, f"{p.variant.label}: round trip changed the packet"
    elif op == 3:
        seq = min(max(top + r.int() % 8 - 2, 1), p.max_seq)
        unprotect_checked(p, p.sealed(seq, r.bytes(r.int(2) % 1500), r.int()))
    else:
        batch(p, r, top)
    p.probe()


if __name__ == "__main__":
    main(TARGET, test_one_input)

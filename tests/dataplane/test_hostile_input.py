"""Hostile input that must end in a counted drop or a config error, never another exception:
a forged AH packet over IPv6 with a short segment routing header, a late packet on an ESN SA
whose sequence numbers near 2^64, and SA files with wrong-typed values.  After each drop the
SA still accepts a valid packet."""
from __future__ import annotations

import ipaddress
import struct

import pytest

from ipsec_core.config import load_sa_file
from ipsec_core.crypto.registry import get_registry
from ipsec_core.errors import ConfigError, DropReason, PacketDropped
from ipsec_core.transforms.keywords import parse_ah, parse_esp
from ipsec_core.dataplane.sa import Direction, Mode, SaConfig, SecurityAssociation

SPI = 0x1234
SRC6, DST6 = "2001:db8::1", "2001:db8::2"


def _ah_pair(**kw):
    def make(direction):
        cfg = SaConfig(name=direction.value, spi=SPI, direction=direction, mode=Mode.TRANSPORT,
                       proposal=parse_ah("sha256"), integ_key=bytes(range(32)), protocol="ah", **kw)
        return SecurityAssociation(cfg, registry=get_registry(), now=0.0)
    return make(Direction.OUT), make(Direction.IN)


def _ipv6(payload: bytes, nh: int) -> bytes:
    return (struct.pack("!IHBB", 6 << 28, len(payload), nh, 64)
            + ipaddress.ip_address(SRC6).packed + ipaddress.ip_address(DST6).packed + payload)


def _udp() -> bytes:
    return struct.pack("!HHHH", 1000, 2000, 8 + 12, 0) + b"hello there!"


def _srh(*, hdr_len: int, segments_left: int, last_entry: int, segments: list[str],
         nh: int) -> bytes:
    body = b"".join(ipaddress.ip_address(s).packed for s in segments)
    head = struct.pack("!BBBBBBH", nh, hdr_len, 4, segments_left, last_entry, 0, 0)
    return head + body


@pytest.mark.parametrize(("hdr_len", "left", "last", "segments"), [
    (0, 1, 0, []),                          # no room for any segment
    (0, 1, 5, []),
    (2, 2, 0, [DST6]),                      # segments left past last entry + 1
    (2, 1, 3, [DST6]),                      # last entry past the list
], ids=["len0-left1", "len0-last5", "left-past-last", "last-past-list"])
def test_forged_ah_with_a_short_segment_routing_header_is_dropped(hdr_len, left, last, segments):
    out, inb = _ah_pair()
    ah = struct.pack("!BBHII", 17, 4, 0, SPI, 1) + bytes(16)
    packet = _ipv6(_srh(hdr_len=hdr_len, segments_left=left, last_entry=last,
                        segments=segments, nh=51) + ah + _udp(), nh=43)
    with pytest.raises(PacketDropped) as exc:
        inb.unprotect(packet, now=0.0)
    assert exc.value.reason is DropReason.MALFORMED
    assert inb.stats.drops["malformed"] == 1
    assert inb.replay.top == 0
    inner = _ipv6(_udp(), nh=17)
    assert inb.unprotect(out.protect(inner, now=0.0), now=0.0) == inner


def test_ah_over_a_valid_segment_routing_header_verifies():
    """Both ends compute the ICV over the destination as it is at the end of the route
    (segment list entry 0)."""
    out, inb = _ah_pair()
    srh = _srh(hdr_len=4, segments_left=1, last_entry=1, segments=[DST6, "2001:db8::99"], nh=17)
    inner = _ipv6(srh + _udp(), nh=43)
    wire = out.protect(inner, now=0.0)
    assert inb.unprotect(wire, now=0.0) == inner


def _esn_pair():
    def make(direction):
        cfg = SaConfig(name=direction.value, spi=SPI, direction=direction, mode=Mode.TUNNEL,
                       proposal=parse_esp("aes128gcm16-esn"), enc_key=bytes(range(20)),
                       local=ipaddress.ip_address("192.0.2.1"),
                       remote=ipaddress.ip_address("192.0.2.2"), replay_window=64)
        return SecurityAssociation(cfg, registry=get_registry(), now=0.0)
    return make(Direction.OUT), make(Direction.IN)


def _inner() -> bytes:
    payload = _udp()
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, 0, 64, 17, 0,
                       ipaddress.ip_address("198.51.100.1").packed,
                       ipaddress.ip_address("203.0.113.1").packed) + payload


@pytest.mark.parametrize("low", [0, 5, 0xFFFFFF00 - 200])
def test_esn_sequence_numbers_past_2_to_the_64_are_dropped(low):
    out, inb = _esn_pair()
    top = 2**64 - 10
    out.seq = inb.replay.top = top - 1
    assert inb.unprotect(out.protect(_inner(), now=0.0), now=0.0) == _inner()
    assert inb.replay.top == top
    # A packet whose low-order bits lie left of the window stands for the next sub-space,
    # which does not exist: 2^64 and above.
    forged = bytearray(out.protect(_inner(), now=0.0))
    struct.pack_into("!I", forged, 20 + 4, low)
    with pytest.raises(PacketDropped) as exc:
        inb.unprotect(bytes(forged), now=0.0)
    assert exc.value.reason is DropReason.REPLAY
    assert inb.replay.top == top
    out.seq = top + 1
    assert inb.unprotect(out.protect(_inner(), now=0.0), now=0.0) == _inner()


SA_TEXT = """
[[sa]]
name = "a"
spi = "0x1000"
direction = "out"
proposal = "aes128gcm16"
key = "000102030405060708090a0b0c0d0e0f10111213"
tunnel = {{ local = "192.0.2.1", remote = "192.0.2.2" }}
{extra}
"""


@pytest.mark.parametrize("value", ['"64"', "[]", "1.5", "true", "{}"])
def test_wrong_typed_outer_ttl_names_file_and_key(tmp_path, value):
    path = tmp_path / "sa.toml"
    path.write_text(SA_TEXT.format(extra=f"outer_ttl = {value}"))
    with pytest.raises(ConfigError) as exc:
        load_sa_file(path)
    assert str(exc.value).startswith(f"{path}: sa[a].outer_ttl: ")


@pytest.mark.parametrize("text", ["sa = [1, 2]", 'sa = ["x"]', "sa = [[1]]"])
def test_non_table_sa_items_name_file_and_key(tmp_path, text):
    path = tmp_path / "sa.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_sa_file(path)
    assert str(exc.value).startswith(f"{path}: sa[0]: expected a table")

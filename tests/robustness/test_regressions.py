"""Inputs the fuzz targets and property tests of this folder found crashing, kept as plain
tests: each must end in a result or a counted drop, never another exception."""
from __future__ import annotations

import ipaddress
import struct

import pytest

from ipsec_core.crypto.registry import get_registry
from ipsec_core.dataplane.sa import Direction, Mode, SaConfig, SecurityAssociation
from ipsec_core.errors import DropReason, PacketDropped
from ipsec_core.transforms.keywords import parse_esp

SEQ64_MAX = (1 << 64) - 1


def _inner(i: int) -> bytes:
    payload = struct.pack("!HHHH", 1000, 53, 16, 0) + i.to_bytes(8, "big")
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, 0, 64, 17, 0,
                       ipaddress.ip_address("198.51.100.1").packed,
                       ipaddress.ip_address("203.0.113.1").packed) + payload


def _pair(keyword: str, window: int):
    prop = parse_esp(keyword)

    def make(direction):
        a, b = ("192.0.2.1", "192.0.2.2") if direction is Direction.OUT else ("192.0.2.2", "192.0.2.1")
        return SecurityAssociation(SaConfig(
            name=direction.value, spi=0x5000, direction=direction, mode=Mode.TUNNEL, proposal=prop,
            enc_key=bytes(range(1, 1 + prop.enc_key_bytes)),
            integ_key=bytes(range(60, 60 + prop.integ_info.key_bytes)) if prop.integ_info else b"",
            replay_window=window, local=ipaddress.ip_address(a), remote=ipaddress.ip_address(b)),
            registry=get_registry(), now=0.0)
    return make(Direction.OUT), make(Direction.IN)


@pytest.mark.parametrize("keyword", ["aes128gcm16-esn", "aes128-sha256-esn"])
@pytest.mark.parametrize("count", [1, 8, 40])
def test_esn_batch_just_below_2_to_the_64(keyword, count):
    """A batch on an ESN SA whose window top is just below 2^64: the batch path computed the
    full sequence numbers in 64-bit signed integers and overflowed."""
    out, inb = _pair(keyword, 32)
    top = SEQ64_MAX - 400
    inb.replay.top, inb.replay.bitmap = top, 1
    packets = []
    for i in range(count):
        out.seq = top + i                   # the packet gets top + i + 1
        packets.append(out.protect(_inner(i), now=0.0))
    packets.append(packets[0])              # a duplicate: replay
    verdicts = inb.unprotect_batch(packets, now=0.0)
    assert verdicts[:-1] == [_inner(i) for i in range(count)]
    assert isinstance(verdicts[-1], PacketDropped) and verdicts[-1].reason is DropReason.REPLAY
    assert inb.replay.top == top + count

"""Inputs the fuzz targets and property tests of this folder found crashing, kept as plain
tests: each must end in a result or a counted drop, never another exception."""
from __future__ import annotations

import base64
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


def _transport_pair(keyword: str):
    prop = parse_esp(keyword)

    def make(direction):
        return SecurityAssociation(SaConfig(
            name=direction.value, spi=0x5001, direction=direction, mode=Mode.TRANSPORT, proposal=prop,
            enc_key=bytes(range(1, 1 + prop.enc_key_bytes)), integ_key=b"", replay_window=32),
            registry=get_registry(), now=0.0)
    return make(Direction.OUT), make(Direction.IN)


def test_transport_packet_of_protocol_59_arrives_as_a_dummy():
    """Transport mode copies the packet's protocol into the ESP next header, where 59 (No Next
    Header) marks a dummy packet (RFC 4303 2.6): the receiver discards it as one, counted, and
    takes the next packet.  The esp_unprotect target's round trip expected the packet back."""
    out, inb = _transport_pair("aes256gcm8-esn")
    inner = bytearray(_inner(1))
    inner[9] = 59
    inner[10:12] = b"\0\0"
    with pytest.raises(PacketDropped) as drop:
        inb.unprotect(out.protect(bytes(inner), now=0.0), now=0.0)
    assert drop.value.reason is DropReason.DUMMY and inb.stats.drops[DropReason.DUMMY] == 1
    got = inb.unprotect(out.protect(_inner(2), now=0.0), now=0.0)
    assert got[9] == 17 and got[20:] == _inner(2)[20:]     # header checksum filled in on the way


def test_esp_unprotect_target_transport_round_trip_of_protocol_59():
    """The esp_unprotect fuzz target's input: an IPv4 packet of protocol 59 through an
    aes256gcm8-esn transport SA, protected and unprotected (operation 2)."""
    from fuzz.esp_unprotect import test_one_input
    test_one_input(base64.b64decode(
        "HiAEAP///0lJSUlJ//87Ozs7Ozs7Ozs7Ozs7Ozs7Ozs7Ozs7Ozs7Ozs7Ozs7Ozs7Ozs7Ozs7Ozs7Ozs7Ozs7Ozs7"
        "Ozs7Ozs7Ozs7Ozs7Ozs7Ozs7Ozs7Ozs7Ozs7Ozs7Ozs7Ozs7Ozs7Ozs7Ozs7Ozs7Ozs7Ozs7Ozs7////////9/8A"
        "BAD///9JSf8="))


def test_ike_sa_init_response_choosing_an_unknown_integrity_transform():
    """An IKE_SA_INIT response (unauthenticated, so anyone on the path) whose chosen proposal
    names an INTEG transform id unknown here: suite_of raised ValueError out of
    receive_datagram; it is a refused proposal (ProposalError, NO_PROPOSAL_CHOSEN)."""
    from ipsec_core.errors import ProposalError
    from ipsec_core.ike.payloads import Proposal, Transform
    from ipsec_core.ike.proposals import suite_of
    from ipsec_core.ike.constants import TransformType
    for integ_id in (4364, 1):                  # not an IANA id at all; IANA but not offered here
        proposal = Proposal(number=1, protocol_id=1, spi=b"", transforms=(
            Transform(TransformType.ENCR, 12, 128), Transform(TransformType.INTEG, integ_id),
            Transform(TransformType.PRF, 5), Transform(TransformType.DH, 31)))
        with pytest.raises(ProposalError, match=f"unknown INTEG {integ_id}"):
            suite_of(proposal)


def test_ike_endpoint_target_unknown_integrity_in_the_init_response():
    """The ike_endpoint fuzz target's input: the initiator waiting for the IKE_SA_INIT
    response gets one whose proposal carries INTEG transform 4364."""
    from fuzz.ike_endpoint import test_one_input
    test_one_input(base64.b64decode("ASgBACwCEQ=="))

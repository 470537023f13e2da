"""Both roles of the sans-I/O IKE in memory: two `IkeEndpoint`s exchanging datagrams.

Every IKE encryption family (AES-GCM, AES-CBC with HMAC-SHA2 / XCBC / CMAC, ChaCha20-Poly1305),
each PRF, each key exchange family (MODP, ECP, Curve25519/448); COOKIE and INVALID_KE_PAYLOAD
retries; lost and repeated messages; CHILD SA rekey; deletes from either side; and bad input,
each answered or ignored as RFC 7296 prescribes, with no state corrupted.
"""
from __future__ import annotations

import ipaddress
import os
import struct

import pytest

from ipsec_core.crypto.registry import get_registry
from ipsec_core.dataplane.sa import SecurityAssociation
from ipsec_core.ike.config import ChildConfig, IkeConfig, TrafficSelectorSpec
from ipsec_core.ike.constants import NotifyType
from ipsec_core.ike.endpoint import IkeEndpoint
from ipsec_core.ike.events import (ChildSaDeleted, ChildSaFailed, ChildSaInstalled, IkeSaDeleted,
                                   IkeSaEstablished, IkeSaFailed)
from ipsec_core.ike.session import IkeState

REGISTRY = get_registry()
A_ADDR, B_ADDR = "192.0.2.1", "192.0.2.2"
A_NET, B_NET = "198.51.100.0/24", "203.0.113.0/24"


def ts(text: str) -> tuple[TrafficSelectorSpec, ...]:
    return (TrafficSelectorSpec(ipaddress.ip_network(text)),)


def config(name: str, *, initiator: bool, proposals=("aes128gcm16-prfsha256-ecp256",),
           esp=("aes128gcm16",), psk=b"a long shared secret!!", encap=True, local_ts=None,
           remote_ts=None, remote_id=None, **kw) -> IkeConfig:
    local, remote = (A_ADDR, B_ADDR) if initiator else (B_ADDR, A_ADDR)
    lnet, rnet = (A_NET, B_NET) if initiator else (B_NET, A_NET)
    child = ChildConfig("net", ts(local_ts or lnet), ts(remote_ts or rnet), esp_proposals=tuple(esp),
                        start_action="start" if initiator else "none")
    return IkeConfig(name, (local,), (remote,), local_id=f"{name}.example.org", remote_id=remote_id,
                     psk=psk, proposals=tuple(proposals), encap=encap, children=(child,), **kw)


class Pair:
    """Initiator A and responder B, and a wire between them that a test can tamper with."""

    def __init__(self, a: IkeConfig, b: IkeConfig, **endpoint_kw):
        self.a = IkeEndpoint([a], registry=REGISTRY, now=0.0)
        self.b = IkeEndpoint([b], registry=REGISTRY, now=0.0, **endpoint_kw)
        self.events = {"a": [], "b": []}
        self.sent = {"a": [], "b": []}
        self.now = 0.0

    def pump(self, *, drop=lambda side, d: False, mangle=lambda side, d: d.data) -> None:
        moved = True
        while moved:
            moved = False
            for side, src, dst in (("a", self.a, self.b), ("b", self.b, self.a)):
                for d in src.datagrams_to_send(now=self.now):
                    moved = True
                    self.sent[side].append(d)
                    if drop(side, d):
                        continue
                    dst.receive_datagram(mangle(side, d), remote=d.local, local=d.remote,
                                         nat_t=d.nat_t, now=self.now)
        for side, ep in (("a", self.a), ("b", self.b)):
            while (e := ep.next_event()) is not None:
                self.events[side].append(e)

    def tick(self, seconds: float, **kw) -> None:
        self.now += seconds
        for ep in (self.a, self.b):
            ep.handle_timer(now=self.now)
        self.pump(**kw)

    def of(self, side: str, cls) -> list:
        return [e for e in self.events[side] if isinstance(e, cls)]


def up(pair: Pair, **kw) -> Pair:
    pair.a.initiate("a", now=pair.now)
    pair.pump(**kw)
    return pair


def traffic(pair: Pair, *, count: int = 3) -> None:
    """Packets both ways through the CHILD SAs the two sides installed."""
    a_child = pair.of("a", ChildSaInstalled)[-1]
    b_child = pair.of("b", ChildSaInstalled)[-1]
    assert a_child.outbound.spi == b_child.inbound.spi and b_child.outbound.spi == a_child.inbound.spi
    sas = {name: SecurityAssociation(cfg, registry=REGISTRY, now=0.0) for name, cfg in (
        ("a_out", a_child.outbound), ("a_in", a_child.inbound),
        ("b_out", b_child.outbound), ("b_in", b_child.inbound))}
    for i in range(count):
        payload = struct.pack("!HHHH", 1000 + i, 53, 16, 0) + os.urandom(8)
        a_pkt = _ipv4("198.51.100.7", "203.0.113.9", payload)
        assert sas["b_in"].unprotect(sas["a_out"].protect(a_pkt, now=0.0), now=0.0) == a_pkt
        b_pkt = _ipv4("203.0.113.9", "198.51.100.7", payload)
        assert sas["a_in"].unprotect(sas["b_out"].protect(b_pkt, now=0.0), now=0.0) == b_pkt


def _ipv4(src: str, dst: str, payload: bytes) -> bytes:
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 7, 0, 64, 17, 0,
                         ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed)
    total = sum(struct.unpack("!10H", header))
    total = (total & 0xFFFF) + (total >> 16)
    total = (total & 0xFFFF) + (total >> 16)
    return header[:10] + struct.pack("!H", ~total & 0xFFFF) + header[12:] + payload


SUITES = [
    ("aes128gcm16-prfsha256-ecp256", "aes128gcm16"),
    ("aes256gcm16-prfsha384-ecp384", "aes256gcm16-esn"),
    ("aes256-sha256-modp2048", "aes256-sha256"),
    ("aes128-sha512-modp3072", "aes128-sha512"),
    ("aes192-sha384-ecp521", "aes192ctr-sha384"),
    ("chacha20poly1305-prfsha512-x448", "chacha20poly1305"),
    ("chacha20poly1305-prfsha256-x25519", "chacha20poly1305"),
    ("aes128-aesxcbc-curve25519", "aes128-aesxcbc"),
    ("aes128-aescmac-ecp256", "aes128-sha1"),
    ("aes128gcm12-prfsha1-ecp256", "aes128gcm8"),
]


@pytest.mark.parametrize(("ike", "esp"), SUITES, ids=[f"{i}/{e}" for i, e in SUITES])
def test_establish_traffic_rekey_delete(ike, esp):
    pair = up(Pair(config("a", initiator=True, proposals=(ike,), esp=(esp,)),
                   config("b", initiator=False, proposals=(ike,), esp=(esp,))))
    for side in "ab":
        [est] = pair.of(side, IkeSaEstablished)
        assert est.proposal.split("-")[0] == ike.split("-")[0] or "sha" in ike
        assert not pair.of(side, IkeSaFailed)
    assert pair.of("a", IkeSaEstablished)[0].remote_id == "b.example.org"
    assert pair.of("b", IkeSaEstablished)[0].remote_id == "a.example.org"
    [installed] = pair.of("a", ChildSaInstalled)
    assert installed.proposal == esp
    assert installed.outbound.encap_ports == (4500, 4500)
    traffic(pair)
    # CHILD SA rekey: make-before-break, the old SA deleted by the rekey's initiator.
    pair.a.rekey_child("a", "net", now=pair.now)
    pair.pump()
    assert len(pair.of("a", ChildSaInstalled)) == len(pair.of("b", ChildSaInstalled)) == 2
    new = pair.of("a", ChildSaInstalled)[-1]
    assert new.rekeyed == (installed.inbound.spi, installed.outbound.spi)
    assert [(e.inbound_spi, e.reason) for e in pair.of("a", ChildSaDeleted)] == [(installed.inbound.spi, "rekeyed")]
    assert [(e.inbound_spi, e.reason) for e in pair.of("b", ChildSaDeleted)] == [(installed.outbound.spi, "rekeyed")]
    traffic(pair)
    pair.a.close(now=pair.now)
    pair.pump()
    assert [e.reason for e in pair.of("a", IkeSaDeleted)] == ["deleted"]
    assert [e.reason for e in pair.of("b", IkeSaDeleted)] == ["deleted by peer"]
    assert not pair.a.active() and not pair.b.active()


def test_keys_differ_per_direction_and_per_sa():
    pair = up(Pair(config("a", initiator=True), config("b", initiator=False)))
    child = pair.of("a", ChildSaInstalled)[0]
    assert child.inbound.enc_key != child.outbound.enc_key
    assert "enc_key" not in repr(child) or child.inbound.enc_key.hex() not in repr(child)


def test_responder_deletes_child_and_ike_sa():
    pair = up(Pair(config("a", initiator=True), config("b", initiator=False)))
    [session] = pair.b.sessions()
    spi = next(iter(session.children))
    session.delete_child(spi, now=pair.now)
    pair.b._collect(session)
    pair.pump()
    assert [e.reason for e in pair.of("a", ChildSaDeleted)] == ["deleted by peer"]
    assert [e.reason for e in pair.of("b", ChildSaDeleted)] == ["deleted"]
    pair.b.terminate("b", now=pair.now)
    pair.pump()
    assert [e.reason for e in pair.of("a", IkeSaDeleted)] == ["deleted by peer"]
    assert not pair.a.active() and not pair.b.active()


def test_cookie_under_load():
    pair = up(Pair(config("a", initiator=True), config("b", initiator=False), cookie_threshold=0))
    assert pair.b.cookies_sent == 1
    assert pair.of("a", IkeSaEstablished) and pair.of("b", IkeSaEstablished)
    cookie_reply = pair.sent["b"][0].data
    assert len(cookie_reply) < 80             # stateless: a header and one notify


def test_invalid_ke_payload_retry():
    a = config("a", initiator=True, proposals=("aes128gcm16-prfsha256-ecp256-x25519",))
    b = config("b", initiator=False, proposals=("aes128gcm16-prfsha256-x25519",))
    pair = up(Pair(a, b))
    [est] = pair.of("a", IkeSaEstablished)
    assert est.proposal.endswith("curve25519")
    assert len([d for d in pair.sent["a"] if d.data[18] == 34]) == 2     # two IKE_SA_INIT


def test_no_proposal_chosen():
    pair = up(Pair(config("a", initiator=True, proposals=("aes128gcm16-prfsha256-ecp256",)),
                   config("b", initiator=False, proposals=("aes256-sha256-modp2048",))))
    assert [e.notify for e in pair.of("a", IkeSaFailed)] == [NotifyType.NO_PROPOSAL_CHOSEN]
    assert [e.notify for e in pair.of("b", IkeSaFailed)] == [NotifyType.NO_PROPOSAL_CHOSEN]
    assert not pair.a.active() and not pair.b.active()


def test_wrong_psk_is_authentication_failed_on_both_sides():
    pair = up(Pair(config("a", initiator=True, psk=b"one secret, quite long"),
                   config("b", initiator=False, psk=b"another one, also long")))
    assert [e.notify for e in pair.of("a", IkeSaFailed)] == [NotifyType.AUTHENTICATION_FAILED]
    assert [e.notify for e in pair.of("b", IkeSaFailed)] == [NotifyType.AUTHENTICATION_FAILED]
    assert not pair.of("a", IkeSaEstablished) and not pair.of("a", ChildSaInstalled)


def test_wrong_identity_is_refused():
    pair = up(Pair(config("a", initiator=True),
                   config("b", initiator=False, remote_id="someone.else.example")))
    assert [e.notify for e in pair.of("a", IkeSaFailed)] == [NotifyType.AUTHENTICATION_FAILED]


def test_traffic_selectors_unacceptable_keep_the_ike_sa():
    pair = up(Pair(config("a", initiator=True, local_ts="192.0.2.128/25"),
                   config("b", initiator=False)))
    assert pair.of("a", IkeSaEstablished) and pair.of("b", IkeSaEstablished)
    assert [e.reason for e in pair.of("a", ChildSaFailed)] == ["peer: TS_UNACCEPTABLE"]
    assert not pair.of("b", ChildSaInstalled)


def test_selectors_are_narrowed():
    pair = up(Pair(config("a", initiator=True, local_ts="198.51.100.0/23"),
                   config("b", initiator=False)))
    assert pair.of("a", ChildSaInstalled)[0].local_ts == ("198.51.100.0/24",)


def test_lost_request_is_retransmitted_with_backoff():
    lost = []
    pair = Pair(config("a", initiator=True), config("b", initiator=False))
    pair.a.initiate("a", now=0.0)
    pair.pump(drop=lambda side, d: side == "a" and d.data[18] == 35 and not lost and not lost.append(1))
    assert not pair.of("a", IkeSaEstablished)
    [session] = pair.a.sessions()
    assert session.get_timer() == pytest.approx(4.0)
    pair.tick(4.0)
    assert pair.of("a", IkeSaEstablished) and pair.of("b", IkeSaEstablished)


def test_repeated_request_gets_the_cached_response():
    pair = up(Pair(config("a", initiator=True), config("b", initiator=False)))
    auth_request = next(d for d in pair.sent["a"] if d.data[18] == 35)
    auth_response = next(d for d in pair.sent["b"] if d.data[18] == 35)
    before = len(pair.sent["b"])
    pair.b.receive_datagram(auth_request.data, remote=auth_request.local, local=auth_request.remote,
                            nat_t=True, now=pair.now)
    [again] = pair.b.datagrams_to_send(now=pair.now)
    assert again.data == auth_response.data and len(pair.sent["b"]) == before
    assert len(pair.of("b", ChildSaInstalled)) == 1


def test_peer_not_responding():
    pair = Pair(config("a", initiator=True), config("b", initiator=False))
    pair.a.initiate("a", now=0.0)
    pair.pump(drop=lambda side, d: True)
    waits = []
    while pair.a.active():
        timer = pair.a.sessions()[0].get_timer()
        waits.append(round(timer - pair.now, 3))
        pair.tick(timer - pair.now, drop=lambda side, d: True)
    assert waits == [4.0, 7.2, 12.96, 23.328, 41.99, 75.583]
    assert [e.reason for e in pair.of("a", IkeSaFailed)] == ["peer not responding"]


@pytest.mark.parametrize("damage", ["flip-sk", "truncate", "garbage", "unknown-spi", "bad-mid"])
def test_bad_messages_are_ignored_and_change_nothing(damage):
    pair = up(Pair(config("a", initiator=True), config("b", initiator=False)))
    [session] = pair.b.sessions()
    state = (session.state, session._peer_mid, dict(session.children))
    good = pair.a.sessions()[0]
    good.create_child("net", now=pair.now)
    pair.a._collect(good)
    [request] = pair.a.datagrams_to_send(now=pair.now)
    data = bytearray(request.data)
    if damage == "flip-sk":
        data[-5] ^= 1
    elif damage == "truncate":
        data = data[:40]
    elif damage == "garbage":
        data = bytearray(os.urandom(len(data)))
    elif damage == "unknown-spi":
        data[8:16] = os.urandom(8)
    elif damage == "bad-mid":
        data[20:24] = struct.pack("!I", 77)
    pair.b.receive_datagram(bytes(data), remote=request.local, local=request.remote, nat_t=True,
                            now=pair.now)
    assert pair.b.datagrams_to_send(now=pair.now) == []
    assert (session.state, session._peer_mid, dict(session.children)) == state
    # the real request still works
    pair.b.receive_datagram(request.data, remote=request.local, local=request.remote, nat_t=True,
                            now=pair.now)
    pair.pump()
    assert len(pair.of("b", ChildSaInstalled)) == 2


def test_child_rekey_on_time():
    a = config("a", initiator=True)
    a = IkeConfig(**{**{f: getattr(a, f) for f in a.__dataclass_fields__},
                     "children": (ChildConfig("net", ts(A_NET), ts(B_NET), esp_proposals=("aes128gcm16",),
                                              start_action="start", rekey_time=6.0),)})
    pair = up(Pair(a, config("b", initiator=False)))
    for _ in range(3):
        pair.tick(6.0)
    assert len(pair.of("a", ChildSaInstalled)) == 4
    assert len(pair.of("b", ChildSaDeleted)) == 3
    assert len(pair.a.sessions()[0].children) == 1


def test_state_table_refuses_unknown_transitions():
    pair = Pair(config("a", initiator=True), config("b", initiator=False))
    session = pair.a.initiate("a", now=0.0)
    with pytest.raises(RuntimeError, match="no transition"):
        session._set_state(IkeState.ESTABLISHED)


def test_higher_major_version_gets_invalid_major_version():
    pair = Pair(config("a", initiator=True), config("b", initiator=False))
    pair.a.initiate("a", now=0.0)
    [init] = pair.a.datagrams_to_send(now=0.0)
    data = bytearray(init.data)
    data[17] = 0x30                                   # IKE version 3.0
    pair.b.receive_datagram(bytes(data), remote=init.local, local=init.remote, nat_t=False, now=0.0)
    [answer] = pair.b.datagrams_to_send(now=0.0)
    assert answer.data[17] == 0x20 and answer.data[19] & 0x20            # ours is 2.0, a response
    from ipsec_core.ike.payloads import parse_message
    [notify] = parse_message(answer.data).payloads
    assert notify.notify_type == NotifyType.INVALID_MAJOR_VERSION
    assert not pair.b.sessions()


def test_unknown_critical_payload_in_ike_sa_init_is_refused():
    from ipsec_core.ike.payloads import UnknownPayload, parse_message, serialize_message
    pair = Pair(config("a", initiator=True), config("b", initiator=False))
    pair.a.initiate("a", now=0.0)
    [init] = pair.a.datagrams_to_send(now=0.0)
    msg = parse_message(init.data)
    critical = serialize_message(type(msg)(msg.spi_i, msg.spi_r, msg.exchange_type, msg.flags,
                                           msg.message_id, msg.payloads + (UnknownPayload(200, b"x", True),)))
    pair.b.receive_datagram(critical, remote=init.local, local=init.remote, nat_t=False, now=0.0)
    [answer] = pair.b.datagrams_to_send(now=0.0)
    [notify] = parse_message(answer.data).payloads
    assert (notify.notify_type, notify.data) == (NotifyType.UNSUPPORTED_CRITICAL_PAYLOAD, bytes([200]))
    assert not pair.b.sessions()

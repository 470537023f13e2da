"""Fuzz target: the IKE receive path, `IkeEndpoint.receive_datagram`, in both roles and every
state of the exchange: a fresh responder, the initiator waiting for the IKE_SA_INIT response,
the responder waiting for IKE_AUTH, the initiator waiting for the IKE_AUTH response, and
either side once established.  Two endpoints in memory, as in tests/ike/test_session.py.

Input: byte 0 the state and role, byte 1 the IKE suite, byte 2 the kind of datagram:
  0  raw bytes;
  1  the message the peer would send next, with a few bytes changed;
  2  a header routed to the session (its SPIs; exchange, flags and message ID from the input)
     and any payload bytes after it;
  3  an authentic SK message: the peer's keys seal any inner payload bytes, so the handlers
     behind the decryption see them (states where both sides have keys).
Allowed: the input is ignored (counted) or answered; whatever goes out is a well-formed IKE
message.  Never an exception.  An input the endpoint ignored changes nothing: the exchange
then completes with the real messages (or, established, a CHILD SA rekey still works).
"""
from __future__ import annotations

import ipaddress
import os

from ipsec_core.crypto.registry import get_registry
from ipsec_core.ike.config import ChildConfig, IkeConfig, TrafficSelectorSpec
from ipsec_core.ike.constants import ExchangeType
from ipsec_core.ike.endpoint import IkeEndpoint
from ipsec_core.ike.events import ChildSaInstalled, IkeSaEstablished
from ipsec_core.ike.payloads import (IKE_HEADER_BYTES, Message, SkPayload, parse_message,
                                     serialize_message)

from fuzz._harness import Reader, main

TARGET = "ike_endpoint"
REGISTRY = get_registry()
A_ADDR, B_ADDR = ("192.0.2.1", 500), ("192.0.2.2", 500)
SUITES = ("aes128gcm16-prfsha256-x25519", "aes128-sha256-x25519", "chacha20poly1305-prfsha256-x25519")
#: (target side, stage): which endpoint gets the input, and how far the exchange has gone.
STATES = (("b", "fresh"), ("a", "init-sent"), ("b", "init-answered"), ("a", "auth-sent"),
          ("a", "established"), ("b", "established"))
NOW = 1.0


def _config(name: str, *, initiator: bool, suite: str) -> IkeConfig:
    local, remote = (A_ADDR, B_ADDR) if initiator else (B_ADDR, A_ADDR)
    lnet, rnet = ("198.51.100.0/24", "203.0.113.0/24")[:: 1 if initiator else -1]
    child = ChildConfig("net", (TrafficSelectorSpec(ipaddress.ip_network(lnet)),),
                        (TrafficSelectorSpec(ipaddress.ip_network(rnet)),),
                        esp_proposals=("aes128gcm16",), start_action="start" if initiator else "none")
    return IkeConfig(name, (local[0],), (remote[0],), local_id=f"{name}.example.org",
                     psk=b"a long shared secret for fuzzing", proposals=(suite,), encap=False,
                     children=(child,))


class World:
    """Endpoints a and b driven to a stage; `held` is the real next message for the target."""

    def __init__(self, stage: str, target: str, suite: str):
        self.a = IkeEndpoint([_config("a", initiator=True, suite=suite)], registry=REGISTRY, now=0.0)
        self.b = IkeEndpoint([_config("b", initiator=False, suite=suite)], registry=REGISTRY, now=0.0)
        self.events = {"a": [], "b": []}
        self.target_name = target
        self.a.initiate("a", now=0.0)
        steps = ["fresh", "init-sent", "init-answered", "auth-sent", "established"]
        order = [("a", "b"), ("b", "a"), ("a", "b"), ("b", "a")]    # who sends each message
        self.held = None
        for i, (src, dst) in enumerate(order):
            msgs = self.side(src).datagrams_to_send(now=0.0)
            assert len(msgs) == 1, f"expected one message at step {i}"
            if steps[i] == stage:
                self.held = msgs[0]
                break
            self.deliver(dst, msgs[0])
        self.drain()
        self.target = self.side(target)

    def side(self, name: str) -> IkeEndpoint:
        return self.a if name == "a" else self.b

    def deliver(self, dst: str, d) -> None:
        self.side(dst).receive_datagram(d.data, remote=d.local, local=d.remote, nat_t=d.nat_t, now=NOW)

    def drain(self) -> None:
        for name in ("a", "b"):
            while (e := self.side(name).next_event()) is not None:
                self.events[name].append(e)

    def pump(self) -> None:
        moved = True
        while moved:
            moved = False
            for src, dst in (("a", "b"), ("b", "a")):
                for d in self.side(src).datagrams_to_send(now=NOW):
                    moved = True
                    self.deliver(dst, d)
        self.drain()

    def of_established(self) -> bool:
        return all(any(isinstance(e, IkeSaEstablished) for e in self.events[n]) for n in ("a", "b"))

    def session(self, name: str):
        sessions = self.side(name).sessions()
        return sessions[0] if sessions else None


def _ignored(ep: IkeEndpoint) -> int:
    return ep.ignored + sum(s.ignored for s in ep.sessions())


def _routed_header(world: World, r: Reader) -> bytes:
    s = world.session(world.target_name) or world.session("a")
    spi_i = s.spi_i if s else os.urandom(8)
    spi_r = (s.spi_r or bytes(8)) if s else bytes(8)
    exchange = r.pick((ExchangeType.IKE_SA_INIT, ExchangeType.IKE_AUTH,
                       ExchangeType.CREATE_CHILD_SA, ExchangeType.INFORMATIONAL, r.int()))
    flags, mid, first = r.int(), r.int() % 4, r.int()
    body = r.rest()
    return (spi_i + spi_r + bytes((first, 0x20, exchange, flags)) + mid.to_bytes(4, "big")
            + (IKE_HEADER_BYTES + len(body)).to_bytes(4, "big") + body)


def _authentic(world: World, r: Reader) -> bytes | None:
    peer = world.session("b" if world.target_name == "a" else "a")
    mine = world.session(world.target_name)
    if peer is None or mine is None or peer._sk is None or mine._sk is None:
        return None
    response = bool(r.int() & 1)
    exchange = r.pick((ExchangeType.IKE_AUTH, ExchangeType.CREATE_CHILD_SA,
                       ExchangeType.INFORMATIONAL, r.int()))
    if response:
        mid = mine._request.message_id if mine._request is not None else r.int() % 4
    else:
        mid = mine._peer_mid
    first, inner = r.int(), r.rest()
    sk = peer._sk
    size = sk.seal_length(len(inner))
    draft = serialize_message(Message(peer.spi_i, peer.spi_r, exchange, peer._flags(response), mid,
                                      (SkPayload(first, bytes(size)),)))
    head = draft[:len(draft) - size]
    iv = None if sk.suite.aead else os.urandom(sk.iv_bytes)
    return head + sk.seal(head, inner, random_iv=iv)


def test_one_input(data: bytes) -> None:
    r = Reader(data)
    target, stage = r.pick(STATES)
    world = World(stage, target, r.pick(SUITES))
    kind = r.int() % 4
    if kind == 0:
        datagram = r.rest()
    elif kind == 1:
        real = world.held.data if world.held is not None else _routed_header(world, Reader(b""))
        buf = bytearray(real)
        for _ in range(1 + r.int() % 3):
            buf[r.int(2) % len(buf)] ^= r.int() or 1
        datagram = bytes(buf)
    elif kind == 2:
        datagram = _routed_header(world, r)
    else:
        datagram = _authentic(world, r)
        if datagram is None:
            return
    ep = world.target
    ignored_before = _ignored(ep)
    remote = A_ADDR if target == "b" else B_ADDR
    if r.int() % 8 == 0:
        remote = ("203.0.113.77", 4500)
    local = B_ADDR if target == "b" else A_ADDR
    ep.receive_datagram(datagram, remote=remote, local=local, nat_t=remote[1] == 4500, now=NOW)
    answers = ep.datagrams_to_send(now=NOW)
    for d in answers:
        parse_message(d.data)           # what we send must be well-formed
    world.drain()
    quiet = not answers and _ignored(ep) > ignored_before and not world.events[target]
    if kind == 3 or not quiet:
        return                      # answered or acted on: only well-formedness is checked
    # Ignored: the real exchange must still complete.
    if world.held is not None:
        world.deliver(target, world.held)
        world.pump()
        assert world.of_established(), f"{stage} {target}: exchange did not complete after an ignored input"
    else:
        before = sum(isinstance(e, ChildSaInstalled) for e in world.events["a"])
        world.a.rekey_child("a", "net", now=NOW)
        world.pump()
        after = sum(isinstance(e, ChildSaInstalled) for e in world.events["a"])
        assert after == before + 1, f"{target}: CHILD SA rekey failed after an ignored input"


if __name__ == "__main__":
    main(TARGET, test_one_input)

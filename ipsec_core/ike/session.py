"""A sans-I/O IKEv2 session (RFC 7296): one IKE SA and its CHILD SAs, either role.

Owns: the exchanges (IKE_SA_INIT with COOKIE and INVALID_KE_PAYLOAD retries, IKE_AUTH with a
pre-shared key and the first CHILD SA, CREATE_CHILD_SA for new and rekeyed CHILD SAs,
INFORMATIONAL deletes and liveness checks), message IDs, retransmission with backoff, the
response cache, NAT detection and the move to the NAT-T port, and the CHILD SAs' key material.
Its surface is aioquic's, and `IkeEndpoint` (ipsec_core.ike.endpoint) drives many of them:

    session.receive(message_bytes, remote=(host, port), local=(host, port), nat_t=..., now=...)
    session.handle_timer(now=...)
    session.datagrams_to_send()        # `Datagram`s
    session.get_timer()                # when to call handle_timer next, or None
    session.next_event()               # `Event`s, or None

Must not: open a socket, read the clock, or log a key.  Time arrives as `now`.  The state of the
IKE SA changes only through `_set_state`, along `TRANSITIONS`.
"""
from __future__ import annotations

import enum
import hashlib
import ipaddress
import logging
import os
import struct
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from ipsec_core.crypto.kex import KE_BY_GROUP, KeyExchangeError
from ipsec_core.dataplane.sa import Direction, Lifetime, Mode, SaConfig
from ipsec_core.errors import AuthenticationError, BackendError, ProposalError
from ipsec_core.ike.config import ChildConfig, IkeConfig, TrafficSelectorSpec
from ipsec_core.ike.constants import (ExchangeType, IdType, IkeFlags, NotifyType, PayloadType,
                                      ProtocolId, TransformType)
from ipsec_core.ike.events import (ChildSaDeleted, ChildSaFailed, ChildSaInstalled, Datagram,
                                   Event, IkeSaDeleted, IkeSaEstablished, IkeSaFailed)
from ipsec_core.ike.auth import init_payloads, make_authenticator
from ipsec_core.ike.keymat import IkeCrypto, IkeKeys, SkProtector, child_keymat, derive_ike_keys
from ipsec_core.ike.payloads import (AuthPayload, DeletePayload, IdiPayload, IdPayload, IdrPayload,
                                     KePayload, Message, NoncePayload, NotifyPayload, Proposal,
                                     RemoteIkeError, SaPayload, SkPayload, TrafficSelector, TsiPayload,
                                     TsPayload, TsrPayload, UnknownPayload, parse_message,
                                     parse_payloads, serialize_message, serialize_payloads)
from ipsec_core.ike.proposals import (IkeSuite, choose, esp_keyword_of, esp_proposal, ike_proposal,
                                      parse_ike_proposal, suite_of)
from ipsec_core.transforms.keywords import parse_esp

log = logging.getLogger("ipsec.ike")

NONCE_BYTES = 32
#: How often an initiator retries IKE_SA_INIT after COOKIE / INVALID_KE_PAYLOAD answers.
MAX_INIT_RETRIES = 5


class IkeState(str, enum.Enum):
    CREATED = "created"
    INIT_SENT = "init-sent"          # initiator: IKE_SA_INIT request out
    AUTH_SENT = "auth-sent"          # initiator: IKE_AUTH request out
    INIT_ANSWERED = "init-answered"  # responder: IKE_SA_INIT answered, waiting for IKE_AUTH
    ESTABLISHED = "established"
    DELETING = "deleting"            # our delete of the IKE SA is out
    DELETED = "deleted"


TRANSITIONS: dict[IkeState, frozenset[IkeState]] = {
    IkeState.CREATED: frozenset({IkeState.INIT_SENT, IkeState.INIT_ANSWERED, IkeState.DELETED}),
    IkeState.INIT_SENT: frozenset({IkeState.AUTH_SENT, IkeState.DELETED}),
    IkeState.AUTH_SENT: frozenset({IkeState.ESTABLISHED, IkeState.DELETED}),
    IkeState.INIT_ANSWERED: frozenset({IkeState.ESTABLISHED, IkeState.DELETED}),
    IkeState.ESTABLISHED: frozenset({IkeState.DELETING, IkeState.DELETED}),
    IkeState.DELETING: frozenset({IkeState.DELETED}),
    IkeState.DELETED: frozenset(),
}


@dataclass
class ChildSa:
    config: ChildConfig
    spi_in: int
    spi_out: int
    keyword: str
    inbound: SaConfig
    outbound: SaConfig
    local_ts: tuple[TrafficSelector, ...]
    remote_ts: tuple[TrafficSelector, ...]
    installed_at: float
    rekey_at: float | None
    rekeying: bool = False
    deleting: bool = False


@dataclass
class _Request:
    exchange: int
    message_id: int
    data: bytes
    on_response: Callable[[Message, list, float], None]
    deadline: float
    tries: int = 0


@dataclass
class _ChildRequest:
    """What an outstanding CREATE_CHILD_SA (or the IKE_AUTH child) asked for."""

    config: ChildConfig
    spi_in: int
    nonce: bytes = b""
    ke: object | None = None
    rekey_of: ChildSa | None = None
    proposals: list[Proposal] = field(default_factory=list)


def _ts_payload(specs: tuple[TrafficSelectorSpec, ...]) -> tuple[TrafficSelector, ...]:
    return tuple(TrafficSelector(s.network.network_address, s.network.broadcast_address,
                                 s.protocol, s.start_port, s.end_port) for s in specs)


def _ts_str(ts: TrafficSelector) -> str:
    try:
        nets = list(ipaddress.summarize_address_range(ts.start_address, ts.end_address))
        text = str(nets[0]) if len(nets) == 1 else f"{ts.start_address}-{ts.end_address}"
    except (TypeError, ValueError):
        text = f"{ts.start_address}-{ts.end_address}"
    if ts.ip_protocol or (ts.start_port, ts.end_port) != (0, 0xFFFF):
        text += f"[{ts.ip_protocol}/{ts.start_port}-{ts.end_port}]"
    return text


def _narrow(theirs: tuple[TrafficSelector, ...], ours: tuple[TrafficSelector, ...]) -> tuple[TrafficSelector, ...]:
    """The intersection of two selector lists (RFC 7296 2.9): every overlap of one of theirs with
    one of ours, in their order."""
    out = []
    for t in theirs:
        for o in ours:
            if t.start_address.version != o.start_address.version:
                continue
            lo, hi = max(t.start_address, o.start_address), min(t.end_address, o.end_address)
            if lo > hi:
                continue
            if t.ip_protocol and o.ip_protocol and t.ip_protocol != o.ip_protocol:
                continue
            lp, hp = max(t.start_port, o.start_port), min(t.end_port, o.end_port)
            if lp > hp:
                continue
            ts = TrafficSelector(lo, hi, t.ip_protocol or o.ip_protocol, lp, hp)
            if ts not in out:
                out.append(ts)
    return tuple(out)


def _id_payload(cls, text: str | None, address: str):
    value = text or address
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        ip = None
    if ip is not None:
        return cls(IdType.IPV4_ADDR if ip.version == 4 else IdType.IPV6_ADDR, ip.packed)
    if "@" in value and not value.startswith("@"):
        return cls(IdType.RFC822_ADDR, value.encode())
    return cls(IdType.FQDN, value.lstrip("@").encode())


def id_text(payload: IdPayload) -> str:
    if payload.id_type in (IdType.IPV4_ADDR, IdType.IPV6_ADDR):
        return str(ipaddress.ip_address(payload.data))
    try:
        return payload.data.decode()
    except UnicodeDecodeError:
        return payload.data.hex()


def _id_matches(want: str | None, got: IdPayload) -> bool:
    if not want or want == "%any":
        return True
    expected = _id_payload(type(got), want, want)
    return (expected.id_type, expected.data) == (got.id_type, got.data)


def nat_hash(spi_i: bytes, spi_r: bytes, addr: tuple[str, int]) -> bytes:
    """NAT_DETECTION_*_IP data (RFC 7296 2.23): SHA-1(SPIi | SPIr | IP | port)."""
    return hashlib.sha1(spi_i + spi_r + ipaddress.ip_address(addr[0]).packed
                        + struct.pack("!H", addr[1])).digest()


class IkeSession:
    """One IKE SA.  Build an initiator with `initiator=True` and call `initiate(now=)`; the
    endpoint builds a responder from an IKE_SA_INIT request."""

    def __init__(self, config: IkeConfig, *, initiator: bool, local: tuple[str, int],
                 remote: tuple[str, int], registry, now: float, save_keys: bool = False,
                 random: Callable[[int], bytes] = os.urandom):
        self.config = config
        self.initiator = initiator
        self.local = local
        self.remote = remote
        self.registry = registry
        self.save_keys = save_keys
        self._random = random
        self.state = IkeState.CREATED
        self.spi_i = random(8) if initiator else b""
        self.spi_r = b"" if initiator else random(8)
        self.nat_t = False
        self.nat_local = self.nat_remote = False
        self.suite: IkeSuite | None = None
        self.crypto: IkeCrypto | None = None
        self.keys: IkeKeys | None = None
        self._sk: SkProtector | None = None
        self.children: dict[int, ChildSa] = {}
        self.created_at = now
        self.last_heard = now
        self._events: deque[Event] = deque()
        self._out: list[Datagram] = []
        self._request: _Request | None = None
        self._pending: deque[Callable[[float], None]] = deque()
        self._next_mid = 0
        self._peer_mid = 0                         # the next request ID we expect
        self._last_response: tuple[int, bytes] | None = None
        self._init_request = b""                   # RealMessage1
        self._init_response = b""                  # RealMessage2
        self._ni = self._nr = b""
        self._ke = None
        self._cookie = b""
        self._init_tries = 0
        self._auth_child: _ChildRequest | None = None
        self._child_events: list[Event] = []
        self._remote_id = ""
        self._received = b""                       # the response being handled, as received
        self.ignored = 0                           # messages dropped without an answer
        self._suites = [s for text in config.proposals for s in parse_ike_proposal(text)]
        self._proposal_texts = list(config.proposals)

    # -- the driver's surface ------------------------------------------------------------
    def datagrams_to_send(self) -> list[Datagram]:
        out, self._out = self._out, []
        return out

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        times = []
        if self._request is not None:
            times.append(self._request.deadline)
        if self.state is IkeState.ESTABLISHED:
            times += [c.rekey_at for c in self.children.values()
                      if c.rekey_at is not None and not c.rekeying and not c.deleting]
            if self.config.dpd_delay:
                times.append(self.last_heard + self.config.dpd_delay)
        return min(times) if times else None

    @property
    def established(self) -> bool:
        return self.state is IkeState.ESTABLISHED

    @property
    def finished(self) -> bool:
        return self.state is IkeState.DELETED

    @property
    def our_spi(self) -> bytes:
        return self.spi_i if self.initiator else self.spi_r

    def handle_timer(self, *, now: float) -> None:
        req = self._request
        if req is not None and now >= req.deadline:
            req.tries += 1
            if req.tries > self.config.retransmit_tries:
                self._gone("peer not responding", now=now)
                return
            self._emit_datagram(req.data)
            req.deadline = now + self.config.retransmit_timeout * self.config.retransmit_base ** req.tries
        if self.state is not IkeState.ESTABLISHED:
            return
        for child in list(self.children.values()):
            if child.rekey_at is not None and now >= child.rekey_at and not child.rekeying \
                    and not child.deleting:
                self.rekey_child(child.spi_in, now=now)
        if self.config.dpd_delay and now >= self.last_heard + self.config.dpd_delay \
                and self._request is None and not self._pending:
            self.last_heard = now
            self._queue(lambda t: self._send_request(ExchangeType.INFORMATIONAL, [], self._on_empty, now=t), now=now)

    # -- commands ------------------------------------------------------------------------
    def initiate(self, *, now: float) -> None:
        """Start IKE_SA_INIT; the first child with start_action "start" (else the first child)
        comes up with IKE_AUTH, the other "start" children with CREATE_CHILD_SA after it."""
        if not self.initiator or self.state is not IkeState.CREATED:
            raise RuntimeError("initiate() is for a new initiator session")
        self._ni = self._random(NONCE_BYTES)
        self._make_ke(self._suites[0].group)
        self._set_state(IkeState.INIT_SENT)
        self._send_init(now=now)

    def create_child(self, name: str, *, now: float) -> None:
        config = self.config.child(name)
        self._queue(lambda t: self._send_create_child(config, None, now=t), now=now)

    def rekey_child(self, spi_in: int, *, now: float) -> None:
        child = self.children.get(spi_in)
        if child is None or child.rekeying or child.deleting:
            return
        child.rekeying = True
        self._queue(lambda t: self._send_create_child(child.config, child, now=t), now=now)

    def delete_child(self, spi_in: int, *, now: float, reason: str = "deleted") -> None:
        child = self.children.get(spi_in)
        if child is None or child.deleting:
            return
        child.deleting = True

        def send(t: float) -> None:
            payload = DeletePayload(ProtocolId.ESP, 4, (struct.pack("!I", child.spi_in),))
            self._send_request(ExchangeType.INFORMATIONAL, [payload],
                               lambda m, p, tt: self._remove_child(child, reason, now=tt), now=t)
        self._queue(send, now=now)

    def delete(self, *, now: float) -> None:
        """Delete the IKE SA and its children (INFORMATIONAL with a Delete of protocol IKE)."""
        if self.state is IkeState.ESTABLISHED:
            self._set_state(IkeState.DELETING)
            self._pending.clear()
            self._request = None
            self._send_request(ExchangeType.INFORMATIONAL, [DeletePayload(ProtocolId.IKE)],
                               lambda m, p, t: self._gone("deleted", now=t), now=now)
        elif self.state not in (IkeState.DELETING, IkeState.DELETED):
            self._gone("deleted before it was established", now=now)

    # -- receiving -----------------------------------------------------------------------
    def receive(self, data: bytes, *, remote: tuple[str, int], local: tuple[str, int],
                nat_t: bool, now: float, message: Message | None = None) -> None:
        """One IKE message for this IKE SA (the endpoint has matched the SPIs)."""
        if self.state is IkeState.DELETED:
            return
        try:
            msg = message or parse_message(data)
        except RemoteIkeError as exc:
            self.ignored += 1
            log.debug("%s: malformed message ignored: %s", self.config.name, exc)
            return
        if msg.is_response:
            self._receive_response(msg, data, remote=remote, local=local, nat_t=nat_t, now=now)
        else:
            self._receive_request(msg, data, remote=remote, local=local, nat_t=nat_t, now=now)

    def _receive_response(self, msg: Message, data: bytes, *, remote, local, nat_t, now) -> None:
        req = self._request
        if req is None or msg.message_id != req.message_id or msg.exchange_type != req.exchange:
            self.ignored += 1
            return
        if req.exchange == ExchangeType.IKE_SA_INIT:
            payloads = list(msg.payloads)
        else:
            payloads = self._decrypt(msg, data)
            if payloads is None:
                return
        self.last_heard = now
        self._request = None
        self._received = data
        if req.exchange != ExchangeType.IKE_SA_INIT and nat_t and remote != self.remote:
            self.remote = remote
        req.on_response(msg, payloads, now)
        self._next_request(now)

    def _receive_request(self, msg: Message, data: bytes, *, remote, local, nat_t, now) -> None:
        if msg.exchange_type == ExchangeType.IKE_SA_INIT:
            if not self.initiator and self.state is IkeState.INIT_ANSWERED and data == self._init_request:
                self._emit_datagram(self._init_response)         # a retransmitted request
            else:
                self.ignored += 1
            return
        if self.state is IkeState.INIT_ANSWERED and msg.exchange_type != ExchangeType.IKE_AUTH:
            self.ignored += 1
            return
        if self._last_response and msg.message_id == self._last_response[0] \
                and msg.message_id == self._peer_mid - 1:
            payloads = self._decrypt(msg, data)
            if payloads is not None:
                self._emit_datagram(self._last_response[1])
            return
        if msg.message_id != self._peer_mid:
            self.ignored += 1
            return
        payloads = self._decrypt(msg, data)
        if payloads is None:
            return
        self.last_heard = now
        if nat_t and (remote != self.remote or not self.nat_t):
            self.remote, self.local, self.nat_t = remote, local, True
        handler = {ExchangeType.IKE_AUTH: self._on_auth_request,
                   ExchangeType.CREATE_CHILD_SA: self._on_create_child_request,
                   ExchangeType.INFORMATIONAL: self._on_informational_request}.get(msg.exchange_type)
        if handler is None or (msg.exchange_type == ExchangeType.IKE_AUTH
                               and self.state is not IkeState.INIT_ANSWERED) \
                or (msg.exchange_type != ExchangeType.IKE_AUTH and self.state not in
                    (IkeState.ESTABLISHED, IkeState.DELETING)):
            self.ignored += 1
            return
        if isinstance(payloads, RemoteIkeError):
            self._respond(msg, [NotifyPayload(payloads.notify or NotifyType.INVALID_SYNTAX,
                                              payloads.data)], now=now)
            if msg.exchange_type == ExchangeType.IKE_AUTH:
                self._fail("IKE_AUTH request malformed", NotifyType.INVALID_SYNTAX, now=now)
            return
        handler(msg, payloads, now)

    def _decrypt(self, msg: Message, data: bytes):
        """The inner payloads of an SK message, a RemoteIkeError for an authentic message whose
        content is malformed (answered with its notify), or None (dropped: not authentic)."""
        if self._sk is None or not msg.payloads or not isinstance(msg.payloads[-1], SkPayload):
            self.ignored += 1
            return None
        sk = msg.payloads[-1]
        head_len = len(data) - len(sk.data)
        try:
            inner = self._sk.open(data[:head_len], sk.data)
        except AuthenticationError:
            self.ignored += 1
            return None
        try:
            return list(msg.payloads[:-1]) + parse_payloads(sk.first_inner_type, inner)
        except RemoteIkeError as exc:
            if msg.is_response:
                self.ignored += 1
                return None
            return exc

    # -- sending -------------------------------------------------------------------------
    def _emit_datagram(self, data: bytes) -> None:
        self._out.append(Datagram(data, self.remote, self.local, self.nat_t))

    def _flags(self, response: bool) -> int:
        flags = IkeFlags.INITIATOR if self.initiator else 0
        return flags | (IkeFlags.RESPONSE if response else 0)

    def _encode(self, exchange: int, message_id: int, payloads: list, *, response: bool) -> bytes:
        flags = self._flags(response)
        if exchange == ExchangeType.IKE_SA_INIT:
            return serialize_message(Message(self.spi_i, self.spi_r or bytes(8), exchange, flags,
                                             message_id, tuple(payloads)))
        first, inner = serialize_payloads(payloads)
        size = self._sk.seal_length(len(inner))
        draft = serialize_message(Message(self.spi_i, self.spi_r, exchange, flags, message_id,
                                          (SkPayload(first, bytes(size)),)))
        head = draft[:len(draft) - size]
        iv = None if self.suite.aead else self._random(self._sk.iv_bytes)
        return head + self._sk.seal(head, inner, random_iv=iv)

    def _queue(self, send: Callable[[float], None], *, now: float) -> None:
        """Run `send` now if no request is outstanding, else when the current one completes
        (one request in flight: the window size of RFC 7296 2.3)."""
        if self._request is None and not self._pending:
            send(now)
        else:
            self._pending.append(send)

    def _next_request(self, now: float) -> None:
        while self._request is None and self._pending and self.state in (
                IkeState.ESTABLISHED, IkeState.AUTH_SENT, IkeState.INIT_ANSWERED):
            self._pending.popleft()(now)

    def _send_request(self, exchange: int, payloads: list, on_response, *, now: float) -> None:
        mid = self._next_mid
        self._next_mid += 1
        data = self._encode(exchange, mid, payloads, response=False)
        self._request = _Request(exchange, mid, data, on_response,
                                 now + self.config.retransmit_timeout)
        self._emit_datagram(data)

    def _respond(self, msg: Message, payloads: list, *, now: float) -> None:
        data = self._encode(msg.exchange_type, msg.message_id, payloads, response=True)
        self._last_response = (msg.message_id, data)
        self._peer_mid = msg.message_id + 1
        self._emit_datagram(data)

    # -- IKE_SA_INIT ---------------------------------------------------------------------
    def _make_ke(self, group: int) -> None:
        family = KE_BY_GROUP[group].family
        self._ke = self.registry.select(family, None, self.config.backend).key_exchange(family)

    def _nat_notifies(self, spi_r: bytes) -> list[NotifyPayload]:
        source = nat_hash(self.spi_i, spi_r, self.local)
        if self.config.encap:                   # claim a NAT, as strongSwan's encap = yes does
            source = hashlib.sha1(b"ipsec-suite forced encap" + self._random(16)).digest()
        return [NotifyPayload(NotifyType.NAT_DETECTION_SOURCE_IP, source),
                NotifyPayload(NotifyType.NAT_DETECTION_DESTINATION_IP,
                              nat_hash(self.spi_i, spi_r, self.remote))]

    def _send_init(self, *, now: float) -> None:
        proposals = [ike_proposal(parse_ike_proposal(text), i + 1)
                     for i, text in enumerate(self._proposal_texts)]
        payloads: list = []
        if self._cookie:
            payloads.append(NotifyPayload(NotifyType.COOKIE, self._cookie))
        payloads += [SaPayload(tuple(proposals)), KePayload(self._ke.group, self._ke.public_bytes),
                     NoncePayload(self._ni), *self._nat_notifies(bytes(8)), *init_payloads(self.config)]
        self._next_mid = 0
        self._send_request(ExchangeType.IKE_SA_INIT, payloads, self._on_init_response, now=now)
        self._init_request = self._request.data

    def _on_init_response(self, msg: Message, payloads: list, now: float) -> None:
        notifies = {p.notify_type: p for p in payloads if isinstance(p, NotifyPayload)}
        if NotifyType.COOKIE in notifies and self._init_tries < MAX_INIT_RETRIES:
            self._init_tries += 1
            self._cookie = notifies[NotifyType.COOKIE].data
            self._send_init(now=now)
            return
        if NotifyType.INVALID_KE_PAYLOAD in notifies and self._init_tries < MAX_INIT_RETRIES:
            data = notifies[NotifyType.INVALID_KE_PAYLOAD].data
            group = struct.unpack("!H", data)[0] if len(data) == 2 else None
            if group in {s.group for s in self._suites} and group != self._ke.group:
                self._init_tries += 1
                self._make_ke(group)
                self._send_init(now=now)
                return
            self._fail(f"peer asked for key exchange method {group}, which we do not offer",
                       NotifyType.INVALID_KE_PAYLOAD, now=now)
            return
        errors = [t for t in notifies if t < 16384]
        if errors:
            self._fail(f"peer refused IKE_SA_INIT: {NotifyType(errors[0]).name}"
                       if errors[0] in NotifyType._value2member_map_ else f"peer: notify {errors[0]}",
                       errors[0], now=now)
            return
        sa = next((p for p in payloads if isinstance(p, SaPayload)), None)
        ke = next((p for p in payloads if isinstance(p, KePayload)), None)
        nonce = next((p for p in payloads if isinstance(p, NoncePayload)), None)
        if sa is None or ke is None or nonce is None or len(sa.proposals) != 1 \
                or msg.spi_r == bytes(8):
            self._fail("IKE_SA_INIT response without SA, KE or Nonce", NotifyType.INVALID_SYNTAX, now=now)
            return
        try:
            suite = suite_of(sa.proposals[0])
        except ProposalError as exc:
            self._fail(f"peer chose an unknown transform: {exc}", NotifyType.NO_PROPOSAL_CHOSEN, now=now)
            return
        if suite not in self._suites or ke.group != suite.group or ke.group != self._ke.group:
            self._fail(f"peer chose {suite.keyword}, which we did not offer", NotifyType.NO_PROPOSAL_CHOSEN,
                       now=now)
            return
        self.spi_r = msg.spi_r
        self._nr = nonce.nonce if hasattr(nonce, "nonce") else nonce.data
        self._init_response = self._received
        self._check_nat(notifies)
        try:
            shared = self._ke.shared_secret(ke.data)
        except KeyExchangeError as exc:
            self._fail(f"peer's key exchange value refused: {exc}", NotifyType.INVALID_KE_PAYLOAD, now=now)
            return
        if not self._setup_keys(suite, shared, now=now):
            return
        if self.nat_local or self.nat_remote:
            self.nat_t = True
            self.local = (self.local[0], self.config.nat_t_port)
            self.remote = (self.remote[0], self.config.nat_t_port)
        self._send_auth(now=now)

    def _check_nat(self, notifies: dict) -> None:
        source = notifies.get(NotifyType.NAT_DETECTION_SOURCE_IP)
        dest = notifies.get(NotifyType.NAT_DETECTION_DESTINATION_IP)
        if source is not None and dest is not None:
            self.nat_remote = source.data != nat_hash(self.spi_i, self.spi_r, self.remote)
            self.nat_local = dest.data != nat_hash(self.spi_i, self.spi_r, self.local)
        if self.config.encap:
            self.nat_local = True

    def _setup_keys(self, suite: IkeSuite, shared: bytes, *, now: float) -> bool:
        try:
            self.crypto = IkeCrypto(suite, registry=self.registry, backend=self.config.backend)
            _, keys = derive_ike_keys(self.crypto, shared=shared, ni=self._ni, nr=self._nr,
                                      spi_i=self.spi_i, spi_r=self.spi_r)
            if self.initiator:
                self._sk = self.crypto.protector((keys.sk_ei, keys.sk_er), (keys.sk_ai, keys.sk_ar))
            else:
                self._sk = self.crypto.protector((keys.sk_er, keys.sk_ei), (keys.sk_ar, keys.sk_ai))
        except BackendError as exc:
            self._fail(f"no backend for {suite.keyword}: {exc}", None, now=now)
            return False
        self.suite, self.keys = suite, keys
        self._auth = make_authenticator(self.config, self.crypto)
        return True

    def respond_init(self, msg: Message, data: bytes, *, now: float) -> bool:
        """Answer an IKE_SA_INIT request (a new responder session).  False when refused: the
        answer (NO_PROPOSAL_CHOSEN, INVALID_KE_PAYLOAD) is queued and the session is done."""
        self._peer_mid = 1
        self.spi_i = msg.spi_i
        payloads = list(msg.payloads)
        sa = next((p for p in payloads if isinstance(p, SaPayload)), None)
        ke = next((p for p in payloads if isinstance(p, KePayload)), None)
        nonce = next((p for p in payloads if isinstance(p, NoncePayload)), None)
        if sa is None or ke is None or nonce is None:
            return self._refuse_init(msg, NotifyType.INVALID_SYNTAX, b"", "IKE_SA_INIT without SA, KE or Nonce",
                                     now=now)
        ours = [ike_proposal([s], 1) for s in self._suites]
        chosen = choose(sa.proposals, ours, protocol=ProtocolId.IKE)
        if chosen is None:
            return self._refuse_init(msg, NotifyType.NO_PROPOSAL_CHOSEN, b"",
                                     "no proposal of the initiator is acceptable", now=now)
        suite = suite_of(chosen)
        if ke.group != suite.group:
            return self._refuse_init(msg, NotifyType.INVALID_KE_PAYLOAD, struct.pack("!H", suite.group),
                                     f"initiator sent KE {ke.group}, {suite.group} chosen", now=now)
        self._ni = nonce.nonce if hasattr(nonce, "nonce") else nonce.data
        self._nr = self._random(NONCE_BYTES)
        self._make_ke(suite.group)
        try:
            shared = self._ke.shared_secret(ke.data)
        except KeyExchangeError as exc:
            return self._refuse_init(msg, NotifyType.INVALID_KE_PAYLOAD, struct.pack("!H", suite.group),
                                     f"initiator's key exchange value refused: {exc}", now=now)
        notifies = {p.notify_type: p for p in payloads if isinstance(p, NotifyPayload)}
        self._check_nat(notifies)
        if not self._setup_keys(suite, shared, now=now):
            return False
        self._init_request = data
        self._set_state(IkeState.INIT_ANSWERED)
        response = [SaPayload((chosen,)), KePayload(self._ke.group, self._ke.public_bytes),
                    NoncePayload(self._nr), *self._nat_notifies(self.spi_r), *init_payloads(self.config)]
        self._init_response = serialize_message(Message(
            self.spi_i, self.spi_r, ExchangeType.IKE_SA_INIT, self._flags(True), msg.message_id,
            tuple(response)))
        self._emit_datagram(self._init_response)
        return True

    def _refuse_init(self, msg: Message, notify: int, data: bytes, reason: str, *, now: float) -> bool:
        self._out.append(Datagram(serialize_message(Message(
            msg.spi_i, bytes(8), ExchangeType.IKE_SA_INIT, IkeFlags.RESPONSE, msg.message_id,
            (NotifyPayload(notify, data),))), self.remote, self.local, self.nat_t))
        if notify != NotifyType.INVALID_KE_PAYLOAD:
            self._events.append(IkeSaFailed(self.config.name, reason, notify))
        self.state = IkeState.DELETED
        return False

    # -- IKE_AUTH ------------------------------------------------------------------------
    def _signed_octets(self, *, ours: bool, id_payload: IdPayload) -> bytes:
        """What an AUTH covers (RFC 7296 2.15): the signer's IKE_SA_INIT message, the peer's
        nonce, and prf(SK_p, RestOfIDPayload) with the signer's SK_p."""
        k = self.keys
        if ours == self.initiator:      # the initiator's AUTH
            message, nonce, sk_p = self._init_request, self._nr, k.sk_pi
        else:
            message, nonce, sk_p = self._init_response, self._ni, k.sk_pr
        return message + nonce + self.crypto.prf(sk_p, id_payload.encode_body())

    def _proof(self, id_payload: IdPayload) -> list:
        return self._auth.local_payloads(signed_octets=self._signed_octets(ours=True, id_payload=id_payload),
                                         id_payload=id_payload)

    def _check_proof(self, payloads: list, id_payload: IdPayload) -> str | None:
        if not _id_matches(self.config.remote_id, id_payload):
            return f"identity {id_text(id_payload)} is not {self.config.remote_id}"
        return self._auth.verify(payloads, id_payload=id_payload,
                                 signed_octets=self._signed_octets(ours=False, id_payload=id_payload))

    def _child_proposals(self, config: ChildConfig, spi_in: int, group_of: list | None = None) -> list[Proposal]:
        spi = struct.pack("!I", spi_in)
        return [esp_proposal(text, i + 1, spi=spi) for i, text in enumerate(config.esp_proposals)]

    def _new_spi(self) -> int:
        while True:
            spi = struct.unpack("!I", self._random(4))[0]
            if spi >= 256 and spi not in self.children:
                return spi

    def _first_child(self) -> ChildConfig | None:
        starts = [c for c in self.config.children if c.start_action == "start"]
        return starts[0] if starts else (self.config.children[0] if self.config.children else None)

    def _send_auth(self, *, now: float) -> None:
        self._set_state(IkeState.AUTH_SENT)
        idi = _id_payload(IdiPayload, self.config.local_id, self.local[0])
        payloads: list = [idi]
        if self.config.remote_id and self.config.remote_id != "%any":
            payloads.append(_id_payload(IdrPayload, self.config.remote_id, self.remote[0]))
        payloads += self._proof(idi)
        child = self._first_child()
        if child is not None:
            req = _ChildRequest(child, self._new_spi())
            req.proposals = self._child_proposals(child, req.spi_in)
            self._auth_child = req
            if child.mode == "transport":
                payloads.append(NotifyPayload(NotifyType.USE_TRANSPORT_MODE))
            payloads += [SaPayload(tuple(req.proposals)), TsiPayload(_ts_payload(child.local_ts)),
                         TsrPayload(_ts_payload(child.remote_ts))]
        self._send_request(ExchangeType.IKE_AUTH, payloads, self._on_auth_response, now=now)

    def _on_auth_response(self, msg: Message, payloads: list, now: float) -> None:
        notifies = {p.notify_type: p for p in payloads if isinstance(p, NotifyPayload)}
        idr = next((p for p in payloads if isinstance(p, IdrPayload)), None)
        auth = next((p for p in payloads if isinstance(p, AuthPayload)), None)
        if NotifyType.AUTHENTICATION_FAILED in notifies or idr is None or auth is None:
            why = "peer: AUTHENTICATION_FAILED" if NotifyType.AUTHENTICATION_FAILED in notifies \
                else "IKE_AUTH response without IDr or AUTH"
            self._fail(why, NotifyType.AUTHENTICATION_FAILED, now=now)
            return
        why = self._check_proof(payloads, idr)
        if why is not None:
            self._fail(f"responder {id_text(idr)} failed authentication: {why}",
                       NotifyType.AUTHENTICATION_FAILED, now=now)
            return
        self._remote_id = id_text(idr)
        self._set_state(IkeState.ESTABLISHED)
        self._emit_established()
        if self._auth_child is not None:
            self._finish_child(self._auth_child, payloads, notifies, now=now)
            self._auth_child = None
        self._flush_child_events()
        first = self._first_child()
        for child in self.config.children:
            if child.start_action == "start" and child is not first:
                self.create_child(child.name, now=now)

    def _on_auth_request(self, msg: Message, payloads: list, now: float) -> None:
        idi = next((p for p in payloads if isinstance(p, IdiPayload)), None)
        auth = next((p for p in payloads if isinstance(p, AuthPayload)), None)
        if idi is None or auth is None:
            self._respond(msg, [NotifyPayload(NotifyType.INVALID_SYNTAX)], now=now)
            self._fail("IKE_AUTH request without IDi or AUTH", NotifyType.INVALID_SYNTAX, now=now)
            return
        why = self._check_proof(payloads, idi)
        if why is not None:
            self._respond(msg, [NotifyPayload(NotifyType.AUTHENTICATION_FAILED)], now=now)
            self._fail(f"initiator {id_text(idi)} failed authentication: {why}",
                       NotifyType.AUTHENTICATION_FAILED, now=now)
            return
        self._remote_id = id_text(idi)
        idr = _id_payload(IdrPayload, self.config.local_id, self.local[0])
        response: list = [idr, *self._proof(idr)]
        self._set_state(IkeState.ESTABLISHED)
        if any(isinstance(p, SaPayload) for p in payloads):
            response += self._answer_child(payloads, ni=self._ni, nr=self._nr, rekey_of=None, now=now)
        self._respond(msg, response, now=now)
        self._emit_established()
        self._flush_child_events()

    def _emit_established(self) -> None:
        local_id = self.config.local_id or self.local[0]
        self._events.append(IkeSaEstablished(
            self.config.name, int.from_bytes(self.spi_i, "big"), int.from_bytes(self.spi_r, "big"),
            self.initiator, self.suite.keyword, local_id, self._remote_id, self.nat_local,
            self.nat_remote, self._sk.backend))

    # -- CHILD SAs -----------------------------------------------------------------------
    def _answer_child(self, payloads: list, *, ni: bytes, nr: bytes, rekey_of: ChildSa | None,
                      now: float, ke_response: list | None = None) -> list:
        """The responder's part of a CHILD SA negotiation: the payloads to answer with (SA,
        TSi, TSr, or an error notify).  Installs the CHILD SA when it succeeds."""
        sa = next((p for p in payloads if isinstance(p, SaPayload)), None)
        tsi = next((p for p in payloads if isinstance(p, TsiPayload)), None)
        tsr = next((p for p in payloads if isinstance(p, TsrPayload)), None)
        transport = any(isinstance(p, NotifyPayload) and p.notify_type == NotifyType.USE_TRANSPORT_MODE
                        for p in payloads)
        if sa is None or tsi is None or tsr is None:
            return [NotifyPayload(NotifyType.INVALID_SYNTAX)]
        candidates = [rekey_of.config] if rekey_of else list(self.config.children)
        picked = None
        for config in candidates:
            local = _narrow(tsr.selectors, _ts_payload(config.local_ts))
            remote = _narrow(tsi.selectors, _ts_payload(config.remote_ts))
            if local and remote:
                picked = (config, local, remote)
                break
        if picked is None:
            self._child_failed(candidates[0].name if candidates else "-", "TS_UNACCEPTABLE (ours)")
            return [NotifyPayload(NotifyType.TS_UNACCEPTABLE)]
        config, local, remote = picked
        if (config.mode == "transport") != transport:
            self._child_failed(config.name, "mode mismatch")
            return [NotifyPayload(NotifyType.NO_PROPOSAL_CHOSEN)]
        spi_in = self._new_spi()
        ours = self._child_proposals(config, spi_in)
        chosen = choose(sa.proposals, ours, protocol=ProtocolId.ESP)
        if chosen is None or len(chosen.spi) != 4:
            self._child_failed(config.name, "NO_PROPOSAL_CHOSEN (ours)")
            return [NotifyPayload(NotifyType.NO_PROPOSAL_CHOSEN)]
        shared = b""
        response_extra: list = []
        groups = [t.transform_id for t in chosen.transforms if t.transform_type == TransformType.DH and t.transform_id]
        if groups:
            ke = next((p for p in payloads if isinstance(p, KePayload)), None)
            if ke is None or ke.group != groups[0]:
                return [NotifyPayload(NotifyType.INVALID_KE_PAYLOAD, struct.pack("!H", groups[0]))]
            family = KE_BY_GROUP[groups[0]].family
            mine = self.registry.select(family, None, self.config.backend).key_exchange(family)
            try:
                shared = mine.shared_secret(ke.data)
            except KeyExchangeError:
                return [NotifyPayload(NotifyType.INVALID_KE_PAYLOAD, struct.pack("!H", groups[0]))]
            response_extra.append(KePayload(mine.group, mine.public_bytes))
        spi_out = struct.unpack("!I", chosen.spi)[0]
        keyword = esp_keyword_of(chosen)
        self._install_child(config, keyword, spi_in=spi_in, spi_out=spi_out, ni=ni, nr=nr,
                            shared=shared, local_ts=local, remote_ts=remote, rekey_of=rekey_of, now=now)
        ours_chosen = Proposal(chosen.number, ProtocolId.ESP, struct.pack("!I", spi_in), chosen.transforms)
        out: list = [NotifyPayload(NotifyType.USE_TRANSPORT_MODE)] if transport else []
        if ke_response is not None:
            ke_response.extend(response_extra)
            response_extra = []
        return out + [SaPayload((ours_chosen,)), *response_extra, TsiPayload(remote), TsrPayload(local)]

    def _finish_child(self, req: _ChildRequest, payloads: list, notifies: dict, *, now: float,
                      nr: bytes | None = None) -> None:
        """The initiator's side: install the CHILD SA the response accepted, or report why not."""
        errors = [t for t in notifies if t < 16384]
        sa = next((p for p in payloads if isinstance(p, SaPayload)), None)
        tsi = next((p for p in payloads if isinstance(p, TsiPayload)), None)
        tsr = next((p for p in payloads if isinstance(p, TsrPayload)), None)
        if errors or sa is None or tsi is None or tsr is None or len(sa.proposals) != 1:
            name = NotifyType(errors[0]).name if errors and errors[0] in NotifyType._value2member_map_ \
                else (f"notify {errors[0]}" if errors else "no SA/TS in the response")
            self._child_failed(req.config.name, f"peer: {name}")
            if req.rekey_of is not None:
                req.rekey_of.rekeying = False
            return
        chosen = sa.proposals[0]
        offered = {(t.transform_type, t.transform_id, t.key_length) for p in req.proposals for t in p.transforms}
        if any((t.transform_type, t.transform_id, t.key_length) not in offered for t in chosen.transforms) \
                or len(chosen.spi) != 4:
            self._child_failed(req.config.name, "peer chose a proposal we did not offer")
            return
        shared = b""
        if req.ke is not None:
            ke = next((p for p in payloads if isinstance(p, KePayload)), None)
            try:
                if ke is None or ke.group != req.ke.group:
                    raise KeyExchangeError("no KE of our group in the response")
                shared = req.ke.shared_secret(ke.data)
            except KeyExchangeError as exc:
                self._child_failed(req.config.name, f"peer's key exchange refused: {exc}")
                return
        keyword = esp_keyword_of(chosen)
        self._install_child(req.config, keyword, spi_in=req.spi_in,
                            spi_out=struct.unpack("!I", chosen.spi)[0],
                            ni=req.nonce or self._ni, nr=nr or self._nr, shared=shared,
                            local_ts=tsi.selectors, remote_ts=tsr.selectors, rekey_of=req.rekey_of, now=now)
        self._flush_child_events()
        if req.rekey_of is not None:
            self.delete_child(req.rekey_of.spi_in, now=now, reason="rekeyed")

    def _install_child(self, config: ChildConfig, keyword: str, *, spi_in: int, spi_out: int,
                       ni: bytes, nr: bytes, shared: bytes, local_ts, remote_ts,
                       rekey_of: ChildSa | None, now: float) -> None:
        proposal = parse_esp(keyword)
        encr_bytes = proposal.enc_key_bytes
        integ_bytes = proposal.integ_info.key_bytes if proposal.integ_info else 0
        ei, ai, er, ar = child_keymat(self.crypto, self.keys.sk_d, ni=ni, nr=nr, shared=shared,
                                      encr_bytes=encr_bytes, integ_bytes=integ_bytes)
        (out_e, out_a), (in_e, in_a) = ((ei, ai), (er, ar)) if self.initiator else ((er, ar), (ei, ai))
        tunnel = config.mode == "tunnel"
        ours = ipaddress.ip_address(self.local[0])
        peer = ipaddress.ip_address(self.remote[0])
        encap = (self.local[1], self.remote[1]) if (self.nat_t or self.config.encap) else None
        hard = Lifetime(None, None, config.hard_time)
        soft = Lifetime(config.rekey_bytes or None, config.rekey_packets or None, None)
        common = dict(mode=Mode.TUNNEL if tunnel else Mode.TRANSPORT, proposal=proposal,
                      replay_window=config.replay_window, backend=config.backend, hard=hard)
        inbound = SaConfig(name=f"{config.name}-in-{spi_in:08x}", spi=spi_in, direction=Direction.IN,
                           enc_key=in_e, integ_key=in_a, local=ours if tunnel else None,
                           remote=peer if tunnel else None,
                           encap_ports=(encap[1], encap[0]) if encap else None, **common)
        outbound = SaConfig(name=f"{config.name}-out-{spi_out:08x}", spi=spi_out,
                            direction=Direction.OUT, enc_key=out_e, integ_key=out_a,
                            local=ours if tunnel else None, remote=peer if tunnel else None,
                            encap_ports=encap, soft=soft, **common)
        rekey_at = now + config.rekey_time if config.rekey_time else None
        child = ChildSa(config, spi_in, spi_out, keyword, inbound, outbound, tuple(local_ts),
                        tuple(remote_ts), now, rekey_at)
        self.children[spi_in] = child
        self._child_events.append(ChildSaInstalled(
            self.config.name, config.name, inbound, outbound, keyword,
            tuple(_ts_str(t) for t in local_ts), tuple(_ts_str(t) for t in remote_ts),
            (rekey_of.spi_in, rekey_of.spi_out) if rekey_of else None))

    def _flush_child_events(self) -> None:
        self._events.extend(self._child_events)
        self._child_events.clear()

    def _child_failed(self, name: str, reason: str) -> None:
        self._child_events.append(ChildSaFailed(self.config.name, name, reason))

    def _send_create_child(self, config: ChildConfig, rekey_of: ChildSa | None, *, now: float) -> None:
        if self.state is not IkeState.ESTABLISHED:
            return
        if rekey_of is not None and rekey_of.spi_in not in self.children:
            return
        req = _ChildRequest(config, self._new_spi(), nonce=self._random(NONCE_BYTES), rekey_of=rekey_of)
        req.proposals = self._child_proposals(config, req.spi_in)
        payloads: list = []
        if rekey_of is not None:
            payloads.append(NotifyPayload(NotifyType.REKEY_SA, protocol_id=ProtocolId.ESP,
                                          spi=struct.pack("!I", rekey_of.spi_in)))
        if config.mode == "transport":
            payloads.append(NotifyPayload(NotifyType.USE_TRANSPORT_MODE))
        payloads += [SaPayload(tuple(req.proposals)), NoncePayload(req.nonce)]
        groups = [t.transform_id for t in req.proposals[0].transforms
                  if t.transform_type == TransformType.DH and t.transform_id]
        if groups:
            family = KE_BY_GROUP[groups[0]].family
            req.ke = self.registry.select(family, None, self.config.backend).key_exchange(family)
            payloads.append(KePayload(req.ke.group, req.ke.public_bytes))
        local_ts = rekey_of.local_ts if rekey_of else _ts_payload(config.local_ts)
        remote_ts = rekey_of.remote_ts if rekey_of else _ts_payload(config.remote_ts)
        payloads += [TsiPayload(local_ts), TsrPayload(remote_ts)]

        def on_response(msg: Message, resp: list, t: float) -> None:
            nonce = next((p for p in resp if isinstance(p, NoncePayload)), None)
            notifies = {p.notify_type: p for p in resp if isinstance(p, NotifyPayload)}
            if nonce is None and not [n for n in notifies if n < 16384]:
                notifies[NotifyType.INVALID_SYNTAX] = None
            self._finish_child(req, resp, notifies, now=t,
                               nr=(nonce.nonce if hasattr(nonce, "nonce") else nonce.data) if nonce else None)
            self._flush_child_events()
        self._send_request(ExchangeType.CREATE_CHILD_SA, payloads, on_response, now=now)

    def _on_create_child_request(self, msg: Message, payloads: list, now: float) -> None:
        nonce = next((p for p in payloads if isinstance(p, NoncePayload)), None)
        sa = next((p for p in payloads if isinstance(p, SaPayload)), None)
        if nonce is None or sa is None:
            self._respond(msg, [NotifyPayload(NotifyType.INVALID_SYNTAX)], now=now)
            return
        if sa.proposals and sa.proposals[0].protocol_id == ProtocolId.IKE:
            # IKE SA rekeying is not built yet: refuse it as RFC 7296 2.8 allows.
            self._respond(msg, [NotifyPayload(NotifyType.NO_PROPOSAL_CHOSEN)], now=now)
            return
        rekey = next((p for p in payloads if isinstance(p, NotifyPayload)
                      and p.notify_type == NotifyType.REKEY_SA), None)
        rekey_of = None
        if rekey is not None:
            spi = struct.unpack("!I", rekey.spi)[0] if len(rekey.spi) == 4 else -1
            rekey_of = next((c for c in self.children.values() if c.spi_out == spi), None)
            if rekey_of is None:
                self._respond(msg, [NotifyPayload(NotifyType.CHILD_SA_NOT_FOUND, protocol_id=ProtocolId.ESP,
                                                  spi=rekey.spi)], now=now)
                return
        nr = self._random(NONCE_BYTES)
        ni = nonce.nonce if hasattr(nonce, "nonce") else nonce.data
        extra: list = []
        answer = self._answer_child(payloads, ni=ni, nr=nr, rekey_of=rekey_of, now=now, ke_response=extra)
        if any(isinstance(p, SaPayload) for p in answer):
            sa_at = next(i for i, p in enumerate(answer) if isinstance(p, SaPayload))
            answer = answer[:sa_at + 1] + [NoncePayload(nr), *extra] + answer[sa_at + 1:]
            if rekey_of is not None:
                rekey_of.rekeying = True
        self._respond(msg, answer, now=now)
        self._flush_child_events()

    def _remove_child(self, child: ChildSa, reason: str, *, now: float) -> None:
        if self.children.pop(child.spi_in, None) is not None:
            self._events.append(ChildSaDeleted(self.config.name, child.config.name, child.spi_in,
                                               child.spi_out, reason))

    # -- INFORMATIONAL -------------------------------------------------------------------
    def _on_empty(self, msg: Message, payloads: list, now: float) -> None:
        pass

    def _on_informational_request(self, msg: Message, payloads: list, now: float) -> None:
        deletes = [p for p in payloads if isinstance(p, DeletePayload)]
        if any(d.protocol_id == ProtocolId.IKE for d in deletes):
            self._respond(msg, [], now=now)
            self._gone("deleted by peer", now=now)
            return
        answer_spis = []
        for d in deletes:
            if d.protocol_id != ProtocolId.ESP:
                continue
            for raw in d.spis:
                spi = struct.unpack("!I", raw)[0] if len(raw) == 4 else -1
                child = next((c for c in self.children.values() if c.spi_out == spi), None)
                if child is None:
                    continue
                if not child.deleting:
                    answer_spis.append(struct.pack("!I", child.spi_in))
                self._remove_child(child, "rekeyed" if child.rekeying else "deleted by peer", now=now)
        response = [DeletePayload(ProtocolId.ESP, 4, tuple(answer_spis))] if answer_spis else []
        self._respond(msg, response, now=now)

    # -- endings -------------------------------------------------------------------------
    def _set_state(self, new: IkeState) -> None:
        if new not in TRANSITIONS[self.state]:
            raise RuntimeError(f"IKE SA {self.config.name}: no transition {self.state.value} -> {new.value}")
        self.state = new

    def _fail(self, reason: str, notify: int | None, *, now: float) -> None:
        if self.state is IkeState.DELETED:
            return
        if self.state in (IkeState.ESTABLISHED, IkeState.DELETING):
            self._gone(reason, now=now)
            return
        self._flush_child_events()
        self._events.append(IkeSaFailed(self.config.name, reason, notify))
        self._request = None
        self._pending.clear()
        self.state = IkeState.DELETED

    def _gone(self, reason: str, *, now: float) -> None:
        if self.state is IkeState.DELETED:
            return
        if self.state not in (IkeState.ESTABLISHED, IkeState.DELETING):
            self._fail(reason, None, now=now)
            return
        for child in list(self.children.values()):
            self._events.append(ChildSaDeleted(self.config.name, child.config.name, child.spi_in,
                                               child.spi_out, "IKE SA gone" if reason != "deleted" else "deleted"))
        self.children.clear()
        self._events.append(IkeSaDeleted(self.config.name, int.from_bytes(self.spi_i, "big"),
                                         int.from_bytes(self.spi_r, "big"), reason))
        self._request = None
        self._pending.clear()
        self._set_state(IkeState.DELETED)



__all__ = ["IkeSession", "IkeState", "TRANSITIONS", "ChildSa", "nat_hash", "id_text"]

"""A sans-I/O IKEv2 session (RFC 7296): one IKE SA and its CHILD SAs, either role.

Owns: the exchanges (IKE_SA_INIT with COOKIE and INVALID_KE_PAYLOAD retries, IKE_AUTH with the
first CHILD SA or none (RFC 6023), CREATE_CHILD_SA for new and rekeyed CHILD SAs and for the
IKE SA's own rekeying (RFC 7296 2.18), INFORMATIONAL deletes and liveness checks), rekey
collisions (2.8.1: the lowest of the four nonces loses) and TEMPORARY_FAILURE (2.25), the timers
(CHILD SA and IKE SA rekey with jitter, hard lifetimes, reauthentication, dead peer detection),
message IDs, retransmission with backoff, the response cache, IKE fragmentation (RFC 7383, with
`ipsec_core.ike.fragmentation`), NAT detection and the move to the NAT-T port, and the CHILD SAs'
key material.

A rekeyed IKE SA is a new `IkeSession` built here; the old one hands it its CHILD SAs and lists
it in `spawned`, from where the endpoint takes it.
Its surface is aioquic's, and `IkeEndpoint` (ipsec_core.ike.endpoint) drives many of them:

    session.receive(message_bytes, remote=(host, port), local=(host, port), nat_t=..., now=...)
    session.handle_timer(now=...)
    session.datagrams_to_send()        # `Datagram`s
    session.get_timer()                # when to call handle_timer next, or None
    session.next_event()               # `Event`s, or None

Must not: open a socket, read the clock, or log a key.  Time arrives as `now`.  The state of the
IKE SA changes only through `_set_state`, along `TRANSITIONS`.  A deleted or failed IKE SA
forgets its keys (best effort, `_forget_keys`).
"""
from __future__ import annotations

import collections
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
                                   Event, IkeSaDeleted, IkeSaEstablished, IkeSaFailed,
                                   IkeSaRekeyed)
from ipsec_core.ike.fragmentation import Reassembler, max_message_bytes, seal_fragments
from ipsec_core.ike.auth import init_payloads, make_authenticator
from ipsec_core.ike.certs import dn_equal, dn_from_text, dn_text, looks_like_dn
from ipsec_core.ike.keymat import IkeCrypto, IkeKeys, SkProtector, child_keymat, derive_ike_keys
from ipsec_core.ike.payloads import (AuthPayload, DeletePayload, IdiPayload, IdPayload, IdrPayload,
                                     KePayload, Message, NoncePayload, NotifyPayload, Proposal,
                                     RemoteIkeError, SaPayload, SkfPayload, SkPayload,
                                     TrafficSelector, TsiPayload,
                                     TsPayload, TsrPayload, UnknownPayload, parse_message,
                                     parse_payloads, serialize_message, serialize_payloads)
from ipsec_core.ike.proposals import (IkeSuite, choose, esp_keyword_of, esp_proposal, ike_proposal,
                                      parse_ike_proposal, suite_of)
from ipsec_core.transforms.keywords import parse_esp

log = logging.getLogger("ipsec.ike")

NONCE_BYTES = 32
#: How often an initiator retries IKE_SA_INIT after COOKIE / INVALID_KE_PAYLOAD answers.
MAX_INIT_RETRIES = 5
#: After TEMPORARY_FAILURE (the peer is busy with another rekey) a rekey is retried this long
#: later, plus up to REKEY_RETRY_JITTER_S, so that two peers do not collide again.
REKEY_RETRY_S = 2.0
REKEY_RETRY_JITTER_S = 3.0
#: After another failure (NO_PROPOSAL_CHOSEN, no answer...) the rekey is tried again this late;
#: the hard lifetime ends the SA if it never succeeds.
REKEY_FAILED_RETRY_S = 30.0
#: An IKE SA replaced by a rekey waits this long for the peer's delete before deleting itself;
#: so does the redundant IKE SA of a collision we won.
REKEYED_TIMEOUT_S = 30.0
#: Total messages are bounded by the retransmission tries; fragments by fragmentation.py.


class IkeState(str, enum.Enum):
    CREATED = "created"
    INIT_SENT = "init-sent"          # initiator: IKE_SA_INIT request out
    AUTH_SENT = "auth-sent"          # initiator: IKE_AUTH request out
    INIT_ANSWERED = "init-answered"  # responder: IKE_SA_INIT answered, waiting for IKE_AUTH
    ESTABLISHED = "established"
    REKEYED = "rekeyed"              # CHILD SAs moved to the new IKE SA; waiting for the delete
    DELETING = "deleting"            # our delete of the IKE SA is out
    DELETED = "deleted"


TRANSITIONS: dict[IkeState, frozenset[IkeState]] = {
    # CREATED -> ESTABLISHED: an IKE SA made by rekeying another starts established.
    IkeState.CREATED: frozenset({IkeState.INIT_SENT, IkeState.INIT_ANSWERED, IkeState.ESTABLISHED,
                                 IkeState.DELETED}),
    IkeState.INIT_SENT: frozenset({IkeState.AUTH_SENT, IkeState.DELETED}),
    IkeState.AUTH_SENT: frozenset({IkeState.ESTABLISHED, IkeState.DELETED}),
    IkeState.INIT_ANSWERED: frozenset({IkeState.ESTABLISHED, IkeState.DELETED}),
    IkeState.ESTABLISHED: frozenset({IkeState.REKEYED, IkeState.DELETING, IkeState.DELETED}),
    IkeState.REKEYED: frozenset({IkeState.DELETING, IkeState.DELETED}),
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
    hard_at: float | None = None
    rekeying: bool = False           # our rekey of it is queued or out
    deleting: bool = False           # our delete of it is out
    replaced: bool = False           # a rekeyed SA took over; the old one waits for its delete
    redundant: bool = False          # the losing SA of a rekey collision
    outbound_active: bool = True     # False: outbound traffic stays on the SA it replaces
    replaces: int | None = None      # inbound SPI of the SA this one rekeyed


@dataclass
class _Request:
    exchange: int
    message_id: int
    packets: tuple[bytes, ...]       # one message, or its fragments
    on_response: Callable[[Message, list, float], None]
    deadline: float
    tries: int = 0
    give_up_at: float | None = None  # a liveness check with dpd_timeout
    child: "_ChildRequest | None" = None
    ike_rekey: "_IkeRekey | None" = None
    touches_child: bool = False      # creating, rekeying or deleting a CHILD SA (RFC 7296 2.25)


@dataclass
class _ChildRequest:
    """What an outstanding CREATE_CHILD_SA (or the IKE_AUTH child) asked for."""

    config: ChildConfig
    spi_in: int
    nonce: bytes = b""
    ke: object | None = None
    rekey_of: ChildSa | None = None
    proposals: list[Proposal] = field(default_factory=list)
    #: (peer's Ni, our Nr, the CHILD SA we made) when the peer's rekey of the same SA crossed ours
    collision: tuple[bytes, bytes, ChildSa] | None = None


@dataclass
class _IkeRekey:
    """Our CREATE_CHILD_SA that rekeys the IKE SA."""

    spi: bytes
    nonce: bytes
    ke: object
    ke_retried: bool = False
    #: (the IKE SA the peer's crossing rekey made, peer's Ni, our Nr)
    collision: tuple["IkeSession", bytes, bytes] | None = None


class _RekeyPrf:
    """What `derive_ike_keys` sees when an IKE SA is rekeyed: SKEYSEED = prf(SK_d (old), ...)
    with the old IKE SA's PRF (RFC 7296 2.18: the exchange belongs to the old SA), prf+ with the
    new SA's."""

    def __init__(self, old: IkeCrypto, new: IkeCrypto):
        self.suite, self.prf_bytes, self.prf_plus = new.suite, new.prf_bytes, new.prf_plus
        self._old = old

    def prf(self, key: bytes, data: bytes) -> bytes:
        return self._old.prf(key, data)


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
    if looks_like_dn(value):
        return cls(IdType.DER_ASN1_DN, dn_from_text(value))
    if "@" in value and not value.startswith("@"):
        return cls(IdType.RFC822_ADDR, value.encode())
    return cls(IdType.FQDN, value.lstrip("@").encode())


def id_text(payload: IdPayload) -> str:
    if payload.id_type in (IdType.IPV4_ADDR, IdType.IPV6_ADDR):
        return str(ipaddress.ip_address(payload.data))
    if payload.id_type == IdType.DER_ASN1_DN:
        return dn_text(payload.data)
    try:
        return payload.data.decode()
    except UnicodeDecodeError:
        return payload.data.hex()


def _id_matches(want: str | None, got: IdPayload) -> bool:
    if not want or want == "%any":
        return True
    expected = _id_payload(type(got), want, want)
    if expected.id_type == got.id_type == IdType.DER_ASN1_DN:
        return dn_equal(expected.data, got.data)
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
                 random: Callable[[int], bytes] = os.urandom, wall_offset: float | None = None):
        self.config = config
        # now + wall_offset is the POSIX time certificates are validated at; None: their
        # validity periods are not judged (no wall clock, as in-memory tests)
        self.wall_offset = wall_offset
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
        self._auth = None
        self.children: dict[int, ChildSa] = {}
        self.created_at = now
        self.last_heard = now
        self._events: deque[Event] = deque()
        self._out: list[Datagram] = []
        self._request: _Request | None = None
        self._pending: deque[Callable[[float], None]] = deque()
        self._next_mid = 0
        self._peer_mid = 0                         # the next request ID we expect
        self._last_response: tuple[int, tuple[bytes, ...]] | None = None
        self._init_request = b""                   # RealMessage1
        self._init_response = b""                  # RealMessage2
        self._ni = self._nr = b""
        self._ke = None
        self._cookie = b""
        self._init_tries = 0
        self._auth_child: _ChildRequest | None = None
        self._after_auth: list[ChildConfig] = []
        self._start_children: list[ChildConfig] | None = None
        self._child_events: list[Event] = []
        self._remote_id = ""
        self._received = b""                       # the response being handled, as received
        self.ignored = 0                           # messages dropped without an answer
        self.drops: collections.Counter = collections.Counter()   # ... and why
        self._suites = [s for text in config.proposals for s in parse_ike_proposal(text)]
        self._proposal_texts = list(config.proposals)
        # RFC 7383 / RFC 6023, as the peer's IKE_SA_INIT announced them
        self._peer_fragmentation = False
        self._peer_childless = False
        self._reassembly = {False: Reassembler(), True: Reassembler()}   # requests, responses
        # timers of the IKE SA (set when it is established)
        self.established_at: float | None = None
        self.rekey_at: float | None = None
        self.reauth_at: float | None = None
        self.expire_at: float | None = None
        self._rekeyed_deadline: float | None = None
        self._ike_rekey_queued = False
        #: set when reauth_time has passed: the endpoint builds a new IKE SA, then deletes this one
        self.reauth_wanted = False
        self.reauth_started = False
        #: reauthentication: the IKE SA this one replaces once it is up with its CHILD SAs
        self.replaces: IkeSession | None = None
        #: IKE SAs made by rekeying this one, for the endpoint to take over
        self.spawned: list[IkeSession] = []
        self.successor: IkeSession | None = None
        #: the losing IKE SA of a rekey collision (its end is reported as "rekey collision")
        self.redundant = False
        #: the CHILD SA configurations it had when the peer stopped answering (for dpd_action)
        self.dead_children: tuple[ChildConfig, ...] = ()

    # -- the driver's surface ------------------------------------------------------------
    def datagrams_to_send(self) -> list[Datagram]:
        out, self._out = self._out, []
        return out

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        times = []
        req = self._request
        if req is not None:
            times.append(req.deadline)
            if req.give_up_at is not None:
                times.append(req.give_up_at)
        if self._rekeyed_deadline is not None:
            times.append(self._rekeyed_deadline)
        if self.state is IkeState.ESTABLISHED:
            for c in self.children.values():
                if c.deleting:
                    continue
                if c.rekey_at is not None and not c.rekeying and not c.replaced:
                    times.append(c.rekey_at)
                if c.hard_at is not None:
                    times.append(c.hard_at)
            if self.rekey_at is not None and not self._ike_rekey_queued:
                times.append(self.rekey_at)
            if self.reauth_at is not None and not self.reauth_wanted:
                times.append(self.reauth_at)
            if self.expire_at is not None:
                times.append(self.expire_at)
            if self.config.dpd_delay and req is None and not self._pending:
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

    @property
    def busy(self) -> bool:
        """A request is out or waiting to go out."""
        return self._request is not None or bool(self._pending)

    def note_traffic(self, *, now: float) -> None:
        """ESP arrived for one of our CHILD SAs: the peer is alive (no liveness check needed)."""
        if now > self.last_heard:
            self.last_heard = now

    def handle_timer(self, *, now: float) -> None:
        req = self._request
        if req is not None and req.give_up_at is not None and now >= req.give_up_at:
            self._gone("peer not responding", now=now)
            return
        if req is not None and now >= req.deadline:
            req.tries += 1
            if req.tries > self.config.retransmit_tries:
                self._gone("peer not responding", now=now)
                return
            for packet in req.packets:
                self._emit_datagram(packet)
            req.deadline = now + self.config.retransmit_timeout * self.config.retransmit_base ** req.tries
        if self._rekeyed_deadline is not None and now >= self._rekeyed_deadline:
            # The peer never deleted this replaced (or redundant) IKE SA: it holds no CHILD SA,
            # so one Delete without waiting for its answer is enough.
            self._rekeyed_deadline = None
            if self.state in (IkeState.ESTABLISHED, IkeState.REKEYED) and not self.children:
                self._send_request(ExchangeType.INFORMATIONAL, [DeletePayload(ProtocolId.IKE)],
                                   self._on_empty, now=now)
                self._gone("rekey collision" if self.redundant else "rekeyed", now=now)
            return
        if self.state is not IkeState.ESTABLISHED:
            return
        if self.expire_at is not None and now >= self.expire_at:
            self.delete(now=now, reason="expired")
            return
        for child in list(self.children.values()):
            if child.deleting:
                continue
            if child.hard_at is not None and now >= child.hard_at:
                self.delete_child(child.spi_in, now=now, reason="expired")
            elif child.rekey_at is not None and now >= child.rekey_at and not child.rekeying \
                    and not child.replaced:
                self.rekey_child(child.spi_in, now=now)
        if self.rekey_at is not None and now >= self.rekey_at and not self._ike_rekey_queued:
            self.rekey_ike(now=now)
        if self.reauth_at is not None and now >= self.reauth_at and not self.reauth_wanted:
            self.reauth_wanted = True
        if self.config.dpd_delay and now >= self.last_heard + self.config.dpd_delay \
                and self._request is None and not self._pending:
            give_up = now + self.config.dpd_timeout if self.config.dpd_timeout else None
            self._send_request(ExchangeType.INFORMATIONAL, [], self._on_empty, now=now,
                               give_up_at=give_up)

    # -- commands ------------------------------------------------------------------------
    def initiate(self, *, now: float, children: list[ChildConfig] | None = None) -> None:
        """Start IKE_SA_INIT.  `children` (default: those with start_action "start") come up
        with the IKE SA: the first with IKE_AUTH, the others with CREATE_CHILD_SA after it; with
        none, and a peer that supports it, the IKE SA is childless (RFC 6023)."""
        if not self.initiator or self.state is not IkeState.CREATED:
            raise RuntimeError("initiate() is for a new initiator session")
        self._start_children = list(children) if children is not None else None
        self._ni = self._random(NONCE_BYTES)
        self._make_ke(self._suites[0].group)
        self._set_state(IkeState.INIT_SENT)
        self._send_init(now=now)

    def create_child(self, name: str, *, now: float) -> None:
        config = self.config.child(name)
        self._queue(lambda t: self._send_create_child(config, None, now=t), now=now)

    def rekey_child(self, spi_in: int, *, now: float) -> None:
        child = self.children.get(spi_in)
        if child is None or child.rekeying or child.deleting or child.replaced \
                or self.state is not IkeState.ESTABLISHED:
            return
        child.rekeying = True
        self._queue(lambda t: self._send_create_child(child.config, child, now=t), now=now)

    def delete_child(self, spi_in: int, *, now: float, reason: str = "deleted") -> None:
        child = self.children.get(spi_in)
        if child is None or child.deleting:
            return
        child.deleting = True

        def send(t: float) -> None:
            if child.spi_in not in self.children or self.state is not IkeState.ESTABLISHED:
                return
            payload = DeletePayload(ProtocolId.ESP, 4, (struct.pack("!I", child.spi_in),))
            self._send_request(ExchangeType.INFORMATIONAL, [payload],
                               lambda m, p, tt: self._remove_child(child, reason, now=tt), now=t,
                               touches_child=True)
        self._queue(send, now=now)

    def rekey_ike(self, *, now: float) -> None:
        """Rekey the IKE SA (RFC 7296 2.18): a new IKE SA takes over the CHILD SAs."""
        if self.state is not IkeState.ESTABLISHED or self._ike_rekey_queued:
            return
        self._ike_rekey_queued = True
        self._queue(lambda t: self._send_ike_rekey(now=t), now=now)

    def delete(self, *, now: float, reason: str = "deleted") -> None:
        """Delete the IKE SA and its children (INFORMATIONAL with a Delete of protocol IKE)."""
        if self.state in (IkeState.ESTABLISHED, IkeState.REKEYED):
            self._set_state(IkeState.DELETING)
            self._rekeyed_deadline = None
            self._pending.clear()
            self._request = None
            self._send_request(ExchangeType.INFORMATIONAL, [DeletePayload(ProtocolId.IKE)],
                               lambda m, p, t: self._gone(reason, now=t), now=now)
        elif self.state not in (IkeState.DELETING, IkeState.DELETED):
            self._gone(reason if reason != "deleted" else "deleted before it was established", now=now)

    # -- receiving -----------------------------------------------------------------------
    def receive(self, data: bytes, *, remote: tuple[str, int], local: tuple[str, int],
                nat_t: bool, now: float, message: Message | None = None) -> None:
        """One IKE message for this IKE SA (the endpoint has matched the SPIs)."""
        if self.state is IkeState.DELETED:
            return
        try:
            msg = message or parse_message(data)
        except RemoteIkeError as exc:
            self._ignore("malformed")
            log.debug("%s: malformed message ignored: %s", self.config.name, exc)
            return
        if msg.is_response:
            self._receive_response(msg, data, remote=remote, local=local, nat_t=nat_t, now=now)
        else:
            self._receive_request(msg, data, remote=remote, local=local, nat_t=nat_t, now=now)

    def _ignore(self, reason: str) -> None:
        self.ignored += 1
        self.drops[reason] += 1

    def _receive_response(self, msg: Message, data: bytes, *, remote, local, nat_t, now) -> None:
        req = self._request
        if req is None or msg.message_id != req.message_id or msg.exchange_type != req.exchange:
            self._ignore("unexpected_response")
            return
        if req.exchange == ExchangeType.IKE_SA_INIT:
            payloads = list(msg.payloads)
        else:
            payloads = self._decrypt(msg, data, now=now)
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
                self._ignore("unexpected_ike_sa_init")
            return
        if self.state is IkeState.INIT_ANSWERED and msg.exchange_type != ExchangeType.IKE_AUTH:
            self._ignore("not_authenticated_yet")
            return
        if self._last_response and msg.message_id == self._last_response[0] \
                and msg.message_id == self._peer_mid - 1:
            self._retransmitted_request(msg, data)
            return
        if msg.message_id != self._peer_mid:
            self._ignore("message_id_out_of_window")
            return
        payloads = self._decrypt(msg, data, now=now)
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
                    (IkeState.ESTABLISHED, IkeState.REKEYED, IkeState.DELETING)):
            self._ignore("unexpected_exchange")
            return
        if isinstance(payloads, RemoteIkeError):
            self._respond(msg, [NotifyPayload(payloads.notify or NotifyType.INVALID_SYNTAX,
                                              payloads.data)], now=now)
            if msg.exchange_type == ExchangeType.IKE_AUTH:
                self._fail("IKE_AUTH request malformed", NotifyType.INVALID_SYNTAX, now=now)
            return
        handler(msg, payloads, now)

    def _retransmitted_request(self, msg: Message, data: bytes) -> None:
        """The peer repeats its last request: send the cached response again, once it proves
        authentic.  A fragmented request is answered on its first fragment only, so a burst of
        fragments does not draw a burst of responses (RFC 7383 2.6.1)."""
        last = msg.payloads[-1] if msg.payloads else None
        if isinstance(last, SkfPayload):
            if self._sk is None or not self._open(data, last):
                return
            if last.fragment_number != 1:
                return
        elif self._decrypt(msg, data, now=None) is None:
            return
        for packet in self._last_response[1]:
            self._emit_datagram(packet)

    def _open(self, data: bytes, encrypted) -> bytes | None:
        head_len = len(data) - len(encrypted.data)
        try:
            return self._sk.open(data[:head_len], encrypted.data)
        except AuthenticationError:
            self._ignore("not_authentic")
            return None

    def _decrypt(self, msg: Message, data: bytes, *, now: float | None):
        """The inner payloads of an SK message (or of the last fragment of an SKF message), a
        RemoteIkeError for an authentic message whose content is malformed (answered with its
        notify), or None (dropped: not authentic, or more fragments to come)."""
        last = msg.payloads[-1] if msg.payloads else None
        if self._sk is None or not isinstance(last, (SkPayload, SkfPayload)):
            self._ignore("not_encrypted")
            return None
        if isinstance(last, SkfPayload):
            if self.config.fragmentation == "no" or now is None:
                self._ignore("fragment_not_negotiated")
                return None
            part = self._open(data, last)
            if part is None:
                return None
            reassembler = self._reassembly[msg.is_response]
            before = sum(reassembler.drops.values())
            done = reassembler.add(message_id=msg.message_id, number=last.fragment_number,
                                   total=last.total_fragments, first_inner_type=last.first_inner_type,
                                   plaintext=part, now=now)
            if sum(reassembler.drops.values()) != before:
                self._ignore("fragment")
            if done is None:
                return None
            first, inner = done
        else:
            inner = self._open(data, last)
            if inner is None:
                return None
            first = last.first_inner_type
        try:
            return list(msg.payloads[:-1]) + parse_payloads(first, inner)
        except RemoteIkeError as exc:
            if msg.is_response:
                self._ignore("malformed_response")
                return None
            return exc

    # -- sending -------------------------------------------------------------------------
    def _emit_datagram(self, data: bytes) -> None:
        self._out.append(Datagram(data, self.remote, self.local, self.nat_t))

    def _flags(self, response: bool) -> int:
        flags = IkeFlags.INITIATOR if self.initiator else 0
        return flags | (IkeFlags.RESPONSE if response else 0)

    def _fragment_limit(self) -> int | None:
        """The largest IKE message we send whole, when fragmentation is agreed and ours to use."""
        if not self._peer_fragmentation or self.config.fragmentation != "yes":
            return None
        ipv6 = ":" in self.remote[0]
        return max_message_bytes(self.config.fragment_size, ipv6=ipv6, nat_t=self.nat_t)

    def _encode(self, exchange: int, message_id: int, payloads: list, *, response: bool) -> tuple[bytes, ...]:
        flags = self._flags(response)
        if exchange == ExchangeType.IKE_SA_INIT:
            return (serialize_message(Message(self.spi_i, self.spi_r or bytes(8), exchange, flags,
                                              message_id, tuple(payloads))),)
        first, inner = serialize_payloads(payloads)
        size = self._sk.seal_length(len(inner))
        limit = self._fragment_limit()
        random_iv = (lambda: None) if self.suite.aead else (lambda: self._random(self._sk.iv_bytes))
        if limit is not None and 28 + 4 + size > limit:
            return tuple(seal_fragments(spi_i=self.spi_i, spi_r=self.spi_r, exchange=exchange,
                                        flags=flags, message_id=message_id, first_inner_type=first,
                                        inner=inner, protector=self._sk, message_bytes=limit,
                                        random_iv=random_iv))
        draft = serialize_message(Message(self.spi_i, self.spi_r, exchange, flags, message_id,
                                          (SkPayload(first, bytes(size)),)))
        head = draft[:len(draft) - size]
        return (head + self._sk.seal(head, inner, random_iv=random_iv()),)

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

    def _send_request(self, exchange: int, payloads: list, on_response, *, now: float,
                      give_up_at: float | None = None, child: _ChildRequest | None = None,
                      ike_rekey: _IkeRekey | None = None, touches_child: bool = False) -> None:
        mid = self._next_mid
        self._next_mid += 1
        packets = self._encode(exchange, mid, payloads, response=False)
        self._request = _Request(exchange, mid, packets, on_response,
                                 now + self.config.retransmit_timeout, give_up_at=give_up_at,
                                 child=child, ike_rekey=ike_rekey,
                                 touches_child=touches_child or child is not None)
        for packet in packets:
            self._emit_datagram(packet)

    def _respond(self, msg: Message, payloads: list, *, now: float) -> None:
        packets = self._encode(msg.exchange_type, msg.message_id, payloads, response=True)
        self._last_response = (msg.message_id, packets)
        self._peer_mid = msg.message_id + 1
        for packet in packets:
            self._emit_datagram(packet)

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
                     NoncePayload(self._ni), *self._nat_notifies(bytes(8)), *init_payloads(self.config, initiator=True),
                     *self._extension_notifies(request=True)]
        self._next_mid = 0
        self._send_request(ExchangeType.IKE_SA_INIT, payloads, self._on_init_response, now=now)
        self._init_request = self._request.packets[0]

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
        self._note_extensions(notifies)
        try:
            shared = self._ke.shared_secret(ke.data)
        except KeyExchangeError as exc:
            self._fail(f"peer's key exchange value refused: {exc}", NotifyType.INVALID_KE_PAYLOAD, now=now)
            return
        if not self._setup_keys(suite, shared, now=now, peer_init=payloads):
            return
        if self.nat_local or self.nat_remote:
            self.nat_t = True
            self.local = (self.local[0], self.config.nat_t_port)
            self.remote = (self.remote[0], self.config.nat_t_port)
        self._send_auth(now=now)

    def _extension_notifies(self, *, request: bool) -> list[NotifyPayload]:
        """IKEV2_FRAGMENTATION_SUPPORTED (RFC 7383: a responder sends it only when asked) and
        CHILDLESS_IKEV2_SUPPORTED (RFC 6023)."""
        out = []
        if self.config.fragmentation != "no" and (request or self._peer_fragmentation):
            out.append(NotifyPayload(NotifyType.IKEV2_FRAGMENTATION_SUPPORTED))
        if self.config.childless != "never":
            out.append(NotifyPayload(NotifyType.CHILDLESS_IKEV2_SUPPORTED))
        return out

    def _note_extensions(self, notifies: dict) -> None:
        self._peer_fragmentation = NotifyType.IKEV2_FRAGMENTATION_SUPPORTED in notifies \
            and self.config.fragmentation != "no"
        self._peer_childless = NotifyType.CHILDLESS_IKEV2_SUPPORTED in notifies

    def _check_nat(self, notifies: dict) -> None:
        source = notifies.get(NotifyType.NAT_DETECTION_SOURCE_IP)
        dest = notifies.get(NotifyType.NAT_DETECTION_DESTINATION_IP)
        if source is not None and dest is not None:
            self.nat_remote = source.data != nat_hash(self.spi_i, self.spi_r, self.remote)
            self.nat_local = dest.data != nat_hash(self.spi_i, self.spi_r, self.local)
        if self.config.encap:
            self.nat_local = True

    def _setup_keys(self, suite: IkeSuite, shared: bytes, *, now: float, peer_init: list = ()) -> bool:
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
        wall = None if self.wall_offset is None else now + self.wall_offset
        self._auth = make_authenticator(self.config, self.crypto, peer_init=peer_init, wall_time=wall,
                                        initiator=self.initiator)
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
        self._note_extensions(notifies)
        if not self._setup_keys(suite, shared, now=now, peer_init=payloads):
            return False
        self._init_request = data
        self._set_state(IkeState.INIT_ANSWERED)
        response = [SaPayload((chosen,)), KePayload(self._ke.group, self._ke.public_bytes),
                    NoncePayload(self._nr), *self._nat_notifies(self.spi_r), *init_payloads(self.config, initiator=False),
                    *self._extension_notifies(request=False)]
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
        self._set_state(IkeState.DELETED)
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

    def _children_to_start(self) -> list[ChildConfig]:
        if self._start_children is not None:
            return list(self._start_children)
        return [c for c in self.config.children if c.start_action == "start"]

    def _send_auth(self, *, now: float) -> None:
        self._set_state(IkeState.AUTH_SENT)
        idi = _id_payload(IdiPayload, self.config.local_id, self.local[0])
        payloads: list = [idi]
        if self.config.remote_id and self.config.remote_id != "%any":
            payloads.append(_id_payload(IdrPayload, self.config.remote_id, self.remote[0]))
        payloads += self._proof(idi)
        starts = self._children_to_start()
        childless = self._peer_childless and (self.config.childless == "force" or not starts)
        child = None
        if not childless:
            # A peer without RFC 6023 needs a CHILD SA in IKE_AUTH: the first configured one.
            child = starts[0] if starts else (self.config.children[0] if self.config.children else None)
        self._after_auth = [c for c in starts if c is not child]
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
            # RFC 7296 2.21.2: the responder thinks the IKE SA is up; tell it in a separate
            # INFORMATIONAL (sent once: this IKE SA ends here either way)
            mid, self._next_mid = self._next_mid, self._next_mid + 1
            for packet in self._encode(ExchangeType.INFORMATIONAL, mid,
                                       [NotifyPayload(NotifyType.AUTHENTICATION_FAILED)], response=False):
                self._emit_datagram(packet)
            self._fail(f"responder {id_text(idr)} failed authentication: {why}",
                       NotifyType.AUTHENTICATION_FAILED, now=now)
            return
        self._remote_id = id_text(idr)
        self._set_state(IkeState.ESTABLISHED)
        self._emit_established(now=now)
        if self._auth_child is not None:
            self._finish_child(self._auth_child, payloads, notifies, now=now)
            self._auth_child = None
        self._flush_child_events()
        for child in self._after_auth:
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
        self._emit_established(now=now)
        self._flush_child_events()

    def _emit_established(self, *, now: float) -> None:
        self._arm_ike_timers(now)
        local_id = self.config.local_id or self.local[0]
        self._events.append(IkeSaEstablished(
            self.config.name, int.from_bytes(self.spi_i, "big"), int.from_bytes(self.spi_r, "big"),
            self.initiator, self.suite.keyword, local_id, self._remote_id, self.nat_local,
            self.nat_remote, self._sk.backend))

    # -- timers --------------------------------------------------------------------------
    def _jitter(self, most: float) -> float:
        """A uniform draw in [0, most) from the CSPRNG (rekey times spread as rand_time says)."""
        if most <= 0:
            return 0.0
        return most * int.from_bytes(self._random(4), "big") / 2 ** 32

    def _arm_ike_timers(self, now: float) -> None:
        cfg = self.config
        self.established_at = now
        self.last_heard = max(self.last_heard, now)
        self.rekey_at = now + cfg.rekey_time - self._jitter(cfg.ike_jitter) if cfg.rekey_time else None
        self.reauth_at = now + cfg.reauth_time - self._jitter(cfg.ike_jitter) if cfg.reauth_time else None
        longest = max(cfg.rekey_time, cfg.reauth_time)
        self.expire_at = now + longest + cfg.ike_over_time if longest else None

    # -- CHILD SAs -----------------------------------------------------------------------
    def _answer_child(self, payloads: list, *, ni: bytes, nr: bytes, rekey_of: ChildSa | None,
                      now: float, ke_response: list | None = None) -> list:
        """The responder's part of a CHILD SA negotiation: the payloads to answer with (SA,
        TSi, TSr, or an error notify).  Installs the CHILD SA when it succeeds (for a rekey with
        its outbound SA not yet in use: make-before-break)."""
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
                            shared=shared, local_ts=local, remote_ts=remote, rekey_of=rekey_of,
                            outbound_active=rekey_of is None, now=now, exchange_initiator=False)
        ours_chosen = Proposal(chosen.number, ProtocolId.ESP, struct.pack("!I", spi_in), chosen.transforms)
        out: list = [NotifyPayload(NotifyType.USE_TRANSPORT_MODE)] if transport else []
        if ke_response is not None:
            ke_response.extend(response_extra)
            response_extra = []
        return out + [SaPayload((ours_chosen,)), *response_extra, TsiPayload(remote), TsrPayload(local)]

    def _finish_child(self, req: _ChildRequest, payloads: list, notifies: dict, *, now: float,
                      nr: bytes | None = None) -> None:
        """The initiator's side: install the CHILD SA the response accepted, or report why not;
        for a rekey, settle a collision (RFC 7296 2.8.1) and delete what the rules say."""
        errors = [t for t in notifies if t < 16384]
        sa = next((p for p in payloads if isinstance(p, SaPayload)), None)
        tsi = next((p for p in payloads if isinstance(p, TsiPayload)), None)
        tsr = next((p for p in payloads if isinstance(p, TsrPayload)), None)
        old = req.rekey_of
        if old is not None:
            old.rekeying = False
        if errors or sa is None or tsi is None or tsr is None or len(sa.proposals) != 1:
            name = NotifyType(errors[0]).name if errors and errors[0] in NotifyType._value2member_map_ \
                else (f"notify {errors[0]}" if errors else "no SA/TS in the response")
            self._child_failed(req.config.name, f"peer: {name}")
            if old is not None:
                self._rekey_child_failed(req, errors, now=now)
            return
        chosen = sa.proposals[0]
        offered = {(t.transform_type, t.transform_id, t.key_length) for p in req.proposals for t in p.transforms}
        if any((t.transform_type, t.transform_id, t.key_length) not in offered for t in chosen.transforms) \
                or len(chosen.spi) != 4:
            self._child_failed(req.config.name, "peer chose a proposal we did not offer")
            if old is not None:
                self._rekey_child_failed(req, [], now=now)
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
                if old is not None:
                    self._rekey_child_failed(req, [], now=now)
                return
        ni, nr = req.nonce or self._ni, nr or self._nr
        lost = False
        if req.collision is not None:
            peer_ni, our_nr, _ = req.collision
            # The SA made with the lowest of the four nonces is redundant and deleted by the
            # peer that made it, i.e. the initiator of that exchange (RFC 7296 2.8.1).
            lost = min(ni, nr, peer_ni, our_nr) in (ni, nr)
        keyword = esp_keyword_of(chosen)
        new = self._install_child(req.config, keyword, spi_in=req.spi_in,
                                  spi_out=struct.unpack("!I", chosen.spi)[0], ni=ni, nr=nr,
                                  shared=shared, local_ts=tsi.selectors, remote_ts=tsr.selectors,
                                  rekey_of=old, outbound_active=not lost, now=now,
                                  exchange_initiator=True)
        self._flush_child_events()
        if old is None:
            return
        if req.collision is not None:
            theirs = req.collision[2]
            if lost:
                new.redundant = True
                self.delete_child(new.spi_in, now=now, reason="rekey collision")
                if old.spi_in in self.children:
                    old.replaced = True          # the winner deletes it
                return
            theirs.redundant = True              # the peer deletes it
        if old.spi_in in self.children:
            old.replaced = True
            self.delete_child(old.spi_in, now=now, reason="rekeyed")

    def _rekey_child_failed(self, req: _ChildRequest, errors: list, *, now: float) -> None:
        old = req.rekey_of
        if old.spi_in not in self.children:
            return
        if req.collision is not None:
            old.replaced = True                  # the peer's rekey stands; it deletes the old SA
            return
        if NotifyType.CHILD_SA_NOT_FOUND in errors:
            # The peer lost it: drop ours and negotiate a fresh one.
            self._remove_child(old, "peer lost it", now=now)
            self.create_child(old.config.name, now=now)
            return
        retry = REKEY_RETRY_S + self._jitter(REKEY_RETRY_JITTER_S) \
            if NotifyType.TEMPORARY_FAILURE in errors else REKEY_FAILED_RETRY_S
        old.rekey_at = now + retry

    def _install_child(self, config: ChildConfig, keyword: str, *, spi_in: int, spi_out: int,
                       ni: bytes, nr: bytes, shared: bytes, local_ts, remote_ts,
                       rekey_of: ChildSa | None, now: float, outbound_active: bool = True,
                       exchange_initiator: bool) -> ChildSa:
        proposal = parse_esp(keyword)
        encr_bytes = proposal.enc_key_bytes
        integ_bytes = proposal.integ_info.key_bytes if proposal.integ_info else 0
        ei, ai, er, ar = child_keymat(self.crypto, self.keys.sk_d, ni=ni, nr=nr, shared=shared,
                                      encr_bytes=encr_bytes, integ_bytes=integ_bytes)
        # "Initiator" here is the role in the exchange that made the CHILD SA (RFC 7296 2.17),
        # not in the IKE SA: after IKE_AUTH either peer may start a CREATE_CHILD_SA.
        (out_e, out_a), (in_e, in_a) = ((ei, ai), (er, ar)) if exchange_initiator else ((er, ar), (ei, ai))
        tunnel = config.mode == "tunnel"
        ours = ipaddress.ip_address(self.local[0])
        peer = ipaddress.ip_address(self.remote[0])
        encap = (self.local[1], self.remote[1]) if (self.nat_t or self.config.encap) else None
        hard = Lifetime(_tenth_more(config.rekey_bytes), _tenth_more(config.rekey_packets), config.hard_time)
        soft = Lifetime(config.rekey_bytes or None, config.rekey_packets or None, None)
        common = dict(mode=Mode.TUNNEL if tunnel else Mode.TRANSPORT, proposal=proposal,
                      replay_window=config.replay_window, backend=config.backend, hard=hard, soft=soft)
        inbound = SaConfig(name=f"{config.name}-in-{spi_in:08x}", spi=spi_in, direction=Direction.IN,
                           enc_key=in_e, integ_key=in_a, local=ours if tunnel else None,
                           remote=peer if tunnel else None,
                           encap_ports=(encap[1], encap[0]) if encap else None, **common)
        outbound = SaConfig(name=f"{config.name}-out-{spi_out:08x}", spi=spi_out,
                            direction=Direction.OUT, enc_key=out_e, integ_key=out_a,
                            local=ours if tunnel else None, remote=peer if tunnel else None,
                            encap_ports=encap, **common)
        rekey_at = now + config.rekey_time - self._jitter(config.jitter) if config.rekey_time else None
        hard_at = now + config.hard_time if config.hard_time else None
        child = ChildSa(config, spi_in, spi_out, keyword, inbound, outbound, tuple(local_ts),
                        tuple(remote_ts), now, rekey_at, hard_at=hard_at,
                        outbound_active=outbound_active,
                        replaces=rekey_of.spi_in if rekey_of is not None else None)
        self.children[spi_in] = child
        self._child_events.append(ChildSaInstalled(
            self.config.name, config.name, inbound, outbound, keyword,
            tuple(_ts_str(t) for t in local_ts), tuple(_ts_str(t) for t in remote_ts),
            (rekey_of.spi_in, rekey_of.spi_out) if rekey_of else None, outbound_active))
        return child

    def _flush_child_events(self) -> None:
        self._events.extend(self._child_events)
        self._child_events.clear()

    def _child_failed(self, name: str, reason: str) -> None:
        self._child_events.append(ChildSaFailed(self.config.name, name, reason))

    def _send_create_child(self, config: ChildConfig, rekey_of: ChildSa | None, *, now: float) -> None:
        if self.state is not IkeState.ESTABLISHED:
            return
        if rekey_of is not None and (rekey_of.spi_in not in self.children or rekey_of.replaced
                                     or rekey_of.deleting):
            rekey_of.rekeying = False            # the peer rekeyed or deleted it meanwhile
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
        self._send_request(ExchangeType.CREATE_CHILD_SA, payloads, on_response, now=now, child=req)

    def _on_create_child_request(self, msg: Message, payloads: list, now: float) -> None:
        nonce = next((p for p in payloads if isinstance(p, NoncePayload)), None)
        sa = next((p for p in payloads if isinstance(p, SaPayload)), None)
        if nonce is None or sa is None:
            self._respond(msg, [NotifyPayload(NotifyType.INVALID_SYNTAX)], now=now)
            return
        ni = nonce.nonce if hasattr(nonce, "nonce") else nonce.data
        if self.state is not IkeState.ESTABLISHED:
            # Closing or rekeyed: nothing new on this IKE SA (RFC 7296 2.25.2).
            self._respond(msg, [NotifyPayload(NotifyType.TEMPORARY_FAILURE)], now=now)
            return
        if sa.proposals and sa.proposals[0].protocol_id == ProtocolId.IKE:
            self._on_ike_rekey_request(msg, payloads, sa, ni, now=now)
            return
        if self._request is not None and self._request.ike_rekey is not None:
            # We are rekeying the IKE SA: CHILD SAs wait (RFC 7296 2.25.2).
            self._respond(msg, [NotifyPayload(NotifyType.TEMPORARY_FAILURE)], now=now)
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
            if rekey_of.deleting or rekey_of.replaced:
                # RFC 7296 2.25.1: a rekey of a CHILD SA we are closing.
                self._respond(msg, [NotifyPayload(NotifyType.TEMPORARY_FAILURE)], now=now)
                return
        nr = self._random(NONCE_BYTES)
        extra: list = []
        before = set(self.children)
        answer = self._answer_child(payloads, ni=ni, nr=nr, rekey_of=rekey_of, now=now, ke_response=extra)
        if any(isinstance(p, SaPayload) for p in answer):
            sa_at = next(i for i, p in enumerate(answer) if isinstance(p, SaPayload))
            answer = answer[:sa_at + 1] + [NoncePayload(nr), *extra] + answer[sa_at + 1:]
            if rekey_of is not None:
                [made] = [self.children[s] for s in set(self.children) - before]
                ours = self._request.child if self._request is not None else None
                if ours is not None and ours.rekey_of is rekey_of:
                    ours.collision = (ni, nr, made)      # settled when our response comes
                else:
                    rekey_of.replaced = True             # a queued rekey of ours is dropped
        self._respond(msg, answer, now=now)
        self._flush_child_events()

    def _remove_child(self, child: ChildSa, reason: str, *, now: float) -> None:
        if self.children.pop(child.spi_in, None) is not None:
            self._events.append(ChildSaDeleted(self.config.name, child.config.name, child.spi_in,
                                               child.spi_out, reason))
            # The SA that replaced it now carries outbound traffic (the driver sees this as the
            # old SA leaving its outbound lookup).
            for c in self.children.values():
                if c.replaces == child.spi_in and not c.redundant and not c.deleting:
                    c.outbound_active = True

    # -- IKE SA rekeying (RFC 7296 2.18) -------------------------------------------------
    def _send_ike_rekey(self, *, now: float, group: int | None = None,
                        collision: tuple | None = None) -> None:
        if self.state is not IkeState.ESTABLISHED:
            self._ike_rekey_queued = False
            return
        spi = self._random(8)
        groups = [s.group for s in self._suites]
        group = group or (self.suite.group if self.suite.group in groups else groups[0])
        family = KE_BY_GROUP[group].family
        ke = self.registry.select(family, None, self.config.backend).key_exchange(family)
        rekey = _IkeRekey(spi, self._random(NONCE_BYTES), ke, ke_retried=group != self.suite.group,
                          collision=collision)
        proposals = [ike_proposal(parse_ike_proposal(text), i + 1, spi=spi)
                     for i, text in enumerate(self._proposal_texts)]
        payloads = [SaPayload(tuple(proposals)), NoncePayload(rekey.nonce), KePayload(ke.group, ke.public_bytes)]
        self._send_request(ExchangeType.CREATE_CHILD_SA, payloads,
                           lambda m, p, t: self._on_ike_rekey_response(rekey, p, now=t),
                           now=now, ike_rekey=rekey)

    def _on_ike_rekey_response(self, rekey: _IkeRekey, payloads: list, *, now: float) -> None:
        notifies = {p.notify_type: p for p in payloads if isinstance(p, NotifyPayload)}
        errors = [t for t in notifies if t < 16384]
        sa = next((p for p in payloads if isinstance(p, SaPayload)), None)
        ke = next((p for p in payloads if isinstance(p, KePayload)), None)
        nonce = next((p for p in payloads if isinstance(p, NoncePayload)), None)
        if NotifyType.INVALID_KE_PAYLOAD in errors and not rekey.ke_retried and self.state is IkeState.ESTABLISHED:
            data = notifies[NotifyType.INVALID_KE_PAYLOAD].data
            group = struct.unpack("!H", data)[0] if len(data) == 2 else None
            if group in {s.group for s in self._suites}:
                self._send_ike_rekey(now=now, group=group, collision=rekey.collision)
                return
        new = None
        why = None
        if errors:
            why = "peer: " + (NotifyType(errors[0]).name if errors[0] in NotifyType._value2member_map_
                              else f"notify {errors[0]}")
        elif sa is None or ke is None or nonce is None or len(sa.proposals) != 1 \
                or sa.proposals[0].protocol_id != ProtocolId.IKE or len(sa.proposals[0].spi) != 8:
            why = "response without SA, KE or Nonce"
        else:
            try:
                suite = suite_of(sa.proposals[0])
                if suite not in self._suites or ke.group != suite.group or ke.group != rekey.ke.group:
                    raise ProposalError(f"peer chose {suite.keyword} with KE {ke.group}")
                shared = rekey.ke.shared_secret(ke.data)
            except (ProposalError, KeyExchangeError) as exc:
                why = f"refused: {exc}"
            else:
                nr = nonce.nonce if hasattr(nonce, "nonce") else nonce.data
                new = self._spawn(suite, initiator=True, spi_i=rekey.spi, spi_r=sa.proposals[0].spi,
                                  ni=rekey.nonce, nr=nr, shared=shared, now=now)
        self._ike_rekey_queued = False
        if new is None:
            log.info("%s: IKE SA rekey failed: %s", self.config.name, why)
            if rekey.collision is not None:
                self._migrate_to(rekey.collision[0], now=now)    # the peer's rekey stands
                return
            self.rekey_at = now + (REKEY_RETRY_S + self._jitter(REKEY_RETRY_JITTER_S)
                                   if NotifyType.TEMPORARY_FAILURE in errors else REKEY_FAILED_RETRY_S)
            return
        if rekey.collision is not None:
            theirs, peer_ni, our_nr = rekey.collision
            if min(rekey.nonce, new._nr, peer_ni, our_nr) in (rekey.nonce, new._nr):
                # We lost (RFC 7296 2.8.1): delete the IKE SA we made; the peer deletes the old.
                new.redundant = True
                new.delete(now=now, reason="rekey collision")
                self._migrate_to(theirs, now=now)
                return
            theirs.redundant = True
            theirs._rekeyed_deadline = now + REKEYED_TIMEOUT_S
        self._migrate_to(new, now=now)
        self.delete(now=now, reason="rekeyed")

    def _on_ike_rekey_request(self, msg: Message, payloads: list, sa: SaPayload, ni: bytes, *,
                              now: float) -> None:
        req = self._request
        if req is not None and req.touches_child:
            # RFC 7296 2.25.2: not while we create, rekey or delete a CHILD SA.
            self._respond(msg, [NotifyPayload(NotifyType.TEMPORARY_FAILURE)], now=now)
            return
        ours = [ike_proposal([s], 1) for s in self._suites]
        chosen = choose(sa.proposals, ours, protocol=ProtocolId.IKE)
        if chosen is None:
            self._respond(msg, [NotifyPayload(NotifyType.NO_PROPOSAL_CHOSEN)], now=now)
            return
        if len(chosen.spi) != 8:
            self._respond(msg, [NotifyPayload(NotifyType.INVALID_SYNTAX)], now=now)
            return
        suite = suite_of(chosen)
        ke = next((p for p in payloads if isinstance(p, KePayload)), None)
        refuse_ke = [NotifyPayload(NotifyType.INVALID_KE_PAYLOAD, struct.pack("!H", suite.group))]
        if ke is None or ke.group != suite.group:
            self._respond(msg, refuse_ke, now=now)
            return
        family = KE_BY_GROUP[suite.group].family
        mine = self.registry.select(family, None, self.config.backend).key_exchange(family)
        try:
            shared = mine.shared_secret(ke.data)
        except KeyExchangeError:
            self._respond(msg, refuse_ke, now=now)
            return
        nr = self._random(NONCE_BYTES)
        spi_r = self._random(8)
        new = self._spawn(suite, initiator=False, spi_i=chosen.spi, spi_r=spi_r, ni=ni, nr=nr,
                          shared=shared, now=now)
        self._respond(msg, [SaPayload((Proposal(chosen.number, ProtocolId.IKE, spi_r, chosen.transforms),)),
                            NoncePayload(nr), KePayload(mine.group, mine.public_bytes)], now=now)
        if req is not None and req.ike_rekey is not None:
            req.ike_rekey.collision = (new, ni, nr)      # settled when our response comes
        else:
            self._migrate_to(new, now=now)

    def _spawn(self, suite: IkeSuite, *, initiator: bool, spi_i: bytes, spi_r: bytes, ni: bytes,
               nr: bytes, shared: bytes, now: float) -> "IkeSession":
        """The IKE SA a rekey makes: keys from SK_d of this one, message IDs from zero, the
        same peer, addresses, NAT state and negotiated extensions."""
        new = IkeSession(self.config, initiator=initiator, local=self.local, remote=self.remote,
                         registry=self.registry, now=now, save_keys=self.save_keys, random=self._random,
                         wall_offset=self.wall_offset)
        new.spi_i, new.spi_r = spi_i, spi_r
        new.nat_t, new.nat_local, new.nat_remote = self.nat_t, self.nat_local, self.nat_remote
        new._ni, new._nr = ni, nr
        crypto = IkeCrypto(suite, registry=self.registry, backend=self.config.backend)
        _, keys = derive_ike_keys(_RekeyPrf(self.crypto, crypto), shared=shared, ni=ni, nr=nr,
                                  spi_i=spi_i, spi_r=spi_r, old_sk_d=self.keys.sk_d)
        if initiator:
            new._sk = crypto.protector((keys.sk_ei, keys.sk_er), (keys.sk_ai, keys.sk_ar))
        else:
            new._sk = crypto.protector((keys.sk_er, keys.sk_ei), (keys.sk_ar, keys.sk_ai))
        new.suite, new.crypto, new.keys = suite, crypto, keys
        new._remote_id = self._remote_id
        new._peer_fragmentation, new._peer_childless = self._peer_fragmentation, self._peer_childless
        new._set_state(IkeState.ESTABLISHED)
        new._arm_ike_timers(now)
        self.spawned.append(new)
        return new

    def _migrate_to(self, new: "IkeSession", *, now: float) -> None:
        """Hand the CHILD SAs to the IKE SA that replaces this one; wait for the old one's delete."""
        for child in self.children.values():
            child.rekeying = False               # queued work on the old SA is dropped
            new.children[child.spi_in] = child
        self.children = {}
        self._pending.clear()
        self.successor = new
        new.last_heard = max(new.last_heard, self.last_heard)
        self._set_state(IkeState.REKEYED)
        self._rekeyed_deadline = now + REKEYED_TIMEOUT_S
        self._events.append(IkeSaRekeyed(
            self.config.name, int.from_bytes(self.spi_i, "big"), int.from_bytes(self.spi_r, "big"),
            int.from_bytes(new.spi_i, "big"), int.from_bytes(new.spi_r, "big"), new.suite.keyword))

    # -- INFORMATIONAL -------------------------------------------------------------------
    def _on_empty(self, msg: Message, payloads: list, now: float) -> None:
        pass

    def _on_informational_request(self, msg: Message, payloads: list, now: float) -> None:
        if any(isinstance(p, NotifyPayload) and p.notify_type == NotifyType.AUTHENTICATION_FAILED
               for p in payloads):
            # RFC 7296 2.21.2: the initiator refused our IKE_AUTH response
            self._respond(msg, [], now=now)
            self._gone("peer: AUTHENTICATION_FAILED", now=now)
            return
        deletes = [p for p in payloads if isinstance(p, DeletePayload)]
        if any(d.protocol_id == ProtocolId.IKE for d in deletes):
            self._respond(msg, [], now=now)
            req = self._request
            if self.state is IkeState.ESTABLISHED and req is not None and req.ike_rekey is not None \
                    and req.ike_rekey.collision is not None:
                # The peer won a rekey collision and deleted the old IKE SA before our
                # response came: its new IKE SA stands.
                self._migrate_to(req.ike_rekey.collision[0], now=now)
            if self.state is IkeState.REKEYED:
                self._gone("rekey collision" if self.redundant else "rekeyed", now=now)
            else:
                self._gone("rekey collision" if self.redundant else "deleted by peer", now=now)
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
                successor = any(c.replaces == child.spi_in and not c.redundant
                                for c in self.children.values())
                reason = "rekeyed" if child.replaced or successor else \
                    ("rekey collision" if child.redundant else "deleted by peer")
                self._remove_child(child, reason, now=now)
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
        if self.state in (IkeState.ESTABLISHED, IkeState.REKEYED, IkeState.DELETING):
            self._gone(reason, now=now)
            return
        self._flush_child_events()
        self._events.append(IkeSaFailed(self.config.name, reason, notify))
        self._request = None
        self._pending.clear()
        self._set_state(IkeState.DELETED)
        self._forget_keys()

    def _gone(self, reason: str, *, now: float) -> None:
        if self.state is IkeState.DELETED:
            return
        if self.state not in (IkeState.ESTABLISHED, IkeState.REKEYED, IkeState.DELETING):
            self._fail(reason, None, now=now)
            return
        if reason == "peer not responding":
            configs = []
            for child in self.children.values():
                if child.config not in configs:
                    configs.append(child.config)
            self.dead_children = tuple(configs)
        child_reason = reason if reason in ("deleted", "reauthenticated", "expired") else "IKE SA gone"
        for child in list(self.children.values()):
            self._events.append(ChildSaDeleted(self.config.name, child.config.name, child.spi_in,
                                               child.spi_out, child_reason))
        self.children.clear()
        self._events.append(IkeSaDeleted(self.config.name, int.from_bytes(self.spi_i, "big"),
                                         int.from_bytes(self.spi_r, "big"), reason))
        self._request = None
        self._pending.clear()
        self._rekeyed_deadline = None
        self._set_state(IkeState.DELETED)
        self._forget_keys()

    def _forget_keys(self) -> None:
        """A deleted IKE SA drops its keys: the SK protector is wiped (it refuses to seal or
        open from now on), SK_d and the other SK_* go with `keys`, and the IKE_SA_INIT key
        exchange is released.  Best effort, as `SkProtector.wipe` explains: Python cannot
        overwrite the immutable bytes, only drop the last references we hold.  With
        `save_keys` the user asked for the keys to be exported (Wireshark's table, written
        by the endpoint once the SA is finished), so `keys` stays for that."""
        if self._sk is not None:
            self._sk.wipe()
        if not self.save_keys:
            self.keys = None
        self._ke = None


def _tenth_more(limit: int) -> int | None:
    """A hard byte or packet limit 10% above the soft one (swanctl's life_bytes/life_packets
    defaults), so the rekey the soft limit starts has room to finish."""
    return limit + limit // 10 if limit else None


__all__ = ["IkeSession", "IkeState", "TRANSITIONS", "ChildSa", "nat_hash", "id_text"]

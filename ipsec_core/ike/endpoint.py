"""Many IKE sessions behind one set of addresses: the sans-I/O entry point a driver talks to.

Owns: finding the session of a received message (by our SPI), making responder sessions for
IKE_SA_INIT requests that match a configured connection, protection against floods of them as
strongSwan does it (stateless COOKIEs (RFC 7296 2.6) above a total or per-address count of
half-open IKE SAs, with a rotating secret; requests from an address with too many half-open SAs
ignored; half-open SAs dropped after a timeout; a size limit on what a half-open SA keeps),
taking over the IKE SAs a rekey makes, reauthentication (a new IKE SA, then the old one
deleted), what happens to a dead peer's CHILD SAs (dpd_action), the data plane's reports
(traffic seen, soft and hard lifetimes reached), forgetting finished sessions, and merging every
session's datagrams, timers and events.
Must not: open sockets or read the clock; `now` is an argument everywhere.
"""
from __future__ import annotations

import collections
import hashlib
import hmac
import ipaddress
import logging
import os
from collections import deque
from typing import Callable

from ipsec_core.ike.config import ChildConfig, IkeConfig
from ipsec_core.ike.constants import ExchangeType, IkeFlags, NotifyType
from ipsec_core.ike.events import (ChildSaDeleted, ChildSaInstalled, ChildSaTrapped, Datagram,
                                   Event, IkeSaRekeyed)
from ipsec_core.ike.keymat import IkeKeys
from ipsec_core.ike.payloads import (InvalidMajorVersion, Message, NoncePayload, NotifyPayload,
                                     RemoteIkeError, UnsupportedCriticalPayload, parse_message,
                                     pull_ike_header, serialize_message)
from ipsec_core.ike.session import IkeSession, IkeState

log = logging.getLogger("ipsec.ike")

#: strongSwan's defaults: cookies above 30 half-open IKE SAs (charon.cookie_threshold); the
#: secret changes every 2 minutes, and a cookie made with the previous one is still accepted.
COOKIE_THRESHOLD = 30
COOKIE_SECRET_LIFETIME = 120.0
#: Half-open IKE SAs are forgotten after this long (charon.half_open_timeout).
HALF_OPEN_TIMEOUT = 30.0
#: Per source address: cookies from 3 half-open IKE SAs on (charon.cookie_threshold_ip), and
#: IKE_SA_INIT ignored from 5 on (charon.block_threshold).
COOKIE_THRESHOLD_IP = 3
BLOCK_THRESHOLD = 5
#: A half-open IKE SA keeps the initiator's IKE_SA_INIT (it is signed in IKE_AUTH): larger ones
#: are ignored so each costs bounded memory (strongSwan's charon.max_packet).
MAX_IKE_SA_INIT_BYTES = 10000
#: A reauthentication that failed is tried again this much later.
REAUTH_RETRY_S = 30.0


def _address_matches(configured: tuple[str, ...], address: str) -> bool:
    ip = ipaddress.ip_address(address)
    for text in configured:
        if text in ("%any", "0.0.0.0", "::"):
            return True
        try:
            if ipaddress.ip_address(text) == ip:
                return True
        except ValueError:
            continue
    return False


class IkeEndpoint:
    def __init__(self, configs: list[IkeConfig], *, registry, now: float, save_keys: bool = False,
                 cookie_threshold: int = COOKIE_THRESHOLD,
                 cookie_threshold_ip: int = COOKIE_THRESHOLD_IP,
                 block_threshold: int = BLOCK_THRESHOLD,
                 random: Callable[[int], bytes] = os.urandom, wall_offset: float | None = None):
        names = [c.name for c in configs]
        if len(set(names)) != len(names):
            raise ValueError(f"connection names must be unique: {names}")
        self.configs = {c.name: c for c in configs}
        self.registry = registry
        self.save_keys = save_keys
        # the driver's wall clock minus its `now` clock: certificates are validated at
        # now + wall_offset (None: validity periods are not judged; see ike/certs.py)
        self.wall_offset = wall_offset
        self.cookie_threshold = cookie_threshold
        self.cookie_threshold_ip = cookie_threshold_ip
        self.block_threshold = block_threshold
        self._half_open_key: dict[int, tuple[bytes, str, int]] = {}     # id(session) -> key
        self._half_open_by_ip: collections.Counter = collections.Counter()
        self.drops: collections.Counter = collections.Counter()
        self._by_inbound: dict[int, IkeSession] = {}       # CHILD SA SPIs -> their IKE SA
        self._by_outbound: dict[int, IkeSession] = {}
        self._traps: dict[tuple[str, str], ChildConfig] = {}
        self._now = now
        self._random = random
        self._sessions: dict[bytes, IkeSession] = {}         # by our SPI
        self._half_open: dict[tuple[bytes, str, int], IkeSession] = {}
        self._events: deque[Event] = deque()
        self._out: list[Datagram] = []
        self._secret, self._old_secret = random(32), b""
        self._secret_at = now
        self.ignored = 0
        self.cookies_sent = 0
        self._finished_keys: list[IkeKeys] = []

    # -- commands ------------------------------------------------------------------------
    def initiate(self, connection: str, *, now: float, children: list[str] | None = None,
                 remote: str | None = None) -> IkeSession:
        """Start an IKE SA.  `children`: the CHILD SAs to bring up (default: those with
        start_action "start"); `remote`: the peer's address (default: the first configured)."""
        self._now = now
        config = self.configs[connection]
        local = (config.local_addrs[0], config.local_port)
        remote_addr = (remote or config.remote_addrs[0], config.remote_port)
        session = IkeSession(config, initiator=True, local=local, remote=remote_addr,
                             registry=self.registry, now=now, save_keys=self.save_keys,
                             random=self._random, wall_offset=self.wall_offset)
        self._sessions[session.spi_i] = session
        for name in children or ():
            self._traps.pop((connection, name), None)
        session.initiate(now=now, children=None if children is None else
                         [config.child(name) for name in children])
        self._collect(session)
        return session

    def rekey_ike(self, connection: str, *, now: float) -> None:
        self._now = now
        for s in self.sessions(connection):
            s.rekey_ike(now=now)
            self._collect(s)

    def acquire(self, connection: str, child: str, *, now: float) -> IkeSession | None:
        """Traffic matched the selectors of a trapped CHILD SA (dpd_action = trap): start the
        connection again with it.  None when nothing is trapped under these names."""
        if self._traps.pop((connection, child), None) is None:
            return None
        return self.initiate(connection, now=now, children=[child])

    def traps(self) -> list[tuple[str, str]]:
        return list(self._traps)

    # -- the data plane's reports ----------------------------------------------------------
    def traffic_received(self, inbound_spi: int, *, now: float) -> None:
        """ESP arrived on this inbound SA: its IKE SA needs no liveness check for a while."""
        session = self._by_inbound.get(inbound_spi)
        if session is not None:
            session.note_traffic(now=now)

    def _child_session(self, spi: int) -> tuple[IkeSession, int] | None:
        session = self._by_inbound.get(spi)
        if session is not None and spi in session.children:
            return session, spi
        session = self._by_outbound.get(spi)
        if session is not None:
            for child in session.children.values():
                if child.spi_out == spi:
                    return session, child.spi_in
        return None

    def child_soft_expired(self, spi: int, *, now: float) -> None:
        """The inbound or outbound SA with this SPI reached its soft byte or packet limit
        (rekey_bytes, rekey_packets): rekey its CHILD SA."""
        self._now = now
        found = self._child_session(spi)
        if found is not None:
            found[0].rekey_child(found[1], now=now)
            self._collect(found[0])

    def child_hard_expired(self, spi: int, *, now: float) -> None:
        """The SA with this SPI reached its hard limit: its CHILD SA is deleted."""
        self._now = now
        found = self._child_session(spi)
        if found is not None:
            found[0].delete_child(found[1], now=now, reason="expired")
            self._collect(found[0])

    def sessions(self, connection: str | None = None) -> list[IkeSession]:
        return [s for s in self._sessions.values()
                if connection is None or s.config.name == connection]

    def rekey_child(self, connection: str, child: str, *, now: float) -> None:
        self._now = now
        for s in self.sessions(connection):
            for c in list(s.children.values()):
                if c.config.name == child:
                    s.rekey_child(c.spi_in, now=now)
            self._collect(s)

    def terminate(self, connection: str, *, now: float) -> None:
        self._now = now
        for s in self.sessions(connection):
            s.delete(now=now)
            self._collect(s)

    def close(self, *, now: float) -> None:
        self._now = now
        self._traps.clear()
        for s in list(self._sessions.values()):
            s.delete(now=now)
            self._collect(s)

    def active(self) -> bool:
        return any(not s.finished for s in self._sessions.values())

    def ike_keys(self) -> list[IkeKeys]:
        """The keys of every IKE SA with keys, for Wireshark (only with save_keys=True)."""
        if not self.save_keys:
            raise RuntimeError("IKE keys are exported only when asked for (save_keys=True)")
        live = [s.keys for s in self._sessions.values() if s.keys is not None]
        return self._finished_keys + [k for k in live if k not in self._finished_keys]

    # -- the driver's surface ------------------------------------------------------------
    def receive_datagram(self, data: bytes, *, remote: tuple[str, int], local: tuple[str, int],
                         nat_t: bool, now: float) -> None:
        self._now = now
        self._rotate(now)
        try:
            header = pull_ike_header(data)
        except InvalidMajorVersion:
            self._refuse_version(data, remote=remote, local=local, nat_t=nat_t)
            return
        except RemoteIkeError:
            self.ignored += 1
            return
        responder_side = bool(header.flags & IkeFlags.INITIATOR)     # the sender initiated
        ours = header.spi_r if responder_side else header.spi_i
        session = self._sessions.get(ours)
        if session is None and responder_side and header.spi_r == bytes(8) \
                and header.exchange_type == ExchangeType.IKE_SA_INIT \
                and not header.flags & IkeFlags.RESPONSE:
            session = self._half_open.get((header.spi_i, remote[0], remote[1]))
            if session is None:
                self._new_responder(data, remote=remote, local=local, nat_t=nat_t, now=now)
                return
        if session is None:
            self.ignored += 1
            return
        session.receive(data, remote=remote, local=local, nat_t=nat_t, now=now)
        self._collect(session)

    def handle_timer(self, *, now: float) -> None:
        self._now = now
        self._rotate(now)
        for session in list(self._sessions.values()):
            timer = session.get_timer()
            if timer is not None and now >= timer:
                session.handle_timer(now=now)
            if id(session) in self._half_open_key and not session.finished \
                    and now - session.created_at >= HALF_OPEN_TIMEOUT:
                session.delete(now=now, reason="half-open IKE SA timed out")
            self._collect(session)

    def datagrams_to_send(self, *, now: float) -> list[Datagram]:
        out, self._out = self._out, []
        return out

    def get_timer(self) -> float | None:
        times = [t for s in self._sessions.values() if (t := s.get_timer()) is not None]
        times += [s.created_at + HALF_OPEN_TIMEOUT for s in self._half_open.values()
                  if not s.finished]
        return min(times) if times else None

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    # -- internals -----------------------------------------------------------------------
    def _collect(self, session: IkeSession) -> None:
        self._out.extend(session.datagrams_to_send())
        while (event := session.next_event()) is not None:
            self._index(session, event)
            self._events.append(event)
        while session.spawned:
            new = session.spawned.pop(0)
            self._sessions[new.our_spi] = new
            self._collect(new)
        if session.finished or session.established:
            self._forget_half_open(session)
        if session.finished:
            if session.keys is not None and self.save_keys and session.keys not in self._finished_keys:
                self._finished_keys.append(session.keys)
            if self._sessions.get(session.our_spi) is session:
                del self._sessions[session.our_spi]
            if session.dead_children:
                self._dead_peer(session)
            if session.reauth_started:
                session.reauth_started = False
            for s in self._sessions.values():
                if s.replaces is session:           # the reauthentication lost its old SA
                    s.replaces = None
            if session.replaces is not None:        # a reauthentication that failed
                old, session.replaces = session.replaces, None
                if not old.finished:
                    old.reauth_started = old.reauth_wanted = False
                    old.reauth_at = self._now + REAUTH_RETRY_S
            return
        if session.reauth_wanted and not session.reauth_started and session.established:
            self._reauthenticate(session)
        if session.replaces is not None and session.established and not session.busy:
            old, session.replaces = session.replaces, None
            old.delete(now=self._now, reason="reauthenticated")
            self._collect(old)

    def _index(self, session: IkeSession, event: Event) -> None:
        if isinstance(event, ChildSaInstalled):
            self._by_inbound[event.inbound.spi] = session
            self._by_outbound[event.outbound.spi] = session
        elif isinstance(event, ChildSaDeleted):
            self._by_inbound.pop(event.inbound_spi, None)
            self._by_outbound.pop(event.outbound_spi, None)
        elif isinstance(event, IkeSaRekeyed) and session.successor is not None:
            for child in session.successor.children.values():
                self._by_inbound[child.spi_in] = session.successor
                self._by_outbound[child.spi_out] = session.successor

    def _forget_half_open(self, session: IkeSession) -> None:
        key = self._half_open_key.pop(id(session), None)
        if key is None:
            return
        self._half_open.pop(key, None)
        self._half_open_by_ip[key[1]] -= 1
        if self._half_open_by_ip[key[1]] <= 0:
            del self._half_open_by_ip[key[1]]

    def _reauthenticate(self, old: IkeSession) -> None:
        """reauth_time: a new IKE SA from scratch with the same CHILD SAs; the old one is
        deleted once the new one is up with them (make-before-break)."""
        names = []
        for child in old.children.values():
            if child.config.name not in names:
                names.append(child.config.name)
        old.reauth_started = True
        log.info("%s: reauthenticating", old.config.name)
        new = self.initiate(old.config.name, now=self._now, children=names, remote=old.remote[0])
        new.replaces = old

    def _dead_peer(self, session: IkeSession) -> None:
        """The peer stopped answering: each CHILD SA's dpd_action (clear: nothing; restart:
        initiate again; trap: wait for matching traffic)."""
        config = session.config
        restart = [c.name for c in session.dead_children if c.dpd_action == "restart"]
        for child in session.dead_children:
            if child.dpd_action == "trap":
                self._traps[(config.name, child.name)] = child
                self._events.append(ChildSaTrapped(config.name, child.name,
                                                   tuple(str(t) for t in child.local_ts),
                                                   tuple(str(t) for t in child.remote_ts)))
        session.dead_children = ()
        if restart:
            remote = session.remote[0]
            if ipaddress.ip_address(remote).is_unspecified:
                log.info("%s: dpd_action restart needs the peer's address", config.name)
                return
            log.info("%s: peer dead, restarting %s", config.name, ", ".join(restart))
            self.initiate(config.name, now=self._now, children=restart, remote=remote)

    def _config_for(self, local: tuple[str, int], remote: tuple[str, int]) -> IkeConfig | None:
        for config in self.configs.values():
            if _address_matches(config.local_addrs, local[0]) and \
                    _address_matches(config.remote_addrs, remote[0]):
                return config
        return None

    def _rotate(self, now: float) -> None:
        if now - self._secret_at >= COOKIE_SECRET_LIFETIME:
            self._old_secret, self._secret = self._secret, self._random(32)
            self._secret_at = now

    def _cookie(self, secret: bytes, msg: Message, remote: tuple[str, int]) -> bytes:
        nonce = next((p for p in msg.payloads if isinstance(p, NoncePayload)), None)
        ni = nonce.nonce if nonce is not None and hasattr(nonce, "nonce") else (nonce.data if nonce else b"")
        digest = hashlib.sha256(ni + ipaddress.ip_address(remote[0]).packed + msg.spi_i + secret).digest()
        return b"\0\0\0\1" + digest          # VersionIDofSecret | Hash (RFC 7296 2.6)

    def _cookie_ok(self, msg: Message, remote: tuple[str, int]) -> bool:
        given = next((p.data for p in msg.payloads if isinstance(p, NotifyPayload)
                      and p.notify_type == NotifyType.COOKIE), None)
        if given is None:
            return False
        return any(hmac.compare_digest(given, self._cookie(s, msg, remote))
                   for s in (self._secret, self._old_secret) if s)

    def _refuse_version(self, data: bytes, *, remote, local, nat_t) -> None:
        """RFC 7296 2.5: a request of a higher major version gets an unauthenticated
        INVALID_MAJOR_VERSION notify carrying the version we speak (2.0).  Only an
        IKE_SA_INIT request is answered, so that stray bytes are not reflected; anything else is
        ignored."""
        if len(data) < 28 or data[19] & IkeFlags.RESPONSE or data[18] != ExchangeType.IKE_SA_INIT \
                or data[8:16] != bytes(8):
            self.ignored += 1
            return
        flags = (0 if data[19] & IkeFlags.INITIATOR else IkeFlags.INITIATOR) | IkeFlags.RESPONSE
        self._out.append(Datagram(serialize_message(Message(
            data[:8], data[8:16], data[18], flags, int.from_bytes(data[20:24], "big"),
            (NotifyPayload(NotifyType.INVALID_MAJOR_VERSION),))), remote, local, nat_t))

    def _new_responder(self, data: bytes, *, remote, local, nat_t, now) -> None:
        try:
            msg = parse_message(data)
        except UnsupportedCriticalPayload as exc:
            # RFC 7296 2.5: refuse the whole message, naming the payload type (unauthenticated).
            self._out.append(Datagram(serialize_message(Message(
                data[:8], bytes(8), ExchangeType.IKE_SA_INIT, IkeFlags.RESPONSE, 0,
                (NotifyPayload(NotifyType.UNSUPPORTED_CRITICAL_PAYLOAD, exc.data),))), remote, local, nat_t))
            return
        except RemoteIkeError as exc:
            self.ignored += 1
            log.debug("malformed IKE_SA_INIT from %s ignored: %s", remote, exc)
            return
        config = self._config_for(local, remote)
        if config is None:
            self.ignored += 1
            log.info("IKE_SA_INIT from %s:%d to %s matches no connection: ignored", remote[0],
                     remote[1], local[0])
            return
        if len(data) > MAX_IKE_SA_INIT_BYTES:
            self.ignored += 1
            self.drops["ike_sa_init_too_large"] += 1
            return
        from_ip = self._half_open_by_ip.get(remote[0], 0)
        if self.block_threshold and from_ip >= self.block_threshold:
            self.ignored += 1
            self.drops["half_open_per_address"] += 1
            return
        busy = len(self._half_open) >= self.cookie_threshold or (
            self.cookie_threshold_ip and from_ip >= self.cookie_threshold_ip)
        if busy and not self._cookie_ok(msg, remote):
            self.cookies_sent += 1
            cookie = self._cookie(self._secret, msg, remote)
            self._out.append(Datagram(serialize_message(Message(
                msg.spi_i, bytes(8), ExchangeType.IKE_SA_INIT, IkeFlags.RESPONSE, msg.message_id,
                (NotifyPayload(NotifyType.COOKIE, cookie),))), remote, local, nat_t))
            return
        session = IkeSession(config, initiator=False, local=local, remote=remote,
                             registry=self.registry, now=now, save_keys=self.save_keys,
                             random=self._random, wall_offset=self.wall_offset)
        session.nat_t = nat_t
        if session.respond_init(msg, data, now=now):
            self._sessions[session.spi_r] = session
            key = (msg.spi_i, remote[0], remote[1])
            self._half_open[key] = session
            self._half_open_key[id(session)] = key
            self._half_open_by_ip[remote[0]] += 1
        self._collect(session)


__all__ = ["IkeEndpoint", "COOKIE_THRESHOLD", "COOKIE_THRESHOLD_IP", "BLOCK_THRESHOLD",
           "HALF_OPEN_TIMEOUT", "MAX_IKE_SA_INIT_BYTES"]

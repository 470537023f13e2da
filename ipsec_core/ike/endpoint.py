"""Many IKE sessions behind one set of addresses: the sans-I/O entry point a driver talks to.

Owns: finding the session of a received message (by our SPI), making responder sessions for
IKE_SA_INIT requests that match a configured connection, stateless COOKIEs under load
(RFC 7296 2.6) with a rotating secret, forgetting finished sessions, and merging every
session's datagrams, timers and events.
Must not: open sockets or read the clock; `now` is an argument everywhere.
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import os
from collections import deque
from typing import Callable

from ipsec_core.ike.config import IkeConfig
from ipsec_core.ike.constants import ExchangeType, IkeFlags, NotifyType
from ipsec_core.ike.events import Datagram, Event
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
                 random: Callable[[int], bytes] = os.urandom):
        names = [c.name for c in configs]
        if len(set(names)) != len(names):
            raise ValueError(f"connection names must be unique: {names}")
        self.configs = {c.name: c for c in configs}
        self.registry = registry
        self.save_keys = save_keys
        self.cookie_threshold = cookie_threshold
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
    def initiate(self, connection: str, *, now: float) -> IkeSession:
        config = self.configs[connection]
        local = (config.local_addrs[0], config.local_port)
        remote = (config.remote_addrs[0], config.remote_port)
        session = IkeSession(config, initiator=True, local=local, remote=remote,
                             registry=self.registry, now=now, save_keys=self.save_keys,
                             random=self._random)
        self._sessions[session.spi_i] = session
        session.initiate(now=now)
        self._collect(session)
        return session

    def sessions(self, connection: str | None = None) -> list[IkeSession]:
        return [s for s in self._sessions.values()
                if connection is None or s.config.name == connection]

    def rekey_child(self, connection: str, child: str, *, now: float) -> None:
        for s in self.sessions(connection):
            for c in list(s.children.values()):
                if c.config.name == child:
                    s.rekey_child(c.spi_in, now=now)
            self._collect(s)

    def terminate(self, connection: str, *, now: float) -> None:
        for s in self.sessions(connection):
            s.delete(now=now)
            self._collect(s)

    def close(self, *, now: float) -> None:
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
        self._rotate(now)
        for session in list(self._sessions.values()):
            timer = session.get_timer()
            if timer is not None and now >= timer:
                session.handle_timer(now=now)
            if not session.established and not session.finished and not session.initiator \
                    and now - session.created_at >= HALF_OPEN_TIMEOUT:
                session.delete(now=now)                 # half-open too long
            self._collect(session)

    def datagrams_to_send(self, *, now: float) -> list[Datagram]:
        out, self._out = self._out, []
        return out

    def get_timer(self) -> float | None:
        times = [t for s in self._sessions.values() if (t := s.get_timer()) is not None]
        times += [s.created_at + HALF_OPEN_TIMEOUT for s in self._half_open.values()
                  if not s.established and not s.finished]
        return min(times) if times else None

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    # -- internals -----------------------------------------------------------------------
    def _collect(self, session: IkeSession) -> None:
        self._out.extend(session.datagrams_to_send())
        while (event := session.next_event()) is not None:
            self._events.append(event)
        if session.finished:
            if session.keys is not None and self.save_keys and session.keys not in self._finished_keys:
                self._finished_keys.append(session.keys)
            self._sessions.pop(session.our_spi, None)
            for key, s in list(self._half_open.items()):
                if s is session:
                    del self._half_open[key]
        elif session.established:
            for key, s in list(self._half_open.items()):
                if s is session:
                    del self._half_open[key]

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
        half_open = sum(1 for s in self._half_open.values() if not s.finished and not s.established)
        if half_open >= self.cookie_threshold and not self._cookie_ok(msg, remote):
            self.cookies_sent += 1
            cookie = self._cookie(self._secret, msg, remote)
            self._out.append(Datagram(serialize_message(Message(
                msg.spi_i, bytes(8), ExchangeType.IKE_SA_INIT, IkeFlags.RESPONSE, msg.message_id,
                (NotifyPayload(NotifyType.COOKIE, cookie),))), remote, local, nat_t))
            return
        session = IkeSession(config, initiator=False, local=local, remote=remote,
                             registry=self.registry, now=now, save_keys=self.save_keys,
                             random=self._random)
        session.nat_t = nat_t
        if session.respond_init(msg, data, now=now):
            self._sessions[session.spi_r] = session
            self._half_open[(msg.spi_i, remote[0], remote[1])] = session
        self._collect(session)


__all__ = ["IkeEndpoint", "COOKIE_THRESHOLD", "HALF_OPEN_TIMEOUT"]

"""What an IKE session tells its driver: frozen events, pulled with `IkeSession.next_event()`.

Owns: the event classes and `Datagram`, the unit the session hands back to send.
Must not: hold behaviour.  An event never carries IKE keys; CHILD SA events carry the
`SaConfig`s the data plane needs to install the SAs (their keys are hidden from repr).
"""
from __future__ import annotations

from dataclasses import dataclass

from ipsec_core.dataplane.sa import SaConfig


@dataclass(frozen=True, slots=True)
class Datagram:
    """One UDP datagram to send.  `nat_t`: send from and to the NAT-T port, with the 4-byte
    non-ESP marker in front (the driver adds it; `data` is the IKE message alone)."""

    data: bytes
    remote: tuple[str, int]
    local: tuple[str, int]
    nat_t: bool


class Event:
    """Base class of everything `next_event()` returns."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class IkeSaEstablished(Event):
    connection: str
    spi_i: int
    spi_r: int
    initiator: bool
    proposal: str                  # strongSwan keywords of the chosen transforms
    local_id: str
    remote_id: str
    nat_local: bool                # our side is behind a NAT (or encap forced it)
    nat_remote: bool
    backend: str                   # what computes the IKE SA's own encryption


@dataclass(frozen=True, slots=True)
class ChildSaInstalled(Event):
    connection: str
    child: str
    inbound: SaConfig
    outbound: SaConfig
    proposal: str
    local_ts: tuple[str, ...]
    remote_ts: tuple[str, ...]
    rekeyed: tuple[int, int] | None = None   # (inbound, outbound) SPIs of the SA it replaces
    #: False for the responder's side of a CHILD SA rekey (and the loser's redundant SA of a
    #: collision): its inbound SA takes traffic now, but outbound packets stay on the SA it
    #: replaces until that one is deleted (make-before-break: the peer may not yet have the new
    #: inbound SA).  A driver keeps it behind the old one in its outbound lookup.
    outbound_active: bool = True


@dataclass(frozen=True, slots=True)
class ChildSaDeleted(Event):
    connection: str
    child: str
    inbound_spi: int
    outbound_spi: int
    #: "deleted by peer", "deleted", "rekeyed" (replaced by a new SA: a driver keeps its
    #: inbound SA a moment for packets still in flight), "rekey collision", "expired",
    #: "IKE SA gone", "reauthenticated"
    reason: str


@dataclass(frozen=True, slots=True)
class ChildSaFailed(Event):
    connection: str
    child: str
    reason: str                    # e.g. "peer: TS_UNACCEPTABLE"


@dataclass(frozen=True, slots=True)
class IkeSaDeleted(Event):
    connection: str
    spi_i: int
    spi_r: int
    reason: str                    # "deleted", "deleted by peer", "peer not responding", ...


@dataclass(frozen=True, slots=True)
class IkeSaRekeyed(Event):
    """The IKE SA was replaced by a rekeyed one (RFC 7296 2.18): its CHILD SAs now belong to
    the new SPIs.  The old SA's IkeSaDeleted (reason "rekeyed") follows."""

    connection: str
    old_spi_i: int
    old_spi_r: int
    spi_i: int
    spi_r: int
    proposal: str


@dataclass(frozen=True, slots=True)
class ChildSaTrapped(Event):
    """dpd_action = trap: the peer is dead; traffic matching these selectors should start the
    connection again (`IkeEndpoint.acquire(connection, child, now=)`)."""

    connection: str
    child: str
    local_ts: tuple[str, ...]
    remote_ts: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class IkeSaFailed(Event):
    """The IKE SA could not be set up.  `notify` is the error notify type received or sent
    (NO_PROPOSAL_CHOSEN, AUTHENTICATION_FAILED, ...), or None (no answer)."""

    connection: str
    reason: str
    notify: int | None = None


__all__ = ["Datagram", "Event", "IkeSaEstablished", "ChildSaInstalled", "ChildSaDeleted",
           "ChildSaFailed", "IkeSaDeleted", "IkeSaFailed", "IkeSaRekeyed", "ChildSaTrapped"]

"""The error tree of ipsec-suite.

Owns: every exception the library raises on purpose, and the drop reasons of the data plane.
Must not: import anything from the rest of the package (everything imports this).

Errors split as in h11: a *local* error means the caller misused the API or wrote a bad config
(fix your code or file); a *remote* error means the peer or the wire misbehaved.  Data-plane
drops are remote errors that carry a `DropReason`, which is also the key of the SA's drop counter.
"""
from __future__ import annotations

import enum


class IpsecError(Exception):
    """Base class of every error this package raises on purpose."""


class LocalError(IpsecError):
    """The API was misused, or a configuration is wrong."""


class ConfigError(LocalError):
    """A configuration file or value is wrong.  The message names the file and the key."""

    def __init__(self, message: str, *, file: str | None = None, key: str | None = None):
        self.file = file
        self.key = key
        where = ""
        if file and key:
            where = f"{file}: {key}: "
        elif file:
            where = f"{file}: "
        elif key:
            where = f"{key}: "
        super().__init__(where + message)
        self.bare_message = message


class ProposalError(LocalError):
    """A proposal keyword string (for example "aes128gcm16-esn") cannot be parsed."""


class BackendError(LocalError):
    """A crypto backend is missing, unavailable, or lacks the requested transform.

    Raised at SA install time, never silently replaced by another backend.
    """


class SequenceOverflow(LocalError):
    """The outbound sequence number space of an SA is exhausted: rekey, never wrap (RFC 4303 3.3.3)."""


class LifetimeExpired(LocalError):
    """The SA reached a hard lifetime (bytes, packets or seconds) and must not be used any more."""


class AuthenticationError(IpsecError):
    """Raised by a backend's AEAD/MAC verification when the ICV does not match."""


class KeyExchangeError(IpsecError):
    """The peer's key exchange value is not acceptable: wrong length, not in the group (MODP
    outside 1 < y < p-1, an ECP point off the curve), or it gives a degenerate shared secret
    (X25519/X448 all zeros).  A remote error: IKE answers it with the Notify type in `notify`,
    INVALID_KE_PAYLOAD (RFC 7296 3.10.1)."""

    notify = 17


class DropReason(str, enum.Enum):
    """Why an inbound (or outbound) packet was dropped.  The value is the counter key and JSON key."""

    MALFORMED = "malformed"              # not parseable as IP / UDP / ESP
    TRUNCATED = "truncated"              # shorter than header + IV + ICV, or not block aligned
    UNKNOWN_SPI = "unknown_spi"          # no SA for this SPI / protocol / destination
    NOT_ESP = "not_esp"                  # not an ESP packet (other protocol)
    REPLAY = "replay"                    # seen before, or left of the replay window
    AUTH_FAILED = "auth_failed"          # ICV / tag mismatch
    BAD_PADDING = "bad_padding"          # padding bytes not 1, 2, 3, ... (RFC 4303 2.4)
    BAD_NEXT_HEADER = "bad_next_header"  # next header does not fit the SA mode
    SA_EXPIRED = "sa_expired"            # hard lifetime reached
    NAT_KEEPALIVE = "nat_keepalive"      # one 0xFF byte on the ESP-in-UDP port (RFC 3948 2.3)
    IKE_PACKET = "ike_packet"            # non-ESP marker: an IKE message for the IKE layer
    DUMMY = "dummy"                      # next header 59: a dummy packet (RFC 4303 2.6)
    ECN_DROP = "ecn_drop"                # outer CE on a Not-ECT inner packet (RFC 6040 4.2)
    POLICY = "policy"                    # decrypted packet does not match the SA's policy
    NOT_AH = "not_ah"                    # not an AH packet (other protocol), for an AH SA
    TOO_BIG = "too_big"                  # outbound: over the SA's mtu with DF; ICMP answer made
    FRAG_OVERLAP = "frag_overlap"        # overlapping fragments: whole datagram dropped (RFC 5722)
    FRAG_DUPLICATE = "frag_duplicate"    # an exact duplicate fragment (RFC 8200 4.5), dropped alone
    FRAG_OVERSIZE = "frag_oversize"      # a fragment ending past 65535 octets of datagram
    FRAG_TIMEOUT = "frag_timeout"        # reassembly not complete in time
    FRAG_EVICTED = "frag_evicted"        # reassembly memory full: the oldest datagram made room


#: Drops that are part of normal operation, not a fault of the peer: count them, do not log
#: them as errors (RFC 4303 2.6: dummy packets are discarded silently).
SILENT_DROPS = frozenset({DropReason.DUMMY, DropReason.NAT_KEEPALIVE, DropReason.IKE_PACKET})


class PacketDropped(IpsecError):
    """A packet was dropped by the data plane.  `reason` is a `DropReason`; `detail` is free text."""

    def __init__(self, reason: DropReason, detail: str = ""):
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)

    @property
    def silent(self) -> bool:
        """True for drops that are expected traffic (dummy packets, NAT keepalives, IKE on the
        NAT-T port): counted like any drop, but not an error to report."""
        return self.reason in SILENT_DROPS


class PacketTooBig(PacketDropped):
    """An outbound packet would exceed the SA's `mtu` after protection and may not be fragmented
    (DF set, or an IPv6 packet over 1280 octets).  `icmp` is the ICMP "fragmentation needed"
    (RFC 1191) or ICMPv6 "packet too big" (RFC 8201) message for the driver to hand back to the
    packet's source; `mtu` is the largest packet the source should send (RFC 4301 8.2)."""

    def __init__(self, detail: str, *, icmp: bytes, mtu: int):
        self.icmp = icmp
        self.mtu = mtu
        super().__init__(DropReason.TOO_BIG, detail)

"""Security Associations: the configuration of one SA and its live state.

Owns: `SaConfig` (what a file or IKE hands over, validated), `SecurityAssociation` (sequence
numbers, replay window, lifetimes, counters, and the bound ESP or AH engine), the rules that make a
config usable (key lengths, addresses, ports), and what an SA does with a packet that exceeds its
`mtu` once protected (`protect_wire`: fragment it, or answer with ICMP "too big"), and the
inbound check of every decrypted packet against the SA's own traffic selectors (RFC 4301 5.2
step 4), when the config carries them.
Must not: do I/O or read a clock.  Time only arrives as `now` (seconds on any monotonic clock),
a required argument of every method that needs it: the caller (a driver, the CLI, a test) owns
the clock.

Keys never appear in a repr.  `SecurityAssociation.wipe()`, for a deleted SA, is best effort:
Python cannot overwrite the immutable `bytes` a config was built from, nor the copies a backend
keeps inside its keyed objects; the SA drops every reference it holds to key material and to
its keyed primitives (so they can be freed), zeroes the buffers it owns, and refuses all further
use.  Whoever created the `SaConfig` holds its own reference to the keys.
"""
from __future__ import annotations

import enum
import ipaddress
import secrets
from collections import Counter
from dataclasses import dataclass, field, replace

from ipsec_core.errors import (ConfigError, DropReason, LifetimeExpired, LocalError, PacketDropped,
                               PacketTooBig, SequenceOverflow)
from ipsec_core.transforms.keywords import AhProposal, EspProposal
from ipsec_core.dataplane.replay import DEFAULT_REPLAY_WINDOW_BITS, MAX_REPLAY_WINDOW_BITS, ReplayWindow
from ipsec_core.dataplane.spd import TrafficSelectors
from ipsec_core.transforms.iana import CipherKind, IntegId

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Default outer TTL / hop limit of tunnel mode ("constructed", RFC 4301 5.1.2.1).
DEFAULT_OUTER_TTL = 64
NAT_T_PORT = 4500
_SEQ32_MAX = 0xFFFFFFFF
_SEQ64_MAX = 0xFFFFFFFFFFFFFFFF


class Direction(str, enum.Enum):
    OUT = "out"
    IN = "in"


class Mode(str, enum.Enum):
    TUNNEL = "tunnel"
    TRANSPORT = "transport"


class DfBit(str, enum.Enum):
    """The DF bit of the outer IPv4 header of tunnel mode (and so: fragment a protected packet
    that exceeds `mtu`, or answer ICMP "fragmentation needed").  `copy` is strongSwan's default
    `copy_df = yes`; `clear` is `copy_df = no`; `set` always sets it (Cisco's df-bit set)."""

    COPY = "copy"
    SET = "set"
    CLEAR = "clear"


#: `tfc_padding = "mtu"`: pad every tunnel-mode ESP packet to the SA's `mtu` (strongSwan's word).
TFC_TO_MTU = "mtu"


@dataclass(frozen=True, slots=True)
class Lifetime:
    """Limits of an SA; None means unlimited.  Soft limits warn (rekey), hard limits stop the SA."""

    bytes: int | None = None
    packets: int | None = None
    seconds: float | None = None

    def reached(self, *, octets: int, packets: int, age: float) -> str | None:
        if self.bytes is not None and octets >= self.bytes:
            return f"{octets} bytes >= {self.bytes}"
        if self.packets is not None and packets >= self.packets:
            return f"{packets} packets >= {self.packets}"
        if self.seconds is not None and age >= self.seconds:
            return f"{age:.0f} s >= {self.seconds:g} s"
        return None


@dataclass(frozen=True, slots=True)
class SaConfig:
    """Everything needed to install one SA.  `enc_key` is the key followed by the salt/nonce
    (4 bytes for GCM, GMAC, ChaCha20-Poly1305 and CTR, 3 for CCM), as strongSwan, Wireshark and
    scapy write it.  For `out`, `local` is the outer source; for `in`, the outer destination.
    `selectors`: the traffic selectors the SA was negotiated for (IKE installs a CHILD SA's
    TSi/TSr here); an inbound SA drops a decrypted packet outside them (reason "policy").
    None: no check, as for a manually keyed SA whose policy lives in an `Spd`."""

    name: str
    spi: int
    direction: Direction
    mode: Mode
    proposal: EspProposal | AhProposal
    enc_key: bytes = field(default=b"", repr=False)
    integ_key: bytes = field(default=b"", repr=False)
    local: IpAddress | None = None
    remote: IpAddress | None = None
    protocol: str = "esp"
    encap_ports: tuple[int, int] | None = None
    replay_window: int = DEFAULT_REPLAY_WINDOW_BITS
    backend: str | None = None
    soft: Lifetime = Lifetime()
    hard: Lifetime = Lifetime()
    outer_ttl: int = DEFAULT_OUTER_TTL
    tfc_padding: int | str = 0          # ESP tunnel mode: pad the inner packet to this many bytes, or "mtu"
    mtu: int | None = None              # largest protected packet on the wire; None: no limit
    df_bit: DfBit = DfBit.COPY
    selectors: TrafficSelectors | None = None

    @property
    def esn(self) -> bool:
        return self.proposal.esn

    def problems(self) -> list[tuple[str, str]]:
        """(key, what is wrong) for every problem; empty when the config is usable."""
        out: list[tuple[str, str]] = []
        if self.protocol not in ("esp", "ah"):
            out.append(("protocol", f"{self.protocol!r}: expected 'esp' or 'ah'"))
            return out
        if not 0x100 <= self.spi <= 0xFFFFFFFF:
            out.append(("spi", f"{self.spi:#x} is outside 0x100..0xffffffff (0-255 are reserved, RFC 4303 2.1)"))
        out.extend(self._size_problems())
        out.extend(self._tunnel_problems())
        if self.protocol == "ah":
            return out + self._ah_problems()
        if not isinstance(self.proposal, EspProposal):
            out.append(("proposal", f"{self.proposal.keyword!r} is an AH proposal; protocol is 'esp'"))
            return out
        if self.tfc_padding and self.mode != Mode.TUNNEL:
            out.append(("tfc_padding", "needs tunnel mode: the receiver cuts TFC padding at the "
                                       "inner IP packet's length (RFC 4303 2.7)"))
        need = self.proposal.enc_key_bytes
        info = self.proposal.encr_info
        if info.kind != CipherKind.NULL and len(self.enc_key) != need:
            salt = f" ({self.proposal.key_bits // 8} key + {info.salt_bytes} salt)" if info.salt_bytes else ""
            out.append(("key", f"{self.proposal.keyword} needs {need} bytes{salt}, got {len(self.enc_key)}"))
        if info.kind == CipherKind.NULL and self.enc_key:
            out.append(("key", "encryption 'null' takes no key"))
        integ = self.proposal.integ_info
        if integ is None and self.integ_key:
            out.append(("integrity_key", f"{self.proposal.keyword} has no integrity algorithm"))
        elif integ is not None:
            if not self.integ_key:
                out.append(("integrity_key", f"{self.proposal.keyword} needs an integrity key"))
            elif len(self.integ_key) != integ.key_bytes:
                out.append(("integrity_key", f"{integ.id.name} needs {integ.key_bytes} bytes, "
                                             f"got {len(self.integ_key)}"))
        if self.encap_ports is not None and not all(0 < p < 65536 for p in self.encap_ports):
            out.append(("encap_ports", f"ports must be 1..65535, not {self.encap_ports}"))
        return out

    def _tunnel_problems(self) -> list[tuple[str, str]]:
        """What ESP and AH SAs share: addresses, replay window, outer TTL."""
        out: list[tuple[str, str]] = []
        if self.mode == Mode.TUNNEL and (self.local is None or self.remote is None):
            out.append(("tunnel", "tunnel mode needs tunnel = { local = ..., remote = ... }"))
        if self.local is not None and self.remote is not None and self.local.version != self.remote.version:
            out.append(("tunnel", "local and remote must be of one address family"))
        if not 0 <= self.replay_window <= MAX_REPLAY_WINDOW_BITS:
            out.append(("replay_window", f"must be 0..{MAX_REPLAY_WINDOW_BITS}, not {self.replay_window}"))
        if not 1 <= self.outer_ttl <= 255:
            out.append(("outer_ttl", f"must be 1..255, not {self.outer_ttl}"))
        return out

    def _size_problems(self) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        if self.mtu is not None:
            least = 1280 if self.local is not None and self.local.version == 6 else 68
            if isinstance(self.mtu, bool) or not isinstance(self.mtu, int) or not least <= self.mtu <= 65535:
                out.append(("mtu", f"must be an integer {least}..65535 (bytes of the protected "
                                   f"packet), not {self.mtu!r}"))
        tfc = self.tfc_padding
        if tfc == TFC_TO_MTU:
            if self.mtu is None:
                out.append(("tfc_padding", '"mtu" needs the mtu key'))
        elif isinstance(tfc, bool) or not isinstance(tfc, int) or not 0 <= tfc <= 65535:
            out.append(("tfc_padding", f'must be bytes 0..65535 or "mtu", not {tfc!r}'))
        if not isinstance(self.df_bit, DfBit):
            out.append(("df_bit", f"{self.df_bit!r}: expected 'copy', 'set' or 'clear'"))
        if self.selectors is not None and not isinstance(self.selectors, TrafficSelectors):
            out.append(("selectors", f"expected TrafficSelectors or None, not {type(self.selectors).__name__}"))
        return out

    def _ah_problems(self) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        if not isinstance(self.proposal, AhProposal):
            out.append(("proposal", f"{self.proposal.keyword!r} is an ESP proposal; AH takes an "
                                    "integrity keyword such as 'sha256', 'aescmac' or 'aes128gmac'"))
            return out
        if self.enc_key:
            out.append(("key", "AH does not encrypt: put the key in integrity_key"))
        info = self.proposal.integ_info
        salt = " (key + 4 salt)" if self.proposal.gmac else ""
        if not self.integ_key:
            out.append(("integrity_key", f"{self.proposal.keyword} needs an integrity key of "
                                         f"{info.key_bytes} bytes{salt}"))
        elif len(self.integ_key) != info.key_bytes:
            out.append(("integrity_key", f"{self.proposal.keyword} needs {info.key_bytes} bytes"
                                         f"{salt}, got {len(self.integ_key)}"))
        if self.encap_ports is not None:
            out.append(("encap", "AH cannot be UDP-encapsulated (RFC 3948 is for ESP only)"))
        if self.tfc_padding:
            out.append(("tfc_padding", "TFC padding is an ESP feature (RFC 4303 2.7); AH has none"))
        return out


@dataclass
class SaStats:
    packets: int = 0
    bytes: int = 0
    drops: Counter = field(default_factory=Counter)
    dummies: int = 0            # dummy packets sent (RFC 4303 2.6); received ones count as drops


class SecurityAssociation:
    """One installed SA.  `protect` (direction out) and `unprotect` (direction in) are the data
    plane; both are plain method calls on objects bound here, at install time."""

    def __init__(self, config: SaConfig, *, registry=None, now: float):
        problems = config.problems()
        if problems:
            raise ConfigError("; ".join(f"{k}: {v}" for k, v in problems), key=f"sa {config.name!r}")
        from ipsec_core.crypto.registry import get_registry

        self.config = config
        self.name = config.name
        self.spi = config.spi
        self.direction = config.direction
        self.mode = config.mode
        self.esn = config.esn
        if isinstance(now, bool) or not isinstance(now, (int, float)):
            raise TypeError(f"SecurityAssociation(now=...) takes seconds as a number, not {now!r}")
        self.installed_at = float(now)
        self.seq = 0                       # last sequence number sent (outbound)
        self.replay = ReplayWindow(config.replay_window, esn=config.esn)
        self.stats = SaStats()
        self.soft_expired: str | None = None
        self.hard_expired: str | None = None
        if config.protocol == "ah":
            from ipsec_core.dataplane.ah import AhEngine
            self.engine = AhEngine(self, registry or get_registry())
        else:
            from ipsec_core.dataplane.esp.engine import EspEngine
            self.engine = EspEngine(self, registry or get_registry())
        self._has_lifetime = any(v is not None for lt in (config.soft, config.hard)
                                 for v in (lt.bytes, lt.packets, lt.seconds))
        # RFC 4301 5.2 step 4, after the engine: the packet was authentic, so it has moved the
        # replay window and counts as processed (lifetimes measure what the key handled) in
        # every path alike, one by one or in batches; its drop counts as "policy".
        self._inbound_selectors = config.selectors if config.direction == Direction.IN else None

    # -- lifetimes --------------------------------------------------------------------------
    def check_lifetime(self, now: float) -> None:
        """Raise LifetimeExpired once a hard limit is reached; note the first soft limit reached."""
        if self.hard_expired:
            raise LifetimeExpired(f"SA {self.name}: hard lifetime reached ({self.hard_expired})")
        if not self._has_lifetime:
            return
        age = now - self.installed_at
        usage = dict(octets=self.stats.bytes, packets=self.stats.packets, age=age)
        hard = self.config.hard.reached(**usage)
        if hard:
            self.hard_expired = hard
            raise LifetimeExpired(f"SA {self.name}: hard lifetime reached ({hard})")
        if self.soft_expired is None:
            self.soft_expired = self.config.soft.reached(**usage)

    def lifetime_event_due(self, now: float) -> bool:
        """Whether `check_lifetime(now)` would raise or note a soft limit; False means it would
        change nothing.  Side-effect free: batch paths ask it instead of checking up front, since
        one-by-one processing only reaches the check for packets that get that far."""
        if self.hard_expired:
            return True
        if not self._has_lifetime:
            return False
        age = now - self.installed_at
        usage = dict(octets=self.stats.bytes, packets=self.stats.packets, age=age)
        return bool(self.config.hard.reached(**usage)) or (
            self.soft_expired is None and bool(self.config.soft.reached(**usage)))

    def next_seq(self, now: float) -> int:
        """The sequence number the next outbound packet gets, after the lifetime check; raises
        SequenceOverflow rather than wrap (RFC 4303 3.3.3).  Changes nothing: the engine stores
        it in `seq` once the packet is built."""
        self.check_lifetime(now)
        seq = self.seq + 1
        if seq > (_SEQ64_MAX if self.esn else _SEQ32_MAX):
            raise SequenceOverflow(f"SA {self.name}: sequence number space exhausted; rekey the SA")
        return seq

    def note_soft_limit(self, now: float) -> None:
        """Called after a packet is counted: note a soft limit as soon as that packet reaches it,
        so a rekey can start now rather than when (if ever) the next packet comes."""
        if self.soft_expired is None and self._has_lifetime:
            age = now - self.installed_at
            self.soft_expired = self.config.soft.reached(octets=self.stats.bytes,
                                                         packets=self.stats.packets, age=age)

    # -- data plane -------------------------------------------------------------------------
    def protect(self, packet: bytes, *, now: float) -> bytes:
        """Encapsulate one IP packet; returns the outer IP packet (IP [UDP] ESP)."""
        return self.engine.protect(packet, now)

    def unprotect(self, packet: bytes, *, now: float) -> bytes:
        """Decapsulate one IP packet (IP [UDP] ESP); returns the inner IP packet.

        Raises PacketDropped(reason); the reason is also counted in `stats.drops`.  A dropped
        packet changes nothing else in the SA, except one dropped because it is outside the
        SA's `selectors` (reason "policy"): it was authentic, so it has advanced the replay
        window and counts in `stats.packets` / `stats.bytes`.
        """
        try:
            inner = self.engine.unprotect(packet, now)
            if self._inbound_selectors is not None:
                self._inbound_selectors.check_inbound(inner, self.name)
            return inner
        except PacketDropped as drop:
            self.stats.drops[drop.reason.value] += 1
            raise
        except LifetimeExpired as exc:
            self.stats.drops[DropReason.SA_EXPIRED.value] += 1
            raise PacketDropped(DropReason.SA_EXPIRED, str(exc)) from None

    def protect_wire(self, packet: bytes, *, now: float) -> list[bytes]:
        """Protect one packet and apply the SA's `mtu`: the packets for the wire (one, or the
        fragments of one).  `protect` itself ignores `mtu`; `df_bit` rules the outer header of
        tunnel mode only (transport mode keeps the packet's own DF).

        A packet whose protected form exceeds `mtu` is fragmented after protection (IPv4
        fragments of the outer packet, or an IPv6 fragment header) when the outer DF bit is
        clear (`df_bit`, and for an IPv6 packet: when it is at most 1280 octets, RFC 2473 7.1);
        otherwise nothing is protected and PacketTooBig is raised, counted in `stats.drops`,
        carrying the ICMP / ICMPv6 message for the packet's source with the largest packet
        size that fits (RFC 4301 8.2).
        """
        mtu = self.config.mtu
        engine = self.engine
        if mtu is None or not packet or engine.protected_len(packet) <= mtu:
            return [engine.protect(packet, now)]
        from ipsec_core.dataplane import fragments

        version = packet[0] >> 4
        if version == 4:
            df = bool(packet[6] & 0x40)
        elif version == 6:
            df = len(packet) > fragments.IPV6_MIN_MTU
        else:
            raise LocalError(f"protect() needs an IPv4 or IPv6 packet, got version {version}")
        if self.config.df_bit != DfBit.COPY and self.mode == Mode.TUNNEL:
            df = self.config.df_bit == DfBit.SET     # the outer header's DF, by policy
        if not df:
            wire = engine.protect(packet, now)
            if wire[0] >> 4 == 4:
                return fragments.fragment_ipv4(wire, mtu)
            return fragments.fragment_ipv6(wire, mtu, ident=secrets.randbits(32))
        fits = self._largest_fitting(packet, mtu)
        local = self.config.local if self.mode == Mode.TUNNEL else None
        if version == 4:
            src = local.packed if local is not None and local.version == 4 else packet[16:20]
            icmp = fragments.icmp_frag_needed(packet, mtu=max(fits, fragments.IPV4_MIN_MTU), src=src)
        else:
            src = local.packed if local is not None and local.version == 6 else packet[24:40]
            fits = max(fits, fragments.IPV6_MIN_MTU)
            icmp = fragments.icmpv6_packet_too_big(packet, mtu=fits, src=src)
        self.stats.drops[DropReason.TOO_BIG.value] += 1
        raise PacketTooBig(f"{len(packet)}-byte packet is {engine.protected_len(packet)} bytes "
                           f"protected, over the SA's mtu {mtu}; the source should send at most {fits}",
                           icmp=icmp, mtu=fits)

    def _largest_fitting(self, packet: bytes, mtu: int) -> int:
        """The largest length of a packet like `packet` whose protected form fits `mtu`."""
        size = len(packet) if packet[0] >> 4 == 6 else (packet[2] << 8) | packet[3]
        protected_len = self.engine.protected_len
        fits = size - (protected_len(packet) - mtu)
        # ESP padding makes the overhead depend on the length: step to the exact edge.
        while fits > 0 and protected_len(packet, fits) > mtu:
            fits -= 1
        while protected_len(packet, fits + 1) <= mtu:
            fits += 1
        return max(fits, 0)

    def dummy(self, size: int | None = None, *, now: float) -> bytes:
        """A dummy ESP packet (next header 59, RFC 4303 2.6) of `size` random payload bytes (by
        default the TFC padding size, else 0), with the next sequence number.  The peer drops
        it silently (counted as "dummy").  ESP only; transport mode needs `tunnel` addresses."""
        if self.config.protocol != "esp":
            raise LocalError(f"SA {self.name}: dummy packets are an ESP feature (RFC 4303 2.6)")
        return self.engine.dummy(size, now)

    def protect_batch(self, packets: list[bytes], *, now: float) -> list[bytes]:
        """Protect many packets of this SA at once.  Sequence numbers, counters and lifetimes
        end exactly as if each packet had gone through `protect`, in order; the engine (and a
        backend with a native batch AEAD) may do the crypto in one call."""
        return self.engine.protect_batch(packets, now)

    def unprotect_batch(self, packets: list[bytes], *,
                        now: float) -> list[bytes | PacketDropped]:
        """Unprotect many packets: one verdict per packet, the inner packet or the
        `PacketDropped` that says why (also counted in `stats.drops`).  Replay state ends
        exactly as if each packet had gone through `unprotect`, in order."""
        out = self.engine.unprotect_batch(packets, now)
        if self._inbound_selectors is not None:
            out = self._check_selectors(out)
        if PacketDropped in map(type, out):            # C-level scan; most batches have none
            drops = self.stats.drops
            for verdict in out:
                if verdict.__class__ is PacketDropped:
                    drops[verdict.reason.value] += 1
        return out

    @property
    def prefers_whole_batches(self) -> bool:
        """Whether this SA's backend computes a whole batch in one call (`encrypt_batch`, or ESP
        framing on the device: the GPU), so that a driver should hand it large batches, waiting
        a bounded time for them, rather than each read as it comes."""
        engine = self.engine
        return bool(getattr(engine, "_offload", False) or getattr(engine, "_framing", None) is not None)

    @property
    def frames_batches(self) -> bool:
        """Whether `protect_packets` / `unprotect_packets` run natively on the batch's buffer
        for this SA (its backend frames whole ESP batches: ipsecmb, AEAD, tunnel mode); else
        they convert to and from `protect_batch` / `unprotect_batch` lists."""
        which = "_bulk_protect" if self.config.direction == Direction.OUT else "_bulk_unprotect"
        bulk = getattr(self.engine, which, None)
        return bool(bulk is not None and bulk.fused and self.engine._framing is None
                    and not self.engine._offload)

    def protect_packets(self, batch: "PacketBatch", *, now: float, esp_only: bool = False,
                        inner_csum: tuple[int, int] | None = None) -> "PacketBatch":
        """`protect_batch` on a `PacketBatch`: the outer packets as a PacketBatch.  Where the
        backend frames whole batches (ipsecmb, AEAD, tunnel mode) they are written in place:
        each packet's header into the `headroom` before it and its trailer and ICV into the
        `tailroom` after it, so the result shares `batch.buf` (and the inner bytes are gone);
        give the batch a headroom of at least the outer, UDP and ESP headers and the IV, and a
        tailroom of the cipher block + 1 + ICV bytes (64 / 32 cover every proposal).
        Anything else is protected through `protect_batch` into a new buffer.

        `esp_only` (a tunnel-mode ESP-in-UDP SA): the results are the ESP packets alone, SPI
        first, what a UDP socket sends (RFC 3948), and a headroom of the ESP header and IV
        (8 + 8, or 8 + 16 for AES-CBC) is enough; with
        packets laid out one ESP packet apart, the results lie back to back in `batch.buf`,
        ready for one UDP_SEGMENT send.

        `inner_csum` (start, offset), checksum offload: each inner packet's 16-bit field at
        `start + offset` holds its pseudo-header sum, and the RFC 1071 checksum from `start`
        on is completed before it is protected (what a NIC does for a TSO segment)."""
        if hasattr(self.engine, "protect_packets"):
            return self.engine.protect_packets(batch, now, esp_only, inner_csum)
        from ipsec_core.dataplane.batch import PacketBatch, complete_checksums
        packets = batch.packets()
        if inner_csum is not None:
            packets = complete_checksums(packets, *inner_csum)
        return PacketBatch.from_packets(self.protect_batch(packets, now=now))

    def unprotect_packets(self, batch: "PacketBatch", *, now: float,
                          esp_only: bool = False) -> tuple["PacketBatch", list[PacketDropped]]:
        """`unprotect_batch` on a `PacketBatch`: (the accepted inner packets, in order, as a
        PacketBatch with a buffer of its own; the `PacketDropped` of every other packet, also
        counted in `stats.drops`).  The state ends as after `unprotect_batch`.  With inbound
        `selectors`, each accepted packet is also checked against them.  `esp_only`: the
        packets are ESP alone (SPI first), as a UDP socket receives them."""
        if not hasattr(self.engine, "unprotect_packets"):
            from ipsec_core.dataplane.esp.bulk import _split
            return _split(self.unprotect_batch(batch.packets(), now=now))
        inners, drops = self.engine.unprotect_packets(batch, now, esp_only)
        if self._inbound_selectors is not None and len(inners):
            from ipsec_core.dataplane.esp.bulk import _split
            more, extra = _split(self._check_selectors(inners.packets()))
            if extra:
                inners, drops = more, drops + extra
        if drops:
            counts = self.stats.drops
            for drop in drops:
                counts[drop.reason.value] += 1
        return inners, drops

    def _check_selectors(self, verdicts: list) -> list:
        check, name = self._inbound_selectors.check_inbound, self.name
        out = []
        for verdict in verdicts:
            if verdict.__class__ is not PacketDropped:
                try:
                    check(verdict, name)
                except PacketDropped as drop:
                    verdict = drop
            out.append(verdict)
        return out

    def wipe(self) -> None:
        """Forget the keys of a deleted SA (best effort: see the module docstring).  Every later
        protect raises LifetimeExpired and every later unprotect drops the packet as
        "sa_expired"."""
        self.hard_expired = "deleted, keys wiped"
        self.engine.wipe()
        self.config = replace(self.config, enc_key=b"", integ_key=b"")

    @property
    def wiped(self) -> bool:
        return self.config.enc_key == b"" and self.config.integ_key == b"" and \
            self.hard_expired == "deleted, keys wiped"

    def state(self) -> tuple:
        """A comparable snapshot of everything the data plane changes (for tests and batch checks)."""
        return (self.seq, self.replay.snapshot(), self.stats.packets, self.stats.bytes,
                dict(self.stats.drops), self.soft_expired, self.hard_expired)

    def __repr__(self) -> str:
        return (f"<SA {self.name} spi={self.spi:#010x} {self.direction.value} {self.mode.value} "
                f"{self.config.proposal.keyword}[{self.engine.backend_names}]>")


def uses_integrity(config: SaConfig) -> bool:
    return config.protocol == "ah" or config.proposal.integ != IntegId.AUTH_NONE

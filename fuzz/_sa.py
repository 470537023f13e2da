"""SA fixtures of the data-plane fuzz targets: for each variant (protocol, proposal, mode, outer
IP version, ESN, UDP encapsulation) an outbound SA, its inbound peer and an inbound twin that
the batch target drives one packet at a time, built once and reset before every input.

`reset` puts the inbound window at one of a few edges (fresh, mid-space with holes, just below
2^32, and with ESN just past 2^32 and just below 2^64), so inputs reach the sequence number
estimation at the edges where it can go wrong.
"""
from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from functools import lru_cache

from ipsec_core.crypto.registry import get_registry
from ipsec_core.dataplane.sa import Direction, Mode, SaConfig, SaStats, SecurityAssociation
from ipsec_core.transforms.keywords import parse_ah, parse_esp
from ipsec_core.wire.ip import build_ipv4, build_ipv6, checksum

#: One proposal of every ESP family: AES-GCM, CCM, ChaCha20-Poly1305, AES-CBC + HMAC, AES-CTR,
#: GMAC (integrity only), NULL encryption, and an XCBC integrity algorithm.
ESP_PROPOSALS = ("aes128gcm16", "aes256gcm8", "aes128ccm16", "chacha20poly1305", "aes128-sha256",
                 "aes256ctr-sha512", "aes128gmac", "null-sha1", "aes192-aesxcbc")
AH_PROPOSALS = ("sha256", "sha1", "sha384", "aescmac", "aesxcbc", "aes128gmac")
WINDOW = 64
SEQ32_MAX, SEQ64_MAX = (1 << 32) - 1, (1 << 64) - 1
ADDR = {4: ("192.0.2.1", "192.0.2.2"), 6: ("2001:db8::1", "2001:db8::2")}
INNER_ADDR = {4: ("198.51.100.1", "203.0.113.1"), 6: ("2001:db8:1::1", "2001:db8:2::1")}
NOW = 1000.0


@dataclass(frozen=True)
class Variant:
    protocol: str
    proposal: str
    tunnel: bool
    version: int
    esn: bool
    encap: bool

    @property
    def label(self) -> str:
        return (f"{self.protocol}-{self.proposal}-{'tunnel' if self.tunnel else 'transport'}-v{self.version}"
                f"{'-esn' if self.esn else ''}{'-udp' if self.encap else ''}")


def variants(protocol: str) -> tuple[Variant, ...]:
    out = []
    for proposal in (ESP_PROPOSALS if protocol == "esp" else AH_PROPOSALS):
        for tunnel in (True, False):
            for version in (4, 6):
                for esn in (False, True):
                    for encap in ((False, True) if protocol == "esp" else (False,)):
                        out.append(Variant(protocol, proposal, tunnel, version, esn, encap))
    return tuple(out)


ESP_VARIANTS = variants("esp")
AH_VARIANTS = variants("ah")


def udp_payload(seed: int = 0) -> bytes:
    body = bytes((seed + i) & 0xFF for i in range(24))
    return struct.pack("!HHHH", 1000 + seed, 2000, 8 + len(body), 0) + body


def ip_packet(version: int, src: str, dst: str, payload: bytes, *, proto: int = 17) -> bytes:
    s, d = ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed
    if version == 4:
        return build_ipv4(src=s, dst=d, proto=proto, payload_len=len(payload), ident=7) + payload
    return build_ipv6(src=s, dst=d, next_header=proto, payload_len=len(payload)) + payload


def fix_lengths(packet: bytes) -> bytes | None:
    """`packet` with its IP length fields (and IPv4 checksum) made true, or None when it is
    no IP packet at all; the round-trip target protects such packets."""
    if not packet:
        return None
    buf = bytearray(packet)
    if buf[0] >> 4 == 4 and len(buf) >= 20:
        ihl = max(5, buf[0] & 0x0F)
        buf[0] = 0x40 | ihl
        if ihl * 4 > len(buf):
            return None
        buf[2:4] = len(buf).to_bytes(2, "big")
        buf[6] &= 0x40                 # no fragment: ESP/AH transport refuses them, rightly
        buf[7] = 0
        buf[10:12] = b"\0\0"
        buf[10:12] = checksum(buf[:ihl * 4]).to_bytes(2, "big")
        return bytes(buf)
    if buf[0] >> 4 == 6 and len(buf) >= 40:
        buf[4:6] = (len(buf) - 40).to_bytes(2, "big")
        return bytes(buf)
    return None


class Pair:
    """Outbound SA, inbound SA, inbound twin of one variant."""

    def __init__(self, v: Variant):
        self.variant = v
        local, remote = (ipaddress.ip_address(a) for a in ADDR[v.version])
        suffix = "-esn" if v.esn else ""
        if v.protocol == "esp":
            prop = parse_esp(v.proposal + suffix)
            enc = bytes(range(1, 1 + prop.enc_key_bytes))
            integ = bytes(range(100, 100 + prop.integ_info.key_bytes)) if prop.integ_info else b""
            keys = dict(enc_key=enc, integ_key=integ)
        else:
            prop = parse_ah(v.proposal + suffix)
            keys = dict(integ_key=bytes(range(100, 100 + prop.integ_info.key_bytes)))

        def make(direction: Direction, name: str) -> SecurityAssociation:
            a, b = (local, remote) if direction is Direction.OUT else (remote, local)
            cfg = SaConfig(name=name, spi=0x1234ABCD, direction=direction,
                           mode=Mode.TUNNEL if v.tunnel else Mode.TRANSPORT, proposal=prop,
                           local=a, remote=b, protocol=v.protocol,
                           encap_ports=(4500, 4500) if v.encap else None, replay_window=WINDOW,
                           **keys)
            return SecurityAssociation(cfg, registry=get_registry(), now=NOW)

        self.out = make(Direction.OUT, "out")
        self.inb = make(Direction.IN, "in")
        self.twin = make(Direction.IN, "twin")
        src, dst = (INNER_ADDR if v.tunnel else ADDR)[v.version]
        self.inner_src, self.inner_dst = src, dst
        self.inner = ip_packet(v.version, src, dst, udp_payload())
        self.max_seq = SEQ64_MAX if v.esn else SEQ32_MAX

    # -- state ---------------------------------------------------------------------------
    def edges(self) -> tuple[int, ...]:
        base = (0, 1000, SEQ32_MAX - 300)
        return base + ((SEQ32_MAX + 5, SEQ64_MAX - 300) if self.variant.esn else ())

    def reset(self, edge_index: int, bitmap: int) -> int:
        """Both inbound SAs fresh but for the window at an edge; returns the window top."""
        top = self.edges()[edge_index % len(self.edges())]
        for sa in (self.inb, self.twin):
            sa.replay.top = top
            sa.replay.bitmap = (bitmap | 1) & sa.replay._mask if top else 0
            sa.stats = SaStats()
            sa.soft_expired = sa.hard_expired = None
        self.out.stats = SaStats()
        self.out.soft_expired = self.out.hard_expired = None
        return top

    def packet(self, seq: int, inner: bytes | None = None) -> bytes:
        """A valid packet with sequence number `seq` (the outbound SA's counter is set for it)."""
        self.out.seq = seq - 1
        return self.out.protect(self.inner if inner is None else inner, now=NOW)

    def wrap(self, esp: bytes) -> bytes:
        """An ESP payload as the inbound SA receives it: outer IP (and UDP) header around it."""
        v = self.variant
        src, dst = ADDR[v.version]
        if v.encap:
            esp = struct.pack("!HHHH", 4500, 4500, 8 + len(esp), 0) + esp
        return ip_packet(v.version, src, dst, esp, proto=17 if v.encap else 50)

    def sealed(self, seq: int, payload: bytes, next_header: int) -> bytes:
        """An authentic ESP packet carrying any plaintext: the ICV is good, the content not."""
        return self.wrap(self.out.engine._seal(payload, next_header, seq))

    def twin_unprotect_esp(self, esp: bytes) -> bytes:
        """The twin's one-by-one answer to an ESP-in-UDP packet that came without its outer
        header (from a UDP socket): the header the SA rebuilds for it, then `unprotect`."""
        return self.twin.unprotect(self.twin.engine.received_header(len(esp)) + esp, now=NOW)

    def probe(self) -> None:
        """The SA must still accept the next valid packet, and hand back its inner packet."""
        top = self.inb.replay.top
        if top >= self.max_seq:
            return
        assert self.inb.unprotect(self.packet(top + 1), now=NOW) == self.inner, \
            f"{self.variant.label}: a valid packet was not accepted after the input"


@lru_cache(maxsize=None)
def pair(v: Variant) -> Pair:
    return Pair(v)


def quiet_state(sa: SecurityAssociation) -> tuple:
    """Everything but the drop counters: what a dropped forged packet must leave alone."""
    seq, replay, packets, octets, _drops, soft, hard = sa.state()
    return seq, replay, packets, octets, soft, hard

"""AH protect / unprotect (RFC 4302): tunnel and transport mode, IPv4 and IPv6, with
HMAC-SHA1-96, HMAC-SHA-256/384/512, AES-XCBC-MAC-96, AES-CMAC-96 (RFC 2404, 4868, 3566, 4494)
and AES-GMAC (RFC 4543 section 4).

Owns: the AH packet layout, where AH goes (after the IPv4 header; after the IPv6 hop-by-hop,
routing and fragment headers and destination options before a routing header), the ICV over
the packet with mutable fields zeroed (`ipsec_core.wire.ah` builds that copy), the ESN high
bits appended to the ICV input (RFC 4302 2.5.1), constant-time ICV compare, sequence numbers and the replay check/update order (check before the ICV, update only
after it, exactly as ESP), and the outer header of tunnel mode (DSCP copied, ECN per RFC 6040,
DF per the SA's `df_bit`, TTL constructed).
Must not: do I/O, look up backends per packet (the MAC or GMAC primitive is bound in
`AhEngine.__init__`), or reuse a GMAC nonce: the IV is the 64-bit sequence number, and sequence
numbers never repeat under a key (exhaustion raises SequenceOverflow instead of wrapping).

AES-GMAC in AH (RFC 4543 section 4 with erratum 3643): the authentication data is the 8-byte IV
followed by the 16-byte tag (plus 4 bytes of padding over IPv6).  The tag is GCM with an empty
plaintext, nonce = salt || IV, and as AAD the same bytes any AH ICV covers, in which only the
tag is zeroed: the IV is input, not output, so it is covered as sent (RFC 4543 section 7: "In
AUTH_AES_GMAC, the IV is included in the additional authenticated data").  The ESN high bits are
appended to that AAD as RFC 4302 appends them to every AH ICV input.  The SA's
`integrity_key` holds the AES key followed by the 4-byte salt (20, 28 or 36 bytes).
"""
from __future__ import annotations

import hmac
import secrets
import struct

from ipsec_core.errors import AuthenticationError, DropReason, LocalError, PacketDropped
from ipsec_core.wire.ah import (AH_FIXED_BYTES, ah_header_bytes, ipv4_icv_header,
                                  ipv6_ah_offset, ipv6_icv_headers, pull_ah, push_ah)
from ipsec_core.wire.ip import (IPPROTO_AH, IPPROTO_FRAGMENT, IPPROTO_IPIP, IPPROTO_IPV6,
                                  IPV4_HEADER_BYTES, IPV6_HEADER_BYTES, fix_ipv4_header, ipv4_header_len,
                                  ipv6_headers, ipv6_split)
from ipsec_core.transforms.iana import GMAC_IV_BYTES, GMAC_SALT_BYTES
from ipsec_core.dataplane.tunnel import (decapsulate, outer_header, protect_each, refuse_over_ip_limit,
                               tunnel_endpoints, unprotect_each)

_SEQ32_MAX = 0xFFFFFFFF
_U32 = struct.Struct("!I")
_U64 = struct.Struct("!Q")
_DF = 0x4000


class AhEngine:
    """The AH processing of one SA, with its integrity primitive bound once."""

    protocol = "ah"

    def __init__(self, sa, registry):
        cfg = sa.config
        prop = cfg.proposal
        info = prop.integ_info
        self.sa = sa
        self.spi = cfg.spi
        self.spi_bytes = _U32.pack(cfg.spi)
        self.esn = cfg.esn
        self.tunnel = cfg.mode.value == "tunnel"
        self.gmac = prop.gmac
        self.icv_bytes = info.icv_bytes
        self.mac = self.aead = None
        if self.gmac:
            key, self.salt = cfg.integ_key[:-GMAC_SALT_BYTES], cfg.integ_key[-GMAC_SALT_BYTES:]
            backend = registry.select("aes-gcm", prop.key_bits, cfg.backend)
            self.aead = backend.aead("aes-gcm", key, tag_bytes=info.icv_bytes,
                                     nonce_bytes=GMAC_SALT_BYTES + GMAC_IV_BYTES)
            self.iv_bytes = GMAC_IV_BYTES
        else:
            key_bits = None if info.family.startswith("hmac") else info.key_bytes * 8
            backend = registry.select(info.family, key_bits, cfg.backend)
            self.mac = backend.mac(info.family, cfg.integ_key)
            self.salt = b""
            self.iv_bytes = 0
        self.backend_names = backend.name
        auth = self.iv_bytes + self.icv_bytes
        #: Whole AH header length by IP version of the packet that carries it.
        self.ah_bytes = {4: ah_header_bytes(auth, 4), 6: ah_header_bytes(auth, 6)}
        self.zero_icv = bytes(self.icv_bytes)
        self.ttl = cfg.outer_ttl
        self.df_bit = cfg.df_bit.value
        self.outer_v6, self.src, self.dst = tunnel_endpoints(cfg)
        self.ident = secrets.randbelow(0x10000)

    # ------------------------------------------------------------------------------------
    # the ICV
    # ------------------------------------------------------------------------------------
    def _icv(self, data: bytes, seq: int, iv: bytes) -> bytes:
        if self.esn:
            data += _U32.pack(seq >> 32)         # RFC 4302 2.5.1: high bits, implicit, last
        if self.gmac:
            return self.aead.encrypt(self.salt + iv, b"", data)
        return self.mac.mac(data)[:self.icv_bytes]

    def protected_len(self, packet: bytes, length: int | None = None) -> int:
        """Length of `protect(packet)` (or of a packet like it, `length` bytes long), computed
        without protecting: for MTU decisions."""
        version = packet[0] >> 4
        if length is None:
            length = ((packet[2] << 8) | packet[3]) if version == 4 else len(packet)
        if self.tunnel:
            return (40 if self.outer_v6 else 20) + self.ah_bytes[6 if self.outer_v6 else 4] + length
        return length + self.ah_bytes[version]

    # ------------------------------------------------------------------------------------
    # outbound
    # ------------------------------------------------------------------------------------
    def protect(self, packet: bytes, now: float) -> bytes:
        sa = self.sa
        seq = sa.next_seq(now)
        if not packet:
            raise LocalError("protect() needs an IP packet, got 0 bytes")
        version = packet[0] >> 4
        if version not in (4, 6):
            raise LocalError(f"protect() needs an IPv4 or IPv6 packet, got version {version}")
        iv = _U64.pack(seq) if self.gmac else b""
        seq_low = seq & _SEQ32_MAX
        if self.tunnel:
            if version == 4:
                ipv4_header_len(packet)
                nh = IPPROTO_IPIP
            else:
                nh = IPPROTO_IPV6
            ah_len = self.ah_bytes[6 if self.outer_v6 else 4]
            refuse_over_ip_limit((0 if self.outer_v6 else IPV4_HEADER_BYTES) + ah_len + len(packet), packet)
            outer = self._outer(packet, version, ah_len + len(packet))
            if self.outer_v6:
                icv_head = ipv6_icv_headers(outer, IPV6_HEADER_BYTES, [], outbound=True)
            else:
                icv_head = ipv4_icv_header(outer)
            head, payload = outer, packet
        elif version == 4:
            ihl = ipv4_header_len(packet)
            if ((packet[6] << 8) | packet[7]) & 0x3FFF:
                raise LocalError("AH applies to whole packets (RFC 4301 7): this is an IPv4 fragment")
            total = (packet[2] << 8) | packet[3]
            ah_len = self.ah_bytes[4]
            head = bytearray(packet[:ihl])
            nh = head[9]
            payload = packet[ihl:total]
            refuse_over_ip_limit(ihl + ah_len + len(payload), packet)
            head[9] = IPPROTO_AH
            head[2:4] = (ihl + ah_len + len(payload)).to_bytes(2, "big")
            fix_ipv4_header(head)
            icv_head = ipv4_icv_header(head)
        else:
            chain = ipv6_headers(packet)
            off, nh_at, nh = ipv6_split(packet)
            if any(proto == IPPROTO_FRAGMENT for proto, o, _ in chain if o < off):
                raise LocalError("AH applies to whole packets (RFC 4301 7): this is an IPv6 fragment")
            ah_len = self.ah_bytes[6]
            head = bytearray(packet[:off])
            head[nh_at] = IPPROTO_AH
            payload = packet[off:IPV6_HEADER_BYTES + ((packet[4] << 8) | packet[5])]
            refuse_over_ip_limit(off - IPV6_HEADER_BYTES + ah_len + len(payload), packet)
            head[4:6] = (off - IPV6_HEADER_BYTES + ah_len + len(payload)).to_bytes(2, "big")
            icv_head = ipv6_icv_headers(head, off, chain, outbound=True)
        zeroed = push_ah(next_header=nh, length=ah_len, spi=self.spi, seq_low=seq_low,
                         auth_data=iv + self.zero_icv)
        icv = self._icv(b"".join((icv_head, zeroed, payload)), seq, iv)
        ah = push_ah(next_header=nh, length=ah_len, spi=self.spi, seq_low=seq_low, auth_data=iv + icv)
        out = b"".join((head, ah, payload))
        sa.seq = seq
        sa.stats.packets += 1
        sa.stats.bytes += len(packet)
        sa.note_soft_limit(now)
        return out

    def _outer(self, inner: bytes, version: int, length: int) -> bytes:
        return outer_header(self, inner, version, IPPROTO_AH, length)

    # ------------------------------------------------------------------------------------
    # inbound
    # ------------------------------------------------------------------------------------
    def unprotect(self, packet: bytes, now: float) -> bytes:
        sa = self.sa
        if not packet:
            raise PacketDropped(DropReason.MALFORMED, "empty packet")
        version = packet[0] >> 4
        chain = None
        if version == 4:
            ihl = ipv4_header_len(packet)
            end = (packet[2] << 8) | packet[3]
            if ((packet[6] << 8) | packet[7]) & 0x3FFF:
                raise PacketDropped(DropReason.MALFORMED, "IPv4 fragment: reassemble before unprotect")
            if packet[9] != IPPROTO_AH:
                raise PacketDropped(DropReason.NOT_AH, f"IP protocol {packet[9]}")
            ah_off, nh_at = ihl, 9
        elif version == 6:
            if len(packet) < IPV6_HEADER_BYTES:
                raise PacketDropped(DropReason.MALFORMED, f"IPv6 packet of {len(packet)} bytes")
            end = IPV6_HEADER_BYTES + ((packet[4] << 8) | packet[5])
            if end > len(packet):
                raise PacketDropped(DropReason.MALFORMED, "IPv6 payload length exceeds the packet")
            packet = packet[:end]
            chain = ipv6_headers(packet)
            if any(proto == IPPROTO_FRAGMENT for proto, _, _ in chain[:-1]):
                raise PacketDropped(DropReason.MALFORMED, "IPv6 fragment: reassemble before unprotect")
            found = ipv6_ah_offset(chain)
            if found is None:
                raise PacketDropped(DropReason.NOT_AH, f"IPv6 next header {chain[-1][0]}")
            ah_off, nh_at = found
        else:
            raise PacketDropped(DropReason.MALFORMED, f"IP version {version}")
        nh, ah_len, spi, seq_low = pull_ah(packet, ah_off, end)
        if spi != self.spi:
            raise PacketDropped(DropReason.UNKNOWN_SPI,
                                f"SPI {spi:08x} is not this SA's {self.spi:08x}")
        if ah_len != self.ah_bytes[version]:
            raise PacketDropped(DropReason.MALFORMED, f"AH header of {ah_len} bytes; this SA's "
                                                      f"is {self.ah_bytes[version]} over IPv{version}")
        try:
            sa.check_lifetime(now)
        except Exception as exc:
            raise PacketDropped(DropReason.SA_EXPIRED, str(exc)) from None
        seq = sa.replay.check(seq_low)
        iv_at = ah_off + AH_FIXED_BYTES
        icv_at = iv_at + self.iv_bytes
        icv_end = icv_at + self.icv_bytes
        iv = packet[iv_at:icv_at]
        if version == 4:
            icv_head = ipv4_icv_header(packet[:ah_off])
        else:
            icv_head = ipv6_icv_headers(packet, ah_off, chain, outbound=False)
        data = b"".join((icv_head, packet[ah_off:icv_at], self.zero_icv, packet[icv_end:end]))
        received = packet[icv_at:icv_end]
        if self.gmac:
            if self.esn:
                data += _U32.pack(seq >> 32)
            try:
                self.aead.decrypt(self.salt + iv, received, data)
            except AuthenticationError:
                raise PacketDropped(DropReason.AUTH_FAILED, "GMAC tag mismatch") from None
        elif not hmac.compare_digest(self._icv(data, seq, iv), received):
            raise PacketDropped(DropReason.AUTH_FAILED, "ICV mismatch")
        payload = packet[ah_off + ah_len:end]
        if self.tunnel:
            inner = self._detunnel(payload, nh, packet, version)
        else:
            head = bytearray(packet[:ah_off])
            head[nh_at] = nh
            if version == 4:
                head[2:4] = (ah_off + len(payload)).to_bytes(2, "big")
                fix_ipv4_header(head)
            else:
                head[4:6] = (ah_off - IPV6_HEADER_BYTES + len(payload)).to_bytes(2, "big")
            inner = bytes(head) + payload
        sa.replay.update(seq)
        sa.stats.packets += 1
        sa.stats.bytes += len(inner)
        sa.note_soft_limit(now)
        return inner

    _detunnel = staticmethod(decapsulate)

    # ------------------------------------------------------------------------------------
    # batches: the single-packet path in order (AH has no fast path)
    # ------------------------------------------------------------------------------------
    def protect_batch(self, packets: list[bytes], now: float) -> list[bytes]:
        return protect_each(self.protect, packets, now)

    def unprotect_batch(self, packets: list[bytes], now: float) -> list:
        return unprotect_each(self.unprotect, packets, now)

    def wipe(self) -> None:
        """Drop the keyed primitives and the salt (`SecurityAssociation.wipe`, best effort)."""
        self.aead = self.mac = None
        self.salt = b""


__all__ = ["AhEngine"]

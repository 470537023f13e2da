"""ESP protect / unprotect (RFC 4303), with RFC 4106/4309/4543/7634/3602/3686 transforms,
ESP-in-UDP (RFC 3948), tunnel and transport mode for IPv4 and IPv6.

Owns: the ESP packet layout, padding and its check, IV policy, nonce construction, ICV
computation and constant-time compare, sequence numbers, replay check/update order, outer
header construction (RFC 4301 5.1.2: DSCP and DF copied, TTL constructed, ECN per RFC 6040).
Must not: do I/O, look up backends per packet (primitives are bound in `EspEngine.__init__`), or
reuse a counter-mode nonce: counter modes use the 64-bit sequence number as IV, and sequence
numbers never repeat under a key (exhaustion raises SequenceOverflow instead of wrapping).
"""
from __future__ import annotations

import hmac
import os
import secrets
import struct

from ipsec_core.crypto.base import BatchAead, BatchEncryptThenMac, FramingAead
from ipsec_core.dataplane.esp import offload as esp_offload
from ipsec_core.errors import AuthenticationError, DropReason, LocalError, PacketDropped
from ipsec_core.wire.ip import (IPPROTO_ESP, IPPROTO_FRAGMENT, IPPROTO_IPIP, IPPROTO_IPV6,
                                  IPPROTO_NONE, IPPROTO_UDP, IPV4_HEADER_BYTES, IPV6_HEADER_BYTES,
                                  build_ipv4, build_ipv6, checksum, fix_ipv4_header,
                                  ipv4_header_len, ipv6_headers, ipv6_is_fragment, ipv6_split)
from ipsec_core.transforms.iana import CipherKind
from ipsec_core.dataplane.tunnel import (decapsulate, ecn_decapsulate, outer_header, protect_each,
                               refuse_over_ip_limit, tunnel_endpoints, unprotect_each)

ESP_HEADER_BYTES = 8
UDP_HEADER_BYTES = 8
NON_ESP_MARKER = b"\0\0\0\0"
NAT_KEEPALIVE = b"\xff"
_PAD = bytes(range(1, 256))
_SEQ32_MAX = 0xFFFFFFFF
_ECN_NOT_ECT, _ECN_ECT1, _ECN_ECT0, _ECN_CE = 0, 1, 2, 3
_U32 = struct.Struct("!I")
_U64 = struct.Struct("!Q")


class EspEngine:
    """The ESP processing of one SA, with its primitives bound once."""

    def __init__(self, sa, registry):
        cfg = sa.config
        prop = cfg.proposal
        info = prop.encr_info
        self.sa = sa
        self.kind = info.kind
        self.iv_bytes = info.iv_bytes
        self.block = info.block_bytes
        self.spi_bytes = _U32.pack(cfg.spi)
        self.esn = cfg.esn
        self.tunnel = cfg.mode.value == "tunnel"
        names = []
        key = cfg.enc_key[: prop.key_bits // 8]
        self.salt = cfg.enc_key[prop.key_bits // 8:]
        self.aead = self.cipher = self.mac = None
        if self.kind in (CipherKind.AEAD, CipherKind.GMAC):
            backend = registry.select(info.family, prop.key_bits, cfg.backend, tag_bytes=info.icv_bytes)
            self.aead = backend.aead(info.family, key, tag_bytes=info.icv_bytes,
                                     nonce_bytes=len(self.salt) + info.iv_bytes)
            self.icv_bytes = info.icv_bytes
            names.append(backend.name)
        else:
            if self.kind == CipherKind.CIPHER:
                backend = registry.select(info.family, prop.key_bits, cfg.backend)
                self.cipher = backend.cipher(info.family, key)
                names.append(backend.name)
            integ = prop.integ_info
            key_bits = None if integ.family.startswith("hmac") else integ.key_bytes * 8
            mac_backend = registry.select(integ.family, key_bits, cfg.backend)
            self.mac = mac_backend.mac(integ.family, cfg.integ_key)
            self.icv_bytes = integ.icv_bytes
            if mac_backend.name not in names:
                names.append(mac_backend.name)
        self.backend_names = ",".join(names)
        self.ctr = info.counter          # RFC 3686 counter block (aes-ctr, plugin counter modes)
        # Smallest ESP payload: IV, then at least pad length + next header, aligned, then ICV.
        self.min_esp = ESP_HEADER_BYTES + self.iv_bytes + max(self.block, 4) + self.icv_bytes
        # Outer header material for tunnel mode and UDP encapsulation.
        self.encap = cfg.encap_ports
        self.ttl = cfg.outer_ttl
        self.outer_v6, self.src, self.dst = tunnel_endpoints(cfg)
        self.ident = secrets.randbelow(0x10000)
        self.df_bit = cfg.df_bit.value
        # TFC padding (RFC 4303 2.7), tunnel mode: the inner packet is padded to `tfc_pad_to`
        # bytes, never so far that the protected packet would exceed the SA's mtu.
        self.tfc_pad_to = 0
        if self.tunnel and (cfg.tfc_padding or cfg.mtu):
            fits = self._tunnel_payload_fitting(cfg.mtu) if cfg.mtu else 0xFFFF
            self.tfc_pad_to = fits if cfg.tfc_padding == "mtu" else min(cfg.tfc_padding, fits)
        from ipsec_core.dataplane.esp.fast import fast_paths
        from ipsec_core.dataplane.esp.vec import transport_paths, vector_paths
        if self.tunnel:
            self._fast_protect, self._fast_unprotect = vector_paths(self, *fast_paths(self))
        else:
            self._fast_protect, self._fast_unprotect = transport_paths(self)
        if self.tfc_pad_to or self.df_bit != "copy":
            self._fast_protect = None      # the fast loop writes neither TFC padding nor DF policy
        # The batch path on one buffer (`bulk`): taken when the backend computes a batch in one
        # call (ipsecmb), or where no older fast path covers the SA (cipher + integrity, ESN,
        # IPv6 outside); an AEAD without a batch call keeps `vec`, faster for it (RESULTS.md).
        self.chain = None
        if self.kind in (CipherKind.CIPHER, CipherKind.NULL):
            from ipsec_core.dataplane.esp.bulk import make_chain
            self.chain = make_chain(self, mac_backend)
        from ipsec_core.dataplane.esp.bulk import LoopAead, LoopEncryptThenMac, bulk_paths
        bulk_protect, bulk_unprotect = bulk_paths(self)
        crypto = self.aead if self.aead is not None else self.chain
        native = crypto is not None and not isinstance(crypto, (LoopAead, LoopEncryptThenMac)) and (
            isinstance(crypto, (BatchAead, BatchEncryptThenMac)))
        if bulk_protect is not None and (native or self._fast_protect is None):
            self._fast_protect = bulk_protect
        if bulk_unprotect is not None and (native or self._fast_unprotect is None):
            self._fast_unprotect = bulk_unprotect
        # The PacketBatch calls (`protect_packets` / `unprotect_packets`) of the bulk path, when
        # it is the path this SA takes in that direction.
        self._bulk_protect = getattr(self._fast_protect, "__self__", None) \
            if getattr(self._fast_protect, "__func__", None) is getattr(bulk_protect, "__func__", 0) else None
        self._bulk_unprotect = getattr(self._fast_unprotect, "__self__", None) \
            if getattr(self._fast_unprotect, "__func__", None) is getattr(bulk_unprotect, "__func__", 0) else None
        # A backend that seals many packets per call (the GPU) gets whole batches.
        self._offload = self.aead is not None and hasattr(self.aead, "encrypt_batch")
        # A backend that frames whole ESP packets itself gets each batch first; a batch it
        # declines (None) takes the path above.
        self._framing = None
        if isinstance(self.aead, FramingAead) and self.aead.framing_refusal(self) is None:
            self._framing = self.aead

    # ------------------------------------------------------------------------------------
    # outbound
    # ------------------------------------------------------------------------------------
    def protect(self, packet: bytes, now: float) -> bytes:
        sa = self.sa
        seq = sa.next_seq(now)
        if not packet:
            raise LocalError("protect() needs an IP packet, got 0 bytes")
        version = packet[0] >> 4
        if self.tunnel:
            if version == 4:
                ipv4_header_len(packet)
                nh = IPPROTO_IPIP
            elif version == 6:
                nh = IPPROTO_IPV6
            else:
                raise LocalError(f"protect() needs an IPv4 or IPv6 packet, got version {version}")
            payload = packet
            if len(payload) < self.tfc_pad_to:
                payload = payload + bytes(self.tfc_pad_to - len(payload))
            head = None
        elif version == 4:
            ihl = ipv4_header_len(packet)
            if ((packet[6] << 8) | packet[7]) & 0x3FFF:
                raise LocalError("ESP transport mode applies to whole packets (RFC 4301 7): "
                                 "this is an IPv4 fragment")
            total = (packet[2] << 8) | packet[3]
            head = bytearray(packet[:ihl])
            nh = head[9]
            payload = packet[ihl:total]
        elif version == 6:
            off, nh_at, nh = ipv6_split(packet)
            if any(proto == IPPROTO_FRAGMENT for proto, at, _ in ipv6_headers(packet) if at < off):
                raise LocalError("ESP transport mode applies to whole packets (RFC 4301 7): "
                                 "this is an IPv6 fragment")
            head = bytearray(packet[:off])
            head[nh_at] = IPPROTO_ESP if not self.encap else IPPROTO_UDP
            payload = packet[off:]
        else:
            raise LocalError(f"protect() needs an IPv4 or IPv6 packet, got version {version}")

        self._check_ip_limit(packet, payload, head)
        esp = self._seal(payload, nh, seq)
        if self.encap:
            esp = self._udp(esp)
            proto = IPPROTO_UDP
        else:
            proto = IPPROTO_ESP
        if head is None:
            out = self._outer(packet, version, proto, len(esp)) + esp
        elif version == 4:
            head[9] = proto
            head[2:4] = (len(head) + len(esp)).to_bytes(2, "big")
            fix_ipv4_header(head)
            out = bytes(head) + esp
        else:
            head[4:6] = (len(head) - IPV6_HEADER_BYTES + len(esp)).to_bytes(2, "big")
            out = bytes(head) + esp
        if self.encap and (out[0] >> 4) == 6:
            out = _fill_udp6_checksum(out, len(out) - len(esp))
        sa.seq = seq
        sa.stats.packets += 1
        sa.stats.bytes += len(packet)
        sa.note_soft_limit(now)
        return out

    def _esp_bytes(self, payload_len: int) -> int:
        """Bytes after the IP header(s) that ESP makes of a payload: [UDP], ESP header, IV, the
        payload, its padding, pad length and next header, ICV."""
        return (ESP_HEADER_BYTES + self.iv_bytes + payload_len + 2 + (-(payload_len + 2) % self.block)
                + self.icv_bytes + (UDP_HEADER_BYTES if self.encap else 0))

    def _check_ip_limit(self, packet, payload, head) -> None:
        """The protected packet must fit IP's 16-bit length field: checked before sealing."""
        esp = self._esp_bytes(len(payload))
        if head is None:
            length = esp if self.outer_v6 else IPV4_HEADER_BYTES + esp
        else:
            length = len(head) + esp - (IPV6_HEADER_BYTES if packet[0] >> 4 == 6 else 0)
        refuse_over_ip_limit(length, packet)

    def _seal(self, payload: bytes, nh: int, seq: int) -> bytes:
        """The ESP header, IV, encrypted payload trailer and ICV for one packet."""
        pad_len = -(len(payload) + 2) % self.block
        plaintext = b"".join((payload, _PAD[:pad_len], bytes((pad_len, nh))))
        seq_low = _U32.pack(seq & _SEQ32_MAX)
        header = self.spi_bytes + seq_low
        kind = self.kind
        if kind is CipherKind.AEAD:
            iv = _U64.pack(seq)
            aad = self.spi_bytes + _U64.pack(seq) if self.esn else header
            return header + iv + self.aead.encrypt(self.salt + iv, plaintext, aad)
        if kind is CipherKind.GMAC:
            iv = _U64.pack(seq)
            aad_head = self.spi_bytes + _U64.pack(seq) if self.esn else header
            tag = self.aead.encrypt(self.salt + iv, b"", aad_head + iv + plaintext)
            return header + iv + plaintext + tag
        if kind is CipherKind.CIPHER:
            if self.ctr:
                iv = _U64.pack(seq)
                body = self.cipher.encrypt(self.salt + iv + b"\0\0\0\1", plaintext)
            else:
                iv = os.urandom(self.iv_bytes)
                body = self.cipher.encrypt(iv, plaintext)
            signed = header + iv + body
        else:
            signed = header + plaintext
        icv_input = signed + _U32.pack(seq >> 32) if self.esn else signed
        return signed + self.mac.mac(icv_input)[: self.icv_bytes]

    def _udp(self, esp: bytes) -> bytes:
        sport, dport = self.encap
        # RFC 3948 2.1: the UDP checksum is zero over IPv4; IPv6 needs a real one (filled later).
        return struct.pack("!HHHH", sport, dport, UDP_HEADER_BYTES + len(esp), 0) + esp

    def _outer(self, inner: bytes, version: int, proto: int, length: int) -> bytes:
        return outer_header(self, inner, version, proto, length)

    def protected_len(self, packet: bytes, length: int | None = None) -> int:
        """Length of `protect(packet)` without TFC padding (or of a packet like it, `length`
        bytes long), computed without protecting: for MTU decisions."""
        version = packet[0] >> 4
        if length is None:
            length = ((packet[2] << 8) | packet[3]) if version == 4 else len(packet)
        if self.tunnel:
            return (40 if self.outer_v6 else 20) + self._esp_bytes(length)
        head = (packet[0] & 0x0F) * 4 if version == 4 else ipv6_split(packet)[0]
        return head + self._esp_bytes(length - head)

    def _tunnel_payload_fitting(self, mtu: int) -> int:
        """The longest inner packet whose tunnel-mode ESP packet fits `mtu` bytes."""
        fixed = ((40 if self.outer_v6 else 20) + ESP_HEADER_BYTES + self.iv_bytes + self.icv_bytes
                 + (UDP_HEADER_BYTES if self.encap else 0))
        return max(0, (mtu - fixed) // self.block * self.block - 2)

    def dummy(self, size: int | None, now: float) -> bytes:
        """A dummy packet (RFC 4303 2.6): next header 59, `size` random bytes of payload (by
        default as long as TFC padding makes every packet), the next sequence number."""
        sa = self.sa
        seq = sa.next_seq(now)
        if not self.src:
            raise LocalError(f"SA {sa.name}: a dummy packet needs the SA's addresses "
                             "(tunnel = { local = ..., remote = ... })")
        size = self.tfc_pad_to if size is None else size
        if not 0 <= size <= 0xFFFF:
            raise LocalError(f"dummy packet size must be 0..65535 bytes, not {size}")
        esp = self._seal(os.urandom(size), IPPROTO_NONE, seq)
        if self.encap:
            esp = self._udp(esp)
        proto = IPPROTO_UDP if self.encap else IPPROTO_ESP
        if self.outer_v6:
            out = build_ipv6(src=self.src, dst=self.dst, next_header=proto, payload_len=len(esp),
                             hop_limit=self.ttl) + esp
            if self.encap:
                out = _fill_udp6_checksum(out, IPV6_HEADER_BYTES)
        else:
            self.ident = (self.ident + 1) & 0xFFFF
            out = build_ipv4(src=self.src, dst=self.dst, proto=proto, payload_len=len(esp),
                             ident=self.ident, flags_frag=0x4000 if self.df_bit == "set" else 0,
                             ttl=self.ttl) + esp
        sa.seq = seq
        sa.stats.dummies += 1
        return out

    # ------------------------------------------------------------------------------------
    # inbound
    # ------------------------------------------------------------------------------------
    def unprotect(self, packet: bytes, now: float) -> bytes:
        sa = self.sa
        if not packet:
            raise PacketDropped(DropReason.MALFORMED, "empty packet")
        version = packet[0] >> 4
        if version == 4:
            ihl = ipv4_header_len(packet)
            total = (packet[2] << 8) | packet[3]
            if ((packet[6] << 8) | packet[7]) & 0x3FFF:
                raise PacketDropped(DropReason.MALFORMED, "IPv4 fragment: reassemble before unprotect")
            proto = packet[9]
            start, end, nh_at = ihl, total, 9
        elif version == 6:
            if len(packet) < IPV6_HEADER_BYTES:
                raise PacketDropped(DropReason.MALFORMED, f"IPv6 packet of {len(packet)} bytes")
            end = IPV6_HEADER_BYTES + ((packet[4] << 8) | packet[5])
            if end > len(packet):
                raise PacketDropped(DropReason.MALFORMED, "IPv6 payload length exceeds the packet")
            start, nh_at, proto = ipv6_split(packet[:end])
            if ipv6_is_fragment(packet[:start]):
                raise PacketDropped(DropReason.MALFORMED, "IPv6 fragment: reassemble before unprotect")
        else:
            raise PacketDropped(DropReason.MALFORMED, f"IP version {version}")
        if proto == IPPROTO_UDP:
            start = self._strip_udp(packet, start, end)
        elif proto != IPPROTO_ESP:
            raise PacketDropped(DropReason.NOT_ESP, f"IP protocol {proto}")
        esp = memoryview(packet)[start:end]
        if len(esp) < self.min_esp:
            raise PacketDropped(DropReason.TRUNCATED, f"ESP payload of {len(esp)} bytes "
                                                      f"(at least {self.min_esp} expected)")
        if esp[:4] != self.spi_bytes:
            raise PacketDropped(DropReason.UNKNOWN_SPI,
                                f"SPI {bytes(esp[:4]).hex()} is not this SA's {self.spi_bytes.hex()}")
        try:
            sa.check_lifetime(now)
        except Exception as exc:
            raise PacketDropped(DropReason.SA_EXPIRED, str(exc)) from None
        seq = sa.replay.check(_U32.unpack_from(esp, 4)[0])
        plaintext = self._open(esp, seq)
        pad_len, nh = plaintext[-2], plaintext[-1]
        body_len = len(plaintext) - 2 - pad_len
        if body_len < 0 or plaintext[body_len:-2] != _PAD[:pad_len]:
            raise PacketDropped(DropReason.BAD_PADDING, f"pad length {pad_len} or padding bytes wrong")
        payload = plaintext[:body_len]
        if nh == IPPROTO_NONE:
            sa.replay.update(seq)
            raise PacketDropped(DropReason.DUMMY, "dummy packet (next header 59)")
        if self.tunnel:
            inner = self._detunnel(payload, nh, packet, version)
        else:
            inner = self._detransport(packet, start if proto == IPPROTO_ESP else start - 8,
                                      nh_at, nh, payload, version)
        sa.replay.update(seq)
        sa.stats.packets += 1
        sa.stats.bytes += len(inner)
        sa.note_soft_limit(now)
        return inner

    def _strip_udp(self, packet: bytes, start: int, end: int) -> int:
        if end - start < UDP_HEADER_BYTES:
            raise PacketDropped(DropReason.MALFORMED, "truncated UDP header")
        if self.encap is None or ((packet[start + 2] << 8) | packet[start + 3]) != self.encap[1]:
            raise PacketDropped(DropReason.NOT_ESP, "UDP, but not to this SA's ESP-in-UDP port")
        body = packet[start + UDP_HEADER_BYTES:end]
        if body == NAT_KEEPALIVE:
            raise PacketDropped(DropReason.NAT_KEEPALIVE, "NAT-keepalive (RFC 3948 2.3)")
        if body[:4] == NON_ESP_MARKER:
            raise PacketDropped(DropReason.IKE_PACKET, "non-ESP marker: an IKE message")
        return start + UDP_HEADER_BYTES

    def _open(self, esp: memoryview, seq: int) -> bytes:
        """Verify the ICV and decrypt; AUTH_FAILED leaves the SA untouched."""
        ivb, icvb = self.iv_bytes, self.icv_bytes
        iv = bytes(esp[8:8 + ivb])
        kind = self.kind
        if kind is CipherKind.AEAD:
            aad = self.spi_bytes + _U64.pack(seq) if self.esn else bytes(esp[:8])
            try:
                return self.aead.decrypt(self.salt + iv, bytes(esp[8 + ivb:]), aad)
            except AuthenticationError:
                raise PacketDropped(DropReason.AUTH_FAILED, "AEAD tag mismatch") from None
        if kind is CipherKind.GMAC:
            body = bytes(esp[8 + ivb:-icvb])
            aad_head = self.spi_bytes + _U64.pack(seq) if self.esn else bytes(esp[:8])
            try:
                self.aead.decrypt(self.salt + iv, bytes(esp[-icvb:]), aad_head + iv + body)
            except AuthenticationError:
                raise PacketDropped(DropReason.AUTH_FAILED, "GMAC tag mismatch") from None
            return body
        signed = bytes(esp[:-icvb])
        icv_input = signed + _U32.pack(seq >> 32) if self.esn else signed
        if not hmac.compare_digest(self.mac.mac(icv_input)[:icvb], bytes(esp[-icvb:])):
            raise PacketDropped(DropReason.AUTH_FAILED, "ICV mismatch")
        body = signed[8 + ivb:]
        if kind is CipherKind.NULL:
            return body
        if self.ctr:
            return self.cipher.decrypt(self.salt + iv + b"\0\0\0\1", body)
        if len(body) % self.block:
            raise PacketDropped(DropReason.TRUNCATED,
                                f"CBC payload not a multiple of {self.block} bytes")
        return self.cipher.decrypt(iv, body)

    _detunnel = staticmethod(decapsulate)

    def _detransport(self, packet: bytes, esp_start: int, nh_at: int, nh: int, payload: bytes,
                     version: int) -> bytes:
        head = bytearray(packet[:esp_start])
        head[nh_at] = nh
        if version == 4:
            head[2:4] = (len(head) + len(payload)).to_bytes(2, "big")
            fix_ipv4_header(head)
        else:
            head[4:6] = (len(head) - IPV6_HEADER_BYTES + len(payload)).to_bytes(2, "big")
        return bytes(head) + payload


    # ------------------------------------------------------------------------------------
    # batches
    # ------------------------------------------------------------------------------------
    def protect_batch(self, packets: list[bytes], now: float) -> list[bytes]:
        if self._framing is not None:
            out = self._framing.frame_protect(self, packets, now=now)
            if out is not None:
                return out
        if self._offload:
            return esp_offload.protect_batch(self, packets, now)
        if self._fast_protect is not None:
            return self._fast_protect(packets, now)
        return self.protect_batch_generic(packets, now)

    def unprotect_batch(self, packets: list[bytes], now: float) -> list:
        if self._framing is not None:
            out = self._framing.frame_unprotect(self, packets, now=now)
            if out is not None:
                return out
        if self._offload:
            return esp_offload.unprotect_batch(self, packets, now)
        if self._fast_unprotect is not None:
            return self._fast_unprotect(packets, now)
        return self.unprotect_batch_generic(packets, now)

    def protect_packets(self, batch, now: float, esp_only: bool = False, inner_csum=None):
        """`protect_batch` on a `PacketBatch` (see `SecurityAssociation.protect_packets`)."""
        if esp_only and not (self.tunnel and self.encap):
            raise LocalError(f"SA {self.sa.name}: esp_only needs a tunnel-mode ESP-in-UDP SA")
        if self._bulk_protect is not None and self._framing is None and not self._offload:
            return self._bulk_protect.protect_packets(batch, now, esp_only, inner_csum)
        from ipsec_core.dataplane.batch import PacketBatch, complete_checksums
        packets = batch.packets()
        if inner_csum is not None:
            packets = complete_checksums(packets, *inner_csum)
        wire = self.protect_batch(packets, now)
        if esp_only:
            at = (40 if self.outer_v6 else 20) + 8
            wire = [w[at:] for w in wire]
        return PacketBatch.from_packets(wire)

    def unprotect_packets(self, batch, now: float, esp_only: bool = False):
        """`unprotect_batch` on a `PacketBatch`: (PacketBatch of the accepted inner packets,
        list of PacketDropped)."""
        if esp_only and not (self.tunnel and self.encap):
            raise LocalError(f"SA {self.sa.name}: esp_only needs a tunnel-mode ESP-in-UDP SA")
        if self._bulk_unprotect is not None and self._framing is None and not self._offload:
            return self._bulk_unprotect.unprotect_packets(batch, now, esp_only)
        from ipsec_core.dataplane.esp.bulk import _split
        packets = batch.packets()
        if esp_only:
            packets = [self.received_header(len(p)) + p for p in packets]
        return _split(self.unprotect_batch(packets, now))

    def received_header(self, esp_len: int) -> bytes:
        """The outer IP + UDP header an ESP-in-UDP packet of `esp_len` bytes had before a UDP
        socket removed it (tunnel mode; ECN Not-ECT): what the engine checks."""
        sport, dport = self.encap
        if self.outer_v6:
            return (struct.pack("!IHBB", 6 << 28, 8 + esp_len, IPPROTO_UDP, 64) + self.src + self.dst
                    + struct.pack("!HHHH", sport, dport, 8 + esp_len, 0))
        return (struct.pack("!BBHHHBBH", 0x45, 0, 28 + esp_len, 0, 0, 64, IPPROTO_UDP, 0) + self.src
                + self.dst + struct.pack("!HHHH", sport, dport, 8 + esp_len, 0))

    def protect_batch_generic(self, packets: list[bytes], now: float) -> list[bytes]:
        return protect_each(self.protect, packets, now)

    def unprotect_batch_generic(self, packets: list[bytes], now: float) -> list:
        return unprotect_each(self.unprotect, packets, now)

    def wipe(self) -> None:
        """Drop the keyed primitives, the salt and the batch paths that hold them
        (`SecurityAssociation.wipe`, best effort); the SA refuses every later packet."""
        self.aead = self.cipher = self.mac = None
        if getattr(self, "chain", None) is not None:
            self.chain = None
        self.salt = b""
        self._fast_protect = self._fast_unprotect = None
        self._offload = False
        self._framing = None
        self._bulk_protect = self._bulk_unprotect = None


def _fill_udp6_checksum(packet: bytes, udp_at: int) -> bytes:
    """IPv6 UDP needs a checksum (RFC 8200 8.1): compute it over the pseudo-header."""
    udp = packet[udp_at:udp_at + 6] + b"\0\0" + packet[udp_at + 8:]   # checksum field as zero
    pseudo = packet[8:40] + len(udp).to_bytes(4, "big") + b"\0\0\0" + bytes((IPPROTO_UDP,))
    csum = checksum(pseudo + udp) or 0xFFFF
    return packet[:udp_at + 6] + csum.to_bytes(2, "big") + packet[udp_at + 8:]


__all__ = ["EspEngine", "ecn_decapsulate", "IPV4_HEADER_BYTES"]  # ecn_decapsulate: see tunnel.py

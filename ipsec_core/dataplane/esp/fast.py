"""Fast batch paths for the common ESP case: a combined-mode cipher (AES-GCM, AES-CCM,
ChaCha20-Poly1305) in tunnel mode over IPv4, with or without UDP encapsulation, 32-bit sequence
numbers.

Owns: a specialised loop per direction that keeps per-SA constants in local variables, builds
the outer IPv4 header, ESP header and IV with one `struct.pack` from a precomputed template,
updates the header checksum incrementally (RFC 1624: only TOS, total length, ID and DF change
per packet) and checks the replay window inline.  No dictionary lookups, no plugin calls.
Must not: change behaviour.  Every packet the fast loop does not recognise as the common case
(another IP version, IPv4 options, a replay-window edge, an ECN mismatch, a bad pad, a wrong
SPI, anything) goes through `EspEngine.protect` / `unprotect` itself, with the SA state synced
before and after, so bytes, verdicts, sequence numbers, replay state and counters are exactly
those of one-by-one processing.  `tests/dataplane/test_batch.py` checks that.
"""
from __future__ import annotations

import struct

from ipsec_core.errors import AuthenticationError, DropReason, PacketDropped
from ipsec_core.wire.ip import IPPROTO_ESP, IPPROTO_IPIP, IPPROTO_UDP
from ipsec_core.transforms.iana import CipherKind

_PAD = bytes(range(1, 256))


def _limits_allow(sa, packets: int, octets: int) -> bool:
    """True when no packet or byte lifetime (soft or hard) can be reached within this batch."""
    stats = sa.stats
    for lt in (sa.config.soft, sa.config.hard):
        if lt.packets is not None and stats.packets + packets >= lt.packets:
            return False
        if lt.bytes is not None and stats.bytes + octets >= lt.bytes:
            return False
    return True


def check_lifetime_before_protect(sa, now) -> None:
    """`sa.check_lifetime`, with the error carrying `.partial = []` as `protect_each` reports a
    batch that stopped before its first packet."""
    try:
        sa.check_lifetime(now)
    except Exception as exc:
        exc.partial = []
        raise


def fast_paths(engine):
    """(protect_batch, unprotect_batch) specialised for `engine`, or (None, None)."""
    if (engine.kind is not CipherKind.AEAD or not engine.tunnel or engine.esn
            or engine.outer_v6 or not engine.src):
        return None, None
    return _make_protect(engine), _make_unprotect(engine)


def _make_protect(engine):
    sa = engine.sa
    encap = engine.encap
    udp_len = 8 if encap else 0
    proto = IPPROTO_UDP if encap else IPPROTO_ESP
    icv = engine.icv_bytes
    salt = engine.salt
    encrypt = engine.aead.encrypt
    spi = engine.spi_bytes
    ttl = engine.ttl
    addrs = engine.src + engine.dst
    # IPv4 header + [UDP header] + SPI + sequence number + 8-byte IV, packed in one call.
    if encap:
        pack = struct.Struct("!BBHHHBBH8sHHHH4sIQ").pack
    else:
        pack = struct.Struct("!BBHHHBBH8s4sIQ").pack
    # The checksum words that never change: version/IHL, TTL/protocol, addresses.
    base = 0x4500 + ((ttl << 8) | proto) + sum(struct.unpack("!4H", addrs))
    # Per inner length mod 4: the ESP trailer for next header 4, and the bytes it adds.
    trailers = []
    for r in range(4):
        pad = -(r + 2) % 4
        trailers.append(_PAD[:pad] + bytes((pad, IPPROTO_IPIP)))
    # Outer total length = 20 + udp + 8 (ESP hdr) + 8 (IV) + len + trailer + icv
    grow = [20 + udp_len + 16 + len(t) + icv for t in trailers]
    sport, dport = encap or (0, 0)
    generic = engine.protect
    nonce = struct.Struct(f"!{len(salt)}sQ").pack   # salt (4 bytes; 3 for CCM) || 64-bit IV = seq

    largest = 0xFFFF - max(grow)        # longer inner packets: generic path (it refuses them)

    def protect_batch(packets, now):
        n = len(packets)
        if not n:
            return []
        seq = sa.seq
        if seq + n > 0xFFFFFFFF or (sa._has_lifetime and not _limits_allow(
                sa, n, sum(map(len, packets)))):
            return engine.protect_batch_generic(packets, now)
        if sa._has_lifetime or sa.hard_expired:
            check_lifetime_before_protect(sa, now)
        ident = engine.ident
        stats = sa.stats
        out = []
        append = out.append
        done = octets = 0
        for p in packets:
            ln = len(p)
            if ln >= 20 and p[0] == 0x45 and 20 <= ((p[2] << 8) | p[3]) <= ln <= largest:
                r = ln & 3
                total = ln + grow[r]
                s1, i1 = seq + 1, (ident + 1) & 0xFFFF
                tos = p[1]
                df = (p[6] << 8) & 0x4000
                s = base + tos + total + i1 + df
                s = (s & 0xFFFF) + (s >> 16)           # at most 0x10004: one carry left to add
                if udp_len:
                    head = pack(0x45, tos, total, i1, df, ttl, proto, ~(s + (s >> 16)) & 0xFFFF,
                                addrs, sport, dport, total - 20, 0, spi, s1, s1)
                else:
                    head = pack(0x45, tos, total, i1, df, ttl, proto, ~(s + (s >> 16)) & 0xFFFF,
                                addrs, spi, s1, s1)
                try:
                    append(head + encrypt(nonce(salt, s1), p + trailers[r], head[-16:-8]))
                except TypeError:
                    pass                # a buffer type `+` refuses (memoryview): generic path
                else:
                    seq, ident = s1, i1
                    done += 1
                    octets += ln
                    continue
            # Not a plain IPv4 packet: the generic path, with the SA state synced.
            sa.seq, engine.ident = seq, ident
            stats.packets += done
            stats.bytes += octets
            done = octets = 0
            try:
                append(generic(p, now))
            except Exception as exc:
                exc.partial = out
                raise
            seq, ident = sa.seq, engine.ident
        engine.ident = ident
        sa.seq = seq
        stats.packets += done
        stats.bytes += octets
        return out

    return protect_batch


def _make_unprotect(engine):
    sa = engine.sa
    replay = sa.replay
    encap = engine.encap
    esp_at = 28 if encap else 20
    proto = IPPROTO_UDP if encap else IPPROTO_ESP
    dport = encap[1] if encap else 0
    salt = engine.salt
    decrypt = getattr(engine.aead, "fast_decrypt", engine.aead.decrypt)
    bad_tag = tuple(getattr(engine.aead, "fast_decrypt_errors", ())) + (AuthenticationError,)
    # pad bytes + pad length + next header 4, indexed by the pad length byte: one endswith()
    # checks all three (RFC 4303 2.4: the receiver checks the padding).
    tails = [_PAD[:pad] + bytes((pad, IPPROTO_IPIP)) for pad in range(256)]
    spi = engine.spi_bytes
    iv_at = esp_at + 8
    ct_at = iv_at + 8
    min_len = esp_at + engine.min_esp
    size = replay.size
    mask = (1 << size) - 1 if size else 0
    unpack_seq = struct.Struct("!I").unpack_from
    generic = engine.unprotect

    def unprotect_batch(packets, now):
        n = len(packets)
        if sa._has_lifetime and not _limits_allow(sa, n, 65535 * n):
            return engine.unprotect_batch_generic(packets, now)
        if (sa._has_lifetime or sa.hard_expired) and sa.lifetime_event_due(now):
            return engine.unprotect_batch_generic(packets, now)     # it decides which packet sees it
        top, bitmap = replay.top, replay.bitmap
        out = []
        append = out.append
        packets_ok = octets = 0
        for p in packets:
            ln = len(p)
            if (ln >= min_len and p[0] == 0x45 and p[9] == proto and ((p[2] << 8) | p[3]) == ln
                    and not (p[6] & 0x3F or p[7]) and p[esp_at:esp_at + 4] == spi
                    and (not encap or ((p[22] << 8) | p[23]) == dport)):
                seq = unpack_seq(p, esp_at + 4)[0]
                if seq > top and size:
                    try:
                        pt = decrypt(salt + p[iv_at:ct_at], p[ct_at:], p[esp_at:iv_at])
                    except bad_tag:
                        append(PacketDropped(DropReason.AUTH_FAILED, "AEAD tag mismatch"))
                        continue
                    cut = len(pt) - 2 - pt[-2]
                    if (cut >= 20 and pt.endswith(tails[pt[-2]]) and pt[0] == 0x45
                            and ((pt[2] << 8) | pt[3]) == cut and not (pt[1] ^ p[1]) & 3):
                        shift = seq - top
                        bitmap = ((bitmap << shift) | 1) & mask if shift < size else 1
                        top = seq
                        packets_ok += 1
                        octets += cut
                        append(pt[:cut])
                        continue
            # Not the common case (malformed, foreign, left of or inside the window, padded,
            # ECN to combine...): the generic path decides, with the SA state synced.
            replay.top, replay.bitmap = top, bitmap
            sa.stats.packets += packets_ok
            sa.stats.bytes += octets
            packets_ok = octets = 0
            try:
                append(generic(p, now))
            except PacketDropped as drop:
                append(drop)
            top, bitmap = replay.top, replay.bitmap
        replay.top, replay.bitmap = top, bitmap
        sa.stats.packets += packets_ok
        sa.stats.bytes += octets
        return out

    return unprotect_batch

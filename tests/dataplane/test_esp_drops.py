"""Inbound packets that must be dropped: forged, truncated, replayed, badly padded (with a valid
ICV), wrong next header, wrong SPI, not ESP, garbage; and a seeded fuzz of a few thousand
mutations.

For every drop: `unprotect` raises `PacketDropped` with the right `DropReason` (nothing else ever
comes out), the reason is counted once in `stats.drops`, the rest of `state()` (sequence
numbers, replay window, counters, lifetimes) is unchanged, and a valid packet still goes through
afterwards.
"""
from __future__ import annotations

import hashlib
import ipaddress
import random
import struct

import pytest

from ipsec_core.crypto.registry import get_registry
from ipsec_core.errors import DropReason, PacketDropped
from ipsec_core.transforms.keywords import parse_esp
from ipsec_core.dataplane.sa import Direction, Mode, SaConfig, SecurityAssociation
from ipsec_core.transforms.iana import CipherKind

REGISTRY = get_registry()
BACKENDS = [record.name for record in REGISTRY.available()]
SPI = 0x2000CAFE
OURS = {4: "203.0.113.1", 6: "2001:db8:ffff::1"}
PEER = {4: "203.0.113.2", 6: "2001:db8:ffff::2"}

#: One proposal of each construction the core drives differently.
KEYWORDS = ["aes128gcm16", "aes256ccm8", "chacha20poly1305", "aes128gmac", "aes128-sha256",
            "aes256ctr-aesxcbc", "aes192-aescmac", "null-sha1", "aes128gcm12-esn", "aes256-sha512-esn"]


# ----------------------------------------------------------------------------------------------
# helpers (independent of ipsec_core.packet)
# ----------------------------------------------------------------------------------------------
def _material(label: str, n: int) -> bytes:
    out = b""
    while len(out) < n:
        out += hashlib.sha256(f"{label}/{len(out)}".encode()).digest()
    return out[:n]


def make_sa(keyword: str, direction: Direction, *, mode: Mode = Mode.TUNNEL, outer: int = 4,
            encap: bool = False, backend: str | None = None, spi: int = SPI,
            replay_window: int = 64) -> SecurityAssociation:
    prop = parse_esp(keyword)
    tunnel = mode == Mode.TUNNEL
    config = SaConfig(name=f"{direction.value}-{keyword}", spi=spi, direction=direction, mode=mode,
                      proposal=prop, enc_key=_material(f"e/{prop.keyword}", prop.enc_key_bytes),
                      integ_key=_material(f"i/{prop.keyword}", prop.integ_info.key_bytes)
                      if prop.integ_info else b"",
                      local=ipaddress.ip_address(OURS[outer]) if tunnel else None,
                      remote=ipaddress.ip_address(PEER[outer]) if tunnel else None,
                      encap_ports=(4500, 4500) if encap else None, replay_window=replay_window,
                      backend=backend)
    return SecurityAssociation(config, registry=REGISTRY, now=0.0)


def make_pair(keyword: str, **kw) -> tuple[SecurityAssociation, SecurityAssociation]:
    return make_sa(keyword, Direction.OUT, **kw), make_sa(keyword, Direction.IN, **kw)


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ipv4(payload: bytes, *, proto: int, src: str = PEER[4], dst: str = OURS[4], tos: int = 0) -> bytes:
    header = struct.pack("!BBHHHBBH4s4s", 0x45, tos, 20 + len(payload), 0x77, 0, 64, proto, 0,
                         ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed)
    return header[:10] + _checksum(header).to_bytes(2, "big") + header[12:] + payload


def ipv6(payload: bytes, *, nh: int, src: str = PEER[6], dst: str = OURS[6]) -> bytes:
    return struct.pack("!IHBB16s16s", 6 << 28, len(payload), nh, 64, ipaddress.ip_address(src).packed,
                       ipaddress.ip_address(dst).packed) + payload


def wrap(esp: bytes, *, outer: int = 4, encap: bool = False) -> bytes:
    """An outer header (and UDP) around ESP bytes, lengths right."""
    if encap:
        esp = struct.pack("!HHHH", 4500, 4500, 8 + len(esp), 0) + esp
    proto = 17 if encap else 50
    return ipv4(esp, proto=proto) if outer == 4 else ipv6(esp, nh=proto)


def inner_v4(n: int = 40, *, tos: int = 0) -> bytes:
    return ipv4(bytes(8) + bytes((i * 7) & 0xFF for i in range(n)), proto=17,
                src="192.0.2.1", dst="198.51.100.1", tos=tos)


def inner_v6(n: int = 40) -> bytes:
    return ipv6(bytes(8) + bytes((i * 5) & 0xFF for i in range(n)), nh=17, src="2001:db8::1",
                dst="2001:db8::2")


def trailer(payload: bytes, nh: int, block: int) -> bytes:
    """payload | padding 1, 2, ... | pad length | next header (RFC 4303 2.4), aligned to `block`."""
    pad = -(len(payload) + 2) % block
    return payload + bytes(range(1, pad + 1)) + bytes((pad, nh))


def block_of(sa: SecurityAssociation) -> int:
    return 16 if sa.config.proposal.encr_info.family == "aes-cbc" else 4


def seal(out: SecurityAssociation, plaintext: bytes, seq: int, *, spi: int | None = None) -> bytes:
    """ESP bytes with a VALID ICV around an arbitrary plaintext (trailer included), built from
    the outbound SA's bound primitives, following RFC 4303 / 4106 / 4543 / 3686 by hand."""
    eng = out.engine
    spi_bytes = (spi if spi is not None else out.spi).to_bytes(4, "big")
    header = spi_bytes + (seq & 0xFFFFFFFF).to_bytes(4, "big")
    aad = spi_bytes + seq.to_bytes(8, "big") if out.esn else header
    kind = out.config.proposal.encr_info.kind
    if kind is CipherKind.AEAD:
        iv = seq.to_bytes(8, "big")
        return header + iv + eng.aead.encrypt(eng.salt + iv, plaintext, aad)
    if kind is CipherKind.GMAC:
        iv = seq.to_bytes(8, "big")
        return header + iv + plaintext + eng.aead.encrypt(eng.salt + iv, b"", aad + iv + plaintext)
    if kind is CipherKind.CIPHER:
        if out.config.proposal.encr_info.family == "aes-ctr":
            iv = seq.to_bytes(8, "big")
            body = eng.cipher.encrypt(eng.salt + iv + b"\0\0\0\1", plaintext)
        else:
            iv = hashlib.sha256(seq.to_bytes(8, "big")).digest()[:16]
            body = eng.cipher.encrypt(iv, plaintext)
    else:
        iv, body = b"", plaintext
    signed = header + iv + body
    icv_input = signed + (seq >> 32).to_bytes(4, "big") if out.esn else signed
    return signed + eng.mac.mac(icv_input)[:eng.icv_bytes]


def without_drops(state: tuple) -> tuple:
    return state[:4] + state[5:]


def expect_drop(sa: SecurityAssociation, packet: bytes, reason: DropReason) -> PacketDropped:
    """Assert one drop with `reason`, counted once, and nothing else in the SA changed."""
    before = sa.state()
    total = sum(sa.stats.drops.values())
    with pytest.raises(PacketDropped) as exc:
        sa.unprotect(packet, now=0.0)
    assert exc.value.reason is reason, f"expected {reason.value}, got {exc.value}"
    assert without_drops(sa.state()) == without_drops(before)
    assert sa.stats.drops[reason.value] == before[4].get(reason.value, 0) + 1
    assert sum(sa.stats.drops.values()) == total + 1
    return exc.value


def still_works(out: SecurityAssociation, inb: SecurityAssociation, *, outer: int = 4) -> None:
    inner = inner_v4(13) if inb.mode == Mode.TUNNEL or outer == 4 else inner_v6(13)
    assert inb.unprotect(out.protect(inner, now=0.0), now=0.0) == inner


def _min_esp(sa: SecurityAssociation) -> int:
    """Header, IV, the smallest aligned trailer, ICV (RFC 4303 2, 2.4)."""
    info = sa.config.proposal.encr_info
    return 8 + info.iv_bytes + block_of(sa) + sa.engine.icv_bytes


def _offers(backend: str, keyword: str) -> bool:
    """Whether `backend` computes `keyword`'s cipher (ipsecmb has no AES-CCM, for one)."""
    prop = parse_esp(keyword)
    info = prop.encr_info
    if info.family is None or not prop.key_bits:      # null encryption
        return True
    return REGISTRY.get(backend).offers(info.family, prop.key_bits, info.icv_bytes or None)


def _params(keywords=KEYWORDS):
    return [pytest.param(k, b, id=f"{k}[{b}]") for k in keywords for b in BACKENDS if _offers(b, k)]


# ----------------------------------------------------------------------------------------------
# forged
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("keyword", "backend"), _params())
def test_forged(keyword, backend):
    out, inb = make_pair(keyword, backend=backend)
    info = out.config.proposal.encr_info
    icv = out.engine.icv_bytes
    inner = inner_v4(61)
    out.seq = 1000
    inb.replay.top = 999
    wire = out.protect(inner, now=0.0)
    esp_len = len(wire) - 20
    iv_end = 8 + info.iv_bytes
    # (offset in ESP, XOR mask).  Sequence-number flips move the number *up*, so the forgery
    # passes the replay check and must be caught by the ICV.  The SPI is not forged here (that
    # is an unknown SPI, tested below).
    flips = {"seq-high": (4, 0x40), "seq-low": (7, 0x10)}
    if info.iv_bytes:
        flips |= {"iv-first": (8, 0x01), "iv-last": (iv_end - 1, 0x80)}
    body_end = esp_len - icv
    flips |= {"body-first": (iv_end, 0x01), "body-middle": ((iv_end + body_end) // 2, 0x20),
              "body-pad-length": (body_end - 2, 0x01), "body-next-header": (body_end - 1, 0x04),
              "icv-first": (body_end, 0x01), "icv-last": (esp_len - 1, 0x80)}
    for name, (offset, mask) in flips.items():
        forged = bytearray(wire)
        forged[20 + offset] ^= mask
        drop = expect_drop(inb, bytes(forged), DropReason.AUTH_FAILED)
        assert drop.reason is DropReason.AUTH_FAILED, name
    assert inb.stats.drops == {"auth_failed": len(flips)}
    assert inb.unprotect(wire, now=0.0) == inner
    assert inb.replay.top == 1001


# ----------------------------------------------------------------------------------------------
# truncated
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("encap", [False, True], ids=["esp", "udp"])
@pytest.mark.parametrize("keyword", KEYWORDS)
def test_truncated(keyword, encap):
    out, inb = make_pair(keyword, encap=encap, outer=6 if encap else 4)
    outer = 6 if encap else 4
    inner = inner_v4(30)
    wire = out.protect(inner, now=0.0)
    hdr = 40 + (8 if encap else 0) if outer == 6 else 20
    esp = wire[hdr:]
    minimum = _min_esp(out)
    assert inb.engine.min_esp == minimum
    # Every ESP length from 0 to just below the minimum, in a well-formed outer packet.
    for n in range(minimum):
        expect_drop(inb, wrap(esp[:n], outer=outer, encap=encap), DropReason.TRUNCATED)
    # From the minimum on, a shortened packet fails the ICV.
    for n in range(minimum, len(esp)):
        expect_drop(inb, wrap(esp[:n], outer=outer, encap=encap), DropReason.AUTH_FAILED)
    # Cut on the wire without fixing the IP length: malformed.
    for n in range(len(wire)):
        expect_drop(inb, wire[:n], DropReason.MALFORMED)
    assert inb.unprotect(wire, now=0.0) == inner


# ----------------------------------------------------------------------------------------------
# replayed
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("esn", [False, True], ids=["noesn", "esn"])
@pytest.mark.parametrize("window", [32, 64, 4096])
def test_replayed(window, esn):
    keyword = "aes128gcm16" + ("-esn" if esn else "")
    out, inb = make_pair(keyword, replay_window=window)
    base = 2**32 - 20 if esn else 0
    out.seq = inb.replay.top = base

    def packet_at(seq: int) -> bytes:
        out.seq = seq - 1
        return out.protect(inner_v4(seq % 50), now=0.0)

    first = packet_at(base + 1)
    assert inb.unprotect(first, now=0.0)
    expect_drop(inb, first, DropReason.REPLAY)                  # the same packet twice
    top = base + window + 40                                     # with ESN: past 2**32
    inb.unprotect(packet_at(top), now=0.0)
    left = packet_at(top - window)                               # just left of the window
    edge = packet_at(top - window + 1)                           # last slot inside it
    # Without ESN a packet left of the window is a replay.  With ESN, RFC 4303 Appendix A2.2
    # takes low-order bits left of the window to be the next sub-space (high bits + 1); the
    # ICV computed with those high bits fails, so the drop is auth_failed.  Either way the
    # packet is refused before it can touch the window.
    left_reason = DropReason.AUTH_FAILED if esn else DropReason.REPLAY
    expect_drop(inb, left, left_reason)
    expect_drop(inb, packet_at(base + 2), left_reason)           # far left
    assert inb.unprotect(edge, now=0.0)
    expect_drop(inb, edge, DropReason.REPLAY)
    late = packet_at(top - 3)                                    # out of order, inside
    assert inb.unprotect(late, now=0.0)
    expect_drop(inb, late, DropReason.REPLAY)
    assert inb.stats.drops == ({"replay": 3, "auth_failed": 2} if esn else {"replay": 5})
    assert inb.replay.top == top
    out.seq = top
    still_works(out, inb)


def test_sequence_number_zero_is_a_replay():
    out, inb = make_pair("aes128-sha256")
    expect_drop(inb, wrap(seal(out, trailer(inner_v4(), 4, 16), 0)), DropReason.REPLAY)
    still_works(out, inb)


def test_replay_check_comes_before_the_icv():
    """A forged packet with a replayed sequence number is a replay (cheap check first), and a
    forged packet never moves the window (update only after the ICV)."""
    out, inb = make_pair("aes128gcm16")
    wire = out.protect(inner_v4(), now=0.0)
    inb.unprotect(wire, now=0.0)
    forged = bytearray(wire)
    forged[-1] ^= 1
    expect_drop(inb, bytes(forged), DropReason.REPLAY)
    ahead = bytearray(out.protect(inner_v4(), now=0.0))
    ahead[20 + 4] ^= 0x7F                                         # far ahead, forged
    expect_drop(inb, bytes(ahead), DropReason.AUTH_FAILED)
    assert inb.replay.top == 1
    still_works(out, inb)


# ----------------------------------------------------------------------------------------------
# badly padded, but with a valid ICV
# ----------------------------------------------------------------------------------------------
def _bad_paddings(payload: bytes, block: int) -> dict[str, bytes]:
    def aligned(body: bytes, pad: bytes, nh: int = 4) -> bytes:
        # pad the (bad) padding out with filler so that the result stays block aligned
        while (len(body) + len(pad) + 2) % block:
            body += b"\xee"
        return body + pad + bytes((len(pad), nh))

    return {
        "wrong-byte": aligned(payload, b"\x01\x02\x04"),
        "zeros": aligned(payload, b"\x00\x00\x00\x00\x00\x00\x00"),
        "reversed": aligned(payload, b"\x03\x02\x01"),
        "pad-length-past-start": payload[:2] + bytes(block - 4) + bytes((0xFF, 4)),
    }


@pytest.mark.parametrize(("keyword", "backend"), _params(["aes128-sha256", "null-sha256", "aes128gcm16",
                                                            "aes128ctr-sha1", "chacha20poly1305",
                                                            "aes128ccm16", "aes128gmac"]))
def test_bad_padding_with_valid_icv(keyword, backend):
    out, inb = make_pair(keyword, backend=backend)
    block = block_of(out)
    payload = inner_v4(21)
    for n, (name, plaintext) in enumerate(_bad_paddings(payload, block).items(), 1):
        assert len(plaintext) % block == 0, name
        drop = expect_drop(inb, wrap(seal(out, plaintext, n)), DropReason.BAD_PADDING)
        assert drop.reason is DropReason.BAD_PADDING, name
    # The same construction with correct padding is accepted (so the seal above is right),
    # including the longest padding RFC 4303 allows (255 bytes).
    assert inb.unprotect(wrap(seal(out, trailer(payload, 4, block), 10)), now=0.0) == payload
    short = inner_v4(3)                                           # 31 bytes: 31 + 255 + 2 = 18 * 16
    long_pad = short + bytes(range(1, 256)) + bytes((255, 4))
    assert len(long_pad) % block == 0
    assert inb.unprotect(wrap(seal(out, long_pad, 11)), now=0.0) == short
    still_works(out, inb)


# ----------------------------------------------------------------------------------------------
# wrong next header, dummy packets
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("keyword", ["aes128gcm16", "aes128-sha256", "null-sha1"])
def test_wrong_next_header_for_tunnel_mode(keyword):
    out, inb = make_pair(keyword)
    block = block_of(out)
    tcp = bytes(20) + b"data"
    cases = [
        (trailer(tcp, 6, block), DropReason.BAD_NEXT_HEADER),            # TCP in a tunnel SA
        (trailer(tcp, 17, block), DropReason.BAD_NEXT_HEADER),
        (trailer(inner_v6(), 4, block), DropReason.MALFORMED),            # says IPv4, is IPv6
        (trailer(inner_v4(), 41, block), DropReason.MALFORMED),           # says IPv6, is IPv4
        (trailer(b"", 4, block), DropReason.MALFORMED),                   # no packet at all
        (trailer(inner_v4()[:12], 4, block), DropReason.MALFORMED),       # cut IPv4 header
        (trailer(inner_v6()[:30], 41, block), DropReason.MALFORMED),      # cut IPv6 header
        (trailer(inner_v6()[:-1], 41, block), DropReason.MALFORMED),      # IPv6 length > packet
        (trailer(inner_v4()[:-1], 4, block), DropReason.MALFORMED),       # IPv4 length > packet
    ]
    for n, (plaintext, reason) in enumerate(cases, 1):
        expect_drop(inb, wrap(seal(out, plaintext, n)), reason)
    still_works(out, inb)


def test_dummy_packet_is_dropped_but_authenticated():
    """Next header 59 (RFC 4303 2.6): a valid dummy packet is discarded as `dummy`; it was
    authenticated, so it does take its place in the replay window (and a replay of it is a
    replay), but it is not counted as a delivered packet."""
    for mode in (Mode.TUNNEL, Mode.TRANSPORT):
        out, inb = make_pair("aes128gcm16", mode=mode)
        dummy = wrap(seal(out, trailer(b"\x00" * 12, 59, 4), 1))
        with pytest.raises(PacketDropped) as exc:
            inb.unprotect(dummy, now=0.0)
        assert exc.value.reason is DropReason.DUMMY
        assert inb.replay.top == 1 and inb.stats.packets == 0 and inb.stats.drops == {"dummy": 1}
        expect_drop(inb, dummy, DropReason.REPLAY)
        out.seq = 1
        still_works(out, inb)


# ----------------------------------------------------------------------------------------------
# wrong SPI, not ESP, garbage
# ----------------------------------------------------------------------------------------------
def test_wrong_spi():
    out, inb = make_pair("aes128gcm16")
    other = make_sa("aes128gcm16", Direction.OUT, spi=SPI + 1)
    expect_drop(inb, other.protect(inner_v4(), now=0.0), DropReason.UNKNOWN_SPI)
    expect_drop(inb, wrap(seal(out, trailer(inner_v4(), 4, 4), 1, spi=0)), DropReason.UNKNOWN_SPI)
    still_works(out, inb)


@pytest.mark.parametrize("outer", [4, 6])
def test_not_esp(outer):
    out, inb = make_pair("aes128gcm16", outer=outer)
    esp = seal(out, trailer(inner_v4(), 4, 4), 1)
    for proto in (6, 17, 51, 1, 4, 41):
        packet = ipv4(esp, proto=proto) if outer == 4 else ipv6(esp, nh=proto)
        expect_drop(inb, packet, DropReason.NOT_ESP)
    assert inb.stats.drops == {"not_esp": 6}
    still_works(out, inb, outer=outer)


GARBAGE = {
    "empty": b"",
    "one-byte": b"\x45",
    "version-0": bytes(60),
    "version-5": b"\x55" + bytes(59),
    "version-15": b"\xff" * 60,
    "ipv4-short-header": b"\x45" + bytes(10),
    "ipv4-ihl-3": b"\x43\x00\x00\x3c" + bytes(56),
    "ipv4-total-length-too-big": b"\x45\x00\x05\xdc" + bytes(5) + b"\x32" + bytes(50),
    "ipv4-total-length-below-ihl": b"\x45\x00\x00\x0a" + bytes(5) + b"\x32" + bytes(50),
    "ipv4-fragment": b"\x45\x00\x00\x3c\x00\x00\x20\x00\x40\x32" + bytes(50),
    "ipv4-later-fragment": b"\x45\x00\x00\x3c\x00\x00\x00\x10\x40\x32" + bytes(50),
    "ipv6-short": b"\x60" + bytes(20),
    "ipv6-payload-length-too-big": b"\x60\x00\x00\x00\x05\xdc\x32\x40" + bytes(60),
    "ipv6-cut-extension-header": b"\x60\x00\x00\x00\x00\x04\x00\x40" + bytes(32) + b"\x32\x05\x00\x00",
    "udp-cut-header": ipv4(b"\x11\x94\x11\x94", proto=17),
}


@pytest.mark.parametrize("name", list(GARBAGE))
def test_garbage_is_malformed(name):
    out, inb = make_pair("aes128gcm16", encap=True)
    expect_drop(inb, GARBAGE[name], DropReason.MALFORMED)
    still_works(out, inb)


# ----------------------------------------------------------------------------------------------
# fuzz
# ----------------------------------------------------------------------------------------------
FUZZ_SETUPS = [
    ("aes128gcm16", Mode.TUNNEL, 4, False),
    ("aes128-sha256", Mode.TRANSPORT, 6, True),
    ("chacha20poly1305", Mode.TUNNEL, 6, True),
    ("null-sha1", Mode.TRANSPORT, 4, False),
    ("aes128ctr-aesxcbc-esn", Mode.TUNNEL, 6, False),
    ("aes128gmac", Mode.TRANSPORT, 4, True),
]
FUZZ_PER_SETUP = 600


def _mutate(rng: random.Random, wire: bytes, out: SecurityAssociation, hdr: int, encap: bool,
            outer: int) -> bytes:
    b = bytearray(wire)
    choice = rng.randrange(12)
    if choice == 0:                                   # flip a few bits anywhere
        for _ in range(rng.randint(1, 3)):
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
    elif choice == 1:                                 # overwrite one byte
        b[rng.randrange(len(b))] = rng.randrange(256)
    elif choice == 2:                                 # cut anywhere (lengths not fixed)
        del b[rng.randrange(len(b)):]
    elif choice == 3:                                 # append bytes (lengths not fixed)
        b += rng.randbytes(rng.randint(1, 40))
    elif choice == 4:                                 # ESP cut or extended, outer lengths fixed
        esp = bytes(b[hdr:])
        if rng.random() < 0.6:
            esp = esp[:rng.randrange(len(esp) + 1)]
        else:
            esp += rng.randbytes(rng.randint(1, 30))
        return wrap(esp, outer=outer, encap=encap)
    elif choice == 5:                                 # flip inside ESP only
        b[rng.randrange(hdr, len(b))] ^= 1 << rng.randrange(8)
    elif choice == 6:                                 # IP header fields
        field = rng.choice((0, 1, 2, 3, 6, 9) if b[0] >> 4 == 4 else (0, 1, 4, 5, 6))
        b[field] = rng.randrange(256)
    elif choice == 7:                                 # pure garbage
        return rng.randbytes(rng.randrange(0, 200))
    elif choice == 8:                                 # garbage behind a valid outer header
        return wrap(rng.randbytes(rng.randrange(0, 120)), outer=outer, encap=encap)
    elif choice == 9:                                 # a valid ICV around garbage plaintext
        block = block_of(out)
        plaintext = rng.randbytes(rng.randrange(0, 80))
        if rng.random() < 0.7:
            nh = rng.choice((4, 41, 59, 6, 17, rng.randrange(256)))
            body = rng.choice((plaintext, inner_v4(rng.randrange(60)), inner_v6(rng.randrange(60)),
                               inner_v4(20)[:rng.randrange(20)], inner_v6(5)[:rng.randrange(48)]))
            plaintext = trailer(body, nh, block)
        else:
            plaintext += bytes(-len(plaintext) % block)
        if not plaintext:
            plaintext = bytes(block)
        seq = rng.randint(1, 2**32 - 1)
        return wrap(seal(out, plaintext, seq), outer=outer, encap=encap)
    elif choice == 10:                                # UDP header games
        if encap:
            at = hdr - 8 + rng.randrange(8)
            b[at] = rng.randrange(256)
            if rng.random() < 0.3:
                del b[hdr:]
                b += rng.choice((b"\xff", b"\0\0\0\0" + rng.randbytes(20), b"\0\0"))
        else:
            b[rng.randrange(len(b))] ^= 0xFF
    else:                                             # swap halves of two packets
        cut = rng.randrange(len(b))
        other = out.protect(inner_v4(rng.randrange(80)), now=0.0)
        return bytes(b[:cut]) + other[cut:]
    return bytes(b)


@pytest.mark.parametrize(("keyword", "mode", "outer", "encap"), FUZZ_SETUPS,
                         ids=[f"{k}-{m.value}-v{o}{'-udp' if e else ''}" for k, m, o, e in FUZZ_SETUPS])
def test_fuzz_only_packet_dropped_comes_out(keyword, mode, outer, encap):
    backend = "aesni" if "aesni" in BACKENDS else None
    rng = random.Random(f"1234/{keyword}/{mode.value}/{outer}/{encap}")
    out, inb = make_pair(keyword, mode=mode, outer=outer, encap=encap, backend=backend)
    hdr = (20 if outer == 4 else 40) + (8 if encap else 0)
    v4_inside = outer == 4 or mode == Mode.TUNNEL
    inners = [inner_v4(rng.randrange(100)) if v4_inside else inner_v6(rng.randrange(100)) for _ in range(16)]
    valid = [out.protect(p, now=0.0) for p in inners]
    reasons = set()
    for i in range(FUZZ_PER_SETUP):
        mutated = _mutate(rng, rng.choice(valid), out, hdr, encap, outer)
        before = inb.state()
        drops = sum(inb.stats.drops.values())
        try:
            result = inb.unprotect(mutated, now=0.0)
        except PacketDropped as drop:
            assert isinstance(drop.reason, DropReason)
            reasons.add(drop.reason)
            assert sum(inb.stats.drops.values()) == drops + 1
            if drop.reason is not DropReason.DUMMY:
                assert without_drops(inb.state()) == without_drops(before), (i, drop, mutated.hex())
        else:
            assert isinstance(result, bytes)          # e.g. an unprotected outer field changed
        # Put the window back so that the next mutation of the same packet is not just a replay.
        inb.replay.top, inb.replay.bitmap = before[1]
        inb.stats.packets, inb.stats.bytes = before[2], before[3]
    assert {DropReason.MALFORMED, DropReason.AUTH_FAILED, DropReason.TRUNCATED} <= reasons, reasons
    for p, w in zip(inners, valid):
        assert inb.unprotect(w, now=0.0) == p


# ----------------------------------------------------------------------------------------------
# outbound: a packet whose protected form cannot carry an IP length
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode,outer,version", [(Mode.TUNNEL, 4, 4), (Mode.TUNNEL, 6, 6),
                                                (Mode.TRANSPORT, 4, 4), (Mode.TRANSPORT, 4, 6)])
def test_protect_refuses_what_ip_cannot_carry(mode, outer, version):
    out = make_sa("aes128gcm16", Direction.OUT, mode=mode, outer=outer)
    inner = inner_v4 if version == 4 else inner_v6
    before = out.state()
    header = 28 if version == 4 else 48            # inner_v4/inner_v6 add IP + 8 bytes
    largest = 0xFFFF if version == 4 else 0xFFFF + 40     # the longest IPv4 / IPv6 packet
    with pytest.raises(PacketDropped) as exc:
        out.protect(inner(largest - header), now=0.0)          # no room left for ESP
    assert exc.value.reason is DropReason.TOO_BIG and "65535" in str(exc.value)
    assert out.state() == before                 # no sequence number (so no nonce) spent
    assert len(out.protect(inner(largest - header - 100), now=0.0)) > largest - 100    # 100 bytes less fits


@pytest.mark.parametrize("version", [4, 6])
def test_transport_mode_refuses_fragments(version):
    """Transport mode applies to whole packets (RFC 4301 7): a fragment handed to protect is a
    local error, and nothing (sequence number, nonce) is spent on it."""
    from ipsec_core.errors import LocalError

    out = make_sa("aes128gcm16", Direction.OUT, mode=Mode.TRANSPORT)
    if version == 4:
        packet = bytearray(inner_v4(40))
        packet[6] = 0x20                         # more fragments
        packet[10:12] = b"\0\0"
        packet[10:12] = _checksum(bytes(packet[:20])).to_bytes(2, "big")
    else:
        whole = inner_v6(40)
        frag = bytes((17, 0, 0, 1)) + bytes(4)   # next header UDP, offset 0, M = 1
        packet = bytearray(whole[:4] + (len(whole) - 40 + 8).to_bytes(2, "big") + bytes((44,))
                           + whole[7:40] + frag + whole[40:])
    before = out.state()
    with pytest.raises(LocalError, match="fragment"):
        out.protect(bytes(packet), now=0.0)
    assert out.state() == before

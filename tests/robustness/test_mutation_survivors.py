"""Behaviour that mutation testing (fuzz/README.md, "Mutation testing") showed no other test
pins down: changes to these lines left every other test passing.

The replay window is compared with a plain model from a fresh window (no state planted), with
the whole bitmap compared and not only the verdicts, for the small sizes (0, 1, 2) the model
test of test_replay_model.py does not draw, and at the exact boundaries of the ESN estimate
(RFC 4303 Appendix A2.2: the window within one 2^32 sub-space or across two).

IKE key material: the registry is asked for the backend, key size and tag size the suite needs;
prf+ stops at 255 blocks exactly; the fixed-key PRFs take 8 + 8 nonce bytes; the ids written
to Wireshark's key table; AEAD IVs never repeat and AEAD plaintext is not block-padded; the
Encrypted payload's length and pad-length checks at their exact boundaries, against an
independent AES-GCM and HMAC (pyca/cryptography, the standard library) as the peer.

ESP unprotect: the outer IPv4 total length and IPv6 payload length bound the ESP payload for
packets of 256 bytes and more (bytes after them, as Ethernet padding leaves, are not ESP), and
an outer IPv6 fragment is a malformed drop; AES-GMAC with ESN authenticates the high-order
sequence bits; an authentic CBC payload that is not whole blocks is a truncated drop.
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import struct

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from ipsec_core.crypto.registry import get_registry
from ipsec_core.dataplane.replay import MAX_REPLAY_WINDOW_BITS, ReplayWindow
from ipsec_core.dataplane.sa import Direction, Mode, SaConfig, SecurityAssociation
from ipsec_core.errors import AuthenticationError, DropReason, LocalError, PacketDropped
from ipsec_core.ike.keymat import IkeCrypto, derive_ike_keys, skeyseed_nonce_key
from ipsec_core.ike.proposals import parse_ike_proposal
from ipsec_core.transforms.keywords import parse_esp

SEQ32, SEQ64_MAX = 1 << 32, (1 << 64) - 1


class Model:
    """The accepted numbers and the highest one; size 0 accepts every valid number."""

    def __init__(self, size: int, esn: bool):
        self.size, self.esn, self.top, self.accepted = size, esn, 0, set()

    def full(self, low: int) -> int | None:
        if not self.esn:
            return low
        left = self.top - max(self.size, 1) + 1
        high = self.top >> 32
        chosen = min(c for c in ((h << 32) | low for h in (high - 1, high, high + 1)) if c >= left)
        return chosen if 1 <= chosen <= SEQ64_MAX else None

    def verdict(self, low: int) -> int | None:
        seq = self.full(low)
        if seq is None or seq < 1:
            return None
        if self.size == 0 or seq > self.top:
            return seq
        if self.top - seq >= self.size or seq in self.accepted:
            return None
        return seq

    def accept(self, seq: int) -> None:
        self.accepted.add(seq)
        self.top = max(self.top, seq)

    def bitmap(self) -> int:
        return sum(1 << behind for behind in range(self.size) if self.top - behind in self.accepted)


def test_window_size_bounds_and_message():
    assert ReplayWindow(MAX_REPLAY_WINDOW_BITS).size == MAX_REPLAY_WINDOW_BITS
    assert ReplayWindow(0).size == 0
    for bad in (MAX_REPLAY_WINDOW_BITS + 1, -1):
        with pytest.raises(ValueError, match=rf"0\.\.{MAX_REPLAY_WINDOW_BITS} bits, not {bad}"):
            ReplayWindow(bad)


@pytest.mark.parametrize("size", [1, 2, 3, 32])
def test_bitmap_holds_exactly_size_bits(size):
    w = ReplayWindow(size)
    for seq in range(1, size + 4):
        w.update(w.check(seq))
        assert w.bitmap == (1 << min(seq, size)) - 1


def test_fresh_window_is_empty():
    for esn in (False, True):
        assert ReplayWindow(32, esn=esn).snapshot() == (0, 0)


@settings(max_examples=250, database=None, deadline=None)
@given(size=st.sampled_from([0, 1, 2, 3, 8, 32]), esn=st.booleans(),
       steps=st.lists(st.tuples(st.integers(0, 40) | st.sampled_from([0, SEQ32 - 1, SEQ32 - 2]),
                                st.booleans()), min_size=1, max_size=60))
def test_fresh_window_matches_the_model_bit_for_bit(size, esn, steps):
    """Verdicts, top and the whole bitmap, which the batch paths read and write directly; the
    bitmap never holds more than `size` bits, whatever arrives."""
    w, model = ReplayWindow(size, esn=esn), Model(size, esn)
    for low, authentic in steps:
        want = model.verdict(low)
        try:
            got = w.check(low)
        except PacketDropped as drop:
            assert drop.reason is DropReason.REPLAY
            got = None
        assert got == want, (low, size, esn)
        if got is not None and authentic:
            w.update(got)
            model.accept(got)
        assert w.snapshot() == (model.top, model.bitmap()), (low, size, esn)
        assert w.bitmap.bit_length() <= size


@pytest.mark.parametrize(("size", "tl"), [(size, max(size, 1) - 1 + d) for size in (0, 1, 2, 32, 1024)
                                          for d in (-2, -1, 0, 1) if max(size, 1) - 1 + d >= 0])
@pytest.mark.parametrize("th", [0, 1, 7])
def test_esn_estimate_at_the_sub_space_boundary(size, tl, th):
    """The top's low 32 bits just below, at and past size - 1 (where the window stops spanning
    two sub-spaces), with low bits at both ends of the space and at the window's left edge."""
    w = max(size, 1)
    window, model = ReplayWindow(size, esn=True), Model(size, True)
    window.top = model.top = (th << 32) | tl
    for low in {0, 1, SEQ32 - 1, SEQ32 - 2, tl, (tl - w + 1) % SEQ32, (tl - w) % SEQ32,
                (tl + 1) % SEQ32}:
        want = model.full(low)
        got = window.estimate(low)
        assert (got if got >= 1 else None) == want, (hex(window.top), size, hex(low))


def test_drop_messages_name_the_number():
    w = ReplayWindow(32)
    with pytest.raises(PacketDropped, match="sequence number 0 is not valid"):
        w.check(0)
    w.update(w.check(7))
    with pytest.raises(PacketDropped, match="sequence number 7 was already received"):
        w.check(7)


# -- IKE key material -------------------------------------------------------------------------

GCM = "aes128gcm16-prfsha256-ecp256"
CBC = "aes256-sha256-prfsha256-ecp256"
XCBC = "aes128-aesxcbc-prfaesxcbc-ecp256"
CMAC = "aes128-aescmac-prfaescmac-ecp256"


class SpyRegistry:
    """The process-wide registry, recording what each `select` asked for."""

    def __init__(self):
        self.real, self.calls = get_registry(), []

    def select(self, family, key_bits, backend=None, *, tag_bytes=None):
        self.calls.append((family, key_bits, backend, tag_bytes))
        return self.real.select(family, key_bits, backend, tag_bytes=tag_bytes)

    def __getattr__(self, name):
        return getattr(self.real, name)


def _keys(n: int, seed: int) -> bytes:
    return bytes((seed + i) % 256 for i in range(n))


def _protector(keyword: str, *, backend: str | None = None, registry=None):
    """A protector and the raw keys of its inbound side (encryption, integrity)."""
    suite = parse_ike_proposal(keyword)[0]
    crypto = IkeCrypto(suite, registry=registry or get_registry(), backend=backend)
    e, a = suite.encr_key_bytes, suite.integ.key_bytes if suite.integ else 0
    encr, integ = (_keys(e, 1), _keys(e, 101)), (_keys(a, 51), _keys(a, 151))
    return crypto.protector(encr, integ), encr[1], integ[1]


@pytest.mark.parametrize("keyword", [GCM, CBC, XCBC, CMAC])
def test_ike_primitives_come_from_the_named_backend_at_the_suite_sizes(keyword):
    suite = parse_ike_proposal(keyword)[0]
    spy = SpyRegistry()
    crypto = IkeCrypto(suite, registry=spy, backend="reference")
    sk = crypto.protector((_keys(suite.encr_key_bytes, 1), _keys(suite.encr_key_bytes, 2)),
                          (_keys(suite.integ.key_bytes, 3),) * 2 if suite.integ else (b"", b""))
    assert crypto.backend_names == "reference" and sk.backend == "reference"
    assert all(backend == "reference" for _, _, backend, _ in spy.calls), spy.calls
    by_family = {family: (bits, tag) for family, bits, _, tag in spy.calls}
    if suite.aead:
        assert by_family[suite.encr.family] == (suite.key_bits, suite.encr.icv_bytes)
    else:
        assert by_family[suite.encr.family] == (suite.key_bits, None)
        fixed_key = not suite.integ.family.startswith("hmac")
        assert by_family[suite.integ.family] == (128 if fixed_key else None, None)


def test_prf_plus_stops_at_255_blocks():
    crypto = IkeCrypto(parse_ike_proposal(GCM)[0], registry=get_registry(), backend=None)
    assert len(crypto.prf_plus(b"k" * 32, b"seed", 255 * 32)) == 255 * 32
    with pytest.raises(ValueError, match=r"prf\+ asked for more than 255 blocks"):
        crypto.prf_plus(b"k" * 32, b"seed", 255 * 32 + 1)


def test_fixed_key_prfs_take_eight_bytes_of_each_nonce():
    ni, nr = _keys(32, 1), _keys(32, 200)
    for keyword in (XCBC, CMAC):
        assert skeyseed_nonce_key(parse_ike_proposal(keyword)[0], ni, nr) == ni[:8] + nr[:8]
    assert skeyseed_nonce_key(parse_ike_proposal(GCM)[0], ni, nr) == ni + nr


@pytest.mark.parametrize(("keyword", "ids"), [(CBC, (12, 256, 12)), (GCM, (20, 128, 0)),
                                              (XCBC, (12, 128, 5))])
def test_key_table_ids(keyword, ids):
    crypto = IkeCrypto(parse_ike_proposal(keyword)[0], registry=get_registry(), backend=None)
    _, keys = derive_ike_keys(crypto, shared=b"s" * 32, ni=b"i" * 32, nr=b"r" * 32,
                              spi_i=b"I" * 8, spi_r=b"R" * 8)
    assert (keys.encr_id, keys.encr_key_bits, keys.integ_id) == ids


def test_aead_ivs_never_repeat_and_plaintext_is_not_padded():
    sk, _, _ = _protector(GCM)
    ivs = set()
    for n in range(40):
        sealed = sk.seal(b"head", bytes(n))
        assert len(sealed) == sk.seal_length(n) == 8 + n + 1 + 16
        ivs.add(sealed[:8])
    assert len(ivs) == 40


@pytest.mark.parametrize("keyword", [GCM, CBC])
def test_encrypted_payload_shorter_than_iv_and_icv(keyword):
    sk, _, _ = _protector(keyword)
    for n in (sk.iv_bytes + sk.icv_bytes, sk.iv_bytes + sk.icv_bytes - 1, 0):
        with pytest.raises(AuthenticationError, match="shorter than IV and ICV"):
            sk.open(b"head", bytes(n))


def test_pad_length_past_the_start_of_an_authentic_payload():
    """A peer holding the keys sends a pad length longer than what it encrypted."""
    sk, encr_in, _ = _protector(GCM)
    key, salt = encr_in[:-4], encr_in[-4:]
    head, iv = b"head-of-the-message", os.urandom(8)
    for inner, want in ((b"\x02", None), (b"\x00\x02", None), (b"ab\x00", b"ab"), (b"\x01\x01", b"")):
        body = iv + AESGCM(key).encrypt(salt + iv, inner, head)
        if want is None:
            with pytest.raises(AuthenticationError, match="pad length past its start"):
                sk.open(head, body)
        else:
            assert sk.open(head, body) == want


def test_cbc_errors_name_what_is_wrong():
    sk, _, integ_in = _protector(CBC)
    head, iv = b"head", bytes(16)
    good_icv = lambda ct: hmac.new(integ_in, head + iv + ct, hashlib.sha256).digest()[:16]  # noqa: E731
    with pytest.raises(AuthenticationError, match="ICV mismatch"):
        sk.open(head, iv + bytes(32) + bytes(16))
    ct = bytes(17)
    with pytest.raises(AuthenticationError, match="not a whole number of blocks"):
        sk.open(head, iv + ct + good_icv(ct))


def test_a_wiped_protector_says_so():
    sk, _, _ = _protector(GCM)
    sealed = sk.seal(b"head", b"payload")
    sk.wipe()
    with pytest.raises(LocalError, match="keys were wiped"):
        sk.seal(b"head", b"payload")
    with pytest.raises(AuthenticationError, match="keys were wiped"):
        sk.open(b"head", sealed)


# -- ESP unprotect: the outer header's length fields -------------------------------------------

def _esp_pair(keyword: str, outer: int):
    prop = parse_esp(keyword)
    ours, peer = ("192.0.2.1", "192.0.2.2") if outer == 4 else ("2001:db8::1", "2001:db8::2")

    def make(direction, local, remote):
        return SecurityAssociation(SaConfig(
            name=direction.value, spi=0x7000, direction=direction, mode=Mode.TUNNEL, proposal=prop,
            enc_key=_keys(prop.enc_key_bytes, 9),
            integ_key=_keys(prop.integ_info.key_bytes, 90) if prop.integ_info else b"",
            local=ipaddress.ip_address(local), remote=ipaddress.ip_address(remote)),
            registry=get_registry(), now=0.0)
    return make(Direction.OUT, ours, peer), make(Direction.IN, peer, ours)


def _inner_v4(n: int) -> bytes:
    payload = struct.pack("!HHHH", 1000, 53, 8 + n, 0) + bytes((i * 7) & 0xFF for i in range(n))
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, 0, 64, 17, 0,
                       bytes([198, 51, 100, 1]), bytes([203, 0, 113, 1])) + payload


@pytest.mark.parametrize("outer", [4, 6])
@pytest.mark.parametrize("keyword", ["aes128gcm16", "aes128-sha256"])
@pytest.mark.parametrize("size", [10, 300, 1400])
def test_outer_length_bounds_the_esp_payload(keyword, outer, size):
    out, inb = _esp_pair(keyword, outer)
    inner = _inner_v4(size)
    packet = out.protect(inner, now=0.0)
    assert inb.unprotect(packet + bytes(6), now=0.0) == inner      # trailing bytes ignored
    with pytest.raises(PacketDropped) as drop:                     # ... and the same packet again
        inb.unprotect(packet, now=0.0)
    assert drop.value.reason is DropReason.REPLAY


def test_outer_ipv6_fragment_is_malformed():
    out, inb = _esp_pair("aes128gcm16", 6)
    packet = out.protect(_inner_v4(40), now=0.0)
    body = packet[40:]
    fragment = bytes([packet[6], 0, 0, 0]) + struct.pack("!I", 1)   # offset 0, more fragments
    head = bytearray(packet[:40])
    head[6] = 44
    head[4:6] = struct.pack("!H", len(body) + 8)
    with pytest.raises(PacketDropped, match="IPv6 fragment") as drop:
        inb.unprotect(bytes(head) + fragment + body, now=0.0)
    assert drop.value.reason is DropReason.MALFORMED
    assert inb.unprotect(packet, now=0.0) == _inner_v4(40)


@pytest.mark.parametrize("start", [0, SEQ32 - 2])
def test_gmac_with_esn_round_trips_across_2_to_the_32(start):
    out, inb = _esp_pair("aes128gmac-esn", 4)
    out.seq = inb.replay.top = start
    for i in range(4):
        assert inb.unprotect(out.protect(_inner_v4(i), now=0.0), now=0.0) == _inner_v4(i)
    assert inb.replay.top == start + 4


def test_authentic_cbc_payload_of_partial_blocks_is_truncated():
    """The peer holds the keys and its ICV covers a payload one byte short of whole blocks."""
    out, inb = _esp_pair("aes128-sha256", 4)
    packet = out.protect(_inner_v4(40), now=0.0)
    esp = packet[20:-16][:-1]                                  # ESP header, IV, CBC body - 1
    icv = hmac.new(_keys(32, 90), esp, hashlib.sha256).digest()[:16]
    head = bytearray(packet[:20])
    head[2:4] = struct.pack("!H", 20 + len(esp) + 16)
    with pytest.raises(PacketDropped, match="not a multiple of 16 bytes") as drop:
        inb.unprotect(bytes(head) + esp + icv, now=0.0)
    assert drop.value.reason is DropReason.TRUNCATED
    assert inb.unprotect(packet, now=0.0) == _inner_v4(40)

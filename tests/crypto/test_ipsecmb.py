"""The ipsecmb backend's C extension: its batch calls agree with its single-message calls and
with `cryptography`, and its entry points refuse hostile input (random offsets, lengths, tags,
truncated buffers, wrong types) with a Python exception, never a crash or a read outside the
buffer; once more under AddressSanitizer.  The vectors of the registry's self-test go through
the single-message calls in `tests/crypto/test_vectors.py` like every backend's."""
from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import pytest

np = pytest.importorskip("numpy")

try:
    from ipsec_plugins.ipsecmb import _ipsecmb
except ImportError as exc:                    # not built here
    _ipsecmb = None
    WHY = f"the ipsecmb C extension is not built ({exc})"
else:
    WHY = ""

from ipsec_core.errors import AuthenticationError  # noqa: E402

needs_ext = pytest.mark.skipif(_ipsecmb is None, reason=WHY or "built")
SOURCE = Path(__file__).resolve().parents[2] / "plugins" / "ipsecmb" / "_ipsecmb.c"


def _layout(rng, n, sizes, room):
    lens = np.array([rng.choice(sizes) for _ in range(n)], np.int64)
    offs = np.zeros(n, np.int64)
    offs[1:] = np.cumsum(lens[:-1] + room)
    return bytearray(rng.randbytes(int(lens.sum()) + room * n)), offs, lens


@needs_ext
@pytest.mark.parametrize("kind,key_len,tag", [("GCM", 16, 16), ("GCM", 24, 12), ("GCM", 32, 8),
                                              ("CHACHA", 32, 16)])
def test_aead_batch_equals_single(kind, key_len, tag):
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

    rng = random.Random(kind + str(key_len))
    key = rng.randbytes(key_len)
    aead = _ipsecmb.Aead(getattr(_ipsecmb, kind), key, tag, AuthenticationError)
    ref = (AESGCM if kind == "GCM" else ChaCha20Poly1305)(key)
    n = 50
    buf, offs, lens = _layout(rng, n, [0, 1, 15, 64, 1400], tag)
    nonces, aads = rng.randbytes(12 * n), rng.randbytes(12 * n)
    plain = [bytes(buf[o:o + ln]) for o, ln in zip(offs.tolist(), lens.tolist())]
    aead.seal_batch(buf, offs, lens, nonces, aads)
    for i, (o, ln) in enumerate(zip(offs.tolist(), lens.tolist())):
        args = (nonces[12 * i:12 * i + 12], plain[i], aads[12 * i:12 * i + 12])
        assert bytes(buf[o:o + ln + tag]) == ref.encrypt(*args)[:ln + tag] == aead.encrypt(*args)
    buf[int(offs[3] + lens[3])] ^= 1                     # one forged tag
    verdicts = aead.open_batch(buf, offs, lens, nonces, aads)
    assert [i for i, v in enumerate(verdicts) if not v] == [3]
    for i, (o, ln) in enumerate(zip(offs.tolist(), lens.tolist())):
        if i != 3:
            assert bytes(buf[o:o + ln]) == plain[i]
    with pytest.raises(AuthenticationError):
        aead.decrypt(nonces[:12], b"\0" * (tag - 1), b"")


@needs_ext
@pytest.mark.parametrize("cipher,mac,icv", [("CBC", "HMAC_SHA256", 16), ("CTR", "HMAC_SHA1", 12),
                                            (None, "HMAC_SHA512", 32), ("CBC", "XCBC", 12),
                                            ("CTR", "CMAC", 12), ("CBC", "HMAC_SHA384", 24)])
@pytest.mark.parametrize("esn", [False, True])
def test_chain_batch_equals_loop(cipher, mac, icv, esn):
    from ipsec_core.dataplane.esp.bulk import LoopEncryptThenMac

    rng = random.Random(f"{cipher}{mac}{esn}")
    c = _ipsecmb.Cipher(getattr(_ipsecmb, cipher), rng.randbytes(16)) if cipher else None
    m = _ipsecmb.Mac(getattr(_ipsecmb, mac), rng.randbytes(16 if mac in ("XCBC", "CMAC") else 32))
    at = 8 + (16 if cipher == "CBC" else 8 if cipher else 0)
    chain = _ipsecmb.Chain(c, m, icv, at)
    loop = LoopEncryptThenMac(c, m, icv_bytes=icv, cipher_at=at)
    n = 40
    buf, offs, lens = _layout(rng, n, [at + 16, at + 64, at + 1392], icv)
    ivs, his = rng.randbytes(16 * n), (rng.randbytes(4 * n) if esn else None)
    twin = bytearray(buf)
    chain.seal_batch(buf, offs, lens, ivs, his)
    loop.seal_batch(twin, offs, lens, ivs, his)
    assert buf == twin
    buf[int(offs[5]) + 2] ^= 4                           # one forged packet
    sealed = bytearray(buf)
    verdicts = chain.open_batch(buf, offs, lens, ivs, his)
    assert [i for i, v in enumerate(verdicts) if not v] == [5]
    assert loop.open_batch(sealed, offs, lens, ivs, his) == verdicts
    for i in range(n):
        if i != 5:
            o, ln = int(offs[i]), int(lens[i])
            assert buf[o:o + ln] == sealed[o:o + ln]     # the same plaintext both ways


def fuzz(m, iterations: int, seed: int = 1) -> int:
    """Throw hostile batches at every batch entry point and malformed single calls at the
    others; only Python exceptions may come back.  Returns how many calls were refused."""
    rng = random.Random(seed)
    aead = m.Aead(m.GCM, bytes(16), 16, ValueError)
    chacha = m.Aead(m.CHACHA, bytes(32), 16, ValueError)
    chains = [m.Chain(m.Cipher(m.CBC, bytes(16)), m.Mac(m.HMAC_SHA256, b"k"), 16, 24),
              m.Chain(m.Cipher(m.CTR, bytes(32)), m.Mac(m.XCBC, bytes(16)), 12, 16),
              m.Chain(None, m.Mac(m.CMAC, bytes(32)), 12, 8)]
    refused = 0
    edge = [-(1 << 63), -1, 0, 1, 7, 15, 16, 17, 63, 64, 65535, 65536, 1 << 31, (1 << 63) - 1]

    def value(size):
        return rng.choice(edge) if rng.random() < 0.3 else rng.randrange(0, size + 32)

    for _ in range(iterations):
        size = rng.choice([0, 1, 16, 100, 2000])
        buf = bytearray(rng.randbytes(size))
        n = rng.choice([0, 1, 2, 5])
        offs = np.array([value(size) for _ in range(n)], np.int64)
        lens = np.array([value(size) for _ in range(n)], np.int64)
        if rng.random() < 0.1:
            offs = offs.astype(np.int32)                 # wrong dtype
        if rng.random() < 0.1:
            lens = lens[:max(n - 1, 0)]                  # wrong count
        width = rng.choice([12, 12, 16, 11, 0])
        nonces = rng.randbytes(width * n + rng.choice([0, 0, 1]))
        aads = rng.randbytes(rng.choice([0, 8, 12, 13]) * n)
        his = rng.choice([None, rng.randbytes(4 * n), rng.randbytes(3)])
        target = rng.choice([aead, chacha, *chains])
        call = rng.choice(["seal_batch", "open_batch"])
        try:
            if isinstance(target, m.Aead):
                getattr(target, call)(buf if rng.random() < 0.9 else bytes(buf), offs, lens, nonces, aads)
            else:
                getattr(target, call)(buf, offs, lens, rng.randbytes(16 * n + rng.choice([0, 0, 5])), his)
        except (ValueError, TypeError, BufferError):
            refused += 1
        refused += fuzz_framing(m, rng, target, buf, offs, lens, n)
        data = rng.randbytes(rng.choice([0, 1, 15, 16, 17, 100]))
        for single in (lambda: aead.decrypt(data[:12].ljust(12, b"\0"), data, b"a"),
                       lambda: chacha.encrypt(data[:rng.choice([11, 12, 13])], data, data),
                       lambda: m.Cipher(m.CBC, bytes(16)).decrypt(data[:16], data),
                       lambda: m.Cipher(m.CTR, bytes(24)).encrypt(data[:16], data),
                       lambda: m.Mac(m.CMAC, data[:16]).mac(data),
                       lambda: m.Aead(m.GCM, data, 16, ValueError)):
            try:
                single()
            except (ValueError, TypeError):
                refused += 1
    return refused


def fuzz_framing(m, rng, target, buf, offs, lens, n) -> int:
    """One hostile call of each ESP framing entry point (esp_seal, esp_open, peek, cut)."""
    refused = 0
    packets = [rng.randbytes(rng.choice([0, 1, 20, 60, 300])) for _ in range(n)]
    if rng.random() < 0.1:
        packets.append(rng.choice([None, 5, "x", bytearray(3)]))
    head = rng.choice([0, 8, 24, 36, 52, -1, 2000])
    width = max(head, 0)
    heads = rng.randbytes(width * len(packets) + rng.choice([0, 0, 3]))
    nhs = rng.randbytes(len(packets) + rng.choice([0, 0, 1]))
    block = rng.choice([1, 4, 16, 0, 256, -3])
    rows = rng.randbytes(rng.choice([12, 16, 11]) * len(packets))
    aads = rng.choice([None, rng.randbytes(8 * len(packets)), rng.randbytes(4 * len(packets)), b"x"])
    at = rng.choice([0, 8, 16, 24, 52, -1, 5000])
    calls = [lambda: target.esp_seal(packets, heads, head, nhs, block, rows, aads),
             lambda: target.peek(packets, rng.choice([0, 8, 52, -1, 5000])),
             lambda: target.cut(buf if rng.random() < 0.5 else bytes(buf), offs, lens)]
    if isinstance(target, m.Aead):
        calls.append(lambda: target.esp_open(packets, at, lens, rows, aads))
    else:
        calls.append(lambda: target.esp_open(packets, at, lens, rows))
    calls += fused_calls(m, rng, target, buf, offs, lens, packets)
    for call in calls:
        try:
            call()
        except (ValueError, TypeError, BufferError, OverflowError):
            refused += 1
    return refused


def template(flags: int, ivb: int = 8) -> bytes:
    """A fused-call template (outer header, [UDP], SPI, sequence number and IV room)."""
    proto = 17 if flags & 2 else 50
    if flags & 1:
        outer = bytes((0x60, 0, 0, 0, 0, 0, proto, 64)) + bytes(15) + b"\1" + bytes(15) + b"\2"
    else:
        outer = bytes((0x45, 0, 0, 0, 0, 0, 0, 0, 64, proto, 0, 0, 192, 0, 2, 1, 192, 0, 2, 2))
    udp = bytes((0x11, 0x94, 0x11, 0x94, 0, 0, 0, 0)) if flags & 2 else b""
    if flags & 8:                     # FUSED_BARE: the ESP part alone
        outer = udp = b""
    return outer + udp + b"\0\0\x42\x42" + bytes(4 + ivb)


def fused_calls(m, rng, aead, buf, offs, lens, packets) -> list:
    """Hostile calls of the fused entry points (esp_protect, esp_protect_into, esp_unprotect;
    a Chain's with AES-CBC IVs), half of them on ESP packets the call itself made and then
    damaged, so the opening path, not only the argument checks, meets bad input."""
    chain = isinstance(aead, m.Chain)
    ivb = aead.cipher_at - 8 if chain else 8
    flags = rng.choice([0, 1, 2, 4, 5, 6, 7, 8, 10, 15, 16, -1])
    good = flags if 0 <= flags < 16 else 0
    if chain:
        good &= ~4                                   # no ESN for a Chain
    tmpl = template(good, ivb) if rng.random() < 0.8 else rng.randbytes(rng.choice([0, 36, 44, 56, 60]))
    good_salt = bytes(4) if ivb == 8 else b""
    salt = rng.choice([good_salt, good_salt, rng.randbytes(rng.choice([0, 3, 4, 12]))])
    block = rng.choice([16 if ivb == 16 else 4, 4, 1, 16, 0, 256])
    ivs = rng.choice([None, rng.randbytes(16 * len(offs)), b"x"]) if chain else None
    extra = (-1, 0, ivs) if chain else ()
    edge = [0, 1, (1 << 32) - 1, (1 << 62) - 1, 1 << 62, (1 << 64) - 1, 1 << 64, -1]
    seq0, top = rng.choice(edge), rng.choice(edge)
    window = rng.choice([0, 32, 64, 1024, 1 << 31, (1 << 31) + 1, -1])
    min_len = rng.choice([0, 40, 60, 64, 70, 65535, 65536, -1])
    inner = [bytes((0x45, 0)) + (20 + k).to_bytes(2, "big") + rng.randbytes(16 + k)
             for k in rng.choices([0, 1, 40, 300], k=len(packets))] if rng.random() < 0.7 else packets
    wire = []
    try:
        if chain:
            head = len(template(good, ivb))
            room = bytearray()
            at = []
            for p in inner:
                at.append(len(room) + head)
                room += bytes(head) + p + bytes(40)
            done = aead.esp_protect_into(room, np.array(at, np.int64), np.array([len(p) for p in inner], np.int64),
                                         template(good, ivb), good, good_salt, 16 if ivb == 16 else 4, 0, 0,
                                         -1, 0, os.urandom(16 * len(inner)) if ivb == 16 else None)
            if isinstance(done, tuple):
                wire = [bytes(room[o - head:o - head + w])
                        for o, w in zip(at, np.frombuffer(done[0], np.int64).tolist())]
        else:
            done = aead.esp_protect(inner, template(good), good, bytes(4), 4, 0, 0)
            wire = done[0] if isinstance(done, tuple) else []
    except (ValueError, TypeError, OverflowError):
        pass
    damaged = []
    for w in wire:
        w = bytearray(w)
        if w and rng.random() < 0.5:
            w[rng.randrange(len(w))] ^= 1 << rng.randrange(8)
        if rng.random() < 0.2:
            w = w[:rng.randrange(len(w) + 1)]
        damaged.append(bytes(w))
    joined = bytearray(b"".join(damaged))
    starts = np.cumsum([0] + [len(d) for d in damaged[:-1]]).astype(np.int64) if damaged else offs
    sizes = np.array([len(d) for d in damaged], np.int64) if damaged else lens
    calls = [
        lambda: aead.esp_protect_into(buf, offs, lens, tmpl, flags, salt, block, seq0, 1, *extra),
        lambda: aead.esp_protect_into(joined, starts, sizes, template(good, ivb), good, good_salt, block,
                                      0, 0, *extra),
        lambda: aead.esp_unprotect(damaged or packets, None, None, template(good, ivb), good, good_salt,
                                   top, window, rng.choice([min_len, 60, 80])),
        lambda: aead.esp_unprotect(joined if damaged else buf, starts, sizes, tmpl, flags, salt,
                                   top, window, min_len),
        lambda: aead.esp_unprotect(buf, offs, None, tmpl, flags, salt, top, window, min_len),
    ]
    if not chain:
        calls.append(lambda: aead.esp_protect(packets, tmpl, flags, salt, block, seq0,
                                              rng.choice([0, 65535, 1 << 32])))
    return calls


@needs_ext
def test_esp_framing_matches_the_buffer_calls():
    """esp_seal / esp_open give what seal_batch / open_batch give on the same framing."""
    m = _ipsecmb
    aead = m.Aead(m.GCM, bytes(range(16)), 16, ValueError)
    rng = random.Random(3)
    packets = [rng.randbytes(rng.randrange(20, 200)) for _ in range(9)]
    n, head = len(packets), 28
    heads = rng.randbytes(head * n)
    nhs = bytes([4] * n)
    nonces = rng.randbytes(12 * n)
    aads = rng.randbytes(8 * n)
    framed = aead.esp_seal(packets, heads, head, nhs, 4, nonces, aads)
    for i, p in enumerate(packets):
        pad = -(len(p) + 2) % 4
        pt = p + bytes(range(1, pad + 1)) + bytes((pad, 4))
        assert framed[i] == heads[head * i:head * (i + 1)] + aead.encrypt(
            nonces[12 * i:12 * i + 12], pt, aads[8 * i:8 * i + 8])
    ct = np.array([len(f) - head - 16 for f in framed], np.int64)
    forged = list(framed)
    forged[4] = forged[4][:-1] + bytes((forged[4][-1] ^ 1,))
    verdicts, plain = aead.esp_open(forged, head, ct, nonces, aads)
    assert verdicts == bytes([1, 1, 1, 1, 0, 1, 1, 1, 1])
    starts = np.concatenate(([0], np.cumsum(ct)[:-1])).astype(np.int64)
    parts = aead.cut(plain, starts, ct)
    for i, p in enumerate(packets):
        if i != 4:
            assert parts[i][:len(p)] == p
    lens, first = aead.peek(packets, 8)
    assert np.frombuffer(lens, np.int64).tolist() == [len(p) for p in packets]
    assert first == b"".join(p[:8] for p in packets)


@needs_ext
@pytest.mark.parametrize("flags", [0, 1, 2, 4, 5, 10, 14])
def test_fused_calls_round_trip(flags):
    """esp_protect, esp_protect_into and esp_unprotect agree with each other, stop at the first
    packet they leave to the engine and report tag failures per packet."""
    m = _ipsecmb
    aead = m.Aead(m.GCM, bytes(range(16)), 16, ValueError)
    tmpl = template(flags)
    rng = random.Random(flags)
    inner = [bytes((0x45, 0)) + (20 + k).to_bytes(2, "big") + rng.randbytes(16 + k)
             for k in (0, 1, 2, 3, 100, 1380)]
    wire, octets = aead.esp_protect(inner, tmpl, flags, b"salt", 4, 10, 7)
    assert octets == sum(map(len, inner))
    head = len(tmpl)
    batch = bytearray()
    offs = []
    for p in inner:
        offs.append(len(batch) + head)
        batch += bytes(head) + p + bytes(24)
    lens, octets2 = aead.esp_protect_into(batch, np.array(offs, np.int64),
                                          np.array([len(p) for p in inner], np.int64),
                                          tmpl, flags, b"salt", 4, 10, 7)
    assert octets2 == octets
    for k, (o, ln) in enumerate(zip(offs, np.frombuffer(lens, np.int64).tolist())):
        assert batch[o - head:o - head + ln] == wire[k]
    # packet 3 forged, packet 5 a replay of packet 1: stop there
    mix = list(wire[:3]) + [wire[3][:-1] + bytes((wire[3][-1] ^ 1,)), wire[4], wire[1]]
    stop, codes, seqs, plain, at, ln, accepted, nbytes, inners = aead.esp_unprotect(
        mix, None, None, tmpl, flags, b"salt", 10, 64, head + 16 + 4)
    assert stop == 5 and codes == bytes([0, 0, 0, 1, 0]) and accepted == 4
    assert np.frombuffer(seqs, np.int64).tolist() == [11, 12, 13, 14, 15]
    assert inners == [inner[0], inner[1], inner[2], None, inner[4]]
    assert nbytes == sum(len(inner[k]) for k in (0, 1, 2, 4))
    # a sequence number left of the window: nothing is opened
    assert aead.esp_unprotect(mix, None, None, tmpl, flags, b"salt", 11, 64, head + 20)[0] == 0
    # a packet for another SPI: the engine's
    other = bytearray(wire[2])
    other[head - 16] ^= 1
    assert aead.esp_unprotect([wire[0], bytes(other)], None, None, tmpl, flags, b"salt", 0, 64, head + 20)[0] == 1
    # a non-IP inner packet is left to the engine by esp_protect, with nothing computed
    assert aead.esp_protect([inner[0], b"\x00" * 30], tmpl, flags, b"salt", 4, 0, 0) == 1


@needs_ext
def test_fuzz_entry_points():
    assert fuzz(_ipsecmb, 3000) > 1000       # most hostile calls are refused, none crashes


def _asan_build(tmp: Path) -> Path | None:
    cc = shutil.which("gcc")
    if cc is None:
        return None
    libasan = subprocess.run([cc, "-print-file-name=libasan.so"], capture_output=True, text=True).stdout.strip()
    if not libasan or not os.path.exists(libasan):
        return None
    out = tmp / ("_ipsecmb" + sysconfig.get_config_var("EXT_SUFFIX"))
    cmd = [cc, "-shared", "-fPIC", "-O1", "-g", "-fsanitize=address", "-fno-omit-frame-pointer",
           f"-I{sysconfig.get_paths()['include']}", str(SOURCE), "-lIPSec_MB", "-o", str(out)]
    if subprocess.run(cmd, capture_output=True).returncode != 0:
        return None
    return Path(libasan)


@needs_ext
def test_fuzz_under_address_sanitizer(tmp_path):
    libasan = _asan_build(tmp_path)
    if libasan is None:
        pytest.skip("no gcc with AddressSanitizer (libasan) to build the extension with")
    code = ("import sys; sys.path.insert(0, sys.argv[1]); sys.path.insert(0, sys.argv[2]); "
            "import _ipsecmb; from tests.crypto.test_ipsecmb import fuzz; "
            "print('refused', fuzz(_ipsecmb, 2000, seed=7))")
    env = dict(os.environ, LD_PRELOAD=str(libasan), ASAN_OPTIONS="detect_leaks=0:abort_on_error=1",
               PYTHONMALLOC="malloc")
    root = str(Path(__file__).resolve().parents[2])
    run = subprocess.run([sys.executable, "-c", code, str(tmp_path), root], env=env,
                         capture_output=True, text=True, timeout=600, cwd=root)
    assert run.returncode == 0, run.stderr[-4000:]
    assert "refused" in run.stdout and "AddressSanitizer" not in run.stderr

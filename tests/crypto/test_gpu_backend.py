"""The `gpu` backend, checked without a GPU: the kernel source compiles for sm_90 with
nvcc, and the same source, built as C++20 with kernels/host_shim.h (the CPU build), runs behind
the real host code (numpy staging, SA slots, results) against the AES-GCM vectors, differential
tests with another backend through real SAs and protect_batch/unprotect_batch, drops inside a
batch, and batches that mix SAs.  Where CuPy and a CUDA device are present, the same vectors and
round trips run on the GPU too (`test_gpu_cuda_*`); `perf/gpu_check.sh` runs this file there.

Every test id contains "gpu" (the file name does): `pytest -k gpu` selects them all.  Vector ids
end in `[gpu]` (the CPU build); nothing here imports scapy or needs root.
"""
from __future__ import annotations

import gc
import ipaddress
import json
import os
import random
import re
import shutil
from pathlib import Path

import pytest

np = pytest.importorskip("numpy", reason="the gpu backend stages batches with numpy")

from ipsec_core.cli.backends import algorithms_of  # noqa: E402
from ipsec_core.crypto import selftest  # noqa: E402
from ipsec_core.crypto.registry import Registry  # noqa: E402
from ipsec_core.errors import AuthenticationError, BackendError, DropReason, PacketDropped  # noqa: E402
from ipsec_core.transforms.keywords import parse_esp  # noqa: E402
from ipsec_core.wire.ip import IPPROTO_UDP, build_ipv4, build_ipv6, fix_ipv4_header  # noqa: E402
from ipsec_core.dataplane.sa import Direction, Mode, SaConfig, SecurityAssociation  # noqa: E402
from ipsec_plugins.gpu import GpuBackend, source, staging  # noqa: E402
from ipsec_plugins.gpu.engine import GpuAead  # noqa: E402

KERNELS = Path(source.__file__).parent / "kernels"
CU_FILES = sorted(KERNELS.glob("*.cu"))
GCM_CASES = list(selftest.iter_cases(family="aes-gcm"))


# -- fixtures ---------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def cpu_launcher():
    if shutil.which(os.environ.get("CXX", "g++")) is None:
        pytest.skip("the CPU build of the GPU kernels needs g++ with C++20")
    from ipsec_plugins.gpu.cpu_launcher import CpuLauncher

    return CpuLauncher()       # built once per source digest, cached across sessions


@pytest.fixture(scope="session")
def gpu(cpu_launcher):
    """A gpu backend whose 'device' is the CPU build of the kernels."""
    return GpuBackend(launcher=cpu_launcher)


@pytest.fixture
def lanes(gpu):
    """Force the threads per packet for one test (restored afterwards)."""
    def force(value):
        gpu.engine.lanes = value
    yield force
    gpu.engine.lanes = None


@pytest.fixture(scope="session")
def registry(gpu):
    """A registry whose `gpu` is the CPU build: the real record (CuPy, unavailable here, or the
    real GPU) is taken out first, so the registry self-tests this one like any backend."""
    reg = Registry(load_entry_points=False)
    reg.records.pop("gpu", None)
    record = reg.add(gpu, plugin="tests")
    assert record.available and not record.failed, record.failed
    return reg


@pytest.fixture(scope="session")
def oracle(registry):
    """The other side of the differential tests: aesni where cryptography is installed (not
    always on GPU machines), else the pure-Python reference."""
    for name in ("aesni", "cryptodome", "reference"):
        if name in registry.records and registry.records[name].available:
            return name
    pytest.skip("no software backend to compare with")


@pytest.fixture(scope="session")
def cuda_backend():
    backend = GpuBackend()
    reason = backend.probe()
    if reason is not None:
        pytest.skip(f"no GPU here: {reason}")
    return backend


def _aead(backend, key):
    return backend.aead("aes-gcm", key, tag_bytes=16, nonce_bytes=12)


def _reference_gcm(registry, key):
    for name in ("aesni", "cryptodome", "reference"):
        record = registry.records.get(name)
        if record is not None and record.available:
            return record.backend.aead("aes-gcm", key, tag_bytes=16, nonce_bytes=12)
    raise AssertionError("no software AES-GCM")


# -- the kernel source ------------------------------------------------------------------------
def test_gpu_kernel_compiles_for_sm90():
    if shutil.which("nvcc") is None:
        pytest.skip("nvcc is not installed")
    from ipsec_plugins.gpu.cpu_launcher import build_ptx

    assert [p.name for p in CU_FILES] == [source.KERNEL_FILE]
    ptx = build_ptx().read_text()           # cached per source digest (shared with test_gpu_ct)
    assert ".target sm_90" in ptx
    for entry in ("gcm_batch", "gcm_install", "esp_seal", "esp_open"):
        assert re.search(rf"\.entry {entry}\b", ptx), f"{entry} missing from {source.KERNEL_FILE}"


def _nvrtc():
    """libnvrtc, as CuPy uses it: $IPSEC_NVRTC_LIB, the system's, or a pip `nvidia` package's."""
    import ctypes
    import ctypes.util
    import glob
    import sys

    found = os.environ.get("IPSEC_NVRTC_LIB") or ctypes.util.find_library("nvrtc")
    if not found:
        for base in sys.path:
            hits = sorted(glob.glob(os.path.join(base, "nvidia", "*", "lib", "libnvrtc.so*")))
            if hits:
                found = hits[0]
                break
    if not found:
        return None
    for builtins in glob.glob(os.path.join(os.path.dirname(found), "libnvrtc-builtins.so*")):
        ctypes.CDLL(builtins, mode=ctypes.RTLD_GLOBAL)   # NVRTC opens it by name
    return ctypes.CDLL(found)


@pytest.mark.parametrize("cu", CU_FILES, ids=[f"gpu-nvrtc-{p.name}" for p in CU_FILES])
def test_gpu_kernel_compiles_with_nvrtc_as_cupy_does(cu):
    import ctypes

    lib = _nvrtc()
    if lib is None:
        pytest.skip("libnvrtc is not installed (CuPy brings it on GPU machines)")
    prog = ctypes.c_void_p()
    assert lib.nvrtcCreateProgram(ctypes.byref(prog), cu.read_bytes(), cu.name.encode(), 0, None, None) == 0
    opts = (ctypes.c_char_p * 1)(b"--gpu-architecture=compute_90")
    rc = lib.nvrtcCompileProgram(prog, 1, opts)
    size = ctypes.c_size_t()
    lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    lib.nvrtcGetProgramLog(prog, log)
    assert rc == 0 and not log.value.strip(), log.value.decode(errors="replace")
    lib.nvrtcGetPTXSize(prog, ctypes.byref(size))
    ptx = ctypes.create_string_buffer(size.value)
    lib.nvrtcGetPTX(prog, ptx)
    lib.nvrtcDestroyProgram(ctypes.byref(prog))
    assert b".entry gcm_batch" in ptx.value and b".entry gcm_install" in ptx.value
    from ipsec_plugins.gpu import ct_audit

    findings = ct_audit.audit(ptx.value.decode())       # what CuPy runs is constant-time too
    assert not findings, "\n".join(map(str, findings[:10]))


def test_gpu_kernel_has_no_includes_for_nvrtc():
    """CuPy compiles the file with NVRTC, which has no C library headers."""
    text = source.read(source.KERNEL_FILE)
    assert not re.search(r"^\s*#\s*include", text, re.M)


def test_gpu_host_constants_match_the_kernel(cpu_launcher):
    text = source.read(source.KERNEL_FILE)
    defines = dict(re.findall(r"^#define ((?:GCM|ESP)_\w+) (\S+)$", text, re.M))
    assert int(defines["GCM_MAX_LANES"]) == source.MAX_LANES
    assert int(defines["GCM_MAX_BLOCK_THREADS"]) == source.MAX_BLOCK_THREADS
    assert int(defines["GCM_SKIP"].rstrip("u"), 16) == source.SKIP
    assert int(defines["GCM_VERDICT_OK"]) == source.VERDICT_OK
    assert int(defines["GCM_VERDICT_BAD_TAG"]) == source.VERDICT_BAD_TAG
    assert int(defines["GCM_VERDICT_SKIPPED"]) == source.VERDICT_SKIPPED
    assert int(defines["GCM_VERDICT_BAD_PADDING"]) == source.VERDICT_BAD_PADDING
    assert int(defines["GCM_MAX_GHASH_BLOCKS"]) == source.MAX_GHASH_BLOCKS
    assert int(defines["ESP_SA_PARAM_BYTES"]) == source.SA_PARAM_BYTES
    assert cpu_launcher._lib.ipsec_gpu_host_sa_bytes() == source.SA_BYTES
    assert cpu_launcher._lib.ipsec_gpu_host_param_bytes() == source.SA_PARAM_BYTES
    from ipsec_plugins.gpu import framing

    flags = {k: int(v.rstrip("u")) for k, v in re.findall(r"^#define ESP_F_(\w+) (\S+)$", text, re.M)}
    assert flags == {"TUNNEL": framing.F_TUNNEL, "ESN": framing.F_ESN, "GMAC": framing.F_GMAC,
                     "OUTER_V6": framing.F_OUTER_V6, "DF_SET": framing.F_DF_SET, "DF_CLEAR": framing.F_DF_CLEAR}


def test_gpu_cpu_build_is_cached(cpu_launcher, tmp_path):
    from ipsec_plugins.gpu.cpu_launcher import build_host_library

    first = build_host_library(cache_dir=tmp_path)
    stamp = first.stat().st_mtime_ns
    assert build_host_library(cache_dir=tmp_path) == first and first.stat().st_mtime_ns == stamp


# -- known-answer vectors on the CPU build ---------------------------------------------------
@pytest.mark.parametrize("case", [pytest.param(c, id=f"{c.id}[gpu]") for c in GCM_CASES])
def test_gpu_vector(gpu, case):
    if not selftest.offers(list(gpu.features()), case):
        pytest.skip(f"gpu offers aes-gcm with 128/256-bit keys and 16-byte tags only "
                    f"(this case: {case.key_bits}-bit key, {case.tag_bytes}-byte tag)")
    why = case.run(gpu)
    assert why is None, f"{case.id} ({case.source}) on gpu: {why}"


def test_gpu_vectors_cover_both_key_sizes_and_rejections(gpu):
    ran = [c for c in GCM_CASES if selftest.offers(list(gpu.features()), c)]
    assert {c.key_bits for c in ran} == {128, 256}
    assert any(not c.valid for c in ran)
    assert any(c.id.startswith("mcgrew-gmac-") for c in ran)
    assert {c.tag_bytes for c in ran} == {16}


@pytest.mark.parametrize("width", [1, 2, 4, 8, 16, 32], ids=lambda w: f"gpu-lanes{w}")
def test_gpu_every_reduction_width_matches_software(gpu, registry, lanes, width):
    """Every threads-per-packet width, over payloads of 0..70 bytes and a jumbo one, AADs of
    0..40 bytes: the GHASH split and the shared-memory reduction agree with software GCM."""
    lanes(width)
    rng = random.Random(width)
    for key in (bytes(range(16)), bytes(range(32))):
        aead, soft = _aead(gpu, key), _reference_gcm(registry, key)
        sizes = list(range(0, 71, 7)) + [15, 16, 17, 9000]
        nonces = [rng.randbytes(12) for _ in sizes]
        pts = [rng.randbytes(n) for n in sizes]
        aads = [rng.randbytes(rng.choice((0, 8, 12, 13, 40))) for _ in sizes]
        sealed = aead.encrypt_batch(nonces, pts, aads)
        assert sealed == [soft.encrypt(n, p, a) for n, p, a in zip(nonces, pts, aads)]
        assert aead.decrypt_batch(nonces, sealed, aads) == pts
    assert gpu.engine.launcher.last_launch.lanes == width


def test_gpu_single_calls_and_tampering(gpu):
    aead = _aead(gpu, bytes(32))
    sealed = aead.encrypt(bytes(12), b"payload", b"aad")
    assert len(sealed) == 7 + 16 and aead.decrypt(bytes(12), sealed, b"aad") == b"payload"
    for bad in (sealed[:-1] + bytes([sealed[-1] ^ 1]), bytes([sealed[0] ^ 0x80]) + sealed[1:], sealed[:15]):
        with pytest.raises(AuthenticationError):
            aead.decrypt(bytes(12), bad, b"aad")
    with pytest.raises(AuthenticationError):
        aead.decrypt(bytes(12), sealed, b"aae")


# -- what the backend declares and refuses -----------------------------------------------------
def test_gpu_offers_aes_gcm_16_only(gpu, registry):
    record = registry.records["gpu"]
    assert [str(f) for f in record.features] == ["aes-gcm(128/256)[tag 16]"]
    assert algorithms_of(record) == ["aes128gcm16", "aes256gcm16", "aes128gmac", "aes256gmac"]
    with pytest.raises(BackendError, match="16-byte ICVs only, not 8"):
        gpu.aead("aes-gcm", bytes(16), tag_bytes=8, nonce_bytes=12)
    with pytest.raises(BackendError, match="128- or 256-bit"):
        gpu.aead("aes-gcm", bytes(24), tag_bytes=16, nonce_bytes=12)
    with pytest.raises(NotImplementedError):
        gpu.aead("aes-ccm", bytes(16), tag_bytes=16, nonce_bytes=11)
    with pytest.raises(BackendError, match="does not offer aes-gcm with 128-bit keys and 12-byte tags"):
        registry.select("aes-gcm", 128, backend="gpu", tag_bytes=12)
    assert registry.select("aes-gcm", 128, backend="gpu", tag_bytes=16) is gpu


def test_gpu_sa_naming_gpu_with_a_short_icv_is_refused(registry):
    cfg = _configs("aes128gcm8", backend="gpu")[0]
    with pytest.raises(BackendError, match="backend 'gpu' does not offer aes-gcm .*8-byte tags"):
        SecurityAssociation(cfg, registry=registry, now=0.0)


def test_gpu_selftest_claims_no_short_tags(gpu):
    results = selftest.run_all(gpu)
    assert results and all(r.passed for r in results), [r for r in results if not r.passed][:3]
    assert not any(r.id.endswith(("-tag8", "-tag12")) for r in results)
    assert selftest.quick_check(gpu, next(iter(gpu.features()))) == []


def test_gpu_real_backend_reports_why_it_is_unavailable():
    backend = GpuBackend()
    reason = backend.probe()
    if reason is None:
        pytest.skip("CuPy and a CUDA device are present")
    assert "CuPy" in reason or "CUDA" in reason


# -- numpy staging and results, with the CPU build as the kernel ------------------------------
def test_gpu_staging_layout(cpu_launcher):
    items = [b"a" * 5, b"", b"b" * 33]
    st = staging.stage(cpu_launcher.alloc, slots=[3, 4, 5], nonces=[bytes(12)] * 3, items=items,
                       aads=[b"x" * 8, b"y" * 12, b""], decrypt=False)
    assert st.offsets.tolist() == [0, 21, 37] and st.lengths.tolist() == [5, 0, 33]
    assert bytes(st.data[:st.data_bytes]) == b"a" * 5 + bytes(16) + bytes(16) + b"b" * 33 + bytes(16)
    assert st.aad_offsets.tolist() == [0, 8, 20] and st.aad_lengths.tolist() == [8, 12, 0]
    assert st.slots.tolist() == [3, 4, 5] and st.verdicts.tolist() == [0, 0, 0]
    assert st.ghash_blocks == (1 + 1 + 1) + (1 + 0 + 1) + (0 + 3 + 1)
    opened = staging.stage(cpu_launcher.alloc, slots=0, nonces=[bytes(12)] * 2, items=[b"z" * 20, b"short"],
                           aads=[b"", b""], decrypt=True)
    assert opened.lengths.tolist() == [4, source.SKIP] and opened.offsets.tolist() == [0, 20]


@pytest.mark.parametrize("bad", ["nonce", "count", "slots"], ids=lambda b: f"gpu-staging-{b}")
def test_gpu_staging_refuses_malformed_batches(cpu_launcher, bad):
    nonces, items, aads, slots = [bytes(12)] * 2, [b"x", b"y"], [b"", b""], [0, 0]
    if bad == "nonce":
        nonces = [bytes(12), bytes(11)]
    elif bad == "count":
        aads = [b""]
    else:
        slots = [0]
    with pytest.raises(ValueError):
        staging.stage(cpu_launcher.alloc, slots=slots, nonces=nonces, items=items, aads=aads, decrypt=False)


def test_gpu_results_refuse_a_packet_the_kernel_skipped(cpu_launcher):
    """A launch that misses packets (wrong geometry) must be an error, not a pass or a drop."""
    st = staging.stage(cpu_launcher.alloc, slots=0, nonces=[bytes(12)] * 3, items=[b"c" * 20] * 3,
                       aads=[b""] * 3, decrypt=True)
    st.verdicts[:] = [source.VERDICT_OK, 0, source.VERDICT_BAD_TAG]
    with pytest.raises(RuntimeError, match="packet 1 of 3"):
        staging.opened(st)


def test_gpu_empty_and_short_inputs(gpu):
    aead = _aead(gpu, bytes(16))
    assert aead.encrypt_batch([], [], []) == [] and aead.decrypt_batch([], [], []) == []
    sealed = aead.encrypt_batch([bytes(12)] * 2, [b"", b"x"], [b"", b""])
    opened = aead.decrypt_batch([bytes(12)] * 4, [sealed[0], b"", b"tooshort", sealed[1]], [b""] * 4)
    assert opened == [b"", None, None, b"x"]


def test_gpu_sa_slots_are_reused_and_wiped(gpu):
    engine = gpu.engine
    aead = _aead(gpu, b"\x11" * 16)
    slot = aead.slot
    table = engine.launcher.sa_table()
    assert table[slot * source.SA_BYTES:(slot + 1) * source.SA_BYTES].any()
    del aead
    gc.collect()
    assert slot in engine._released
    other = _aead(gpu, b"\x22" * 32)          # the install reclaims (and wipes) released slots
    assert not engine._released
    if other.slot != slot:
        assert slot in engine._free
        table = engine.launcher.sa_table()
        assert not table[slot * source.SA_BYTES:(slot + 1) * source.SA_BYTES].any()
    reused = _aead(gpu, b"\x33" * 16)
    assert reused.slot != other.slot
    assert other.encrypt(bytes(12), b"", b"") != reused.encrypt(bytes(12), b"", b"")


def test_gpu_mixed_sas_in_one_launch(gpu, registry):
    keys = [bytes([i]) * (16 if i % 2 else 32) for i in range(1, 6)]
    aeads = [_aead(gpu, k) for k in keys]
    softs = [_reference_gcm(registry, k) for k in keys]
    rng = random.Random(7)
    picks = [rng.randrange(len(keys)) for _ in range(60)]
    nonces = [rng.randbytes(12) for _ in picks]
    pts = [rng.randbytes(rng.randrange(0, 200)) for _ in picks]
    aads = [rng.randbytes(8) for _ in picks]
    before = gpu.engine.launcher.launch_count
    sealed = gpu.encrypt_mixed([aeads[i] for i in picks], nonces, pts, aads)
    assert gpu.engine.launcher.launch_count == before + 1
    assert sealed == [softs[i].encrypt(n, p, a) for i, n, p, a in zip(picks, nonces, pts, aads)]
    # a packet opened under another SA's key, and a forged one, fail alone
    who = [aeads[i] for i in picks]
    who[3] = aeads[(picks[3] + 1) % len(keys)]
    sealed[7] = sealed[7][:-1] + bytes([sealed[7][-1] ^ 0x40])
    opened = gpu.decrypt_mixed(who, nonces, sealed, aads)
    assert opened[3] is None and opened[7] is None
    assert [o for i, o in enumerate(opened) if i not in (3, 7)] == [p for i, p in enumerate(pts) if i not in (3, 7)]
    with pytest.raises(ValueError, match="one gpu backend"):
        GpuBackend(launcher=gpu.engine.launcher).encrypt_mixed(
            [aeads[0], _aead(GpuBackend(launcher=gpu.engine.launcher), keys[0])], nonces[:2], pts[:2], aads[:2])


# -- through real SAs: differential, batches, drops --------------------------------------------
V4 = (ipaddress.ip_address("192.0.2.1"), ipaddress.ip_address("192.0.2.2"))
V6 = (ipaddress.ip_address("2001:db8::1"), ipaddress.ip_address("2001:db8::2"))


def _configs(proposal, *, backend, outer=V4, mode="tunnel", encap=None, window=64, keys=None):
    prop = parse_esp(proposal)
    key = keys or os.urandom(prop.enc_key_bytes)
    common = dict(spi=0x6A6A, mode=Mode(mode), proposal=prop, enc_key=key, encap_ports=encap,
                  backend=backend, replay_window=window)
    return (SaConfig(name="o", direction=Direction.OUT, local=outer[0], remote=outer[1], **common),
            SaConfig(name="i", direction=Direction.IN, local=outer[1], remote=outer[0], **common))


def _rebackend(cfg, name):
    return cfg.__class__(**{**{f: getattr(cfg, f) for f in cfg.__dataclass_fields__}, "backend": name})


def _traffic(rng: random.Random, n: int, *, v4_only=False) -> list[bytes]:
    out = []
    for i in range(n):
        body = rng.randbytes(rng.randrange(0, 1400))
        udp = (1000 + i).to_bytes(2, "big") + b"\x00\x35" + (8 + len(body)).to_bytes(2, "big") + b"\0\0"
        if v4_only or rng.random() < 0.75:
            out.append(build_ipv4(src=bytes((198, 51, 100, 1)), dst=bytes((203, 0, 113, 1)), proto=IPPROTO_UDP,
                                  payload_len=8 + len(body), tos=rng.choice((0, 0x10, 0xb8)), ident=i)
                       + udp + body)
        else:
            out.append(build_ipv6(src=bytes(15) + b"\x01", dst=bytes(15) + b"\x02", next_header=IPPROTO_UDP,
                                  payload_len=8 + len(body)) + udp + body)
    return out


DIFF_CASES = [
    ("aes128gcm16", {}),
    ("aes256gcm16", {"encap": (4500, 4500)}),
    ("aes128gcm16-esn", {}),
    ("aes256gcm16", {"outer": V6}),
    ("aes128gcm16", {"mode": "transport"}),
    ("aes256gmac", {}),
]


@pytest.mark.parametrize("proposal,kw", DIFF_CASES,
                         ids=[f"gpu-{p}-{'-'.join(map(str, k.values())) or 'v4'}" for p, k in DIFF_CASES])
def test_gpu_differential_through_sas(registry, oracle, proposal, kw):
    """Random packets: gpu protect_batch == oracle protect (counter modes are deterministic),
    oracle unprotects them, and gpu unprotect_batch opens the oracle's; one launch per batch:
    the ESP framing kernels, or for UDP encapsulation (not framed on the device) the AEAD
    kernel."""
    out_cfg, in_cfg = _configs(proposal, backend="gpu", **kw)
    packets = _traffic(random.Random(proposal), 90, v4_only=kw.get("mode") == "transport")
    ours = SecurityAssociation(out_cfg, registry=registry, now=0.0)
    theirs = SecurityAssociation(_rebackend(out_cfg, oracle), registry=registry, now=0.0)
    theirs.engine.ident = ours.engine.ident
    framed = "encap" not in kw
    assert (ours.engine._framing is ours.engine.aead) is framed
    seal, open_ = ("esp_seal", "esp_open") if framed else ("gcm_batch", "gcm_batch")
    launcher = ours.engine.aead.engine.launcher
    before = dict(launcher.launches)
    wire = ours.protect_batch(packets[:50], now=0.0) + ours.protect_batch(packets[50:], now=0.0)
    assert _launched(launcher, before) == {seal: 2}
    assert wire == [theirs.protect(p, now=0.0) for p in packets]
    assert ours.state() == theirs.state()
    assert SecurityAssociation(_rebackend(in_cfg, oracle), registry=registry, now=0.0).unprotect_batch(wire, now=0.0) == packets
    inbound = SecurityAssociation(in_cfg, registry=registry, now=0.0)
    before = dict(launcher.launches)
    assert inbound.unprotect_batch(wire, now=0.0) == packets
    assert _launched(launcher, before) == {open_: 1}


def _launched(launcher, before: dict) -> dict:
    """The kernel launches of the CPU build since `before`, per kernel."""
    return {k: v - before.get(k, 0) for k, v in launcher.launches.items() if v != before.get(k, 0)}


def _forge(packet: bytes, at: int) -> bytes:
    b = bytearray(packet)
    b[at] ^= 0x01
    return bytes(b)


def _truncate(packet: bytes, keep: int) -> bytes:
    """The first `keep` bytes of an IPv4 packet, with its header made consistent again."""
    head = bytearray(packet[:20])
    head[2:4] = keep.to_bytes(2, "big")
    fix_ipv4_header(head)
    return bytes(head) + packet[20:keep]


def test_gpu_drops_inside_a_batch_per_packet(registry, oracle):
    """Forged tags, forged ciphertext, truncated packets and replays in one batch are dropped
    with their reason; every other packet goes through; verdicts, replay state and counters are
    what one-by-one processing on the oracle gives."""
    out_cfg, in_cfg = _configs("aes128gcm16", backend="gpu", window=64)
    sender = SecurityAssociation(_rebackend(out_cfg, oracle), registry=registry, now=0.0)
    rng = random.Random(42)
    wire = [sender.protect(p, now=0.0) for p in _traffic(rng, 120)]
    stream, expect = [], {}
    for i, w in enumerate(wire):
        stream.append(w)
        r = rng.random()
        if r < 0.08:
            stream.append(w)                                          # replay
        elif r < 0.16:
            stream.insert(len(stream) - 1, _forge(w, len(w) - 1))     # forged tag, first
        elif r < 0.22:
            stream.insert(len(stream) - 1, _forge(w, 60))             # forged ciphertext, first
        elif r < 0.28:
            stream.append(_truncate(w, rng.randrange(20, 60)))        # truncated ESP
    oracle_in = SecurityAssociation(_rebackend(in_cfg, oracle), registry=registry, now=0.0)
    singles = []
    for p in stream:
        try:
            singles.append(oracle_in.unprotect(p, now=0.0))
        except PacketDropped as d:
            singles.append(d.reason)
    ours = SecurityAssociation(in_cfg, registry=registry, now=0.0)
    launcher = ours.engine.aead.engine.launcher
    before = dict(launcher.launches)
    batched = [v.reason if isinstance(v, PacketDropped) else v for v in ours.unprotect_batch(stream, now=0.0)]
    assert _launched(launcher, before) == {"esp_open": 1}
    assert batched == singles
    assert ours.state() == oracle_in.state()
    reasons = {v for v in batched if isinstance(v, DropReason)}
    assert {DropReason.REPLAY, DropReason.AUTH_FAILED, DropReason.TRUNCATED} <= reasons
    assert sum(isinstance(v, bytes) for v in batched) == len(wire)


def test_gpu_perf_command_runs_its_own_benchmark(registry, monkeypatch):
    """`ipsec perf --backend gpu` (here on the CPU build): kernel-only and end-to-end figures
    per size and batch, and latency per batch, as JSON."""
    from typer.testing import CliRunner

    from ipsec_core.cli import app
    from ipsec_core.crypto import registry as registry_module

    monkeypatch.setattr(registry_module, "_REGISTRY", registry)
    result = CliRunner().invoke(app, ["perf", "-b", "gpu", "-p", "aes128gcm16,aes256gcm16", "-s", "64,1400",
                                      "--batches", "4,16", "--repeats", "1", "--json", "--no-tune-allocator"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert len(rows) == 2 * 2 * 2 * 2
    for r in rows:
        assert {"kernel_gbps", "device_e2e_gbps", "e2e_gbps", "batch_latency_ms", "lanes"} <= set(r)
        assert r["backend"] == "gpu" and r["launcher"] == "cpu-build" and r["kernel_ms"] > 0
        assert abs(r["e2e_gbps"] - r["batch"] * r["size"] * 8 / (r["batch_latency_ms"] / 1e3) / 1e9) < 1e-3
    assert {(r["proposal"], r["size"], r["batch"], r["direction"]) for r in rows} == {
        (p, s, b, d) for p in ("aes128gcm16", "aes256gcm16") for s in (64, 1400) for b in (4, 16)
        for d in ("protect", "unprotect")}
    refused = CliRunner().invoke(app, ["perf", "-b", "gpu", "-p", "aes128gcm8", "--batches", "4"])
    assert refused.exit_code == 1 and "measures aes128gcm16 and aes256gcm16" in refused.output


def test_gpu_launch_plan():
    plan = source.plan
    h100 = 132 * 2048                          # resident threads of an H100: the default target
    assert plan(65536, 65536 * 90, target_threads=h100, max_block=256).lanes == 8
    assert plan(1024, 1024 * 565, target_threads=h100, max_block=256).lanes == 32
    assert plan(65536, 65536 * 6, target_threads=h100, max_block=256).lanes == 8
    assert plan(65536, 65536 * 3, target_threads=h100, max_block=256).lanes == 4
    assert plan(1, 3, target_threads=h100, max_block=256) == source.Launch(lanes_log2=2, block=4, grid=1)
    for n in (1, 3, 64, 1000):
        for lanes in (1, 2, 4, 8, 16, 32):
            launch = plan(n, 10 * n, target_threads=64, max_block=64, lanes=lanes)
            assert launch.block % launch.lanes == 0 and launch.block <= 64
            assert launch.grid * launch.block >= n * lanes > (launch.grid - 1) * launch.block
    with pytest.raises(ValueError):
        plan(4, 4, target_threads=64, max_block=16, lanes=32)


# -- on a real GPU, when there is one ----------------------------------------------------------
def test_gpu_cuda_passes_every_aes_gcm_vector(cuda_backend):
    failures = [f"{c.id}: {why}" for c in GCM_CASES if selftest.offers(list(cuda_backend.features()), c)
                and (why := c.run(cuda_backend)) is not None]
    assert not failures, failures[:5]


def test_gpu_cuda_matches_the_cpu_build(cuda_backend, gpu):
    """Big batches of mixed sizes, chunked over both streams: byte-identical to the CPU build."""
    rng = random.Random(11)
    key = rng.randbytes(32)
    theirs, ours = _aead(cuda_backend, key), _aead(gpu, key)
    cuda_backend.engine.launcher.chunk_bytes = 1 << 16          # force many chunks
    sizes = [rng.choice((0, 1, 15, 16, 17, 64, 578, 1402, 9002)) for _ in range(3000)]
    nonces = [rng.randbytes(12) for _ in sizes]
    pts = [rng.randbytes(n) for n in sizes]
    aads = [rng.randbytes(rng.choice((8, 12))) for _ in sizes]
    sealed = theirs.encrypt_batch(nonces, pts, aads)
    assert sealed[:300] == ours.encrypt_batch(nonces[:300], pts[:300], aads[:300])
    sealed[5] = sealed[5][:-1] + bytes([sealed[5][-1] ^ 1])
    opened = theirs.decrypt_batch(nonces, sealed, aads)
    assert opened[5] is None and opened[:5] == pts[:5] and opened[6:] == pts[6:]


# -- the CuPy launcher's host logic, on a stand-in for CuPy ------------------------------------
class _FakeCupy:
    """Just enough of CuPy for `CupyLauncher`: 'device' arrays are host numpy arrays, copies are
    memmoves, and a kernel launch calls the CPU build with the same pointers.  It checks the
    launcher's own logic (chunks, pointer offsets, streams' order of work, verdicts) without a
    GPU; what it cannot check (real concurrency of the two streams) the GPU tests do."""

    uint8 = np.uint8
    uint32 = np.uint32

    def __init__(self, lib):
        import ctypes
        import types

        fake = self

        class Array:
            def __init__(self, arr):
                self.a = arr
                self.data = types.SimpleNamespace(ptr=arr.ctypes.data)
                self.nbytes, self.size = arr.nbytes, arr.size

            def __getitem__(self, key):
                return Array(self.a[key])

            def __setitem__(self, key, value):
                self.a[key] = value.a if isinstance(value, Array) else value

            def fill(self, value):
                self.a.fill(value)

        class Stream:
            ptr = 0

            def __init__(self, non_blocking=False):
                fake.streams.append(self)

            def __enter__(self):
                fake.current = self
                return self

            def __exit__(self, *exc):
                fake.current = None
                return False

            def synchronize(self):
                pass

            def wait_event(self, event):
                pass

        class Event:
            def __init__(self, disable_timing=False):
                pass

            def record(self, stream=None):
                pass

            def synchronize(self):
                pass

        def pointer(v):
            return v.data.ptr if isinstance(v, Array) else int(v)

        entry = {"gcm_batch": lib.ipsec_gpu_host_batch, "gcm_install": lib.ipsec_gpu_host_install,
                 "esp_seal": lib.ipsec_gpu_host_seal, "esp_open": lib.ipsec_gpu_host_open}

        class Kernel:
            def __init__(self, name):
                self.name = name

            def __call__(self, grid, block, args):
                fake.launches.append((self.name, grid, block))
                fake.launch_streams.append(fake.current)
                rc = entry[self.name](grid[0], block[0], *(pointer(a) for a in args))
                assert rc == 0

        class RawModule:
            def __init__(self, code, options=()):
                assert "gcm_batch" in code and "esp_seal" in code

            def get_function(self, name):
                return Kernel(name)

        class Device:
            def __init__(self, index=0):
                pass

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return False

            def synchronize(self):
                pass

        def memcpy(dst, src, n, kind, stream):
            ctypes.memmove(dst, src, n)

        def memset(ptr, value, n, stream):
            ctypes.memset(ptr, value, n)

        runtime = types.SimpleNamespace(
            getDeviceProperties=lambda i: {"name": b"stand-in", "multiProcessorCount": 1,
                                           "maxThreadsPerMultiProcessor": 64},
            memcpyAsync=memcpy, memsetAsync=memset, memcpyHostToDevice=1, memcpyDeviceToHost=2,
            getDeviceCount=lambda: 1, driverGetVersion=lambda: 13000, runtimeGetVersion=lambda: 13010)
        self.cuda = types.SimpleNamespace(Device=Device, Stream=Stream, Event=Event, runtime=runtime,
                                          alloc_pinned_memory=lambda n: bytearray(n),
                                          get_elapsed_time=lambda a, b: 1.0)
        self.RawModule = RawModule
        self.launches = []
        self.launch_streams = []
        self.streams = []
        self.current = None
        self._Array = Array

    def zeros(self, n, dtype=np.uint8):
        raw = np.zeros(n * np.dtype(dtype).itemsize + 16, np.uint8)     # 16-byte aligned, as CUDA's
        skip = -raw.ctypes.data % 16
        return self._Array(raw[skip:skip + n * np.dtype(dtype).itemsize].view(dtype))

    def empty(self, n, dtype=np.uint8):
        return self._Array(np.empty(n, dtype))

    def asarray(self, a):
        return self._Array(np.array(a))


def test_gpu_cupy_launcher_chunks_and_streams_on_a_stand_in(cpu_launcher, registry, monkeypatch):
    import sys

    from ipsec_plugins.gpu.cupy_launcher import CupyLauncher

    fake = _FakeCupy(cpu_launcher._lib)
    monkeypatch.setitem(sys.modules, "cupy", fake)
    launcher = CupyLauncher(chunk_bytes=4096, max_block=64)
    backend = GpuBackend(launcher=launcher)
    rng = random.Random(5)
    key = rng.randbytes(16)
    aead, soft = _aead(backend, key), _reference_gcm(registry, key)
    sizes = [rng.choice((0, 5, 16, 100, 1402, 3000)) for _ in range(40)]
    nonces = [rng.randbytes(12) for _ in sizes]
    pts = [rng.randbytes(n) for n in sizes]
    aads = [rng.randbytes(8) for _ in sizes]
    fake.launches.clear()
    sealed = aead.encrypt_batch(nonces, pts, aads)
    chunks = [g for name, g, _ in fake.launches if name == "gcm_batch"]
    assert len(chunks) > 3                                  # cut into several chunks of whole packets
    assert sealed == [soft.encrypt(n, p, a) for n, p, a in zip(nonces, pts, aads)]
    sealed[17] = sealed[17][:-1] + bytes([sealed[17][-1] ^ 1])
    opened = aead.decrypt_batch(nonces, sealed, aads)
    assert opened[17] is None and [o for i, o in enumerate(opened) if i != 17] == [
        p for i, p in enumerate(pts) if i != 17]
    st = staging.stage(launcher.alloc, slots=aead.slot, nonces=nonces, items=pts, aads=aads, decrypt=False)
    assert launcher.time_kernel(st, repeats=2) == pytest.approx(1.0 / 1000 / 2)

    # whole ESP packets (framing) through the launcher: chunks of whole packets spread over the
    # streams (at least three), byte for byte what one-by-one processing makes
    from ipsec_plugins.gpu import framing

    assert len(launcher.streams) >= 3
    reg = Registry(load_entry_points=False)
    reg.records.pop("gpu", None)
    reg.add(backend, plugin="tests")
    oracle = next(n for n in ("aesni", "cryptodome", "reference") if n in reg.records and reg.records[n].available)
    out_cfg, in_cfg = _configs("aes256gcm16", backend="gpu")
    ours = SecurityAssociation(out_cfg, registry=reg, now=0.0)
    theirs = SecurityAssociation(_rebackend(out_cfg, oracle), registry=reg, now=0.0)
    theirs.engine.ident = ours.engine.ident
    packets = _traffic(rng, 30)
    fake.launches.clear()
    fake.launch_streams.clear()
    wire = framing.protect_batch(ours, packets, now=0.0)
    assert [name for name, _, _ in fake.launches] == ["esp_seal"] * len(fake.launches)
    assert len(fake.launches) > 3 and len(set(map(id, fake.launch_streams))) >= 3
    assert wire == [theirs.protect(p, now=0.0) for p in packets]
    inbound = SecurityAssociation(in_cfg, registry=reg, now=0.0)
    fake.launches.clear()
    assert framing.unprotect_batch(inbound, wire, now=0.0) == packets
    assert {name for name, _, _ in fake.launches} == {"esp_open"} and len(fake.launches) > 3


def test_gpu_device_check_runs_on_the_cupy_stand_in(cpu_launcher, monkeypatch, tmp_path):
    """perf/gpu_check.sh's driver (`ipsec_plugins.gpu.check`) through the CuPy launcher on the
    stand-in: every step runs, every figure lands in the JSON, the summary names each target."""
    import sys

    from ipsec_plugins.gpu import check

    fake = _FakeCupy(cpu_launcher._lib)
    monkeypatch.setitem(sys.modules, "cupy", fake)
    rc = check.main([str(tmp_path), "--batch", "48", "--jumbo-batch", "2", "--repeats", "1"])
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["errors"] == {} and rc == 0, report["errors"]
    assert report["summary"]["correct_every_packet"] is True
    assert set(report["summary"]["targets"]) == set(check.TARGETS)
    figures = report["figures"]
    assert {f"correct_9000_lanes{w}" for w in (1, 2, 4, 8, 16, 32)} <= set(figures)
    assert {"kernel_gcm_1400_lanes1_minblocks2", "kernel_esp_seal_1400_lanes4", "e2e_unprotect_batch_1400_gbps",
            "aesni_protect_batch_1400_gbps"} <= set(figures)
    assert {name for name, _, _ in fake.launches} >= {"esp_seal", "esp_open", "gcm_batch", "gcm_install"}


def test_gpu_backends_command_shows_the_cuda_versions(cpu_launcher, monkeypatch):
    """`ipsec backends` with a device (the CuPy stand-in): the gpu backend is available and
    shows the device and the CUDA driver and runtime versions."""
    import sys

    from typer.testing import CliRunner

    from ipsec_core.cli import app
    from ipsec_core.crypto import registry as registry_module

    monkeypatch.setitem(sys.modules, "cupy", _FakeCupy(cpu_launcher._lib))
    reg = Registry(load_entry_points=False)
    assert reg.records["gpu"].available and not reg.records["gpu"].failed
    monkeypatch.setattr(registry_module, "_REGISTRY", reg)
    result = CliRunner().invoke(app, ["backends", "--json"])
    assert result.exit_code == 0, result.output
    gpu = next(r for r in json.loads(result.stdout) if r["name"] == "gpu")
    assert gpu["details"]["cuda_driver"] == "13.0" and gpu["details"]["cuda_runtime"] == "13.1"
    assert gpu["details"]["device"] == "stand-in"
    table = CliRunner().invoke(app, ["backends"])
    assert table.exit_code == 0 and "cuda_driver 13.0" in table.output

"""The CPU build of the GPU kernels: `kernels/aes_gcm.cu` itself, compiled as C++20 with
`kernels/host_shim.h` (threads of a block as host threads, `__syncthreads` as a barrier) into a
shared library loaded with ctypes.

Owns: building that library (g++, cached by a digest of the sources, compiler and flags) and a
launcher with the same interface as the CuPy one (`alloc`, `install`, `clear`, `run`), so the
`gpu` backend's host code (staging, SA slots, results) runs unchanged on a machine without a GPU.
Must not: be what the registry's `gpu` backend uses.  It exists so tests check the very kernel
source CuPy loads, against the vectors; a `GpuBackend` gets it only when constructed with it
(`GpuBackend(launcher=CpuLauncher())`).  It is slow: one host thread per CUDA thread.
"""
from __future__ import annotations

import collections
import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from ipsec_plugins.gpu import source
from ipsec_plugins.gpu.staging import Staged

#: -O1: the tests build this on shared CI machines; the CPU build's speed says nothing about a GPU's.
CXX_FLAGS = ("-std=c++20", "-O1", "-shared", "-fPIC", "-pthread")
LIBRARY_STEM = "libipsec_gpu_host"
#: Where built libraries are kept; default $XDG_CACHE_HOME (or ~/.cache)/ipsec-suite/gpu-host.
CACHE_ENV = "IPSEC_GPU_HOST_CACHE"


class BuildError(RuntimeError):
    """The CPU build of the kernels could not be made (no C++20 compiler, or it failed)."""


def _cache_dir() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ipsec-suite" / "gpu-host"


def build_host_library(*, cache_dir: str | os.PathLike | None = None, cxx: str | None = None) -> Path:
    """Compile the kernels' CPU build once per source digest; return the library's path.

    Concurrent builds (several test processes) are safe: each compiles in its own temporary
    folder and renames the result into place.
    """
    compiler = cxx or os.environ.get("CXX") or "g++"
    if shutil.which(compiler) is None:
        raise BuildError(f"the CPU build of the GPU kernels needs a C++20 compiler: {compiler!r} not found")
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=False).stdout
    files = (source.KERNEL_FILE, *source.HOST_FILES)
    texts = {name: source.read(name) for name in files}
    digest = hashlib.sha256()
    for part in (version, " ".join(CXX_FLAGS), *(f"{n}\0{t}" for n, t in texts.items())):
        digest.update(part.encode() + b"\0")
    cache = Path(cache_dir) if cache_dir is not None else _cache_dir()
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError:
        cache = Path(tempfile.mkdtemp(prefix="ipsec-gpu-host-"))
    target = cache / f"{LIBRARY_STEM}-{digest.hexdigest()[:20]}.so"
    if target.exists():
        return target
    with tempfile.TemporaryDirectory(dir=cache, prefix="build-") as work:
        for name, text in texts.items():
            Path(work, name).write_text(text, encoding="utf-8")
        out = Path(work, target.name)
        cmd = [compiler, *CXX_FLAGS, "-o", str(out), str(Path(work, "host_launch.cpp"))]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise BuildError(f"{' '.join(cmd)} failed:\n{done.stderr[-4000:]}")
        os.replace(out, target)
    return target


def build_ptx(*, arch: str = "sm_90", defines: tuple[str, ...] = (), cache_dir: str | os.PathLike | None = None,
              nvcc: str | None = None) -> Path:
    """`nvcc -ptx` of the kernel file, once per source digest, nvcc version and options (the
    constant-time check and the compile test share it); BuildError without nvcc."""
    compiler = nvcc or shutil.which("nvcc")
    if compiler is None:
        raise BuildError("nvcc is not installed")
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=False).stdout
    text = source.read(source.KERNEL_FILE)
    options = ["-ptx", f"-arch={arch}", *(f"-D{d}" for d in defines)]
    digest = hashlib.sha256("\0".join((version, *options, text)).encode()).hexdigest()[:20]
    cache = Path(cache_dir) if cache_dir is not None else _cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / f"aes_gcm-{arch}-{digest}.ptx"
    if target.exists():
        return target
    with tempfile.TemporaryDirectory(dir=cache, prefix="ptx-") as work:
        cu = Path(work, source.KERNEL_FILE)
        cu.write_text(text, encoding="utf-8")
        out = Path(work, target.name)
        done = subprocess.run([compiler, *options, str(cu), "-o", str(out)], capture_output=True, text=True,
                              check=False, timeout=600)
        if done.returncode != 0:
            raise BuildError(f"nvcc {' '.join(options)} failed:\n{done.stderr[-4000:]}")
        os.replace(out, target)
    return target


_P = ctypes.c_void_p
_U = ctypes.c_uint
_I = ctypes.c_int


def _ptr(array: np.ndarray) -> int:
    return array.ctypes.data


def _aligned(nbytes: int, align: int = 16) -> np.ndarray:
    """Zeroed bytes starting at a multiple of `align` (the kernels' 128-bit loads)."""
    raw = np.zeros(nbytes + align, dtype=np.uint8)
    skip = -raw.ctypes.data % align
    return raw[skip:skip + nbytes]


class CpuLauncher:
    """Runs the kernels on the CPU, one host thread per CUDA thread (tests, small batches).

    `target_threads` and `max_block` keep the thread count of a launch small; a test that wants a
    given reduction width passes `lanes` to `run` (or sets `GpuEngine.lanes`).
    """

    name = "cpu-build"

    def __init__(self, *, library: str | os.PathLike | None = None, target_threads: int = 64,
                 max_block: int = 64):
        path = Path(library) if library is not None else build_host_library()
        self.library_path = path
        lib = ctypes.CDLL(str(path))
        lib.ipsec_gpu_host_sa_bytes.restype = _I
        lib.ipsec_gpu_host_param_bytes.restype = _I
        lib.ipsec_gpu_host_install.restype = _I
        lib.ipsec_gpu_host_install.argtypes = [_U, _U, _P, _P, _P, _P, _P, _I]
        lib.ipsec_gpu_host_batch.restype = _I
        lib.ipsec_gpu_host_batch.argtypes = [_U, _U] + [_P] * 11 + [_I, _I, _I]
        lib.ipsec_gpu_host_seal.restype = _I
        lib.ipsec_gpu_host_seal.argtypes = [_U, _U] + [_P] * 13 + [_I, _I]
        lib.ipsec_gpu_host_open.restype = _I
        lib.ipsec_gpu_host_open.argtypes = [_U, _U] + [_P] * 13 + [_I, _I]
        if lib.ipsec_gpu_host_sa_bytes() != source.SA_BYTES or \
                lib.ipsec_gpu_host_param_bytes() != source.SA_PARAM_BYTES:
            raise BuildError(f"kernel SA slot is {lib.ipsec_gpu_host_sa_bytes()} bytes, "
                             f"the host expects {source.SA_BYTES}")
        self._lib = lib
        self.target_threads = target_threads
        self.max_block = max_block
        self._slots = 0
        self._grow(4)
        self._buffers: dict[str, np.ndarray] = {}
        self.last_launch: source.Launch | None = None   # for tests: the geometry of the last run
        self.launch_count = 0
        self.launches: collections.Counter = collections.Counter()   # per kernel name

    def _grow(self, slots: int) -> None:
        """SA tables for `slots` slots, keeping what is installed (key table 16-byte aligned)."""
        keys = _aligned(slots * source.SA_BYTES)
        nr = np.zeros(slots, dtype=np.uint32)
        params = _aligned(slots * source.SA_PARAM_BYTES)
        if self._slots:
            keys[:self._table.size] = self._table
            nr[:self._nr.size] = self._nr
            params[:self._params.size] = self._params
            self._table[:] = 0
        self._table, self._nr, self._params, self._slots = keys, nr, params, slots

    # -- the launcher interface ------------------------------------------------------------
    def alloc(self, name: str, count: int, dtype) -> np.ndarray:
        dtype = np.dtype(dtype)
        need = max(count, 1) * dtype.itemsize
        buf = self._buffers.get(name)
        if buf is None or buf.nbytes < need:
            buf = _aligned(max(need, 2 * (buf.nbytes if buf is not None else 0)))
            self._buffers[name] = buf
        return buf[:count * dtype.itemsize].view(dtype)

    def install(self, slot: int, key: bytes) -> None:
        if slot >= self._slots:
            self._grow(max(slot + 1, 2 * self._slots))
        keys = np.zeros(source.KEY_SLOT_BYTES, dtype=np.uint8)
        keys[:len(key)] = np.frombuffer(key, dtype=np.uint8)
        key_bytes = np.array([len(key)], dtype=np.uint32)
        slots = np.array([slot], dtype=np.uint32)
        rc = self._lib.ipsec_gpu_host_install(1, 1, _ptr(keys), _ptr(key_bytes), _ptr(slots),
                                              _ptr(self._table), _ptr(self._nr), 1)
        keys[:] = 0
        if rc != 0:
            raise RuntimeError(f"gcm_install failed on the CPU build (code {rc})")

    def set_params(self, slot: int, params: bytes) -> None:
        """The public ESP parameters of the SA in `slot` (see framing.sa_params)."""
        if slot >= self._slots:
            self._grow(max(slot + 1, 2 * self._slots))
        self._params[slot * source.SA_PARAM_BYTES:(slot + 1) * source.SA_PARAM_BYTES] = \
            np.frombuffer(params, dtype=np.uint8)

    def clear(self, slot: int) -> None:
        self._table[slot * source.SA_BYTES:(slot + 1) * source.SA_BYTES] = 0
        self._params[slot * source.SA_PARAM_BYTES:(slot + 1) * source.SA_PARAM_BYTES] = 0
        self._nr[slot] = 0

    def _plan(self, n: int, blocks: int, lanes: int | None) -> source.Launch:
        return source.plan(n, blocks, target_threads=self.target_threads, max_block=self.max_block,
                           lanes=lanes)

    def _done(self, rc: int, what: str, launch: source.Launch) -> source.Launch:
        if rc != 0:
            raise RuntimeError(f"{what} failed on the CPU build (code {rc}, launch {launch})")
        self.last_launch = launch
        self.launch_count += 1
        self.launches[what] += 1
        return launch

    def run(self, st: Staged, *, lanes: int | None = None) -> source.Launch:
        launch = self._plan(st.n, st.ghash_blocks, lanes)
        rc = self._lib.ipsec_gpu_host_batch(
            launch.grid, launch.block, _ptr(st.data), _ptr(st.offsets), _ptr(st.lengths),
            _ptr(st.nonces), _ptr(st.aad), _ptr(st.aad_offsets), _ptr(st.aad_lengths),
            _ptr(st.slots), _ptr(self._table), _ptr(self._nr), _ptr(st.verdicts), st.n,
            launch.lanes_log2, int(st.decrypt))
        return self._done(rc, "gcm_batch", launch)

    def run_seal(self, fs, *, lanes: int | None = None) -> source.Launch:
        """esp_seal over a staged outbound batch (framing.SealStaged), in place in fs.out."""
        launch = self._plan(fs.n, fs.ghash_blocks, lanes)
        rc = self._lib.ipsec_gpu_host_seal(
            launch.grid, launch.block, _ptr(fs.inp), _ptr(fs.in_off), _ptr(fs.hdr_len),
            _ptr(fs.pay_len), _ptr(fs.out), _ptr(fs.out_off), _ptr(fs.seqs), _ptr(fs.idents),
            _ptr(fs.slots), _ptr(self._params), _ptr(self._table), _ptr(self._nr),
            _ptr(fs.verdicts), fs.n, launch.lanes_log2)
        return self._done(rc, "esp_seal", launch)

    def run_open(self, fo, *, lanes: int | None = None) -> source.Launch:
        """esp_open over a staged inbound batch (framing.OpenStaged): bodies into fo.out."""
        launch = self._plan(fo.n, fo.ghash_blocks, lanes)
        rc = self._lib.ipsec_gpu_host_open(
            launch.grid, launch.block, _ptr(fo.inp), _ptr(fo.in_off), _ptr(fo.esp_at),
            _ptr(fo.esp_len), _ptr(fo.out), _ptr(fo.out_off), _ptr(fo.seqs), _ptr(fo.slots), _ptr(self._params),
            _ptr(self._table), _ptr(self._nr), _ptr(fo.verdicts), _ptr(fo.trailers), fo.n,
            launch.lanes_log2)
        return self._done(rc, "esp_open", launch)

    def sa_table(self) -> np.ndarray:
        """The host copy of the SA table (tests look at a slot after `clear`)."""
        return self._table

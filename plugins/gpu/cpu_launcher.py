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

CXX_FLAGS = ("-std=c++20", "-O2", "-shared", "-fPIC", "-pthread")
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


_P = ctypes.c_void_p
_U = ctypes.c_uint
_I = ctypes.c_int


def _ptr(array: np.ndarray) -> int:
    return array.ctypes.data


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
        lib.ipsec_gpu_host_install.restype = _I
        lib.ipsec_gpu_host_install.argtypes = [_U, _U, _P, _P, _P, _P, _I]
        lib.ipsec_gpu_host_batch.restype = _I
        lib.ipsec_gpu_host_batch.argtypes = [_U, _U] + [_P] * 10 + [_I, _I, _I]
        if lib.ipsec_gpu_host_sa_bytes() != source.SA_BYTES:
            raise BuildError(f"kernel SA slot is {lib.ipsec_gpu_host_sa_bytes()} bytes, "
                             f"the host expects {source.SA_BYTES}")
        self._lib = lib
        self.target_threads = target_threads
        self.max_block = max_block
        self._table = np.zeros(16 * source.SA_BYTES, dtype=np.uint8)
        self._buffers: dict[str, np.ndarray] = {}
        self.last_launch: source.Launch | None = None   # for tests: the geometry of the last run
        self.launch_count = 0

    # -- the launcher interface ------------------------------------------------------------
    def alloc(self, name: str, count: int, dtype) -> np.ndarray:
        dtype = np.dtype(dtype)
        need = max(count, 1) * dtype.itemsize
        buf = self._buffers.get(name)
        if buf is None or buf.nbytes < need:
            buf = np.empty(max(need, 2 * (buf.nbytes if buf is not None else 0)), dtype=np.uint8)
            self._buffers[name] = buf
        return buf[:count * dtype.itemsize].view(dtype)

    def install(self, slot: int, key: bytes) -> None:
        end = (slot + 1) * source.SA_BYTES
        if end > self._table.size:
            grown = np.zeros(max(end, 2 * self._table.size), dtype=np.uint8)
            grown[:self._table.size] = self._table
            self._table = grown
        keys = np.zeros(source.KEY_SLOT_BYTES, dtype=np.uint8)
        keys[:len(key)] = np.frombuffer(key, dtype=np.uint8)
        key_bytes = np.array([len(key)], dtype=np.uint32)
        slots = np.array([slot], dtype=np.uint32)
        rc = self._lib.ipsec_gpu_host_install(1, 1, _ptr(keys), _ptr(key_bytes), _ptr(slots),
                                              _ptr(self._table), 1)
        keys[:] = 0
        if rc != 0:
            raise RuntimeError(f"gcm_install failed on the CPU build (code {rc})")

    def clear(self, slot: int) -> None:
        self._table[slot * source.SA_BYTES:(slot + 1) * source.SA_BYTES] = 0

    def run(self, st: Staged, *, lanes: int | None = None) -> source.Launch:
        launch = source.plan(st.n, st.ghash_blocks, target_threads=self.target_threads,
                             max_block=self.max_block, lanes=lanes)
        rc = self._lib.ipsec_gpu_host_batch(
            launch.grid, launch.block, _ptr(st.data), _ptr(st.offsets), _ptr(st.lengths),
            _ptr(st.nonces), _ptr(st.aad), _ptr(st.aad_offsets), _ptr(st.aad_lengths),
            _ptr(st.slots), _ptr(self._table), _ptr(st.verdicts), st.n, launch.lanes_log2,
            int(st.decrypt))
        if rc != 0:
            raise RuntimeError(f"gcm_batch failed on the CPU build (code {rc}, launch {launch})")
        self.last_launch = launch
        self.launch_count += 1
        return launch

    def sa_table(self) -> np.ndarray:
        """The host copy of the SA table (tests look at a slot after `clear`)."""
        return self._table

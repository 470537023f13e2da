"""The CuPy launcher of the `gpu` backend: kernels/aes_gcm.cu compiled by NVRTC (`cupy.RawModule`),
the SA table in device memory, pinned host buffers, and chunked, double-buffered transfers.

Owns: everything that touches CUDA: module compilation, device and pinned buffers (grown, then
reused from batch to batch), the two streams, and the kernel-only timing used by `bench`.
Must not: be imported where CuPy may be missing: only `GpuBackend` (after its probe succeeded)
and `bench` import it.

How a batch moves: the per-packet tables (offsets, lengths, nonces, AADs, SA slots) go up first
on stream 0; the payload buffer is cut into chunks of whole packets (about `chunk_bytes` each),
and chunk c goes up, is computed and comes back on stream c % 2, so the copies of one chunk
overlap the kernel of the other.  Offsets stay absolute: the device buffer mirrors the host one.
"""
from __future__ import annotations

import numpy as np

from ipsec_plugins.gpu import source
from ipsec_plugins.gpu.staging import Staged

#: Fields of `Staged` copied to the device before the payload chunks, in this order.
_TABLES = ("offsets", "lengths", "nonces", "aad", "aad_offsets", "aad_lengths", "slots")


class CupyLauncher:
    name = "cupy"

    def __init__(self, *, device: int = 0, chunk_bytes: int = 32 << 20, max_block: int = 256,
                 target_threads: int | None = None):
        import cupy as cp

        self.cp = cp
        self.device = cp.cuda.Device(device)
        with self.device:
            props = cp.cuda.runtime.getDeviceProperties(device)
            self.device_name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
            self.target_threads = target_threads or (props["multiProcessorCount"]
                                                     * props["maxThreadsPerMultiProcessor"])
            self.module = cp.RawModule(code=source.read(source.KERNEL_FILE))
            self._k_batch = self.module.get_function("gcm_batch")
            self._k_install = self.module.get_function("gcm_install")
            self.streams = (cp.cuda.Stream(non_blocking=True), cp.cuda.Stream(non_blocking=True))
            self._table = cp.zeros(16 * source.SA_BYTES, dtype=cp.uint8)
        self.chunk_bytes = chunk_bytes
        self.max_block = max_block
        self._pinned: dict[str, tuple[object, np.ndarray]] = {}
        self._dev: dict[str, object] = {}

    # -- buffers -----------------------------------------------------------------------------
    def alloc(self, name: str, count: int, dtype) -> np.ndarray:
        """A pinned host array (so the copies are asynchronous), reused between batches."""
        dtype = np.dtype(dtype)
        need = max(count, 1) * dtype.itemsize
        held = self._pinned.get(name)
        if held is None or held[1].nbytes < need:
            size = max(need, 2 * held[1].nbytes if held is not None else 0)
            mem = self.cp.cuda.alloc_pinned_memory(size)
            held = (mem, np.ndarray((size,), dtype=np.uint8, buffer=mem))   # as cupyx.empty_pinned
            self._pinned[name] = held
        return held[1][:count * dtype.itemsize].view(dtype)

    def _device_buffer(self, name: str, nbytes: int):
        buf = self._dev.get(name)
        if buf is None or buf.nbytes < nbytes:
            buf = self.cp.empty(max(nbytes, 1, 2 * (buf.nbytes if buf is not None else 0)), dtype=self.cp.uint8)
            self._dev[name] = buf
        return buf

    def _upload(self, dst, src: np.ndarray, stream, at: int = 0, nbytes: int | None = None) -> None:
        rt = self.cp.cuda.runtime
        n = src.nbytes if nbytes is None else nbytes
        if n:
            rt.memcpyAsync(dst.data.ptr + at, src.ctypes.data + at, n, rt.memcpyHostToDevice, stream.ptr)

    def _download(self, dst: np.ndarray, src, stream, at: int = 0, nbytes: int | None = None) -> None:
        rt = self.cp.cuda.runtime
        n = dst.nbytes if nbytes is None else nbytes
        if n:
            rt.memcpyAsync(dst.ctypes.data + at, src.data.ptr + at, n, rt.memcpyDeviceToHost, stream.ptr)

    # -- SAs ---------------------------------------------------------------------------------
    def install(self, slot: int, key: bytes) -> None:
        cp = self.cp
        with self.device:
            end = (slot + 1) * source.SA_BYTES
            if end > self._table.size:
                grown = cp.zeros(max(end, 2 * self._table.size), dtype=cp.uint8)
                grown[:self._table.size] = self._table
                self._table = grown
            keys = np.zeros(source.KEY_SLOT_BYTES, dtype=np.uint8)
            keys[:len(key)] = np.frombuffer(key, dtype=np.uint8)
            d_keys = cp.asarray(keys)
            keys[:] = 0
            self._k_install((1,), (1,), (d_keys, cp.asarray(np.array([len(key)], np.uint32)),
                                         cp.asarray(np.array([slot], np.uint32)), self._table,
                                         np.int32(1)))
            d_keys.fill(0)
            cp.cuda.Device().synchronize()

    def clear(self, slot: int) -> None:
        with self.device:
            self._table[slot * source.SA_BYTES:(slot + 1) * source.SA_BYTES].fill(0)

    # -- batches -----------------------------------------------------------------------------
    def _chunks(self, st: Staged) -> list[tuple[int, int, int, int]]:
        """(first packet, end packet, first byte, end byte) of each chunk of whole packets."""
        if st.data_bytes <= self.chunk_bytes:
            return [(0, st.n, 0, st.data.nbytes)]
        cuts = np.searchsorted(st.offsets, np.arange(self.chunk_bytes, st.data_bytes, self.chunk_bytes))
        bounds = sorted({0, st.n, *(int(c) for c in cuts if 0 < c < st.n)})
        offsets = st.offsets
        out = []
        for p0, p1 in zip(bounds, bounds[1:]):
            lo = int(offsets[p0])
            hi = int(offsets[p1]) if p1 < st.n else st.data.nbytes
            out.append((p0, p1, lo, hi))
        return out

    def _launch(self, st: Staged, d: dict, p0: int, p1: int, lanes: int | None, stream) -> source.Launch:
        n = p1 - p0
        blocks = st.ghash_blocks * n // st.n + 1
        launch = source.plan(n, blocks, target_threads=self.target_threads,
                             max_block=self.max_block, lanes=lanes)
        ptr = {name: d[name].data.ptr for name in d}
        args = (np.uint64(ptr["data"]),
                np.uint64(ptr["offsets"] + 8 * p0), np.uint64(ptr["lengths"] + 4 * p0),
                np.uint64(ptr["nonces"] + source.NONCE_BYTES * p0), np.uint64(ptr["aad"]),
                np.uint64(ptr["aad_offsets"] + 8 * p0), np.uint64(ptr["aad_lengths"] + 4 * p0),
                np.uint64(ptr["slots"] + 4 * p0), np.uint64(self._table.data.ptr),
                np.uint64(ptr["verdicts"] + p0), np.int32(n), np.int32(launch.lanes_log2),
                np.int32(int(st.decrypt)))
        with stream:
            self._k_batch((launch.grid,), (launch.block,), args)
        return launch

    def _prepare(self, st: Staged) -> dict:
        d = {name: self._device_buffer(name, getattr(st, name).nbytes) for name in _TABLES}
        d["data"] = self._device_buffer("data", st.data.nbytes)
        d["verdicts"] = self._device_buffer("verdicts", st.n)
        return d

    def run(self, st: Staged, *, lanes: int | None = None) -> source.Launch:
        """Copies up, computes and copies back one staged batch; returns when it is done."""
        cp = self.cp
        with self.device:
            d = self._prepare(st)
            s0, s1 = self.streams
            for name in _TABLES:
                self._upload(d[name], getattr(st, name), s0)
            cp.cuda.runtime.memsetAsync(d["verdicts"].data.ptr, 0, st.n, s0.ptr)
            tables_ready = cp.cuda.Event(disable_timing=True)
            tables_ready.record(s0)
            s1.wait_event(tables_ready)
            launch = None
            for c, (p0, p1, lo, hi) in enumerate(self._chunks(st)):
                stream = self.streams[c % 2]
                self._upload(d["data"], st.data, stream, lo, hi - lo)
                launch = self._launch(st, d, p0, p1, lanes, stream)
                self._download(st.data, d["data"], stream, lo, hi - lo)
                self._download(st.verdicts, d["verdicts"], stream, p0, p1 - p0)
            s0.synchronize()
            s1.synchronize()
        return launch

    def time_kernel(self, st: Staged, *, repeats: int = 10, lanes: int | None = None) -> float:
        """Seconds per launch of the kernel over the whole batch, buffers already on the device
        (CUDA events around `repeats` launches; the first, warm-up launch is not counted)."""
        cp = self.cp
        with self.device:
            d = self._prepare(st)
            s0 = self.streams[0]
            for name in (*_TABLES, "data"):
                self._upload(d[name], getattr(st, name), s0)
            self._launch(st, d, 0, st.n, lanes, s0)
            start, stop = cp.cuda.Event(), cp.cuda.Event()
            start.record(s0)
            for _ in range(repeats):
                self._launch(st, d, 0, st.n, lanes, s0)
            stop.record(s0)
            stop.synchronize()
            return cp.cuda.get_elapsed_time(start, stop) / 1000.0 / repeats

    def time_transfers(self, st: Staged, *, repeats: int = 3, lanes: int | None = None) -> float:
        """Seconds per `run` of an already staged batch (host to device to host, chunked)."""
        import time

        self.run(st, lanes=lanes)
        start = time.perf_counter()
        for _ in range(repeats):
            self.run(st, lanes=lanes)
        return (time.perf_counter() - start) / repeats

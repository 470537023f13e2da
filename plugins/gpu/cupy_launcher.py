"""The CuPy launcher of the `gpu` backend: kernels/aes_gcm.cu compiled by NVRTC (`cupy.RawModule`),
the SA tables in device memory, pinned host buffers, and chunked transfers on several streams.

Owns: everything that touches CUDA: module compilation, device and pinned buffers (grown, then
reused from batch to batch), the streams, and the kernel-only timings used by `bench` and
`perf/gpu_check.sh`.
Must not: be imported where CuPy may be missing: only `GpuBackend` (after its probe succeeded),
`bench` and the device check import it.

How a batch moves: it is cut into chunks of whole packets of about `chunk_bytes` input bytes;
chunk c goes up (its bytes and its rows of the per-packet tables), is computed and comes back
on stream c % len(streams), so with three or more streams the upload of one chunk, the kernel
of another and the download of a third run at once.  Offsets stay absolute: each device buffer
mirrors its pinned host buffer, and a chunk's launch gets pointers to its rows of the tables.
"""
from __future__ import annotations

import time

import numpy as np

from ipsec_plugins.gpu import source
from ipsec_plugins.gpu.staging import Staged

#: Per-packet tables of a gcm_batch launch, and their element sizes.
_GCM_TABLES = (("offsets", 8), ("lengths", 4), ("nonces", source.NONCE_BYTES), ("aad_offsets", 8),
               ("aad_lengths", 4), ("slots", 4))
_SEAL_TABLES = (("in_off", 8), ("hdr_len", 4), ("pay_len", 4), ("out_off", 8), ("seqs", 8),
                ("idents", 4), ("slots", 4))
_OPEN_TABLES = (("in_off", 8), ("esp_at", 4), ("esp_len", 4), ("out_off", 8), ("seqs", 8), ("slots", 4))


def cuda_versions() -> dict:
    """The CUDA driver and runtime versions CuPy sees, as "major.minor" (what `ipsec backends`
    shows); empty where CuPy or a driver is missing."""
    try:
        import cupy as cp

        def text(v: int) -> str:
            return f"{v // 1000}.{v % 1000 // 10}"
        return {"cuda_driver": text(cp.cuda.runtime.driverGetVersion()),
                "cuda_runtime": text(cp.cuda.runtime.runtimeGetVersion()),
                "cupy": getattr(cp, "__version__", "?")}
    except Exception:
        return {}


class CupyLauncher:
    name = "cupy"

    def __init__(self, *, device: int = 0, chunk_bytes: int = 4 << 20, streams: int = 4,
                 max_block: int = 256, target_threads: int | None = None, defines: tuple[str, ...] = ()):
        """`defines`: NAME=VALUE macros for the kernel source (GCM_MIN_BLOCKS=2: half the
        registers per thread, twice the blocks per SM)."""
        import cupy as cp

        if streams < 1:
            raise ValueError(f"streams must be at least 1, not {streams}")
        self.cp = cp
        self.device = cp.cuda.Device(device)
        with self.device:
            props = cp.cuda.runtime.getDeviceProperties(device)
            self.device_name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
            self.target_threads = target_threads or (props["multiProcessorCount"]
                                                     * props["maxThreadsPerMultiProcessor"])
            self.module = cp.RawModule(code=source.read(source.KERNEL_FILE),
                                       options=tuple(f"-D{d}" for d in defines))
            self._kernels = {name: self.module.get_function(name)
                             for name in ("gcm_batch", "gcm_install", "esp_seal", "esp_open")}
            self.streams = tuple(cp.cuda.Stream(non_blocking=True) for _ in range(streams))
            self._slots = 16
            self._keys = cp.zeros(self._slots * source.SA_BYTES, dtype=cp.uint8)
            self._nr = cp.zeros(self._slots, dtype=cp.uint32)
            self._params = cp.zeros(self._slots * source.SA_PARAM_BYTES, dtype=cp.uint8)
        self.chunk_bytes = chunk_bytes
        self.max_block = max_block
        self._pinned: dict[str, tuple[object, np.ndarray]] = {}
        self._dev: dict[str, object] = {}
        self.launch_count = 0

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

    def _copy(self, dst: int, src: int, nbytes: int, kind, stream) -> None:
        if nbytes > 0:
            self.cp.cuda.runtime.memcpyAsync(dst, src, nbytes, kind, stream.ptr)

    def _up(self, dev, host: np.ndarray, stream, at: int = 0, nbytes: int | None = None) -> None:
        rt = self.cp.cuda.runtime
        self._copy(dev.data.ptr + at, host.ctypes.data + at, host.nbytes if nbytes is None else nbytes,
                   rt.memcpyHostToDevice, stream)

    def _down(self, host: np.ndarray, dev, stream, at: int = 0, nbytes: int | None = None) -> None:
        rt = self.cp.cuda.runtime
        self._copy(host.ctypes.data + at, dev.data.ptr + at, host.nbytes if nbytes is None else nbytes,
                   rt.memcpyDeviceToHost, stream)

    # -- SAs ---------------------------------------------------------------------------------
    def _grow(self, slot: int) -> None:
        if slot < self._slots:
            return
        cp = self.cp
        slots = max(slot + 1, 2 * self._slots)
        keys = cp.zeros(slots * source.SA_BYTES, dtype=cp.uint8)
        keys[:self._keys.size] = self._keys
        nr = cp.zeros(slots, dtype=cp.uint32)
        nr[:self._nr.size] = self._nr
        params = cp.zeros(slots * source.SA_PARAM_BYTES, dtype=cp.uint8)
        params[:self._params.size] = self._params
        self._keys.fill(0)
        self._keys, self._nr, self._params, self._slots = keys, nr, params, slots

    def install(self, slot: int, key: bytes) -> None:
        cp = self.cp
        with self.device:
            self._grow(slot)
            keys = np.zeros(source.KEY_SLOT_BYTES, dtype=np.uint8)
            keys[:len(key)] = np.frombuffer(key, dtype=np.uint8)
            d_keys = cp.asarray(keys)
            keys[:] = 0
            self._kernels["gcm_install"]((1,), (1,), (
                d_keys, cp.asarray(np.array([len(key)], np.uint32)), cp.asarray(np.array([slot], np.uint32)),
                self._keys, self._nr, np.int32(1)))
            d_keys.fill(0)
            cp.cuda.Device().synchronize()

    def set_params(self, slot: int, params: bytes) -> None:
        with self.device:
            self._grow(slot)
            self._params[slot * source.SA_PARAM_BYTES:(slot + 1) * source.SA_PARAM_BYTES] = \
                self.cp.asarray(np.frombuffer(params, dtype=np.uint8))

    def clear(self, slot: int) -> None:
        with self.device:
            self._keys[slot * source.SA_BYTES:(slot + 1) * source.SA_BYTES].fill(0)
            self._params[slot * source.SA_PARAM_BYTES:(slot + 1) * source.SA_PARAM_BYTES].fill(0)
            self._nr[slot:slot + 1].fill(0)

    # -- chunks ------------------------------------------------------------------------------
    def _cuts(self, starts: np.ndarray, total: int) -> list[tuple[int, int]]:
        """(first packet, end packet) of chunks of whole packets of about chunk_bytes each."""
        n = len(starts)
        if total <= self.chunk_bytes or n < 2 or (np.diff(starts) < 0).any():
            return [(0, n)]           # small, or packets not in buffer order: one chunk
        cuts = np.searchsorted(starts, np.arange(self.chunk_bytes, total, self.chunk_bytes))
        bounds = sorted({0, n, *(int(c) for c in cuts if 0 < c < n)})
        return list(zip(bounds, bounds[1:]))

    def _plan(self, n: int, blocks: int, lanes: int | None) -> source.Launch:
        return source.plan(n, blocks, target_threads=self.target_threads, max_block=self.max_block,
                           lanes=lanes)

    def _chunked(self, kernel: str, st, tables, *, data_in: str, in_bytes: int, in_starts,
                 data_out: str | None, out_starts, out_bytes: int, outs, lanes, args) -> source.Launch:
        """Runs `kernel` over `st` chunk by chunk on the streams: each chunk's input bytes and
        table rows up, the launch, its output bytes and result rows down.  `args(d, p0, n,
        launch)` gives the launch's arguments."""
        cp = self.cp
        d = {name: self._device_buffer(name, getattr(st, name).nbytes) for name, _ in tables}
        d[data_in] = self._device_buffer(data_in, getattr(st, data_in).nbytes)
        if data_out is not None and data_out != data_in:
            d[data_out] = self._device_buffer(data_out, getattr(st, data_out).nbytes)
        for name, _ in outs:
            d[name] = self._device_buffer(name, getattr(st, name).nbytes)
        chunks = self._cuts(in_starts, in_bytes)
        launch = None
        for c, (p0, p1) in enumerate(chunks):
            stream = self.streams[c % len(self.streams)]
            rows = p1 - p0
            lo = int(in_starts[p0]) if p0 else 0
            hi = int(in_starts[p1]) if p1 < st.n else getattr(st, data_in).nbytes
            self._up(d[data_in], getattr(st, data_in), stream, lo, hi - lo)
            for name, size in tables:
                self._up(d[name], getattr(st, name), stream, size * p0, size * rows)
            blocks = st.ghash_blocks * rows // max(st.n, 1) + 1
            launch = self._plan(rows, blocks, lanes)
            launch_args = ((launch.grid,), (launch.block,), args(d, p0, rows, launch))
            with stream:
                self._kernels[kernel](*launch_args)
            self._last_args = (self._kernels[kernel], tables, launch_args)
            if data_out is not None:
                olo = int(out_starts[p0]) if p0 else 0
                ohi = int(out_starts[p1]) if p1 < st.n else out_bytes
                self._down(getattr(st, data_out), d[data_out], stream, olo, ohi - olo)
            for name, size in outs:
                self._down(getattr(st, name), d[name], stream, size * p0, size * rows)
        for stream in self.streams[:len(chunks)]:
            stream.synchronize()
        self.launch_count += len(chunks)
        return launch

    # -- batches -----------------------------------------------------------------------------
    def run(self, st: Staged, *, lanes: int | None = None) -> source.Launch:
        """gcm_batch over one staged batch: copies up, computes and copies back, chunked."""
        u64 = np.uint64

        def args(d, p0, n, launch):
            return (u64(d["data"].data.ptr), u64(d["offsets"].data.ptr + 8 * p0),
                    u64(d["lengths"].data.ptr + 4 * p0), u64(d["nonces"].data.ptr + source.NONCE_BYTES * p0),
                    u64(aad.data.ptr), u64(d["aad_offsets"].data.ptr + 8 * p0),
                    u64(d["aad_lengths"].data.ptr + 4 * p0), u64(d["slots"].data.ptr + 4 * p0),
                    u64(self._keys.data.ptr), u64(self._nr.data.ptr), u64(d["verdicts"].data.ptr + p0),
                    np.int32(n), np.int32(launch.lanes_log2), np.int32(int(st.decrypt)))

        with self.device:
            aad = self._device_buffer("aad", st.aad.nbytes)
            self._up(aad, st.aad, self.streams[0])
            self.streams[0].synchronize()
            starts = st.offsets.astype(np.int64)
            return self._chunked("gcm_batch", st, _GCM_TABLES, data_in="data", in_bytes=st.data_bytes,
                                 in_starts=starts, data_out="data", out_starts=starts,
                                 out_bytes=st.data.nbytes, outs=(("verdicts", 1),), lanes=lanes, args=args)

    def run_seal(self, fs, *, lanes: int | None = None) -> source.Launch:
        """esp_seal over a staged outbound batch (framing.SealStaged)."""
        u64 = np.uint64

        def args(d, p0, n, launch):
            return (u64(d["inp"].data.ptr), u64(d["in_off"].data.ptr + 8 * p0),
                    u64(d["hdr_len"].data.ptr + 4 * p0), u64(d["pay_len"].data.ptr + 4 * p0),
                    u64(d["out"].data.ptr), u64(d["out_off"].data.ptr + 8 * p0),
                    u64(d["seqs"].data.ptr + 8 * p0), u64(d["idents"].data.ptr + 4 * p0),
                    u64(d["slots"].data.ptr + 4 * p0), u64(self._params.data.ptr), u64(self._keys.data.ptr),
                    u64(self._nr.data.ptr), u64(d["verdicts"].data.ptr + p0),
                    np.int32(n), np.int32(launch.lanes_log2))

        with self.device:
            return self._chunked("esp_seal", fs, _SEAL_TABLES, data_in="inp", in_bytes=fs.in_bytes,
                                 in_starts=fs.in_off.astype(np.int64), data_out="out",
                                 out_starts=fs.out_off.astype(np.int64) & ~15, out_bytes=fs.out_bytes,
                                 outs=(("verdicts", 1),), lanes=lanes, args=args)

    def run_open(self, fo, *, lanes: int | None = None) -> source.Launch:
        """esp_open over a staged inbound batch (framing.OpenStaged)."""
        u64 = np.uint64

        def args(d, p0, n, launch):
            return (u64(d["inp"].data.ptr), u64(d["in_off"].data.ptr + 8 * p0),
                    u64(d["esp_at"].data.ptr + 4 * p0), u64(d["esp_len"].data.ptr + 4 * p0),
                    u64(d["out"].data.ptr), u64(d["out_off"].data.ptr + 8 * p0),
                    u64(d["seqs"].data.ptr + 8 * p0), u64(d["slots"].data.ptr + 4 * p0),
                    u64(self._params.data.ptr), u64(self._keys.data.ptr), u64(self._nr.data.ptr),
                    u64(d["verdicts"].data.ptr + p0), u64(d["trailers"].data.ptr + 4 * p0),
                    np.int32(n), np.int32(launch.lanes_log2))

        with self.device:
            return self._chunked("esp_open", fo, _OPEN_TABLES, data_in="inp", in_bytes=fo.in_bytes,
                                 in_starts=fo.in_off.astype(np.int64), data_out="out",
                                 out_starts=fo.out_off.astype(np.int64), out_bytes=fo.out_bytes,
                                 outs=(("verdicts", 1), ("trailers", 4)), lanes=lanes, args=args)

    # -- timings -----------------------------------------------------------------------------
    def time_kernel(self, st, *, repeats: int = 10, lanes: int | None = None, kind: str = "gcm") -> float:
        """Seconds per launch of the kernel over the whole batch, its buffers already on the
        device (CUDA events around `repeats` launches after one warm-up launch).  kind: "gcm"
        (a Staged batch), "seal" or "open" (framing's staged batches)."""
        cp = self.cp
        saved = self.chunk_bytes
        with self.device:
            self.chunk_bytes = 1 << 62                       # one chunk: the whole batch
            try:
                runner = {"gcm": self.run, "seal": self.run_seal, "open": self.run_open}[kind]
                runner(st, lanes=lanes)                      # uploads everything, warms up
            finally:
                self.chunk_bytes = saved
            kernel, tables, launch_args = self._last_args
            s0 = self.streams[0]
            start, stop = cp.cuda.Event(), cp.cuda.Event()
            start.record(s0)
            with s0:
                for _ in range(repeats):
                    kernel(*launch_args)
            stop.record(s0)
            stop.synchronize()
            return cp.cuda.get_elapsed_time(start, stop) / 1000.0 / repeats

    def time_transfers(self, st, *, repeats: int = 3, lanes: int | None = None, kind: str = "gcm") -> float:
        """Seconds per run of an already staged batch: host to device to host, chunked."""
        runner = {"gcm": self.run, "seal": self.run_seal, "open": self.run_open}[kind]
        runner(st, lanes=lanes)
        start = time.perf_counter()
        for _ in range(repeats):
            runner(st, lanes=lanes)
        return (time.perf_counter() - start) / repeats

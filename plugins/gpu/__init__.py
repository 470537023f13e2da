"""The `gpu` backend: bulk ESP on NVIDIA GPUs, AES-GCM with 128- and 256-bit keys and 16-byte
ICVs (RFC 4106; also RFC 4543 GMAC, which is AES-GCM with everything in the AAD).

One kernel launch seals or opens a whole batch of packets, of one SA or several (see
kernels/aes_gcm.cu).  `GpuAead` is the core's `FramingAead`: `protect_batch` / `unprotect_batch`
of an SA on this backend have the whole ESP packets framed on the device (`framing`: outer
header, ESP header, IV, padding, trailer and ICV written by the kernel; ICV, padding and trailer
checked on the way in), while the core keeps sequence numbers, replay state, lifetimes and
counters exactly as for the CPU backends.  SAs and batches framing declines go through
`ipsec_core.dataplane.esp.offload` (`encrypt_batch` / `decrypt_batch`, still one launch), and
`GpuAead` is also a `BatchAead` (one launch per buffer of messages).

Layout: `source` (kernel files, constants, launch geometry), `staging` (numpy), `engine` (SA
slots, `GpuAead`), `framing` (ESP on the device), `cupy_launcher` (the GPU: chunks on several
streams), `cpu_launcher` (the same kernel source built as C++ for tests), `ct_audit` (the
constant-time check over the PTX), `bench` (`ipsec perf --backend gpu`), `check` (the device
check, perf/gpu_check.sh).  CuPy and numpy are imported lazily: this
module loads everywhere, and the backend reports itself unavailable, with the reason, where CuPy
or a CUDA device is missing.  The CPU build is never what the registry registers; tests build a
`GpuBackend(launcher=CpuLauncher())` of their own.
"""
from __future__ import annotations

import threading

from ipsec_core import hookimpl
from ipsec_core.crypto.base import Backend, Feature
from ipsec_core.errors import BackendError

KEY_BITS = (128, 256)
TAG_BYTES = 16


class GpuBackend(Backend):
    name = "gpu"
    priority = 100
    description = "bulk ESP on NVIDIA GPUs through CuPy kernels (AES-GCM, 16-byte ICV)"

    def __init__(self, launcher=None):
        """`launcher`: None for CuPy on the first CUDA device (made at the first SA install), or
        an explicit launcher object (tests pass the CPU build)."""
        self._launcher = launcher
        self._engine = None
        self._engine_lock = threading.Lock()

    def probe(self) -> str | None:
        if self._launcher is not None:
            return None
        try:
            import numpy  # noqa: F401  (lazy: optional extra)
            import cupy
        except Exception as exc:  # ImportError, or a CUDA library that fails to load
            return (f"CuPy is not importable ({exc.__class__.__name__}: {exc}); install ipsec-suite[gpu-cuda12] "
                    "or ipsec-suite[gpu-cuda13] to match the CUDA driver")
        try:
            count = cupy.cuda.runtime.getDeviceCount()
        except Exception as exc:
            return f"no CUDA device: {exc}"
        if count < 1:
            return "no CUDA device found"
        return None

    def features(self):
        return (Feature("aes-gcm", KEY_BITS, tag_bytes=(TAG_BYTES,)),)

    def details(self) -> dict:
        """Where this backend runs, for `ipsec backends`: the device, the CUDA driver and
        runtime versions and CuPy's (or the CPU build of the kernels, for tests)."""
        launcher = self._launcher
        if launcher is not None:
            return {"device": getattr(launcher, "device_name", getattr(launcher, "name", "?"))}
        from ipsec_plugins.gpu.cupy_launcher import cuda_versions

        out = cuda_versions()
        try:
            import cupy

            props = cupy.cuda.runtime.getDeviceProperties(0)
            name = props["name"]
            out = {"device": name.decode() if isinstance(name, bytes) else str(name), **out}
        except Exception:
            pass
        return out

    @property
    def engine(self):
        """The device's SA table and launcher, made on first use (this compiles the kernels)."""
        with self._engine_lock:
            if self._engine is None:
                from ipsec_plugins.gpu.engine import GpuEngine

                launcher = self._launcher
                if launcher is None:
                    from ipsec_plugins.gpu.cupy_launcher import CupyLauncher

                    launcher = CupyLauncher()
                self._engine = GpuEngine(launcher)
            return self._engine

    def aead(self, family: str, key: bytes, *, tag_bytes: int, nonce_bytes: int):
        if family != "aes-gcm":
            return super().aead(family, key, tag_bytes=tag_bytes, nonce_bytes=nonce_bytes)
        if tag_bytes != TAG_BYTES:
            raise BackendError(f"backend 'gpu' computes aes-gcm with {TAG_BYTES}-byte ICVs only, "
                               f"not {tag_bytes}: use aes128gcm16 or aes256gcm16, or another backend")
        if nonce_bytes != 12:
            raise ValueError(f"aes-gcm takes a 12-byte nonce, not {nonce_bytes}")
        if len(key) * 8 not in KEY_BITS:
            raise BackendError(f"backend 'gpu' takes 128- or 256-bit AES keys, not {len(key) * 8}-bit")
        from ipsec_plugins.gpu.engine import GpuAead

        return GpuAead(self.engine, key)

    def encrypt_mixed(self, aeads, nonces, plaintexts, aads) -> list[bytes]:
        """Seal packets of several SAs (each packet's `GpuAead` of this backend) in one launch."""
        from ipsec_plugins.gpu.engine import mixed_batch

        return mixed_batch(aeads, nonces, plaintexts, aads, decrypt=False)

    def decrypt_mixed(self, aeads, nonces, ciphertexts_and_tags, aads) -> list[bytes | None]:
        """Open packets of several SAs in one launch; None where a tag does not verify."""
        from ipsec_plugins.gpu.engine import mixed_batch

        return mixed_batch(aeads, nonces, ciphertexts_and_tags, aads, decrypt=True)

    def bench(self, *, proposals=("aes128gcm16",), sizes=None, batches=None,
              directions=("protect", "unprotect"), repeats: int = 5, registry=None,
              tick=None) -> list[dict]:
        """This backend's own benchmark, run by `ipsec perf --backend gpu`: kernel-only,
        device end-to-end and end-to-end Gbit/s, and latency per batch (`ipsec_plugins.gpu.bench`).
        `sizes` / `batches` None: 64, 576, 1400, 9000 bytes and 1K to 64K packets."""
        from ipsec_core.transforms.keywords import parse_esp
        from ipsec_plugins.gpu import bench

        key_bits = []
        for text in proposals:
            prop = parse_esp(text)
            info = prop.encr_info
            if info.family != "aes-gcm" or info.icv_bytes != TAG_BYTES or prop.key_bits not in KEY_BITS \
                    or info.kind.value != "aead":
                raise BackendError(f"the gpu benchmark measures aes128gcm16 and aes256gcm16, not {text}")
            key_bits.append(prop.key_bits)
        records = bench.run(self, sizes=tuple(sizes or bench.DEFAULT_SIZES),
                            batches=tuple(batches or bench.DEFAULT_BATCHES), directions=tuple(directions),
                            key_bits=tuple(key_bits), repeats=repeats, registry=registry, tick=tick)
        return [r.as_dict() for r in records]


@hookimpl
def ipsec_register_backends(register):
    register(GpuBackend())

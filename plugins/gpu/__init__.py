"""The `gpu` backend: bulk ESP on CuPy kernels.

This release registers the backend and probes for CuPy and a CUDA device; it offers no primitive
yet (the AES-GCM kernels and the batch path come with the GPU issue).  CuPy is imported lazily,
only inside `probe`, so the package works without it.
"""
from __future__ import annotations

from ipsec_core import hookimpl
from ipsec_core.crypto.base import Backend


class GpuBackend(Backend):
    name = "gpu"
    priority = 100
    description = "bulk ESP on NVIDIA GPUs through CuPy kernels"

    def probe(self) -> str | None:
        try:
            import cupy  # noqa: F401  (lazy: optional extra)
        except Exception as exc:  # ImportError, or a CUDA library that fails to load
            return f"CuPy is not importable ({exc.__class__.__name__}: {exc}); install ipsec-suite[gpu]"
        try:
            count = cupy.cuda.runtime.getDeviceCount()
        except Exception as exc:
            return f"no CUDA device: {exc}"
        if count < 1:
            return "no CUDA device found"
        return "the GPU kernels are not built yet in this release (GPU issue): no primitive is offered"

    def features(self):
        return ()


@hookimpl
def ipsec_register_backends(register):
    register(GpuBackend())

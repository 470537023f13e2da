"""Process-level tuning for programs that run the data plane (drivers, `ipsec perf`).

Owns: the C allocator's settings.  A batch of packets allocates and frees a few hundred
kilobytes of packet buffers (bytes objects over 512 bytes come from libc malloc, not from
Python's small-object allocator).  With glibc's defaults the freed top of the heap is handed
back to the kernel after every batch (trim threshold 128 KiB) and faulted in again, page by
page, by the next one: unprotect of 256 x 1400-byte packets took ~140 page faults per batch
here, and ran ~1.4x slower for it.  `tune_allocator` tells glibc to keep up to `keep_bytes` of
freed heap, as long-running packet processors do.
Must not: be called by the pipeline itself (it changes the whole process); the caller decides.
"""
from __future__ import annotations

import ctypes
import platform

# mallopt parameters, from glibc's malloc.h
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3

_state = "default"


def allocator_state() -> str:
    """What `tune_allocator` did in this process ("default" when nothing)."""
    return _state


def tune_allocator(keep_bytes: int = 64 << 20) -> str:
    """Keep up to `keep_bytes` of freed heap instead of returning it to the kernel after each
    batch, and serve buffers up to 1 MiB from the heap rather than from fresh mmaps.  Returns a
    description of what was set ("default" where the C library is not glibc: nothing to do)."""
    global _state
    if platform.libc_ver()[0] != "glibc":
        return _state
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return _state
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    keep = min(int(keep_bytes), 1 << 30)
    if (mallopt(_M_TRIM_THRESHOLD, keep) and mallopt(_M_TOP_PAD, min(keep, 16 << 20))
            and mallopt(_M_MMAP_THRESHOLD, 1 << 20)):
        _state = f"glibc: keeps {keep >> 20} MiB of freed heap"
    return _state

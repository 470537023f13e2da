"""The kernel sources of the `gpu` backend, their constants, and the launch geometry.

Owns: where the `.cu` files are (package data under `kernels/`), the numbers the host must agree
on with `kernels/aes_gcm.cu` (SA slot size, verdict codes, limits), and `plan`, which picks lanes
per packet, threads per block and blocks for one batch.  Shared by every launcher, so the CPU build
and the GPU run the same geometry logic.
Must not: import numpy or CuPy (the registry imports the plugin on machines without either).
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

#: The kernel source CuPy compiles (and `nvcc -ptx` checks in the tests).
KERNEL_FILE = "aes_gcm.cu"
#: The CPU build: the same kernel file plus these two (see kernels/host_launch.cpp).
HOST_FILES = ("host_shim.h", "host_launch.cpp")

# Must match the #defines of kernels/aes_gcm.cu; tests/crypto/test_gpu_backend.py checks SA_BYTES against
# the CPU build and the rest against the source text.
MAX_LANES = 32
MAX_BLOCK_THREADS = 256
#: GHASH blocks one packet may have (AAD and payload together): the powers of H each SA keeps.
MAX_GHASH_BLOCKS = 4112
SA_BYTES = 256 + 16 * MAX_GHASH_BLOCKS
SA_PARAM_BYTES = 64
SKIP = 0xFFFFFFFF
VERDICT_OK = 1
VERDICT_BAD_TAG = 2
VERDICT_SKIPPED = 3
VERDICT_BAD_PADDING = 4
TAG_BYTES = 16
#: Bytes every host buffer has after its data: the kernels' unaligned 16-byte loads may read
#: up to 3 bytes past a packet.
SLACK_BYTES = 16
NONCE_BYTES = 12
KEY_SLOT_BYTES = 32        # keys travel to gcm_install in 32-byte slots
#: Largest AAD + payload one packet may have: one power of H per GHASH block, less the length block.
MAX_GHASH_INPUT_BYTES = 16 * (MAX_GHASH_BLOCKS - 3)


def read(name: str) -> str:
    """The text of one file under kernels/."""
    return resources.files(__package__).joinpath("kernels", name).read_text(encoding="utf-8")


@dataclass(frozen=True, slots=True)
class Launch:
    lanes_log2: int   # threads per packet = 2 ** lanes_log2
    block: int        # threads per block (a multiple of the lanes)
    grid: int         # blocks

    @property
    def lanes(self) -> int:
        return 1 << self.lanes_log2


def plan(n_packets: int, ghash_blocks: int, *, target_threads: int, max_block: int,
         lanes: int | None = None) -> Launch:
    """Launch geometry for `n_packets` packets with `ghash_blocks` GHASH blocks in all.

    Lanes per packet double (up to 32) while the batch has fewer than `target_threads` threads
    and a packet has more blocks than lanes: a big batch of small packets gets one thread per
    packet (no reduction), a small batch of jumbo packets a warp per packet.  `lanes` forces the
    choice (a power of two, 1..32), for tests of every reduction width.
    """
    if n_packets < 1:
        raise ValueError("a launch needs at least one packet")
    if not 1 <= max_block <= MAX_BLOCK_THREADS or max_block & (max_block - 1):
        raise ValueError(f"max_block must be a power of two up to {MAX_BLOCK_THREADS}, not {max_block}")
    if lanes is None:
        per_packet = -(-ghash_blocks // n_packets)
        lanes = 1
        while (lanes < min(MAX_LANES, max_block) and lanes < per_packet
               and n_packets * lanes < target_threads):
            lanes *= 2
    elif lanes < 1 or lanes > min(MAX_LANES, max_block) or lanes & (lanes - 1):
        raise ValueError(f"lanes must be a power of two from 1 to {min(MAX_LANES, max_block)}, "
                         f"not {lanes}")
    threads = n_packets * lanes
    block = max(lanes, min(max_block, 1 << (threads - 1).bit_length()))
    return Launch(lanes.bit_length() - 1, block, -(-threads // block))

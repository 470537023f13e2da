"""Batch staging of the `gpu` backend: Python lists of bytes <-> the flat arrays the kernel reads.

Owns: the host layout of one batch (see the header of kernels/aes_gcm.cu): every payload in one
buffer, each followed by its 16-byte tag slot, an offsets/lengths table, nonces, AADs, SA slots
and verdicts; and turning the kernel's in-place output back into `bytes` per packet.
Must not: import CuPy, loop over bytes in Python, or know where the arrays live: a launcher hands
out the host arrays (`alloc`), pinned for a GPU, plain numpy for the CPU build.

Per batch: one `b"".join` per input list, `np.frombuffer` copies it into the launcher's array,
offsets are a `np.cumsum`; on the way back each packet is one slice of the output buffer.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from ipsec_plugins.gpu.source import (MAX_GHASH_INPUT_BYTES, NONCE_BYTES, SKIP, SLACK_BYTES, TAG_BYTES,
                                      VERDICT_BAD_TAG,
                                      VERDICT_OK, VERDICT_SKIPPED)

#: alloc(name, count, dtype) -> a writable 1-D array of `count` elements, reused between batches.
Alloc = Callable[[str, int, "np.dtype | type"], np.ndarray]

_TAG_SLOT = bytes(TAG_BYTES)


@dataclass(eq=False)
class Staged:
    """One batch in the layout the kernel reads.  Arrays are views of the launcher's buffers,
    valid until the next batch is staged with the same launcher."""

    n: int
    decrypt: bool
    data: np.ndarray          # uint8, payloads each followed by their tag slot
    data_bytes: int
    offsets: np.ndarray       # uint64 [n], start of each payload in `data`
    lengths: np.ndarray       # uint32 [n], payload bytes (SKIP: nothing to do, an open input < 16 B)
    nonces: np.ndarray        # uint8 [12 n]
    aad: np.ndarray           # uint8, AADs back to back (at least one element)
    aad_offsets: np.ndarray   # uint64 [n]
    aad_lengths: np.ndarray   # uint32 [n]
    slots: np.ndarray         # uint32 [n], SA slot of each packet
    verdicts: np.ndarray      # uint8 [n], 0 until the kernel writes VERDICT_*
    ghash_blocks: int         # GHASH blocks of the whole batch (for the launch geometry)


def _lengths(items: Sequence[bytes], n: int) -> np.ndarray:
    return np.fromiter(map(len, items), dtype=np.int64, count=n)


def _exclusive_cumsum(out: np.ndarray, sizes: np.ndarray) -> None:
    out[0] = 0
    if len(sizes) > 1:
        out[1:] = np.cumsum(sizes[:-1])


def stage(alloc: Alloc, *, slots: int | Sequence[int], nonces: Sequence[bytes],
          items: Sequence[bytes], aads: Sequence[bytes], decrypt: bool) -> Staged:
    """Lay out one batch.  `items` are plaintexts (seal) or ciphertext || tag (open)."""
    n = len(items)
    if n == 0:
        raise ValueError("an empty batch has nothing to stage")
    if len(nonces) != n or len(aads) != n:
        raise ValueError(f"batch of {n} payloads with {len(nonces)} nonces and {len(aads)} AADs")
    nonce_lens = _lengths(nonces, n)
    if (nonce_lens != NONCE_BYTES).any():
        i = int(np.argmax(nonce_lens != NONCE_BYTES))
        raise ValueError(f"nonce {i} of the batch is {nonce_lens[i]} bytes; aes-gcm here takes {NONCE_BYTES}")
    lens = _lengths(items, n)
    if decrypt:
        joined = b"".join(items)
        stride = lens
        payload = lens - TAG_BYTES
        payload = np.where(payload < 0, SKIP, payload)   # shorter than a tag: cannot verify
    else:
        joined = _TAG_SLOT.join(items) + _TAG_SLOT        # each plaintext, then its tag's place
        stride = lens + TAG_BYTES
        payload = lens
    aad_lens = _lengths(aads, n)
    ghash_input = np.where(payload == SKIP, 0, payload) + aad_lens
    if int(ghash_input.max()) > MAX_GHASH_INPUT_BYTES:
        i = int(np.argmax(ghash_input))
        raise ValueError(f"packet {i} of the batch has {int(ghash_input[i])} bytes of AAD and payload; "
                         f"the gpu kernels take at most {MAX_GHASH_INPUT_BYTES} (one power of H per block)")

    data = alloc("data", len(joined) + SLACK_BYTES, np.uint8)
    data[:len(joined)] = np.frombuffer(joined, dtype=np.uint8)
    offsets = alloc("offsets", n, np.uint64)
    _exclusive_cumsum(offsets, stride)
    lengths = alloc("lengths", n, np.uint32)
    lengths[:] = payload

    nonce_buf = alloc("nonces", NONCE_BYTES * n, np.uint8)
    nonce_buf[:] = np.frombuffer(b"".join(nonces), dtype=np.uint8)

    joined_aad = b"".join(aads)
    aad = alloc("aad", len(joined_aad) + SLACK_BYTES, np.uint8)
    aad[:len(joined_aad)] = np.frombuffer(joined_aad, dtype=np.uint8)
    aad_offsets = alloc("aad_offsets", n, np.uint64)
    _exclusive_cumsum(aad_offsets, aad_lens)
    aad_lengths = alloc("aad_lengths", n, np.uint32)
    aad_lengths[:] = aad_lens

    slot_arr = alloc("slots", n, np.uint32)
    if isinstance(slots, int):
        slot_arr[:] = slots
    else:
        if len(slots) != n:
            raise ValueError(f"batch of {n} payloads with {len(slots)} SA slots")
        slot_arr[:] = np.fromiter(slots, dtype=np.int64, count=n)
    verdicts = alloc("verdicts", n, np.uint8)
    verdicts[:] = 0

    busy = payload != SKIP
    ghash = int((((aad_lens + 15) // 16 + (payload + 15) // 16 + 1) * busy).sum())
    return Staged(n=n, decrypt=decrypt, data=data, data_bytes=len(joined), offsets=offsets,
                  lengths=lengths, nonces=nonce_buf, aad=aad, aad_offsets=aad_offsets,
                  aad_lengths=aad_lengths, slots=slot_arr, verdicts=verdicts,
                  ghash_blocks=max(ghash, 1))


def stage_buffer(alloc: Alloc, *, slot: int, buf, offsets, lengths, nonces, aads,
                 decrypt: bool) -> Staged:
    """Lay out a batch given as one buffer (the core's `BatchAead` call): message i is
    `buf[offsets[i]:offsets[i] + lengths[i]]`, its tag right after it; `nonces` n x 12 bytes,
    `aads` n x w bytes.  A region outside the buffer is a ValueError, before anything moves."""
    n = len(offsets)
    offsets = np.asarray(offsets, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    if n == 0:
        raise ValueError("an empty batch has nothing to stage")
    if len(nonces) != NONCE_BYTES * n or len(aads) % n:
        raise ValueError(f"batch of {n} messages with {len(nonces)} nonce bytes and {len(aads)} AAD bytes")
    width = len(aads) // n
    if (offsets < 0).any() or (lengths < 0).any() or int((offsets + lengths).max()) + TAG_BYTES > len(buf):
        raise ValueError("a message or its tag lies outside the batch buffer")
    if int(lengths.max()) + width > MAX_GHASH_INPUT_BYTES:
        raise ValueError(f"a message of {int(lengths.max())} bytes is over the gpu kernels' limit "
                         f"of {MAX_GHASH_INPUT_BYTES} bytes of AAD and payload")
    size = len(buf)
    data = alloc("data", size + SLACK_BYTES, np.uint8)
    data[:size] = np.frombuffer(buf, dtype=np.uint8)
    offs = alloc("offsets", n, np.uint64)
    offs[:] = offsets
    lens = alloc("lengths", n, np.uint32)
    lens[:] = lengths
    nonce_buf = alloc("nonces", NONCE_BYTES * n, np.uint8)
    nonce_buf[:] = np.frombuffer(nonces, dtype=np.uint8)
    aad = alloc("aad", len(aads) + SLACK_BYTES, np.uint8)
    aad[:len(aads)] = np.frombuffer(aads, dtype=np.uint8)
    aad_offsets = alloc("aad_offsets", n, np.uint64)
    aad_offsets[:] = np.arange(n, dtype=np.uint64) * np.uint64(width)
    aad_lengths = alloc("aad_lengths", n, np.uint32)
    aad_lengths[:] = width
    slot_arr = alloc("slots", n, np.uint32)
    slot_arr[:] = slot
    verdicts = alloc("verdicts", n, np.uint8)
    verdicts[:] = 0
    ghash = int(((width + 15) // 16 + (lengths + 15) // 16 + 1).sum())
    return Staged(n=n, decrypt=decrypt, data=data, data_bytes=size, offsets=offs, lengths=lens,
                  nonces=nonce_buf, aad=aad, aad_offsets=aad_offsets, aad_lengths=aad_lengths,
                  slots=slot_arr, verdicts=verdicts, ghash_blocks=max(ghash, 1))


def check_verdicts(st: Staged) -> None:
    """Every packet must carry a verdict that fits it: anything else is a launch bug, which must
    never turn into "authenticated" or into a silently missing packet."""
    v = st.verdicts
    skipped = st.lengths == SKIP
    wrong = (v == 0) | (v > VERDICT_SKIPPED) | ((v == VERDICT_SKIPPED) != skipped)
    if not st.decrypt:
        wrong |= v != VERDICT_OK
    if wrong.any():
        i = int(np.argmax(wrong))
        raise RuntimeError(f"the GPU kernel left packet {i} of {st.n} with verdict {int(v[i])}: "
                           "launch geometry or transfer bug")


def sealed(st: Staged) -> list[bytes]:
    """ciphertext || tag of every packet of a sealed batch."""
    check_verdicts(st)
    view = memoryview(st.data)
    starts = st.offsets.tolist()
    ends = (st.offsets + st.lengths + TAG_BYTES).tolist()
    return [view[s:e].tobytes() for s, e in zip(starts, ends)]


def opened(st: Staged) -> list[bytes | None]:
    """The plaintext of every packet of an opened batch, None where the tag does not verify."""
    check_verdicts(st)
    view = memoryview(st.data)
    ok = (st.verdicts == VERDICT_OK).tolist()
    starts = st.offsets.tolist()
    ends = (st.offsets + np.where(st.lengths == SKIP, 0, st.lengths)).tolist()
    return [view[s:e].tobytes() if good else None for s, e, good in zip(starts, ends, ok)]


__all__ = ["Alloc", "Staged", "opened", "sealed", "stage", "stage_buffer", "VERDICT_BAD_TAG"]

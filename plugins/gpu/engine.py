"""The host side of the `gpu` backend: SA slots on the device, and one kernel launch per batch.

Owns: `GpuEngine` (one launcher, the table of installed SAs, the lock that serialises batches
through the launcher's reused buffers) and `GpuAead`, the object an SA binds: `encrypt` /
`decrypt` (a batch of one: the registration self-test and single-packet `protect` use them),
`frame_protect` / `frame_unprotect` (`ipsec_core.crypto.base.FramingAead`: whole ESP batches of
an SA framed by the kernels, see `framing`; what `protect_batch` / `unprotect_batch` of an SA
on this backend take), `encrypt_batch` / `decrypt_batch` (what `ipsec_core.dataplane.esp.offload`
calls, once per batch, for a batch or an SA framing declines), and `seal_batch` / `open_batch`
(`ipsec_core.crypto.base.BatchAead`: one buffer of messages, in place, one launch).
Must not: hold protocol rules (nonces, AADs and ICV checks on the wire are the core's), do I/O
on the data path, or import CuPy (launchers do; see `cupy_launcher` and `cpu_launcher`).

A launcher is any object with `alloc(name, count, dtype)`, `install(slot, key)`,
`set_params(slot, params)`, `clear(slot)`, `run(staged, lanes=None)` and, for ESP framing
(`ipsec_plugins.gpu.framing`), `run_seal` / `run_open`: the CuPy one for a real GPU, the CPU
build of the same kernel source for tests.
"""
from __future__ import annotations

import threading
import weakref
from typing import Sequence

from ipsec_core.errors import AuthenticationError
from ipsec_plugins.gpu import framing, staging
from ipsec_plugins.gpu.source import NONCE_BYTES, TAG_BYTES


class GpuEngine:
    """One device (or the CPU build), shared by every SA a `GpuBackend` installs."""

    def __init__(self, launcher):
        self.launcher = launcher
        self._lock = threading.RLock()
        self._next_slot = 0
        self._free: list[int] = []
        self._released: list[int] = []     # appended by finalizers; cleared at the next install
        #: Force the threads per packet (1..32, a power of two); None lets the launcher plan.
        self.lanes: int | None = None

    def install(self, key: bytes) -> int:
        """Expand `key` into a free SA slot on the device; return the slot."""
        with self._lock:
            self._reclaim()
            slot = self._free.pop() if self._free else self._next_slot
            if slot == self._next_slot:
                self._next_slot += 1
            self.launcher.install(slot, key)
            return slot

    def release(self, slot: int) -> None:
        """Called when an SA's AEAD is collected: may run inside any allocation, so it only
        records the slot; its key schedule is wiped at the next install."""
        self._released.append(slot)

    def _reclaim(self) -> None:
        while self._released:
            slot = self._released.pop()
            self.launcher.clear(slot)
            self._free.append(slot)

    @property
    def slots_in_use(self) -> int:
        return self._next_slot - len(self._free) - len(self._released)

    def run(self, slots: int | Sequence[int], nonces: Sequence[bytes], items: Sequence[bytes],
            aads: Sequence[bytes], *, decrypt: bool) -> list:
        """Seal or open one batch in one launch; see `GpuAead.encrypt_batch` / `decrypt_batch`."""
        if not items:
            if len(nonces) or len(aads):
                raise ValueError(f"batch of 0 payloads with {len(nonces)} nonces and {len(aads)} AADs")
            return []
        with self._lock:
            st = staging.stage(self.launcher.alloc, slots=slots, nonces=nonces, items=items,
                               aads=aads, decrypt=decrypt)
            self.launcher.run(st, lanes=self.lanes)
            return staging.opened(st) if decrypt else staging.sealed(st)


    def run_buffer(self, slot: int, buf, offsets, lengths, nonces, aads, *, decrypt: bool):
        """Seal or open the messages of one buffer in place, in one launch (`BatchAead`)."""
        import numpy as np

        if not len(offsets):
            return b""
        with self._lock:
            st = staging.stage_buffer(self.launcher.alloc, slot=slot, buf=buf, offsets=offsets,
                                      lengths=lengths, nonces=nonces, aads=aads, decrypt=decrypt)
            self.launcher.run(st, lanes=self.lanes)
            staging.check_verdicts(st)
            ok = st.verdicts == staging.VERDICT_OK
            if decrypt:
                # only the plaintext of messages whose tag verifies goes back into the buffer
                view = np.frombuffer(buf, dtype=np.uint8)
                keep = view.copy()
                view[:] = st.data[:len(view)]
                for i in np.flatnonzero(~ok).tolist():
                    o, n = int(st.offsets[i]), int(st.lengths[i])
                    view[o:o + n] = keep[o:o + n]
                return ok.astype(np.uint8).tobytes()
            memoryview(buf)[:] = st.data[:len(buf)].tobytes()
            return None


class GpuAead:
    """AES-GCM with 16-byte tags for one SA, computed by the engine's kernels."""

    __slots__ = ("tag_bytes", "slot", "esp_params", "_engine", "__weakref__")

    def __init__(self, engine: GpuEngine, key: bytes):
        self.tag_bytes = TAG_BYTES
        self.esp_params: bytes | None = None     # what framing last wrote to the device for it
        self._engine = engine
        self.slot = engine.install(key)
        weakref.finalize(self, engine.release, self.slot)

    @property
    def engine(self) -> GpuEngine:
        return self._engine

    def encrypt(self, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
        return self._engine.run(self.slot, (nonce,), (plaintext,), (aad,), decrypt=False)[0]

    def decrypt(self, nonce: bytes, ciphertext_and_tag: bytes, aad: bytes) -> bytes:
        out = self._engine.run(self.slot, (nonce,), (ciphertext_and_tag,), (aad,), decrypt=True)[0]
        if out is None:
            raise AuthenticationError("AEAD tag does not verify")
        return out

    def seal_batch(self, buf, offsets, lengths, nonces, aads) -> None:
        """`BatchAead`: every message of `buf` sealed in place, its tag after it, in one launch."""
        self._engine.run_buffer(self.slot, buf, offsets, lengths, nonces, aads, decrypt=False)

    def open_batch(self, buf, offsets, lengths, nonces, aads) -> bytes:
        """`BatchAead`: every message of `buf` opened in place in one launch; one verdict byte
        per message, 1 where its tag verifies (its bytes stay as they were where not)."""
        return self._engine.run_buffer(self.slot, buf, offsets, lengths, nonces, aads, decrypt=True)

    def framing_refusal(self, engine) -> str | None:
        """`FramingAead`: None when the kernels frame this SA's ESP packets, else why not."""
        return framing.unframable(engine)

    def frame_protect(self, engine, packets, *, now: float) -> list[bytes] | None:
        """`FramingAead`: the SA's batch framed in one esp_seal launch, or None (declined)."""
        return framing.frame_protect(engine, packets, now=now)

    def frame_unprotect(self, engine, packets, *, now: float) -> list | None:
        """`FramingAead`: the SA's batch checked and opened in one esp_open launch, or None."""
        return framing.frame_unprotect(engine, packets, now=now)

    def encrypt_batch(self, nonces: Sequence[bytes], plaintexts: Sequence[bytes],
                      aads: Sequence[bytes]) -> list[bytes]:
        """ciphertext || tag for every packet, in one launch."""
        return self._engine.run(self.slot, nonces, plaintexts, aads, decrypt=False)

    def decrypt_batch(self, nonces: Sequence[bytes], ciphertexts_and_tags: Sequence[bytes],
                      aads: Sequence[bytes]) -> list[bytes | None]:
        """The plaintext of every packet, None where the tag does not verify, in one launch."""
        return self._engine.run(self.slot, nonces, ciphertexts_and_tags, aads, decrypt=True)


def mixed_batch(aeads: Sequence[GpuAead], nonces: Sequence[bytes], items: Sequence[bytes],
                aads: Sequence[bytes], *, decrypt: bool) -> list:
    """One launch over packets of several SAs (each packet names its SA's `GpuAead`; all of them
    of one backend).  The kernel indexes its key-schedule table per packet."""
    if not aeads:
        return []
    engine = aeads[0].engine
    if any(a.engine is not engine for a in aeads):
        raise ValueError("a mixed batch needs AEADs of one gpu backend (one device SA table)")
    return engine.run([a.slot for a in aeads], nonces, items, aads, decrypt=decrypt)


__all__ = ["GpuAead", "GpuEngine", "mixed_batch", "NONCE_BYTES"]

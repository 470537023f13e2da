"""Batch paths for backends whose AEAD computes many packets in one call (`encrypt_batch` /
`decrypt_batch`, see `ipsec_core.crypto.base`): the GPU backend, for instance.

Owns: splitting a batch into "everything but the crypto" (done by the very same single-packet
code, so bytes, sequence numbers, replay state, counters and drop reasons cannot differ from
one-by-one processing) and "the crypto" (one call to the backend for the whole batch).

How: on the way out, each packet first goes through `EspEngine.protect` with a stand-in AEAD
that records (nonce, plaintext, aad) and returns zeros of the right length; the backend then
seals every recorded plaintext in one call and the real ciphertexts replace the zeros (they are
always the tail of the packet; an IPv6 UDP checksum that covered the zeros is recomputed).  On
the way in, every packet the window would admit is opened in one backend call first; then each
packet goes through `EspEngine.unprotect` with a stand-in AEAD that answers from those results,
so the replay window sees duplicates inside the batch exactly as it would one by one.
"""
from __future__ import annotations

import struct

from ipsec_core.errors import AuthenticationError, PacketDropped
from ipsec_core.wire.ip import IPPROTO_UDP

_U32 = struct.Struct("!I")
_U64 = struct.Struct("!Q")


class _Recorder:
    """Stands in for the AEAD during phase 1 of an outbound batch."""

    __slots__ = ("tag_bytes", "calls")

    def __init__(self, tag_bytes: int):
        self.tag_bytes = tag_bytes
        self.calls: list[tuple[bytes, bytes, bytes]] = []

    def encrypt(self, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
        self.calls.append((nonce, plaintext, aad))
        return bytes(len(plaintext) + self.tag_bytes)


class _Answers:
    """Stands in for the AEAD during phase 2 of an inbound batch."""

    __slots__ = ("tag_bytes", "results", "real")

    def __init__(self, real, results: dict):
        self.tag_bytes = real.tag_bytes
        self.results = results
        self.real = real

    def decrypt(self, nonce: bytes, data: bytes, aad: bytes) -> bytes:
        key = (nonce, data, aad)
        if key not in self.results:          # not foreseen in phase 1: compute it here
            return self.real.decrypt(nonce, data, aad)
        result = self.results[key]
        if result is None:
            raise AuthenticationError("AEAD tag does not verify")
        return result


def protect_batch(engine, packets: list[bytes], now: float) -> list[bytes]:
    real = engine.aead
    recorder = _Recorder(real.tag_bytes)
    engine.aead = recorder
    try:
        staged = engine.protect_batch_generic(packets, now)
    except Exception as exc:
        staged, error = getattr(exc, "partial", []), exc
    else:
        error = None
    finally:
        engine.aead = real
    calls = recorder.calls
    sealed = real.encrypt_batch([c[0] for c in calls], [c[1] for c in calls], [c[2] for c in calls]) if calls else []
    out = []
    for packet, ct in zip(staged, sealed):
        packet = packet[:len(packet) - len(ct)] + ct
        if engine.encap and packet[0] >> 4 == 6:
            from ipsec_core.dataplane.esp.engine import _fill_udp6_checksum
            packet = _fill_udp6_checksum(packet, _udp6_offset(packet))
        out.append(packet)
    if error is not None:
        error.partial = out
        raise error
    return out


def _udp6_offset(packet: bytes) -> int:
    from ipsec_core.wire.ip import ipv6_split

    start, _, proto = ipv6_split(packet)
    assert proto == IPPROTO_UDP
    return start


def unprotect_batch(engine, packets: list[bytes], now: float) -> list:
    real = engine.aead
    # Phase 1: what the generic path would hand to decrypt, for packets the window admits now.
    nonces, datas, aads = [], [], []
    recorder = _DecryptRecorder()
    engine.aead = recorder
    replay = engine.sa.replay
    snapshot = replay.top, replay.bitmap
    try:
        for packet in packets:
            try:
                engine.unprotect(packet, now)
            except (PacketDropped, _Stop):
                pass
    finally:
        engine.aead = real
        replay.top, replay.bitmap = snapshot
    for nonce, data, aad in recorder.calls:
        nonces.append(nonce)
        datas.append(data)
        aads.append(aad)
    opened = real.decrypt_batch(nonces, datas, aads) if nonces else []
    results = dict(zip(zip(nonces, datas, aads), opened))
    # Phase 2: the generic path, answered from the batch results.
    engine.aead = _Answers(real, results)
    try:
        return engine.unprotect_batch_generic(packets, now)
    finally:
        engine.aead = real


class _Stop(Exception):
    """Ends phase 1 for one packet right after its decrypt inputs are known."""


class _DecryptRecorder:
    __slots__ = ("calls", "tag_bytes")

    def __init__(self):
        self.calls: list[tuple[bytes, bytes, bytes]] = []
        self.tag_bytes = 0

    def decrypt(self, nonce: bytes, data: bytes, aad: bytes) -> bytes:
        self.calls.append((nonce, data, aad))
        raise _Stop

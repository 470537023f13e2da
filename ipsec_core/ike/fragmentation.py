"""IKE fragmentation (RFC 7383): splitting an encrypted message into SKF fragments, each
encrypted and integrity protected on its own, and putting received fragments back together.

Owns: the fragment sizes (the largest IKE message a datagram of `fragment_size` bytes holds,
and the plaintext each fragment carries), sealing the fragments with the IKE SA's
`SkProtector`, and reassembly with limits (fragment count, total size, age), each refusal a
reason the session counts.
Must not: decide whether fragmentation was negotiated (the session does), hold keys beyond the
protector it is handed, or do I/O.  Time arrives as `now`.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Callable

from ipsec_core.ike.constants import GENERIC_PAYLOAD_HEADER_BYTES, IKE_HEADER_BYTES, PayloadType

#: Fragment Number and Total Fragments (RFC 7383 2.5).
SKF_FIELDS_BYTES = 4
IPV4_HEADER_BYTES, IPV6_HEADER_BYTES, UDP_HEADER_BYTES = 20, 40, 8
NON_ESP_MARKER_BYTES = 4
#: Reassembly limits: a certificate chain of a few kilobytes needs a handful of fragments; these
#: leave room for large chains while bounding what an authenticated peer can make us hold.
MAX_FRAGMENTS = 64
MAX_MESSAGE_BYTES = 65535
#: Fragments of a message still incomplete after this long are dropped (the sender retransmits
#: every fragment of an unanswered message anyway).
REASSEMBLY_TIMEOUT_S = 30.0

_HEADER = struct.Struct("!8s8sBBBBII")
_GENERIC = struct.Struct("!BBH")


def max_message_bytes(fragment_size: int, *, ipv6: bool, nat_t: bool) -> int:
    """The largest IKE message (header included) that fits an IP datagram of `fragment_size`
    bytes, as strongSwan's charon.fragment_size counts it."""
    overhead = (IPV6_HEADER_BYTES if ipv6 else IPV4_HEADER_BYTES) + UDP_HEADER_BYTES
    if nat_t:
        overhead += NON_ESP_MARKER_BYTES
    return fragment_size - overhead


def plaintext_per_fragment(message_bytes: int, protector) -> int:
    """How many plaintext bytes one fragment of at most `message_bytes` carries: what is left
    after the IKE header, the SKF header, the IV and the ICV, less padding to the cipher block
    and the Pad Length octet."""
    room = (message_bytes - IKE_HEADER_BYTES - GENERIC_PAYLOAD_HEADER_BYTES - SKF_FIELDS_BYTES
            - protector.iv_bytes - protector.icv_bytes)
    block = protector.block
    usable = (room // block) * block - 1
    if usable < 1:
        raise ValueError(f"fragment size leaves no room for data ({message_bytes} bytes per "
                         "IKE message)")
    return usable


def seal_fragments(*, spi_i: bytes, spi_r: bytes, exchange: int, flags: int, message_id: int,
                   first_inner_type: int, inner: bytes, protector, message_bytes: int,
                   random_iv: Callable[[], bytes | None]) -> list[bytes]:
    """The IKE messages, one per fragment, that carry `inner` (the serialized inner payloads)
    in SKF payloads of at most `message_bytes` each.  Fragment 1 names the first inner payload;
    the others carry 0 there (RFC 7383 2.5)."""
    chunk = plaintext_per_fragment(message_bytes, protector)
    parts = [inner[i:i + chunk] for i in range(0, len(inner), chunk)] or [b""]
    total = len(parts)
    if total > MAX_FRAGMENTS:
        raise ValueError(f"message needs {total} fragments, more than {MAX_FRAGMENTS}")
    out = []
    for number, part in enumerate(parts, 1):
        sealed_len = protector.seal_length(len(part))
        length = IKE_HEADER_BYTES + GENERIC_PAYLOAD_HEADER_BYTES + SKF_FIELDS_BYTES + sealed_len
        head = (_HEADER.pack(spi_i, spi_r, PayloadType.SKF, 0x20, exchange, flags, message_id, length)
                + _GENERIC.pack(first_inner_type if number == 1 else PayloadType.NONE, 0,
                                GENERIC_PAYLOAD_HEADER_BYTES + SKF_FIELDS_BYTES + sealed_len)
                + struct.pack("!HH", number, total))
        out.append(head + protector.seal(head, part, random_iv=random_iv()))
    return out


@dataclass
class Reassembly:
    """The fragments received so far of one message (one message ID, one direction)."""

    message_id: int
    total: int
    started: float
    parts: dict[int, bytes] = field(default_factory=dict)
    first_inner_type: int = PayloadType.NONE
    size: int = 0

    @property
    def complete(self) -> bool:
        return len(self.parts) == self.total


class Reassembler:
    """Reassembly for one direction of one IKE SA.  `add()` takes a fragment whose ICV the
    session has checked and returns (first inner payload type, inner payloads' bytes) once the
    message is complete, else None; `drops` counts each fragment refused, by reason."""

    def __init__(self, *, max_fragments: int = MAX_FRAGMENTS, max_bytes: int = MAX_MESSAGE_BYTES,
                 timeout: float = REASSEMBLY_TIMEOUT_S):
        self.max_fragments = max_fragments
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.current: Reassembly | None = None
        self.drops: dict[str, int] = {}

    def _drop(self, reason: str) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + 1

    def add(self, *, message_id: int, number: int, total: int, first_inner_type: int,
            plaintext: bytes, now: float) -> tuple[int, bytes] | None:
        if total > self.max_fragments:
            self._drop("too_many_fragments")
            return None
        if number == 1 and first_inner_type == PayloadType.NONE:
            self._drop("first_fragment_without_payload")
            return None
        cur = self.current
        if cur is not None and (now - cur.started > self.timeout or message_id != cur.message_id):
            if message_id != cur.message_id or now - cur.started > self.timeout:
                self._drop("stale_reassembly")
            cur = self.current = None
        if cur is not None and total != cur.total:
            # RFC 7383 2.6.1: a larger Total Fragments means the sender re-fragmented (a smaller
            # path MTU): start again; a smaller one belongs to an older try and is dropped.
            if total < cur.total:
                self._drop("stale_total_fragments")
                return None
            cur = self.current = None
        if cur is None:
            cur = self.current = Reassembly(message_id, total, now)
        if number in cur.parts:
            self._drop("duplicate_fragment")
            return None
        if cur.size + len(plaintext) > self.max_bytes:
            self._drop("message_too_large")
            self.current = None
            return None
        cur.parts[number] = plaintext
        cur.size += len(plaintext)
        if number == 1:
            cur.first_inner_type = first_inner_type
        if not cur.complete:
            return None
        self.current = None
        return cur.first_inner_type, b"".join(cur.parts[i] for i in range(1, cur.total + 1))


__all__ = ["max_message_bytes", "plaintext_per_fragment", "seal_fragments", "Reassembler",
           "MAX_FRAGMENTS", "MAX_MESSAGE_BYTES", "REASSEMBLY_TIMEOUT_S"]

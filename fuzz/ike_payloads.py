"""Fuzz target: every IKEv2 payload codec (`ike/payloads.py`): a whole message
(`parse_message`) or a payload chain as found inside a decrypted SK payload
(`parse_payloads` with the first payload type from byte 1).

Byte 0 even: the rest is a datagram; odd: byte 1 is the first payload type, the rest the
chain.  Allowed: the decoded message / payloads, or a RemoteIkeError (IkeSyntaxError,
InvalidMajorVersion, UnsupportedCriticalPayload: what the session answers with a notify or
ignores).  Checked: whatever decodes encodes again, and that encoding decodes to the same.
"""
from __future__ import annotations

from ipsec_core.ike.payloads import (RemoteIkeError, parse_message, parse_payloads,
                                     serialize_message, serialize_payloads)

from fuzz._harness import Reader, main

TARGET = "ike_payloads"


def test_one_input(data: bytes) -> None:
    r = Reader(data)
    if r.int() & 1 == 0:
        try:
            msg = parse_message(r.rest())
        except RemoteIkeError:
            return
        again = parse_message(serialize_message(msg))
        assert again == msg, "message changed through serialize / parse"
        return
    first = r.int()
    try:
        payloads = parse_payloads(first, r.rest())
    except RemoteIkeError:
        return
    if not payloads:
        return
    first_type, body = serialize_payloads(payloads)
    assert parse_payloads(first_type, body) == payloads, "payloads changed through serialize / parse"


if __name__ == "__main__":
    main(TARGET, test_one_input)

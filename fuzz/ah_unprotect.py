"""Fuzz target: AH unprotect (RFC 4302), one by one and in batches: HMAC, XCBC, CMAC and GMAC
integrity, tunnel and transport, IPv4 and IPv6 (with the extension headers whose mutable
fields the ICV skips), ESN.

Input layout as fuzz/esp_unprotect.py (operation 3, authentic junk, is ESP's only): byte 0 the
variant, byte 1 the operation (0 raw packet, 1 damaged valid packet, 2 round trip of any inner
packet, 4 batch against one by one), byte 2 the window edge, byte 3 the bitmap.
"""
from __future__ import annotations

from ipsec_core.errors import LocalError, PacketDropped

from fuzz._harness import Reader, main
from fuzz._sa import AH_VARIANTS, NOW, fix_lengths, pair
from fuzz.esp_unprotect import batch, damaged, unprotect_checked

TARGET = "ah_unprotect"


def test_one_input(data: bytes) -> None:
    r = Reader(data)
    p = pair(r.pick(AH_VARIANTS))
    op = r.int() % 5
    top = p.reset(r.int(), r.int(8))
    if op in (0, 3):
        unprotect_checked(p, r.rest())
    elif op == 1:
        unprotect_checked(p, damaged(p, r, top + 1 + r.int() % 3))
    elif op == 2:
        inner = fix_lengths(r.rest())
        if inner is None:
            return
        try:
            wire = p.packet(top + 1, inner)
        except (LocalError, PacketDropped):
            return
        assert p.inb.unprotect(wire, now=NOW) == inner, f"{p.variant.label}: round trip changed the packet"
    else:
        batch(p, r, top)
    p.probe()


if __name__ == "__main__":
    main(TARGET, test_one_input)

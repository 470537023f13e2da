"""The receiver checks the padding bytes (RFC 4303 2.4: 1, 2, 3, ...) on every batch path as
`unprotect` does: packets correctly encrypted with the right pad length but other padding bytes
are dropped as bad_padding by the scalar fast loop (`esp_fast`, batches under 32) and by the
numpy tunnel path (`esp_vec`: its bulk shortcut for batches of one size and TOS, and its
per-packet trailer check), and the rest of the batch is what one-by-one processing gives."""
import random

import pytest

from dataplane import test_esp_vec as tunnel
from dataplane.test_batch import configs
from dataplane.test_esp_vec_transport import body_of, reseal
from ipsec_core.dataplane.esp import vec as esp_vec
from ipsec_core.dataplane.sa import SecurityAssociation
from ipsec_core.errors import DropReason

ENCAP = [pytest.param(None, id="esp"), pytest.param((4500, 4500), id="udp")]


def bad_padding(kind: str):
    """A plaintext change keeping the pad length a valid one (at least 1 byte; 4 more when the
    payload needs none) but writing other padding bytes."""
    def change(pt: bytes) -> bytes:
        body = body_of(pt)
        n = -(len(body) + 2) % 4 or 4
        good = bytes(range(1, n + 1))
        pad = {"zeros": bytes(n), "reversed": good[::-1] if n > 1 else b"\x02",
               "last": good[:-1] + bytes((n + 1,)), "first": b"\x00" + good[1:]}[kind]
        assert pad != good and len(pad) == n
        return body + pad + bytes((n, pt[-1]))
    return change


KINDS = ["zeros", "reversed", "last", "first"]


def both_ways(in_cfg, batches) -> list:
    """Verdicts of one-by-one and batched unprotect on twin SAs; they and the SA states agree."""
    one, many = SecurityAssociation(in_cfg, now=0.0), SecurityAssociation(in_cfg, now=0.0)
    seen = []
    for batch in batches:
        single = tunnel.unprotect_single(one, batch, now=0.0)
        assert tunnel.unprotect_batch(many, batch, now=0.0) == single
        assert many.state() == one.state()
        seen += single
    return seen


def reasons(seen) -> list:
    return [v[1] for v in seen if isinstance(v, tuple)]


@pytest.mark.parametrize("encap", ENCAP)
def test_scalar_fast_loop_checks_padding_bytes(encap):
    out_cfg, in_cfg = configs("aes128gcm16", encap=encap)
    out, inb = SecurityAssociation(out_cfg, now=0.0), SecurityAssociation(in_cfg, now=0.0)
    assert inb.engine._fast_unprotect is not None
    packets = tunnel.clean(random.Random(21), 24)
    wire = [out.protect(p, now=0.0) for p in packets]
    bad_at = {2: "zeros", 5: "reversed", 9: "last", 13: "first", 14: "zeros", 15: "zeros"}
    for i, kind in bad_at.items():
        wire[i] = reseal(wire[i], inb, bad_padding(kind))
    seen = both_ways(in_cfg, [wire[:12], wire[12:]])       # under 32: the scalar loop
    assert reasons(seen) == [DropReason.BAD_PADDING] * len(bad_at)
    assert [v for i, v in enumerate(seen) if i not in bad_at] == \
        [p for i, p in enumerate(packets) if i not in bad_at]


@pytest.mark.skipif(not esp_vec.available(), reason="numpy is not installed")
@pytest.mark.parametrize("encap", ENCAP)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("sizes, bad", [
    ("mixed", (17,)),                 # per-packet trailer check
    ("mixed", (0, 40)),
    ("bulk", (0,)),                   # the bulk shortcut compares with the first packet's tail
    ("bulk", (33,)),
    ("bulk", "all"),                  # every packet the same wrong tail: the shortcut's own check
])
def test_vector_path_checks_padding_bytes(encap, kind, sizes, bad):
    r = tunnel.rig(encap=encap)
    rng = random.Random(f"{kind}{sizes}{bad}")
    packets = tunnel.clean(rng, 64, sizes)
    warm = [r.sender.protect(p, now=0.0) for p in tunnel.clean(rng, 64, sizes)]
    wire = [r.sender.protect(p, now=0.0) for p in packets]
    bad = range(64) if bad == "all" else bad
    for i in bad:
        wire[i] = reseal(wire[i], r.inb, bad_padding(kind))
    tunnel.check_inbound(r, [warm])
    assert r.fallback_in.calls == 0                       # clean batches: the vector path
    seen = tunnel.check_inbound(r, [wire])
    assert [i for i, v in enumerate(seen) if isinstance(v, tuple)] == list(bad)
    assert set(reasons(seen)) == {DropReason.BAD_PADDING}
    assert r.inb.stats.drops == {"bad_padding": len(bad)}

"""Below the I/O layer time is an argument: every data-plane entry point that needs the time
takes `now` as a required keyword, and nothing in `ipsec_core/dataplane/` reads a clock."""
import ast
import ipaddress
import os
from pathlib import Path

import pytest
from scapy.layers.inet import IP, UDP

import ipsec_core.dataplane
from ipsec_core.dataplane.bundle import SaBundle
from ipsec_core.dataplane.fragments import Reassembler
from ipsec_core.dataplane.sa import Direction, Mode, SaConfig, SecurityAssociation
from ipsec_core.dataplane.sad import Sad
from ipsec_core.transforms.keywords import parse_ah, parse_esp

A, B = ipaddress.ip_address("192.0.2.1"), ipaddress.ip_address("192.0.2.2")
INNER = bytes(IP(src="198.51.100.1", dst="203.0.113.1") / UDP(sport=5000, dport=53) / b"q")


def _config(direction: Direction, **kw) -> SaConfig:
    local, remote = (A, B) if direction == Direction.OUT else (B, A)
    return SaConfig(name=f"sa-{direction.value}", spi=0x1234, direction=direction, mode=Mode.TUNNEL,
                    proposal=parse_esp("aes128gcm16"), enc_key=bytes(20), local=local,
                    remote=remote, **kw)


def test_installing_an_sa_needs_now():
    with pytest.raises(TypeError, match="now"):
        SecurityAssociation(_config(Direction.OUT))
    with pytest.raises(TypeError, match="now"):
        SecurityAssociation(_config(Direction.OUT), now=None)


@pytest.mark.parametrize("call", [
    lambda out, inb, wire: out.protect(INNER),
    lambda out, inb, wire: out.protect_wire(INNER),
    lambda out, inb, wire: out.protect_batch([INNER]),
    lambda out, inb, wire: out.dummy(),
    lambda out, inb, wire: inb.unprotect(wire),
    lambda out, inb, wire: inb.unprotect_batch([wire]),
], ids=["protect", "protect_wire", "protect_batch", "dummy", "unprotect", "unprotect_batch"])
def test_every_sa_method_needs_now(call):
    out = SecurityAssociation(_config(Direction.OUT), now=0.0)
    inb = SecurityAssociation(_config(Direction.IN), now=0.0)
    wire = out.protect(INNER, now=0.0)
    before = out.state(), inb.state()
    with pytest.raises(TypeError, match="now"):
        call(out, inb, wire)
    assert (out.state(), inb.state()) == before


def test_sad_bundle_and_reassembler_need_now():
    out = SecurityAssociation(_config(Direction.OUT), now=0.0)
    inb = SecurityAssociation(_config(Direction.IN), now=0.0)
    sad = Sad()
    sad.add(inb)
    with pytest.raises(TypeError, match="now"):
        sad.unprotect(out.protect(INNER, now=0.0))
    transport = dict(mode=Mode.TRANSPORT, local=None, remote=None)
    esp = SecurityAssociation(SaConfig(name="esp", spi=0x2000, direction=Direction.OUT,
                                       proposal=parse_esp("aes128gcm16"), enc_key=bytes(20),
                                       **transport), now=0.0)
    ah = SecurityAssociation(SaConfig(name="ah", spi=0x2001, direction=Direction.OUT, protocol="ah",
                                      proposal=parse_ah("sha256"), integ_key=os.urandom(32),
                                      **transport), now=0.0)
    bundle = SaBundle(ah, esp)
    with pytest.raises(TypeError, match="now"):
        bundle.protect(INNER)
    with pytest.raises(TypeError, match="now"):
        bundle.unprotect(INNER)
    with pytest.raises(TypeError, match="now"):
        Reassembler().push(INNER)
    with pytest.raises(TypeError, match="now"):
        Reassembler().expire()


def _clock_reads(path: Path) -> list[str]:
    """Imports of `time` / `datetime` and calls of their clocks in one module."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names if a.name in ("time", "datetime")]
        elif isinstance(node, ast.ImportFrom) and node.module in ("time", "datetime"):
            found.append(f"from {node.module} import ...")
        elif isinstance(node, ast.Attribute) and node.attr in (
                "monotonic", "monotonic_ns", "time", "time_ns", "perf_counter", "perf_counter_ns",
                "now", "utcnow") and isinstance(node.value, ast.Name) and node.value.id in (
                "time", "datetime", "_time"):
            found.append(f"{node.value.id}.{node.attr}")
    return found


def test_the_data_plane_reads_no_clock():
    root = Path(ipsec_core.dataplane.__file__).parent
    reads = {str(p.relative_to(root)): r for p in sorted(root.rglob("*.py")) if (r := _clock_reads(p))}
    assert reads == {}

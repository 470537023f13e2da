"""ipsec-camellia's own tests: the conformance kit of ipsec-suite on its backend (every check
the built-in backends pass), its vectors, the CTR-on-ECB construction, and the ESP wire format
checked independently of the core against RFC 4312 / RFC 5529 with `cryptography` directly.

Run from the repository root (`python -m pytest`, which collects this folder) or from here.
"""
from __future__ import annotations

import hashlib
import hmac
import importlib.util
import ipaddress
import struct
from pathlib import Path

import pytest

ipsec_camellia = pytest.importorskip(
    "ipsec_camellia", reason="the example plugin is not installed: pip install ./examples/camellia")

from ipsec_core.transforms.keywords import parse_esp  # noqa: E402
from ipsec_core.dataplane.sa import Direction, Mode, SaConfig, SecurityAssociation  # noqa: E402
from ipsec_core.testing import plugin_registry  # noqa: E402

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def registry():
    return plugin_registry(ipsec_camellia)


# -- the kit: every check, one test each -------------------------------------------------------
@pytest.mark.ipsec_backend("camellia", plugins=["ipsec_camellia"])
def test_conformance(ipsec_check):
    ipsec_check()


def test_the_kit_ran_every_kind_of_check():
    from ipsec_core.testing import conformance_checks

    ids = [c.id for c in conformance_checks("camellia", plugins=["ipsec_camellia"])]
    assert "camellia:registered" in ids
    assert {"camellia:vectors[camellia-cbc]", "camellia:vectors[camellia-ctr]"} <= set(ids)
    for kw in ("camellia128-sha256", "camellia192-sha256", "camellia256-sha256",
               "camellia128ctr-sha256", "camellia192ctr-sha256", "camellia256ctr-sha256"):
        assert f"camellia:esp[{kw}]" in ids and f"camellia:batch[{kw}]" in ids


# -- registration -------------------------------------------------------------------------------
def test_transforms_and_backend_are_offered(registry):
    assert not [p for p in registry.problems if p.plugin == "ipsec_camellia"]
    cbc = registry.transforms.by_id(ipsec_camellia.ENCR_CAMELLIA_CBC)
    ctr = registry.transforms.by_id(ipsec_camellia.ENCR_CAMELLIA_CTR)
    assert (cbc.name, cbc.state, ctr.name, ctr.state) == (
        "ENCR_CAMELLIA_CBC", "offered", "ENCR_CAMELLIA_CTR", "offered")
    record = registry.records["camellia"]
    assert record.available and not record.failed
    assert [str(f) for f in record.features] == ["camellia-cbc(128/192/256)", "camellia-ctr(128/192/256)"]


@pytest.mark.parametrize("text,bits,key_bytes,encr", [
    ("camellia128-sha256", 128, 16, 23), ("camellia-sha1", 128, 16, 23),
    ("camellia192-sha384", 192, 24, 23), ("camellia256-sha512-esn", 256, 32, 23),
    ("camellia128ctr-sha256", 128, 20, 24), ("camellia256ctr-aesxcbc", 256, 36, 24),
])
def test_keywords(registry, text, bits, key_bytes, encr):
    prop = parse_esp(text, catalog=registry.transforms)
    assert (prop.key_bits, prop.enc_key_bytes, int(prop.encr)) == (bits, key_bytes, encr)
    assert parse_esp(prop.keyword, catalog=registry.transforms) == prop
    assert prop.keyword.startswith(f"camellia{bits}")


# -- vectors --------------------------------------------------------------------------------------
def test_vector_file_is_what_the_tool_derives_from_the_rfcs():
    spec = importlib.util.spec_from_file_location("make_vectors", HERE.parent / "tools" / "make_vectors.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    built = tool.build()
    tool.verify(built)                      # recomputed with cryptography's Camellia-ECB
    assert built == ipsec_camellia.load_vectors()
    assert len(built["ctr"]) == 9 and len(built["cbc"]) == 12
    assert all(v["id"].startswith(("rfc3713-", "rfc5528-")) for v in built["cbc"] + built["ctr"])


# -- the primitives -----------------------------------------------------------------------------
def test_ctr_counter_is_a_128_bit_integer_and_partial_blocks_work():
    backend = ipsec_camellia.CamelliaBackend()
    key = bytes(range(16))
    ctr = backend.cipher("camellia-ctr", key)
    top = b"\xff" * 16
    data = bytes(range(40))
    # block i uses counter (start + i) mod 2**128: from all-ones, the next block is all-zeros
    wrapped = ctr.encrypt(top, data)
    assert wrapped[16:32] == ctr.encrypt(bytes(16), data[16:32])
    assert ctr.decrypt(top, wrapped) == data
    assert ctr.encrypt(top, data[:5]) == wrapped[:5] and ctr.encrypt(top, b"") == b""
    with pytest.raises(ValueError, match="16-byte counter block"):
        ctr.encrypt(bytes(12), data)


def test_sizes_are_refused():
    backend = ipsec_camellia.CamelliaBackend()
    with pytest.raises(ValueError, match="16, 24 or 32 bytes"):
        backend.cipher("camellia-cbc", bytes(20))
    with pytest.raises(ValueError, match="multiple of 16"):
        backend.cipher("camellia-cbc", bytes(16)).encrypt(bytes(16), bytes(17))
    with pytest.raises(NotImplementedError):
        backend.cipher("aes-cbc", bytes(16))
    assert backend.probe() is None


# -- the wire format, checked without the core ------------------------------------------------
def _sa_pair(registry, proposal, key, integ):
    prop = parse_esp(proposal, catalog=registry.transforms)
    a, b = ipaddress.ip_address("192.0.2.1"), ipaddress.ip_address("192.0.2.2")
    common = dict(spi=0xCA3E1001, mode=Mode.TUNNEL, proposal=prop, enc_key=key, integ_key=integ)
    return (SecurityAssociation(SaConfig(name="o", direction=Direction.OUT, local=a, remote=b, **common),
                                registry=registry, now=0.0),
            SecurityAssociation(SaConfig(name="i", direction=Direction.IN, local=b, remote=a, **common),
                                registry=registry, now=0.0))


def _inner() -> bytes:
    from ipsec_core.wire.ip import IPPROTO_UDP, build_ipv4

    udp = struct.pack("!HHHH", 40000, 53, 8 + 33, 0) + b"camellia over ESP, 33 bytes long."
    return build_ipv4(src=bytes((198, 51, 100, 1)), dst=bytes((203, 0, 113, 1)),
                      proto=IPPROTO_UDP, payload_len=len(udp)) + udp


def _camellia(key, mode):
    from ipsec_camellia import _camellia

    camellia, cipher, _ = _camellia()
    return cipher(camellia(key), mode)


def test_cbc_packet_is_rfc4312_esp(registry):
    """Outer IPv4 | SPI | seq | 16-byte random IV | Camellia-CBC(payload | pad | pad len | 4) |
    HMAC-SHA-256-128 over SPI..ciphertext (RFC 4303, RFC 4312, RFC 4868)."""
    from cryptography.hazmat.primitives.ciphers import modes

    key, integ = bytes(range(32)), bytes(range(100, 132))
    out, inb = _sa_pair(registry, "camellia256-sha256", key, integ)
    inner = _inner()
    wire = out.protect(inner, now=0.0)
    esp = wire[20:]
    spi, seq = struct.unpack("!II", esp[:8])
    assert (spi, seq) == (0xCA3E1001, 1)
    iv, body, icv = esp[8:24], esp[24:-16], esp[-16:]
    assert icv == hmac.new(integ, esp[:-16], hashlib.sha256).digest()[:16]
    assert len(body) % 16 == 0
    dec = _camellia(key, modes.CBC(iv)).decryptor()
    plain = dec.update(body) + dec.finalize()
    pad_len, next_header = plain[-2], plain[-1]
    assert next_header == 4 and plain[-2 - pad_len:-2] == bytes(range(1, pad_len + 1))
    assert plain[:-2 - pad_len] == inner
    assert inb.unprotect(wire, now=0.0) == inner
    assert out.protect(inner, now=0.0)[28:44] != iv          # a fresh random IV per packet


def test_ctr_packet_is_rfc5529_esp(registry):
    """IV = the 64-bit sequence number; key stream = Camellia(nonce | IV | counter from 1);
    4-byte alignment (RFC 5529 section 4, as RFC 3686)."""
    from cryptography.hazmat.primitives.ciphers import modes

    key, nonce, integ = bytes(range(16)), b"\xde\xad\xbe\xef", bytes(range(100, 132))
    out, inb = _sa_pair(registry, "camellia128ctr-sha256", key + nonce, integ)
    inner = _inner()
    out.protect(inner, now=0.0)
    wire = out.protect(inner, now=0.0)                      # sequence number 2
    esp = wire[20:]
    iv, body = esp[8:16], esp[16:-16]
    assert iv == (2).to_bytes(8, "big")
    assert len(body) % 4 == 0
    ecb = _camellia(key, modes.ECB()).encryptor()
    blocks = b"".join(nonce + iv + i.to_bytes(4, "big") for i in range(1, len(body) // 16 + 2))
    stream = ecb.update(blocks)
    plain = bytes(a ^ b for a, b in zip(body, stream))
    assert plain[:len(inner)] == inner and plain[-1] == 4
    assert esp[-16:] == hmac.new(integ, esp[:-16], hashlib.sha256).digest()[:16]
    inb.unprotect(out.protect(inner, now=0.0), now=0.0)
    assert inb.unprotect(wire, now=0.0) == inner

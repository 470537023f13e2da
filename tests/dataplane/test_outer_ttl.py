"""An SA file's `outer_ttl` is the TTL (IPv4) or hop limit (IPv6) of the outer header that tunnel
mode constructs (RFC 4301 5.1.2.1), for ESP and AH, on every path that builds one: `protect`,
`protect_batch` (the scalar fast loop and the numpy path), and ESP dummy packets.  Without the
key it is 64."""
import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6

from ipsec_core.config import load_sa_file
from ipsec_core.dataplane.esp import vec as esp_vec
from ipsec_core.dataplane.sa import DEFAULT_OUTER_TTL, SecurityAssociation
from ipsec_core.errors import ConfigError

KEYS = {"aes128gcm16": 'key = "' + "11" * 20 + '"',
        "aes256-sha256": 'key = "' + "22" * 32 + '"\nintegrity_key = "' + "33" * 32 + '"',
        "sha256": 'protocol = "ah"\nintegrity_key = "' + "44" * 32 + '"',
        "aes128gmac": 'protocol = "ah"\nintegrity_key = "' + "55" * 20 + '"'}
OUTER = {4: ("192.0.2.1", "192.0.2.2"), 6: ("2001:db8::1", "2001:db8::2")}


def sa_file(tmp_path, proposal: str, family: int, ttl: int | None):
    local, remote = OUTER[family]
    ttl_line = f"outer_ttl = {ttl}\n" if ttl is not None else ""
    text = "".join(f"""
[[sa]]
name = "{direction}"
spi = "0x00001234"
direction = "{direction}"
mode = "tunnel"
proposal = "{proposal}"
{KEYS[proposal]}
tunnel = {{ local = "{lo}", remote = "{re}" }}
{ttl_line}""" for direction, lo, re in (("out", local, remote), ("in", remote, local)))
    path = tmp_path / "sa.toml"
    path.write_text(text)
    path.chmod(0o600)       # it holds keys: readable by others, loading it would warn
    out_cfg, in_cfg = load_sa_file(path)
    return SecurityAssociation(out_cfg, now=0.0), SecurityAssociation(in_cfg, now=0.0)


def inner(family: int, i: int = 0) -> bytes:
    if family == 4:
        return bytes(IP(src="198.51.100.1", dst="203.0.113.1", ttl=200, id=i) / UDP() / (b"x" * (i % 50)))
    return bytes(IPv6(src="2001:db8:1::1", dst="2001:db8:2::1", hlim=200) / UDP() / (b"y" * (i % 50)))


def outer_ttl(wire: bytes) -> int:
    return wire[8] if wire[0] >> 4 == 4 else wire[7]


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("proposal", list(KEYS))
@pytest.mark.parametrize("ttl", [1, 7, 255, None])
def test_outer_ttl_from_the_sa_file(tmp_path, proposal, family, ttl):
    out, inb = sa_file(tmp_path, proposal, family, ttl)
    want = DEFAULT_OUTER_TTL if ttl is None else ttl
    assert out.config.outer_ttl == want
    packets = [inner(family, i) for i in range(70)]
    wire = [out.protect(packets[0], now=0.0)]
    wire += out.protect_batch(packets[1:6], now=0.0)           # under 32: the scalar fast loop
    wire += out.protect_batch(packets[6:], now=0.0)            # 64: the numpy path, if present
    assert [outer_ttl(w) for w in wire] == [want] * len(packets)
    assert [inb.unprotect(w, now=0.0) for w in wire] == packets    # the inner TTL is untouched
    if out.config.protocol == "esp":
        assert outer_ttl(out.dummy(10, now=0.0)) == want


def test_the_batch_paths_under_test_are_the_fast_ones(tmp_path):
    out, _ = sa_file(tmp_path, "aes128gcm16", 4, 7)
    expected = "ipsec_core.dataplane.esp.vec" if esp_vec.available() else "ipsec_core.dataplane.esp.fast"
    if "ipsecmb" in out.engine.backend_names:     # a batch call in the backend: the buffer path
        expected = "ipsec_core.dataplane.esp.bulk"
    assert out.engine._fast_protect.__module__ == expected
    packets = [inner(4, i) for i in range(64)]
    assert {outer_ttl(w) for w in out.protect_batch(packets, now=0.0)} == {7}


def test_outer_ttl_out_of_range_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match="outer_ttl"):
        sa_file(tmp_path, "aes128gcm16", 4, 0)
    with pytest.raises(ConfigError, match="outer_ttl"):
        sa_file(tmp_path, "sha256", 6, 256)

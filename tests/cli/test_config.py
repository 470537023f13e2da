"""SA files: what is accepted, and errors that name the file and the key."""
import ipaddress

import pytest

from ipsec_core.config import find_sa, load_sa_file
from ipsec_core.errors import ConfigError
from ipsec_core.dataplane.sa import Direction, Mode

GOOD = """
[[sa]]
name = "a-out"
spi = "0xc0ffee01"
direction = "out"
mode = "tunnel"
protocol = "esp"
proposal = "aes128gcm16"
key = "0x000102030405060708090a0b0c0d0e0f:10111213"
tunnel = { local = "192.0.2.1", remote = "192.0.2.2" }
encap = "udp"
encap_ports = [4500, 4501]
replay_window = 128
backend = "aesni"
lifetime = { soft_packets = 100, hard_packets = 200, hard_seconds = 3600 }

[[sa]]
name = "b-in"
spi = 4096
direction = "in"
mode = "transport"
proposal = "aes256-sha256"
esn = true
key = "%s"
integrity_key = "%s"
""" % ("11" * 32, "22" * 32)


def write(tmp_path, text):
    path = tmp_path / "sa.toml"
    path.write_text(text)
    path.chmod(0o600)       # it holds keys: readable by others, loading it would warn
    return path


def test_good_file(tmp_path):
    a, b = load_sa_file(write(tmp_path, GOOD))
    assert a.spi == 0xC0FFEE01 and a.direction is Direction.OUT and a.mode is Mode.TUNNEL
    assert a.enc_key == bytes(range(20))
    assert a.local == ipaddress.ip_address("192.0.2.1") and a.encap_ports == (4500, 4501)
    assert a.replay_window == 128 and a.backend == "aesni"
    assert a.soft.packets == 100 and a.hard.packets == 200 and a.hard.seconds == 3600
    assert b.spi == 4096 and b.esn and b.proposal.keyword == "aes256-sha256-esn"
    assert find_sa([a, b], "b-in") is b


def test_encap_defaults_to_4500(tmp_path):
    text = GOOD.replace("encap_ports = [4500, 4501]\n", "")
    assert load_sa_file(write(tmp_path, text))[0].encap_ports == (4500, 4500)


@pytest.mark.parametrize("old,new,key,message", [
    ('proposal = "aes128gcm16"', 'proposal = "aes128gcm17"', "sa[a-out].proposal", "unknown keyword"),
    ('key = "0x000102030405060708090a0b0c0d0e0f:10111213"', 'key = "0011"', "sa[a-out].key",
     "needs 20 bytes (16 key + 4 salt), got 2"),
    ('key = "0x000102030405060708090a0b0c0d0e0f:10111213"', 'key = "zz"', "sa[a-out].key", "not hex"),
    ('spi = "0xc0ffee01"', 'spi = 12', "sa[a-out].spi", "reserved"),
    ('spi = "0xc0ffee01"', 'spi = "nope"', "sa[a-out].spi", "is not an SPI"),
    ('direction = "out"', 'direction = "up"', "sa[a-out].direction", "expected 'out' or 'in'"),
    ('mode = "tunnel"', 'mode = "tunel"', "sa[a-out].mode", "expected 'tunnel' or 'transport'"),
    ('local = "192.0.2.1"', 'local = "192.0.2.300"', "sa[a-out].tunnel.local", "not an IPv4 or IPv6"),
    ('local = "192.0.2.1"', 'local = "2001:db8::1"', "sa[a-out].tunnel", "one address family"),
    ('encap = "udp"', 'encap = "tcp"', "sa[a-out].encap", "expected 'udp'"),
    ('replay_window = 128', 'replay_window = "big"', "sa[a-out].replay_window", "integer"),
    ('hard_seconds = 3600', 'hard_seconds = -1', "sa[a-out].lifetime.hard_seconds", "positive"),
    ('backend = "aesni"', 'backend = "aesni"\ncolour = "red"', "sa[a-out].colour", "unknown key"),
    ('protocol = "esp"', 'protocol = "ipcomp"', "sa[a-out].protocol", "expected 'esp' or 'ah'"),
    ('integrity_key = "%s"' % ("22" * 32), 'integrity_key = "22"', "sa[b-in].integrity_key",
     "needs 32 bytes, got 1"),
    ('integrity_key = "%s"' % ("22" * 32), '', "sa[b-in].integrity_key", "needs an integrity key"),
    ('name = "b-in"', 'name = "a-out"', "sa[a-out].name", "used twice"),
])
def test_errors_name_file_and_key(tmp_path, old, new, key, message):
    assert old in GOOD
    path = write(tmp_path, GOOD.replace(old, new, 1) if old != 'name = "b-in"' else GOOD.replace(old, new))
    with pytest.raises(ConfigError) as exc:
        load_sa_file(path)
    assert str(path) in str(exc.value)
    assert key in str(exc.value)
    assert message in str(exc.value)


def test_tunnel_mode_needs_addresses(tmp_path):
    text = GOOD.replace('tunnel = { local = "192.0.2.1", remote = "192.0.2.2" }\n', "")
    with pytest.raises(ConfigError, match=r"sa\[a-out\]\.tunnel: tunnel mode needs"):
        load_sa_file(write(tmp_path, text))


def test_missing_required_key(tmp_path):
    with pytest.raises(ConfigError, match=r"sa\[0\]\.name: missing"):
        load_sa_file(write(tmp_path, '[[sa]]\nspi = 300\n'))


def test_bad_toml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_sa_file(write(tmp_path, "[[sa]\n"))
    with pytest.raises(ConfigError, match="no such file"):
        load_sa_file(tmp_path / "absent.toml")
    with pytest.raises(ConfigError, match=r"no \[\[sa\]\] table"):
        load_sa_file(write(tmp_path, ""))


def test_find_sa_lists_names(tmp_path):
    configs = load_sa_file(write(tmp_path, GOOD))
    with pytest.raises(ConfigError, match="the file has: a-out, b-in"):
        find_sa(configs, "c")

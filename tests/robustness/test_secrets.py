"""Keys stay secret: no key appears in logs, repr(), exception messages or --json output unless
key export was asked for (and then only in the files asked for); a deleted SA forgets its keys
as far as Python allows (`SecurityAssociation.wipe`, `SkProtector.wipe`: best effort); SA and
connection files holding keys warn when others may read them."""
from __future__ import annotations

import ipaddress
import json
import os
import re
import struct
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ipsec_core.cli import app
from ipsec_core.config import find_sa, load_sa_file
from ipsec_core.connections import load_connections
from ipsec_core.crypto.registry import get_registry
from ipsec_core.dataplane.sa import SecurityAssociation
from ipsec_core.errors import (AuthenticationError, ConfigError, DropReason, LifetimeExpired,
                               LocalError, PacketDropped)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "site-to-site.toml"
REGISTRY = get_registry()


def _example_keys() -> list[bytes]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        configs = load_sa_file(EXAMPLE)
    return [k for c in configs for k in (c.enc_key, c.integ_key) if k]


def _leaks(text: str, keys: list[bytes]) -> list[str]:
    low = text.lower()
    found = []
    for key in keys:
        for form in (key.hex(), key[:8].hex(), ":".join(f"{b:02x}" for b in key[:8]), repr(key)[2:-1]):
            if form.lower() in low:
                found.append(form)
    return found


def _inner() -> bytes:
    payload = struct.pack("!HHHH", 1000, 53, 12, 0) + b"ping"
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, 0, 64, 17, 0,
                       ipaddress.ip_address("198.51.100.1").packed,
                       ipaddress.ip_address("203.0.113.1").packed) + payload


def test_pcap_and_backends_output_holds_no_key(tmp_path):
    keys = _example_keys()
    runner = CliRunner()
    esp, back = tmp_path / "esp.pcap", tmp_path / "back.pcap"
    outputs = []
    for args in (["pcap", "protect", "--config", EXAMPLE, "--sa", "a-to-b", ROOT / "examples" / "clear.pcap", esp],
                 ["pcap", "unprotect", "--config", EXAMPLE, "--sa", "b-from-a", esp, back, "--json"],
                 ["pcap", "unprotect", "--config", EXAMPLE, "--sa", "b-from-a-cbc", esp, back, "--json"],
                 ["pcap", "protect", "--config", EXAMPLE, "--sa", "b-from-a", ROOT / "examples" / "clear.pcap", esp],
                 ["backends", "--json"]):
        result = runner.invoke(app, [str(a) for a in args])
        outputs.append(result.stdout + result.stderr)
        if "--json" in args and args[0] == "pcap":
            assert json.loads(result.stdout)["packets"] == 7
    for out in outputs:
        assert not _leaks(out, keys), out


def test_demo_output_holds_no_key(tmp_path):
    """--save-keys asks for key export: the keys go to its files and to the "keys" entry of
    --json (tshark's arguments); nowhere else.  Without it, and in the -v log, no key at all."""
    saved = tmp_path / "keys"
    runs = [subprocess.run([sys.executable, "-m", "ipsec_core.cli", "demo", *extra],
                           capture_output=True, text=True, timeout=120)
            for extra in (["--json", "--save-keys", str(saved)], ["--json"], ["-v", "-v"])]
    if runs[0].returncode != 0:
        pytest.skip(f"ipsec demo did not run here: {runs[0].stderr.strip()[-300:]}")
    tables = "".join(p.read_text() for p in saved.rglob("*") if p.is_file())
    keys = [bytes.fromhex(h) for h in set(re.findall(r"(?:0x)?([0-9a-fA-F]{32,})", tables))]
    assert keys, "the demo exported no keys to check for"
    result = json.loads(runs[0].stdout)
    result.pop("keys")
    assert not _leaks(json.dumps(result) + runs[0].stderr, keys)
    # The other runs have keys of their own, unknown here: no long hex string (a key) at all.
    for run in runs[1:]:
        assert run.returncode == 0, run.stderr[-500:]
        text = run.stdout + run.stderr
        assert not re.search(r"[0-9a-f]{32,}", text, re.I), "a long hex string (a key?) in the output"


def test_library_reprs_and_errors_hold_no_key():
    keys = _example_keys()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        configs = load_sa_file(EXAMPLE)
    texts = [repr(c) for c in configs] + [str(c) for c in configs]
    out = SecurityAssociation(find_sa(configs, "a-to-b"), registry=REGISTRY, now=0.0)
    inb = SecurityAssociation(find_sa(configs, "b-from-a"), registry=REGISTRY, now=0.0)
    texts += [repr(out), repr(inb), repr(out.engine.__dict__.get("backend_names"))]
    wire = bytearray(out.protect(_inner(), now=0.0))
    for damage in (lambda w: w.__setitem__(-1, w[-1] ^ 1), lambda w: w.__delitem__(slice(30, None)),
                   lambda w: w.__setitem__(slice(24, 28), b"\0\0\0\0")):
        bad = bytearray(wire)
        damage(bad)
        with pytest.raises(PacketDropped) as exc:
            inb.unprotect(bytes(bad), now=0.0)
        texts += [str(exc.value), repr(exc.value)]
    assert not _leaks("\n".join(texts), keys)


@pytest.mark.parametrize("value", ['"0x4c80cdefbb5d10da906ac73c3613a634:22433c6g"',
                                   '"4c80cdefbb5d10da906ac73c3613a634"',
                                   '"4c80cdefbb5d10da906ac73c3613a634224"'])
def test_config_errors_do_not_echo_the_key(tmp_path, value):
    path = tmp_path / "sa.toml"
    path.write_text(f'[[sa]]\nname = "x"\nspi = "0x1000"\ndirection = "out"\nproposal = "aes128gcm16"\n'
                    f'key = {value}\ntunnel = {{ local = "192.0.2.1", remote = "192.0.2.2" }}\n')
    path.chmod(0o600)
    with pytest.raises(ConfigError) as exc:
        load_sa_file(path)
    assert "4c80cdef" not in str(exc.value).lower(), str(exc.value)
    assert str(exc.value).startswith(f"{path}: sa[x].key: ")


def test_ike_keys_events_and_reprs_hold_no_key():
    sys.path.insert(0, str(ROOT)) if str(ROOT) not in sys.path else None
    from fuzz.ike_endpoint import World

    world = World("established", "a", "aes128gcm16-prfsha256-x25519")
    session = world.session("a")
    keys = session.keys
    secret = [keys.sk_d, keys.sk_ai, keys.sk_ar, keys.sk_ei, keys.sk_er, keys.sk_pi, keys.sk_pr]
    children = [e for side in "ab" for e in world.events[side]]
    secret += [k for e in children for cfg in (getattr(e, "inbound", None), getattr(e, "outbound", None))
               if cfg is not None for k in (cfg.enc_key, cfg.integ_key) if k]
    secret = [k for k in secret if k]
    texts = [repr(keys), repr(session.config)] + [repr(e) for e in children]
    assert not _leaks("\n".join(texts), secret)


def test_wiped_sa_refuses_everything_and_holds_no_key():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        configs = load_sa_file(EXAMPLE)
    for out_name, in_name in (("a-to-b", "b-from-a"), ("a-to-b-cbc", "b-from-a-cbc")):
        out = SecurityAssociation(find_sa(configs, out_name), registry=REGISTRY, now=0.0)
        inb = SecurityAssociation(find_sa(configs, in_name), registry=REGISTRY, now=0.0)
        wire = out.protect(_inner(), now=0.0)
        out.wipe()
        inb.wipe()
        assert out.wiped and inb.wiped
        assert out.config.enc_key == b"" and inb.config.integ_key == b""
        engine_values = [v for v in vars(inb.engine).values() if isinstance(v, (bytes, bytearray))]
        assert not any(k and k in engine_values for k in _example_keys())
        with pytest.raises(LifetimeExpired):
            out.protect(_inner(), now=0.0)
        with pytest.raises(LifetimeExpired):
            out.protect_batch([_inner()] * 40, now=0.0)
        with pytest.raises(PacketDropped) as exc:
            inb.unprotect(wire, now=0.0)
        assert exc.value.reason is DropReason.SA_EXPIRED
        verdicts = inb.unprotect_batch([wire] * 40, now=0.0)
        assert all(isinstance(v, PacketDropped) and v.reason is DropReason.SA_EXPIRED for v in verdicts)


def test_wiped_ike_protector_refuses():
    from ipsec_core.ike.keymat import IkeCrypto
    from ipsec_core.ike.proposals import parse_ike_proposal

    for text in ("aes128gcm16-prfsha256-x25519", "aes128-sha256-x25519"):
        suite = parse_ike_proposal(text)[0]
        crypto = IkeCrypto(suite, registry=REGISTRY, backend=None)
        key = bytes(range(suite.encr_key_bytes))
        integ = bytes(range(suite.integ.key_bytes)) if suite.integ else b""
        sk = crypto.protector((key, key), (integ, integ))
        sealed = sk.seal(bytes(28), b"payloads", random_iv=bytes(sk.iv_bytes))
        sk.wipe()
        with pytest.raises(LocalError):
            sk.seal(bytes(28), b"payloads", random_iv=bytes(sk.iv_bytes))
        with pytest.raises(AuthenticationError):
            sk.open(bytes(28), sealed)


@pytest.mark.parametrize("mode,warns", [(0o600, False), (0o640, True), (0o644, True), (0o606, True)])
def test_sa_file_with_keys_open_to_others_warns(tmp_path, mode, warns):
    path = tmp_path / "sa.toml"
    path.write_text(EXAMPLE.read_text())
    path.chmod(mode)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_sa_file(path)
    hits = [w for w in caught if "readable or writable by group or others" in str(w.message)]
    assert bool(hits) == warns
    if warns:
        assert str(path) in str(hits[0].message) and f"{mode:04o}" in str(hits[0].message)


@pytest.mark.parametrize("mode,warns", [(0o600, False), (0o644, True)])
def test_connection_file_with_inline_psk_open_to_others_warns(tmp_path, mode, warns):
    path = tmp_path / "a.toml"
    path.write_text((ROOT / "examples" / "connections" / "a.toml").read_text())
    path.chmod(mode)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_connections(path)
    hits = [w for w in caught if "holds a psk" in str(w.message)]
    assert bool(hits) == warns
    if warns:
        assert str(path) in str(hits[0].message)

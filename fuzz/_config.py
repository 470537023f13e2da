"""Shared by the config-loader targets: typed values drawn from fuzz input, a small TOML writer
for them (the standard library reads TOML only), and a scratch directory for the files.

The structured mode of those targets edits a valid file's tables (a key set to a value of any
TOML type, removed, or a table replaced by a non-table) and writes it back: wrong types reach
the loaders far more often than byte edits of the text do.
"""
from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

from ipsec_core.errors import ConfigError

from fuzz._harness import Reader

SCRATCH = Path(tempfile.mkdtemp(prefix="ipsec-fuzz-"))
_STRINGS = ("", "0x", "tunnel", "transport", "in", "out", "esp", "ah", "udp", "64", "1.5",
            "aes128gcm16", "aes256-sha256", "sha256", "192.0.2.1", "2001:db8::1", "%any",
            "0.0.0.0/0", "198.51.100.0/24[udp/53]", "1h", "30s", "-1", "mtu", "copy", "set",
            "0xc0de0001", "00112233445566778899aabbccddeeff", "psk.txt", "\x00", "é")
_INTS = (0, 1, -1, 2, 20, 64, 255, 256, 1280, 4500, 65535, 65536, 2**31, 2**32, 2**63 - 1, -2**63)


def value(r: Reader, depth: int = 0) -> Any:
    kind = r.int() % (9 if depth < 2 else 6)
    if kind == 0:
        return r.pick(_STRINGS)
    if kind == 1:
        return r.bytes(r.int() % 24).decode("utf-8", "replace")
    if kind == 2:
        return r.pick(_INTS)
    if kind == 3:
        return r.int(4) - 2**31
    if kind == 4:
        return r.pick((0.0, 1.5, -3.25, 64.0, 1e300, math.inf, -math.inf, math.nan))
    if kind == 5:
        return bool(r.int() & 1)
    if kind == 6:
        return [value(r, depth + 1) for _ in range(r.int() % 4)]
    if kind == 7:
        return {r.pick(("local", "remote", "soft_bytes", "hard_seconds", "x")): value(r, depth + 1)
                for _ in range(r.int() % 3)}
    return [{"name": value(r, depth + 1)}]


def _key(k: str) -> str:
    if k and all(c.isalnum() or c in "_-" for c in k):
        return k
    return _string(k)


def _string(s: str) -> str:
    out = ['"']
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F or 0xD800 <= ord(ch) <= 0xDFFF:
            out.append(f"\\u{ord(ch) & 0xFFFF:04x}" if not 0xD800 <= ord(ch) <= 0xDFFF else "?")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return _string(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_key(k)} = {toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(type(v))


def toml_document(data: dict) -> str:
    """Top-level keys as `key = value` lines (inline tables and arrays)."""
    return "".join(f"{_key(k)} = {toml_value(v)}\n" for k, v in data.items())


def write(name: str, content: bytes | str) -> Path:
    path = SCRATCH / name
    if isinstance(content, str):
        content = content.encode("utf-8", "surrogatepass")
    path.write_bytes(content)
    path.chmod(0o600)
    return path


#: Messages of errors about the file as a whole (it cannot be read or parsed): these name the
#: file only; every other ConfigError names the key as well.
WHOLE_FILE = ("no such file", "not valid TOML", "cannot read")


def check_config_error(exc: ConfigError, path: Path) -> None:
    assert exc.file == str(path), f"ConfigError without the file: {exc}"
    assert str(exc).startswith(str(path)), f"message does not start with the file: {exc}"
    if not exc.bare_message.startswith(WHOLE_FILE):
        assert exc.key, f"ConfigError without the key: {exc}"

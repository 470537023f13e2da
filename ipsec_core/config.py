"""SA files (TOML) -> validated `SaConfig` objects, with errors that name the file and the key.

Owns: the SA file format documented in README.md ("SA files").
Must not: install SAs or touch backends (that is `SecurityAssociation`'s job).
"""
from __future__ import annotations

import ipaddress
import re
import tomllib
from pathlib import Path
from typing import Any

from ipsec_core.errors import ConfigError, ProposalError
from ipsec_core.transforms.keywords import parse_proposal
from ipsec_core.dataplane.replay import DEFAULT_REPLAY_WINDOW_BITS
from ipsec_core.dataplane.sa import DEFAULT_OUTER_TTL, NAT_T_PORT, TFC_TO_MTU, DfBit, Direction, Lifetime, Mode, SaConfig

SA_KEYS = {"name", "spi", "direction", "mode", "protocol", "proposal", "key", "integrity_key",
           "tunnel", "encap", "encap_ports", "esn", "replay_window", "backend", "lifetime",
           "outer_ttl", "tfc_padding", "mtu", "df_bit"}
LIFETIME_KEYS = {f"{kind}_{unit}" for kind in ("soft", "hard") for unit in ("bytes", "packets", "seconds")}


def parse_hex(value: Any, *, file: str | None, key: str) -> bytes:
    if not isinstance(value, str):
        raise ConfigError(f"expected a hex string, got {type(value).__name__}", file=file, key=key)
    text = value.strip().lower()
    if text.startswith("0x"):
        text = text[2:]
    text = re.sub(r"[\s:]", "", text)
    # The value is a key: errors say where it is wrong, never what it is.
    bad = next((i for i, ch in enumerate(text) if ch not in "0123456789abcdef"), None)
    if bad is not None:
        raise ConfigError(f"not hex: character {bad + 1} of the digits is not 0-9a-f (optionally "
                          "0x and ':' separators)", file=file, key=key)
    if len(text) % 2:
        raise ConfigError(f"{len(text)} hex digits, an odd number: a key is whole bytes",
                          file=file, key=key)
    return bytes.fromhex(text)


def parse_spi(value: Any, *, file: str | None, key: str) -> int:
    if isinstance(value, bool):
        raise ConfigError("expected an integer or a hex string", file=file, key=key)
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value, 16) if value.lower().startswith("0x") else int(value, 0 if value.isdigit() else 16)
        except ValueError:
            pass
    raise ConfigError(f"{value!r} is not an SPI (an integer, or hex like \"0xc0ffee01\")", file=file, key=key)


def _addr(value: Any, *, file: str | None, key: str):
    try:
        return ipaddress.ip_address(value)
    except (ValueError, TypeError):
        raise ConfigError(f"{value!r} is not an IPv4 or IPv6 address", file=file, key=key) from None


def _parse_proposal(text: str, protocol: str, catalog):
    """A proposal keyword, plugin transforms included.  Without a catalogue the built-in keywords
    are tried first, and only an unknown one asks the process-wide registry (which loads the
    plugins): a file of built-in proposals never loads it."""
    if catalog is not None:
        return parse_proposal(text, protocol, catalog=catalog)
    try:
        return parse_proposal(text, protocol)
    except ProposalError:
        from ipsec_core.crypto.registry import get_registry

        return parse_proposal(text, protocol, catalog=get_registry().transforms)


def sa_from_dict(raw: dict, *, file: str | None = None, where: str = "sa",
                 catalog=None) -> SaConfig:
    """Build one SaConfig from a TOML table; ConfigError names `file` and the key.  `catalog`:
    the transform catalogue for plugin proposals (default: the process-wide registry's, asked
    only for a keyword that is not built in)."""
    def fail(key: str, message: str) -> ConfigError:
        return ConfigError(message, file=file, key=f"{where}.{key}")

    if not isinstance(raw, dict):
        raise ConfigError(f"expected a table ([[sa]] with keys), got {type(raw).__name__}",
                          file=file, key=where)
    for required in ("name", "spi", "direction", "proposal"):
        if required not in raw:
            raise fail(required, "missing")
    name = raw["name"]
    if not isinstance(name, str) or not name:
        raise fail("name", "must be a non-empty string")
    where = f"{where}[{name}]" if where == "sa" else where
    unknown = set(raw) - SA_KEYS
    if unknown:
        raise fail(sorted(unknown)[0], f"unknown key; known keys: {', '.join(sorted(SA_KEYS))}")
    protocol = raw.get("protocol", "esp")
    if protocol not in ("esp", "ah"):
        raise fail("protocol", f"{protocol!r}: expected 'esp' or 'ah'")
    try:
        proposal = _parse_proposal(raw["proposal"], protocol, catalog)
    except ProposalError as exc:
        raise fail("proposal", str(exc)) from None
    esn = raw.get("esn")
    if esn is not None:
        if not isinstance(esn, bool):
            raise fail("esn", "must be true or false")
        if esn != proposal.esn and "esn" in raw["proposal"].lower().split("-"):
            raise fail("esn", "contradicts the proposal's -esn suffix")
        if esn and not proposal.esn:
            proposal = _parse_proposal(raw["proposal"] + "-esn", protocol, catalog)
    try:
        direction = Direction(raw["direction"])
    except ValueError:
        raise fail("direction", f"{raw['direction']!r}: expected 'out' or 'in'") from None
    try:
        mode = Mode(raw.get("mode", "tunnel"))
    except ValueError:
        raise fail("mode", f"{raw['mode']!r}: expected 'tunnel' or 'transport'") from None
    local = remote = None
    if "tunnel" in raw:
        tun = raw["tunnel"]
        if not isinstance(tun, dict) or set(tun) - {"local", "remote"} or len(tun) != 2:
            raise fail("tunnel", 'expected { local = "ADDR", remote = "ADDR" }')
        local = _addr(tun["local"], file=file, key=f"{where}.tunnel.local")
        remote = _addr(tun["remote"], file=file, key=f"{where}.tunnel.remote")
    encap_ports = None
    if "encap" in raw:
        if raw["encap"] not in ("udp", "none"):
            raise fail("encap", f"{raw['encap']!r}: expected 'udp' (RFC 3948) or 'none'")
        if raw["encap"] == "udp":
            encap_ports = (NAT_T_PORT, NAT_T_PORT)
    if "encap_ports" in raw:
        ports = raw["encap_ports"]
        if not (isinstance(ports, list) and len(ports) == 2 and all(isinstance(p, int) for p in ports)):
            raise fail("encap_ports", "expected [source port, destination port]")
        if encap_ports is None:
            raise fail("encap_ports", "given without encap = \"udp\"")
        encap_ports = (ports[0], ports[1])
    replay_window = raw.get("replay_window", DEFAULT_REPLAY_WINDOW_BITS)
    if not isinstance(replay_window, int) or isinstance(replay_window, bool):
        raise fail("replay_window", "must be an integer (bits)")
    lifetimes: dict[str, Any] = raw.get("lifetime", {})
    if not isinstance(lifetimes, dict) or set(lifetimes) - LIFETIME_KEYS:
        raise fail("lifetime", f"expected a table with keys among {', '.join(sorted(LIFETIME_KEYS))}")
    for k, v in lifetimes.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
            raise fail(f"lifetime.{k}", "must be a positive number")
    backend = raw.get("backend")
    if backend is not None and not isinstance(backend, str):
        raise fail("backend", "must be a backend name, see `ipsec backends`")
    tfc = raw.get("tfc_padding", 0)
    if tfc != TFC_TO_MTU and (isinstance(tfc, bool) or not isinstance(tfc, int)):
        raise fail("tfc_padding", f'{tfc!r}: expected bytes (an integer) or "mtu"')
    mtu = raw.get("mtu")
    if mtu is not None and (isinstance(mtu, bool) or not isinstance(mtu, int)):
        raise fail("mtu", f"{mtu!r}: expected an integer (bytes)")
    outer_ttl = raw.get("outer_ttl", DEFAULT_OUTER_TTL)
    if isinstance(outer_ttl, bool) or not isinstance(outer_ttl, int):
        raise fail("outer_ttl", f"{outer_ttl!r}: expected an integer 1..255 (the outer TTL / hop limit)")
    try:
        df_bit = DfBit(raw.get("df_bit", "copy"))
    except ValueError:
        raise fail("df_bit", f"{raw['df_bit']!r}: expected 'copy', 'set' or 'clear'") from None
    cfg = SaConfig(
        name=name,
        spi=parse_spi(raw["spi"], file=file, key=f"{where}.spi"),
        direction=direction,
        mode=mode,
        proposal=proposal,
        enc_key=parse_hex(raw["key"], file=file, key=f"{where}.key") if "key" in raw else b"",
        integ_key=(parse_hex(raw["integrity_key"], file=file, key=f"{where}.integrity_key")
                   if "integrity_key" in raw else b""),
        local=local, remote=remote, protocol=protocol, encap_ports=encap_ports,
        replay_window=replay_window, backend=backend,
        soft=Lifetime(lifetimes.get("soft_bytes"), lifetimes.get("soft_packets"), lifetimes.get("soft_seconds")),
        hard=Lifetime(lifetimes.get("hard_bytes"), lifetimes.get("hard_packets"), lifetimes.get("hard_seconds")),
        outer_ttl=outer_ttl,
        tfc_padding=tfc, mtu=mtu, df_bit=df_bit,
    )
    for key, problem in cfg.problems():
        raise fail(key, problem)
    return cfg


def load_sa_file(path: str | Path, *, catalog=None) -> list[SaConfig]:
    """Read an SA file: a list of [[sa]] tables.  Names must be unique.  `catalog`: as for
    `sa_from_dict`."""
    path = Path(path)
    file = str(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError("no such file", file=file) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", file=file) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read: {exc}", file=file) from None
    extra = set(data) - {"sa"}
    if extra:
        raise ConfigError("unknown top-level key; an SA file holds [[sa]] tables", file=file,
                          key=sorted(extra)[0])
    tables = data.get("sa")
    if not isinstance(tables, list) or not tables:
        raise ConfigError("no [[sa]] table", file=file, key="sa")
    keyed = [i for i, raw in enumerate(tables) if isinstance(raw, dict)
             and ("key" in raw or "integrity_key" in raw)]
    if keyed:
        from ipsec_core.connections import warn_if_open_to_others
        warn_if_open_to_others(path, f"holds keys (sa[{keyed[0]}])")
    out: list[SaConfig] = []
    seen: set[str] = set()
    for i, raw in enumerate(tables):
        named = isinstance(raw, dict) and "name" in raw
        cfg = sa_from_dict(raw, file=file, where="sa" if named else f"sa[{i}]", catalog=catalog)
        if cfg.name in seen:
            raise ConfigError(f"name {cfg.name!r} is used twice", file=file, key=f"sa[{cfg.name}].name")
        seen.add(cfg.name)
        out.append(cfg)
    return out


def find_sa(configs: list[SaConfig], name: str, *, file: str | None = None) -> SaConfig:
    for cfg in configs:
        if cfg.name == name:
            return cfg
    names = ", ".join(c.name for c in configs)
    raise ConfigError(f"no SA named {name!r} (the file has: {names})", file=file, key="sa")

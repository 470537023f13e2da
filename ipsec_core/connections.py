"""Connection files (TOML modelled on swanctl.conf) -> validated `IkeConfig` objects, with
errors that name the file and the key.

Owns: the connection file format: `[connections.NAME]` tables with swanctl's key names, and
`[connections.NAME.children.CHILD]` tables for the CHILD SAs.  Reading a `psk_file`, and for
`auth = "pubkey"` the PEM (or DER) files of `certs` (ours, end entity first, then intermediates),
`cacerts` (the CAs we trust for the peer) and `private_key` (RSA or EC, unencrypted); each file
relative to the connection file, as swanctl's x509/, x509ca/ and private/ files are.  `local_id`
defaults to the certificate's subject DN (its first subjectAltName when the subject is empty);
`rsa_pss = true` signs with RSASSA-PSS rather than PKCS#1 v1.5.
Must not: start IKE, install SAs, or touch backends; the crypto registry is asked only for a
proposal keyword that is not built in (a plugin's), exactly as `ipsec_core.config` does.

    [connections.site]
    local_addrs = ["192.0.2.1"]
    remote_addrs = ["192.0.2.2"]           # ["%any"]: a responder that accepts any peer
    local_id = "a.example.org"
    remote_id = "b.example.org"
    auth = "psk"
    psk = "a long shared secret"           # or psk_file = "site.psk" (relative to this file)
    proposals = ["aes128gcm16-prfsha256-ecp256"]
    encap = true

    [connections.site.children.net]
    local_ts = ["198.51.100.0/24"]         # also "10.0.0.1", "10.0.0.0/8[tcp/443]"
    remote_ts = ["203.0.113.0/24"]
    esp_proposals = ["aes128gcm16"]
    mode = "tunnel"
    start_action = "start"                 # "none": wait as responder

Arrays (addresses, proposals, selectors) may be written as a single string.  Durations are
seconds, or swanctl's "90s", "15m", "1h", "2d".  Keys of `IkeConfig` that swanctl has no
name for keep their own name (nat_t_port, retransmit_timeout, retransmit_base,
retransmit_tries); `keepalive` sets `keepalive_interval`.
"""
from __future__ import annotations

import base64
import binascii
import inspect
import ipaddress
import math
import re
import stat
import tomllib
import warnings
from pathlib import Path
from typing import Any

from ipsec_core.dataplane.replay import DEFAULT_REPLAY_WINDOW_BITS, MAX_REPLAY_WINDOW_BITS
from ipsec_core.errors import ConfigError, ProposalError
from ipsec_core.ike.config import (CHILDLESS_MODES, DPD_ACTIONS, FRAGMENTATION_MODES, ChildConfig,
                                   IkeConfig, TrafficSelectorSpec)
from ipsec_core.transforms.keywords import parse_esp

CONNECTION_KEYS = {
    "local_addrs", "remote_addrs", "local_port", "remote_port", "nat_t_port", "local_id",
    "remote_id", "auth", "psk", "psk_file", "proposals", "encap", "backend", "rekey_time",
    "dpd_delay", "keepalive", "retransmit_timeout", "retransmit_base", "retransmit_tries",
    "children", "reauth_time", "over_time", "rand_time", "dpd_timeout", "fragmentation",
    "fragment_size", "childless", "certs", "cacerts", "private_key", "rsa_pss", "udp_gso",
}
CHILD_KEYS = {
    "local_ts", "remote_ts", "esp_proposals", "mode", "start_action", "backend", "rekey_time",
    "life_time", "rekey_bytes", "rekey_packets", "replay_window", "rand_time", "dpd_action",
}
TOP_LEVEL_KEYS = {"connections"}
MODES = ("tunnel", "transport")
START_ACTIONS = ("none", "start", "trap")
#: strongSwan accepts any PSK; shorter than this is guessable offline from one captured
#: IKE_AUTH exchange, so it gets a warning.
PSK_WARN_BYTES = 20
#: Placeholders for "any peer" (swanctl's %any); stored as the unspecified address.
ANY_ADDRS = {"%any": None, "%any4": 4, "%any6": 6}

_DURATION = re.compile(r"\s*(\d+(?:\.\d*)?)\s*([smhd]?)\s*", re.IGNORECASE)
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_TS = re.compile(r"(?P<net>[^\[\]]*)(?:\[(?P<sel>[^\[\]]*)\])?")
#: IP protocol names a selector may use (swanctl takes names from /etc/protocols; these are
#: the ones this loader knows without it).
IP_PROTOCOLS = {"icmp": 1, "igmp": 2, "tcp": 6, "udp": 17, "gre": 47, "esp": 50, "ah": 51,
                "ipv6-icmp": 58, "icmpv6": 58, "sctp": 132, "udplite": 136, "dccp": 33}
#: Protocols whose selectors may name ports (RFC 7296 3.13.1: for other protocols the port
#: range must be 0..65535).
PORT_PROTOCOLS = {6, 17, 33, 132, 136}
ICMP_PROTOCOLS = {1, 58}
SERVICES = {"ssh": 22, "domain": 53, "dns": 53, "http": 80, "ntp": 123, "https": 443,
            "isakmp": 500, "ipsec-nat-t": 4500}


def _quote(name: str) -> str:
    """A table name as TOML writes it inside a dotted key."""
    return name if _BARE_KEY.fullmatch(name) else '"' + name.replace('"', '\\"') + '"'


class _Where:
    """Builds ConfigErrors for one table: `fail("psk", "...")` names file and full key."""

    def __init__(self, file: str | None, prefix: str):
        self.file = file
        self.prefix = prefix

    def key(self, key: str) -> str:
        return f"{self.prefix}.{key}" if key else self.prefix

    def fail(self, key: str, message: str) -> ConfigError:
        return ConfigError(message, file=self.file, key=self.key(key))


def _type_name(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "an array", dict: "a table"}.get(type(value), type(value).__name__)


def _check_known(raw: dict, known: set[str], at: _Where) -> None:
    unknown = sorted(set(raw) - known)
    if unknown:
        raise at.fail(unknown[0], f"unknown key; known keys: {', '.join(sorted(known))}")


def _strings(value: Any, at: _Where, key: str, *, what: str) -> list[tuple[str, str]]:
    """A non-empty array of non-empty strings, or one string: [(item's key, text), ...]."""
    if isinstance(value, str):
        items, keys = [value], [key]
    elif isinstance(value, list):
        if not value:
            raise at.fail(key, f"empty array; expected at least one {what}")
        items, keys = value, [f"{key}[{i}]" for i in range(len(value))]
    else:
        raise at.fail(key, f"expected {what} or an array of them, got {_type_name(value)}")
    out = []
    for item, item_key in zip(items, keys):
        if not isinstance(item, str):
            raise at.fail(item_key, f"expected {what} (a string), got {_type_name(item)}")
        if not item.strip():
            raise at.fail(item_key, f"empty string; expected {what}")
        out.append((item_key, item.strip()))
    return out


def _string(raw: dict, key: str, at: _Where, *, what: str) -> str | None:
    if key not in raw:
        return None
    value = raw[key]
    if not isinstance(value, str):
        raise at.fail(key, f"expected {what} (a string), got {_type_name(value)}")
    if not value.strip():
        raise at.fail(key, f"empty string; expected {what}")
    return value.strip()


def _integer(raw: dict, key: str, at: _Where, default: int, *, low: int, high: int | None,
             unit: str) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise at.fail(key, f"expected an integer ({unit}), got {_type_name(value)}")
    if value < low or (high is not None and value > high):
        bounds = f"{low}..{high}" if high is not None else f"at least {low}"
        raise at.fail(key, f"{value} is out of range; expected {bounds} ({unit})")
    return value


def parse_duration(value: Any, *, file: str | None = None, key: str | None = None) -> float:
    """Seconds from a number or from swanctl's "90s", "15m", "1h", "2d" ("90" = seconds)."""
    def fail() -> ConfigError:
        return ConfigError(f"{value!r} is not a duration; expected seconds (an integer) or "
                           'a string like "90s", "15m", "1h", "2d"', file=file, key=key)

    if isinstance(value, bool):
        raise fail()
    if isinstance(value, int) and abs(value) > 10**12:
        raise fail()  # past any timer; float() of a huge int would overflow
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.fullmatch(value)):
        seconds = float(m.group(1)) * _DURATION_UNITS[m.group(2).lower()]
    else:
        raise fail()
    if not math.isfinite(seconds) or seconds < 0:
        raise fail()
    return seconds


def _choice(raw: dict, key: str, at: _Where, default: str, choices: tuple[str, ...]) -> str:
    value = raw.get(key, default)
    if value not in choices:
        raise at.fail(key, f"{value!r}: expected one of {', '.join(map(repr, choices))}")
    return value


def _duration(raw: dict, key: str, at: _Where, default: float | None) -> float | None:
    if key not in raw:
        return default
    return parse_duration(raw[key], file=at.file, key=at.key(key))


# -- addresses -------------------------------------------------------------------------------

def _addresses(raw: dict, key: str, at: _Where, *, allow_any: bool) -> list[tuple[str, Any]]:
    """[(item key, ip_address or an ANY_ADDRS family placeholder)] ; %any is resolved later,
    once the other side's family is known."""
    if key not in raw:
        raise at.fail(key, "missing; expected an array of IP addresses")
    out = []
    for item_key, text in _strings(raw[key], at, key, what="an IP address"):
        lowered = text.lower()
        if lowered in ANY_ADDRS:
            if not allow_any:
                raise ConfigError(f"{text!r}: a local address must be given (the address to "
                                  "send from and to bind); %any is only for remote_addrs",
                                  file=at.file, key=at.key(item_key))
            out.append((item_key, lowered))
            continue
        try:
            out.append((item_key, ipaddress.ip_address(text)))
        except ValueError:
            if "/" in text or "-" in text:
                hint = " (ranges and subnets of peers are not supported; use \"%any\")"
            elif re.search("[g-zG-Z]", text):
                hint = " (host names are not resolved; give the address)"
            else:
                hint = ""
            raise ConfigError(f"{text!r} is not an IPv4 or IPv6 address{hint}", file=at.file,
                              key=at.key(item_key)) from None
    return out


def _resolve_any(addrs: list[tuple[str, Any]], version: int, at: _Where) -> tuple[str, ...]:
    out = []
    for item_key, addr in addrs:
        if isinstance(addr, str):  # a %any placeholder
            wanted = ANY_ADDRS[addr] or version
            addr = ipaddress.IPv4Address(0) if wanted == 4 else ipaddress.IPv6Address(0)
        out.append(str(addr))
    return tuple(out)


def _version(addr: Any) -> int | None:
    return ANY_ADDRS[addr] if isinstance(addr, str) else addr.version


# -- traffic selectors ---------------------------------------------------------------------

def _protocol(text: str, at: _Where, key: str) -> int:
    lowered = text.strip().lower()
    if lowered in ("", "%any", "any"):
        return 0
    if lowered in IP_PROTOCOLS:
        return IP_PROTOCOLS[lowered]
    if lowered.isdigit() and int(lowered) <= 255:
        return int(lowered)
    raise at.fail(key, f"{text!r} is not an IP protocol; expected a number 0..255 or one of "
                       f"{', '.join(sorted(IP_PROTOCOLS))}, or %any")


def _port(text: str, at: _Where, key: str) -> int:
    lowered = text.strip().lower()
    if lowered.isdigit() and int(lowered) <= 65535:
        return int(lowered)
    if lowered in SERVICES:
        return SERVICES[lowered]
    raise at.fail(key, f"{text!r} is not a port; expected 0..65535 or one of "
                       f"{', '.join(sorted(SERVICES))}")


def parse_traffic_selector(text: str, *, file: str | None = None,
                           key: str | None = None) -> TrafficSelectorSpec:
    """One selector as swanctl writes it: a prefix or a bare address (= /32 or /128),
    optionally followed by `[proto]`, `[proto/port]` or `[proto/low-high]`."""
    at = _Where(file, key or "")
    m = _TS.fullmatch(text.strip())
    if m is None:
        raise at.fail("", f"{text!r}: expected a prefix such as \"10.0.0.0/8\", optionally "
                          "followed by [protocol/port], e.g. \"10.0.0.0/8[tcp/443]\"")
    net_text = m.group("net").strip()
    if net_text.lower() == "dynamic":
        raise at.fail("", "\"dynamic\" (the IKE SA's own address) is not supported yet; give "
                          "the prefix, for example the local address as \"192.0.2.1/32\"")
    if net_text.lower().startswith("%"):
        raise at.fail("", f"{net_text!r} is not supported; give a prefix "
                          "(\"0.0.0.0/0\" or \"::/0\" for any address)")
    try:
        network = ipaddress.ip_network(net_text, strict=True)
    except ValueError:
        try:
            loose = ipaddress.ip_network(net_text, strict=False)
        except ValueError:
            hint = " (address ranges are not supported; give prefixes)" if "-" in net_text else ""
            raise at.fail("", f"{net_text!r} is not an IPv4 or IPv6 prefix{hint}") from None
        raise at.fail("", f"{net_text!r} has host bits set; did you mean {loose}?") from None
    selector = m.group("sel")
    if selector is None:
        return TrafficSelectorSpec(network)
    proto_text, slash, port_text = selector.partition("/")
    protocol = _protocol(proto_text, at, "")
    start, end = 0, 65535
    port_text = port_text.strip()
    if slash and port_text.lower() not in ("", "%any", "any"):
        if protocol in ICMP_PROTOCOLS:
            raise at.fail("", f"{text!r}: ICMP type/code selectors are not supported yet; "
                              "drop the part after the protocol")
        if protocol not in PORT_PROTOCOLS:
            raise at.fail("", f"{text!r}: a port needs a protocol with ports (tcp, udp, sctp, "
                              "dccp, udplite)")
        if port_text.lower() == "%opaque":
            raise at.fail("", f"{text!r}: OPAQUE ports are not supported")
        low, dash, high = port_text.partition("-")
        start = _port(low, at, "")
        end = _port(high, at, "") if dash else start
        if start > end:
            raise at.fail("", f"{text!r}: port range {start}-{end} is reversed")
    return TrafficSelectorSpec(network, protocol, start, end)


def _selectors(raw: dict, key: str, at: _Where) -> tuple[TrafficSelectorSpec, ...]:
    if key not in raw:
        raise at.fail(key, 'missing; expected prefixes such as ["10.0.0.0/8"] (swanctl\'s '
                           'default, "dynamic", is not supported yet)')
    return tuple(parse_traffic_selector(text, file=at.file, key=at.key(item_key))
                 for item_key, text in _strings(raw[key], at, key, what="a traffic selector"))


# -- proposals -----------------------------------------------------------------------------

def _registry_catalog():
    from ipsec_core.crypto.registry import get_registry

    return get_registry().transforms


def _esp_proposal(text: str, catalog) -> None:
    """As `ipsec_core.config`: built-in keywords first; only an unknown one asks the
    process-wide registry (which loads the plugins)."""
    if catalog is not None:
        parse_esp(text, catalog=catalog)
        return
    try:
        parse_esp(text)
    except ProposalError:
        parse_esp(text, catalog=_registry_catalog())


def _ike_proposal_parser():
    """`ipsec_core.transforms.ike.parse_ike_proposal`, or None while that module does not
    exist yet: then IKE proposals are only checked to be non-empty strings, and the IKE
    layer rejects a bad one when it builds its SA payload."""
    try:
        from ipsec_core.transforms.ike import parse_ike_proposal
    except ModuleNotFoundError as exc:
        if exc.name != "ipsec_core.transforms.ike":
            raise
        return None
    return parse_ike_proposal


def _ike_proposal(text: str, catalog) -> None:
    # CALL SITE: IKE proposal validation, active once ipsec_core/transforms/ike.py lands.
    parse = _ike_proposal_parser()
    if parse is None:
        return
    takes_catalog = "catalog" in inspect.signature(parse).parameters
    if catalog is not None and takes_catalog:
        parse(text, catalog=catalog)
        return
    try:
        parse(text)
    except ProposalError:
        if not takes_catalog:
            raise
        parse(text, catalog=_registry_catalog())


def _proposals(raw: dict, key: str, at: _Where, default: tuple[str, ...], check,
               catalog) -> tuple[str, ...]:
    if key not in raw:
        return default
    out = []
    for item_key, text in _strings(raw[key], at, key, what="a proposal"):
        try:
            check(text, catalog)
        except ProposalError as exc:
            raise ConfigError(str(exc), file=at.file, key=at.key(item_key)) from None
        out.append(text.lower())
    return tuple(out)


# -- pre-shared keys -----------------------------------------------------------------------

def _psk_text(value: str, at: _Where) -> bytes:
    """swanctl's secret syntax: "0x..." is hex, "0s..." base64, anything else the UTF-8 text."""
    if value[:2].lower() == "0x":
        try:
            return bytes.fromhex(value[2:])
        except ValueError:
            raise at.fail("psk", "starts with 0x but is not hex (a 0x secret is hex, as in "
                                 "swanctl; write the text without 0x or use psk_file)") from None
    if value[:2] == "0s":
        try:
            return base64.b64decode(value[2:], validate=True)
        except binascii.Error:
            raise at.fail("psk", "starts with 0s but is not base64 (a 0s secret is base64, as "
                                 "in swanctl)") from None
    return value.encode()


def _where_text(at: _Where, key: str) -> str:
    return f"{at.file}: {at.key(key)}: " if at.file else f"{at.key(key)}: "


def _psk_file(value: Any, at: _Where, base_dir: Path | None) -> bytes:
    if not isinstance(value, str):
        raise at.fail("psk_file", f"expected a file name (a string), got {_type_name(value)}")
    if not value.strip():
        raise at.fail("psk_file", "empty string; expected a file name")
    if "\x00" in value:
        raise at.fail("psk_file", f"{value!r}: a file name cannot hold a NUL character")
    path = Path(value).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    # stat before open: opening a FIFO or a device by mistake would block or never end.
    try:
        mode = path.stat().st_mode
        if not stat.S_ISREG(mode):
            raise at.fail("psk_file", f"{str(path)!r} is not a regular file")
        secret = path.read_bytes()
    except FileNotFoundError:
        raise at.fail("psk_file", f"{str(path)!r}: no such file") from None
    except OSError as exc:
        raise at.fail("psk_file", f"{str(path)!r}: cannot read: {exc.strerror or exc}") from None
    if mode & 0o066:
        warnings.warn(f"{_where_text(at, 'psk_file')}PSK file {str(path)!r} is readable or "
                      f"writable by group or others (mode {stat.S_IMODE(mode):04o}); "
                      "chmod 600 it", UserWarning, stacklevel=2)
    if secret.endswith(b"\r\n"):
        secret = secret[:-2]
    elif secret.endswith(b"\n"):
        secret = secret[:-1]
    if not secret:
        raise at.fail("psk_file", f"{str(path)!r} is empty")
    return secret


def _read_key_file(value: Any, at: _Where, key: str, base_dir: Path | None) -> tuple[Path, bytes]:
    if not isinstance(value, str) or not value.strip() or "\x00" in value:
        raise at.fail(key, f"expected a file name, got {value!r}")
    path = Path(value).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            raise at.fail(key, f"{str(path)!r} is not a regular file")
        return path, path.read_bytes()
    except FileNotFoundError:
        raise at.fail(key, f"{str(path)!r}: no such file") from None
    except OSError as exc:
        raise at.fail(key, f"{str(path)!r}: cannot read: {exc.strerror or exc}") from None


def _certificates(raw: dict, at: _Where, key: str, base_dir: Path | None) -> list:
    from cryptography import x509

    if key not in raw:
        raise at.fail(key, f'missing: auth = "pubkey" needs {key} = "FILE.pem" (or an array of files)')
    out = []
    for item_key, name in _strings(raw[key], at, key, what="a certificate file name"):
        path, data = _read_key_file(name, at, item_key, base_dir)
        try:
            found = (x509.load_pem_x509_certificates(data) if b"-----BEGIN" in data
                     else [x509.load_der_x509_certificate(data)])
        except ValueError as exc:
            raise at.fail(item_key, f"{str(path)!r}: no X.509 certificate in it ({exc})") from None
        out += [(item_key, path, cert) for cert in found]
    return out


def _pubkey(raw: dict, at: _Where, base_dir: Path | None) -> tuple[dict, str]:
    """IkeConfig's certs, cacerts, private_key and rsa_pss from the files, checked (each CA is
    a CA, the key belongs to the certificate); and the identity the certificate stands for."""
    from cryptography.hazmat.primitives import serialization

    from ipsec_core.ike import certs as x509_checks

    ours = _certificates(raw, at, "certs", base_dir)
    cas = _certificates(raw, at, "cacerts", base_dir)
    for item_key, path, cert in cas:
        try:
            x509_checks.check_ca(cert, "the certificate")
        except x509_checks.CertificateError as exc:
            raise at.fail(item_key, f"{str(path)!r}: {exc}") from None
    item_key, path, leaf = ours[0]
    why = x509_checks.check_end_entity(leaf)
    if why is not None:
        raise at.fail(item_key, f"{str(path)!r}: the certificate {x509_checks.subject_text(leaf)} "
                                f"cannot be used: {why}")
    if "private_key" not in raw:
        raise at.fail("private_key", 'missing: auth = "pubkey" needs private_key = "FILE.pem"')
    key_path, data = _read_key_file(raw["private_key"], at, "private_key", base_dir)
    try:
        key = (serialization.load_pem_private_key(data, password=None) if b"-----BEGIN" in data
               else serialization.load_der_private_key(data, password=None))
    except TypeError:
        raise at.fail("private_key", f"{str(key_path)!r} is encrypted; store the key unencrypted "
                                     "(readable by root only)") from None
    except (ValueError, Exception):
        raise at.fail("private_key", f"{str(key_path)!r}: no private key (PEM or DER, RSA or EC) "
                                     "in it") from None
    if key_path.stat().st_mode & 0o066:
        warnings.warn(f"{_where_text(at, 'private_key')}{str(key_path)!r} is readable or writable "
                      "by group or others; chmod 600 it", UserWarning, stacklevel=3)
    public = key.public_key().public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    if public != x509_checks.spki_der(leaf):
        raise at.fail("private_key", f"{str(key_path)!r} does not belong to the certificate "
                                     f"{x509_checks.subject_text(leaf)} ({str(path)!r})")
    rsa_pss = raw.get("rsa_pss", False)
    if not isinstance(rsa_pss, bool):
        raise at.fail("rsa_pss", f"expected true or false, got {_type_name(rsa_pss)}")
    der = serialization.Encoding.DER
    fields = dict(
        certs=tuple(c.public_bytes(der) for _, _, c in ours),
        cacerts=tuple(c.public_bytes(der) for _, _, c in cas),
        private_key=key.private_bytes(der, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()),
        rsa_pss=rsa_pss)
    try:
        default_id = x509_checks.default_identity(leaf)
    except x509_checks.CertificateError as exc:
        raise at.fail(item_key, f"{str(path)!r}: {exc}; set local_id") from None
    return fields, default_id


def _psk(raw: dict, at: _Where, base_dir: Path | None) -> bytes:
    if "psk" in raw and "psk_file" in raw:
        raise at.fail("psk_file", "give psk or psk_file, not both")
    if "psk_file" in raw:
        key, secret = "psk_file", _psk_file(raw["psk_file"], at, base_dir)
    elif "psk" in raw:
        value = raw["psk"]
        if not isinstance(value, str):
            raise at.fail("psk", f"expected a string (the shared secret), got {_type_name(value)}")
        if not value:
            raise at.fail("psk", "empty; expected the shared secret")
        key, secret = "psk", _psk_text(value, at)
        if not secret:
            raise at.fail("psk", "empty; expected the shared secret")
    else:
        raise at.fail("psk", 'missing: auth = "psk" needs psk = "..." or psk_file = "FILE"')
    if len(secret) < PSK_WARN_BYTES:
        warnings.warn(f"{_where_text(at, key)}the PSK is "
                      f"{len(secret)} bytes; one shorter than {PSK_WARN_BYTES} can be guessed "
                      "offline from a captured exchange", UserWarning, stacklevel=2)
    return secret


# -- tables --------------------------------------------------------------------------------

def child_from_dict(name: str, raw: Any, *, file: str | None = None, where: str,
                    catalog=None) -> ChildConfig:
    """One `[connections.X.children.NAME]` table -> ChildConfig; `where` is its dotted key."""
    at = _Where(file, where)
    if not isinstance(raw, dict):
        raise at.fail("", f"expected a table ([{where}] with keys), got {_type_name(raw)}")
    _check_known(raw, CHILD_KEYS, at)
    defaults = ChildConfig(name, (), ())
    mode = raw.get("mode", defaults.mode)
    if mode not in MODES:
        raise at.fail("mode", f"{mode!r}: expected 'tunnel' or 'transport'")
    start_action = raw.get("start_action", defaults.start_action)
    if start_action not in START_ACTIONS:
        raise at.fail("start_action", f"{start_action!r}: expected 'start' (initiate with the "
                                      "IKE SA), 'trap' (initiate on the first matching packet) "
                                      "or 'none' (wait for the peer)")
    rekey_time = _duration(raw, "rekey_time", at, defaults.rekey_time)
    life_time = _duration(raw, "life_time", at, None)
    if life_time is not None:
        if life_time <= 0:
            raise at.fail("life_time", "must be positive (leave it out for rekey_time + 10%)")
        if rekey_time and life_time <= rekey_time:
            raise at.fail("life_time", f"{life_time:g}s is not longer than rekey_time "
                                       f"({rekey_time:g}s); the SA would expire before it rekeys")
    return ChildConfig(
        name=name,
        local_ts=_selectors(raw, "local_ts", at),
        remote_ts=_selectors(raw, "remote_ts", at),
        esp_proposals=_proposals(raw, "esp_proposals", at, defaults.esp_proposals, _esp_proposal,
                                 catalog),
        mode=mode,
        start_action=start_action,
        backend=_string(raw, "backend", at, what="a backend name (see `ipsec backends`)"),
        rekey_time=rekey_time,
        life_time=life_time,
        rekey_bytes=_integer(raw, "rekey_bytes", at, defaults.rekey_bytes, low=0, high=None,
                             unit="bytes, 0 = no limit"),
        rekey_packets=_integer(raw, "rekey_packets", at, defaults.rekey_packets, low=0,
                               high=None, unit="packets, 0 = no limit"),
        replay_window=_integer(raw, "replay_window", at, DEFAULT_REPLAY_WINDOW_BITS, low=0,
                               high=MAX_REPLAY_WINDOW_BITS, unit="packets, 0 = no replay check"),
        rand_time=_duration(raw, "rand_time", at, None),
        dpd_action=_choice(raw, "dpd_action", at, defaults.dpd_action, DPD_ACTIONS),
    )


def connection_from_dict(name: str, raw: Any, *, file: str | None = None,
                         base_dir: str | Path | None = None, catalog=None) -> IkeConfig:
    """One `[connections.NAME]` table -> IkeConfig (children included)."""
    where = f"connections.{_quote(name)}"
    at = _Where(file, where)
    if not isinstance(raw, dict):
        raise at.fail("", f"expected a table ([{where}] with keys), got {_type_name(raw)}")
    _check_known(raw, CONNECTION_KEYS, at)
    defaults = IkeConfig(name, (), ())
    local = _addresses(raw, "local_addrs", at, allow_any=False)
    remote = _addresses(raw, "remote_addrs", at, allow_any=True)
    version = _version(local[0][1])
    remote_version = _version(remote[0][1])
    if remote_version is not None and remote_version != version:
        raise at.fail(remote[0][0], f"IPv{remote_version} address, but the first of local_addrs "
                                    f"is IPv{version}; the first local and remote address must "
                                    "be of one family")
    auth = raw.get("auth", defaults.auth)
    if auth not in ("psk", "pubkey"):
        raise at.fail("auth", f"{auth!r}: expected 'psk' (a pre-shared key) or 'pubkey' (certificates)")
    key_dir = Path(base_dir) if base_dir is not None else None
    pubkey, default_id = _pubkey(raw, at, key_dir) if auth == "pubkey" else ({}, None)
    if auth == "pubkey" and ("psk" in raw or "psk_file" in raw):
        raise at.fail("psk" if "psk" in raw else "psk_file", 'auth = "pubkey" uses certificates; '
                                                             "remove the pre-shared key")
    encap = raw.get("encap", defaults.encap)
    if not isinstance(encap, bool):
        raise at.fail("encap", f"expected true or false, got {_type_name(encap)}")
    udp_gso = raw.get("udp_gso", defaults.udp_gso)
    if not isinstance(udp_gso, bool):
        raise at.fail("udp_gso", f"expected true or false, got {_type_name(udp_gso)}")
    retransmit_base = raw.get("retransmit_base", defaults.retransmit_base)
    if (isinstance(retransmit_base, bool) or not isinstance(retransmit_base, (int, float))
            or not 1 <= retransmit_base <= 100):
        raise at.fail("retransmit_base", f"{retransmit_base!r}: expected a number 1..100 (the "
                                         "factor between retransmission timeouts)")
    retransmit_timeout = _duration(raw, "retransmit_timeout", at, defaults.retransmit_timeout)
    if retransmit_timeout <= 0:
        raise at.fail("retransmit_timeout", "must be positive")
    children_raw = raw.get("children", {})
    if not isinstance(children_raw, dict):
        raise at.fail("children", f"expected a table of CHILD SAs ([{where}.children.NAME]), "
                                  f"got {_type_name(children_raw)}")
    children = []
    for child_name, child_raw in children_raw.items():
        if not isinstance(child_name, str) or not child_name.strip():
            raise at.fail("children", "a CHILD SA name is empty or not a string")
        children.append(child_from_dict(child_name, child_raw, file=file, catalog=catalog,
                                        where=f"{where}.children.{_quote(child_name)}"))
    port = dict(low=1, high=65535, unit="a UDP port")
    return IkeConfig(
        name=name,
        local_addrs=_resolve_any(local, version, at),
        remote_addrs=_resolve_any(remote, version, at),
        local_id=_string(raw, "local_id", at, what="an identity") or default_id,
        remote_id=_string(raw, "remote_id", at, what="an identity"),
        auth=auth,
        psk=_psk(raw, at, key_dir) if auth == "psk" else b"",
        **pubkey,
        proposals=_proposals(raw, "proposals", at, defaults.proposals, _ike_proposal, catalog),
        encap=encap,
        udp_gso=udp_gso,
        children=tuple(children),
        local_port=_integer(raw, "local_port", at, defaults.local_port, **port),
        remote_port=_integer(raw, "remote_port", at, defaults.remote_port, **port),
        nat_t_port=_integer(raw, "nat_t_port", at, defaults.nat_t_port, **port),
        backend=_string(raw, "backend", at, what="a backend name (see `ipsec backends`)"),
        rekey_time=_duration(raw, "rekey_time", at, defaults.rekey_time),
        dpd_delay=_duration(raw, "dpd_delay", at, defaults.dpd_delay),
        dpd_timeout=_duration(raw, "dpd_timeout", at, defaults.dpd_timeout),
        reauth_time=_duration(raw, "reauth_time", at, defaults.reauth_time),
        over_time=_duration(raw, "over_time", at, None),
        rand_time=_duration(raw, "rand_time", at, None),
        fragmentation=_choice(raw, "fragmentation", at, defaults.fragmentation, FRAGMENTATION_MODES),
        fragment_size=_integer(raw, "fragment_size", at, defaults.fragment_size, low=576,
                               high=65535, unit="bytes of an IP datagram"),
        childless=_choice(raw, "childless", at, defaults.childless, CHILDLESS_MODES),
        keepalive_interval=_duration(raw, "keepalive", at, defaults.keepalive_interval),
        retransmit_timeout=retransmit_timeout,
        retransmit_base=float(retransmit_base),
        retransmit_tries=_integer(raw, "retransmit_tries", at, defaults.retransmit_tries, low=0,
                                  high=100, unit="retransmissions before giving up"),
    )


def connections_from_dict(data: Any, *, file: str | None = None,
                          base_dir: str | Path | None = None,
                          catalog=None) -> dict[str, IkeConfig]:
    """The parsed TOML of a connection file -> {name: IkeConfig}, in file order.

    `file` names the file in errors; `base_dir` is where a relative `psk_file` is found (the
    current directory when None).  `catalog`: the transform catalogue for plugin proposals
    (default: the process-wide registry's, asked only for a keyword that is not built in).
    CHILD SA names are unique across the whole file, so a child can be named on its own.
    `remote_addrs = ["%any"]` (a responder that accepts any peer) is stored as "0.0.0.0" or
    "::", the family of the first local address; "%any4"/"%any6" pick the family.
    Raises ConfigError naming the file and the key; warns (UserWarning) about a PSK shorter
    than 20 bytes and a psk_file that group or others may read.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"expected a table of [connections.NAME], got {_type_name(data)}",
                          file=file)
    unknown = sorted(set(data) - TOP_LEVEL_KEYS)
    if unknown:
        raise ConfigError("unknown top-level key; a connection file holds [connections.NAME] "
                          "tables", file=file, key=unknown[0])
    tables = data.get("connections")
    if tables is None or tables == {}:
        raise ConfigError("no [connections.NAME] table", file=file, key="connections")
    if not isinstance(tables, dict):
        raise ConfigError(f"expected [connections.NAME] tables, got {_type_name(tables)}",
                          file=file, key="connections")
    out: dict[str, IkeConfig] = {}
    child_owner: dict[str, str] = {}
    for name, raw in tables.items():
        if not isinstance(name, str) or not name.strip():
            raise ConfigError("a connection name is empty or not a string", file=file, key="connections")
        cfg = connection_from_dict(name, raw, file=file, base_dir=base_dir, catalog=catalog)
        for child in cfg.children:
            if child.name in child_owner:
                raise ConfigError(f"child name {child.name!r} is also used by connection "
                                  f"{child_owner[child.name]!r}; CHILD SA names must be unique "
                                  "in a file", file=file,
                                  key=f"connections.{_quote(name)}.children.{_quote(child.name)}")
            child_owner[child.name] = name
        out[name] = cfg
    return out


def load_connections(path: str | Path, *, catalog=None) -> dict[str, IkeConfig]:
    """Read a connection file; see `connections_from_dict`.  A relative `psk_file` is found
    next to the file."""
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
    out = connections_from_dict(data, file=file, base_dir=path.parent, catalog=catalog)
    tables = data.get("connections")
    inline = [name for name, raw in tables.items() if isinstance(raw, dict) and "psk" in raw]
    warn_if_open_to_others(path, f"holds a psk (connections.{_quote(inline[0])}.psk)" if inline else None)
    return out


def warn_if_open_to_others(path: Path, holds: str | None) -> None:
    """A UserWarning when a file that holds a secret (`holds` says which; None: none) may be
    read or written by group or others, as for a psk_file."""
    if holds is None:
        return
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if mode & 0o066:
        warnings.warn(f"{path}: the file {holds} and is readable or writable by group or "
                      f"others (mode {stat.S_IMODE(mode):04o}); chmod 600 it", UserWarning,
                      stacklevel=3)


__all__ = ["load_connections", "connections_from_dict", "connection_from_dict",
           "child_from_dict", "parse_duration", "parse_traffic_selector", "CONNECTION_KEYS",
           "CHILD_KEYS"]

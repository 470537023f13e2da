"""Fuzz target: the connection file loader (`connections.load_connections`), TOML text from
bytes, and an `IkeEndpoint` built from what it accepts.

Byte 0 even: the rest is the file.  Odd: a structured edit of examples/connections/a.toml
(connection and child keys set to values of any TOML type, removed, tables replaced by
non-tables, psk_file naming one of a few scratch files: readable, world-readable, empty, a
directory, missing).  Allowed: the connections, or ConfigError naming the file (and the key
unless the file cannot be read or parsed); UserWarnings (short PSK, readable PSK file).
A raw input naming a psk_file outside those scratch files is skipped: the loader reads it.
"""
from __future__ import annotations

import copy
import tomllib
import warnings
from pathlib import Path

from ipsec_core.connections import CHILD_KEYS, CONNECTION_KEYS, load_connections
from ipsec_core.crypto.registry import get_registry
from ipsec_core.errors import ConfigError
from ipsec_core.ike.endpoint import IkeEndpoint

from fuzz._config import SCRATCH, check_config_error, toml_document, value, write
from fuzz._harness import Reader, main

TARGET = "connections_config"
EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "connections"
BASE = [tomllib.loads((EXAMPLES / n).read_text()) for n in ("a.toml", "b.toml")]
CONN_KEYS = sorted(CONNECTION_KEYS) + ["bogus"]
KID_KEYS = sorted(CHILD_KEYS) + ["bogus"]
PSK_FILES = ("psk.txt", "world.psk", "empty.psk", "dir", "missing.psk")

write("psk.txt", b"a shared secret of some length\n")
write("world.psk", b"a shared secret of some length\n").chmod(0o644)
write("empty.psk", b"")
(SCRATCH / "dir").mkdir(exist_ok=True)


def structured(r: Reader) -> str:
    doc = copy.deepcopy(r.pick(BASE))
    conns = doc["connections"]
    name = next(iter(conns))
    for _ in range(1 + r.int() % 4):
        where = r.int() % 8
        conn = conns.get(name)
        if where == 0:
            conns[name] = value(r)
        elif not isinstance(conn, dict):
            continue
        elif where == 1:
            conn.pop(r.pick(CONN_KEYS), None)
        elif where == 2:
            conn.pop("psk", None)
            conn["psk_file"] = r.pick(PSK_FILES)
        elif where in (3, 4):
            kids = conn.get("children")
            if isinstance(kids, dict) and kids:
                kid = kids[next(iter(kids))]
                if isinstance(kid, dict):
                    if where == 3:
                        kid[r.pick(KID_KEYS)] = value(r)
                    else:
                        kid.pop(r.pick(KID_KEYS), None)
            else:
                conn["children"] = value(r)
        else:
            conn[r.pick(CONN_KEYS)] = value(r)
    if r.int() % 16 == 0:
        doc[r.pick(("connection", "x"))] = value(r)
    return "".join(_tables(doc))


def _tables(doc: dict):
    """TOML with [connections.NAME] and [connections.NAME.children.CHILD] tables, so the
    file looks like the ones users write."""
    conns = doc.get("connections")
    rest = {k: v for k, v in doc.items() if k != "connections"}
    yield toml_document(rest)
    if not isinstance(conns, dict):
        yield toml_document({"connections": conns})
        return
    for name, conn in conns.items():
        if not isinstance(conn, dict):
            yield toml_document({"connections": {name: conn}})
            continue
        yield f"[connections.{name}]\n"
        yield toml_document({k: v for k, v in conn.items() if k != "children"})
        kids = conn.get("children")
        if isinstance(kids, dict):
            for kid, body in kids.items():
                yield f"[connections.{name}.children.{kid}]\n"
                yield toml_document(body if isinstance(body, dict) else {"x": body})
        elif "children" in conn:
            yield toml_document({"children": kids})


def _unsafe_psk_file(text: bytes | str) -> bool:
    try:
        data = tomllib.loads(text if isinstance(text, str) else text.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError):
        return False
    stack = [data]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if "psk_file" in node and node["psk_file"] not in PSK_FILES:
                return True
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return False


def test_one_input(data: bytes) -> None:
    r = Reader(data)
    text = structured(r) if r.int() & 1 else r.rest()
    if _unsafe_psk_file(text):
        return
    path = write("conn.toml", text)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            configs = load_connections(path)
    except ConfigError as exc:
        check_config_error(exc, path)
        return
    IkeEndpoint(list(configs.values()), registry=get_registry(), now=0.0)


if __name__ == "__main__":
    main(TARGET, test_one_input)

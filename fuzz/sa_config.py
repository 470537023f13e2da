"""Fuzz target: the SA file loader (`config.load_sa_file`) and installing what it accepts.

Byte 0 even: the rest is the file, as bytes.  Odd: a structured edit of a valid file (one of
the tables of examples/site-to-site.toml): keys set to values of any TOML type, removed, a
nested table changed, an [[sa]] item replaced by a non-table; the result is written as TOML.
Allowed: a list of SaConfig that installs (SecurityAssociation), or ConfigError naming the
file (and, unless the file cannot be read or parsed, the key); a BackendError at install when
a config asks for a backend that cannot serve it.  Nothing else: no TypeError, no "internal
error" from a value of a wrong type.
"""
from __future__ import annotations

import copy
import tomllib
import warnings
from pathlib import Path

from ipsec_core.config import LIFETIME_KEYS, SA_KEYS, load_sa_file
from ipsec_core.crypto.registry import get_registry
from ipsec_core.dataplane.sa import SecurityAssociation
from ipsec_core.errors import BackendError, ConfigError

from fuzz._config import check_config_error, toml_document, value, write
from fuzz._harness import Reader, main

TARGET = "sa_config"
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "site-to-site.toml"
BASE = tomllib.loads(EXAMPLE.read_text())["sa"]
KEYS = sorted(SA_KEYS) + ["bogus"]


def structured(r: Reader) -> str:
    tables = [copy.deepcopy(r.pick(BASE)) for _ in range(1 + r.int() % 2)]
    for _ in range(1 + r.int() % 4):
        i = r.int() % len(tables)
        where = r.int() % 8
        if where == 0:
            tables[i] = value(r)                     # an [[sa]] item that may be no table
        elif not isinstance(tables[i], dict):
            continue
        elif where == 1:
            tables[i].pop(r.pick(KEYS), None)
        elif where == 2:
            tables[i]["lifetime"] = {r.pick(sorted(LIFETIME_KEYS)): value(r)}
        elif where == 3:
            tables[i]["tunnel"] = {r.pick(("local", "remote", "x")): value(r),
                                   "remote": r.pick(("192.0.2.2", "2001:db8::2"))}
        else:
            tables[i][r.pick(KEYS)] = value(r)
    doc = {"sa": tables}
    if r.int() % 16 == 0:
        doc[r.pick(("sa2", "x"))] = value(r)
    return toml_document(doc)


def test_one_input(data: bytes) -> None:
    r = Reader(data)
    text = structured(r) if r.int() & 1 else r.rest()
    path = write("sa.toml", text)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            configs = load_sa_file(path)
    except ConfigError as exc:
        check_config_error(exc, path)
        return
    for cfg in configs:
        try:
            SecurityAssociation(cfg, registry=get_registry(), now=0.0)
        except BackendError:
            pass


if __name__ == "__main__":
    main(TARGET, test_one_input)

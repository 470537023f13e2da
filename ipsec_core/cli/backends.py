"""`ipsec backends` and `ipsec selftest`: what the crypto registry holds, and the vector run.

Owns: the JSON shapes of both commands (`backends`: a list of objects with name, available,
reason, algorithms (ESP keywords), ike_algorithms (the IKE-only ones: PRFs and key exchange
methods, e.g. prfsha256, ecp256, x25519, modp2048), and `default_for`: the algorithms an SA or
IKE SA naming no backend gets from it;
`selftest`: an object with passed, failed, results).
Must not: test or select anything itself: the registry and `ipsec_core.crypto.selftest` do.
"""
from __future__ import annotations

import re
from collections import Counter
from typing import Annotated, Optional

import typer

from ipsec_core.cli._common import EXIT_ERROR, console, fail, handle_errors, print_json, warn
from ipsec_core.crypto.base import FAMILY_KIND
from ipsec_core.transforms.ike import ike_keywords_for
from ipsec_core.transforms.keywords import esp_keywords_for, parse_esp


def _registry():
    from ipsec_core.crypto.registry import get_registry

    return get_registry()


def _records(registry):
    return sorted(registry.records.values(), key=lambda r: (-r.backend.priority, r.name))


def algorithms_of(record, catalog=None) -> list[str]:
    """The ESP keywords a backend's offered features make possible, in a stable order
    (plugin transforms from `catalog`, the registry's transforms)."""
    out: list[str] = []
    for feature in record.features:
        for keyword in esp_keywords_for(feature.family, feature.key_bits, catalog=catalog):
            if feature.tag_bytes and parse_esp(keyword, catalog=catalog).encr_info.icv_bytes not in feature.tag_bytes:
                continue                  # e.g. gpu: aes128gcm16 and aes128gmac, not aes128gcm8
            if keyword not in out:
                out.append(keyword)
    return out


def ike_algorithms_of(record) -> list[str]:
    """The IKE-only keywords (PRFs, then key exchange methods) a backend's offered features
    make possible."""
    out: list[str] = []
    for feature in record.features:
        out.extend(k for k in ike_keywords_for(feature.family) if k not in out)
    return out


def signatures_of(record) -> list[str]:
    """The signature families (IKE certificate authentication) a backend offers, in the order
    of `ipsec_core.crypto.signature.SIGNATURE_FAMILIES`."""
    from ipsec_core.crypto.signature import SIGNATURE_FAMILIES

    offered = {f.family for f in record.features}
    return [name for name in SIGNATURE_FAMILIES if name in offered]


def compact_keywords(keywords: list[str]) -> str:
    """"aes128gcm8 aes192gcm8 ... aes256gcm16" -> "aes{128,192,256}gcm{8,12,16}" (for tables)."""
    groups: dict[str, list[tuple[int, ...]]] = {}
    for kw in keywords:
        numbers = tuple(int(n) for n in re.findall(r"\d+", kw))
        groups.setdefault(re.sub(r"\d+", "{}", kw), []).append(numbers)
    parts = []
    for template, rows in groups.items():
        columns = [sorted(set(col)) for col in zip(*rows)] if rows[0] else []
        full = len(set(rows)) == len(rows) and len(rows) == _product(len(c) for c in columns)
        if not columns or not full:
            parts.extend(template.format(*row) for row in rows)
            continue
        parts.append(template.format(*(
            str(c[0]) if len(c) == 1 else "{" + ",".join(map(str, c)) + "}" for c in columns)))
    return " ".join(parts)


def _product(values) -> int:
    out = 1
    for v in values:
        out *= v
    return out


def default_choices(registry) -> list[dict]:
    """For every ESP algorithm (plugin transforms included): the backend an SA that names none
    gets (the registry's choice, `ipsec_choose_backend` hooks included), or why there is none."""
    from ipsec_core.errors import IpsecError
    from ipsec_core.transforms.keywords import _INTEG_NAME, _encr_name
    from ipsec_core.transforms.iana import ENCR_INFO, INTEG_INFO, KE_INFO, PRF_INFO, CipherKind

    wanted = []
    infos = [i for i in ENCR_INFO.values() if i.kind is not CipherKind.NULL]
    infos += [t.info for t in registry.transforms if t.usable]
    for info in infos:
        tag = info.icv_bytes if info.kind in (CipherKind.AEAD, CipherKind.GMAC) else None
        wanted += [(_encr_name(info.id, bits), info.family, bits, tag) for bits in info.key_bits]
    for integ in INTEG_INFO.values():
        bits = None if integ.family.startswith("hmac") else integ.key_bytes * 8
        wanted.append((_INTEG_NAME[integ.id], integ.family, bits, None))
    for family in [p.family for p in PRF_INFO.values()] + [k.family for k in KE_INFO.values()]:
        wanted += [(keyword, family, None, None) for keyword in ike_keywords_for(family)]
    from ipsec_core.crypto.signature import SIGNATURE_FAMILIES

    wanted += [(family, family, None, None) for family in SIGNATURE_FAMILIES]
    rows = []
    for keyword, family, bits, tag in wanted:
        try:
            name, reason = registry.select(family, bits, tag_bytes=tag).name, None
        except IpsecError as exc:
            name, reason = None, str(exc)
        rows.append({"algorithm": keyword, "family": family, "key_bits": bits, "backend": name,
                     "reason": reason})
    return rows


def backend_details(record) -> dict:
    """What an available backend says about where it runs, when it says anything (the gpu
    backend: the device, the CUDA driver and runtime versions, CuPy's version)."""
    get = getattr(record.backend, "details", None)
    if not record.available or get is None:
        return {}
    try:
        return dict(get())
    except Exception as exc:       # a display must not fail because a driver query did
        return {"details_error": f"{exc.__class__.__name__}: {exc}"}


def backend_json(record, choices: list[dict] | None = None, *, catalog=None) -> dict:
    return {
        "name": record.name,
        "available": record.available,
        "reason": record.reason,
        "algorithms": algorithms_of(record, catalog),
        "ike_algorithms": ike_algorithms_of(record),
        "signatures": signatures_of(record),
        "plugin": record.plugin,
        "priority": record.backend.priority,
        "description": record.backend.description,
        "features": [str(f) for f in record.features],
        "failed": dict(record.failed),
        "default_for": [c["algorithm"] for c in choices or () if c["backend"] == record.name],
        "details": backend_details(record),
    }


@handle_errors
def backends(
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print a JSON list (for scripts).")] = False,
) -> None:
    """List every crypto backend: available or why not, and the ESP and IKE algorithms it offers.

    Backends are ordered by priority: an SA that names no backend gets the first available one
    that offers its algorithm.  Features that failed their self-test are not offered and are
    shown with the reason.
    """
    registry = _registry()
    for problem in registry.problems:
        warn(str(problem))
    records = _records(registry)
    choices = default_choices(registry)
    if as_json:
        print_json([backend_json(r, choices, catalog=registry.transforms) for r in records])
        return
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="Crypto backends (highest priority first)")
    table.add_column("backend", style="bold", no_wrap=True)
    table.add_column("prio", justify="right")
    table.add_column("status", ratio=1, overflow="fold")
    table.add_column("ESP algorithms", ratio=2, min_width=30, overflow="fold")
    table.add_column("IKE PRF / key exchange / signatures", ratio=1, min_width=16, overflow="fold")
    for r in records:
        if not r.available:
            status = f"[red]unavailable[/]: {escape(str(r.reason))}"
        elif r.failed:
            status = "[yellow]available, some features failed[/]"
        else:
            status = "[green]available[/]"
        algs = escape(compact_keywords(algorithms_of(r, registry.transforms)) or "-")
        if r.failed:
            algs += "\n" + "\n".join(f"[red]not offered[/] {escape(k)}: {escape(v)}"
                                      for k, v in r.failed.items())
        status += f"\n[dim]plugin {escape(r.plugin)}[/]"
        details = backend_details(r)
        if details:
            status += "\n[dim]" + escape(", ".join(f"{k} {v}" for k, v in details.items())) + "[/]"
        ike_kws = ike_algorithms_of(r)      # x25519 x448 stay apart: "x{448,25519}" reads badly
        ike = escape(" ".join(filter(None, (
            compact_keywords([k for k in ike_kws if not k.startswith("x")]),
            " ".join(k for k in ike_kws if k.startswith("x"))))) or "-")
        signatures = signatures_of(r)
        if signatures:
            ike += "\n" + escape(compact_keywords(signatures))
        table.add_row(escape(r.name), str(r.backend.priority), status, algs, ike)
    out = console()
    out.print(table)
    chosen = Table(title="Default choice: the backend each algorithm gets when an SA names none")
    chosen.add_column("backend", style="bold", no_wrap=True)
    chosen.add_column("algorithms", ratio=1, overflow="fold")
    by_backend: dict[str, list[str]] = {}
    for c in choices:
        by_backend.setdefault(c["backend"] or "", []).append(c["algorithm"])
    for r in records:
        if r.name in by_backend:
            chosen.add_row(escape(r.name), escape(compact_keywords(by_backend[r.name])))
    if "" in by_backend:
        chosen.add_row("[red]none[/]", escape(compact_keywords(by_backend[""])))
    out.print(chosen)


@handle_errors
def selftest(
    backend: Annotated[Optional[str], typer.Option(
        "--backend", "-b", help="Test only this backend (default: every available one).")] = None,
    family: Annotated[Optional[str], typer.Option(
        "--family", help="Test only this primitive family, e.g. aes-gcm, hmac-sha256.")] = None,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print a JSON object (for scripts).")] = False,
) -> None:
    """Run every packaged known-answer vector (RFC and Wycheproof) against the backends.

    Exits non-zero when any vector fails.  Unavailable backends are skipped (listed as such);
    naming an unavailable one with --backend is an error.
    """
    from ipsec_core.crypto.selftest import run_all

    registry = _registry()
    families = list(FAMILY_KIND) + [f for f in registry.transforms.families() if f not in FAMILY_KIND]
    if family is not None and family not in families:
        fail(f"unknown family {family!r}; known: {', '.join(sorted(families))}")
    if backend is not None:
        record = registry.get(backend)          # BackendError names the installed ones
        if not record.available:
            fail(f"backend {backend!r} is unavailable: {record.reason}")
        targets, skipped = [record], []
    else:
        targets = [r for r in _records(registry) if r.available]
        skipped = [{"backend": r.name, "reason": r.reason}
                   for r in _records(registry) if not r.available]

    results = []
    for record in targets:
        for res in run_all(record.backend, family, catalog=registry.transforms):
            results.append({"backend": record.name, "id": res.id, "family": res.family,
                            "passed": bool(res.passed), "detail": res.detail})
    passed = sum(r["passed"] for r in results)
    failed = len(results) - passed
    if as_json:
        print_json({"passed": passed, "failed": failed, "results": results, "skipped": skipped})
    else:
        _print_summary(results, skipped)
    if failed or not results:
        if not results and not as_json:
            warn("no vector was run (no available backend offers the requested family)")
        raise typer.Exit(EXIT_ERROR)


def _print_summary(results: list[dict], skipped: list[dict]) -> None:
    from rich.markup import escape
    from rich.table import Table

    out = console()
    ok: Counter = Counter()
    bad: Counter = Counter()
    for r in results:
        (ok if r["passed"] else bad)[(r["backend"], r["family"])] += 1
    table = Table(title="Self-test: known-answer vectors")
    table.add_column("backend", style="bold")
    table.add_column("family")
    table.add_column("passed", justify="right")
    table.add_column("failed", justify="right")
    for key in sorted(set(ok) | set(bad), key=lambda k: (k[0], k[1])):
        table.add_row(escape(key[0]), escape(key[1]), str(ok[key]),
                      f"[red]{bad[key]}[/]" if bad[key] else "0")
    out.print(table)
    for r in results:
        if not r["passed"]:
            out.print(f"[red]FAIL[/] {escape(r['id'])}\\[{escape(r['backend'])}]: "
                      f"{escape(r['detail'])}", highlight=False)
    for s in skipped:
        out.print(f"[dim]skipped {escape(s['backend'])}: {escape(str(s['reason']))}[/]")
    total_ok, total_bad = sum(ok.values()), sum(bad.values())
    verdict = "[green]all passed[/]" if not total_bad else f"[red]{total_bad} failed[/]"
    out.print(f"{total_ok + total_bad} vectors: {total_ok} passed, {verdict}")

"""`ipsec plugins`: every plugin the registry loaded or tried to, with its distribution and
version, the hooks it implements, the backends and features it provides and their self-test
results, the transforms it added, and what went wrong.

Owns: the JSON shape (a list of objects with name, distribution, version, hooks, features, and
also entry_point, builtin, loaded, backends, transforms, problems).
Must not: load, test or select anything itself: the registry does.
"""
from __future__ import annotations

from typing import Annotated

import typer

from ipsec_core.cli._common import console, handle_errors, print_json, warn


def _feature_rows(registry, record) -> list[dict]:
    out = []
    for feature in record.declared:
        key = str(feature)
        offered = feature in record.features
        if not record.available:
            selftest, detail = "not run", f"backend unavailable: {record.reason}"
        elif offered:
            selftest, detail = "passed", ""
        else:
            selftest, detail = "failed", record.failed.get(key, "")
        out.append({"backend": record.name, "feature": key, "family": feature.family,
                    "key_bits": list(feature.key_bits), "offered": offered,
                    "selftest": selftest, "detail": detail})
    return out


def plugin_json(registry) -> list[dict]:
    """One object per plugin, in load order, then one per name that only has problems."""
    rows: list[dict] = []
    for name, info in registry.plugins.items():
        backends = [r for r in registry.records.values() if r.plugin == name]
        transforms = [t for t in registry.transforms if t.plugin == name]
        refused = [t for t in registry.transforms.refused if t.plugin == name]
        rows.append({
            "name": name,
            "entry_point": info.entry_point,
            "distribution": info.distribution,
            "version": info.version,
            "builtin": info.builtin,
            "loaded": info.loaded,
            "hooks": registry.hooks_of(name),
            "backends": [{"name": r.name, "available": r.available, "reason": r.reason,
                          "priority": r.backend.priority} for r in backends],
            "features": [row for r in backends for row in _feature_rows(registry, r)],
            "transforms": [{"id": int(t.id), "name": t.name, "keywords": t.keywords(),
                            "family": t.family, "kind": t.info.kind.value, "state": t.state,
                            "reason": t.reason} for t in transforms]
                          + [{"id": getattr(t.spec, "id", None), "name": t.name, "keywords": [],
                              "family": getattr(t.spec, "family", None), "kind": None,
                              "state": "refused", "reason": t.reason} for t in refused],
            "problems": [p.reason for p in registry.problems if p.plugin == name],
        })
    known = set(registry.plugins)
    for problem in registry.problems:
        if problem.plugin in known:
            continue
        known.add(problem.plugin)
        rows.append({"name": problem.plugin, "entry_point": None,
                     "distribution": problem.distribution, "version": problem.version,
                     "builtin": False, "loaded": False, "hooks": [], "backends": [],
                     "features": [], "transforms": [],
                     "problems": [p.reason for p in registry.problems if p.plugin == problem.plugin]})
    return rows


@handle_errors
def plugins(
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print a JSON list (for scripts).")] = False,
) -> None:
    """List every plugin: distribution and version, hooks, features and their self-tests.

    Built-in plugins are always loaded; third-party ones come from the entry-point group
    "ipsec" (IPSEC_PLUGINS=a,b limits them by entry-point name, IPSEC_DISABLE_PLUGIN_AUTOLOAD=1
    loads none).  A plugin that failed to import or register is listed with the reason.
    """
    from ipsec_core.crypto.registry import get_registry

    registry = get_registry()
    rows = plugin_json(registry)
    if as_json:
        print_json(rows)
        return
    for problem in registry.problems:
        warn(str(problem))
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="ipsec plugins (load order)")
    table.add_column("plugin", style="bold", overflow="fold")
    table.add_column("distribution", overflow="fold")
    table.add_column("hooks", overflow="fold", max_width=28)
    table.add_column("provides (self-test)", ratio=2, overflow="fold")
    for row in rows:
        name = escape(row["name"]) + (f"\n[dim]entry point {escape(row['entry_point'])}[/]"
                                      if row["entry_point"] else "")
        dist = escape(f"{row['distribution'] or '-'} {row['version'] or ''}".strip())
        if row["builtin"]:
            dist += "\n[dim]built-in[/]"
        lines = []
        for b in row["backends"]:
            state = "[green]available[/]" if b["available"] else f"[red]unavailable[/]: {escape(str(b['reason']))}"
            lines.append(f"backend [bold]{escape(b['name'])}[/] (priority {b['priority']}): {state}")
        for b in row["backends"]:
            mine = [f for f in row["features"] if f["backend"] == b["name"]]
            passed = [escape(f["feature"]) for f in mine if f["selftest"] == "passed"]
            if passed:
                lines.append("  [green]self-test passed[/]: " + " ".join(passed))
            lines += [f"  [red]self-test failed[/] {escape(f['feature'])}: {escape(f['detail'])}"
                      for f in mine if f["selftest"] == "failed"]
        for t in row["transforms"]:
            state = "[green]offered[/]" if t["state"] == "offered" else f"[yellow]{t['state']}[/]"
            why = f": {escape(str(t['reason']))}" if t["reason"] else ""
            lines.append(f"transform {escape(t['name'])} ({t['id']}) "
                         f"{escape(' '.join(t['keywords']))} {state}{why}")
        for p in row["problems"]:
            lines.append(f"[red]problem[/]: {escape(p)}")
        if not row["loaded"] and not row["problems"]:
            lines.append("[dim]not loaded[/]")
        table.add_row(name, dist, escape("\n".join(h.removeprefix("ipsec_") for h in row["hooks"]) or "-"), "\n".join(lines) or "-")
    console().print(table)

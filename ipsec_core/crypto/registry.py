"""The crypto registry: loads plugins through pluggy, collects their transforms and backends,
probes and self-tests the backends, and answers "which backend computes this primitive for this
SA".

Owns: plugin loading (built-ins by module path, third-party ones by the entry-point group
``ipsec``, the `IPSEC_PLUGINS` allowlist and `IPSEC_DISABLE_PLUGIN_AUTOLOAD`), what each plugin
is (distribution, version, hooks) and what went wrong with it (`problems`), backend records,
the transform catalogue (`transforms`), and the selection order.
Must not: be called per packet.  `select` runs when an SA is installed; the SA keeps the bound
primitive objects it returns.

Loading: the built-in plugins (`BUILTIN_PLUGINS`) are registered by module path, so they work
from a source checkout; then plugins passed as `plugins=`; then, unless
`IPSEC_DISABLE_PLUGIN_AUTOLOAD` is set (to anything but 0/false/no/off), every entry point of the
group ``ipsec`` whose name `IPSEC_PLUGINS` lists (comma separated; unset: all of them).  A plugin
that fails to import, to register (pluggy validation, or a hook name that is no hook) or in one
of its hooks is recorded in `problems` with its name, distribution and version, and skipped; the
others load.  Then every plugin's `ipsec_register_transforms`, then `ipsec_register_backends`.

Selection: an SA that names a backend gets that backend or a `BackendError` saying why not
(missing, unavailable, lacks the primitive, or the primitive failed its self-test).  Never a
silent fallback.  An SA that names none gets, among the available backends that offer the
primitive with that key size (highest priority first, ties in registration order), the one a
plugin's `ipsec_choose_backend` picks, else the first: the highest priority.
"""
from __future__ import annotations

import contextlib
import importlib
import os
import sys
from dataclasses import dataclass, field
from importlib import metadata
from types import ModuleType
from typing import Any, Iterable

import pluggy

from ipsec_core.crypto import hookspecs, selftest
from ipsec_core.crypto.base import FAMILY_KIND, Backend, Feature
from ipsec_core.crypto.catalog import (NO_BACKEND, OFFERED, REFUSED, UNCHECKED, RefusedTransform,
                                       TransformCatalog, TransformRecord)
from ipsec_core.errors import BackendError

#: Built-in plugins, registered by module path so they work from a source checkout too.
BUILTIN_PLUGINS = (
    "ipsec_plugins.reference",
    "ipsec_plugins.aesni",
    "ipsec_plugins.cryptodome",
    "ipsec_plugins.gpu",
    "ipsec_plugins.ipsecmb",
)
#: Comma-separated entry-point names: only these third-party plugins load (built-ins always do).
PLUGINS_ENV = "IPSEC_PLUGINS"
#: Set (not 0/false/no/off) to load no entry-point plugin at all: built-ins only.
DISABLE_AUTOLOAD_ENV = "IPSEC_DISABLE_PLUGIN_AUTOLOAD"
ENTRY_POINT_GROUP = hookspecs.PROJECT_NAME


def autoload_disabled() -> bool:
    value = os.environ.get(DISABLE_AUTOLOAD_ENV, "").strip().lower()
    return value not in ("", "0", "false", "no", "off")


def plugin_allowlist() -> set[str] | None:
    """The entry-point names `IPSEC_PLUGINS` allows, or None when it is unset (all)."""
    value = os.environ.get(PLUGINS_ENV)
    if value is None:
        return None
    return {name.strip() for name in value.split(",") if name.strip()}


@dataclass
class BackendRecord:
    backend: Backend
    plugin: str
    available: bool
    reason: str | None
    features: list[Feature] = field(default_factory=list)          # offered (passed self-test)
    failed: dict[str, str] = field(default_factory=dict)            # str(feature) -> why not offered
    declared: list[Feature] = field(default_factory=list)          # what features() returned
    checks: dict[str, str | None] = field(default_factory=dict)    # built-in quick check results

    @property
    def name(self) -> str:
        return self.backend.name

    def offers(self, family: str, key_bits: int | None, tag_bytes: int | None = None) -> bool:
        return any(f.family == family and f.accepts(key_bits) and f.accepts_tag(tag_bytes)
                   for f in self.features)

    def declares(self, family: str) -> bool:
        return any(f.family == family for f in self.declared)


@dataclass
class PluginProblem:
    """Something wrong with one plugin: `plugin` is its module path (or entry-point value)."""

    plugin: str
    version: str | None
    reason: str
    distribution: str | None = None

    def __str__(self) -> str:
        dist = f" ({self.distribution} {self.version or ''})".replace(" )", ")") if self.distribution else ""
        return f"plugin {self.plugin}{dist}: {self.reason}"


@dataclass
class PluginInfo:
    """One plugin as `ipsec plugins` lists it."""

    name: str                           # pluggy name: the module path, e.g. "ipsec_plugins.aesni"
    entry_point: str | None = None      # its name in the group "ipsec", when it has one
    distribution: str | None = None
    version: str | None = None
    builtin: bool = False
    loaded: bool = False                # imported and registered with pluggy


class Registry:
    """Holds every plugin, transform and backend.  Use `get_registry()` for the process-wide one.

    plugins:           extra plugin modules (or dotted module names) to register after the
                       built-ins, whatever the environment says: how a plugin's own tests, and
                       `ipsec_core.testing`, load a plugin that is not installed.
    load_entry_points: False loads no entry-point plugin (as IPSEC_DISABLE_PLUGIN_AUTOLOAD=1).
    selftest:          False skips the known-answer checks at registration (offers everything
                       declared; for tests of the registry itself).
    """

    def __init__(self, *, load_entry_points: bool = True, selftest: bool = True,
                 plugins: Iterable[ModuleType | str] = ()):
        self._selftest = selftest
        self.pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self.records: dict[str, BackendRecord] = {}
        self.problems: list[PluginProblem] = []
        self.plugins: dict[str, PluginInfo] = {}
        self.transforms = TransformCatalog()
        self._entry_points: dict[str, metadata.EntryPoint] | None = None
        self._top_level: dict[str, list[str]] | None = None
        self._reported: set[tuple[str, str]] = set()
        self._refusals: dict[int, PluginProblem] = {}     # transform id -> its problem
        self._load_builtins()
        for plugin in plugins:
            self._load_module(plugin)
        if load_entry_points and not autoload_disabled():
            self._load_entry_points()
        self._collect()

    # -- loading -------------------------------------------------------------------------
    def _problem(self, plugin: str, reason: str) -> None:
        if (plugin, reason) in self._reported:
            return
        self._reported.add((plugin, reason))
        info = self.plugins.get(plugin) or self._info_for(plugin)
        self.problems.append(PluginProblem(plugin, info.version, reason, info.distribution))

    def _eps(self) -> dict[str, metadata.EntryPoint]:
        """Entry points of the group "ipsec", by value (module path)."""
        if self._entry_points is None:
            try:
                eps = metadata.entry_points(group=ENTRY_POINT_GROUP)
            except Exception:  # a broken installed distribution must not stop the registry
                eps = ()
            self._entry_points = {ep.value: ep for ep in eps}
        return self._entry_points

    def _info_for(self, name: str, *, builtin: bool = False) -> PluginInfo:
        """Distribution and version of a plugin module: from its entry point when it has one,
        else from the distribution that installed its top-level package (none for a checkout)."""
        info = PluginInfo(name, builtin=builtin)
        ep = self._eps().get(name)
        if ep is not None:
            info.entry_point = ep.name
            if ep.dist is not None:
                info.distribution, info.version = ep.dist.name, ep.dist.version
        if info.distribution is None:
            if self._top_level is None:
                try:
                    self._top_level = metadata.packages_distributions()
                except Exception:
                    self._top_level = {}
            dists = self._top_level.get(name.split(":")[0].split(".")[0]) or []
            if dists:
                info.distribution = dists[0]
                try:
                    info.version = metadata.version(dists[0])
                except metadata.PackageNotFoundError:
                    pass
        return info

    def _load_builtins(self) -> None:
        for modname in BUILTIN_PLUGINS:
            self.plugins[modname] = info = self._info_for(modname, builtin=True)
            try:
                module = importlib.import_module(modname)
            except Exception as exc:  # a broken plugin must not take the others down
                self._problem(modname, f"import failed: {exc!r}")
                continue
            self._register(module, info)

    def _load_module(self, plugin: ModuleType | str) -> None:
        name = plugin if isinstance(plugin, str) else getattr(plugin, "__name__", repr(plugin))
        if name in self.plugins:
            return
        self.plugins[name] = info = self._info_for(name)
        if isinstance(plugin, str):
            try:
                plugin = importlib.import_module(plugin)
            except Exception as exc:
                self._problem(name, f"import failed: {exc!r}")
                return
        self._register(plugin, info)

    def _load_entry_points(self) -> None:
        allowed = plugin_allowlist()
        seen: set[str] = set()
        for value, ep in self._eps().items():
            seen.add(ep.name)
            if value in self.plugins:      # a built-in, or one passed as plugins=
                continue
            if allowed is not None and ep.name not in allowed:
                continue
            self.plugins[value] = info = self._info_for(value)
            try:
                module = ep.load()
            except Exception as exc:
                self._problem(value, f"import failed: {exc!r}")
                continue
            self._register(module, info)
        for name in sorted((allowed or set()) - seen):
            self._problem(name, f"{PLUGINS_ENV} names it, but no installed distribution has an "
                                f"entry point of that name in the group {ENTRY_POINT_GROUP!r}")

    def _register(self, module: object, info: PluginInfo) -> None:
        try:
            self.pm.register(module, name=info.name)
        except Exception as exc:
            self._problem(info.name, f"register failed: {exc!r}")
            return
        unknown = [c.name for c in self.pm.get_hookcallers(module) or [] if c.spec is None]
        if unknown:
            self.pm.unregister(module)
            self._problem(info.name, f"register failed: {', '.join(unknown)} is not an ipsec hook "
                                     f"(known: {', '.join(self.hook_names())})")
            return
        info.loaded = True

    @staticmethod
    def hook_names() -> list[str]:
        return sorted(n for n in dir(hookspecs) if n.startswith("ipsec_"))

    def hooks_of(self, plugin: str) -> list[str]:
        """The hooks a loaded plugin implements."""
        module = self.pm.get_plugin(plugin)
        if module is None:
            return []
        return sorted(c.name for c in self.pm.get_hookcallers(module) or [])

    def _impls(self, hook: str):
        return [i for i in getattr(self.pm.hook, hook).get_hookimpls()
                if not (getattr(i, "hookwrapper", False) or getattr(i, "wrapper", False))]

    @staticmethod
    def _call(impl, **kwargs: Any) -> Any:
        return impl.function(*(kwargs[name] for name in impl.argnames))

    def _collect(self) -> None:
        for hook, add in (("ipsec_register_transforms", self._add_transform_quietly),
                          ("ipsec_register_backends", self._add_backend_quietly)):
            for impl in self._impls(hook):
                found: list[object] = []
                try:
                    self._call(impl, register=found.append)
                except Exception as exc:
                    self._problem(impl.plugin_name, f"{hook} failed: {exc!r}")
                    continue
                for item in found:
                    add(item, impl.plugin_name)
        self._settle()

    def _add_transform_quietly(self, spec: object, plugin: str) -> None:
        self.add_transform(spec, plugin=plugin, settle=False)

    def _add_backend_quietly(self, backend: object, plugin: str) -> None:
        try:
            self.add(backend, plugin=plugin, settle=False)
        except BackendError as exc:
            self._problem(plugin, str(exc))

    # -- transforms ----------------------------------------------------------------------
    def add_transform(self, spec: object, *, plugin: str = "<direct>",
                      settle: bool = True) -> TransformRecord | RefusedTransform:
        """Register one plugin transform (the hook's `register` ends here).  A refused one is
        reported in `problems` and returned as a `RefusedTransform`."""
        result = self.transforms.add(spec, plugin=plugin)
        if isinstance(result, RefusedTransform):
            self._problem(plugin, f"transform {result.name} refused: {result.reason}")
            return result
        for record in self.records.values():
            if record.available:
                self._run_transform(result, record)
        if settle:
            self._settle()
        return result

    def _run_transform(self, transform: TransformRecord, record: BackendRecord) -> None:
        """Run the transform's vectors on one backend, for the key sizes it declares."""
        if not self._selftest:
            return
        sizes: set[int] = set()
        for feature in record.declared:
            if feature.family == transform.family:
                sizes |= set(feature.key_bits or transform.spec.key_bits)
        results: dict[int, str | None] = {}
        for bits in sorted(sizes & set(transform.spec.key_bits)):
            cases = [c for c in transform.cases if c.key_bits == bits]
            failed = [(c, why) for c in cases if (why := c.run(record.backend)) is not None]
            if failed:
                case, why = failed[0]
                more = f" (and {len(failed) - 1} more of {len(cases)})" if len(failed) > 1 else ""
                results[bits] = f"{case.id}: {why}{more}"
            else:
                results[bits] = None
        if results:
            transform.results[record.name] = results

    # -- backends ------------------------------------------------------------------------
    def add(self, backend: Backend, *, plugin: str = "<direct>", settle: bool = True) -> BackendRecord:
        """Register one backend (the hook's `register` ends here): probe, list, self-test."""
        if not isinstance(backend, Backend) or not backend.name:
            raise BackendError(f"plugin {plugin} registered {backend!r}, which is not a named Backend")
        if backend.name in self.records:
            other = self.records[backend.name].plugin
            self._problem(plugin, f"backend name {backend.name!r} is already registered by {other}")
            return self.records[backend.name]
        try:
            reason = backend.probe()
        except Exception as exc:
            reason = f"probe failed: {exc!r}"
        record = BackendRecord(backend, plugin, reason is None, reason)
        if reason is None:
            try:
                record.declared = list(backend.features())
            except Exception as exc:
                record.available, record.reason = False, f"features() failed: {exc!r}"
            for feature in record.declared:
                if feature.family in FAMILY_KIND:
                    record.checks[str(feature)] = self._check(backend, feature) if self._selftest else None
            for transform in self.transforms:
                self._run_transform(transform, record)
        self.records[backend.name] = record
        if settle:
            self._settle()
        return record

    @staticmethod
    def _check(backend: Backend, feature: Feature) -> str | None:
        try:
            failures = selftest.quick_check(backend, feature)
        except Exception as exc:
            return f"self-test raised {exc!r}"
        return "; ".join(failures) if failures else None

    def _settle(self) -> None:
        """Decide, from the stored results, which transforms are offered and which declared
        features each backend offers.  A transform counts once an available backend passes all
        its vectors; a feature is offered when it passes the packaged vectors (built-in families)
        and those of every counted transform of its family, with a vector for each key size."""
        available = [r for r in self.records.values() if r.available]
        for t in self.transforms:
            if not self._selftest:
                t.state, t.reason = UNCHECKED, None
                continue
            ran = {name: res for name, res in t.results.items()
                   if name in self.records and self.records[name].available}
            if any(all(v is None for v in res.values()) for res in ran.values()):
                t.state, t.reason = OFFERED, None
            elif ran:
                fails = "; ".join(f"{name}: {next(v for v in res.values() if v)}"
                                  for name, res in ran.items())
                t.state = REFUSED
                t.reason = (f"its known-answer vectors fail on every backend that declares "
                            f"{t.family} ({fails})")
            else:
                t.state, t.reason = NO_BACKEND, f"no available backend declares {t.family}"
            self._note_refusal(t)
        for record in available:
            record.features, record.failed = [], {}
            for feature in record.declared:
                why = self._feature_failure(record, feature)
                if why is None:
                    record.features.append(feature)
                else:
                    record.failed[str(feature)] = why

    def _note_refusal(self, t: TransformRecord) -> None:
        """Keep one problem per refused transform, up to date as backends are added."""
        problem = self._refusals.get(int(t.id))
        if t.state != REFUSED:
            if problem is not None:
                self.problems.remove(problem)
                del self._refusals[int(t.id)]
            return
        reason = f"transform {t.name} refused: {t.reason}"
        if problem is None:
            info = self.plugins.get(t.plugin) or self._info_for(t.plugin)
            problem = PluginProblem(t.plugin, info.version, reason, info.distribution)
            self._refusals[int(t.id)] = problem
            self.problems.append(problem)
        problem.reason = reason

    def _feature_failure(self, record: BackendRecord, feature: Feature) -> str | None:
        if not self._selftest:
            return None
        builtin = feature.family in FAMILY_KIND
        reasons = [record.checks[str(feature)]] if builtin and record.checks.get(str(feature)) else []
        transforms = [t for t in self.transforms.of_family(feature.family)]
        counted = [t for t in transforms if t.state == OFFERED]
        sizes = feature.key_bits or tuple(sorted({b for t in transforms for b in t.spec.key_bits}))
        for bits in sizes:
            size = f"{bits}-bit key: "
            covering = [t for t in counted if bits in t.spec.key_bits]
            for t in covering:
                why = t.results.get(record.name, {}).get(bits)
                if why:
                    reasons.append(f"{size}{t.name} {why}")
            if builtin or covering:
                continue
            own = [t.results.get(record.name, {}).get(bits) for t in transforms
                   if bits in t.spec.key_bits]
            failure = next((w for w in own if w), None)
            reasons.append(f"{size}{failure}" if failure else
                           f"no known-answer vector for {feature.family} with {bits}-bit keys")
        if not sizes and not builtin:
            reasons.append(f"no known-answer vector for {feature.family}")
        return "; ".join(reasons) if reasons else None

    # -- queries ------------------------------------------------------------------------
    def available(self) -> list[BackendRecord]:
        return sorted((r for r in self.records.values() if r.available),
                      key=lambda r: -r.backend.priority)

    def get(self, name: str) -> BackendRecord:
        try:
            return self.records[name]
        except KeyError:
            known = ", ".join(sorted(self.records)) or "none"
            raise BackendError(f"backend {name!r} is not installed (installed: {known})") from None

    def candidates(self, family: str, key_bits: int | None,
                   tag_bytes: int | None = None) -> list[BackendRecord]:
        """Available backends offering `family` with `key_bits`, highest priority first."""
        return [r for r in self.available() if r.offers(family, key_bits, tag_bytes)]

    def select(self, family: str, key_bits: int | None, backend: str | None = None, *,
               tag_bytes: int | None = None) -> Backend:
        """The backend that computes `family` with `key_bits` (and, for an AEAD, `tag_bytes`-byte
        tags; None: any) for one SA; BackendError if none."""
        what = f"{family} with {key_bits}-bit keys" if key_bits else family
        what += f" and {tag_bytes}-byte tags" if tag_bytes else ""
        if backend:
            record = self.get(backend)
            if not record.available:
                raise BackendError(f"backend {backend!r} is unavailable: {record.reason}")
            if record.offers(family, key_bits, tag_bytes):
                return record.backend
            failed = [f"{k}: {v}" for k, v in record.failed.items() if k.startswith(family)]
            if failed:
                raise BackendError(f"backend {backend!r} does not offer {what}: "
                                   f"its self-test failed ({'; '.join(failed)})")
            raise BackendError(f"backend {backend!r} does not offer {what}")
        candidates = self.candidates(family, key_bits, tag_bytes)
        if not candidates:
            raise BackendError(f"no available backend offers {what}")
        return self._choose(family, key_bits, candidates, what).backend

    def _choose(self, family: str, key_bits: int | None, candidates: list[BackendRecord],
                what: str) -> BackendRecord:
        names = [r.name for r in candidates]
        for impl in reversed(self._impls("ipsec_choose_backend")):   # pluggy's call order
            try:
                name = self._call(impl, family=family, key_bits=key_bits, candidates=list(names))
            except Exception as exc:
                raise BackendError(f"plugin {impl.plugin_name}: ipsec_choose_backend failed for "
                                   f"{what}: {exc!r}") from exc
            if name is None:
                continue
            if name not in names:
                raise BackendError(f"plugin {impl.plugin_name} chose backend {name!r} for {what}, "
                                   f"which is not one of the candidates ({', '.join(names)})")
            return candidates[names.index(name)]
        return candidates[0]

    @contextlib.contextmanager
    def preferring(self, backend: str):
        """While inside, an SA that names no backend gets `backend` for every primitive it
        offers, and the usual choice for the rest: an `ipsec_choose_backend` plugin asked before
        the others.  For measuring or testing a backend that has a cipher but no MAC (a plugin
        such as ipsec-camellia) in a real SA: `SecurityAssociation.engine.backend_names` says
        what was bound."""
        self.get(backend)
        chooser = _Prefer(backend)
        self.pm.register(chooser, name=f"ipsec_core.crypto.registry:prefer:{backend}:{id(chooser)}")
        try:
            yield self
        finally:
            self.pm.unregister(chooser)


class _Prefer:
    def __init__(self, backend: str):
        self.backend = backend

    @hookspecs.hookimpl
    def ipsec_choose_backend(self, family, key_bits, candidates):
        return self.backend if self.backend in candidates else None


_REGISTRY: Registry | None = None
_LOADING = False


def get_registry() -> Registry:
    """The process-wide registry, loaded on first use."""
    global _REGISTRY, _LOADING
    if _REGISTRY is None:
        if _LOADING:
            raise RuntimeError("get_registry() was called while the registry loads (from a plugin "
                               "hook?); hooks get what they need as arguments")
        _LOADING = True
        try:
            _REGISTRY = Registry()
        finally:
            _LOADING = False
    return _REGISTRY


def reset_registry() -> None:
    """Forget the process-wide registry (tests, or after installing a plugin)."""
    global _REGISTRY
    _REGISTRY = None


if sys.version_info < (3, 11):  # pragma: no cover
    raise RuntimeError("ipsec-suite needs Python 3.11 or newer")

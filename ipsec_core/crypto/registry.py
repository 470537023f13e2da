"""The crypto registry: loads plugins through pluggy, probes and self-tests their backends, and
answers "which backend computes this primitive for this SA".

Owns: plugin loading, backend records, the selection order.
Must not: be called per packet.  `select` runs when an SA is installed; the SA keeps the bound
primitive objects it returns.

Selection: an SA that names a backend gets that backend or a `BackendError` saying why not
(missing, unavailable, lacks the primitive, or the primitive failed its self-test).  Never a
silent fallback.  An SA that names none gets the available backend with the highest priority
that offers the primitive with that key size.
"""
from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass, field
from importlib import metadata

import pluggy

from ipsec_core import hookspecs
from ipsec_core.crypto.base import Backend, Feature
from ipsec_core.errors import BackendError

#: Built-in plugins, registered by module path so they work from a source checkout too.
BUILTIN_PLUGINS = (
    "ipsec_plugins.reference",
    "ipsec_plugins.aesni",
    "ipsec_plugins.cryptodome",
    "ipsec_plugins.gpu",
)


@dataclass
class BackendRecord:
    backend: Backend
    plugin: str
    available: bool
    reason: str | None
    features: list[Feature] = field(default_factory=list)          # offered (passed self-test)
    failed: dict[str, str] = field(default_factory=dict)            # str(feature) -> why not offered

    @property
    def name(self) -> str:
        return self.backend.name

    def offers(self, family: str, key_bits: int | None, tag_bytes: int | None = None) -> bool:
        return any(f.family == family and f.accepts(key_bits) and f.accepts_tag(tag_bytes)
                   for f in self.features)


@dataclass
class PluginProblem:
    plugin: str
    version: str | None
    reason: str


class Registry:
    """Holds every registered backend.  Use `get_registry()` for the process-wide one."""

    def __init__(self, *, load_entry_points: bool = True, selftest: bool = True):
        self._selftest = selftest
        self.pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self.records: dict[str, BackendRecord] = {}
        self.problems: list[PluginProblem] = []
        self._load_builtins()
        if load_entry_points and not os.environ.get("IPSEC_DISABLE_PLUGIN_AUTOLOAD"):
            self._load_entry_points()
        self._collect()

    # -- loading -------------------------------------------------------------------------
    def _load_builtins(self) -> None:
        for modname in BUILTIN_PLUGINS:
            try:
                module = importlib.import_module(modname)
            except Exception as exc:  # a broken plugin must not take the others down
                self.problems.append(PluginProblem(modname, None, f"import failed: {exc!r}"))
                continue
            self.pm.register(module, name=modname)

    def _load_entry_points(self) -> None:
        allow = os.environ.get("IPSEC_PLUGINS")
        allowed = {a.strip() for a in allow.split(",") if a.strip()} if allow else None
        for ep in metadata.entry_points(group=hookspecs.PROJECT_NAME):
            if allowed is not None and ep.name not in allowed:
                continue
            if ep.value in BUILTIN_PLUGINS or self.pm.has_plugin(ep.value):
                continue
            version = ep.dist.version if ep.dist else None
            try:
                module = ep.load()
            except Exception as exc:
                self.problems.append(PluginProblem(ep.name, version, f"import failed: {exc!r}"))
                continue
            try:
                self.pm.register(module, name=ep.value)
            except Exception as exc:
                self.problems.append(PluginProblem(ep.name, version, f"register failed: {exc!r}"))

    def _collect(self) -> None:
        for impl in self.pm.hook.ipsec_register_backends.get_hookimpls():
            plugin = impl.plugin_name
            found: list[Backend] = []
            try:
                impl.function(register=found.append)
            except Exception as exc:
                self.problems.append(PluginProblem(plugin, None, f"ipsec_register_backends failed: {exc!r}"))
                continue
            for backend in found:
                self.add(backend, plugin=plugin)

    def add(self, backend: Backend, *, plugin: str = "<direct>") -> BackendRecord:
        """Register one backend (the hook's `register` ends here): probe, list, self-test."""
        if not isinstance(backend, Backend) or not backend.name:
            raise BackendError(f"plugin {plugin} registered {backend!r}, which is not a named Backend")
        if backend.name in self.records:
            other = self.records[backend.name].plugin
            self.problems.append(PluginProblem(
                plugin, None, f"backend name {backend.name!r} is already registered by {other}"))
            return self.records[backend.name]
        try:
            reason = backend.probe()
        except Exception as exc:
            reason = f"probe failed: {exc!r}"
        record = BackendRecord(backend, plugin, reason is None, reason)
        if reason is None:
            try:
                declared = list(backend.features())
            except Exception as exc:
                record.available, record.reason = False, f"features() failed: {exc!r}"
                declared = []
            for feature in declared:
                why = self._check(backend, feature) if self._selftest else None
                if why is None:
                    record.features.append(feature)
                else:
                    record.failed[str(feature)] = why
        self.records[backend.name] = record
        return record

    @staticmethod
    def _check(backend: Backend, feature: Feature) -> str | None:
        from ipsec_core.crypto import selftest

        try:
            failures = selftest.quick_check(backend, feature)
        except Exception as exc:
            return f"self-test raised {exc!r}"
        return "; ".join(failures) if failures else None

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
        for record in self.available():
            if record.offers(family, key_bits, tag_bytes):
                return record.backend
        raise BackendError(f"no available backend offers {what}")


_REGISTRY: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry, loaded on first use."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = Registry()
    return _REGISTRY


def reset_registry() -> None:
    """Forget the process-wide registry (tests, or after installing a plugin)."""
    global _REGISTRY
    _REGISTRY = None


if sys.version_info < (3, 11):  # pragma: no cover
    raise RuntimeError("ipsec-suite needs Python 3.11 or newer")

"""Every pluggy hook of ipsec-suite, documented.  Hooks run at load time and SA-install time,
never per packet: the pipeline calls plain methods on objects bound when the SA is installed.

Plugins implement hooks with `ipsec_core.hookimpl`:

    from ipsec_core import hookimpl

    @hookimpl
    def ipsec_register_backends(register):
        register(MyBackend())

Built-in plugins (`ipsec_plugins.reference`, `.aesni`, `.cryptodome`, `.gpu`) use exactly this path;
third-party plugins are found through the entry-point group ``ipsec``.

Order: the registry calls ``ipsec_register_transforms`` of every plugin first, then
``ipsec_register_backends``, so a backend may declare a family that a transform (of its own
plugin or another) added.  ``ipsec_choose_backend`` runs when an SA is installed.
`tests/crypto/test_hookspecs.py` checks that every hook here has a docstring and a test.
"""
from __future__ import annotations

from typing import Callable

import pluggy

PROJECT_NAME = "ipsec"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def ipsec_register_backends(register: Callable[[object], None]) -> None:
    """Register crypto backends.

    Call ``register(backend)`` once per backend, where ``backend`` is an instance of
    `ipsec_core.crypto.Backend`.  The registry then probes it (`Backend.probe`), lists its
    features (`Backend.features`) and self-tests each feature against known-answer vectors;
    a feature that fails is not offered, and the failure is shown by ``ipsec backends``.
    A backend whose name is already registered is refused with an error naming both plugins.
    """


@hookspec
def ipsec_register_transforms(register: Callable[[object], None]) -> None:
    """Register ESP encryption transforms that the built-in tables do not have.

    Call ``register(transform)`` once per transform, where ``transform`` is an
    `ipsec_core.transforms.iana.EncrTransform`: its IANA transform id (or 1024 and up for private
    use), name, strongSwan-style proposal keywords with their key sizes, kind ("aead" or
    "cipher"), the primitive family a backend must implement (a new family is created with that
    kind), IV/block/salt/ICV sizes, and known-answer vectors for every key size.

    The registry refuses, and reports with the plugin's name, a transform that breaks an ESP
    rule the core enforces (see `ipsec_core.crypto.catalog`), reuses a built-in or another
    plugin's id or keyword, or brings no vectors.  Its vectors are run against every backend that
    declares its family: a backend that fails them does not offer the family, and a transform
    whose vectors fail on every such backend is refused.  Accepted transforms are usable in SA
    files, `ipsec perf`, `ipsec selftest` and `ipsec backends` with no change to the core.
    """


@hookspec(firstresult=True)
def ipsec_choose_backend(family: str, key_bits: int | None, candidates: list[str]) -> str | None:
    """Take part in choosing the backend for one primitive of an SA that names no backend.

    Called when an SA is installed (never per packet) with ``family``, the primitive family
    ("aes-gcm", "hmac-sha256", "camellia-cbc"...), ``key_bits``, its key size in bits (None for
    HMAC, which takes any key), and ``candidates``: the names of the available backends that
    offer it, highest priority first.  Return one of ``candidates`` to choose it,
    or None to leave the choice to the next plugin and finally to the default order (the first
    candidate: highest priority).  Plugins registered later are asked first.  A name that is not
    a candidate, or an exception, refuses the SA with a BackendError naming the plugin: never a
    silent fallback.  An SA that names its backend never calls this hook.
    """

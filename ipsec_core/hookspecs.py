"""Every pluggy hook of ipsec-suite, documented.  Hooks run at load time and SA-install time,
never per packet: the pipeline calls plain methods on objects bound when the SA is installed.

Plugins implement hooks with `ipsec_core.hookimpl`:

    from ipsec_core import hookimpl

    @hookimpl
    def ipsec_register_backends(register):
        register(MyBackend())

Built-in plugins (`ipsec_plugins.reference`, `.aesni`, `.cryptodome`, `.gpu`) use exactly this path;
third-party plugins are found through the entry-point group ``ipsec``.
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

"""Shared test setup.

The suite's process-wide registry holds the built-in backends only: third-party plugins that
happen to be installed (CI installs examples/camellia) are not auto-loaded, so tests that
iterate "every available backend" keep testing the built-ins whatever is installed.  Tests of
plugin loading and of the example plugin build their own registries (`Registry(...)`,
`ipsec_core.testing.plugin_registry`) or clear the variable for a subprocess.
"""
import os

import pytest

os.environ.setdefault("IPSEC_DISABLE_PLUGIN_AUTOLOAD", "1")


def preferred_backend(registry, family: str, key_bits: int | None,
                      tag_bytes: int | None = None) -> str:
    """The name of the backend `registry` gives an SA that names none, by priority alone: the
    highest-priority available backend whose self-tested features offer the primitive.

    Computed from the registry's records, not hard-coded: which backend is on top depends on
    the machine (ipsecmb, priority 400, only where its C extension is built and the CPU has
    AES-NI; aesni, 300, otherwise) and on what each offers (ipsecmb has no AES-CCM and no
    192-bit CMAC).  `ipsec_choose_backend` hooks are not consulted: a test of a hook compares
    against this."""
    offering = [r for r in registry.available() if r.offers(family, key_bits, tag_bytes)]
    if not offering:
        raise AssertionError(f"no available backend offers {family} with {key_bits}-bit keys")
    return max(offering, key=lambda r: r.backend.priority).name


@pytest.fixture(scope="session")
def preferred():
    """`preferred(registry, family, key_bits, tag_bytes=None)`: see `preferred_backend`."""
    return preferred_backend

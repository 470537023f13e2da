"""Shared test setup.

The suite's process-wide registry holds the built-in backends only: third-party plugins that
happen to be installed (CI installs examples/camellia) are not auto-loaded, so tests that
iterate "every available backend" keep testing the built-ins whatever is installed.  Tests of
plugin loading and of the example plugin build their own registries (`Registry(...)`,
`ipsec_core.testing.plugin_registry`) or clear the variable for a subprocess.
"""
import os

os.environ.setdefault("IPSEC_DISABLE_PLUGIN_AUTOLOAD", "1")

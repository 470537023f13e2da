"""A plugin that misspells a hook: pluggy would ignore it silently; the registry refuses it."""
from ipsec_core import hookimpl


@hookimpl
def ipsec_register_backend(register):   # no "s"
    raise AssertionError("never called")

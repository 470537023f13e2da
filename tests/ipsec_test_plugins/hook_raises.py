"""A plugin whose registration hook raises."""
from ipsec_core import hookimpl


@hookimpl
def ipsec_register_backends(register):
    raise RuntimeError("backend table not found")

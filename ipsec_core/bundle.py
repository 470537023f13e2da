"""Moved to `ipsec_core.dataplane.bundle`; this name stays importable for existing code."""
from ipsec_core.dataplane.bundle import *  # noqa: F401,F403

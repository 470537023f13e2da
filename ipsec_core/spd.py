"""Moved to `ipsec_core.dataplane.spd`; this name stays importable for existing code."""
from ipsec_core.dataplane.spd import *  # noqa: F401,F403

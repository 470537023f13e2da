"""Moved to `ipsec_core.dataplane.sa`; this name stays importable for existing code."""
from ipsec_core.dataplane.sa import *  # noqa: F401,F403

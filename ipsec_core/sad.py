"""Moved to `ipsec_core.dataplane.sad`; this name stays importable for existing code."""
from ipsec_core.dataplane.sad import *  # noqa: F401,F403

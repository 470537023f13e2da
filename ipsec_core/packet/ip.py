"""Moved to `ipsec_core.wire.ip`; this name stays importable for existing code."""
from ipsec_core.wire.ip import *  # noqa: F401,F403

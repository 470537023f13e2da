"""Moved to `ipsec_core.vpn.tuning`; this name stays importable for existing code."""
from ipsec_core.vpn.tuning import *  # noqa: F401,F403

"""Moved to `ipsec_core.dataplane.fragments`; this name stays importable for existing code."""
from ipsec_core.dataplane.fragments import *  # noqa: F401,F403

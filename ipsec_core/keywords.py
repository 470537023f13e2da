"""Moved to `ipsec_core.transforms.keywords`; this name stays importable for existing code."""
from ipsec_core.transforms.keywords import *  # noqa: F401,F403

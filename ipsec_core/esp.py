"""Moved to `ipsec_core.dataplane.esp`; this name stays importable for existing code."""
from ipsec_core.dataplane.esp.engine import *  # noqa: F401,F403
from ipsec_core.dataplane.esp.engine import NAT_KEEPALIVE, NON_ESP_MARKER  # noqa: F401

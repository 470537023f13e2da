"""Moved to `ipsec_core.wire`; these names stay importable for existing code."""

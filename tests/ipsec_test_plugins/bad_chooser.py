"""A plugin whose choice is not a candidate: the SA must be refused, not silently served."""
from ipsec_core import hookimpl


@hookimpl
def ipsec_choose_backend(family, key_bits, candidates):
    return "no-such-backend" if family == "aes-gcm" else None

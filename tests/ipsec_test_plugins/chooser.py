"""A plugin taking part in backend choice: cryptodome for AES-GCM whenever it is a candidate,
no opinion otherwise."""
from ipsec_core import hookimpl


@hookimpl
def ipsec_choose_backend(family, key_bits, candidates):
    if family == "aes-gcm" and "cryptodome" in candidates:
        return "cryptodome"
    return None

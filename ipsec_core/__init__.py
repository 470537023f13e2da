"""ipsec-suite: a userspace IPsec stack (ESP/AH data plane, pluggable crypto backends, IKEv2)."""
from ipsec_core.crypto.hookspecs import hookimpl

__version__ = "0.1.0"
__all__ = ["hookimpl", "__version__"]

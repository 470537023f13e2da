"""A correct plugin: one backend with one MAC (HMAC-SHA-256 from the standard library)."""
import hashlib
import hmac

from ipsec_core import hookimpl
from ipsec_core.crypto.base import Backend, Feature


class _Mac:
    digest_bytes = 32

    def __init__(self, key):
        self._key = key

    def mac(self, data):
        return hmac.new(self._key, data, hashlib.sha256).digest()


class StdlibHmac(Backend):
    name = "stdlib-hmac"
    priority = 5

    def features(self):
        return (Feature("hmac-sha256"),)

    def mac(self, family, key):
        if family != "hmac-sha256":
            return super().mac(family, key)
        return _Mac(key)


@hookimpl
def ipsec_register_backends(register):
    register(StdlibHmac())

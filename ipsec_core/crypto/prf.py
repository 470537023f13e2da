"""The IKEv2 pseudo-random functions, as a thin layer over a backend's MAC.

Owns: the key rule of the AES PRFs, the lookups from a family name or IANA id to its `PrfInfo`
(the table itself is `ipsec_core.transforms.iana.PRF_INFO`), and `MacPrf`, the generic adapter
that gives every backend with the MACs the PRFs for free (`Backend.prf` returns one by
default).  A backend may return a faster `Prf` of its own from `Backend.prf`; it must compute the
same function.
Must not: hold IKE's key derivation (prf+, SKEYSEED, which halves of Ni | Nr key a fixed-key PRF:
RFC 7296 2.13/2.14) - that is the IKE layer's; nor import the registry or a backend.

==================  ===========  ======  ===============================================
family              MAC family   output  key
==================  ===========  ======  ===============================================
prf-hmac-sha1       hmac-sha1    20      any length (HMAC, RFC 2104)
prf-hmac-sha256     hmac-sha256  32      any length (RFC 4868 2.1.2: full output, no truncation)
prf-hmac-sha384     hmac-sha384  48      any length
prf-hmac-sha512     hmac-sha512  64      any length
prf-aes128-xcbc     aes-xcbc     16      RFC 4434: 16 bytes as is; shorter: zero-padded;
                                         longer: AES-XCBC-MAC(0^128, key)
prf-aes128-cmac     aes-cmac     16      RFC 4615: 16 bytes as is; any other length:
                                         AES-CMAC(0^128, key)
==================  ===========  ======  ===============================================
"""
from __future__ import annotations

from typing import Callable

from ipsec_core.transforms.iana import PRF_INFO, PrfInfo

_AES_BLOCK = 16

#: A PRF family is described by its IANA table row.
PrfFamily = PrfInfo

#: family name ("prf-hmac-sha256") -> its row of `PRF_INFO`.
PRF_FAMILIES: dict[str, PrfInfo] = {p.family: p for p in PRF_INFO.values()}

#: IANA PRF id -> family, for the ids IKE receives on the wire.
PRF_BY_IANA: dict[int, PrfInfo] = {int(p.id): p for p in PRF_INFO.values()}


def prf_family(name: str) -> PrfInfo:
    """The PRF family named `name` ("prf-hmac-sha256")."""
    try:
        return PRF_FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown PRF family {name!r}; known: {', '.join(PRF_FAMILIES)}") from None


def prf_key(family: PrfFamily, key: bytes, mac: Callable[[str, bytes], object]) -> bytes:
    """The key the MAC runs under for PRF key `key`: the RFC 4434 / RFC 4615 rule for the AES
    PRFs (which take keys of any length, while their MACs take 16 bytes), the key itself for
    HMAC.  `mac(family, key)` makes a MAC object (a backend's `mac` method)."""
    key = bytes(key)
    if family.key_rule is None or len(key) == _AES_BLOCK:
        return key
    if family.key_rule == "rfc4434" and len(key) < _AES_BLOCK:
        return key + bytes(_AES_BLOCK - len(key))
    return mac(family.mac, bytes(_AES_BLOCK)).mac(key)


class MacPrf:
    """A PRF computed by a backend's MAC (the `Prf` protocol of `ipsec_core.crypto.base`):
    `prf(data)` is the full MAC output under the key the family's rule gives.  Bound to its key
    once; `prf` is the MAC object's own bound method."""

    __slots__ = ("family", "output_bytes", "prf")

    def __init__(self, backend, family: str, key: bytes):
        spec = prf_family(family)
        mac = backend.mac(spec.mac, prf_key(spec, key, backend.mac))
        if mac.digest_bytes != spec.output_bytes:
            raise ValueError(f"{family}: the MAC {spec.mac} gives {mac.digest_bytes} bytes, the "
                             f"PRF's output is {spec.output_bytes}")
        self.family = spec.family
        self.output_bytes = spec.output_bytes
        self.prf: Callable[[bytes], bytes] = mac.mac

    def __repr__(self) -> str:
        return f"MacPrf({self.family})"


__all__ = ["MacPrf", "PRF_BY_IANA", "PRF_FAMILIES", "PrfFamily", "PrfInfo", "prf_family",
           "prf_key"]

"""Key exchange on pycryptodome: ECDH on P-256/384/521, X25519 and X448 (`Crypto.PublicKey.ECC`
and `Crypto.Protocol.DH.key_agreement`), with the IKEv2 KE payload encodings.

Owns: mapping the IKE wire encodings (see `ipsec_core.crypto.kex`) to pycryptodome keys and back,
and turning its `ValueError` on a bad peer value into `KeyExchangeError`.
Not here: the MODP groups.  pycryptodome has no finite-field Diffie-Hellman (its
`Crypto.Protocol.DH` is ECC only), and a `pow()` written here would be the reference backend
again under another name, so this backend does not declare them.
"""
from __future__ import annotations

from ipsec_core.crypto.kex import (ECP_FIELD_PRIMES, KE_FAMILIES, KeFamily, KeKind,
                                   KeyExchangeError, check_peer_length, check_xdh_secret,
                                   ke_family)

#: Every key exchange family this module computes: the curves, not MODP.
FAMILIES = tuple(name for name, spec in KE_FAMILIES.items() if spec.kind is not KeKind.MODP)

_CURVES = {"ecp256": "P-256", "ecp384": "P-384", "ecp521": "P-521",
           "curve25519": "Curve25519", "curve448": "Curve448"}


def _identity(secret: bytes) -> bytes:
    """The "KDF" handed to `key_agreement`: IKE wants the raw shared secret (it runs its own
    prf+ over it)."""
    return bytes(secret)


class _KeyExchange:
    __slots__ = ("family", "group", "public_bytes", "_spec", "_key", "_ECC", "_agree")

    def __init__(self, spec: KeFamily):
        from Crypto.Protocol.DH import key_agreement
        from Crypto.PublicKey import ECC

        self._spec = spec
        self.family = spec.name
        self.group = spec.group
        self._ECC = ECC
        self._agree = key_agreement

    def _peer_key(self, peer_public: bytes):  # pragma: no cover - abstract
        raise NotImplementedError

    def shared_secret(self, peer_public: bytes) -> bytes:
        check_peer_length(self._spec, peer_public)
        try:
            peer = self._peer_key(bytes(peer_public))
            secret = self._agree(kdf=_identity, static_priv=self._key, static_pub=peer)
        except ValueError as exc:
            raise KeyExchangeError(f"{self.family}: pycryptodome refused the peer's value ({exc})") from None
        return self._finish(secret)

    def _finish(self, secret: bytes) -> bytes:
        return secret.rjust(self._spec.secret_bytes, b"\x00")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.family} (group {self.group})>"


class EcpKeyExchange(_KeyExchange):
    __slots__ = ()

    def __init__(self, spec: KeFamily, private_key: bytes | None):
        super().__init__(spec)
        curve = _CURVES[spec.name]
        if private_key is None:
            self._key = self._ECC.generate(curve=curve)
        else:
            if len(private_key) != spec.private_bytes:
                raise ValueError(f"{spec.name}: a private key is {spec.private_bytes} bytes")
            try:
                self._key = self._ECC.construct(curve=curve, d=int.from_bytes(private_key, "big"))
            except ValueError:
                raise ValueError(f"{spec.name}: the private key must lie in 1..n-1") from None
        size = spec.public_bytes // 2
        x, y = self._key.pointQ.xy
        self.public_bytes = int(x).to_bytes(size, "big") + int(y).to_bytes(size, "big")

    def _peer_key(self, peer_public: bytes):
        size = self._spec.public_bytes // 2
        x = int.from_bytes(peer_public[:size], "big")
        y = int.from_bytes(peer_public[size:], "big")
        # construct() refuses a point that is not on the curve, but takes (0, 0) as the point
        # at infinity and does not promise to refuse coordinates >= p: both are refused here
        if max(x, y) >= ECP_FIELD_PRIMES[self.family]:
            raise KeyExchangeError(f"{self.family}: a coordinate of the peer's point is not below p")
        if x == y == 0:
            raise KeyExchangeError(f"{self.family}: the peer sent (0, 0), the point at infinity")
        return self._ECC.construct(curve=_CURVES[self.family], point_x=x, point_y=y)


class XdhKeyExchange(_KeyExchange):
    __slots__ = ("_import_public",)

    def __init__(self, spec: KeFamily, private_key: bytes | None):
        super().__init__(spec)
        from Crypto.Protocol import DH

        if spec.name == "curve25519":
            import_private, self._import_public = DH.import_x25519_private_key, DH.import_x25519_public_key
        else:
            import_private, self._import_public = DH.import_x448_private_key, DH.import_x448_public_key
        if private_key is None:
            from secrets import token_bytes

            private_key = token_bytes(spec.private_bytes)
        elif len(private_key) != spec.private_bytes:
            raise ValueError(f"{spec.name}: a private key is {spec.private_bytes} bytes")
        self._key = import_private(private_key)
        self.public_bytes = self._key.public_key().export_key(format="raw")

    def _peer_key(self, peer_public: bytes):
        return self._import_public(peer_public)

    def _finish(self, secret: bytes) -> bytes:
        return check_xdh_secret(self._spec, secret)


_CLASSES = {KeKind.ECP: EcpKeyExchange, KeKind.MONTGOMERY: XdhKeyExchange}


def key_exchange(family: str, *, private_key: bytes | None = None):
    """A fresh key exchange of `family` on pycryptodome: a random private key, or `private_key`
    (known-answer tests).  Same interface and encodings as the reference backend's; MODP
    families raise ValueError (not offered here)."""
    spec = ke_family(family)
    cls = _CLASSES.get(spec.kind)
    if cls is None:
        raise ValueError(f"the cryptodome backend has no {spec.name} (pycryptodome has no "
                         f"finite-field Diffie-Hellman); offered: {', '.join(FAMILIES)}")
    return cls(spec, None if private_key is None else bytes(private_key))


__all__ = ["FAMILIES", "EcpKeyExchange", "XdhKeyExchange", "key_exchange"]

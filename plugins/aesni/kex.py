"""Key exchange on the `cryptography` package (OpenSSL): MODP groups as `dh` with the RFC 3526
primes, ECDH on P-256/384/521, X25519 and X448, with the IKEv2 KE payload encodings.

Owns: mapping the IKE wire encodings (see `ipsec_core.crypto.kex`) to OpenSSL keys and back, and
turning the library's `ValueError` on a bad peer value into `KeyExchangeError`.  The peer value's
length and, for MODP, its range are checked here before OpenSSL sees it, so the refusal does not
depend on what one OpenSSL version happens to check.
Must not: hold IKE rules (which group, when to rekey): that is the IKE layer's.
"""
from __future__ import annotations

from ipsec_core.crypto.kex import (KE_FAMILIES, MODP_GENERATOR, MODP_PRIMES, KeFamily, KeKind,
                                   KeyExchangeError, check_modp_peer, check_peer_length,
                                   check_xdh_secret, ke_family)

#: Every key exchange family this module computes.
FAMILIES = tuple(KE_FAMILIES)


def _lib():
    """The `cryptography` names used here, imported on first use (a missing package is the
    backend's probe reason, not an import error of the plugin)."""
    from cryptography.hazmat.primitives.asymmetric import dh, ec, x448, x25519

    return dh, ec, x25519, x448


class _KeyExchange:
    __slots__ = ("family", "group", "public_bytes", "_spec", "_key")

    def __init__(self, spec: KeFamily):
        self._spec = spec
        self.family = spec.name
        self.group = spec.group

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.family} (group {self.group})>"


class ModpKeyExchange(_KeyExchange):
    __slots__ = ("_dh", "_numbers")

    _PARAMETERS: dict[str, object] = {}      # DHParameters per group, built once

    def __init__(self, spec: KeFamily, private_key: bytes | None):
        super().__init__(spec)
        dh = self._dh = _lib()[0]
        p = MODP_PRIMES[spec.name]
        params = self._PARAMETERS.get(spec.name)
        if params is None:
            params = self._PARAMETERS[spec.name] = dh.DHParameterNumbers(p, MODP_GENERATOR).parameters()
        self._numbers = params.parameter_numbers()
        if private_key is None:
            self._key = params.generate_private_key()
        else:
            if len(private_key) > spec.private_bytes:
                raise ValueError(f"{spec.name}: a private key has at most {spec.private_bytes} bytes")
            x = int.from_bytes(private_key, "big")
            if not 1 < x < p - 1:
                raise ValueError(f"{spec.name}: the private key must lie in 2..p-2")
            y = pow(MODP_GENERATOR, x, p)
            self._key = dh.DHPrivateNumbers(x, dh.DHPublicNumbers(y, self._numbers)).private_key()
        y = self._key.public_key().public_numbers().y
        self.public_bytes = y.to_bytes(spec.public_bytes, "big")

    def shared_secret(self, peer_public: bytes) -> bytes:
        y = check_modp_peer(self._spec, peer_public)
        try:
            peer = self._dh.DHPublicNumbers(y, self._numbers).public_key()
            secret = self._key.exchange(peer)
        except ValueError as exc:
            raise KeyExchangeError(f"{self.family}: OpenSSL refused the peer's value ({exc})") from None
        # cryptography pads to the length of p; pad here too so an older version cannot differ
        return secret.rjust(self._spec.secret_bytes, b"\x00")


class EcpKeyExchange(_KeyExchange):
    __slots__ = ("_ec", "_curve")

    _CURVES = {"ecp256": "SECP256R1", "ecp384": "SECP384R1", "ecp521": "SECP521R1"}

    def __init__(self, spec: KeFamily, private_key: bytes | None):
        super().__init__(spec)
        ec = self._ec = _lib()[1]
        self._curve = getattr(ec, self._CURVES[spec.name])()
        if private_key is None:
            self._key = ec.generate_private_key(self._curve)
        else:
            if len(private_key) != spec.private_bytes:
                raise ValueError(f"{spec.name}: a private key is {spec.private_bytes} bytes")
            d = int.from_bytes(private_key, "big")
            try:
                self._key = ec.derive_private_key(d, self._curve)
            except ValueError:
                raise ValueError(f"{spec.name}: the private key must lie in 1..n-1") from None
        # SEC 1 uncompressed point 04 || x || y; IKE sends x || y (RFC 5903 section 7)
        point = self._key.public_key().public_bytes(*_uncompressed())
        self.public_bytes = point[1:]

    def shared_secret(self, peer_public: bytes) -> bytes:
        check_peer_length(self._spec, peer_public)
        try:
            # from_encoded_point checks that the coordinates are below p and on the curve
            peer = self._ec.EllipticCurvePublicKey.from_encoded_point(self._curve, b"\x04" + peer_public)
            secret = self._key.exchange(self._ec.ECDH(), peer)
        except ValueError as exc:
            raise KeyExchangeError(f"{self.family}: the peer's point is not on the curve ({exc})") from None
        return secret.rjust(self._spec.secret_bytes, b"\x00")


def _uncompressed():
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return Encoding.X962, PublicFormat.UncompressedPoint


class XdhKeyExchange(_KeyExchange):
    __slots__ = ("_public_cls",)

    def __init__(self, spec: KeFamily, private_key: bytes | None):
        super().__init__(spec)
        _, _, x25519, x448 = _lib()
        if spec.name == "curve25519":
            private_cls, self._public_cls = x25519.X25519PrivateKey, x25519.X25519PublicKey
        else:
            private_cls, self._public_cls = x448.X448PrivateKey, x448.X448PublicKey
        if private_key is None:
            self._key = private_cls.generate()
        else:
            if len(private_key) != spec.private_bytes:
                raise ValueError(f"{spec.name}: a private key is {spec.private_bytes} bytes")
            self._key = private_cls.from_private_bytes(private_key)
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        self.public_bytes = self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    def shared_secret(self, peer_public: bytes) -> bytes:
        check_peer_length(self._spec, peer_public)
        try:
            peer = self._public_cls.from_public_bytes(bytes(peer_public))
            secret = self._key.exchange(peer)
        except ValueError as exc:
            # OpenSSL refuses an all-zero result itself ("Error computing shared key")
            raise KeyExchangeError(f"{self.family}: the shared secret is all zeros or the peer's "
                                   f"value is refused ({exc})") from None
        return check_xdh_secret(self._spec, secret)


_CLASSES = {KeKind.MODP: ModpKeyExchange, KeKind.ECP: EcpKeyExchange,
            KeKind.MONTGOMERY: XdhKeyExchange}


def key_exchange(family: str, *, private_key: bytes | None = None):
    """A fresh key exchange of `family` on OpenSSL: a random private key, or `private_key`
    (known-answer tests).  Same interface and encodings as the reference backend's."""
    spec = ke_family(family)
    return _CLASSES[spec.kind](spec, None if private_key is None else bytes(private_key))


__all__ = ["FAMILIES", "EcpKeyExchange", "ModpKeyExchange", "XdhKeyExchange", "key_exchange"]

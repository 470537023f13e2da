"""Key exchange in pure Python: MODP (RFC 3526), ECP on NIST P-256/384/521 (RFC 5903) and
X25519/X448 (RFC 7748), with the wire encodings of the IKEv2 KE payload.

Written to be read against the specifications, not to be fast: modular exponentiation is
Python's `pow`, the curves use Jacobian coordinates with double-and-add, X25519/X448 are the
Montgomery ladder exactly as RFC 7748 section 5 prints it.  None of it is constant-time (Python
integers are not): like the rest of the reference backend, a test oracle.

Owns: the group arithmetic and the peer value checks (see `ipsec_core.crypto.kex` for the
encodings and for what must be refused).  Private keys come from `secrets`; a fixed private key
(`private_key=`) is for known-answer tests.
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass

from ipsec_core.crypto.kex import (KE_FAMILIES, MODP_GENERATOR, MODP_PRIMES, KeFamily, KeKind,
                                   KeyExchangeError, check_modp_peer, check_peer_length,
                                   check_xdh_secret, ke_family)

#: Every key exchange family this module computes.
FAMILIES = tuple(KE_FAMILIES)

#: Private exponent length for the MODP groups: the upper end of RFC 3526 section 8's "exponent
#: size" estimates (twice the group's strength), instead of exponents as long as p.
MODP_PRIVATE_BITS = {"modp2048": 320, "modp3072": 420, "modp4096": 480}


class _KeyExchange:
    """What every group shares: `family`, `group`, lazily computed `public_bytes`."""

    __slots__ = ("family", "group", "_spec", "_public")

    def __init__(self, spec: KeFamily):
        self._spec = spec
        self.family = spec.name
        self.group = spec.group
        self._public: bytes | None = None

    @property
    def public_bytes(self) -> bytes:
        if self._public is None:
            self._public = self._compute_public()
        return self._public

    def _compute_public(self) -> bytes:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.family} (group {self.group})>"


# -- MODP (RFC 3526; RFC 7296 3.4 for the encoding) ----------------------------------------------
class ModpKeyExchange(_KeyExchange):
    __slots__ = ("_p", "_x")

    def __init__(self, spec: KeFamily, private_key: bytes | None):
        super().__init__(spec)
        self._p = MODP_PRIMES[spec.name]
        if private_key is None:
            bits = MODP_PRIVATE_BITS[spec.name]       # top bit set: never 0 or 1, full length
            self._x = secrets.randbits(bits - 1) | (1 << (bits - 1))
        else:
            if len(private_key) > spec.private_bytes:
                raise ValueError(f"{spec.name}: a private key has at most {spec.private_bytes} bytes")
            self._x = int.from_bytes(private_key, "big")
            if not 1 < self._x < self._p - 1:
                raise ValueError(f"{spec.name}: the private key must lie in 2..p-2")

    def _compute_public(self) -> bytes:
        return pow(MODP_GENERATOR, self._x, self._p).to_bytes(self._spec.public_bytes, "big")

    def shared_secret(self, peer_public: bytes) -> bytes:
        y = check_modp_peer(self._spec, peer_public)
        return pow(y, self._x, self._p).to_bytes(self._spec.secret_bytes, "big")


# -- ECP (NIST curves, FIPS 186-4 D.1.2 / SEC 2; RFC 5903 for IKE) -------------------------------
@dataclass(frozen=True)
class Curve:
    """A short Weierstrass curve y^2 = x^3 + a*x + b over GF(p), with a = -3, base point G of
    prime order n and cofactor 1."""

    name: str
    p: int
    b: int
    gx: int
    gy: int
    n: int
    size: int        # bytes of one coordinate / of the field


P256 = Curve(
    "P-256", p=2**256 - 2**224 + 2**192 + 2**96 - 1,
    b=0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B,
    gx=0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296,
    gy=0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5,
    n=0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551, size=32)
P384 = Curve(
    "P-384", p=2**384 - 2**128 - 2**96 + 2**32 - 1,
    b=int("B3312FA7E23EE7E4988E056BE3F82D19181D9C6EFE8141120314088F5013875A"
          "C656398D8A2ED19D2A85C8EDD3EC2AEF", 16),
    gx=int("AA87CA22BE8B05378EB1C71EF320AD746E1D3B628BA79B9859F741E082542A38"
           "5502F25DBF55296C3A545E3872760AB7", 16),
    gy=int("3617DE4A96262C6F5D9E98BF9292DC29F8F41DBD289A147CE9DA3113B5F0B8C0"
           "0A60B1CE1D7E819D7A431D7C90EA0E5F", 16),
    n=int("FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF"
          "581A0DB248B0A77AECEC196ACCC52973", 16), size=48)
P521 = Curve(
    "P-521", p=2**521 - 1,
    b=int("0051953EB9618E1C9A1F929A21A0B68540EEA2DA725B99B315F3B8B489918EF1"
          "09E156193951EC7E937B1652C0BD3BB1BF073573DF883D2C34F1EF451FD46B503F00", 16),
    gx=int("00C6858E06B70404E9CD9E3ECB662395B4429C648139053FB521F828AF606B4D"
           "3DBAA14B5E77EFE75928FE1DC127A2FFA8DE3348B3C1856A429BF97E7E31C2E5BD66", 16),
    gy=int("011839296A789A3BC0045C8A5FB42C7D1BD998F54449579B446817AFBD17273E"
           "662C97EE72995EF42640C550B9013FAD0761353C7086A272C24088BE94769FD16650", 16),
    n=int("01FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF"
          "FA51868783BF2F966B7FCC0148F709A5D03BB5C9B8899C47AEBB6FB71E91386409", 16), size=66)

CURVES = {"ecp256": P256, "ecp384": P384, "ecp521": P521}

#: A point in Jacobian coordinates (X, Y, Z) stands for the affine (X/Z^2, Y/Z^3); Z = 0 is the
#: point at infinity.
_INFINITY = (1, 1, 0)


def on_curve(curve: Curve, x: int, y: int) -> bool:
    p = curve.p
    return (y * y - (x * x * x - 3 * x + curve.b)) % p == 0


def _double(curve: Curve, point: tuple[int, int, int]) -> tuple[int, int, int]:
    """2P for a = -3 ("dbl-2001-b", Bernstein-Lange Explicit-Formulas Database)."""
    x1, y1, z1 = point
    p = curve.p
    if z1 == 0 or y1 == 0:
        return _INFINITY
    delta = z1 * z1 % p
    gamma = y1 * y1 % p
    beta = x1 * gamma % p
    alpha = 3 * (x1 - delta) * (x1 + delta) % p
    x3 = (alpha * alpha - 8 * beta) % p
    z3 = ((y1 + z1) ** 2 - gamma - delta) % p
    y3 = (alpha * (4 * beta - x3) - 8 * gamma * gamma) % p
    return x3, y3, z3


def _add(curve: Curve, p1: tuple[int, int, int], p2: tuple[int, int, int]) -> tuple[int, int, int]:
    """P1 + P2 in Jacobian coordinates (the textbook formulas, with the equal and opposite
    cases handled explicitly)."""
    x1, y1, z1 = p1
    x2, y2, z2 = p2
    p = curve.p
    if z1 == 0:
        return p2
    if z2 == 0:
        return p1
    z1z1, z2z2 = z1 * z1 % p, z2 * z2 % p
    u1, u2 = x1 * z2z2 % p, x2 * z1z1 % p
    s1, s2 = y1 * z2 * z2z2 % p, y2 * z1 * z1z1 % p
    h, r = (u2 - u1) % p, (s2 - s1) % p
    if h == 0:
        return _double(curve, p1) if r == 0 else _INFINITY   # P1 = P2, or P1 = -P2
    hh = h * h % p
    hhh = h * hh % p
    v = u1 * hh % p
    x3 = (r * r - hhh - 2 * v) % p
    y3 = (r * (v - x3) - s1 * hhh) % p
    z3 = z1 * z2 * h % p
    return x3, y3, z3


def scalar_mult(curve: Curve, k: int, x: int, y: int) -> tuple[int, int] | None:
    """k * (x, y) in affine coordinates, or None for the point at infinity (double-and-add,
    most significant bit first)."""
    result = _INFINITY
    point = (x, y, 1)
    for bit in bin(k)[2:]:
        result = _double(curve, result)
        if bit == "1":
            result = _add(curve, result, point)
    xr, yr, zr = result
    if zr == 0:
        return None
    zinv = pow(zr, -1, curve.p)
    zinv2 = zinv * zinv % curve.p
    return xr * zinv2 % curve.p, yr * zinv2 * zinv % curve.p


class EcpKeyExchange(_KeyExchange):
    __slots__ = ("_curve", "_d")

    def __init__(self, spec: KeFamily, private_key: bytes | None):
        super().__init__(spec)
        self._curve = curve = CURVES[spec.name]
        if private_key is None:
            self._d = 1 + secrets.randbelow(curve.n - 1)          # 1 <= d <= n-1
        else:
            if len(private_key) != spec.private_bytes:
                raise ValueError(f"{spec.name}: a private key is {spec.private_bytes} bytes")
            self._d = int.from_bytes(private_key, "big")
            if not 1 <= self._d < curve.n:
                raise ValueError(f"{spec.name}: the private key must lie in 1..n-1")

    def _compute_public(self) -> bytes:
        c = self._curve
        x, y = scalar_mult(c, self._d, c.gx, c.gy)
        return x.to_bytes(c.size, "big") + y.to_bytes(c.size, "big")

    def shared_secret(self, peer_public: bytes) -> bytes:
        c = self._curve
        check_peer_length(self._spec, peer_public)
        x = int.from_bytes(peer_public[:c.size], "big")
        y = int.from_bytes(peer_public[c.size:], "big")
        if x >= c.p or y >= c.p:
            raise KeyExchangeError(f"{self.family}: a coordinate of the peer's point is not below p")
        if not on_curve(c, x, y):
            raise KeyExchangeError(f"{self.family}: the peer's point is not on {c.name}")
        common = scalar_mult(c, self._d, x, y)
        if common is None:   # unreachable for a curve point and 1 <= d < n (cofactor 1)
            raise KeyExchangeError(f"{self.family}: the common point is the point at infinity")
        return common[0].to_bytes(c.size, "big")


# -- X25519 / X448 (RFC 7748 section 5, as printed there) ---------------------------------------
@dataclass(frozen=True)
class Montgomery:
    name: str
    p: int
    a24: int
    bits: int            # bits of the scalar the ladder walks
    size: int            # bytes of a scalar and of a u-coordinate
    base_u: int


X25519 = Montgomery("X25519", p=2**255 - 19, a24=121665, bits=255, size=32, base_u=9)
X448 = Montgomery("X448", p=2**448 - 2**224 - 1, a24=39081, bits=448, size=56, base_u=5)
MONTGOMERY = {"curve25519": X25519, "curve448": X448}


def decode_scalar(curve: Montgomery, k: bytes) -> int:
    """decodeScalar25519 / decodeScalar448: clear the low bits (cofactor), set the top bit."""
    b = bytearray(k)
    if curve is X25519:
        b[0] &= 248
        b[31] &= 127
        b[31] |= 64
    else:
        b[0] &= 252
        b[55] |= 128
    return int.from_bytes(b, "little")


def decode_u(curve: Montgomery, u: bytes) -> int:
    """decodeUCoordinate: little-endian; X25519 masks the unused top bit.  Values >= p are kept
    and reduced by the arithmetic (RFC 7748 5: non-canonical values MUST be accepted)."""
    b = bytearray(u)
    if curve.bits % 8:
        b[-1] &= (1 << (curve.bits % 8)) - 1
    return int.from_bytes(b, "little")


def x_function(curve: Montgomery, k: int, u: int) -> int:
    """The X25519/X448 function: the Montgomery ladder of RFC 7748 section 5, line by line
    (`cswap` is written as a conditional swap; Python cannot make it constant-time anyway)."""
    p, a24 = curve.p, curve.a24
    x_1 = u % p
    x_2, z_2 = 1, 0
    x_3, z_3 = x_1, 1
    swap = 0
    for t in reversed(range(curve.bits)):
        k_t = (k >> t) & 1
        swap ^= k_t
        if swap:
            x_2, x_3 = x_3, x_2
            z_2, z_3 = z_3, z_2
        swap = k_t

        A = (x_2 + z_2) % p
        AA = A * A % p
        B = (x_2 - z_2) % p
        BB = B * B % p
        E = (AA - BB) % p
        C = (x_3 + z_3) % p
        D = (x_3 - z_3) % p
        DA = D * A % p
        CB = C * B % p
        x_3 = (DA + CB) ** 2 % p
        z_3 = x_1 * (DA - CB) ** 2 % p
        x_2 = AA * BB % p
        z_2 = E * (AA + a24 * E) % p
    if swap:
        x_2, x_3 = x_3, x_2
        z_2, z_3 = z_3, z_2
    return x_2 * pow(z_2, p - 2, p) % p


class XdhKeyExchange(_KeyExchange):
    __slots__ = ("_curve", "_k")

    def __init__(self, spec: KeFamily, private_key: bytes | None):
        super().__init__(spec)
        self._curve = curve = MONTGOMERY[spec.name]
        if private_key is None:
            private_key = secrets.token_bytes(curve.size)
        elif len(private_key) != curve.size:
            raise ValueError(f"{spec.name}: a private key is {curve.size} bytes")
        self._k = decode_scalar(curve, private_key)

    def _compute_public(self) -> bytes:
        c = self._curve
        return x_function(c, self._k, c.base_u).to_bytes(c.size, "little")

    def shared_secret(self, peer_public: bytes) -> bytes:
        c = self._curve
        check_peer_length(self._spec, peer_public)
        out = x_function(c, self._k, decode_u(c, peer_public)).to_bytes(c.size, "little")
        return check_xdh_secret(self._spec, out)


_CLASSES = {KeKind.MODP: ModpKeyExchange, KeKind.ECP: EcpKeyExchange,
            KeKind.MONTGOMERY: XdhKeyExchange}


def key_exchange(family: str, *, private_key: bytes | None = None):
    """A fresh key exchange of `family` ("modp2048", "ecp256", "curve25519" ...): a random
    private key, or `private_key` (known-answer tests).  The result has `family`, `group`,
    `public_bytes` and `shared_secret(peer_public)`."""
    spec = ke_family(family)
    return _CLASSES[spec.kind](spec, None if private_key is None else bytes(private_key))


__all__ = ["CURVES", "FAMILIES", "MONTGOMERY", "EcpKeyExchange", "ModpKeyExchange",
           "XdhKeyExchange", "key_exchange", "on_curve", "scalar_mult", "x_function"]

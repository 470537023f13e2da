"""Key exchange for IKEv2: the wire encodings every backend speaks, the MODP group parameters,
and the checks shared by the backends.

Owns: the MODP group parameters (RFC 3526; every backend takes the same numbers from here), the
lookups from a family name or IANA group to its `KeInfo` (the table itself, with the sizes, is
`ipsec_core.transforms.iana.KE_INFO`), and the peer value checks the backends share.
`KeyExchangeError` lives in `ipsec_core.errors` and is importable from here too.
Must not: compute a key exchange (the backends do, `ipsec_plugins.*.kex`), nor import the registry.

Wire encodings, as the IKEv2 KE payload carries them and as every backend's `KeyExchange` speaks
(`public_bytes`, the argument of `shared_secret`, and its result):

==============  =====  ==================================================  ======================
family          group  public value (KE payload data)                      shared secret (g^ir)
==============  =====  ==================================================  ======================
modp2048/3072/  14-16  g^x mod p, big-endian, left-padded to the length    g^xy mod p, padded the
4096                   of p (RFC 7296 3.4)                                 same way
ecp256/384/521  19-21  x || y, each big-endian padded to the field size    x of the common point,
                       (32, 48, 66 bytes); no 0x04 prefix (RFC 5903 7)     padded (RFC 5903 7,
                                                                           errata 9)
curve25519/448  31-32  the 32/56-byte X25519/X448 u-coordinate (RFC 8031)  the 32/56-byte output
==============  =====  ==================================================  ======================

What a backend must refuse, with `KeyExchangeError` (never a result computed from it): a peer
value of the wrong length; for MODP a value y outside 1 < y < p-1 (RFC 7296 section 5 / SP
800-56A 5.6.2.3.1 partial validation: 0, 1 and p-1 would force a known secret); for ECP a point
not on the curve, a coordinate not below p, or the point at infinity (RFC 5903 section 7, SP
800-56A 5.6.2.3.3; the NIST curves have cofactor 1, so a point on the curve is in the group); for
X25519/X448 an all-zero shared secret (RFC 7748 6.1, RFC 8031 2.1: the peer sent a low-order
point).  A fixed private key that is out of range is the caller's mistake: `ValueError`.
"""
from __future__ import annotations

from ipsec_core.errors import KeyExchangeError
from ipsec_core.transforms.iana import KE_INFO, KeId, KeInfo, KeKind
from ipsec_core.transforms.keywords import KE_KEYWORDS

#: A key exchange family is described by its IANA table row.
KeFamily = KeInfo

#: family name ("ecp256") -> its row of `KE_INFO`.
KE_FAMILIES: dict[str, KeInfo] = {k.family: k for k in KE_INFO.values()}

#: IANA group number -> family, for the ids IKE receives on the wire.
KE_BY_GROUP: dict[int, KeInfo] = {int(k.id): k for k in KE_INFO.values()}


def ke_family(name: str) -> KeInfo:
    """The family named `name`: a registry family, or a strongSwan keyword such as "x25519"."""
    family = KE_FAMILIES.get(name)
    if family is None and name in KE_KEYWORDS:
        family = KE_INFO[KE_KEYWORDS[name]]
    if family is None:
        raise ValueError(f"unknown key exchange family {name!r}; known: {', '.join(KE_FAMILIES)}")
    return family


def ke_family_by_group(group: int) -> KeInfo:
    """The family of IANA key exchange method `group` (14, 19, 31 ...)."""
    try:
        return KE_BY_GROUP[int(group)]
    except KeyError:
        known = ", ".join(str(g) for g in KE_BY_GROUP)
        raise ValueError(f"key exchange method {group} is not supported (supported: {known})") from None


# -- MODP group parameters (RFC 3526), shared by every backend --------------------------------
#: The generator of every RFC 3526 group.
MODP_GENERATOR = 2

MODP_PRIMES: dict[str, int] = {
    # RFC 3526 section 3: p = 2^2048 - 2^1984 - 1 + 2^64 * { [2^1918 pi] + 124476 }
    "modp2048": int(
        "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74"
        "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437"
        "4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED"
        "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF05"
        "98DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB"
        "9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B"
        "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF695581718"
        "3995497CEA956AE515D2261898FA051015728E5A8AACAA68FFFFFFFFFFFFFFFF", 16),
    # RFC 3526 section 4: p = 2^3072 - 2^3008 - 1 + 2^64 * { [2^2942 pi] + 1690314 }
    "modp3072": int(
        "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74"
        "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437"
        "4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED"
        "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF05"
        "98DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB"
        "9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B"
        "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF695581718"
        "3995497CEA956AE515D2261898FA051015728E5A8AAAC42DAD33170D04507A33"
        "A85521ABDF1CBA64ECFB850458DBEF0A8AEA71575D060C7DB3970F85A6E1E4C7"
        "ABF5AE8CDB0933D71E8C94E04A25619DCEE3D2261AD2EE6BF12FFA06D98A0864"
        "D87602733EC86A64521F2B18177B200CBBE117577A615D6C770988C0BAD946E2"
        "08E24FA074E5AB3143DB5BFCE0FD108E4B82D120A93AD2CAFFFFFFFFFFFFFFFF", 16),
    # RFC 3526 section 5: p = 2^4096 - 2^4032 - 1 + 2^64 * { [2^3966 pi] + 240904 }
    "modp4096": int(
        "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74"
        "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437"
        "4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED"
        "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF05"
        "98DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB"
        "9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B"
        "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF695581718"
        "3995497CEA956AE515D2261898FA051015728E5A8AAAC42DAD33170D04507A33"
        "A85521ABDF1CBA64ECFB850458DBEF0A8AEA71575D060C7DB3970F85A6E1E4C7"
        "ABF5AE8CDB0933D71E8C94E04A25619DCEE3D2261AD2EE6BF12FFA06D98A0864"
        "D87602733EC86A64521F2B18177B200CBBE117577A615D6C770988C0BAD946E2"
        "08E24FA074E5AB3143DB5BFCE0FD108E4B82D120A92108011A723C12A787E6D7"
        "88719A10BDBA5B2699C327186AF4E23C1A946834B6150BDA2583E9CA2AD44CE8"
        "DBBBC2DB04DE8EF92E8EFC141FBECAA6287C59474E6BC05D99B2964FA090C3A2"
        "233BA186515BE7ED1F612970CEE2D7AFB81BDD762170481CD0069127D5B05AA9"
        "93B4EA988D8FDDC186FFB7DC90A6C08F4DF435C934063199FFFFFFFFFFFFFFFF", 16),
}


#: The field primes of the NIST curves (FIPS 186-4 D.1.2), for range checks on coordinates.
ECP_FIELD_PRIMES: dict[str, int] = {
    "ecp256": 2**256 - 2**224 + 2**192 + 2**96 - 1,
    "ecp384": 2**384 - 2**128 - 2**96 + 2**32 - 1,
    "ecp521": 2**521 - 1,
}


def check_peer_length(family: KeFamily, peer_public: bytes) -> None:
    """KeyExchangeError unless `peer_public` has the length the group's KE payload data has."""
    if len(peer_public) != family.public_bytes:
        raise KeyExchangeError(f"{family.name}: the peer's public value is {len(peer_public)} "
                               f"bytes, the group's is {family.public_bytes}")


def check_modp_peer(family: KeFamily, peer_public: bytes) -> int:
    """The peer's MODP public value y as an integer, after the length check and 1 < y < p-1."""
    check_peer_length(family, peer_public)
    p = MODP_PRIMES[family.name]
    y = int.from_bytes(peer_public, "big")
    if not 1 < y < p - 1:
        raise KeyExchangeError(f"{family.name}: the peer's public value is not in 2..p-2 "
                               "(0, 1 and p-1 force a known shared secret)")
    return y


def check_xdh_secret(family: KeFamily, secret: bytes) -> bytes:
    """`secret` unless it is all zeros (RFC 7748 6.1, RFC 8031 2.1: a low-order peer point)."""
    if not any(secret):
        raise KeyExchangeError(f"{family.name}: the shared secret is all zeros (the peer sent a "
                               "point of small order)")
    return secret


__all__ = ["ECP_FIELD_PRIMES", "KE_BY_GROUP", "KE_FAMILIES", "KeFamily", "KeId", "KeKind", "KeyExchangeError",
           "MODP_GENERATOR", "MODP_PRIMES", "check_modp_peer", "check_peer_length",
           "check_xdh_secret", "ke_family", "ke_family_by_group"]

"""Digital signatures for IKEv2 authentication: the families, their key and signature encodings,
and the few DER helpers every backend shares.

Owns: the signature family table (`SIGNATURE_FAMILIES`: scheme, hash, curve), the strict DER
reading and writing of the structures a backend meets (SubjectPublicKeyInfo, PKCS#8
PrivateKeyInfo, the ECDSA-Sig-Value), and the conversions between the X9.62 DER signature and
the fixed-size r || s of RFC 4754.
Must not: sign or verify (the backends do, `ipsec_plugins.*.sign`), pick a family for a peer (that
is `ipsec_core.ike.auth`), nor import the registry.

What every backend's signature objects speak (`Backend.signer` / `Backend.verifier`):

=================  ==========  ====================================================================
family             key         signature bytes
=================  ==========  ====================================================================
ecdsa-p256-sha256  EC P-256    ECDSA-Sig-Value, DER (X9.62; RFC 7427 3): SEQUENCE { r, s }
ecdsa-p384-sha384  EC P-384    as above
ecdsa-p521-sha512  EC P-521    as above
rsa-pkcs1-sha256   RSA         RSASSA-PKCS1-v1_5 (RFC 8017 8.2), as long as the modulus
rsa-pkcs1-sha384/  RSA         as above
512
rsa-pss-sha256     RSA         RSASSA-PSS (RFC 8017 8.1), MGF1 with the same hash, salt as long
rsa-pss-sha384/    RSA         as the hash (RFC 8247 / strongSwan's default parameters)
512
=================  ==========  ====================================================================

Keys are DER: a public key is a SubjectPublicKeyInfo (as in a certificate), a private key a PKCS#8
PrivateKeyInfo.  `Backend.verifier(family, public_key)` and `Backend.signer(family, private_key)`
raise ValueError for a key that is malformed or not of the family (an RSA key for an ECDSA family,
a P-384 key for ecdsa-p256-sha256).  `Verifier.verify(data, signature)` returns True or False and
never raises for a malformed signature: a signature that is not strict DER, or of the wrong
length, is simply not valid.  `Signer.sign(data)` hashes `data` itself.  Policy (minimum RSA
modulus, which hash a peer may use) is the core's, not the backend's.
"""
from __future__ import annotations

from dataclasses import dataclass

#: RFC 7427 section 7 (IANA "Hash Algorithm Identifiers"): the SIGNATURE_HASH_ALGORITHMS values.
HASH_SHA1, HASH_SHA256, HASH_SHA384, HASH_SHA512, HASH_IDENTITY = 1, 2, 3, 4, 5
HASH_IDS = {"sha1": HASH_SHA1, "sha256": HASH_SHA256, "sha384": HASH_SHA384, "sha512": HASH_SHA512}
HASH_BYTES = {"sha1": 20, "sha256": 32, "sha384": 48, "sha512": 64}

# OIDs, as dotted strings (how `read_oid` returns them)
OID_RSA = "1.2.840.113549.1.1.1"
OID_RSA_PSS = "1.2.840.113549.1.1.10"
OID_MGF1 = "1.2.840.113549.1.1.8"
OID_EC_PUBLIC_KEY = "1.2.840.10045.2.1"
OID_SHA_RSA = {"sha1": "1.2.840.113549.1.1.5", "sha256": "1.2.840.113549.1.1.11",
               "sha384": "1.2.840.113549.1.1.12", "sha512": "1.2.840.113549.1.1.13"}
OID_ECDSA = {"sha256": "1.2.840.10045.4.3.2", "sha384": "1.2.840.10045.4.3.3",
             "sha512": "1.2.840.10045.4.3.4"}
OID_HASH = {"sha1": "1.3.14.3.2.26", "sha256": "2.16.840.1.101.3.4.2.1",
            "sha384": "2.16.840.1.101.3.4.2.2", "sha512": "2.16.840.1.101.3.4.2.3"}
OID_CURVE = {"secp256r1": "1.2.840.10045.3.1.7", "secp384r1": "1.3.132.0.34",
             "secp521r1": "1.3.132.0.35"}
CURVE_BYTES = {"secp256r1": 32, "secp384r1": 48, "secp521r1": 66}


@dataclass(frozen=True, slots=True)
class SignatureFamily:
    name: str
    scheme: str              # "ecdsa", "rsa-pkcs1" or "rsa-pss"
    hash: str                # hashlib name: "sha256"
    curve: str | None = None  # SEC 2 name for ECDSA: "secp256r1"

    @property
    def hash_bytes(self) -> int:
        return HASH_BYTES[self.hash]

    @property
    def hash_id(self) -> int:
        return HASH_IDS[self.hash]

    @property
    def key_type(self) -> str:
        return "ecdsa" if self.scheme == "ecdsa" else "rsa"

    def algorithm_identifier(self) -> bytes:
        """The DER AlgorithmIdentifier of RFC 7427 3 (appendix A's encodings): no parameters for
        ECDSA, NULL for PKCS#1 v1.5, RSASSA-PSS-params (hash, MGF1 with the hash, salt length)."""
        if self.scheme == "ecdsa":
            return der_sequence(der_oid(OID_ECDSA[self.hash]))
        if self.scheme == "rsa-pkcs1":
            return der_sequence(der_oid(OID_SHA_RSA[self.hash]), b"\x05\x00")
        hash_alg = der_sequence(der_oid(OID_HASH[self.hash]), b"\x05\x00")
        params = der_sequence(der_tlv(0xA0, hash_alg),
                              der_tlv(0xA1, der_sequence(der_oid(OID_MGF1), hash_alg)),
                              der_tlv(0xA2, der_integer(self.hash_bytes)))
        return der_sequence(der_oid(OID_RSA_PSS), params)


SIGNATURE_FAMILIES: dict[str, SignatureFamily] = {f.name: f for f in (
    SignatureFamily("ecdsa-p256-sha256", "ecdsa", "sha256", "secp256r1"),
    SignatureFamily("ecdsa-p384-sha384", "ecdsa", "sha384", "secp384r1"),
    SignatureFamily("ecdsa-p521-sha512", "ecdsa", "sha512", "secp521r1"),
    *(SignatureFamily(f"rsa-pkcs1-{h}", "rsa-pkcs1", h) for h in ("sha256", "sha384", "sha512")),
    *(SignatureFamily(f"rsa-pss-{h}", "rsa-pss", h) for h in ("sha256", "sha384", "sha512")),
)}


def signature_family(name: str) -> SignatureFamily:
    try:
        return SIGNATURE_FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown signature family {name!r}; known: "
                         f"{', '.join(SIGNATURE_FAMILIES)}") from None


# -- strict DER ---------------------------------------------------------------------------------
class DerError(ValueError):
    """Bytes that are not the strict DER the caller asked for."""


def read_tlv(data: bytes, pos: int = 0) -> tuple[int, bytes, int]:
    """(tag, value, position after it) of the DER element at `pos`; DerError unless the length
    is in its shortest form (DER, X.690 10.1) and inside `data`."""
    if pos + 2 > len(data):
        raise DerError("truncated element")
    tag, first = data[pos], data[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or pos + count > len(data):
            raise DerError("bad length")
        length = int.from_bytes(data[pos:pos + count], "big")
        if length < 0x80 or data[pos] == 0:
            raise DerError("length not in its shortest form")
        pos += count
    if pos + length > len(data):
        raise DerError("element runs past the end")
    return tag, bytes(data[pos:pos + length]), pos + length


def read_elements(data: bytes) -> list[tuple[int, bytes]]:
    """Every element of a constructed value, in order."""
    out, pos = [], 0
    while pos < len(data):
        tag, value, pos = read_tlv(data, pos)
        out.append((tag, value))
    return out


def read_one(data: bytes, tag: int, what: str) -> bytes:
    """The value of `data`, which must be exactly one element with `tag`."""
    got, value, end = read_tlv(data)
    if got != tag or end != len(data):
        raise DerError(f"{what}: expected one element with tag {tag:#04x}")
    return value


def read_integer(value: bytes, what: str = "INTEGER") -> int:
    """A non-negative INTEGER's value in its minimal encoding."""
    if not value:
        raise DerError(f"{what}: empty")
    if value[0] & 0x80:
        raise DerError(f"{what}: negative")
    if len(value) > 1 and value[0] == 0 and not value[1] & 0x80:
        raise DerError(f"{what}: not in its minimal encoding")
    return int.from_bytes(value, "big")


def read_oid(value: bytes) -> str:
    if not value or value[-1] & 0x80:
        raise DerError("bad OBJECT IDENTIFIER")
    arcs, n = [], 0
    for i, b in enumerate(value):
        if n == 0 and b == 0x80:
            raise DerError("OBJECT IDENTIFIER arc not minimal")
        n = (n << 7) | (b & 0x7F)
        if not b & 0x80:
            arcs.append(n)
            n = 0
    first = min(arcs[0] // 40, 2)
    return ".".join(str(a) for a in (first, arcs[0] - 40 * first, *arcs[1:]))


def der_tlv(tag: int, value: bytes) -> bytes:
    n = len(value)
    if n < 0x80:
        return bytes([tag, n]) + value
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + value


def der_sequence(*items: bytes) -> bytes:
    return der_tlv(0x30, b"".join(items))


def der_integer(n: int) -> bytes:
    body = n.to_bytes(n.bit_length() // 8 + 1, "big")   # a leading 0 bit keeps it positive
    return der_tlv(0x02, body)


def der_oid(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    body = bytearray()
    for arc in [40 * arcs[0] + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body += bytes(reversed(chunk))
    return der_tlv(0x06, bytes(body))


# -- ECDSA signatures ---------------------------------------------------------------------------
def decode_ecdsa_der(signature: bytes) -> tuple[int, int]:
    """(r, s) of a strict-DER ECDSA-Sig-Value; DerError for anything else (BER lengths, integers
    with extra zeros, negative integers, trailing bytes)."""
    body = read_one(signature, 0x30, "ECDSA-Sig-Value")
    elements = read_elements(body)
    if len(elements) != 2 or any(tag != 0x02 for tag, _ in elements):
        raise DerError("ECDSA-Sig-Value: expected two INTEGERs")
    return read_integer(elements[0][1], "r"), read_integer(elements[1][1], "s")


def encode_ecdsa_der(r: int, s: int) -> bytes:
    return der_sequence(der_integer(r), der_integer(s))


def ecdsa_der_to_raw(signature: bytes, curve: str) -> bytes:
    """The r || s form of RFC 4754 (each as long as the curve's order)."""
    r, s = decode_ecdsa_der(signature)
    size = CURVE_BYTES[curve]
    return r.to_bytes(size, "big") + s.to_bytes(size, "big")


def ecdsa_raw_to_der(raw: bytes, curve: str) -> bytes:
    """DER from RFC 4754's r || s; DerError when the length is not twice the curve's."""
    size = CURVE_BYTES[curve]
    if len(raw) != 2 * size:
        raise DerError(f"an {curve} r || s signature is {2 * size} bytes, not {len(raw)}")
    return encode_ecdsa_der(int.from_bytes(raw[:size], "big"), int.from_bytes(raw[size:], "big"))


# -- keys ---------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PublicKeyInfo:
    """A SubjectPublicKeyInfo taken apart: for RSA `n` and `e`; for EC `curve` and the point."""

    key_type: str                 # "rsa" or "ecdsa"
    n: int = 0
    e: int = 0
    curve: str | None = None
    x: int = 0
    y: int = 0


def parse_public_key(spki: bytes) -> PublicKeyInfo:
    """Read an RSA (rsaEncryption) or EC (id-ecPublicKey, named curve, uncompressed point)
    SubjectPublicKeyInfo; ValueError naming what is wrong."""
    try:
        algorithm, bits = _algorithm_and_rest(read_one(spki, 0x30, "SubjectPublicKeyInfo"))
        oid, params = algorithm
        tag, bitstring = bits
        if tag != 0x03 or not bitstring or bitstring[0] != 0:
            raise DerError("subjectPublicKey is not a BIT STRING of whole bytes")
        key = bitstring[1:]
        if oid == OID_RSA:
            fields = read_elements(read_one(key, 0x30, "RSAPublicKey"))
            if len(fields) != 2 or any(t != 0x02 for t, _ in fields):
                raise DerError("RSAPublicKey is not two INTEGERs")
            return PublicKeyInfo("rsa", n=read_integer(fields[0][1]), e=read_integer(fields[1][1]))
        if oid == OID_EC_PUBLIC_KEY:
            curve = _curve_of(params)
            size = CURVE_BYTES[curve]
            if len(key) != 1 + 2 * size or key[0] != 4:
                raise ValueError(f"the {curve} public key is not an uncompressed point")
            return PublicKeyInfo("ecdsa", curve=curve, x=int.from_bytes(key[1:1 + size], "big"),
                                 y=int.from_bytes(key[1 + size:], "big"))
        raise ValueError(f"public key algorithm {oid} is not RSA or EC")
    except DerError as exc:
        raise ValueError(f"malformed public key: {exc}") from None


@dataclass(frozen=True, slots=True)
class PrivateKeyInfo:
    key_type: str
    n: int = 0
    e: int = 0
    d: int = 0
    p: int = 0
    q: int = 0
    curve: str | None = None
    scalar: int = 0

    def __repr__(self) -> str:
        return f"PrivateKeyInfo({self.key_type}{', ' + self.curve if self.curve else ''})"


def parse_private_key(pkcs8: bytes) -> PrivateKeyInfo:
    """Read a PKCS#8 PrivateKeyInfo holding an RSAPrivateKey or an ECPrivateKey; ValueError
    naming what is wrong (never the key material)."""
    try:
        elements = read_elements(read_one(pkcs8, 0x30, "PrivateKeyInfo"))
        if len(elements) < 3 or elements[0] != (0x02, b"\x00") and elements[0] != (0x02, b"\x01"):
            raise DerError("PrivateKeyInfo: expected version, algorithm, key")
        (oid, params), (tag, key) = _algorithm(elements[1]), elements[2]
        if tag != 0x04:
            raise DerError("privateKey is not an OCTET STRING")
        if oid == OID_RSA:
            fields = read_elements(read_one(key, 0x30, "RSAPrivateKey"))
            if len(fields) < 9 or any(t != 0x02 for t, _ in fields[:9]):
                raise DerError("RSAPrivateKey: expected nine INTEGERs")
            n, e, d, p, q = (read_integer(v) for _, v in fields[1:6])
            return PrivateKeyInfo("rsa", n=n, e=e, d=d, p=p, q=q)
        if oid == OID_EC_PUBLIC_KEY:
            curve = _curve_of(params)
            fields = read_elements(read_one(key, 0x30, "ECPrivateKey"))
            if len(fields) < 2 or fields[1][0] != 0x04:
                raise DerError("ECPrivateKey: expected version and privateKey")
            return PrivateKeyInfo("ecdsa", curve=curve, scalar=int.from_bytes(fields[1][1], "big"))
        raise ValueError(f"private key algorithm {oid} is not RSA or EC")
    except DerError as exc:
        raise ValueError(f"malformed private key: {exc}") from None


def _algorithm(element: tuple[int, bytes]) -> tuple[str, bytes | None]:
    tag, value = element
    if tag != 0x30:
        raise DerError("AlgorithmIdentifier is not a SEQUENCE")
    parts = read_elements(value)
    if not parts or parts[0][0] != 0x06 or len(parts) > 2:
        raise DerError("AlgorithmIdentifier: expected an OID and at most one parameter")
    params = der_tlv(*parts[1]) if len(parts) == 2 else None
    return read_oid(parts[0][1]), params


def _algorithm_and_rest(body: bytes):
    elements = read_elements(body)
    if len(elements) != 2:
        raise DerError("SubjectPublicKeyInfo: expected algorithm and subjectPublicKey")
    return _algorithm(elements[0]), elements[1]


def _curve_of(params: bytes | None) -> str:
    if params is None or params[0] != 0x06:
        raise ValueError("EC key without a named curve")
    oid = read_oid(read_one(params, 0x06, "namedCurve"))
    for name, known in OID_CURVE.items():
        if oid == known:
            return name
    raise ValueError(f"EC curve {oid} is not P-256, P-384 or P-521")


def parse_algorithm_identifier(der: bytes) -> tuple[str, bytes | None]:
    """(OID, DER parameters or None) of an AlgorithmIdentifier; DerError if malformed."""
    _, value, end = read_tlv(der)
    if end != len(der):
        raise DerError("trailing bytes after the AlgorithmIdentifier")
    return _algorithm((der[0], value))


def family_of_algorithm(der: bytes) -> SignatureFamily:
    """The signature family an RFC 7427 AlgorithmIdentifier names; ValueError when it names
    none of ours (another hash, PSS with other parameters, SHA-1)."""
    try:
        oid, params = parse_algorithm_identifier(der)
    except DerError as exc:
        raise ValueError(f"malformed AlgorithmIdentifier: {exc}") from None
    for hash_name, known in OID_ECDSA.items():
        if oid == known:
            if params is not None:
                raise ValueError("ECDSA AlgorithmIdentifier with parameters")
            return next(f for f in SIGNATURE_FAMILIES.values()
                        if f.scheme == "ecdsa" and f.hash == hash_name)
    for hash_name, known in OID_SHA_RSA.items():
        if oid == known:
            if hash_name == "sha1":
                raise ValueError("RSA with SHA-1 is not accepted (RFC 8247)")
            if params not in (None, b"\x05\x00"):
                raise ValueError("PKCS#1 v1.5 AlgorithmIdentifier with parameters")
            return SIGNATURE_FAMILIES[f"rsa-pkcs1-{hash_name}"]
    if oid == OID_RSA_PSS:
        for family in SIGNATURE_FAMILIES.values():
            if family.scheme == "rsa-pss" and _same_pss_params(params, family):
                return family
        raise ValueError("RSASSA-PSS parameters other than SHA-2 with MGF1 of the same hash and "
                         "a salt as long as the hash")
    raise ValueError(f"signature algorithm {oid} is not supported")


def _same_pss_params(params: bytes | None, family: SignatureFamily) -> bool:
    """Whether RSASSA-PSS-params say `family`'s hash, MGF1 with it, salt length = hash length,
    trailer field 1 (NULL or absent hash parameters both accepted)."""
    if params is None:
        return False
    try:
        fields = dict(read_elements(read_one(params, 0x30, "RSASSA-PSS-params")))
        hash_oid, hash_params = parse_algorithm_identifier(fields[0xA0])
        mgf_oid, mgf_params = parse_algorithm_identifier(fields[0xA1])
        mgf_hash_oid, mgf_hash_params = parse_algorithm_identifier(mgf_params or b"")
        salt = read_integer(read_one(fields[0xA2], 0x02, "saltLength"))
        trailer = read_integer(read_one(fields[0xA3], 0x02, "trailerField")) if 0xA3 in fields else 1
    except (DerError, KeyError, IndexError):
        return False
    return (hash_oid == mgf_hash_oid == OID_HASH[family.hash] and mgf_oid == OID_MGF1
            and hash_params in (None, b"\x05\x00") and mgf_hash_params in (None, b"\x05\x00")
            and salt == family.hash_bytes and trailer == 1)


__all__ = ["SIGNATURE_FAMILIES", "SignatureFamily", "signature_family", "DerError",
           "decode_ecdsa_der", "encode_ecdsa_der", "ecdsa_der_to_raw", "ecdsa_raw_to_der",
           "parse_public_key", "parse_private_key", "PublicKeyInfo", "PrivateKeyInfo",
           "family_of_algorithm", "parse_algorithm_identifier", "HASH_IDS", "HASH_BYTES",
           "CURVE_BYTES", "der_sequence", "der_oid", "der_integer", "der_tlv", "read_tlv",
           "read_elements", "read_integer", "read_oid", "read_one"]

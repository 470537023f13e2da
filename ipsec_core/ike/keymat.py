"""IKEv2 key material and the protection of IKE messages.

Owns: prf+ (RFC 7296 2.13), SKEYSEED and the SK_* keys (2.14), CHILD SA KEYMAT (2.17), the
pre-shared-key AUTH value (2.15), and the Encrypted payload: AES-CBC with an HMAC/XCBC/CMAC
ICV (3.14), AES-GCM (RFC 5282) and ChaCha20-Poly1305 (RFC 7634).  Every primitive comes from
the crypto registry; the rules (key lengths, nonces, IVs, padding, what the ICV covers) live
here.
Must not: hold session state or do I/O.  Keys never appear in a repr.

`SkProtector.wipe()`, for a deleted IKE SA, is best effort: Python cannot overwrite the
immutable `bytes` the keys were derived into, nor a backend's internal copies; the protector
drops its keyed primitives and salts and refuses to seal or open afterwards.
"""
from __future__ import annotations

import hmac
import struct
from dataclasses import dataclass, field

from ipsec_core.errors import AuthenticationError, LocalError
from ipsec_core.ike.proposals import IkeSuite

_KEY_PAD = b"Key Pad for IKEv2"
_AEAD_IV_BYTES = 8


class IkeCrypto:
    """The primitives of one IKE SA, bound once from the registry: the PRF (any key), the
    encryption of each direction and, for AES-CBC, the integrity of each direction."""

    def __init__(self, suite: IkeSuite, *, registry, backend: str | None):
        self.suite = suite
        self.registry = registry
        self.backend_name = backend
        self._prf_backend = registry.select(suite.prf.family, None, backend)
        self.prf_bytes = suite.prf.output_bytes

    def prf(self, key: bytes, data: bytes) -> bytes:
        return self._prf_backend.prf(self.suite.prf.family, key).prf(data)

    def prf_plus(self, key: bytes, seed: bytes, length: int) -> bytes:
        prf = self._prf_backend.prf(self.suite.prf.family, key).prf
        out, block, n = b"", b"", 1
        while len(out) < length:
            if n > 255:
                raise ValueError("prf+ asked for more than 255 blocks (RFC 7296 2.13)")
            block = prf(block + seed + bytes([n]))
            out += block
            n += 1
        return out[:length]

    def protector(self, encr_key: bytes, integ_key: bytes) -> "SkProtector":
        return SkProtector(self, encr_key, integ_key)

    @property
    def backend_names(self) -> str:
        return self._prf_backend.name


@dataclass(frozen=True, slots=True)
class IkeKeys:
    """The SK_* keys of one IKE SA (RFC 7296 2.14).  For Wireshark's key table only when
    the user asks for key export; hidden from repr."""

    spi_i: bytes
    spi_r: bytes
    sk_d: bytes = field(repr=False)
    sk_ai: bytes = field(repr=False)
    sk_ar: bytes = field(repr=False)
    sk_ei: bytes = field(repr=False)
    sk_er: bytes = field(repr=False)
    sk_pi: bytes = field(repr=False)
    sk_pr: bytes = field(repr=False)
    encr_id: int = 0
    encr_key_bits: int = 0
    integ_id: int = 0


def skeyseed_nonce_key(suite: IkeSuite, ni: bytes, nr: bytes) -> bytes:
    """The PRF key of SKEYSEED: Ni | Nr, or for a fixed-key PRF (XCBC, CMAC: 16 bytes) the first
    half of the key from each nonce (RFC 7296 2.14, RFC 4434 / 4615 say 8 + 8 bytes)."""
    if suite.prf.key_rule:
        return ni[:8] + nr[:8]
    return ni + nr


def derive_ike_keys(crypto: IkeCrypto, *, shared: bytes, ni: bytes, nr: bytes, spi_i: bytes,
                    spi_r: bytes, old_sk_d: bytes | None = None) -> tuple[bytes, IkeKeys]:
    """SKEYSEED and the SK_* keys.  With `old_sk_d` (an IKE SA rekey, 2.18): SKEYSEED =
    prf(SK_d (old), g^ir (new) | Ni | Nr)."""
    suite = crypto.suite
    if old_sk_d is None:
        skeyseed = crypto.prf(skeyseed_nonce_key(suite, ni, nr), shared)
    else:
        skeyseed = crypto.prf(old_sk_d, shared + ni + nr)
    p = crypto.prf_bytes
    a = suite.integ.key_bytes if suite.integ else 0
    e = suite.encr_key_bytes
    stream = crypto.prf_plus(skeyseed, ni + nr + spi_i + spi_r, 3 * p + 2 * a + 2 * e)
    parts, pos = [], 0
    for size in (p, a, a, e, e, p, p):
        parts.append(stream[pos:pos + size])
        pos += size
    keys = IkeKeys(spi_i, spi_r, *parts, encr_id=int(suite.encr.id), encr_key_bits=suite.key_bits,
                   integ_id=int(suite.integ.id) if suite.integ else 0)
    return skeyseed, keys


def child_keymat(crypto: IkeCrypto, sk_d: bytes, *, ni: bytes, nr: bytes, shared: bytes = b"",
                 encr_bytes: int, integ_bytes: int) -> tuple[bytes, bytes, bytes, bytes]:
    """(encr i->r, integ i->r, encr r->i, integ r->i) from KEYMAT = prf+(SK_d, [g^ir] | Ni | Nr)
    (RFC 7296 2.17: the initiator-to-responder keys first)."""
    stream = crypto.prf_plus(sk_d, shared + ni + nr, 2 * (encr_bytes + integ_bytes))
    e, a = encr_bytes, integ_bytes
    return stream[:e], stream[e:e + a], stream[e + a:2 * e + a], stream[2 * e + a:]


def psk_auth(crypto: IkeCrypto, *, psk: bytes, message: bytes, nonce: bytes, sk_p: bytes,
             id_body: bytes) -> bytes:
    """AUTH for a pre-shared key (RFC 7296 2.15): prf(prf(PSK, "Key Pad for IKEv2"),
    RealMessage | Nonce of the peer | prf(SK_p, RestOfIDPayload))."""
    signed = message + nonce + crypto.prf(sk_p, id_body)
    return crypto.prf(crypto.prf(psk, _KEY_PAD), signed)


def auth_equal(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)


class SkProtector:
    """Encrypts and decrypts the Encrypted payload of one direction pair (ours out, theirs in).

    `seal(head, plaintext)` -> IV | ciphertext | ICV, where `head` is the message up to and
    including the SK payload's generic header (the AEAD's AAD; for AES-CBC the ICV covers head
    and the encrypted part).  `open(head, body)` -> the inner payloads, or AuthenticationError.
    AEAD IVs are a per-SA counter: a nonce is never used twice under one key.
    """

    def __init__(self, crypto: IkeCrypto, encr_key: tuple[bytes, bytes], integ_key: tuple[bytes, bytes]):
        suite = crypto.suite
        self.suite = suite
        reg, backend = crypto.registry, crypto.backend_name
        out_e, in_e = encr_key
        self._iv_counter = 0
        self.wiped = False
        if suite.aead:
            salt = suite.encr.salt_bytes
            family, bits, icv = suite.encr.family, suite.key_bits, suite.encr.icv_bytes
            nonce_bytes = salt + _AEAD_IV_BYTES
            chooser = reg.select(family, bits, backend, tag_bytes=icv)
            self._out = chooser.aead(family, out_e[:-salt], tag_bytes=icv, nonce_bytes=nonce_bytes)
            self._in = chooser.aead(family, in_e[:-salt], tag_bytes=icv, nonce_bytes=nonce_bytes)
            self._salt_out, self._salt_in = out_e[-salt:], in_e[-salt:]
            self.iv_bytes, self.icv_bytes, self.block = _AEAD_IV_BYTES, icv, 1
        else:
            family, bits = suite.encr.family, suite.key_bits
            chooser = reg.select(family, bits, backend)
            self._out = chooser.cipher(family, out_e)
            self._in = chooser.cipher(family, in_e)
            integ = suite.integ
            mac_bits = integ.key_bytes * 8 if not integ.family.startswith("hmac") else None
            macer = reg.select(integ.family, mac_bits, backend)
            self._mac_out = macer.mac(integ.family, integ_key[0])
            self._mac_in = macer.mac(integ.family, integ_key[1])
            self.iv_bytes, self.icv_bytes, self.block = suite.encr.iv_bytes, integ.icv_bytes, suite.encr.block_bytes
        self.backend = chooser.name

    def wipe(self) -> None:
        """Forget the keys of a deleted IKE SA (best effort, see the module docstring)."""
        self._out = self._in = None
        self._mac_out = self._mac_in = None
        self._salt_out = self._salt_in = b""
        self.wiped = True

    def overhead(self, plaintext_len: int) -> int:
        """Bytes the encrypted part adds: IV, padding, pad length, ICV."""
        padded = plaintext_len + 1
        padded += (-padded) % self.block
        return self.iv_bytes + padded - plaintext_len + self.icv_bytes

    def seal_length(self, plaintext_len: int) -> int:
        return plaintext_len + self.overhead(plaintext_len)

    def seal(self, head: bytes, plaintext: bytes, *, random_iv: bytes | None = None) -> bytes:
        if self.wiped:
            raise LocalError("this IKE SA's keys were wiped: it cannot send")
        pad = (-(len(plaintext) + 1)) % self.block
        inner = plaintext + bytes(pad) + bytes([pad])
        if self.suite.aead:
            self._iv_counter += 1
            iv = struct.pack("!Q", self._iv_counter)
            return iv + self._out.encrypt(self._salt_out + iv, inner, head)
        iv = random_iv
        ct = self._out.encrypt(iv, inner)
        icv = self._mac_out.mac(head + iv + ct)[:self.icv_bytes]
        return iv + ct + icv

    def open(self, head: bytes, body: bytes) -> bytes:
        if self.wiped:
            raise AuthenticationError("this IKE SA's keys were wiped")
        if len(body) < self.iv_bytes + self.icv_bytes + 1:
            raise AuthenticationError("Encrypted payload shorter than IV and ICV")
        iv = body[:self.iv_bytes]
        if self.suite.aead:
            inner = self._in.decrypt(self._salt_in + iv, body[self.iv_bytes:], head)
        else:
            ct, icv = body[self.iv_bytes:-self.icv_bytes], body[-self.icv_bytes:]
            want = self._mac_in.mac(head + iv + ct)[:self.icv_bytes]
            if not hmac.compare_digest(want, icv):
                raise AuthenticationError("Encrypted payload ICV mismatch")
            if len(ct) % self.block:
                raise AuthenticationError("Encrypted payload not a whole number of blocks")
            inner = self._in.decrypt(iv, ct)
        pad = inner[-1]
        if pad + 1 > len(inner):
            raise AuthenticationError("Encrypted payload pad length past its start")
        return inner[:-(pad + 1)]


__all__ = ["IkeCrypto", "IkeKeys", "SkProtector", "derive_ike_keys", "child_keymat", "psk_auth",
           "auth_equal", "skeyseed_nonce_key"]

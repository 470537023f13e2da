"""Known-answer tests of crypto backends, from the vectors packaged in `ipsec_core/vectors/`.

Owns: turning the vector files (Wycheproof, and RFC/draft vectors transcribed to JSON) into small
runnable cases at the primitive level, the quick check the registry runs when a backend
registers (`quick_check`), and the full run behind `ipsec selftest` (`run_all`).
Must not: hold protocol rules or touch any backend internals: every case drives a backend only
through the `Backend.aead/cipher/mac` interface of `ipsec_core.crypto.base`.

What is covered, and what is left out on purpose (each family's contract is in `base`):

- aes-gcm: Wycheproof aes_gcm, 12-byte IV groups only (ESP never uses another IV size); the
  invalid ones must be rejected by `decrypt`.  Wycheproof aes_gmac (12-byte IVs) through the AEAD,
  as RFC 4543 does: empty plaintext, the message as AAD.  draft-mcgrew-gcm-test-01 GCM and GMAC
  packets at the primitive level (nonce = salt || iv, aad as given).  The files hold only 16-byte
  tags, so 8- and 12-byte tags are derived from a few valid cases by truncation (a truncated GCM
  tag is the leading bytes of the full one, SP 800-38D 5.2.1.2); their ids end in "-tag8"/"-tag12".
- aes-ccm: Wycheproof aes_ccm with nonces of 7..13 bytes and tags of 8, 12 or 16 bytes.
- chacha20-poly1305: Wycheproof with 12-byte nonces; RFC 7634 appendices A (ESP) and B (IKEv2).
- aes-cbc: RFC 3602 cases 1-8 (4 raw, 4 ESP payloads); Wycheproof aes_cbc_pkcs5 around the raw
  no-padding cipher: the PKCS#5 padding is added and checked here, so an invalid case passes when
  the raw decryption does not end in valid padding.
- aes-ctr: RFC 3686 (counter block = nonce || iv || 00000001).
- hmac-sha*: RFC 4231 (SHA-2 only; case 5 compares its 128-bit truncation), RFC 4868 PRF and AUTH
  cases (AUTH compares the truncated ICV and the full output), Wycheproof hmac_* (compared
  truncated to the group's tag size; invalid ones must not match).
- aes-xcbc: RFC 3566, and RFC 4434 (the IKE PRF: its key-length rule is applied here, on top of
  the backend's MAC).  aes-cmac: RFC 4494 cases 1-4 (96-bit ICV), RFC 4615 (the IKE PRF, likewise),
  Wycheproof aes_cmac with 128/192/256-bit keys (its invalid key sizes are outside the contract).

- prf-*: the IKE PRFs through `Backend.prf`: RFC 4868 PRF-1..6 (SHA-2), RFC 4434 (XCBC) and
  RFC 4615 (CMAC) with keys shorter than, equal to and longer than 16 bytes, and Wycheproof
  hmac_sha1's full-length (160-bit) tags for prf-hmac-sha1, which no RFC prints.
- key exchange (`Backend.key_exchange` with a fixed private key: the public value and the shared
  secret must match, or the peer value must be refused with `KeyExchangeError`):
  ecp256/384/521: RFC 5903 section 8 (both sides) and Wycheproof ecdh_secp*_ecpoint.  IKE
  carries x || y (RFC 5903 7), so an uncompressed X9.62 point loses its 0x04 and anything else
  (compressed points: one "acceptable" case per file) goes in as it is and must be refused for
  its length.  curve25519/448: RFC 7748 5.2 and 6.1/6.2, and Wycheproof x25519/x448, where the
  "acceptable" cases flagged ZeroSharedSecret must be refused (RFC 8031 2.1 makes the check
  mandatory) and every other "acceptable" one (twist, non-canonical, other low-order points)
  must match (RFC 7748 5).  modp2048/3072/4096: no published known answers exist for the
  RFC 3526 groups with IKE encodings, so `vectors/derived/` holds values computed with pow()
  and checked with OpenSSL.  Peer values every group must refuse (RFC 6989: MODP outside
  1 < y < p-1, ECP points off the curve or with a coordinate >= p, the point at infinity;
  RFC 8031: X25519/X448 all-zero secrets; and wrong lengths) are built here around a valid case.

- signatures (`Backend.verifier` must accept the valid signatures and refuse the invalid ones,
  returning False; `Backend.signer`'s signature must verify with the same backend's verifier,
  whose answers the other cases check, and equal the known answer where the scheme is
  deterministic): Wycheproof ecdsa_secp256r1_sha256 and ecdsa_secp384r1_sha384 (DER signatures;
  BER encodings are among the invalid cases), rsa_signature_2048_sha256 (PKCS#1 v1.5) and
  rsa_pss_2048_sha256_mgf1_32.  No Wycheproof file of the collection covers P-521 or RSA with
  SHA-384/512, so `vectors/derived/signatures_openssl.json` holds one key and one signature per
  family made with OpenSSL; a signature with one bit flipped and a changed message must be
  refused.

Every valid AEAD case also flips one bit of the tag, and one of the ciphertext, and expects
`AuthenticationError` each time.

Plugin transforms bring their own vectors (`EncrTransform.vectors`, turned into cases by
`cases_from_vectors`); `iter_cases`, `quick_check` and `run_all` take them from a transform
catalogue (`catalog=`; the registry and the CLI pass theirs), so `ipsec selftest` runs them too.
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from ipsec_core.crypto.base import Backend, Feature
from ipsec_core.crypto.kex import ECP_FIELD_PRIMES, KE_FAMILIES, MODP_PRIMES, ke_family_by_group
from ipsec_core.crypto.prf import PRF_FAMILIES
from ipsec_core.crypto.signature import SIGNATURE_FAMILIES
from ipsec_core.errors import AuthenticationError, KeyExchangeError
from ipsec_core.transforms.iana import KeKind

#: Full output length of each MAC family (the contract: backends return untruncated MACs).
MAC_DIGEST_BYTES = {
    "hmac-sha1": 20, "hmac-sha256": 32, "hmac-sha384": 48, "hmac-sha512": 64,
    "aes-xcbc": 16, "aes-cmac": 16,
}
_AEAD_TAGS = (8, 12, 16)
_AES_KEY_BITS = (128, 192, 256)


# -- loading ----------------------------------------------------------------------------------
@functools.cache
def load_vector_file(path: str) -> dict:
    """One packaged vector file (`"wycheproof/aes_gcm_test.json"`, `"rfc/..."`), parsed once."""
    with resources.files("ipsec_core.vectors").joinpath(path).open("rb") as fh:
        return json.load(fh)


def _wycheproof_tests(name: str) -> Iterator[tuple[dict, dict]]:
    for group in load_vector_file(f"wycheproof/{name}_test.json")["testGroups"]:
        for test in group["tests"]:
            if test["result"] in ("valid", "invalid"):  # "acceptable" is legal either way
                yield group, test


def _rfc_cases(filename: str) -> list[dict]:
    return load_vector_file(f"rfc/{filename}")["cases"]


def _mismatch(what: str, got: bytes, want: bytes) -> str:
    """Where `got` first differs from `want`, in a line short enough for a listing."""
    if len(got) != len(want):
        return f"{what} gave {len(got)} bytes, the vector has {len(want)}"
    i = next(i for i, (a, b) in enumerate(zip(got, want)) if a != b)
    return (f"{what} differs from the vector at byte {i} of {len(want)}: "
            f"got {got[i:i + 8].hex()}, expected {want[i:i + 8].hex()}")


def _flip_last_bit(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 0x01])


def _flip_first_bit(data: bytes) -> bytes:
    """The first bit of ciphertext || tag: in the ciphertext unless it is empty (then the tag)."""
    return bytes([data[0] ^ 0x80]) + data[1:]


# -- cases ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class VectorCase:
    """One known-answer case.  `id` names the source ("rfc3602-case4"), `family` the primitive,
    `key_bits` the key size the backend must offer (None: any key, as for HMAC)."""

    id: str
    family: str
    key_bits: int | None
    source: str            # packaged file it came from, relative to ipsec_core/vectors
    valid: bool

    def run(self, backend: Backend) -> str | None:
        """None when the backend computes this case right, else a one-line reason."""
        try:
            return self._run(backend)
        except Exception as exc:
            return f"raised {exc.__class__.__name__}: {exc}"

    def _run(self, backend: Backend) -> str | None:  # pragma: no cover - abstract
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class AeadCase(VectorCase):
    key: bytes = b""
    nonce: bytes = b""
    aad: bytes = b""
    plaintext: bytes = b""
    ciphertext: bytes = b""      # without the tag
    tag: bytes = b""
    tag_bytes: int = 16

    def _run(self, backend: Backend) -> str | None:
        aead = backend.aead(self.family, self.key, tag_bytes=self.tag_bytes,
                            nonce_bytes=len(self.nonce))
        sealed = self.ciphertext + self.tag
        if not self.valid:
            try:
                aead.decrypt(self.nonce, sealed, self.aad)
            except AuthenticationError:
                return None
            return "decrypt accepted an invalid ciphertext/tag"
        out = aead.encrypt(self.nonce, self.plaintext, self.aad)
        if out != sealed:
            return _mismatch("encrypt", out, sealed)
        try:
            back = aead.decrypt(self.nonce, sealed, self.aad)
        except AuthenticationError:
            return "decrypt rejected the valid tag"
        if back != self.plaintext:
            return _mismatch("decrypt", back, self.plaintext)
        for where, tampered in (("tag", _flip_last_bit(sealed)), ("ciphertext", _flip_first_bit(sealed))):
            try:
                aead.decrypt(self.nonce, tampered, self.aad)
            except AuthenticationError:
                continue
            return f"decrypt accepted a {where} with one bit flipped"
        return None


@dataclass(frozen=True, slots=True)
class CipherCase(VectorCase):
    key: bytes = b""
    iv: bytes = b""
    plaintext: bytes = b""
    ciphertext: bytes = b""
    pkcs5: bool = False          # Wycheproof CBC-PKCS5: padding added/checked here, not by the backend

    def _run(self, backend: Backend) -> str | None:
        cipher = backend.cipher(self.family, self.key)
        if not self.valid:
            raw = cipher.decrypt(self.iv, self.ciphertext)
            if _pkcs5_unpad(raw) is None:
                return None
            return "raw decryption ends in valid PKCS#5 padding for an invalid ciphertext"
        plaintext = _pkcs5_pad(self.plaintext) if self.pkcs5 else self.plaintext
        out = cipher.encrypt(self.iv, plaintext)
        if out != self.ciphertext:
            return _mismatch("encrypt", out, self.ciphertext)
        back = cipher.decrypt(self.iv, self.ciphertext)
        if back != plaintext:
            return _mismatch("decrypt", back, plaintext)
        return None


@dataclass(frozen=True, slots=True)
class MacCase(VectorCase):
    key: bytes = b""
    message: bytes = b""
    tag: bytes = b""             # expected output, possibly truncated (compared on its length)
    prf_key_rule: bool = False   # RFC 4434 / RFC 4615: derive a 16-byte key from any key length

    def _run(self, backend: Backend) -> str | None:
        key = self.key
        if self.prf_key_rule and len(key) != 16:
            key = _prf_key(backend, self.family, key)
        out = backend.mac(self.family, key).mac(self.message)
        want = MAC_DIGEST_BYTES[self.family]
        if len(out) != want:
            return f"MAC output is {len(out)} bytes, the contract says {want}"
        got = out[:len(self.tag)]
        if self.valid:
            if got != self.tag:
                return _mismatch("MAC", got, self.tag)
            return None
        if got == self.tag:
            return "MAC matches a modified tag"
        return None


@dataclass(frozen=True, slots=True)
class PrfCase(VectorCase):
    """An IKE PRF through `Backend.prf`: the key rule is the backend's (or the core adapter's)."""

    key: bytes = b""
    data: bytes = b""
    output: bytes = b""

    def _run(self, backend: Backend) -> str | None:
        prf = backend.prf(self.family, self.key)
        want = PRF_FAMILIES[self.family].output_bytes
        if prf.output_bytes != want:
            return f"output_bytes is {prf.output_bytes}, the PRF's output is {want}"
        out = prf.prf(self.data)
        if out != self.output:
            return _mismatch("PRF", out, self.output)
        return None


@dataclass(frozen=True, slots=True)
class KeCase(VectorCase):
    """A key exchange with a fixed private key.  Valid: `public` (when given) and `shared` must
    come out; invalid: `shared_secret(peer_public)` must raise KeyExchangeError."""

    private_key: bytes = b""
    peer_public: bytes = b""
    public: bytes = b""          # expected public value of private_key; empty: not checked
    shared: bytes = b""          # expected shared secret (valid cases)

    def _run(self, backend: Backend) -> str | None:
        kx = backend.key_exchange(self.family, private_key=self.private_key)
        group = KE_FAMILIES[self.family].group
        if kx.group != group:
            return f"group is {kx.group}, {self.family} is {group}"
        if self.public and kx.public_bytes != self.public:
            return _mismatch("public value", kx.public_bytes, self.public)
        try:
            secret = kx.shared_secret(self.peer_public)
        except KeyExchangeError as exc:
            return None if not self.valid else f"refused a valid peer value ({exc})"
        if not self.valid:
            return "accepted a peer value it must refuse"
        if secret != self.shared:
            return _mismatch("shared secret", secret, self.shared)
        return None


def _pkcs5_pad(data: bytes) -> bytes:
    n = 16 - len(data) % 16
    return data + bytes([n]) * n


def _pkcs5_unpad(data: bytes) -> bytes | None:
    if not data or len(data) % 16:
        return None
    n = data[-1]
    if not 1 <= n <= 16 or data[-n:] != bytes([n]) * n:
        return None
    return data[:-n]


def _prf_key(backend: Backend, family: str, key: bytes) -> bytes:
    """The IKE PRF key rule: RFC 4434 (XCBC) pads short keys with zeros; otherwise, and for every
    non-16-byte key in RFC 4615 (CMAC), the key is the MAC of the given key under 0^128."""
    if family == "aes-xcbc" and len(key) < 16:
        return key + bytes(16 - len(key))
    return backend.mac(family, bytes(16)).mac(key)


# -- builders, one per source file; each cached -----------------------------------------------
def _hex(value: str) -> bytes:
    return bytes.fromhex(value)


@dataclass(frozen=True, slots=True)
class SignatureCase(VectorCase):
    """A signature through `Backend.verifier` (and `Backend.signer` when `private_key` is set).

    Valid: `signature` must verify; with a private key, the backend's own signature of `message`
    must verify too (and equal `signature` when the scheme is `deterministic`).  Invalid:
    `verify` must answer False (not raise)."""

    public_key: bytes = b""      # DER SubjectPublicKeyInfo
    message: bytes = b""
    signature: bytes = b""
    private_key: bytes = field(default=b"", repr=False)   # DER PKCS#8; empty: verify only
    deterministic: bool = False

    def _run(self, backend: Backend) -> str | None:
        verifier = backend.verifier(self.family, self.public_key)
        if self.private_key:
            signed = backend.signer(self.family, self.private_key).sign(self.message)
            if self.deterministic and signed != self.signature:
                return _mismatch("sign", signed, self.signature)
            if verifier.verify(self.message, signed) is not True:
                return "the backend's own signature does not verify"
        ok = verifier.verify(self.message, self.signature)
        if ok not in (True, False):
            return f"verify returned {ok!r}, not True or False"
        if self.valid and not ok:
            return "verify refused a valid signature"
        if not self.valid and ok:
            return "verify accepted an invalid signature"
        return None


@functools.cache
def _wycheproof_aead(name: str, family: str) -> tuple[VectorCase, ...]:
    cases = []
    for group, t in _wycheproof_tests(name):
        nonce_bytes, tag_bytes, key_bits = group["ivSize"] // 8, group["tagSize"] // 8, group["keySize"]
        if group["ivSize"] % 8 or group["tagSize"] % 8 or tag_bytes not in _AEAD_TAGS:
            continue
        if family == "aes-ccm":
            if not 7 <= nonce_bytes <= 13 or key_bits not in _AES_KEY_BITS:
                continue
        elif nonce_bytes != 12:
            continue
        cases.append(AeadCase(
            id=f"wycheproof-{name}-tc{t['tcId']}", family=family, key_bits=key_bits,
            source=f"wycheproof/{name}_test.json", valid=t["result"] == "valid",
            key=_hex(t["key"]), nonce=_hex(t["iv"]), aad=_hex(t["aad"]), plaintext=_hex(t["msg"]),
            ciphertext=_hex(t["ct"]), tag=_hex(t["tag"]), tag_bytes=tag_bytes))
    return tuple(cases)


@functools.cache
def _wycheproof_gcm_truncated() -> tuple[VectorCase, ...]:
    """8- and 12-byte GCM tags derived from the first three valid 12-byte-IV cases per key size."""
    picked: dict[int, list[AeadCase]] = {}
    for case in _wycheproof_aead("aes_gcm", "aes-gcm"):
        chosen = picked.setdefault(case.key_bits, [])
        if case.valid and len(chosen) < 3:
            chosen.append(case)
    out = []
    for chosen in picked.values():
        for case in chosen:
            for t in (8, 12):
                out.append(_truncated(case, t))
    return tuple(out)


def _truncated(case: AeadCase, tag_bytes: int) -> AeadCase:
    return AeadCase(
        id=f"{case.id}-tag{tag_bytes}", family=case.family, key_bits=case.key_bits,
        source=case.source, valid=case.valid, key=case.key, nonce=case.nonce, aad=case.aad,
        plaintext=case.plaintext, ciphertext=case.ciphertext, tag=case.tag[:tag_bytes],
        tag_bytes=tag_bytes)


@functools.cache
def _wycheproof_gmac() -> tuple[VectorCase, ...]:
    cases = []
    for group, t in _wycheproof_tests("aes_gmac"):
        if group["ivSize"] != 96 or group["tagSize"] != 128:
            continue
        cases.append(AeadCase(
            id=f"wycheproof-aes_gmac-tc{t['tcId']}", family="aes-gcm", key_bits=group["keySize"],
            source="wycheproof/aes_gmac_test.json", valid=t["result"] == "valid",
            key=_hex(t["key"]), nonce=_hex(t["iv"]), aad=_hex(t["msg"]), tag=_hex(t["tag"])))
    return tuple(cases)


@functools.cache
def _mcgrew() -> tuple[VectorCase, ...]:
    filename = "draft-mcgrew-gcm-test-01_esp_gcm_gmac.json"
    cases = []
    for number, c in enumerate(_rfc_cases(filename), start=1):
        kind = "gmac" if c["algorithm"] == "AES-GMAC-ESP" else "gcm"
        key = _hex(c["key"])
        sealed = _hex(c["ctext_tag"])
        cases.append(AeadCase(
            id=f"mcgrew-{kind}-case{number}", family="aes-gcm", key_bits=8 * len(key),
            source=f"rfc/{filename}", valid=True, key=key, nonce=_hex(c["nonce"]),
            aad=_hex(c["aad"]), plaintext=_hex(c["plaintext"]), ciphertext=sealed[:-16],
            tag=sealed[-16:], tag_bytes=16))
    return tuple(cases)


@functools.cache
def _rfc7634() -> tuple[VectorCase, ...]:
    filename = "rfc7634_chacha20_poly1305_esp_ikev2.json"
    cases = []
    for label, c in zip(("esp", "ike"), _rfc_cases(filename)):
        cases.append(AeadCase(
            id=f"rfc7634-{label}", family="chacha20-poly1305", key_bits=256,
            source=f"rfc/{filename}", valid=True, key=_hex(c["key"]), nonce=_hex(c["nonce"]),
            aad=_hex(c["aad"]), plaintext=_hex(c["plaintext"]), ciphertext=_hex(c["ciphertext"]),
            tag=_hex(c["tag"]), tag_bytes=16))
    return tuple(cases)


@functools.cache
def _rfc3602() -> tuple[VectorCase, ...]:
    filename = "rfc3602_aes_cbc_esp.json"
    cases = []
    for number, c in enumerate(_rfc_cases(filename), start=1):
        key = _hex(c["key"])
        if c["type"] == "aes-cbc":
            plaintext, ciphertext = _hex(c["plaintext"]), _hex(c["ciphertext"])
        else:  # ESP cases: the payload as encrypted, without the headers around it
            plaintext, ciphertext = _hex(c["pre_encryption_data"]), _hex(c["encrypted_data"])
        cases.append(CipherCase(
            id=f"rfc3602-case{number}", family="aes-cbc", key_bits=8 * len(key),
            source=f"rfc/{filename}", valid=True, key=key, iv=_hex(c["iv"]),
            plaintext=plaintext, ciphertext=ciphertext))
    return tuple(cases)


@functools.cache
def _wycheproof_cbc() -> tuple[VectorCase, ...]:
    cases = []
    for group, t in _wycheproof_tests("aes_cbc_pkcs5"):
        ciphertext = _hex(t["ct"])
        if len(ciphertext) % 16 or group["keySize"] not in _AES_KEY_BITS:
            continue  # the raw cipher only takes whole blocks
        cases.append(CipherCase(
            id=f"wycheproof-aes_cbc_pkcs5-tc{t['tcId']}", family="aes-cbc",
            key_bits=group["keySize"], source="wycheproof/aes_cbc_pkcs5_test.json",
            valid=t["result"] == "valid", key=_hex(t["key"]), iv=_hex(t["iv"]),
            plaintext=_hex(t["msg"]), ciphertext=ciphertext, pkcs5=True))
    return tuple(cases)


@functools.cache
def _rfc3686() -> tuple[VectorCase, ...]:
    filename = "rfc3686_aes_ctr.json"
    cases = []
    for number, c in enumerate(_rfc_cases(filename), start=1):
        key = _hex(c["key"])
        block = _hex(c["nonce"]) + _hex(c["iv"]) + (1).to_bytes(4, "big")
        cases.append(CipherCase(
            id=f"rfc3686-case{number}", family="aes-ctr", key_bits=8 * len(key),
            source=f"rfc/{filename}", valid=True, key=key, iv=block,
            plaintext=_hex(c["plaintext"]), ciphertext=_hex(c["ciphertext"])))
    return tuple(cases)


_SHA2 = ("256", "384", "512")


@functools.cache
def _rfc4231(bits: str) -> tuple[VectorCase, ...]:
    filename = "rfc4231_hmac_sha2.json"
    cases = []
    for number, c in enumerate(_rfc_cases(filename), start=1):
        key = _hex(c["key"])
        cases.append(MacCase(
            id=f"rfc4231-case{number}-sha{bits}", family=f"hmac-sha{bits}", key_bits=8 * len(key),
            source=f"rfc/{filename}", valid=True, key=key, message=_hex(c["data"]),
            tag=_hex(c[f"hmac_sha_{bits}"])))  # case 5 is printed truncated: compared on its length
    return tuple(cases)


@functools.cache
def _rfc4868(bits: str) -> tuple[VectorCase, ...]:
    filename = "rfc4868_hmac_sha2_ipsec.json"
    cases = []
    for c in _rfc_cases(filename):
        full = c.get(f"prf_hmac_sha_{bits}")
        if full is None:
            continue
        label = c["name"].removeprefix("Test Case ").lower()  # "prf-1", "auth256-1"
        key, message = _hex(c["key"]), _hex(c["data"])
        common = dict(family=f"hmac-sha{bits}", key_bits=8 * len(key), source=f"rfc/{filename}",
                      valid=True, key=key, message=message)
        if label.startswith("prf"):
            cases.append(MacCase(id=f"rfc4868-{label.replace('-', '')}-sha{bits}", tag=_hex(full),
                                 **common))
        else:
            truncated = _hex(c[next(k for k in c if k.startswith(f"hmac_sha_{bits}_"))])
            cases.append(MacCase(id=f"rfc4868-{label}", tag=truncated, **common))
            cases.append(MacCase(id=f"rfc4868-{label}-full", tag=_hex(full), **common))
    return tuple(cases)


@functools.cache
def _wycheproof_mac(name: str, family: str) -> tuple[VectorCase, ...]:
    cases = []
    for group, t in _wycheproof_tests(name):
        key_bits = group["keySize"]
        if family == "aes-cmac" and key_bits not in _AES_KEY_BITS:
            continue  # invalid AES key sizes: outside the contract, refused by the core
        cases.append(MacCase(
            id=f"wycheproof-{name}-tc{t['tcId']}", family=family, key_bits=key_bits,
            source=f"wycheproof/{name}_test.json", valid=t["result"] == "valid",
            key=_hex(t["key"]), message=_hex(t["msg"]), tag=_hex(t["tag"])))
    return tuple(cases)


@functools.cache
def _rfc3566() -> tuple[VectorCase, ...]:
    filename = "rfc3566_aes_xcbc_mac_96.json"
    cases = []
    for number, c in enumerate(_rfc_cases(filename), start=1):
        key = _hex(c["key"])
        common = dict(family="aes-xcbc", key_bits=8 * len(key), source=f"rfc/{filename}",
                      valid=True, key=key, message=_hex(c["message"]))
        cases.append(MacCase(id=f"rfc3566-case{number}", tag=_hex(c["aes_xcbc_mac"]), **common))
        cases.append(MacCase(id=f"rfc3566-case{number}-96", tag=_hex(c["aes_xcbc_mac_96"]), **common))
    return tuple(cases)


@functools.cache
def _ike_prf(rfc: str, family: str) -> tuple[VectorCase, ...]:
    filename = {"rfc4434": "rfc4434_aes_xcbc_prf_128.json",
                "rfc4615": "rfc4615_aes_cmac_prf_128.json"}[rfc]
    cases = []
    for number, c in enumerate(_rfc_cases(filename), start=1):
        cases.append(MacCase(
            id=f"{rfc}-case{number}", family=family, key_bits=128, source=f"rfc/{filename}",
            valid=True, key=_hex(c["key"]), message=_hex(c["message"]),
            tag=_hex(c["prf_output"]), prf_key_rule=True))
    return tuple(cases)


@functools.cache
def _rfc4494() -> tuple[VectorCase, ...]:
    filename = "rfc4494_aes_cmac_96.json"
    cases = []
    for c in _rfc_cases(filename):
        if c["type"] != "mac":
            continue  # the subkey case prints L/K1/K2, which the MAC interface does not expose
        number = c["name"].removeprefix("Test Case ")
        key = _hex(c["key"])
        cases.append(MacCase(
            id=f"rfc4494-case{number}", family="aes-cmac", key_bits=8 * len(key),
            source=f"rfc/{filename}", valid=True, key=key, message=_hex(c["message"]),
            tag=_hex(c["aes_cmac_96"])))
    return tuple(cases)


# -- PRFs ---------------------------------------------------------------------------------------
@functools.cache
def _prf_rfc4868(bits: str) -> tuple[VectorCase, ...]:
    filename = "rfc4868_hmac_sha2_ipsec.json"
    cases = []
    for c in _rfc_cases(filename):
        label = c["name"].removeprefix("Test Case ").lower().replace("-", "")   # "prf1"
        if label.startswith("prf"):
            cases.append(PrfCase(
                id=f"rfc4868-{label}-prfsha{bits}", family=f"prf-hmac-sha{bits}", key_bits=None,
                source=f"rfc/{filename}", valid=True, key=_hex(c["key"]), data=_hex(c["data"]),
                output=_hex(c[f"prf_hmac_sha_{bits}"])))
    return tuple(cases)


@functools.cache
def _prf_aes(rfc: str) -> tuple[VectorCase, ...]:
    filename, family, keyword = {
        "rfc4434": ("rfc4434_aes_xcbc_prf_128.json", "prf-aes128-xcbc", "prfaesxcbc"),
        "rfc4615": ("rfc4615_aes_cmac_prf_128.json", "prf-aes128-cmac", "prfaescmac")}[rfc]
    return tuple(
        PrfCase(id=f"{rfc}-case{number}-{keyword}", family=family, key_bits=None,
                source=f"rfc/{filename}", valid=True, key=_hex(c["key"]),
                data=_hex(c["message"]), output=_hex(c["prf_output"]))
        for number, c in enumerate(_rfc_cases(filename), start=1))


@functools.cache
def _prf_sha1() -> tuple[VectorCase, ...]:
    """Wycheproof hmac_sha1's valid cases with full 160-bit tags: the PRF's whole output."""
    cases = []
    for group, t in _wycheproof_tests("hmac_sha1"):
        if group["tagSize"] == 160 and t["result"] == "valid":
            cases.append(PrfCase(
                id=f"wycheproof-hmac_sha1-tc{t['tcId']}-prfsha1", family="prf-hmac-sha1",
                key_bits=None, source="wycheproof/hmac_sha1_test.json", valid=True,
                key=_hex(t["key"]), data=_hex(t["msg"]), output=_hex(t["tag"])))
    return tuple(cases)


# -- key exchange -------------------------------------------------------------------------------
_XDH_FILES = {"curve25519": "x25519", "curve448": "x448"}
_ECDH_FILES = {"ecp256": "ecdh_secp256r1_ecpoint", "ecp384": "ecdh_secp384r1_ecpoint",
               "ecp521": "ecdh_secp521r1_ecpoint"}


@functools.cache
def _rfc5903(family: str) -> tuple[VectorCase, ...]:
    filename = "rfc5903_ecp_groups_ikev2.json"
    cases = []
    for c in _rfc_cases(filename):
        if ke_family_by_group(c["ike_dh_group"]).family != family:
            continue
        gi, gr = _hex(c["gix"] + c["giy"]), _hex(c["grx"] + c["gry"])
        for side, private, public, peer in (("initiator", c["i"], gi, gr), ("responder", c["r"], gr, gi)):
            cases.append(KeCase(
                id=f"rfc5903-{family}-{side}", family=family, key_bits=None, source=f"rfc/{filename}",
                valid=True, private_key=_hex(private), peer_public=peer, public=public,
                shared=_hex(c["shared_secret"])))
    return tuple(cases)


@functools.cache
def _rfc7748(family: str) -> tuple[VectorCase, ...]:
    filename = "rfc7748_x25519_x448.json"
    label = _XDH_FILES[family]
    common = dict(family=family, key_bits=None, source=f"rfc/{filename}", valid=True)
    cases = []
    for c in _rfc_cases(filename):
        if c["curve"].lower() != label:
            continue
        if c["type"] == "function":
            number = c["name"].rsplit(" ", 1)[-1]
            cases.append(KeCase(id=f"rfc7748-{label}-function{number}", private_key=_hex(c["scalar"]),
                                peer_public=_hex(c["u"]), shared=_hex(c["output_u"]), **common))
        elif c["type"] == "iterated" and c["iterations"] == 1:   # one step: X(base, base)
            base = _hex(c["initial_k_and_u"])
            cases.append(KeCase(id=f"rfc7748-{label}-iterated1", private_key=base, peer_public=base,
                                shared=_hex(c["result_k"]), **common))
        elif c["type"] == "dh":
            alice, bob = _hex(c["alice_public"]), _hex(c["bob_public"])
            for side, private, public, peer in (("alice", c["alice_private"], alice, bob),
                                                ("bob", c["bob_private"], bob, alice)):
                cases.append(KeCase(id=f"rfc7748-{label}-{side}", private_key=_hex(private),
                                    peer_public=peer, public=public,
                                    shared=_hex(c["shared_secret"]), **common))
    return tuple(cases)


@functools.cache
def _wycheproof_ke(family: str) -> tuple[VectorCase, ...]:
    """Wycheproof ECDH / XDH cases, read for IKE as the module docstring says."""
    spec = KE_FAMILIES[family]
    ecdh = family in _ECDH_FILES
    name = _ECDH_FILES[family] if ecdh else _XDH_FILES[family]
    cases = []
    for group in load_vector_file(f"wycheproof/{name}_test.json")["testGroups"]:
        for t in group["tests"]:
            private, public = _hex(t["private"]), _hex(t["public"])
            if ecdh:
                private = int.from_bytes(private, "big").to_bytes(spec.private_bytes, "big")
                if len(public) == spec.public_bytes + 1 and public[0] == 4:
                    public = public[1:]                           # X9.62 uncompressed -> x || y
                valid = t["result"] == "valid"                    # "acceptable": compressed
            else:
                valid = t["result"] == "valid" or (
                    t["result"] == "acceptable" and "ZeroSharedSecret" not in t["flags"])
            cases.append(KeCase(
                id=f"wycheproof-{name}-tc{t['tcId']}", family=family, key_bits=None,
                source=f"wycheproof/{name}_test.json", valid=valid, private_key=private,
                peer_public=public, shared=_hex(t["shared"]) if valid else b""))
    return tuple(cases)


@functools.cache
def _modp_derived(family: str) -> tuple[VectorCase, ...]:
    filename = "modp_rfc3526_ikev2.json"
    cases = []
    for c in load_vector_file(f"derived/{filename}")["cases"]:
        if c["family"] != family:
            continue
        number = c["name"].rsplit(" ", 1)[-1]
        a, b = _hex(c["public_a"]), _hex(c["public_b"])
        for side, private, public, peer in (("a", c["private_a"], a, b), ("b", c["private_b"], b, a)):
            cases.append(KeCase(
                id=f"derived-{family}-case{number}-{side}", family=family, key_bits=None,
                source=f"derived/{filename}", valid=True, private_key=_hex(private),
                peer_public=peer, public=public, shared=_hex(c["shared_secret"])))
    return tuple(cases)


@functools.cache
def _peer_checks(family: str) -> tuple[VectorCase, ...]:
    """Peer values `family` must refuse, around the private key of its first valid case."""
    spec = KE_FAMILIES[family]
    n = spec.public_bytes
    if spec.kind is KeKind.MODP:
        base, p, rule = _modp_derived(family)[0], MODP_PRIMES[family], "rfc6989"
        bad = {"zero": bytes(n), "one": (1).to_bytes(n, "big"), "p-1": (p - 1).to_bytes(n, "big"),
               "p": p.to_bytes(n, "big"), "all-ones": b"\xff" * n}
    elif spec.kind is KeKind.ECP:
        base, p, rule = _rfc5903(family)[0], ECP_FIELD_PRIMES[family], "rfc6989"
        size = n // 2
        x, y = (int.from_bytes(base.peer_public[i:i + size], "big") for i in (0, size))
        point = lambda x, y: x.to_bytes(size, "big") + y.to_bytes(size, "big")  # noqa: E731
        bad = {"off-curve": point(x, (y + 1) % p), "infinity": bytes(n), "x-is-p": point(p, y),
               "prefixed-04": b"\x04" + base.peer_public}
        if (x + p).bit_length() <= 8 * size:          # P-521: a 66-byte field has room for x + p
            bad["x-plus-p"] = point(x + p, y)
            bad["y-plus-p"] = point(x, y + p)
    else:
        base, rule = _rfc7748(family)[0], "rfc8031"
        bad = {"zero": bytes(n), "one": (1).to_bytes(n, "little")}
    bad |= {"short": base.peer_public[:-1], "long": base.peer_public + b"\x00", "empty": b""}
    return tuple(
        KeCase(id=f"{rule}-{family}-peer-{what}", family=family, key_bits=None,
               source=base.source, valid=False, private_key=base.private_key, peer_public=value)
        for what, value in bad.items())


def _ke_builders(family: str) -> tuple[Callable[[], tuple[VectorCase, ...]], ...]:
    kind = KE_FAMILIES[family].kind
    if kind is KeKind.MODP:
        own = (functools.partial(_modp_derived, family),)
    elif kind is KeKind.ECP:
        own = (functools.partial(_rfc5903, family), functools.partial(_wycheproof_ke, family))
    else:
        own = (functools.partial(_rfc7748, family), functools.partial(_wycheproof_ke, family))
    return own + (functools.partial(_peer_checks, family),)


# -- signatures ---------------------------------------------------------------------------------
_SIGNATURE_FILES = {"ecdsa-p256-sha256": "ecdsa_secp256r1_sha256",
                    "ecdsa-p384-sha384": "ecdsa_secp384r1_sha384",
                    "rsa-pkcs1-sha256": "rsa_signature_2048_sha256",
                    "rsa-pss-sha256": "rsa_pss_2048_sha256_mgf1_32"}


@functools.cache
def _wycheproof_signature(family: str) -> tuple[VectorCase, ...]:
    name = _SIGNATURE_FILES[family]
    want_hash = SIGNATURE_FAMILIES[family].hash
    cases = []
    for group, t in _wycheproof_tests(name):
        if group["sha"].replace("-", "").lower() != want_hash:
            continue
        if "sLen" in group and (group["sLen"] != SIGNATURE_FAMILIES[family].hash_bytes
                                or group["mgfSha"].replace("-", "").lower() != want_hash):
            continue
        cases.append(SignatureCase(
            id=f"wycheproof-{name}-tc{t['tcId']}", family=family, key_bits=None,
            source=f"wycheproof/{name}_test.json", valid=t["result"] == "valid",
            public_key=_hex(group["publicKeyDer"]), message=_hex(t["msg"]), signature=_hex(t["sig"])))
    return tuple(cases)


@functools.cache
def _derived_signature(family: str) -> tuple[VectorCase, ...]:
    """The OpenSSL-made key and signature of `family` (signed again by the backend), and two
    signatures to refuse: one bit of it flipped, and the same signature over another message."""
    filename = "signatures_openssl.json"
    cases = []
    for c in load_vector_file(f"derived/{filename}")["cases"]:
        if c["family"] != family:
            continue
        number = c["name"].rsplit(" ", 1)[-1]
        common = dict(family=family, key_bits=None, source=f"derived/{filename}",
                      public_key=_hex(c["public_key_spki"]))
        message, signature = _hex(c["message"]), _hex(c["signature"])
        base = f"derived-{family}-case{number}"
        cases += [
            SignatureCase(id=base, valid=True, message=message, signature=signature,
                          private_key=_hex(c["private_key_pkcs8"]),
                          deterministic=c["deterministic"], **common),
            SignatureCase(id=f"{base}-bitflip", valid=False, message=message,
                          signature=_flip_last_bit(signature), **common),
            SignatureCase(id=f"{base}-other-message", valid=False, message=message + b"!",
                          signature=signature, **common)]
    return tuple(cases)


def _signature_builders(family: str) -> tuple[Callable[[], tuple[VectorCase, ...]], ...]:
    own = (functools.partial(_wycheproof_signature, family),) if family in _SIGNATURE_FILES else ()
    return own + (functools.partial(_derived_signature, family),)


_BUILDERS: dict[str, tuple[Callable[[], tuple[VectorCase, ...]], ...]] = {
    "aes-gcm": (_mcgrew, lambda: _wycheproof_aead("aes_gcm", "aes-gcm"),
                _wycheproof_gcm_truncated, _wycheproof_gmac),
    "aes-ccm": (lambda: _wycheproof_aead("aes_ccm", "aes-ccm"),),
    "chacha20-poly1305": (_rfc7634, lambda: _wycheproof_aead("chacha20_poly1305", "chacha20-poly1305")),
    "aes-cbc": (_rfc3602, _wycheproof_cbc),
    "aes-ctr": (_rfc3686,),
    "hmac-sha1": (lambda: _wycheproof_mac("hmac_sha1", "hmac-sha1"),),
    **{f"hmac-sha{b}": (functools.partial(_rfc4231, b), functools.partial(_rfc4868, b),
                        functools.partial(_wycheproof_mac, f"hmac_sha{b}", f"hmac-sha{b}"))
       for b in _SHA2},
    "aes-xcbc": (_rfc3566, lambda: _ike_prf("rfc4434", "aes-xcbc")),
    "aes-cmac": (_rfc4494, lambda: _ike_prf("rfc4615", "aes-cmac"),
                 lambda: _wycheproof_mac("aes_cmac", "aes-cmac")),
    "prf-hmac-sha1": (_prf_sha1,),
    **{f"prf-hmac-sha{b}": (functools.partial(_prf_rfc4868, b),) for b in _SHA2},
    "prf-aes128-xcbc": (functools.partial(_prf_aes, "rfc4434"),),
    "prf-aes128-cmac": (functools.partial(_prf_aes, "rfc4615"),),
    **{family: _ke_builders(family) for family in KE_FAMILIES},
    **{family: _signature_builders(family) for family in SIGNATURE_FAMILIES},
}


class _NoPluginVectors:
    """No transform catalogue given: the packaged vectors alone."""

    @staticmethod
    def families() -> list[str]:
        return []

    @staticmethod
    def cases(family: str) -> tuple:
        return ()


def _default_catalog(catalog):
    """The transform catalogue to take plugin vectors from: the one given (the registry passes
    its own), else none.  This module never asks for the process-wide registry."""
    return _NoPluginVectors if catalog is None else catalog


def iter_cases(family: str | None = None, *, catalog=None) -> Iterator[VectorCase]:
    """Every known-answer case, or those of one family: the packaged ones (files parsed on first
    use), then those of plugin transforms in `catalog` (default: none)."""
    catalog = _default_catalog(catalog)
    plugin_families = catalog.families()
    if family is not None and family not in _BUILDERS and family not in plugin_families:
        known = sorted(set(_BUILDERS) | set(plugin_families))
        raise ValueError(f"no vectors for family {family!r}; known: {known}")
    if family:
        families = [family]
    else:
        families = list(_BUILDERS) + [f for f in plugin_families if f not in _BUILDERS]
    for fam in families:
        for build in _BUILDERS.get(fam, ()):
            yield from build()
        yield from catalog.cases(fam)


# -- the quick check at registration ----------------------------------------------------------
def _smallest(cases: Iterable[VectorCase], *, key: Callable[[VectorCase], bool]) -> VectorCase | None:
    chosen = [c for c in cases if c.valid and key(c)]
    return min(chosen, key=_case_size) if chosen else None


def _case_size(case: VectorCase) -> int:
    return sum(len(getattr(case, name, b"")) for name in ("plaintext", "aad", "message"))


@functools.cache
def _quick_cases(family: str, key_bits: int | None) -> tuple[VectorCase, ...]:
    """1-3 tiny valid cases for one family and key size (AEAD cases check a tampered tag too)."""
    picks: list[VectorCase | None] = []
    if family == "aes-gcm":
        base = _smallest(_wycheproof_aead("aes_gcm", "aes-gcm"),
                         key=lambda c: c.key_bits == key_bits and c.plaintext and c.aad)
        picks = [base] + ([_truncated(base, t) for t in (8, 12)] if base else [])
    elif family == "aes-ccm":
        ccm = _wycheproof_aead("aes_ccm", "aes-ccm")
        for nonce, tag in ((11, 16), (12, 8), (12, 12)):  # ESP uses 11-byte nonces
            picks.append(_smallest(ccm, key=lambda c: c.key_bits == key_bits and c.plaintext
                                   and len(c.nonce) == nonce and c.tag_bytes == tag))
    elif family == "chacha20-poly1305":
        picks.append(_smallest(_wycheproof_aead("chacha20_poly1305", family),
                               key=lambda c: c.key_bits == key_bits and c.plaintext and c.aad))
    elif family == "aes-cbc":
        if key_bits == 128:
            picks.append(_rfc3602()[1])  # two blocks: checks the chaining
        picks.append(_smallest(_wycheproof_cbc(), key=lambda c: c.key_bits == key_bits and c.plaintext))
    elif family == "aes-ctr":
        # per key size: one whole block, and 36 bytes (two counter steps and a partial block)
        picks = [c for c in _rfc3686() if c.key_bits == key_bits and len(c.plaintext) in (16, 36)]
    elif family == "hmac-sha1":
        sha1 = _wycheproof_mac("hmac_sha1", family)
        for bits in (160, 520):  # a hash-sized key, and one longer than the block (hashed first)
            picks.append(_smallest(sha1, key=lambda c: c.key_bits == bits and c.message
                                   and len(c.tag) == 20))
    elif family.startswith("hmac-sha"):
        bits = family.removeprefix("hmac-sha")
        by_id = {c.id: c for c in _rfc4231(bits) + _rfc4868(bits)}
        picks = [by_id[f"rfc4231-case1-sha{bits}"], by_id[f"rfc4231-case6-sha{bits}"],
                 by_id[f"rfc4868-auth{bits}-1-full"]]
    elif family == "aes-xcbc":
        if key_bits == 128:
            by_id = {c.id: c for c in _rfc3566()}
            picks = [by_id["rfc3566-case1"], by_id["rfc3566-case3"], by_id["rfc3566-case4"]]
    elif family == "aes-cmac":
        cmac = _wycheproof_mac("aes_cmac", family)
        full = [c for c in cmac if c.key_bits == key_bits and len(c.tag) == 16]
        for size_ok in (lambda n: n == 0, lambda n: n and n % 16 == 0, lambda n: n % 16):
            picks.append(_smallest(full, key=lambda c: size_ok(len(c.message))))
    elif family == "prf-hmac-sha1":
        by_key = {len(c.key): c for c in reversed(_prf_sha1())}  # first case of each key size
        picks = [by_key[20], by_key[65]]   # a hash-sized key, and one hashed first
    elif family.startswith("prf-hmac-sha"):
        by_id = {c.id: c for c in _prf_rfc4868(family.removeprefix("prf-hmac-sha"))}
        bits = family.removeprefix("prf-hmac-sha")
        picks = [by_id[f"rfc4868-prf1-prfsha{bits}"], by_id[f"rfc4868-prf6-prfsha{bits}"]]
    elif family in ("prf-aes128-xcbc", "prf-aes128-cmac"):
        picks = list(_prf_aes("rfc4434" if family == "prf-aes128-xcbc" else "rfc4615"))
    elif family in KE_FAMILIES:
        # one known answer (public value and shared secret), one peer value to refuse
        valid = {"modp": _modp_derived, "ecp": _rfc5903, "montgomery": _rfc7748}
        picks = [valid[KE_FAMILIES[family].kind.value](family)[0], _peer_checks(family)[0]]
    elif family in SIGNATURE_FAMILIES:
        # a signing round trip with the known signature, a flipped bit refused, and for the
        # families Wycheproof covers its shortest valid case
        picks = list(_derived_signature(family)[:2])
        if family in _SIGNATURE_FILES:
            picks.append(_smallest(_wycheproof_signature(family), key=lambda c: bool(c.message)))
    return tuple(p for p in picks if p is not None)


def quick_check(backend: Backend, feature: Feature, *, catalog=None) -> list[str]:
    """Run a few tiny known-answer cases for each key size of `feature`; return the failures,
    one line per failing key size (its first failing case, and how many more failed).

    Called by the registry when a backend registers; an empty list means the feature is offered.
    A key size with no vector to check it is a failure too: nothing untested is offered.
    A plugin family is checked with every vector its transforms brought (they are few), taken
    from `catalog` (the registry passes its own; default: none).
    """
    failures = []
    sizes: tuple[int | None, ...] = feature.key_bits or (None,)
    for key_bits in sizes:
        if feature.family in _BUILDERS:
            cases = _quick_cases(feature.family, key_bits)
        else:
            cases = tuple(c for c in _default_catalog(catalog).cases(feature.family)
                          if c.key_bits == key_bits or key_bits is None)
        cases = tuple(c for c in cases if feature.accepts_tag(getattr(c, "tag_bytes", None)))
        if not cases:
            what = f"{key_bits}-bit keys" if key_bits else "any key"
            failures.append(f"no known-answer vector for {feature.family} with {what}")
            continue
        failed = [(case, why) for case in cases if (why := case.run(backend)) is not None]
        if failed:
            case, why = failed[0]
            more = f" (and {len(failed) - 1} more of {len(cases)} cases)" if len(failed) > 1 else ""
            size = f"{key_bits}-bit key: " if key_bits else ""
            failures.append(f"{size}{case.id}: {why}{more}")
    return failures


# -- the full run -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Result:
    id: str
    family: str
    passed: bool
    detail: str = ""


def offers(features: Iterable[Feature], case: VectorCase) -> bool:
    """Whether a backend declaring `features` can be asked to compute `case`."""
    tag = getattr(case, "tag_bytes", None)
    return any(f.family == case.family and f.accepts(case.key_bits) and f.accepts_tag(tag)
               for f in features)


def run_all(backend: Backend, family: str | None = None, *, catalog=None) -> list[Result]:
    """Every packaged case (and every plugin transform's, from `catalog`) the backend can be
    asked to compute (by its declared features).

    Declared, not only offered: a feature that failed its quick check at registration still gets
    the full run, so `ipsec selftest` shows everything that is wrong with it.  Cases for families
    or key sizes the backend does not declare are left out.
    """
    features = list(backend.features())
    results = []
    for case in iter_cases(family, catalog=catalog):
        if not offers(features, case):
            continue
        why = case.run(backend)
        results.append(Result(case.id, case.family, why is None, why or ""))
    return results


# -- vectors brought by plugin transforms -----------------------------------------------------
def _vector_bytes(vector: Mapping[str, Any], name: str, where: str, *, default: bytes | None = None) -> bytes:
    value = vector.get(name)
    if value is None:
        if default is not None:
            return default
        raise ValueError(f"{where}: missing {name!r}")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        text = "".join(value.split()).replace(":", "").lower().removeprefix("0x")
        try:
            return bytes.fromhex(text)
        except ValueError:
            raise ValueError(f"{where}: {name!r} is not hex: {value[:40]!r}") from None
    raise ValueError(f"{where}: {name!r} must be a hex string or bytes, not {type(value).__name__}")


def cases_from_vectors(vectors: Sequence[Any], *, family: str, kind: str,
                       source: str) -> tuple[VectorCase, ...]:
    """A plugin transform's known-answer vectors as cases of `family`.

    Each vector is a `VectorCase` of that family, or a mapping with hex strings (or bytes):
    "id" and "key" always; for kind "cipher" "iv", "plaintext", "ciphertext" (valid cases only:
    a cipher has nothing to reject); for kind "aead" "nonce", "aad" (default empty),
    "plaintext", "ciphertext" (without the tag), "tag", and "valid" (default true; an invalid
    case must be rejected by `decrypt`).  Raises ValueError naming the vector that is wrong.
    """
    if isinstance(vectors, (str, bytes, Mapping)) or not isinstance(vectors, Iterable):
        raise ValueError("vectors must be a list of vectors")
    out: list[VectorCase] = []
    for number, vector in enumerate(vectors, start=1):
        where = f"vector {number}"
        if isinstance(vector, VectorCase):
            if vector.family != family:
                raise ValueError(f"{where} ({vector.id}) is for {vector.family}, not {family}")
            out.append(vector)
            continue
        if not isinstance(vector, Mapping):
            raise ValueError(f"{where} is a {type(vector).__name__}, not a mapping or a VectorCase")
        case_id = vector.get("id")
        if not isinstance(case_id, str) or not case_id:
            raise ValueError(f"{where} has no 'id' (name its source, e.g. 'rfc5528-tv1')")
        where = f"vector {case_id!r}"
        valid = vector.get("valid", True)
        if not isinstance(valid, bool):
            raise ValueError(f"{where}: 'valid' must be true or false")
        key = _vector_bytes(vector, "key", where)
        common = dict(id=case_id, family=family, key_bits=8 * len(key), source=source, valid=valid,
                      key=key)
        if kind == "cipher":
            if not valid:
                raise ValueError(f"{where}: a cipher vector cannot be invalid (nothing to reject)")
            out.append(CipherCase(iv=_vector_bytes(vector, "iv", where),
                                  plaintext=_vector_bytes(vector, "plaintext", where),
                                  ciphertext=_vector_bytes(vector, "ciphertext", where), **common))
        elif kind == "aead":
            tag = _vector_bytes(vector, "tag", where)
            if not tag:
                raise ValueError(f"{where}: empty tag")
            out.append(AeadCase(nonce=_vector_bytes(vector, "nonce", where),
                                aad=_vector_bytes(vector, "aad", where, default=b""),
                                plaintext=_vector_bytes(vector, "plaintext", where, default=b""),
                                ciphertext=_vector_bytes(vector, "ciphertext", where, default=b""),
                                tag=tag, tag_bytes=len(tag), **common))
        else:
            raise ValueError(f"vectors of kind {kind!r} are not supported (aead or cipher)")
    ids = [c.id for c in out]
    dup = next((i for i in ids if ids.count(i) > 1), None)
    if dup is not None:
        raise ValueError(f"vector id {dup!r} is used twice")
    return tuple(out)


__all__ = ["AeadCase", "CipherCase", "KeCase", "MacCase", "PrfCase", "Result", "SignatureCase",
           "VectorCase",
           "cases_from_vectors", "iter_cases", "load_vector_file", "offers", "quick_check", "run_all", "MAC_DIGEST_BYTES"]

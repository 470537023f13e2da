"""The transform catalogue: ESP encryption transforms added by plugins, next to the built-in ones.

Owns: checking an `EncrTransform` a plugin registers (id, name, keywords, sizes, kind, family,
vectors) before anything can use it, the keyword and id tables of the accepted ones, their
vectors as self-test cases, and the record of how each backend did on them.
Must not: decide which backend offers what, or touch packets.  The registry runs the vectors
against the backends and sets each transform's `state`; keywords, SA files, `ipsec selftest`,
`ipsec backends` and `ipsec perf` read the catalogue.

A transform is refused, with a reason naming the plugin, when it is malformed (sizes that break
an ESP rule the core enforces, an unknown kind), when its id or a keyword is a built-in one or
another plugin's, when it brings no known-answer vectors (or none for one of its key sizes), or
when its vectors fail on every backend that declares its family.  A transform whose family no
available backend declares stays known (its keywords parse) but an SA using it is refused with
"no available backend offers ...".
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Iterator

from ipsec_core.crypto.base import FeatureKind, family_kind, register_family
from ipsec_core.crypto.selftest import AeadCase, CipherCase, cases_from_vectors
from ipsec_core.transforms.keywords import is_builtin_keyword
from ipsec_core.transforms.iana import (PRIVATE_USE_MIN, TRANSFORM_ID_MAX, CipherKind, EncrId,
                                   EncrInfo, EncrTransform, PluginEncrId)

#: Transform states (`TransformRecord.state`).
OFFERED = "offered"            # an available backend passes its vectors
NO_BACKEND = "no-backend"      # no available backend declares its family: keywords parse, SAs fail
REFUSED = "refused"            # its vectors fail on every backend that declares its family
UNCHECKED = "unchecked"        # the registry runs without self-tests

_KEYWORD_RE = re.compile(r"[a-z][a-z0-9_]*")
_NAME_RE = re.compile(r"[A-Z][A-Z0-9_]*")


@dataclass
class TransformRecord:
    """One accepted plugin transform, what its vectors gave on each backend, and its state."""

    spec: EncrTransform
    plugin: str
    id: PluginEncrId
    cases: tuple = ()
    state: str = NO_BACKEND
    reason: str | None = None
    #: backend name -> key bits -> None (passed) or the first failure, for the sizes it declares
    results: dict[str, dict[int, str | None]] = field(default_factory=dict)

    @property
    def info(self) -> EncrInfo:
        return self.id.info

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def family(self) -> str:
        return self.spec.family

    @property
    def usable(self) -> bool:
        """Whether SA files and proposals may use it (a backend is still needed to install)."""
        return self.state != REFUSED

    def keywords(self) -> list[str]:
        """Its keywords, the canonical one of each key size first."""
        return list(self.spec.keywords)


@dataclass
class RefusedTransform:
    """A transform refused when it was registered (never entered the tables)."""

    spec: object
    plugin: str
    reason: str

    @property
    def name(self) -> str:
        return getattr(self.spec, "name", None) or repr(self.spec)


class TransformCatalog:
    """The plugin transforms of one registry.  Built-in transforms are not stored here: they stay
    in `ipsec_core.transforms.iana.ENCR_INFO` and `ipsec_core.transforms.keywords`."""

    def __init__(self) -> None:
        self.records: dict[int, TransformRecord] = {}
        self.refused: list[RefusedTransform] = []
        self._keywords: dict[str, tuple[TransformRecord, int]] = {}

    # -- registration ---------------------------------------------------------------------
    def add(self, spec: EncrTransform, *, plugin: str) -> TransformRecord | RefusedTransform:
        """Check and accept one transform; a refused one is returned as `RefusedTransform`."""
        try:
            record = self._accept(spec, plugin)
        except ValueError as exc:
            reason = str(exc)
            name = getattr(spec, "name", None)
            if isinstance(name, str) and reason.startswith(f"{name}: "):
                reason = reason[len(name) + 2:]       # the registry's message names it already
            refused = RefusedTransform(spec, plugin, reason)
            self.refused.append(refused)
            return refused
        self.records[int(record.id)] = record
        for keyword, bits in spec.keywords.items():
            self._keywords[keyword] = (record, bits)
        return record

    def _accept(self, spec: EncrTransform, plugin: str) -> TransformRecord:
        if not isinstance(spec, EncrTransform):
            raise ValueError(f"registered {spec!r}, which is not an ipsec_core.transforms.iana.EncrTransform")
        what = f"{spec.name}" if isinstance(spec.name, str) else repr(spec.name)
        if not isinstance(spec.name, str) or not _NAME_RE.fullmatch(spec.name):
            raise ValueError(f"transform name {spec.name!r} must look like ENCR_CAMELLIA_CBC")
        value = spec.id
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= TRANSFORM_ID_MAX:
            raise ValueError(f"{what}: transform id {value!r} must be an integer 1..{TRANSFORM_ID_MAX} "
                             f"(IANA, or {PRIVATE_USE_MIN} and up for private use)")
        if value in EncrId._value2member_map_:
            raise ValueError(f"{what}: transform id {value} is the built-in {EncrId(value).name}")
        if value in self.records:
            other = self.records[value]
            raise ValueError(f"{what}: transform id {value} is already registered by plugin "
                             f"{other.plugin} ({other.name})")
        kind = spec.kind.value if isinstance(spec.kind, CipherKind) else spec.kind
        if kind not in ("aead", "cipher"):
            raise ValueError(f"{what}: kind {spec.kind!r} must be 'aead' or 'cipher'")
        feature_kind = FeatureKind(kind)
        if not isinstance(spec.family, str) or not spec.family:
            raise ValueError(f"{what}: family must name the primitive family, e.g. 'camellia-cbc'")
        known = family_kind(spec.family)
        if known is not None and known is not feature_kind:
            raise ValueError(f"{what}: family {spec.family!r} is of kind {known.value}, not {kind}")
        key_bits = tuple(spec.key_bits) if isinstance(spec.key_bits, (tuple, list)) else ()
        if not key_bits or any(isinstance(b, bool) or not isinstance(b, int) or b <= 0 or b % 8
                               for b in key_bits) or len(set(key_bits)) != len(key_bits):
            raise ValueError(f"{what}: key_bits {spec.key_bits!r} must be distinct positive "
                             "multiples of 8, e.g. (128, 192, 256)")
        self._check_sizes(spec, kind, what)
        self._check_keywords(spec, key_bits, what)
        cases = self._cases(spec, kind, key_bits, plugin, what)
        register_family(spec.family, feature_kind)
        cipher_kind = CipherKind.AEAD if kind == "aead" else CipherKind.CIPHER
        pid = PluginEncrId(value, spec.name, transform=spec, plugin=plugin)
        pid.info = EncrInfo(pid, cipher_kind, key_bits, spec.salt_bytes, spec.iv_bytes,
                            spec.block_bytes, spec.icv_bytes, spec.family, counter=spec.counter)
        return TransformRecord(spec, plugin, pid, cases)

    @staticmethod
    def _check_sizes(spec: EncrTransform, kind: str, what: str) -> None:
        """The ESP rules the core enforces, as sizes.  Why each: the core builds the nonce or
        counter block from salt || sequence number, pads to `block_bytes`, and keeps the ICV
        (and so the packet) 4-byte aligned (RFC 4303 2.4)."""
        sizes = dict(iv_bytes=spec.iv_bytes, block_bytes=spec.block_bytes,
                     salt_bytes=spec.salt_bytes, icv_bytes=spec.icv_bytes)
        for name, v in sizes.items():
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{what}: {name} must be a non-negative integer, not {v!r}")
        iv, block, salt, icv = spec.iv_bytes, spec.block_bytes, spec.salt_bytes, spec.icv_bytes
        if kind == "aead":
            if spec.counter:
                raise ValueError(f"{what}: 'counter' is for ciphers; an AEAD builds its own counter")
            if iv != 8 or block != 4:
                raise ValueError(f"{what}: an AEAD transform has an 8-byte IV (the core puts the "
                                 f"64-bit sequence number there) and 4-byte alignment, not iv_bytes "
                                 f"{iv} / block_bytes {block}")
            if not 4 <= icv <= 64 or icv % 4:
                raise ValueError(f"{what}: icv_bytes {icv} must be a multiple of 4 in 4..64")
            if salt > 8:
                raise ValueError(f"{what}: salt_bytes {salt} is more than 8")
            return
        if icv:
            raise ValueError(f"{what}: a cipher has no ICV (integrity is a separate transform); "
                             f"icv_bytes must be 0, not {icv}")
        if spec.counter:
            if (iv, block, salt) != (8, 4, 4):
                raise ValueError(f"{what}: a counter-mode cipher takes the RFC 3686 layout: "
                                 f"iv_bytes 8, block_bytes 4, salt_bytes 4 (got {iv}/{block}/{salt})")
            return
        if salt:
            raise ValueError(f"{what}: a CBC-like cipher takes no salt (salt_bytes {salt})")
        if block < 8 or block % 4 or iv != block:
            raise ValueError(f"{what}: a CBC-like cipher has a random IV of one block and a block "
                             f"of 8 bytes or more, a multiple of 4 (got iv_bytes {iv}, "
                             f"block_bytes {block})")

    def _check_keywords(self, spec: EncrTransform, key_bits: tuple[int, ...], what: str) -> None:

        keywords = spec.keywords
        if not hasattr(keywords, "items") or not keywords:
            raise ValueError(f"{what}: keywords must map each proposal keyword to its key size, "
                             "e.g. {'camellia128': 128}")
        for keyword, bits in keywords.items():
            if not isinstance(keyword, str) or not _KEYWORD_RE.fullmatch(keyword):
                raise ValueError(f"{what}: keyword {keyword!r} must be lower-case letters, digits "
                                 "or '_', starting with a letter")
            if is_builtin_keyword(keyword):
                raise ValueError(f"{what}: keyword {keyword!r} is a built-in one")
            if keyword in self._keywords:
                other = self._keywords[keyword][0]
                raise ValueError(f"{what}: keyword {keyword!r} is already registered by plugin "
                                 f"{other.plugin} ({other.name})")
            if bits not in key_bits:
                raise ValueError(f"{what}: keyword {keyword!r} says {bits}-bit keys, not one of "
                                 f"{key_bits}")
        missing = [b for b in key_bits if b not in keywords.values()]
        if missing:
            raise ValueError(f"{what}: no keyword for {missing[0]}-bit keys")

    def _cases(self, spec: EncrTransform, kind: str, key_bits: tuple[int, ...], plugin: str,
               what: str) -> tuple:

        if not spec.vectors:
            raise ValueError(f"{what}: no known-answer vectors; a transform must bring vectors "
                             "for each key size (EncrTransform.vectors)")
        try:
            cases = cases_from_vectors(spec.vectors, family=spec.family, kind=kind,
                                       source=f"plugin {plugin} ({spec.name})")
        except ValueError as exc:
            raise ValueError(f"{what}: bad vectors: {exc}") from None
        for case in cases:
            if case.key_bits not in key_bits:
                raise ValueError(f"{what}: vector {case.id!r} has a {case.key_bits}-bit key, not one "
                                 f"of {key_bits}")
        for bits in key_bits:
            valid = [c for c in cases if c.key_bits == bits and c.valid]
            if not valid:
                raise ValueError(f"{what}: no valid known-answer vector with a {bits}-bit key")
            if kind == "aead":
                esp = [c for c in valid if isinstance(c, AeadCase) and c.tag_bytes == spec.icv_bytes
                       and len(c.nonce) == spec.salt_bytes + spec.iv_bytes]
                if not esp:
                    raise ValueError(f"{what}: no valid vector with a {bits}-bit key, a "
                                     f"{spec.icv_bytes}-byte tag and a "
                                     f"{spec.salt_bytes + spec.iv_bytes}-byte nonce (what ESP uses)")
            else:
                iv_len = 16 if spec.counter else spec.iv_bytes
                for c in valid:
                    if not isinstance(c, CipherCase) or len(c.iv) != iv_len:
                        raise ValueError(f"{what}: vector {c.id!r} needs a {iv_len}-byte iv"
                                         + (" (the whole counter block)" if spec.counter else ""))
                    if not spec.counter and len(c.plaintext) % spec.block_bytes:
                        raise ValueError(f"{what}: vector {c.id!r}: data must be whole "
                                         f"{spec.block_bytes}-byte blocks")
        for other in self.records.values():
            if other.family != spec.family:
                continue
            theirs = {c.id: replace(c, source="") for c in other.cases}
            for case in cases:
                if case.id in theirs and theirs[case.id] != replace(case, source=""):
                    raise ValueError(f"{what}: vector id {case.id!r} is also a different vector of "
                                     f"{other.name} (plugin {other.plugin})")
        return cases

    # -- lookups ---------------------------------------------------------------------------
    def keyword(self, token: str) -> tuple[TransformRecord, int] | None:
        """(record, key bits) of a plugin keyword, or None."""
        return self._keywords.get(token)

    def by_id(self, value: int) -> TransformRecord | None:
        return self.records.get(int(value))

    def __iter__(self) -> Iterator[TransformRecord]:
        return iter(self.records.values())

    def __len__(self) -> int:
        return len(self.records)

    def of_family(self, family: str) -> list[TransformRecord]:
        return [r for r in self.records.values() if r.family == family]

    def families(self) -> list[str]:
        """Families that plugin transforms brought vectors for, in registration order."""
        out: list[str] = []
        for r in self.records.values():
            if r.family not in out:
                out.append(r.family)
        return out

    def cases(self, family: str) -> tuple:
        """Every vector the transforms of `family` brought (each id once)."""
        seen: dict[str, object] = {}
        for r in self.of_family(family):
            for case in r.cases:
                seen.setdefault(case.id, case)
        return tuple(seen.values())


__all__ = ["NO_BACKEND", "OFFERED", "REFUSED", "UNCHECKED", "RefusedTransform", "TransformCatalog",
           "TransformRecord"]

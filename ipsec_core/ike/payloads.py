"""IKEv2 message and payload codecs (RFC 7296 sections 3.1-3.16, RFC 7383 section 2.5).

Owns: the byte layout of the IKE header, of the generic payload header and its chain, and of
every payload body; the checks that make a datagram well formed (lengths, counts, "last
substructure" markers, minimum and maximum sizes, the major version); the errors a malformed
datagram raises, each carrying the Notify type to answer with.
Must not: do crypto or hold state.  The Encrypted (SK) and Encrypted Fragment (SKF) payloads stay
opaque here (IV || ciphertext || ICV): the caller decrypts and hands the plaintext back to
`parse_payloads` with the SK header's first inner payload type.  Whether a payload is allowed in
a given exchange, and what the numbers inside it mean, is decided above this module.

Style follows aioquic's `packet.py`: `pull_*` reads from a buffer, `push_*` writes bytes.  Every
payload class has `encode_body()` (the bytes after the generic header) and `decode_body(body)`.
For any input bytes the decoders raise only `IkeSyntaxError`, `InvalidMajorVersion` or
`UnsupportedCriticalPayload`; building a payload from out-of-range values raises
`InvalidPayloadValue` (a local error: fix the caller).
"""
from __future__ import annotations

import dataclasses
import ipaddress
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Union

from ipsec_core.errors import IpsecError, LocalError
from ipsec_core.ike.constants import (ATTRIBUTE_FORMAT_TV, ATTRIBUTE_KEY_LENGTH,
                                      GENERIC_PAYLOAD_HEADER_BYTES, IKE_HEADER_BYTES,
                                      IKEV2_VERSION, NONCE_MAX_BYTES, NONCE_MIN_BYTES,
                                      PAYLOAD_CRITICAL, AuthMethod, CertEncoding, ExchangeType,
                                      IdType, IkeFlags, NotifyType, PayloadType, ProtocolId,
                                      TransformType, TsType)

_IKE_HEADER = struct.Struct("!8s8sBBBBII")
_GENERIC = struct.Struct("!BBH")
IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]


# --- errors -------------------------------------------------------------------------------------

class RemoteIkeError(IpsecError):
    """The peer sent something IKE cannot accept.  `notify` is the Notify type to answer with
    (None: answer nothing), `data` its Notification Data."""

    notify: int | None = None

    def __init__(self, message: str, *, data: bytes = b""):
        super().__init__(message)
        self.data = data


class IkeSyntaxError(RemoteIkeError):
    """A datagram or payload is malformed; the message names the payload and the offset."""

    notify = NotifyType.INVALID_SYNTAX


class InvalidMajorVersion(RemoteIkeError):
    """The header's major version is not 2 (RFC 7296 2.5: drop, may answer with our version)."""

    notify = NotifyType.INVALID_MAJOR_VERSION

    def __init__(self, message: str, *, version: int):
        super().__init__(message)
        self.version = version


class UnsupportedCriticalPayload(RemoteIkeError):
    """An unknown payload type had the Critical bit set (RFC 7296 2.5); the Notify data is the
    one-octet payload type."""

    notify = NotifyType.UNSUPPORTED_CRITICAL_PAYLOAD

    def __init__(self, message: str, *, payload_type: int):
        super().__init__(message, data=bytes([payload_type]))
        self.payload_type = payload_type


class InvalidPayloadValue(LocalError):
    """A payload or message was built with a value that does not fit its field."""


# --- buffer -------------------------------------------------------------------------------------

class Buffer:
    """A read cursor over `data[pos:end]`; a short read raises IkeSyntaxError naming `where` and
    the offset in the payload body, so no decoder needs its own length arithmetic."""

    __slots__ = ("data", "pos", "end", "where")

    def __init__(self, data: bytes, where: str, *, pos: int = 0, end: int | None = None):
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else end
        self.where = where

    def error(self, message: str) -> IkeSyntaxError:
        return IkeSyntaxError(f"{self.where}: {message}")

    def left(self) -> int:
        return self.end - self.pos

    def pull_bytes(self, size: int, what: str) -> bytes:
        if size > self.left():
            raise self.error(f"{what} needs {size} bytes at body offset {self.pos}, "
                             f"{self.left()} left")
        self.pos += size
        return self.data[self.pos - size:self.pos]

    def pull_uint8(self, what: str) -> int:
        return self.pull_bytes(1, what)[0]

    def pull_uint16(self, what: str) -> int:
        return int.from_bytes(self.pull_bytes(2, what), "big")

    def pull_rest(self) -> bytes:
        return self.pull_bytes(self.left(), "rest")

    def pull_substructure(self, *, start: int, length: int, minimum: int, what: str) -> Buffer:
        """A cursor over the substructure that began at `start` (its length field just read),
        placed after the bytes already read; this cursor moves past the whole substructure."""
        if length < minimum:
            raise self.error(f"{what} Length {length} at body offset {start} is under {minimum}")
        if start + length > self.end:
            raise self.error(f"{what} Length {length} at body offset {start} runs past the "
                             f"{self.end - start} bytes left")
        self.pos = start + length
        return Buffer(self.data, f"{self.where}, {what.lower()} at body offset {start}",
                      pos=start + 4, end=start + length)

    def expect_end(self) -> None:
        if self.left():
            raise self.error(f"{self.left()} unexpected bytes at body offset {self.pos}")


# --- field checks (run in __post_init__, so decoders and callers share them) --------------------

def _uint(value: object, bits: int, what: str) -> None:
    if type(value) is bool or not isinstance(value, int) or not 0 <= value < 1 << bits:
        raise InvalidPayloadValue(f"{what} must be an unsigned {bits}-bit integer, got {value!r}")


def _octets(value: object, what: str, *, sizes: Sequence[int] | None = None, min_len: int = 0,
            max_len: int = 0xFFFF) -> None:
    if not isinstance(value, bytes):
        raise InvalidPayloadValue(f"{what} must be bytes, got {type(value).__name__}")
    if sizes is not None and len(value) not in sizes:
        raise InvalidPayloadValue(f"{what} must be {' or '.join(map(str, sizes))} bytes, "
                                  f"got {len(value)}")
    if not min_len <= len(value) <= max_len:
        raise InvalidPayloadValue(f"{what} must be {min_len} to {max_len} bytes, "
                                  f"got {len(value)}")


def _length16(length: int, what: str) -> int:
    if length > 0xFFFF:
        raise InvalidPayloadValue(f"{what} would be {length} bytes, over what a 16-bit Length "
                                  "can say")
    return length


def _tuple(obj: object, name: str, item_type: type | tuple[type, ...]) -> None:
    """Store a sequence field as a tuple, so equality and hashing work whatever was passed."""
    items = tuple(getattr(obj, name))
    for item in items:
        if not isinstance(item, item_type):
            raise InvalidPayloadValue(f"{name} holds a {type(item).__name__}")
    object.__setattr__(obj, name, items)


def _enum(enum_type, value: int):
    """The enum member for a known value, the plain int otherwise (unknown numbers travel on)."""
    try:
        return enum_type(value)
    except ValueError:
        return value


def _type_name(payload_type: int) -> str:
    try:
        return PayloadType(payload_type).name
    except ValueError:
        return f"payload type {payload_type}"


# --- payloads -----------------------------------------------------------------------------------

class _Payload:
    __slots__ = ()
    payload_type: ClassVar[int]

    @classmethod
    def decode_body(cls, body: bytes):
        """Decode the bytes after the generic payload header."""
        return _decode(cls, Buffer(bytes(body), f"{cls.__name__}"))

    def encode_body(self) -> bytes:
        raise NotImplementedError


def _decode(cls, buf: Buffer):
    try:
        return cls._pull(buf)
    except InvalidPayloadValue as exc:
        raise buf.error(str(exc)) from None


@dataclass(frozen=True, slots=True)
class TransformAttribute:
    """A transform attribute: an int value is sent in TV form, a bytes value in TLV form."""

    attribute_type: int
    value: int | bytes

    def __post_init__(self):
        _uint(self.attribute_type, 15, "attribute type")
        if isinstance(self.value, bytes):
            _octets(self.value, "TLV attribute value")
        else:
            _uint(self.value, 16, "TV attribute value")


@dataclass(frozen=True, slots=True)
class Transform:
    """RFC 7296 3.3.2.  `key_length` (bits) is the Key Length attribute, sent first and in TV
    form (3.3.5); any other attribute stays in `attributes` so the proposal logic can refuse
    the transform."""

    transform_type: int
    transform_id: int
    key_length: int | None = None
    attributes: tuple[TransformAttribute, ...] = ()

    def __post_init__(self):
        _uint(self.transform_type, 8, "Transform Type")
        _uint(self.transform_id, 16, "Transform ID")
        if self.key_length is not None:
            _uint(self.key_length, 16, "Key Length")
        _tuple(self, "attributes", TransformAttribute)
        if any(a.attribute_type == ATTRIBUTE_KEY_LENGTH for a in self.attributes):
            raise InvalidPayloadValue("Key Length goes in key_length, not in attributes")


@dataclass(frozen=True, slots=True)
class Proposal:
    """RFC 7296 3.3.1.  `spi` is empty (IKE_SA_INIT), 4 bytes (ESP, AH) or 8 bytes (IKE rekey)."""

    number: int
    protocol_id: int
    spi: bytes
    transforms: tuple[Transform, ...]

    def __post_init__(self):
        _uint(self.number, 8, "Proposal Num")
        _uint(self.protocol_id, 8, "Protocol ID")
        _octets(self.spi, "proposal SPI", sizes=(0, 4, 8))
        _tuple(self, "transforms", Transform)
        if len(self.transforms) > 255:
            raise InvalidPayloadValue(f"{len(self.transforms)} transforms, at most 255 fit")


def _push_transform(transform: Transform, *, last: bool) -> bytes:
    attributes = list(transform.attributes)
    if transform.key_length is not None:
        attributes.insert(0, TransformAttribute(ATTRIBUTE_KEY_LENGTH, transform.key_length))
    encoded = b"".join(
        struct.pack("!HH", ATTRIBUTE_FORMAT_TV | a.attribute_type, a.value)
        if isinstance(a.value, int)
        else struct.pack("!HH", a.attribute_type, len(a.value)) + a.value
        for a in attributes)
    return struct.pack("!BBHBBH", 0 if last else 3, 0, _length16(8 + len(encoded), "Transform"),
                       transform.transform_type, 0, transform.transform_id) + encoded


def _pull_transform(buf: Buffer, *, last: bool) -> Transform:
    start = buf.pos
    more = buf.pull_uint8("transform Last Substruc")
    if more != (0 if last else 3):
        raise buf.error(f"transform Last Substruc {more} at body offset {start}, "
                        f"expected {0 if last else 3} by Num Transforms")
    buf.pull_uint8("transform RESERVED")
    length = buf.pull_uint16("Transform Length")
    inner = buf.pull_substructure(start=start, length=length, minimum=8, what="Transform")
    transform_type = _enum(TransformType, inner.pull_uint8("Transform Type"))
    inner.pull_uint8("transform RESERVED")
    transform_id = inner.pull_uint16("Transform ID")
    key_length, attributes = None, []
    while inner.left():
        kind = inner.pull_uint16("attribute type")
        if kind & ATTRIBUTE_FORMAT_TV:
            kind &= ~ATTRIBUTE_FORMAT_TV
            value: int | bytes = inner.pull_uint16("TV attribute value")
        else:
            value = inner.pull_bytes(inner.pull_uint16("attribute length"), "TLV attribute")
        if kind == ATTRIBUTE_KEY_LENGTH:
            if not isinstance(value, int) or key_length is not None:
                raise inner.error("Key Length attribute must appear once, in TV form")
            key_length = value
        else:
            attributes.append(TransformAttribute(kind, value))
    return Transform(transform_type, transform_id, key_length, tuple(attributes))


@dataclass(frozen=True, slots=True)
class SaPayload(_Payload):
    payload_type: ClassVar[int] = PayloadType.SA
    proposals: tuple[Proposal, ...]

    def __post_init__(self):
        _tuple(self, "proposals", Proposal)
        if not self.proposals:
            raise InvalidPayloadValue("an SA payload needs at least one proposal")

    def encode_body(self) -> bytes:
        out = bytearray()
        for i, proposal in enumerate(self.proposals):
            count = len(proposal.transforms)
            transforms = b"".join(_push_transform(t, last=j == count - 1)
                                  for j, t in enumerate(proposal.transforms))
            length = _length16(8 + len(proposal.spi) + len(transforms), "Proposal")
            out += struct.pack("!BBHBBBB", 0 if i == len(self.proposals) - 1 else 2, 0, length,
                               proposal.number, proposal.protocol_id, len(proposal.spi), count)
            out += proposal.spi + transforms
        return bytes(out)

    @classmethod
    def _pull(cls, buf: Buffer) -> SaPayload:
        proposals, more = [], 2
        while more:
            start = buf.pos
            more = buf.pull_uint8("proposal Last Substruc")
            if more not in (0, 2):
                raise buf.error(f"proposal Last Substruc {more} at body offset {start}, "
                                "expected 0 or 2")
            buf.pull_uint8("proposal RESERVED")
            length = buf.pull_uint16("Proposal Length")
            inner = buf.pull_substructure(start=start, length=length, minimum=8, what="Proposal")
            number = inner.pull_uint8("Proposal Num")
            protocol_id = _enum(ProtocolId, inner.pull_uint8("Protocol ID"))
            spi_size = inner.pull_uint8("SPI Size")
            if spi_size not in (0, 4, 8):
                raise inner.error(f"SPI Size {spi_size} at body offset {inner.pos - 1}, "
                                  "expected 0, 4 or 8")
            count = inner.pull_uint8("Num Transforms")
            spi = inner.pull_bytes(spi_size, "SPI")
            transforms = tuple(_pull_transform(inner, last=j == count - 1) for j in range(count))
            inner.expect_end()
            proposals.append(Proposal(number, protocol_id, spi, transforms))
        buf.expect_end()
        return cls(tuple(proposals))


@dataclass(frozen=True, slots=True)
class KePayload(_Payload):
    """Key Exchange (RFC 7296 3.4); `group` is the Diffie-Hellman Group Num (a KE method)."""

    payload_type: ClassVar[int] = PayloadType.KE
    group: int
    data: bytes

    def __post_init__(self):
        _uint(self.group, 16, "DH Group Num")
        _octets(self.data, "Key Exchange Data")

    def encode_body(self) -> bytes:
        return struct.pack("!HH", self.group, 0) + self.data

    @classmethod
    def _pull(cls, buf: Buffer) -> KePayload:
        group = buf.pull_uint16("DH Group Num")
        buf.pull_bytes(2, "RESERVED")
        return cls(group, buf.pull_rest())


@dataclass(frozen=True, slots=True)
class NoncePayload(_Payload):
    """Ni / Nr (RFC 7296 3.9): 16 to 256 octets."""

    payload_type: ClassVar[int] = PayloadType.NONCE
    nonce: bytes

    def __post_init__(self):
        _octets(self.nonce, "Nonce Data", min_len=NONCE_MIN_BYTES, max_len=NONCE_MAX_BYTES)

    def encode_body(self) -> bytes:
        return self.nonce

    @classmethod
    def _pull(cls, buf: Buffer) -> NoncePayload:
        return cls(buf.pull_rest())


@dataclass(frozen=True, slots=True)
class IdPayload(_Payload):
    """IDi / IDr (RFC 7296 3.5); build an `IdiPayload` or `IdrPayload`.  `encode_body()` is the
    RestOfIDPayload that the AUTH octets cover."""

    id_type: int
    data: bytes

    def __post_init__(self):
        _uint(self.id_type, 8, "ID Type")
        _octets(self.data, "Identification Data")
        if self.id_type in (IdType.IPV4_ADDR, IdType.IPV6_ADDR):
            _octets(self.data, f"{IdType(self.id_type).name} identification",
                    sizes=(4 if self.id_type == IdType.IPV4_ADDR else 16,))

    @classmethod
    def fqdn(cls, name: str):
        return cls(IdType.FQDN, name.encode("ascii"))

    @classmethod
    def rfc822(cls, address: str):
        return cls(IdType.RFC822_ADDR, address.encode("utf-8"))

    @classmethod
    def ip(cls, address: str | IPAddress):
        address = ipaddress.ip_address(address)
        kind = IdType.IPV4_ADDR if address.version == 4 else IdType.IPV6_ADDR
        return cls(kind, address.packed)

    def __str__(self) -> str:
        if self.id_type in (IdType.FQDN, IdType.RFC822_ADDR):
            return self.data.decode("utf-8", "backslashreplace")
        if self.id_type in (IdType.IPV4_ADDR, IdType.IPV6_ADDR):
            return str(ipaddress.ip_address(self.data))
        return f"{_enum(IdType, self.id_type)!r}:{self.data.hex()}"

    def encode_body(self) -> bytes:
        return bytes([self.id_type, 0, 0, 0]) + self.data

    @classmethod
    def _pull(cls, buf: Buffer):
        id_type = _enum(IdType, buf.pull_uint8("ID Type"))
        buf.pull_bytes(3, "RESERVED")
        return cls(id_type, buf.pull_rest())


@dataclass(frozen=True, slots=True)
class IdiPayload(IdPayload):
    payload_type: ClassVar[int] = PayloadType.IDi


@dataclass(frozen=True, slots=True)
class IdrPayload(IdPayload):
    payload_type: ClassVar[int] = PayloadType.IDr


@dataclass(frozen=True, slots=True)
class AuthPayload(_Payload):
    """RFC 7296 3.8.  For method 14 (RFC 7427) `data` starts with the AlgorithmIdentifier."""

    payload_type: ClassVar[int] = PayloadType.AUTH
    method: int
    data: bytes

    def __post_init__(self):
        _uint(self.method, 8, "Auth Method")
        _octets(self.data, "Authentication Data")

    def encode_body(self) -> bytes:
        return bytes([self.method, 0, 0, 0]) + self.data

    @classmethod
    def _pull(cls, buf: Buffer) -> AuthPayload:
        method = _enum(AuthMethod, buf.pull_uint8("Auth Method"))
        buf.pull_bytes(3, "RESERVED")
        return cls(method, buf.pull_rest())


@dataclass(frozen=True, slots=True)
class TrafficSelector:
    """RFC 7296 3.13.1; the TS Type follows from the address family."""

    start_address: IPAddress
    end_address: IPAddress
    ip_protocol: int = 0
    start_port: int = 0
    end_port: int = 0xFFFF

    def __post_init__(self):
        for name in ("start_address", "end_address"):
            if not isinstance(getattr(self, name), (ipaddress.IPv4Address, ipaddress.IPv6Address)):
                raise InvalidPayloadValue(f"{name} must be an ipaddress IPv4Address/IPv6Address")
        if self.start_address.version != self.end_address.version:
            raise InvalidPayloadValue("start and end address of a selector differ in family")
        _uint(self.ip_protocol, 8, "IP Protocol ID")
        _uint(self.start_port, 16, "Start Port")
        _uint(self.end_port, 16, "End Port")

    @classmethod
    def for_network(cls, network: str, *, ip_protocol: int = 0, start_port: int = 0,
                    end_port: int = 0xFFFF) -> TrafficSelector:
        net = ipaddress.ip_network(network)
        return cls(net.network_address, net.broadcast_address, ip_protocol, start_port, end_port)

    @property
    def ts_type(self) -> TsType:
        return TsType.TS_IPV4_ADDR_RANGE if self.start_address.version == 4 \
            else TsType.TS_IPV6_ADDR_RANGE


@dataclass(frozen=True, slots=True)
class TsPayload(_Payload):
    """TSi / TSr (RFC 7296 3.13); build a `TsiPayload` or `TsrPayload`."""

    selectors: tuple[TrafficSelector, ...]

    def __post_init__(self):
        _tuple(self, "selectors", TrafficSelector)
        if len(self.selectors) > 255:
            raise InvalidPayloadValue(f"{len(self.selectors)} selectors, at most 255 fit")

    def encode_body(self) -> bytes:
        out = bytearray([len(self.selectors), 0, 0, 0])
        for ts in self.selectors:
            out += struct.pack("!BBHHH", ts.ts_type, ts.ip_protocol,
                               8 + 2 * len(ts.start_address.packed), ts.start_port, ts.end_port)
            out += ts.start_address.packed + ts.end_address.packed
        return bytes(out)

    @classmethod
    def _pull(cls, buf: Buffer):
        count = buf.pull_uint8("Number of TSs")
        buf.pull_bytes(3, "RESERVED")
        selectors = []
        for _ in range(count):
            start = buf.pos
            ts_type = buf.pull_uint8("TS Type")
            ip_protocol = buf.pull_uint8("IP Protocol ID")
            length = buf.pull_uint16("Selector Length")
            if ts_type not in (TsType.TS_IPV4_ADDR_RANGE, TsType.TS_IPV6_ADDR_RANGE):
                raise buf.error(f"unsupported TS Type {ts_type} at body offset {start}")
            size = 4 if ts_type == TsType.TS_IPV4_ADDR_RANGE else 16
            if length != 8 + 2 * size:
                raise buf.error(f"Selector Length {length} at body offset {start}, "
                                f"{TsType(ts_type).name} needs {8 + 2 * size}")
            start_port = buf.pull_uint16("Start Port")
            end_port = buf.pull_uint16("End Port")
            first = ipaddress.ip_address(buf.pull_bytes(size, "Starting Address"))
            last = ipaddress.ip_address(buf.pull_bytes(size, "Ending Address"))
            selectors.append(TrafficSelector(first, last, ip_protocol, start_port, end_port))
        buf.expect_end()
        return cls(tuple(selectors))


@dataclass(frozen=True, slots=True)
class TsiPayload(TsPayload):
    payload_type: ClassVar[int] = PayloadType.TSi


@dataclass(frozen=True, slots=True)
class TsrPayload(TsPayload):
    payload_type: ClassVar[int] = PayloadType.TSr


@dataclass(frozen=True, slots=True)
class NotifyPayload(_Payload):
    """RFC 7296 3.10.  With an empty `spi`, `protocol_id` is 0 on the wire and meaningless."""

    payload_type: ClassVar[int] = PayloadType.NOTIFY
    notify_type: int
    data: bytes = b""
    protocol_id: int = 0
    spi: bytes = b""

    def __post_init__(self):
        _uint(self.notify_type, 16, "Notify Message Type")
        _uint(self.protocol_id, 8, "Protocol ID")
        _octets(self.spi, "notify SPI", max_len=255)
        _octets(self.data, "Notification Data")

    def encode_body(self) -> bytes:
        return (struct.pack("!BBH", self.protocol_id, len(self.spi), self.notify_type)
                + self.spi + self.data)

    @classmethod
    def _pull(cls, buf: Buffer) -> NotifyPayload:
        protocol_id = _enum(ProtocolId, buf.pull_uint8("Protocol ID"))
        spi_size = buf.pull_uint8("SPI Size")
        notify_type = _enum(NotifyType, buf.pull_uint16("Notify Message Type"))
        spi = buf.pull_bytes(spi_size, "SPI")
        return cls(notify_type, buf.pull_rest(), protocol_id, spi)


@dataclass(frozen=True, slots=True)
class DeletePayload(_Payload):
    """RFC 7296 3.11: SPI Size 0 for the IKE SA, 4 for ESP / AH."""

    payload_type: ClassVar[int] = PayloadType.DELETE
    protocol_id: int
    spi_size: int = 0
    spis: tuple[bytes, ...] = ()

    def __post_init__(self):
        _uint(self.protocol_id, 8, "Protocol ID")
        _uint(self.spi_size, 8, "SPI Size")
        _tuple(self, "spis", bytes)
        for spi in self.spis:
            _octets(spi, "deleted SPI", sizes=(self.spi_size,))
        _uint(len(self.spis), 16, "Num of SPIs")

    def encode_body(self) -> bytes:
        return struct.pack("!BBH", self.protocol_id, self.spi_size, len(self.spis)) \
            + b"".join(self.spis)

    @classmethod
    def _pull(cls, buf: Buffer) -> DeletePayload:
        protocol_id = _enum(ProtocolId, buf.pull_uint8("Protocol ID"))
        spi_size = buf.pull_uint8("SPI Size")
        count = buf.pull_uint16("Num of SPIs")
        spis = tuple(buf.pull_bytes(spi_size, "SPI") for _ in range(count))
        buf.expect_end()
        return cls(protocol_id, spi_size, spis)


@dataclass(frozen=True, slots=True)
class _OpaquePayload(_Payload):
    data: bytes

    def __post_init__(self):
        _octets(self.data, f"{type(self).__name__} data")

    def encode_body(self) -> bytes:
        return self.data

    @classmethod
    def _pull(cls, buf: Buffer):
        return cls(buf.pull_rest())


@dataclass(frozen=True, slots=True)
class VendorIdPayload(_OpaquePayload):
    payload_type: ClassVar[int] = PayloadType.VENDOR_ID


@dataclass(frozen=True, slots=True)
class CpPayload(_OpaquePayload):
    """Configuration (RFC 7296 3.15), kept whole: CFG Type, RESERVED and attributes."""

    payload_type: ClassVar[int] = PayloadType.CP


@dataclass(frozen=True, slots=True)
class EapPayload(_OpaquePayload):
    payload_type: ClassVar[int] = PayloadType.EAP


@dataclass(frozen=True, slots=True)
class CertPayload(_Payload):
    payload_type: ClassVar[int] = PayloadType.CERT
    encoding: int
    data: bytes

    def __post_init__(self):
        _uint(self.encoding, 8, "Cert Encoding")
        _octets(self.data, "Certificate Data")

    def encode_body(self) -> bytes:
        return bytes([self.encoding]) + self.data

    @classmethod
    def _pull(cls, buf: Buffer):
        return cls(_enum(CertEncoding, buf.pull_uint8("Cert Encoding")), buf.pull_rest())


@dataclass(frozen=True, slots=True)
class CertReqPayload(CertPayload):
    payload_type: ClassVar[int] = PayloadType.CERTREQ


@dataclass(frozen=True, slots=True)
class SkPayload(_Payload):
    """Encrypted and Authenticated (RFC 7296 3.14): `data` is IV || ciphertext || ICV.  The SK
    header's Next Payload is `first_inner_type` (filled by `parse_payloads`, which sees that
    header; `decode_body` leaves it NONE); SK is always the last payload of a message."""

    payload_type: ClassVar[int] = PayloadType.SK
    first_inner_type: int
    data: bytes

    def __post_init__(self):
        _uint(self.first_inner_type, 8, "first inner payload type")
        _octets(self.data, "encrypted data")

    def encode_body(self) -> bytes:
        return self.data

    @classmethod
    def _pull(cls, buf: Buffer) -> SkPayload:
        return cls(PayloadType.NONE, buf.pull_rest())


@dataclass(frozen=True, slots=True)
class SkfPayload(_Payload):
    """Encrypted Fragment (RFC 7383 2.5): `first_inner_type` is set in fragment 1 only."""

    payload_type: ClassVar[int] = PayloadType.SKF
    first_inner_type: int
    fragment_number: int
    total_fragments: int
    data: bytes

    def __post_init__(self):
        _uint(self.first_inner_type, 8, "first inner payload type")
        _uint(self.fragment_number, 16, "Fragment Number")
        _uint(self.total_fragments, 16, "Total Fragments")
        if not 1 <= self.fragment_number <= self.total_fragments:
            raise InvalidPayloadValue(f"Fragment Number {self.fragment_number} is not in "
                                      f"1..Total Fragments ({self.total_fragments})")
        _octets(self.data, "encrypted data")

    def encode_body(self) -> bytes:
        return struct.pack("!HH", self.fragment_number, self.total_fragments) + self.data

    @classmethod
    def _pull(cls, buf: Buffer) -> SkfPayload:
        number = buf.pull_uint16("Fragment Number")
        total = buf.pull_uint16("Total Fragments")
        return cls(PayloadType.NONE, number, total, buf.pull_rest())


@dataclass(frozen=True, slots=True)
class UnknownPayload(_Payload):
    """A payload type this module does not know.  The parser only ever returns it with
    `critical` False (a critical one is refused); building one with True sends the bit."""

    payload_type: int
    data: bytes
    critical: bool = False

    def __post_init__(self):
        _uint(self.payload_type, 8, "payload type")
        if self.payload_type in _DECODERS or self.payload_type == PayloadType.NONE:
            raise InvalidPayloadValue(f"payload type {self.payload_type} has its own class")
        _octets(self.data, "payload data")

    @classmethod
    def decode_body(cls, body: bytes):
        raise InvalidPayloadValue("an unknown payload's type comes from the chain: "
                                  "use parse_payloads")

    def encode_body(self) -> bytes:
        return self.data


Payload = Union[SaPayload, KePayload, NoncePayload, IdiPayload, IdrPayload, AuthPayload,
                TsiPayload, TsrPayload, NotifyPayload, DeletePayload, VendorIdPayload,
                CertPayload, CertReqPayload, CpPayload, EapPayload, SkPayload, SkfPayload,
                UnknownPayload]

_DECODERS: dict[int, type] = {cls.payload_type: cls for cls in (
    SaPayload, KePayload, NoncePayload, IdiPayload, IdrPayload, AuthPayload, TsiPayload,
    TsrPayload, NotifyPayload, DeletePayload, VendorIdPayload, CertPayload, CertReqPayload,
    CpPayload, EapPayload, SkPayload, SkfPayload)}
_ENCRYPTED = (SkPayload, SkfPayload)


# --- payload chains -----------------------------------------------------------------------------

def parse_payloads(first_type: int, data: bytes, *, offset: int = 0) -> list[Payload]:
    """Decode the chain of payloads in `data` that starts with type `first_type`: the part of a
    message after its header, or the decrypted content of SK.  `offset` (where `data` starts in
    the datagram) only makes error messages point at the right byte."""
    data = bytes(data)
    payloads: list[Payload] = []
    pos, current = 0, first_type
    while current != PayloadType.NONE:
        where = f"{_type_name(current)} payload at offset {offset + pos}"
        if len(data) - pos < GENERIC_PAYLOAD_HEADER_BYTES:
            raise IkeSyntaxError(f"{where}: needs a 4-byte generic payload header, "
                                 f"{len(data) - pos} bytes left")
        following, flags, length = _GENERIC.unpack_from(data, pos)
        if not GENERIC_PAYLOAD_HEADER_BYTES <= length <= len(data) - pos:
            raise IkeSyntaxError(f"{where}: Payload Length {length} does not fit the "
                                 f"{len(data) - pos} bytes left")
        body = data[pos + GENERIC_PAYLOAD_HEADER_BYTES:pos + length]
        cls = _DECODERS.get(current)
        if cls is None:
            # RFC 7296 2.5: skip an unknown payload unless its sender marked it critical.
            if flags & PAYLOAD_CRITICAL:
                raise UnsupportedCriticalPayload(f"{where}: unknown payload type {current} "
                                                 "is marked critical", payload_type=current)
            payload: Payload = UnknownPayload(current, body)
        else:
            payload = _decode(cls, Buffer(body, where))
        pos += length
        if isinstance(payload, _ENCRYPTED):
            # The Next Payload of SK / SKF names the first payload inside it, not a next one.
            payload = dataclasses.replace(payload, first_inner_type=following)
            following = PayloadType.NONE
            if pos != len(data):
                raise IkeSyntaxError(f"{where}: must be the last payload, {len(data) - pos} "
                                     "bytes follow it")
        payloads.append(payload)
        current = following
    if pos != len(data):
        raise IkeSyntaxError(f"{len(data) - pos} bytes after the last payload at offset "
                             f"{offset + pos}")
    return payloads


def serialize_payloads(payloads: Sequence[Payload]) -> tuple[int, bytes]:
    """Encode payloads with their generic headers; returns (first payload type, bytes)."""
    out = bytearray()
    for i, payload in enumerate(payloads):
        if isinstance(payload, _ENCRYPTED):
            if i != len(payloads) - 1:
                raise InvalidPayloadValue(f"{type(payload).__name__} must be the last payload")
            following = payload.first_inner_type
        else:
            following = payloads[i + 1].payload_type if i + 1 < len(payloads) else 0
        body = payload.encode_body()
        length = _length16(GENERIC_PAYLOAD_HEADER_BYTES + len(body), type(payload).__name__)
        critical = isinstance(payload, UnknownPayload) and payload.critical
        out += _GENERIC.pack(following, PAYLOAD_CRITICAL if critical else 0, length) + body
    return (payloads[0].payload_type if payloads else PayloadType.NONE), bytes(out)


# --- header and message -------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class IkeHeader:
    """The 28-byte IKE header (RFC 7296 3.1).  SPIs are 8 bytes each."""

    spi_i: bytes
    spi_r: bytes
    next_payload: int
    exchange_type: int
    flags: int
    message_id: int
    length: int
    minor_version: int = 0

    def __post_init__(self):
        _octets(self.spi_i, "IKE SA Initiator's SPI", sizes=(8,))
        _octets(self.spi_r, "IKE SA Responder's SPI", sizes=(8,))
        for name, bits in (("next_payload", 8), ("exchange_type", 8), ("flags", 8),
                           ("message_id", 32), ("length", 32), ("minor_version", 4)):
            _uint(getattr(self, name), bits, name)


def pull_ike_header(data: bytes) -> IkeHeader:
    """Read the IKE header at the start of `data` (a driver may need no more than this)."""
    if len(data) < IKE_HEADER_BYTES:
        raise IkeSyntaxError(f"IKE header needs {IKE_HEADER_BYTES} bytes, got {len(data)}")
    spi_i, spi_r, next_payload, version, exchange, flags, message_id, length = \
        _IKE_HEADER.unpack_from(data)
    if version >> 4 != IKEV2_VERSION >> 4:
        raise InvalidMajorVersion(f"IKE header at offset 17: major version {version >> 4}, "
                                  "only 2 is supported", version=version)
    if length < IKE_HEADER_BYTES:
        raise IkeSyntaxError(f"IKE header at offset 24: Length {length} is shorter than the "
                             "header")
    return IkeHeader(spi_i, spi_r, next_payload, _enum(ExchangeType, exchange), IkeFlags(flags),
                     message_id, length, version & 0x0F)


def push_ike_header(header: IkeHeader) -> bytes:
    return _IKE_HEADER.pack(header.spi_i, header.spi_r, header.next_payload,
                            IKEV2_VERSION | header.minor_version, header.exchange_type,
                            header.flags, header.message_id, header.length)


@dataclass(frozen=True, slots=True)
class Message:
    """An IKE message: header fields and payloads (an SK / SKF payload, if any, last)."""

    spi_i: bytes
    spi_r: bytes
    exchange_type: int
    flags: int
    message_id: int
    payloads: tuple[Payload, ...] = ()
    minor_version: int = 0

    def __post_init__(self):
        _octets(self.spi_i, "IKE SA Initiator's SPI", sizes=(8,))
        _octets(self.spi_r, "IKE SA Responder's SPI", sizes=(8,))
        _uint(self.exchange_type, 8, "Exchange Type")
        _uint(self.flags, 8, "Flags")
        _uint(self.message_id, 32, "Message ID")
        _uint(self.minor_version, 4, "Minor Version")
        _tuple(self, "payloads", _Payload)

    @property
    def is_initiator(self) -> bool:
        return bool(self.flags & IkeFlags.INITIATOR)

    @property
    def is_response(self) -> bool:
        return bool(self.flags & IkeFlags.RESPONSE)


def parse_message(data: bytes) -> Message:
    """Decode one IKE message; the datagram must be exactly the message (RFC 7296 3.1)."""
    data = bytes(data)
    header = pull_ike_header(data)
    if header.length != len(data):
        raise IkeSyntaxError(f"IKE header Length {header.length} differs from the "
                             f"{len(data)}-byte datagram")
    payloads = parse_payloads(header.next_payload, data[IKE_HEADER_BYTES:],
                              offset=IKE_HEADER_BYTES)
    return Message(header.spi_i, header.spi_r, header.exchange_type, header.flags,
                   header.message_id, tuple(payloads), header.minor_version)


def serialize_message(message: Message) -> bytes:
    """Encode a message, filling in the Next Payload chain and every length."""
    first_type, body = serialize_payloads(message.payloads)
    header = IkeHeader(message.spi_i, message.spi_r, first_type, message.exchange_type,
                       message.flags, message.message_id, IKE_HEADER_BYTES + len(body),
                       message.minor_version)
    return push_ike_header(header) + body

"""How an IKE SA's peers prove who they are (RFC 7296 2.15): one authenticator per method.

Owns: turning the octets each side signs (RealMessage | Nonce | prf(SK_p, RestOfIDPayload),
computed by the session) into the payloads IKE_AUTH carries, and checking the peer's.
`PskAuthenticator` is the pre-shared key (AUTH method 2).  A new method (certificates with RFC
7427 signatures) is another class with the same three methods, chosen in `make_authenticator`
from the connection's `auth`.
Must not: hold session state, do I/O, or let a key or secret reach a repr or a log line.
"""
from __future__ import annotations

from typing import Protocol

from ipsec_core.errors import LocalError
from ipsec_core.ike.config import IkeConfig
from ipsec_core.ike.constants import AuthMethod
from ipsec_core.ike.keymat import IkeCrypto, auth_equal
from ipsec_core.ike.payloads import AuthPayload, IdPayload

_KEY_PAD = b"Key Pad for IKEv2"


class Authenticator(Protocol):
    def local_payloads(self, *, signed_octets: bytes, id_payload: IdPayload) -> list:
        """Our IKE_AUTH payloads that prove our identity (CERT..., AUTH)."""

    def verify(self, payloads: list, *, signed_octets: bytes, id_payload: IdPayload) -> str | None:
        """None when the peer's IKE_AUTH payloads prove `id_payload`, else why not."""


class PskAuthenticator:
    """AUTH = prf(prf(Shared Secret, "Key Pad for IKEv2"), <octets>) (RFC 7296 2.15)."""

    def __init__(self, config: IkeConfig, crypto: IkeCrypto):
        self._crypto = crypto
        self._key = crypto.prf(config.psk, _KEY_PAD)

    def __repr__(self) -> str:
        return "PskAuthenticator()"

    def local_payloads(self, *, signed_octets: bytes, id_payload: IdPayload) -> list:
        return [AuthPayload(AuthMethod.SHARED_KEY_MIC, self._crypto.prf(self._key, signed_octets))]

    def verify(self, payloads: list, *, signed_octets: bytes, id_payload: IdPayload) -> str | None:
        auth = next((p for p in payloads if isinstance(p, AuthPayload)), None)
        if auth is None:
            return "no AUTH payload"
        if auth.method != AuthMethod.SHARED_KEY_MIC:
            return f"AUTH method {auth.method}, a pre-shared key was expected"
        if not auth_equal(auth.data, self._crypto.prf(self._key, signed_octets)):
            return "AUTH does not match the pre-shared key"
        return None


def init_payloads(config: IkeConfig) -> list:
    """Payloads the connection's method adds to our IKE_SA_INIT message, before any key exists
    (a certificate method: CERTREQ, SIGNATURE_HASH_ALGORITHMS).  None for a pre-shared key."""
    return []


def make_authenticator(config: IkeConfig, crypto: IkeCrypto) -> Authenticator:
    if config.auth == "psk":
        return PskAuthenticator(config, crypto)
    raise LocalError(f"connection {config.name!r}: auth = {config.auth!r} is not supported")


__all__ = ["Authenticator", "PskAuthenticator", "init_payloads", "make_authenticator"]

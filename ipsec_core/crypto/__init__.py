"""Crypto interfaces, the backend registry and the self-tests.  No algorithm lives here."""
from ipsec_core.crypto.base import (Aead, Backend, Cipher, Feature, FeatureKind, KeyExchange, Mac,
                                    Prf)

__all__ = ["Aead", "Backend", "Cipher", "Feature", "FeatureKind", "KeyExchange", "Mac", "Prf"]

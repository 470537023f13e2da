"""IANA numbers of the IKEv2 wire format ("Internet Key Exchange Version 2 (IKEv2) Parameters").

Owns: the registries the codecs in `ipsec_core.ike.payloads` need to tell fields apart.
Must not: hold transform IDs (ENCR_AES_GCM_16, PRF_HMAC_SHA2_256, ...) or key exchange method
numbers; those belong to the transform catalog and travel through the codecs as plain ints.
"""
from __future__ import annotations

import enum

IKE_HEADER_BYTES = 28
GENERIC_PAYLOAD_HEADER_BYTES = 4
#: Major version 2, minor version 0 (RFC 7296 3.1), as one octet.
IKEV2_VERSION = 0x20
#: The Critical bit in the generic payload header (RFC 7296 3.2).
PAYLOAD_CRITICAL = 0x80
#: Transform attribute "Key Length" (RFC 7296 3.3.5); always TV, value in bits.
ATTRIBUTE_KEY_LENGTH = 14
#: Attribute Format bit: set for TV (2-octet value), clear for TLV (RFC 7296 3.3.5).
ATTRIBUTE_FORMAT_TV = 0x8000
NONCE_MIN_BYTES, NONCE_MAX_BYTES = 16, 256


class ExchangeType(enum.IntEnum):
    IKE_SA_INIT = 34
    IKE_AUTH = 35
    CREATE_CHILD_SA = 36
    INFORMATIONAL = 37
    IKE_SESSION_RESUME = 38     # RFC 5723
    IKE_INTERMEDIATE = 43       # RFC 9242
    IKE_FOLLOWUP_KE = 44        # RFC 9370


class IkeFlags(enum.IntFlag):
    """Header flags (RFC 7296 3.1).  The other bits are reserved: cleared when sending, ignored
    when received, so parsing keeps them as they came."""

    INITIATOR = 0x08
    VERSION = 0x10
    RESPONSE = 0x20


class PayloadType(enum.IntEnum):
    NONE = 0
    SA = 33
    KE = 34
    IDi = 35
    IDr = 36
    CERT = 37
    CERTREQ = 38
    AUTH = 39
    NONCE = 40                  # Ni and Nr
    NOTIFY = 41
    DELETE = 42
    VENDOR_ID = 43
    TSi = 44
    TSr = 45
    SK = 46
    CP = 47
    EAP = 48
    SKF = 53                    # RFC 7383


class TransformType(enum.IntEnum):
    ENCR = 1
    PRF = 2
    INTEG = 3
    KE = 4                      # "Diffie-Hellman Group" before RFC 9370
    DH = 4
    ESN = 5


class ProtocolId(enum.IntEnum):
    IKE = 1
    AH = 2
    ESP = 3


class IdType(enum.IntEnum):
    IPV4_ADDR = 1
    FQDN = 2
    RFC822_ADDR = 3
    IPV6_ADDR = 5
    DER_ASN1_DN = 9
    DER_ASN1_GN = 10
    KEY_ID = 11
    ID_NULL = 13                # RFC 7619


class AuthMethod(enum.IntEnum):
    RSA_SIG = 1
    SHARED_KEY_MIC = 2
    DSS_SIG = 3
    ECDSA_256 = 9               # RFC 4754
    ECDSA_384 = 10
    ECDSA_521 = 11
    NULL_AUTH = 13              # RFC 7619
    DIGITAL_SIGNATURE = 14      # RFC 7427


class CertEncoding(enum.IntEnum):
    X509_CERT_SIG = 4
    CRL = 7
    HASH_AND_URL_X509_CERT = 12
    HASH_AND_URL_X509_BUNDLE = 13
    RAW_PUBLIC_KEY = 15         # RFC 7670


class TsType(enum.IntEnum):
    TS_IPV4_ADDR_RANGE = 7
    TS_IPV6_ADDR_RANGE = 8


class NotifyType(enum.IntEnum):
    # Error types (RFC 7296 3.10.1; 40-42 and 45-47 from later RFCs, as IANA lists them).
    UNSUPPORTED_CRITICAL_PAYLOAD = 1
    INVALID_IKE_SPI = 4
    INVALID_MAJOR_VERSION = 5
    INVALID_SYNTAX = 7
    INVALID_MESSAGE_ID = 9
    INVALID_SPI = 11
    NO_PROPOSAL_CHOSEN = 14
    INVALID_KE_PAYLOAD = 17
    AUTHENTICATION_FAILED = 24
    SINGLE_PAIR_REQUIRED = 34
    NO_ADDITIONAL_SAS = 35
    INTERNAL_ADDRESS_FAILURE = 36
    FAILED_CP_REQUIRED = 37
    TS_UNACCEPTABLE = 38
    INVALID_SELECTORS = 39
    UNACCEPTABLE_ADDRESSES = 40         # RFC 4555
    UNEXPECTED_NAT_DETECTED = 41        # RFC 4555
    USE_ASSIGNED_HoA = 42               # RFC 5026
    TEMPORARY_FAILURE = 43
    CHILD_SA_NOT_FOUND = 44
    INVALID_GROUP_ID = 45               # RFC 6407
    AUTHORIZATION_FAILED = 46           # RFC 6407
    STATE_NOT_FOUND = 47                # RFC 9370
    # Status types.
    INITIAL_CONTACT = 16384
    SET_WINDOW_SIZE = 16385
    ADDITIONAL_TS_POSSIBLE = 16386
    IPCOMP_SUPPORTED = 16387
    NAT_DETECTION_SOURCE_IP = 16388
    NAT_DETECTION_DESTINATION_IP = 16389
    COOKIE = 16390
    USE_TRANSPORT_MODE = 16391
    HTTP_CERT_LOOKUP_SUPPORTED = 16392
    REKEY_SA = 16393
    ESP_TFC_PADDING_NOT_SUPPORTED = 16394
    NON_FIRST_FRAGMENTS_ALSO = 16395
    MOBIKE_SUPPORTED = 16396            # RFC 4555
    NO_ADDITIONAL_ADDRESSES = 16399     # RFC 4555
    AUTH_LIFETIME = 16403               # RFC 4478
    MULTIPLE_AUTH_SUPPORTED = 16404     # RFC 4739
    ANOTHER_AUTH_FOLLOWS = 16405        # RFC 4739
    REDIRECT_SUPPORTED = 16406          # RFC 5685
    REDIRECT = 16407
    REDIRECTED_FROM = 16408
    EAP_ONLY_AUTHENTICATION = 16417     # RFC 5998
    CHILDLESS_IKEV2_SUPPORTED = 16418   # RFC 6023
    IKEV2_MESSAGE_ID_SYNC_SUPPORTED = 16420  # RFC 6311
    IKEV2_FRAGMENTATION_SUPPORTED = 16430  # RFC 7383
    SIGNATURE_HASH_ALGORITHMS = 16431   # RFC 7427

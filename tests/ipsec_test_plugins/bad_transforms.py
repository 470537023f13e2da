"""A plugin registering transforms the registry must refuse, each for one reason, next to one
good one (id 1030) that must still be accepted."""
from ipsec_core import hookimpl
from ipsec_core.transforms.iana import EncrTransform
from ipsec_test_plugins import toy_gcm

_GOOD = dict(kind="aead", family="toy-gcm", key_bits=(128,), iv_bytes=8, block_bytes=4,
             salt_bytes=4, icv_bytes=16)


def _t(id, name, keywords, **over):
    fields = dict(_GOOD, vectors=toy_gcm.vectors())
    fields.update(over)
    return EncrTransform(id=id, name=name, keywords=keywords, **fields)


REFUSED = {
    "ENCR_NO_VECTORS": "no known-answer vectors",
    "ENCR_BUILTIN_ID": "is the built-in ENCR_AES_GCM_16",
    "ENCR_DUPLICATE_ID": "transform id 1025 is already registered by plugin ipsec_test_plugins.toy_gcm",
    "ENCR_DUPLICATE_KEYWORD": "keyword 'toygcm128' is already registered by plugin ipsec_test_plugins.toy_gcm",
    "ENCR_BUILTIN_KEYWORD": "keyword 'aes128' is a built-in one",
    "ENCR_BAD_IV": "an AEAD transform has an 8-byte IV",
    "ENCR_WRONG_KIND": "family 'toy-gcm' is of kind aead, not cipher",
    "ENCR_MISSING_SIZE": "no valid known-answer vector with a 256-bit key",
    "ENCR_BAD_HEX": "is not hex",
}


@hookimpl
def ipsec_register_transforms(register):
    register(_t(1040, "ENCR_NO_VECTORS", {"novec128": 128}, vectors=()))
    register(_t(20, "ENCR_BUILTIN_ID", {"builtinid128": 128}))
    register(_t(toy_gcm.TOY_ID, "ENCR_DUPLICATE_ID", {"dupid128": 128}))
    register(_t(1041, "ENCR_DUPLICATE_KEYWORD", {"toygcm128": 128}))
    register(_t(1042, "ENCR_BUILTIN_KEYWORD", {"aes128": 128}))
    register(_t(1043, "ENCR_BAD_IV", {"badiv128": 128}, iv_bytes=16))
    register(_t(1044, "ENCR_WRONG_KIND", {"wrongkind128": 128}, kind="cipher", icv_bytes=0,
                salt_bytes=0, iv_bytes=16, block_bytes=16))
    register(_t(1045, "ENCR_MISSING_SIZE", {"miss128": 128, "miss256": 256}, key_bits=(128, 256)))
    register(_t(1046, "ENCR_BAD_HEX", {"badhex128": 128},
                vectors=[dict(toy_gcm.vectors()[0], key="not hex")]))
    register(_t(1030, "ENCR_TOY_GCM_16_AGAIN", {"toyagain128": 128}))

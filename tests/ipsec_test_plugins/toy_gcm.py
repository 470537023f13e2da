"""A correct plugin adding a private-use AEAD transform (id 1025, keyword "toygcm128"): AES-GCM
with a 16-byte ICV under a family of its own, "toy-gcm", on cryptography's AESGCM.  Its vectors
are draft-mcgrew-gcm-test-01 case 2 and 3 (128-bit key, 12-byte nonce = salt || IV), as packaged
by the core, plus a forged one."""
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ipsec_core import hookimpl
from ipsec_core.crypto import selftest
from ipsec_core.crypto.base import Backend, Feature
from ipsec_core.errors import AuthenticationError
from ipsec_core.transforms.iana import EncrTransform

TOY_ID = 1025


def vectors():
    out = []
    for c in selftest.load_vector_file("rfc/draft-mcgrew-gcm-test-01_esp_gcm_gmac.json")["cases"]:
        if c["algorithm"] != "AES-GCM-ESP" or len(c["key"]) != 32 or len(c["nonce"]) != 24:
            continue
        sealed = bytes.fromhex(c["ctext_tag"])
        out.append({"id": f"mcgrew-toy-{len(out) + 1}", "key": c["key"], "nonce": c["nonce"],
                    "aad": c["aad"], "plaintext": c["plaintext"],
                    "ciphertext": sealed[:-16].hex(), "tag": sealed[-16:].hex()})
    bad = dict(out[0], id="mcgrew-toy-forged", valid=False)
    bad["tag"] = bytes([int(bad["tag"][:2], 16) ^ 1]).hex() + bad["tag"][2:]
    return out + [bad]


TRANSFORM = EncrTransform(
    id=TOY_ID, name="ENCR_TOY_GCM_16", keywords={"toygcm128": 128}, kind="aead",
    family="toy-gcm", key_bits=(128,), iv_bytes=8, block_bytes=4, salt_bytes=4, icv_bytes=16,
    vectors=vectors(), description="AES-GCM-16 under a private-use id (tests)")


class _Aead:
    tag_bytes = 16

    def __init__(self, key):
        self._gcm = AESGCM(key)
        self.encrypt = self._gcm.encrypt

    def decrypt(self, nonce, data, aad):
        try:
            return self._gcm.decrypt(nonce, data, aad)
        except InvalidTag:
            raise AuthenticationError("toy-gcm tag does not verify") from None


class ToyGcm(Backend):
    name = "toy"
    priority = 50

    def features(self):
        return (Feature("toy-gcm", (128,)),)

    def aead(self, family, key, *, tag_bytes, nonce_bytes):
        if family != "toy-gcm" or len(key) != 16 or tag_bytes != 16 or nonce_bytes != 12:
            return super().aead(family, key, tag_bytes=tag_bytes, nonce_bytes=nonce_bytes)
        return _Aead(key)


@hookimpl
def ipsec_register_transforms(register):
    register(TRANSFORM)


@hookimpl
def ipsec_register_backends(register):
    register(ToyGcm())

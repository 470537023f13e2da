"""A plugin whose transform brings wrong vectors (one ciphertext bit flipped) for a correct
backend: the transform is refused and the backend does not offer the family."""
from ipsec_core import hookimpl
from ipsec_test_plugins import toy_gcm
from ipsec_core.transforms.iana import EncrTransform


def _wrong():
    out = [dict(v) for v in toy_gcm.vectors() if v.get("valid", True)]
    for v in out:
        v["id"] = v["id"].replace("toy", "wrong")
        v["ciphertext"] = bytes([int(v["ciphertext"][:2], 16) ^ 0x80]).hex() + v["ciphertext"][2:]
    return out


class WrongBackend(toy_gcm.ToyGcm):
    name = "wrong"

    def features(self):
        from ipsec_core.crypto.base import Feature

        return (Feature("wrong-gcm", (128,)),)

    def aead(self, family, key, *, tag_bytes, nonce_bytes):
        return super().aead("toy-gcm" if family == "wrong-gcm" else family, key,
                            tag_bytes=tag_bytes, nonce_bytes=nonce_bytes)


@hookimpl
def ipsec_register_transforms(register):
    register(EncrTransform(
        id=1026, name="ENCR_WRONG_GCM_16", keywords={"wronggcm128": 128}, kind="aead",
        family="wrong-gcm", key_bits=(128,), iv_bytes=8, block_bytes=4, salt_bytes=4,
        icv_bytes=16, vectors=_wrong()))


@hookimpl
def ipsec_register_backends(register):
    register(WrongBackend())

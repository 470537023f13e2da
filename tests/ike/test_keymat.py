"""Key derivation, message protection and PSK authentication against real strongSwan 5.9.8
exchanges (tests/ike/data, with the keys charon logged): SKEYSEED and every SK_* key, every
Encrypted payload of both directions decrypted to the plaintext charon logged, both AUTH
values recomputed, and the first CHILD SA's keys from KEYMAT."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from ipsec_core.crypto.registry import get_registry
from ipsec_core.errors import AuthenticationError
from ipsec_core.ike.keymat import IkeCrypto, auth_equal, child_keymat, derive_ike_keys, psk_auth
from ipsec_core.ike.payloads import (AuthPayload, IdiPayload, IdrPayload, SkPayload, parse_message,
                                     parse_payloads)
from ipsec_core.ike.proposals import parse_ike_proposal
from ipsec_core.transforms.keywords import parse_esp

DATA = Path(__file__).parent / "data"
CAPTURES = sorted(DATA.glob("strongswan-*.json"))


def _load(path: Path):
    d = json.loads(path.read_text())
    suite = parse_ike_proposal(d["ike_proposal"])[0]
    crypto = IkeCrypto(suite, registry=get_registry(), backend=None)
    n = d["nonces"]["IKE_SA_INIT"]
    ni, nr = bytes.fromhex(n["ni"]), bytes.fromhex(n["nr"])
    spi_i, spi_r = bytes.fromhex(d["ike_spis"]["initiator"]), bytes.fromhex(d["ike_spis"]["responder"])
    _, keys = derive_ike_keys(crypto, shared=bytes.fromhex(d["keys"]["shared_dh_secret"]), ni=ni,
                              nr=nr, spi_i=spi_i, spi_r=spi_r)
    return d, crypto, keys, ni, nr


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: p.stem)
def test_ike_keys_match_strongswan(path):
    d, crypto, keys, ni, nr = _load(path)
    for name in ("sk_d", "sk_ei", "sk_er", "sk_pi", "sk_pr", "sk_ai", "sk_ar"):
        assert getattr(keys, name).hex() == d["keys"].get(name, ""), name


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: p.stem)
def test_every_encrypted_payload_opens(path):
    d, crypto, keys, ni, nr = _load(path)
    responder = crypto.protector((keys.sk_er, keys.sk_ei), (keys.sk_ar, keys.sk_ai))
    initiator = crypto.protector((keys.sk_ei, keys.sk_er), (keys.sk_ai, keys.sk_ar))
    opened = 0
    for dg in d["datagrams"]:
        data = bytes.fromhex(dg["hex"])
        msg = parse_message(data)
        if not msg.payloads or not isinstance(msg.payloads[-1], SkPayload):
            continue
        if dg["exchange"] != "IKE_AUTH" and dg["message_id"] > 1 and "ike_sa_after_rekey" in d \
                and d.get("ike_sa_after_rekey", {}).get("rekeyed"):
            continue
        sk = msg.payloads[-1]
        head = data[:len(data) - len(sk.data)]
        side = responder if dg["direction"] == "i->r" else initiator
        inner = side.open(head, sk.data)
        assert inner.hex() == dg["sk_plaintext"]
        assert isinstance(parse_payloads(sk.first_inner_type, inner), list)
        damaged = bytearray(sk.data)
        damaged[len(damaged) // 2] ^= 1
        with pytest.raises(AuthenticationError):
            side.open(head, bytes(damaged))
        opened += 1
    assert opened >= 6


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: p.stem)
def test_psk_auth_and_child_keys_match_strongswan(path):
    d, crypto, keys, ni, nr = _load(path)
    psk = d["config"]["psk"].encode()
    init_request, init_response = (bytes.fromhex(g["hex"]) for g in d["datagrams"][:2])
    auths = {}
    for dg in d["datagrams"]:
        if dg["exchange"] == "IKE_AUTH":
            inner = parse_payloads(dg["sk_first_payload"], bytes.fromhex(dg["sk_plaintext"]))
            auths[dg["direction"]] = inner
    idi = next(p for p in auths["i->r"] if isinstance(p, IdiPayload))
    idr = next(p for p in auths["r->i"] if isinstance(p, IdrPayload))
    auth_i = next(p for p in auths["i->r"] if isinstance(p, AuthPayload))
    auth_r = next(p for p in auths["r->i"] if isinstance(p, AuthPayload))
    assert auth_equal(auth_i.data, psk_auth(crypto, psk=psk, message=init_request, nonce=nr,
                                            sk_p=keys.sk_pi, id_body=idi.encode_body()))
    assert auth_equal(auth_r.data, psk_auth(crypto, psk=psk, message=init_response, nonce=ni,
                                            sk_p=keys.sk_pr, id_body=idr.encode_body()))
    assert not auth_equal(auth_i.data, psk_auth(crypto, psk=psk + b"x", message=init_request,
                                                nonce=nr, sk_p=keys.sk_pi, id_body=idi.encode_body()))
    child = d["child_sas"][0]
    esp = parse_esp(d["esp_proposal"])
    integ = esp.integ_info.key_bytes if esp.integ_info else 0
    ei, ai, er, ar = child_keymat(crypto, keys.sk_d, ni=ni, nr=nr, encr_bytes=esp.enc_key_bytes,
                                  integ_bytes=integ)
    assert ei.hex() == child["i_to_r"]["encr_key"] and er.hex() == child["r_to_i"]["encr_key"]
    assert ai.hex() == (child["i_to_r"]["integ_key"] or "") and ar.hex() == (child["r_to_i"]["integ_key"] or "")

"""CHILD SA keys after a rekey follow the CREATE_CHILD_SA exchange's roles (RFC 7296 2.17).

KEYMAT's first half protects initiator-to-responder traffic, where "initiator" is the peer that
sent the CREATE_CHILD_SA request, whatever its role in the IKE SA.  A split by the IKE SA's roles
gives both peers the same wrong keys when the IKE SA's responder rekeys, so traffic between two
of our own peers cannot tell: these tests compare what each side installs with an independent
KEYMAT computation over the nonces read off the wire, and with strongSwan's keys from the
captures in tests/ike/data.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ipsec_core.ike.events import ChildSaInstalled
from ipsec_core.ike.keymat import IkeCrypto, child_keymat, derive_ike_keys
from ipsec_core.ike.payloads import NoncePayload, SkPayload, parse_message, parse_payloads
from ipsec_core.ike.proposals import parse_ike_proposal
from ipsec_core.ike.session import IkeSession, IkeState, _ts_payload
from ipsec_core.transforms.keywords import parse_esp

from .test_session import REGISTRY, Pair, config, traffic, up

DATA = Path(__file__).parent / "data"
CAPTURES = sorted(DATA.glob("strongswan-*.json"))
CREATE_CHILD_SA = 36


def _nonce_of(message: bytes, protector) -> bytes:
    """The Nonce payload inside one encrypted IKE message."""
    msg = parse_message(message)
    sk = msg.payloads[-1]
    assert isinstance(sk, SkPayload)
    head = message[:len(message) - len(sk.data)]
    inner = parse_payloads(sk.first_inner_type, protector.open(head, sk.data))
    [nonce] = [p for p in inner if isinstance(p, NoncePayload)]
    return nonce.nonce if hasattr(nonce, "nonce") else nonce.data


def _exchange_nonces(pair: Pair, *, requester: str, sk_keys, crypto) -> tuple[bytes, bytes]:
    """(Ni, Nr) of the last CREATE_CHILD_SA exchange, decrypted from the datagrams on the wire
    with protectors built here from the IKE SA's SK_e/SK_a (not the sessions' own)."""
    k = sk_keys
    as_ike_initiator = crypto.protector((k.sk_ei, k.sk_er), (k.sk_ai, k.sk_ar))   # opens r's messages
    as_ike_responder = crypto.protector((k.sk_er, k.sk_ei), (k.sk_ar, k.sk_ai))   # opens i's messages
    responder = "a" if requester == "b" else "b"

    def last_create_child(side: str) -> bytes:
        data = [d.data for d in pair.sent[side] if parse_message(d.data).exchange_type == CREATE_CHILD_SA]
        return data[-1]

    # a is the IKE SA's initiator in every Pair
    opener = {"a": as_ike_responder, "b": as_ike_initiator}
    ni = _nonce_of(last_create_child(requester), opener[requester])
    nr = _nonce_of(last_create_child(responder), opener[responder])
    return ni, nr


def _expected_keys(session: IkeSession, keyword: str, ni: bytes, nr: bytes):
    esp = parse_esp(keyword)
    crypto = IkeCrypto(session.suite, registry=REGISTRY, backend=None)
    return child_keymat(crypto, session.keys.sk_d, ni=ni, nr=nr, encr_bytes=esp.enc_key_bytes,
                        integ_bytes=esp.integ_info.key_bytes if esp.integ_info else 0)


def _key_mismatches(pair: Pair, *, requester: str) -> list[str]:
    """What each side installed for the last CHILD SA, against KEYMAT split by the exchange's
    roles; an empty list when every key is where RFC 7296 2.17 puts it."""
    [a_sa] = [s for s in pair.a.sessions() if not s.finished]
    crypto = IkeCrypto(a_sa.suite, registry=REGISTRY, backend=None)
    ni, nr = _exchange_nonces(pair, requester=requester, sk_keys=a_sa.keys, crypto=crypto)
    installed = {side: pair.of(side, ChildSaInstalled)[-1] for side in "ab"}
    ei, ai, er, ar = _expected_keys(a_sa, installed["a"].proposal, ni, nr)
    wrong = []
    for side, child in installed.items():
        is_exchange_initiator = side == requester
        want_out, want_in = ((ei, ai), (er, ar)) if is_exchange_initiator else ((er, ar), (ei, ai))
        if (child.outbound.enc_key, child.outbound.integ_key or b"") != want_out:
            wrong.append(f"{side} outbound")
        if (child.inbound.enc_key, child.inbound.integ_key or b"") != want_in:
            wrong.append(f"{side} inbound")
    return wrong


ESP_SUITES = ["aes128gcm16", "aes256-sha256"]


@pytest.mark.parametrize("esp", ESP_SUITES)
@pytest.mark.parametrize("requester", ["b", "a"], ids=["ike-responder-rekeys", "ike-initiator-rekeys"])
def test_rekeyed_child_keys_follow_the_exchange_roles(requester, esp):
    pair = up(Pair(config("a", initiator=True, esp=(esp,)), config("b", initiator=False, esp=(esp,))))
    getattr(pair, requester).rekey_child(requester, "net", now=pair.now)
    pair.pump()
    new = pair.of(requester, ChildSaInstalled)[-1]
    assert new.rekeyed is not None, "the rekey did not complete"
    assert _key_mismatches(pair, requester=requester) == []
    traffic(pair)
    # a second rekey from the other side, on the keys the first one made
    other = "a" if requester == "b" else "b"
    getattr(pair, other).rekey_child(other, "net", now=pair.now)
    pair.pump()
    assert _key_mismatches(pair, requester=other) == []
    traffic(pair)


def test_the_check_catches_keys_split_by_the_ike_sa_roles(monkeypatch):
    """Both peers splitting KEYMAT by their IKE SA roles still talk to each other; the check
    above must flag it all the same."""
    original = IkeSession._install_child

    def by_ike_roles(self, *args, exchange_initiator, **kw):
        return original(self, *args, exchange_initiator=self.initiator, **kw)

    monkeypatch.setattr(IkeSession, "_install_child", by_ike_roles)
    pair = up(Pair(config("a", initiator=True), config("b", initiator=False)))
    pair.b.rekey_child("b", "net", now=pair.now)
    pair.pump()
    traffic(pair)                            # the wrong keys agree with each other...
    assert sorted(_key_mismatches(pair, requester="b")) == \
        ["a inbound", "a outbound", "b inbound", "b outbound"]    # ...and are still caught


# -- strongSwan's CREATE_CHILD_SA rekey, captured ---------------------------------------------

def _capture(path: Path):
    d = json.loads(path.read_text())
    suite = parse_ike_proposal(d["ike_proposal"])[0]
    crypto = IkeCrypto(suite, registry=REGISTRY, backend=None)
    n = d["nonces"]["IKE_SA_INIT"]
    ni, nr = bytes.fromhex(n["ni"]), bytes.fromhex(n["nr"])
    spi_i, spi_r = (bytes.fromhex(d["ike_spis"][k]) for k in ("initiator", "responder"))
    _, keys = derive_ike_keys(crypto, shared=bytes.fromhex(d["keys"]["shared_dh_secret"]), ni=ni,
                              nr=nr, spi_i=spi_i, spi_r=spi_r)
    assert keys.sk_d.hex() == d["keys"]["sk_d"]
    return d, suite, crypto, keys


def _established(d, suite, crypto, keys, *, initiator: bool, random) -> IkeSession:
    """Our session in the place of one of the two charons, after IKE_AUTH (message ID 2 next),
    holding the CHILD SA of IKE_AUTH."""
    cfg = config("a" if initiator else "b", initiator=initiator, proposals=(d["ike_proposal"],),
                 esp=(d["esp_proposal"],))
    i_addr, r_addr = d["config"]["initiator"]["address"], d["config"]["responder"]["address"]
    local, remote = ((i_addr, 4500), (r_addr, 4500)) if initiator else ((r_addr, 4500), (i_addr, 4500))
    s = IkeSession(cfg, initiator=initiator, local=local, remote=remote, registry=REGISTRY,
                   now=0.0, random=random)
    s.spi_i, s.spi_r = keys.spi_i, keys.spi_r
    s.suite, s.crypto, s.keys = suite, crypto, keys
    s._sk = crypto.protector((keys.sk_ei, keys.sk_er), (keys.sk_ai, keys.sk_ar)) if initiator else \
        crypto.protector((keys.sk_er, keys.sk_ei), (keys.sk_ar, keys.sk_ai))
    s.nat_t = True
    s._set_state(IkeState.ESTABLISHED)
    s._next_mid = s._peer_mid = 2
    first = d["child_sas"][0]
    n = d["nonces"]["IKE_SA_INIT"]
    spi_ir, spi_ri = (int(first[k]["spi"], 16) for k in ("i_to_r", "r_to_i"))
    child = cfg.children[0]
    s._install_child(child, d["esp_proposal"], spi_in=spi_ri if initiator else spi_ir,
                     spi_out=spi_ir if initiator else spi_ri, ni=bytes.fromhex(n["ni"]),
                     nr=bytes.fromhex(n["nr"]), shared=b"", local_ts=_ts_payload(child.local_ts),
                     remote_ts=_ts_payload(child.remote_ts), rekey_of=None, now=0.0,
                     exchange_initiator=initiator)
    s._flush_child_events()
    return s


def _installed(session: IkeSession) -> list[ChildSaInstalled]:
    out = []
    while (e := session.next_event()) is not None:
        if isinstance(e, ChildSaInstalled):
            out.append(e)
    return out


def _rekey_datagrams(d, *, response: bool) -> bytes:
    [dg] = [g for g in d["datagrams"] if g["exchange"] == "CREATE_CHILD_SA" and g["response"] == response]
    return bytes.fromhex(dg["hex"])


def _fixed_nonce(nonce: bytes):
    def random(n: int) -> bytes:
        return nonce if n == len(nonce) else os.urandom(n)
    return random


def _assert_strongswan_keys(event: ChildSaInstalled, d, *, exchange_initiator: bool) -> None:
    rekeyed = d["child_sas"][1]
    assert rekeyed["exchange"] == "CREATE_CHILD_SA"
    out, inn = ("i_to_r", "r_to_i") if exchange_initiator else ("r_to_i", "i_to_r")
    assert event.outbound.enc_key.hex() == rekeyed[out]["encr_key"]
    assert (event.outbound.integ_key or b"").hex() == (rekeyed[out]["integ_key"] or "")
    assert event.inbound.enc_key.hex() == rekeyed[inn]["encr_key"]
    assert (event.inbound.integ_key or b"").hex() == (rekeyed[inn]["integ_key"] or "")


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: p.stem)
def test_strongswan_rekey_request_replayed_to_our_responder(path):
    """charon's CREATE_CHILD_SA request, as captured, into our session in the place of the
    responding charon (its Nr forced to the captured one): we install charon's keys."""
    d, suite, crypto, keys = _capture(path)
    nr = bytes.fromhex(d["nonces"]["CREATE_CHILD_SA"]["nr"])
    s = _established(d, suite, crypto, keys, initiator=False, random=_fixed_nonce(nr))
    _installed(s)
    s.receive(_rekey_datagrams(d, response=False), remote=s.remote, local=s.local, nat_t=True, now=1.0)
    [event] = _installed(s)
    assert event.rekeyed is not None
    _assert_strongswan_keys(event, d, exchange_initiator=False)


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: p.stem)
def test_strongswan_rekey_response_replayed_to_our_initiator(path):
    """Our session in the place of the rekeying charon (its Ni forced to the captured one)
    takes charon's captured CREATE_CHILD_SA response and installs charon's keys."""
    d, suite, crypto, keys = _capture(path)
    ni = bytes.fromhex(d["nonces"]["CREATE_CHILD_SA"]["ni"])
    s = _established(d, suite, crypto, keys, initiator=True, random=_fixed_nonce(ni))
    _installed(s)
    [spi_in] = s.children
    s.rekey_child(spi_in, now=1.0)
    assert s.datagrams_to_send()
    s.receive(_rekey_datagrams(d, response=True), remote=s.remote, local=s.local, nat_t=True, now=1.0)
    [event] = _installed(s)
    assert event.rekeyed is not None
    _assert_strongswan_keys(event, d, exchange_initiator=True)


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: p.stem)
def test_ike_responder_as_exchange_initiator_uses_strongswans_initiator_keys(path):
    """The case the captures lack (charon's IKE responder rekeying): our IKE responder that
    starts a CREATE_CHILD_SA with the captured nonces must install what charon's exchange
    initiator installed, not what its IKE role would suggest."""
    d, suite, crypto, keys = _capture(path)
    n = d["nonces"]["CREATE_CHILD_SA"]
    s = _established(d, suite, crypto, keys, initiator=False, random=os.urandom)
    _installed(s)
    [old] = s.children.values()
    s._install_child(old.config, d["esp_proposal"], spi_in=0x1000, spi_out=0x2000,
                     ni=bytes.fromhex(n["ni"]), nr=bytes.fromhex(n["nr"]), shared=b"",
                     local_ts=old.local_ts, remote_ts=old.remote_ts, rekey_of=old, now=1.0,
                     exchange_initiator=True)
    s._flush_child_events()
    [event] = _installed(s)
    _assert_strongswan_keys(event, d, exchange_initiator=True)

"""A deleted or failed IKE SA forgets its keys (best effort): its SK protector is wiped and
refuses to seal or open, and SK_d with the other SK_* keys is dropped, unless the user asked for
key export (save_keys), which needs them after the SA is gone."""
from __future__ import annotations

import pytest

from ipsec_core.errors import AuthenticationError, LocalError
from ipsec_core.ike.endpoint import IkeEndpoint
from ipsec_core.ike.events import IkeSaDeleted, IkeSaFailed

from .test_session import REGISTRY, Pair, config, up


def _only(endpoint):
    [session] = endpoint.sessions()
    return session


def test_deleted_ike_sa_forgets_its_keys_on_both_sides():
    pair = up(Pair(config("a", initiator=True), config("b", initiator=False)))
    a, b = _only(pair.a), _only(pair.b)
    assert a.keys is not None and not a._sk.wiped
    pair.a.close(now=pair.now)
    pair.pump()
    assert pair.of("a", IkeSaDeleted) and pair.of("b", IkeSaDeleted)
    for session in (a, b):
        assert session.finished
        assert session.keys is None and session._sk.wiped
        with pytest.raises(LocalError):
            session._sk.seal(b"head", b"payload")
        with pytest.raises(AuthenticationError):
            session._sk.open(b"head", bytes(64))


def test_failed_ike_sa_forgets_its_keys():
    pair = Pair(config("a", initiator=True), config("b", initiator=False, psk=b"another secret!!!!!!"))
    pair.a.initiate("a", now=pair.now)
    seen = set(pair.a.sessions())

    def note(side, d):
        seen.update(pair.a.sessions() + pair.b.sessions())
        return d.data
    pair.pump(mangle=note)
    assert pair.of("a", IkeSaFailed) and pair.of("b", IkeSaFailed)
    with_keys = [s for s in seen if s._sk is not None]
    assert {s.initiator for s in with_keys} == {True, False}
    for session in with_keys:
        assert session.finished and session.keys is None and session._sk.wiped


def test_rekeyed_ike_sa_forgets_its_keys_and_the_new_one_works():
    pair = up(Pair(config("a", initiator=True), config("b", initiator=False)))
    old_a, old_b = _only(pair.a), _only(pair.b)
    pair.b.rekey_ike("b", now=pair.now)
    pair.pump()
    new_a, new_b = _only(pair.a), _only(pair.b)
    assert new_a is not old_a and new_a.established
    assert old_a.keys is None and old_b.keys is None and old_a._sk.wiped and old_b._sk.wiped
    assert new_a.keys.sk_d == new_b.keys.sk_d and not new_a._sk.wiped
    pair.a.rekey_child("a", "net", now=pair.now)      # SK_d of the new IKE SA still there
    pair.pump()
    assert new_a.children and new_a.established


def test_with_save_keys_the_keys_stay_for_export():
    pair = Pair(config("a", initiator=True), config("b", initiator=False))
    pair.a = IkeEndpoint([config("a", initiator=True)], registry=REGISTRY, now=0.0, save_keys=True)
    up(pair)
    a = _only(pair.a)
    spis = (a.spi_i, a.spi_r)
    pair.a.close(now=pair.now)
    pair.pump()
    assert a._sk.wiped, "the protector is wiped all the same"
    assert [(k.spi_i, k.spi_r) for k in pair.a.ike_keys()] == [spis]

"""IKE fragmentation (RFC 7383) in memory: negotiated in IKE_SA_INIT, an IKE_AUTH too large for
fragment_size (many traffic selectors) sent and answered as SKF fragments each within the limit,
a lost fragment recovered by retransmitting all of them, AEAD and CBC suites, no fragments when
one side says no, and the reassembly limits."""
from __future__ import annotations

import dataclasses
import ipaddress

import pytest

from ipsec_core.ike.config import TrafficSelectorSpec
from ipsec_core.ike.constants import PayloadType
from ipsec_core.ike.events import ChildSaInstalled, IkeSaEstablished
from ipsec_core.ike.fragmentation import Reassembler, max_message_bytes

from .test_rekey import assert_in_step, traffic
from .test_session import Pair, config, up

AUTH = 35


def many_ts(base: str, count: int) -> tuple[TrafficSelectorSpec, ...]:
    net = ipaddress.ip_network(base)
    return tuple(TrafficSelectorSpec(ipaddress.ip_network(f"{net.network_address + 4 * i}/30"))
                 for i in range(count))


def big(cfg, local: str, remote: str, count: int, **kw):
    child = dataclasses.replace(cfg.children[0], local_ts=many_ts(local, count), remote_ts=many_ts(remote, count))
    return dataclasses.replace(cfg, children=(child,), **kw)


def big_pair(count=60, *, ike=("aes128gcm16-prfsha256-ecp256",), a_kw=None, b_kw=None):
    a = big(config("a", initiator=True, proposals=ike), "198.51.100.0/24", "203.0.113.0/24", count, **(a_kw or {}))
    b = big(config("b", initiator=False, proposals=ike), "203.0.113.0/24", "198.51.100.0/24", count, **(b_kw or {}))
    return Pair(a, b)


@pytest.mark.parametrize("ike", ["aes128gcm16-prfsha256-ecp256", "aes256-sha256-modp2048"])
def test_large_ike_auth_is_fragmented_both_ways(ike):
    pair = up(big_pair(ike=(ike,)))
    assert pair.of("a", IkeSaEstablished) and pair.of("b", IkeSaEstablished)
    limit = max_message_bytes(1280, ipv6=False, nat_t=True)
    for side in "ab":
        auth = [d for d in pair.sent[side] if d.data[18] == AUTH]
        assert len(auth) > 1 and all(d.data[16] == PayloadType.SKF for d in auth)
        assert all(len(d.data) <= limit for d in auth)
    [child] = pair.of("a", ChildSaInstalled)
    assert len(child.local_ts) == 60
    traffic(pair)


def test_lost_fragment_means_all_are_sent_again():
    lost = []

    def drop(side, d):
        if side == "a" and d.data[18] == AUTH and int.from_bytes(d.data[32:34], "big") == 2 and not lost:
            lost.append(d)
            return True
        return False
    pair = big_pair()
    pair.a.initiate("a", now=0.0)
    pair.pump(drop=drop)
    assert lost and not pair.of("a", IkeSaEstablished)
    first_try = len([d for d in pair.sent["a"] if d.data[18] == AUTH])
    pair.tick(4.0)
    assert len([d for d in pair.sent["a"] if d.data[18] == AUTH]) == 2 * first_try
    assert pair.of("a", IkeSaEstablished) and pair.of("b", IkeSaEstablished)
    # a repeated fragmented request draws the cached (fragmented) response once
    auth = [d for d in pair.sent["a"] if d.data[18] == AUTH][-first_try:]
    for d in auth:
        pair.b.receive_datagram(d.data, remote=d.local, local=d.remote, nat_t=True, now=pair.now)
    again = pair.b.datagrams_to_send(now=pair.now)
    assert len(again) == len([d for d in pair.sent["b"] if d.data[18] == AUTH])


def test_rekey_with_many_selectors_is_fragmented():
    pair = up(big_pair())
    pair.a.rekey_child("a", "net", now=pair.now)
    pair.pump()
    assert len([d for d in pair.sent["a"] if d.data[18] == 36 and d.data[16] == PayloadType.SKF]) > 1
    assert_in_step(pair)


@pytest.mark.parametrize("who", ["a", "b"])
def test_no_fragments_unless_both_agree(who):
    kw = {"fragmentation": "no"}
    pair = up(big_pair(count=60, a_kw=kw if who == "a" else None, b_kw=kw if who == "b" else None))
    auth = [d for d in pair.sent["a"] if d.data[18] == AUTH]
    assert len(auth) == 1 and auth[0].data[16] == PayloadType.SK and len(auth[0].data) > 1280
    assert pair.of("a", IkeSaEstablished)


def test_fragment_size_is_configurable():
    pair = up(big_pair(a_kw={"fragment_size": 600}))
    auth = [d for d in pair.sent["a"] if d.data[18] == AUTH]
    assert all(len(d.data) <= 600 - 32 for d in auth) and len(auth) > 4
    assert pair.of("b", IkeSaEstablished)


def test_reassembly_limits():
    r = Reassembler(max_fragments=4, max_bytes=100, timeout=30.0)
    add = lambda number, total, data=b"x" * 10, mid=1, now=0.0, first=33: r.add(  # noqa: E731
        message_id=mid, number=number, total=total, first_inner_type=first if number == 1 else 0,
        plaintext=data, now=now)
    assert add(1, 5) is None and r.drops == {"too_many_fragments": 1}
    assert add(2, 3) is None and add(2, 3) is None and r.drops["duplicate_fragment"] == 1
    assert add(1, 2) is None and r.drops["stale_total_fragments"] == 1      # fewer: an older try
    assert add(1, 4) is None and add(2, 4) is None                           # more: start again
    assert add(3, 4, b"y" * 90) is None and r.drops["message_too_large"] == 1
    assert add(1, 2, now=0.0) is None
    assert add(2, 2, now=31.0) is None and r.drops["stale_reassembly"] == 1  # too old
    assert add(1, 2, b"ab", mid=2) is None
    assert add(2, 2, b"cd", mid=2) == (33, b"abcd")
    assert add(1, 1, first=0) is None and r.drops["first_fragment_without_payload"] == 1

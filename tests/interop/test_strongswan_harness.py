"""The strongSwan harness itself: two charons (kernel-libipsec) in namespaces, a PSK tunnel, a ping.

Pure-function parts (config rendering, `--list-sas --raw` and hex-dump parsing) run everywhere;
the tunnel needs root and the packages of tests/setup-system.sh, and skips with the reason otherwise.
"""
import time

import pytest

from . import strongswan as ss

LIST_SAS_RAW = (
    "list-sa event {gcm {uniqueid=1 version=2 state=ESTABLISHED local-host=192.0.2.1 local-port=4500 "
    "local-id=a.example.org initiator=yes initiator-spi=42ac59053dc6f0e0 responder-spi=d105a12c222cc375 "
    "encr-alg=AES_GCM_16 encr-keysize=128 child-sas {gcm-1 {name=gcm uniqueid=1 state=INSTALLED "
    "encap=yes spi-in=7c7c49c6 spi-out=12345678 bytes-in=252 packets-in=3 bytes-out=252 packets-out=3 "
    "local-ts=[198.51.100.0/24] remote-ts=[203.0.113.0/24 2001:db8::/32]}}}}\n"
    "list-sas reply {}\n")

HEXDUMP_LOG = """\
07:16:52 00[LIB] loaded plugins: charon random nonce
07:16:52 13[IKE] Sk_ei secret => 20 bytes @ 0x7fa39400b300
07:16:52 13[IKE]    0: 00 11 22 33 44 55 66 77 88 99 AA BB CC DD EE FF  .."3DUfw........
07:16:52 13[IKE]   16: 01 02 03 04                                      ....
07:16:52 13[CHD] encryption initiator key => 2 bytes @ 0x7fa39c0364c0
07:16:52 13[CHD]    0: FE 70                                            .p
"""


def test_parse_list_sas_raw():
    (ike,) = ss.parse_list_sas(LIST_SAS_RAW)
    assert ike["name"] == "gcm" and ike["state"] == "ESTABLISHED" and ike["local-port"] == 4500
    assert ike["initiator-spi"] == "42ac59053dc6f0e0"
    (child,) = ike["child-sas"]
    assert child["key"] == "gcm-1" and child["spi-out"] == "12345678"   # SPIs stay hex strings
    assert child["packets-in"] == 3 and child["bytes-out"] == 252
    assert child["remote-ts"] == ["203.0.113.0/24", "2001:db8::/32"]


def test_parse_hexdumps():
    dumps = ss.parse_hexdumps(HEXDUMP_LOG)
    assert dumps == [("IKE", "Sk_ei secret", bytes.fromhex("00112233445566778899aabbccddeeff01020304")),
                     ("CHD", "encryption initiator key", b"\xfe\x70")]


def test_render_conf():
    text = ss.render_conf(ss.swanctl_conf(
        {"net": ss.connection(local_addrs="192.0.2.1", remote_addrs="192.0.2.2", local_id="a", remote_id="b",
                              local_ts=["198.51.100.0/24", "2001:db8:1::/48"], childless="force")},
        ids=("a", "b")))
    assert "    net {\n        version = 2\n" in text
    assert "encap = yes" in text and "childless = force" in text
    assert "local_ts = 198.51.100.0/24, 2001:db8:1::/48" in text
    assert "rekey_time" not in text                         # None leaves strongSwan's default
    assert 'secret = interop-test-psk-not-secret' in text


@pytest.mark.root
@pytest.mark.slow
def test_strongswan_to_strongswan_psk_ping():
    reason = ss.skip_reason() or ss.tool_missing("ping")
    if reason:
        pytest.skip(reason)
    started = time.monotonic()
    conn = {"proposals": "aes128gcm16-prfsha256-ecp256", "esp_proposals": "aes128gcm16"}
    with ss.StrongswanPair(conn_a=conn, conn_b=conn) as pair:
        ike = pair.initiate(timeout=10)
        assert ike["encr-alg"] == "AES_GCM_16" and ike["dh-group"] == "ECP_256"
        assert ike["local-port"] == 4500                       # libipsec forces NAT-T
        pair.b.wait_established(ike="net", child="net", timeout=5)
        ping = pair.net.exec(pair.net.a, ["ping", "-c", "3", "-i", "0.2", "-W", "2", "-I", pair.net.a.inner_ip,
                                          pair.net.b.inner_ip], check=False)
        assert ping.returncode == 0, ping.stdout + ping.stderr
        (a_child,) = pair.a.list_sas()[0]["child-sas"]
        (b_child,) = pair.b.list_sas()[0]["child-sas"]
        assert a_child["encap"] == "yes" and a_child["encr-alg"] == "AES_GCM_16"
        assert a_child["spi-out"] == b_child["spi-in"] and a_child["spi-in"] == b_child["spi-out"]
        for child in (a_child, b_child):
            assert child["packets-out"] >= 3 and child["packets-in"] >= 3, child
            assert child["bytes-out"] >= 3 * 84 and child["bytes-in"] >= 3 * 84, child
        assert any(label == "Sk_ei secret" for _, label, _ in pair.a.hexdumps())   # keys are logged
        pair.a.terminate(ike="net")
        assert pair.a.list_sas() == []
        netns = (pair.net.a.netns, pair.net.b.netns)
    assert not set(netns) & set(ss.run(["ip", "netns", "list"]).stdout.split())
    assert time.monotonic() - started < 20

"""Dead peer detection against strongSwan 5.9.8: charon is killed (SIGKILL, no delete) and
`ipsec up` acts on the child's dpd_action within dpd_delay + dpd_timeout: clear (the IKE SA and
its CHILD SA are gone) or restart (a new IKE_SA_INIT goes out).  Root, strongSwan and ping from
tests/setup-system.sh; without them the tests skip with the reason."""
import time

import pytest

from . import strongswan as ss
from .test_up_strongswan import A_ID, B_ID, UpProcess, skip_unless_ready

pytestmark = [pytest.mark.root, pytest.mark.slow]

DPD_DELAY, DPD_TIMEOUT = 2, 4


def conf(path, *, us, peer, action):
    path.write_text(f"""
[connections.net]
local_addrs = ["{us.ip}"]
remote_addrs = ["{peer.ip}"]
local_id = "{A_ID}"
remote_id = "{B_ID}"
psk = "{ss.DEFAULT_PSK}"
proposals = ["aes128gcm16-prfsha256-ecp256"]
encap = true
dpd_delay = "{DPD_DELAY}s"
dpd_timeout = "{DPD_TIMEOUT}s"

[connections.net.children.net]
local_ts = ["{us.inner_ip}/32"]
remote_ts = ["{peer.inner_ip}/32"]
esp_proposals = ["aes128gcm16"]
start_action = "start"
dpd_action = "{action}"
""")
    return path


@pytest.mark.parametrize("action", ["clear", "restart"])
def test_dead_strongswan_is_noticed(tmp_path, action):
    skip_unless_ready()
    theirs = {"proposals": "aes128gcm16-prfsha256-ecp256", "esp_proposals": "aes128gcm16"}
    with ss.StrongswanPair(start_a=False, conn_b=theirs) as pair:
        us, peer = pair.net.a, pair.net.b
        up = UpProcess(conf(tmp_path / "ipsec.toml", us=us, peer=peer, action=action), us.netns)
        try:
            up.wait_for(r"CHILD SA net installed")
            pair.b.proc.kill()                       # no delete reaches us
            killed = time.monotonic()
            up.wait_for(r"IKE SA net\S* deleted \(peer not responding\)",
                        timeout=DPD_DELAY + DPD_TIMEOUT + 5)
            took = time.monotonic() - killed
            assert took <= DPD_DELAY + DPD_TIMEOUT + 2, (took, up.log)
            up.wait_for(r"CHILD SA net deleted \(IKE SA gone\)", timeout=1)
            if action == "restart":
                up.wait_for(r"peer dead, restarting net|initiating", timeout=3)
                time.sleep(0.5)
                assert up.log.count("IKE_SA_INIT request 0") >= 2, up.log
            else:
                time.sleep(1.0)
                assert up.log.count("IKE_SA_INIT request 0") == 1, up.log
            up.stop()
        finally:
            up.kill()

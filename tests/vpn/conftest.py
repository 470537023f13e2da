"""Fixtures for the I/O layer: throwaway network namespaces, so no test touches the host's network.

Tests that need one are marked `root` and skip, with the reason, where namespaces or TUN devices
cannot be made (not root, no /dev/net/tun, no CAP_SYS_ADMIN in a container).
"""
import os

import pytest

from ipsec_core.vpn.netlink import Netlink
from ipsec_core.vpn.netns import temporary_netns


def _why_no_namespaces() -> str | None:
    if os.geteuid() != 0:
        return "needs root: creates network namespaces and TUN devices"
    if not os.path.exists("/dev/net/tun"):
        return "no /dev/net/tun (load the tun module, or give the container the device)"
    return None


@pytest.fixture
def netns():
    """The name of a fresh, empty network namespace (loopback up), removed after the test."""
    reason = _why_no_namespaces()
    if reason:
        pytest.skip(reason)
    try:
        ctx = temporary_netns("ipstest")
        name = ctx.__enter__()
    except OSError as exc:
        pytest.skip(f"cannot create a network namespace here: {exc}")
    try:
        with Netlink(netns=name) as nl:
            nl.set_up("lo")
        yield name
    finally:
        ctx.__exit__(None, None, None)

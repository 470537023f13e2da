"""TUN devices and netlink configuration, exercised in throwaway network namespaces.

A ping in the namespace to an address routed into the TUN device must come out of `read_batch`
as an echo request with the route's source address, and the echo reply written back must reach
the ping.
"""
import errno
import ipaddress
import select
import struct
import subprocess
import time

import pytest

from ipsec_core.errors import LocalError
from ipsec_core.vpn.netlink import Netlink, NetlinkOperationError
from ipsec_core.vpn.netns import call_in_netns, in_netns
from ipsec_core.vpn.tun import TunDevice


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def echo_reply_v4(request: bytes) -> tuple[bytes, bytes, bytes] | None:
    """(reply, request src, request dst) for an IPv4 ICMP echo request; None when not one."""
    ihl = (request[0] & 0x0F) * 4
    if request[0] >> 4 != 4 or request[9] != 1 or request[ihl] != 8:
        return None
    src, dst = request[12:16], request[16:20]
    icmp = bytearray(request[ihl:])
    icmp[0] = 0  # echo reply
    icmp[2:4] = b"\0\0"
    icmp[2:4] = struct.pack("!H", checksum(bytes(icmp)))
    header = bytearray(request[:ihl])
    header[8] = 64
    header[12:16], header[16:20] = dst, src
    header[10:12] = b"\0\0"
    header[10:12] = struct.pack("!H", checksum(bytes(header)))
    return bytes(header) + bytes(icmp), src, dst


def echo_reply_v6(request: bytes) -> tuple[bytes, bytes, bytes] | None:
    """(reply, request src, request dst) for an ICMPv6 echo request; None when not one."""
    if request[0] >> 4 != 6 or request[6] != 58 or request[40] != 128:
        return None
    src, dst = request[8:24], request[24:40]
    icmp = bytearray(request[40:])
    icmp[0] = 129  # echo reply
    icmp[2:4] = b"\0\0"
    pseudo = dst + src + struct.pack("!I3xB", len(icmp), 58)
    icmp[2:4] = struct.pack("!H", checksum(pseudo + bytes(icmp)))
    header = bytearray(request[:40])
    header[7] = 64
    header[8:24], header[24:40] = dst, src
    return bytes(header) + bytes(icmp), src, dst


CASES = {
    # family: tun addresses, routed prefix, route source, ping target, reply builder
    4: (["192.0.2.1/32", "192.0.2.2/32"], "198.51.100.0/24", "192.0.2.2", "198.51.100.7", echo_reply_v4),
    6: (["2001:db8:1::1/128", "2001:db8:1::2/128"], "2001:db8:2::/64", "2001:db8:1::2",
        "2001:db8:2::7", echo_reply_v6),
}


@pytest.mark.root
@pytest.mark.parametrize("version", [4, 6], ids=["ipv4", "ipv6"])
def test_ping_through_tun(netns, version):
    addresses, prefix, src, target, make_reply = CASES[version]
    tun = call_in_netns(netns, TunDevice, "ipstun%d", read_size=1500)
    try:
        assert tun.name.startswith("ipstun")
        with Netlink(netns=netns) as nl:
            nl.set_mtu(tun.name, 1400)
            nl.set_up(tun.index)  # by index: every call takes either
            info = nl.link_info(tun.name)
            assert (info["mtu"], info["up"], info["index"]) == (1400, True, tun.index)
            for address in addresses:
                nl.add_address(tun.name, address)
            assert set(map(str, nl.addresses(tun.name))) >= set(addresses)

            with nl.route_set() as routes:
                routes.add(prefix, dev=tun.name, src=src)
                installed = nl.routes(tun.name)
                assert any(r.prefix == ipaddress.ip_network(prefix) and r.src == ipaddress.ip_address(src)
                           for r in installed), installed

                tun.read_batch()  # whatever came first (IPv6 router solicitations, MLD)
                ping = subprocess.Popen(["ip", "netns", "exec", netns, "ping", f"-{version}", "-c1",
                                         "-W3", "-n", target],
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
                try:
                    request = None
                    deadline = time.monotonic() + 5
                    while request is None and time.monotonic() < deadline:
                        select.select([tun], [], [], 0.5)
                        for packet in tun.read_batch(16):
                            made = make_reply(packet)
                            if made is not None:
                                request = packet
                                reply, got_src, got_dst = made
                    assert request is not None, "no echo request came out of the TUN device"
                    assert ipaddress.ip_address(got_src) == ipaddress.ip_address(src)
                    assert ipaddress.ip_address(got_dst) == ipaddress.ip_address(target)
                    # A packet the kernel refuses (not IPv4/IPv6) is counted and skipped.
                    assert tun.write_batch([b"\x00" * 20, reply]) == 1
                    assert tun.write_errors == 1
                    output, _ = ping.communicate(timeout=5)
                    assert ping.returncode == 0, output.decode()
                finally:
                    if ping.poll() is None:
                        ping.kill()
                        ping.wait()
            assert not any(r.prefix == ipaddress.ip_network(prefix) for r in nl.routes(tun.name))

            name = tun.name
            tun.close()
            assert tun.closed
            assert not nl.exists(name)
            with pytest.raises(NetlinkOperationError) as info:
                nl.index(name)
            assert info.value.errno == errno.ENODEV and name in str(info.value)
    finally:
        tun.close()


@pytest.mark.root
def test_netlink_errors_name_device_and_prefix(netns):
    with in_netns(netns):
        tun = TunDevice("ipstunE")
    with tun, Netlink(netns=netns) as nl:
        assert tun.name == "ipstunE"
        nl.set_up(tun.name)
        nl.add_address(tun.name, "192.0.2.1/32")
        with nl.route_set() as routes:
            routes.add("203.0.113.0/24", dev=tun.name, src="192.0.2.1")
            # the same route again: refused, and not taken over by the set
            with pytest.raises(NetlinkOperationError) as info:
                routes.add("203.0.113.0/24", dev=tun.name, src="192.0.2.1")
            assert info.value.errno == errno.EEXIST
            assert "203.0.113.0/24" in str(info.value) and "ipstunE" in str(info.value)
            assert len(routes) == 1
            # a source that is not an address of this host
            with pytest.raises(NetlinkOperationError) as info:
                routes.add("198.51.100.0/24", dev=tun.name, src="192.0.2.77")
            assert info.value.prefix == "198.51.100.0/24"
            # IPv6 route next to the IPv4 one
            nl.add_address(tun.name, "2001:db8:1::1/128")
            routes.add("2001:db8:9::/48", dev=tun.index, src="2001:db8:1::1")
            assert len(routes) == 2
        assert [r for r in nl.routes(tun.name) if r.prefix.prefixlen in (24, 48)] == []

        with pytest.raises(NetlinkOperationError) as info:
            nl.add_route("198.51.100.0/24", dev="ipst-nodev")
        assert info.value.errno == errno.ENODEV and "ipst-nodev" in str(info.value)
        with pytest.raises(LocalError, match="198.51.100.1/24"):
            nl.add_route("198.51.100.1/24", dev=tun.name)  # host bits set
        with pytest.raises(LocalError, match="not IPv4"):
            nl.add_route("198.51.100.0/24", dev=tun.name, src="2001:db8:1::1")
        with pytest.raises(LocalError, match="MTU"):
            nl.set_mtu(tun.name, 20)

        nl.remove_address(tun.name, "192.0.2.1/32")
        assert "192.0.2.1/32" not in map(str, nl.addresses(tun.name))
        with pytest.raises(NetlinkOperationError) as info:
            nl.remove_address(tun.name, "192.0.2.1/32")
        assert "192.0.2.1/32" in str(info.value)

        # Routes whose device went away count as removed.
        with nl.route_set() as routes:
            nl.add_address(tun.name, "192.0.2.1/32")
            routes.add("203.0.113.0/24", dev=tun.name)
            tun.close()
        assert not nl.exists("ipstunE")

        # delete_link removes a device whose fd is still open; closing it afterwards is harmless
        with in_netns(netns):
            other = TunDevice("ipstunD")
        with other:
            nl.set_up(other.index)
            nl.set_down("ipstunD")
            assert nl.link_info(other.index)["up"] is False
            nl.delete_link("ipstunD")
            assert not nl.exists(other.index)
            with pytest.raises(NetlinkOperationError, match="ipstunD"):
                nl.delete_link("ipstunD")


@pytest.mark.root
def test_tun_read_batch_empty_and_read_size(netns):
    tun = call_in_netns(netns, TunDevice)
    with tun:
        assert tun.name.startswith("ipsec")
        assert tun.read_batch() == []
        assert tun.read() is None
    assert tun.fileno() == -1


def test_tun_rejects_bad_names():
    with pytest.raises(ValueError, match="1 to 15 bytes"):
        TunDevice("a-name-far-too-long")
    with pytest.raises(ValueError):
        TunDevice("ipsec0", read_size=0)

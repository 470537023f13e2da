"""The I/O layer of ipsec-suite: every byte that crosses a socket, a TUN device or netlink.

Owns: UDP endpoints for IKE and ESP-in-UDP (`udp`), TUN devices (`tun`), links, addresses and
routes through pyroute2 (`netlink`), network namespaces (`netns`), pcap files (`pcap`), process
tuning (`tuning`), and later the `ipsec up` process that drives the sans-I/O IKE and data plane
with them.
Must not: implement protocol logic.  Bytes and addresses go down to IKE and the data plane,
which stay free of sockets and clocks; this layer reads the clock and passes it as `now`.
"""

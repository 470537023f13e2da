"""Links, addresses and routes through rtnetlink (pyroute2).

Owns: what `ipsec up` changes in the kernel's network configuration - a link's state and MTU,
addresses on it, routes to the remote traffic selectors through the TUN device (with a `src`
inside the local traffic selector, as strongSwan installs them), deleting a link - and the
undo log that removes exactly what was added (`RouteSet`).
Must not: decide which routes a tunnel needs (the policy layer says so), or shell out to `ip`.

Every method takes the device as a name or an interface index.  Kernel refusals come back as
`NetlinkOperationError` (an OSError with the kernel's errno) whose message names the operation,
the device and the prefix; malformed prefixes or addresses are a `LocalError`.
"""
from __future__ import annotations

import errno
import ipaddress
import os
import socket
from dataclasses import dataclass
from typing import Iterator, Union

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError as _PyrouteNetlinkError

from ipsec_core.errors import LocalError
from ipsec_core.vpn.netns import in_netns

Device = Union[str, int]
IpNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
IpAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
IpInterface = Union[ipaddress.IPv4Interface, ipaddress.IPv6Interface]

RT_TABLE_MAIN = 254
FIB_RULE_INVERT = 0x2
IFA_F_NODAD = 0x02
#: errnos that mean "already gone" when removing: the route, address or link is not there.
_GONE = frozenset({errno.ESRCH, errno.ENOENT, errno.ENODEV, errno.EADDRNOTAVAIL})


class NetlinkOperationError(OSError):
    """The kernel refused a netlink request.  `.errno` is the kernel's; the message says what was
    asked, on which device and prefix."""

    def __init__(self, err: int, operation: str, *, device: Device | None = None,
                 prefix: str | None = None):
        self.operation = operation
        self.device = device
        self.prefix = prefix
        super().__init__(err, f"{operation}: {os.strerror(err)}")


def _network(prefix, what: str = "prefix") -> IpNetwork:
    try:
        return ipaddress.ip_network(prefix)
    except ValueError as exc:
        raise LocalError(f"bad {what} {prefix!r}: {exc}") from None


def _address(address, what: str = "address") -> IpAddress:
    try:
        return ipaddress.ip_address(address)
    except ValueError as exc:
        raise LocalError(f"bad {what} {address!r}: {exc}") from None


def _interface(address) -> IpInterface:
    try:
        return ipaddress.ip_interface(address)
    except ValueError as exc:
        raise LocalError(f"bad interface address {address!r} (want ADDRESS/PREFIXLEN): {exc}") from None


def _family(version: int) -> int:
    return socket.AF_INET if version == 4 else socket.AF_INET6


@dataclass(frozen=True, slots=True)
class Route:
    """A unicast route through a device, as installed or as read back from the kernel."""

    prefix: IpNetwork
    ifindex: int
    src: IpAddress | None = None
    metric: int | None = None
    table: int = RT_TABLE_MAIN

    def describe(self, device: Device | None = None) -> str:
        text = f"{self.prefix} dev {device if device is not None else self.ifindex}"
        if self.src is not None:
            text += f" src {self.src}"
        if self.metric is not None:
            text += f" metric {self.metric}"
        if self.table != RT_TABLE_MAIN:
            text += f" table {self.table}"
        return text


class Netlink:
    """One rtnetlink socket, in the current namespace or in the named one `netns`.

    Use as a context manager, or call `close()`.  Not thread-safe: one per thread or task.
    """

    def __init__(self, *, netns: str | None = None):
        self.netns = netns
        if netns is None:
            self._ipr = IPRoute()
        else:
            # The socket belongs to the namespace of the thread that opens it.
            with in_netns(netns):
                self._ipr = IPRoute()

    def close(self) -> None:
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None

    def __enter__(self) -> "Netlink":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- links ---------------------------------------------------------------------------

    def index(self, device: Device) -> int:
        """The interface index of `device` (a name or an index that exists)."""
        if isinstance(device, int):
            if not self._link_msgs(device):
                raise NetlinkOperationError(errno.ENODEV, f"no device with index {device}", device=device)
            return device
        found = self._ipr.link_lookup(ifname=device)
        if not found:
            raise NetlinkOperationError(errno.ENODEV, f"no device named {device!r}", device=device)
        return found[0]

    def _link_msgs(self, index: int) -> list:
        try:
            return list(self._ipr.get_links(index))
        except _PyrouteNetlinkError as exc:
            if exc.code in _GONE:
                return []
            raise

    def exists(self, device: Device) -> bool:
        """Whether `device` exists in this namespace."""
        try:
            self.index(device)
        except NetlinkOperationError:
            return False
        return True

    def link_info(self, device: Device) -> dict:
        """Name, index, MTU and whether it is up: `{"name", "index", "mtu", "up"}`."""
        index = self.index(device)
        msgs = self._link_msgs(index)
        if not msgs:
            raise NetlinkOperationError(errno.ENODEV, f"no device {device!r}", device=device)
        msg = msgs[0]
        return {"name": msg.get("IFLA_IFNAME"), "index": index, "mtu": msg.get("IFLA_MTU"),
                "up": bool(msg["flags"] & 0x1)}

    def _call(self, operation: str, fn, *args, device: Device | None = None,
              prefix: str | None = None, **kwargs):
        try:
            return fn(*args, **kwargs)
        except _PyrouteNetlinkError as exc:
            raise NetlinkOperationError(exc.code, operation, device=device, prefix=prefix) from None

    def set_up(self, device: Device) -> None:
        """Bring `device` up."""
        index = self.index(device)
        self._call(f"set link {device} up", self._ipr.link, "set", index=index, state="up", device=device)

    def set_down(self, device: Device) -> None:
        """Take `device` down."""
        index = self.index(device)
        self._call(f"set link {device} down", self._ipr.link, "set", index=index, state="down",
                   device=device)

    def set_mtu(self, device: Device, mtu: int) -> None:
        """Set the MTU of `device` (below 1280 the kernel turns IPv6 off on that link)."""
        if not isinstance(mtu, int) or not 68 <= mtu <= 65535:
            raise LocalError(f"bad MTU {mtu!r} for {device}: 68..65535")
        index = self.index(device)
        self._call(f"set link {device} mtu {mtu}", self._ipr.link, "set", index=index, mtu=mtu,
                   device=device)

    def delete_link(self, device: Device) -> None:
        """Delete the link `device` (a TUN device goes away by closing it instead)."""
        index = self.index(device)
        self._call(f"delete link {device}", self._ipr.link, "del", index=index, device=device)

    # -- addresses -----------------------------------------------------------------------

    def add_address(self, device: Device, address, *, nodad: bool = True) -> None:
        """Add `address` ("192.0.2.1/24", "2001:db8::1/64") to `device`.

        IPv6 addresses skip duplicate address detection by default, so they are usable at once
        (a tentative address cannot be a source or be bound).
        """
        iface = _interface(address)
        index = self.index(device)
        kwargs = {}
        if iface.version == 6 and nodad:
            kwargs["flags"] = IFA_F_NODAD
        self._call(f"add address {iface} dev {device}", self._ipr.addr, "add", index=index,
                   address=str(iface.ip), prefixlen=iface.network.prefixlen,
                   family=_family(iface.version), device=device, prefix=str(iface), **kwargs)

    def remove_address(self, device: Device, address) -> None:
        """Remove `address` ("192.0.2.1/24") from `device`."""
        iface = _interface(address)
        index = self.index(device)
        self._call(f"remove address {iface} dev {device}", self._ipr.addr, "del", index=index,
                   address=str(iface.ip), prefixlen=iface.network.prefixlen,
                   family=_family(iface.version), device=device, prefix=str(iface))

    def addresses(self, device: Device) -> list[IpInterface]:
        """The addresses on `device`, both families."""
        index = self.index(device)
        out = []
        for msg in self._call(f"list addresses dev {device}", self._ipr.get_addr, index=index,
                              device=device):
            out.append(ipaddress.ip_interface(f"{msg.get('IFA_ADDRESS')}/{msg['prefixlen']}"))
        return out

    # -- routes --------------------------------------------------------------------------

    def make_route(self, prefix, *, dev: Device, src=None, metric: int | None = None,
                   table: int = RT_TABLE_MAIN) -> Route:
        """Check and resolve a route's parts into a `Route` (the device must exist)."""
        network = _network(prefix)
        source = None
        if src is not None:
            source = _address(src, "route source")
            if source.version != network.version:
                raise LocalError(f"route {network}: source {source} is not IPv{network.version}")
        return Route(network, self.index(dev), source, metric, table)

    def _route_kwargs(self, route: Route) -> dict:
        kwargs = {"dst": str(route.prefix), "oif": route.ifindex,
                  "family": _family(route.prefix.version), "table": route.table}
        if route.src is not None:
            kwargs["prefsrc"] = str(route.src)
        if route.metric is not None:
            kwargs["priority"] = route.metric
        return kwargs

    def install_route(self, route: Route, *, device: Device | None = None) -> None:
        """Add a `Route`; EEXIST if the same route is there (it is never taken over)."""
        self._call(f"add route {route.describe(device)}", self._ipr.route, "add",
                   device=device if device is not None else route.ifindex,
                   prefix=str(route.prefix), **self._route_kwargs(route))

    def uninstall_route(self, route: Route, *, device: Device | None = None) -> None:
        """Remove a `Route` (ESRCH if it is not there)."""
        self._call(f"remove route {route.describe(device)}", self._ipr.route, "del",
                   device=device if device is not None else route.ifindex,
                   prefix=str(route.prefix), **self._route_kwargs(route))

    def add_route(self, prefix, *, dev: Device, src=None, metric: int | None = None,
                  table: int = RT_TABLE_MAIN) -> Route:
        """Route `prefix` ("198.51.100.0/24", "2001:db8:2::/48") through `dev`, optionally with
        source address `src`, which must be an address of this host.  Returns the `Route`."""
        route = self.make_route(prefix, dev=dev, src=src, metric=metric, table=table)
        self.install_route(route, device=dev)
        return route

    def remove_route(self, prefix, *, dev: Device, src=None, metric: int | None = None,
                     table: int = RT_TABLE_MAIN) -> None:
        """Remove the route `prefix` through `dev` (the arguments as given to `add_route`)."""
        route = self.make_route(prefix, dev=dev, src=src, metric=metric, table=table)
        self.uninstall_route(route, device=dev)

    def routes(self, device: Device, *, table: int = RT_TABLE_MAIN) -> list[Route]:
        """Unicast routes through `device` in `table` (the kernel's own prefix routes included).

        `metric` is what the kernel reports: IPv6 routes always have one (1024 by default)."""
        index = self.index(device)
        out = []
        for family in (socket.AF_INET, socket.AF_INET6):
            for msg in self._call(f"list routes dev {device}", self._ipr.get_routes,
                                  family=family, oif=index, table=table, device=device):
                if msg["type"] != 1:  # RTN_UNICAST
                    continue
                dst = msg.get("RTA_DST") or ("0.0.0.0" if family == socket.AF_INET else "::")
                src = msg.get("RTA_PREFSRC")
                out.append(Route(ipaddress.ip_network(f"{dst}/{msg['dst_len']}"), index,
                                 ipaddress.ip_address(src) if src else None,
                                 msg.get("RTA_PRIORITY"),
                                 msg.get("RTA_TABLE") or msg["table"]))
        return out

    # -- policy rules --------------------------------------------------------------------

    def add_bypass_rule(self, version: int, *, mark: int, table: int, priority: int) -> None:
        """`ip rule add not fwmark MARK lookup TABLE priority PRIORITY` for IPv`version`: traffic
        without the mark consults `table` first; marked traffic (the VPN's own sockets) skips it.
        EEXIST if the same rule is there."""
        self._call(f"add rule not fwmark {mark:#x} lookup {table} (IPv{version})", self._ipr.rule,
                   "add", **self._rule_kwargs(version, mark=mark, table=table, priority=priority))

    def remove_bypass_rule(self, version: int, *, mark: int, table: int, priority: int) -> None:
        """Undo `add_bypass_rule` (a rule already gone is not an error)."""
        try:
            self._call(f"remove rule not fwmark {mark:#x} lookup {table} (IPv{version})",
                       self._ipr.rule, "del",
                       **self._rule_kwargs(version, mark=mark, table=table, priority=priority))
        except NetlinkOperationError as exc:
            if exc.errno not in _GONE:
                raise

    @staticmethod
    def _rule_kwargs(version: int, *, mark: int, table: int, priority: int) -> dict:
        return {"table": table, "priority": priority, "fwmark": mark, "fwmask": 0xFFFFFFFF,
                "flags": FIB_RULE_INVERT, "family": _family(version)}

    def rules(self, version: int) -> list[dict]:
        """The policy rules of IPv`version`: `{"priority", "table", "fwmark", "invert"}` each."""
        out = []
        for msg in self._call(f"list rules (IPv{version})", self._ipr.get_rules,
                              family=_family(version)):
            out.append({"priority": msg.get("FRA_PRIORITY"), "table": msg.get("FRA_TABLE"),
                        "fwmark": msg.get("FRA_FWMARK"), "invert": bool(msg["flags"] & FIB_RULE_INVERT)})
        return out

    def route_set(self) -> "RouteSet":
        """An undo log of routes: `with nl.route_set() as routes: routes.add(...)`."""
        return RouteSet(self)


class RouteSet:
    """Routes added through it are removed when it exits (or on `remove_all()`), newest first.

    Only what this set added is removed: a route that was already there makes `add` fail with
    EEXIST and is not recorded.  Routes the kernel dropped by itself (their device went away)
    count as removed.
    """

    def __init__(self, netlink: Netlink):
        self._netlink = netlink
        self._routes: list[tuple[Route, Device]] = []

    @property
    def routes(self) -> list[Route]:
        return [route for route, _ in self._routes]

    def __len__(self) -> int:
        return len(self._routes)

    def __iter__(self) -> Iterator[Route]:
        return iter(self.routes)

    def add(self, prefix, *, dev: Device, src=None, metric: int | None = None,
            table: int = RT_TABLE_MAIN) -> Route:
        """As `Netlink.add_route`, and remember the route for removal."""
        route = self._netlink.add_route(prefix, dev=dev, src=src, metric=metric, table=table)
        self._routes.append((route, dev))
        return route

    def remove_all(self) -> None:
        """Remove every route this set added; try all, then raise the first failure."""
        first_error: NetlinkOperationError | None = None
        while self._routes:
            route, dev = self._routes.pop()
            try:
                self._netlink.uninstall_route(route, device=dev)
            except NetlinkOperationError as exc:
                if exc.errno not in _GONE and first_error is None:
                    first_error = exc
        if first_error is not None:
            raise first_error

    def __enter__(self) -> "RouteSet":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self.remove_all()
        except NetlinkOperationError:
            if exc_type is None:
                raise

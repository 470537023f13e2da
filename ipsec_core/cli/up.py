"""`ipsec up`: run the connections of a file in the foreground until SIGINT or SIGTERM, or
(`ipsec up NAME` without `--config`) ask the running process to initiate NAME.

Owns: the command's options, logging setup (one line per event on stderr; `-v` for exchange
detail), entering `--netns`, the root check, the control socket's path, and the signal handlers
that stop the driver (delete sent to the peer, routes and TUN device removed, exit 0).
Must not: hold protocol or packet logic (that is `ipsec_core.vpn.driver`) or the control
protocol (`ipsec_core.vpn.control`).
"""
from __future__ import annotations

import asyncio
import errno
import logging
import signal
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from ipsec_core.cli._common import fail, handle_errors

LOGGER = "ipsec"


class _LineFormatter(logging.Formatter):
    """`HH:MM:SS message`; warnings and errors say so."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if record.levelno >= logging.ERROR:
            return text.replace(record.getMessage(), "error: " + record.getMessage(), 1)
        if record.levelno >= logging.WARNING:
            return text.replace(record.getMessage(), "warning: " + record.getMessage(), 1)
        return text


def setup_logging(level: int, stream=None) -> None:
    """Send the `ipsec` logger's lines at `level` and above to stderr, one line each."""
    logger = logging.getLogger(LOGGER)
    for handler in list(logger.handlers):
        if getattr(handler, "_ipsec_cli", False):
            logger.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler._ipsec_cli = True
    handler.setFormatter(_LineFormatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


def load_connections(path: Path) -> dict:
    """`load_connections(path) -> {name: IkeConfig}` from the connections loader."""
    try:
        from ipsec_core.connections import load_connections as loader
    except ImportError:
        try:
            from ipsec_core.config import load_connections as loader
        except ImportError:
            fail("this build has no connection file loader (ipsec_core.connections)")
    return loader(path)


def select(connections: dict, names: list[str] | None, *, file: str) -> list:
    if not connections:
        fail(f"{file}: no connection defined")
    if not names:
        return list(connections.values())
    missing = [n for n in names if n not in connections]
    if missing:
        fail(f"{file}: no connection {', '.join(map(repr, missing))}; the file has "
             f"{', '.join(sorted(connections))}")
    return [connections[n] for n in names]


def open_tun(name: str, mtu: int, *, offload: bool = True):
    from ipsec_core.vpn.driver import TunInterface

    try:
        return TunInterface(name, mtu=mtu, offload=offload)
    except PermissionError as exc:
        fail(f"ipsec up needs root (or CAP_NET_ADMIN) to create a TUN device and its routes: "
             f"{exc.strerror or exc}; run it with sudo")
    except OSError as exc:
        if exc.errno in (errno.EPERM, errno.EACCES):
            fail(f"ipsec up needs root (or CAP_NET_ADMIN) to create a TUN device and its routes: "
                 f"{exc.strerror}; run it with sudo")
        raise


async def _serve(configs, *, tun, save_keys: Path | None, control: Path | None,
                 control_required: bool, path_mtu: int | None, batch_wait: float = 0.0005,
                 udp_gso: bool = True) -> None:
    from ipsec_core.vpn.control import ControlError, ControlServer, driver_handler
    from ipsec_core.vpn.driver import Driver

    try:
        driver = Driver(configs, inner=tun, save_keys=save_keys, path_mtu=path_mtu, batch_wait=batch_wait,
                        udp_gso=udp_gso)
    except BaseException:
        tun.close()
        raise
    server = None
    if control is not None:
        server = ControlServer(control, driver_handler(driver))
        try:
            await server.start()
        except ControlError as exc:
            if control_required:
                tun.close()
                raise
            logging.getLogger(LOGGER).warning("%s; running without a control socket", exc)
            server = None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, driver.stop)
    try:
        try:
            await driver.start()
        except BaseException:
            tun.close()
            raise
        names = ", ".join(c.name for c in configs)
        logging.getLogger(LOGGER).info("up: %s on %s, TUN %s mtu %d%s (stop with Ctrl-C or SIGTERM)",
                                       names, ", ".join(driver.local_addresses), tun.name, tun.mtu,
                                       f", control {server.path}" if server else "")
        await driver.wait_stopped()
    finally:
        if server is not None:
            server.close()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    logging.getLogger(LOGGER).info("stopped")


@handle_errors
def up(
    names: Annotated[Optional[list[str]], typer.Argument(
        metavar="[NAME]...", help="Without --config: ask the running ipsec up (through its "
                                  "control socket) to initiate these connections.",
        show_default=False)] = None,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", metavar="FILE", dir_okay=False,
                                                   help="Connection file (TOML): run them here.")] = None,
    connection: Annotated[Optional[list[str]], typer.Option(
        "--connection", "-n", metavar="NAME",
        help="Only this connection (repeat for several; default: every connection of the file).")] = None,
    save_keys: Annotated[Optional[Path], typer.Option(
        "--save-keys", metavar="DIR", file_okay=False,
        help="Write Wireshark's ikev2_decryption_table and esp_sa into DIR for every IKE and "
             "CHILD SA (files 0600).  They hold keys: only for debugging.")] = None,
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True,
                                         help="Exchange detail (every IKE message sent and received).")] = 0,
    netns: Annotated[Optional[str], typer.Option(
        "--netns", metavar="NAME", help="Run inside this network namespace (ip netns name).")] = None,
    tun_name: Annotated[str, typer.Option("--tun", metavar="NAME",
                                          help="TUN device name; %d for the kernel to number it.")] = "ipsec%d",
    mtu: Annotated[Optional[int], typer.Option(
        "--mtu", help="MTU of the TUN device (default: what fits --path-mtu after the ESP, UDP "
                      "and outer IP overhead of the configured proposals).")] = None,
    path_mtu: Annotated[int, typer.Option(
        "--path-mtu", help="Largest ESP-in-UDP packet on the outer path; bigger inner packets "
                           "are answered with ICMP too-big.")] = 1500,
    control: Annotated[Optional[Path], typer.Option(
        "--control", metavar="PATH", dir_okay=False,
        help="Control socket for ipsec status / up / down (default /run/ipsec-suite/control.sock, "
             "or netns-NAME.sock with --netns).")] = None,
    offload: Annotated[bool, typer.Option(
        "--offload/--no-offload",
        help="TUN offloads: take TCP super-packets from the local stack and cut them here, and "
             "hand decrypted TCP segments of one flow back as one write, from a thread of its "
             "own (--no-offload: one packet per read and write, on the event loop).")] = True,
    batch_wait_us: Annotated[int, typer.Option(
        "--batch-wait-us", min=0, max=100_000, metavar="US",
        help="How long packets for a CHILD SA whose backend computes whole batches in one call "
             "(the GPU) may wait for more, at most (0: each read as it comes).")] = 500,
    gso: Annotated[bool, typer.Option(
        "--gso/--no-gso",
        help="Send runs of ESP datagrams with one UDP_SEGMENT system call (--no-gso: one each; "
             "fewer drops at a peer that reads one datagram at a time, such as strongSwan's "
             "kernel-libipsec).  UDP_GRO stays on.")] = True,
) -> None:
    """Bring up IKEv2 connections and carry their traffic through a TUN device, in the foreground.

    Connections whose children have start_action = "start" are initiated; "trap" ones come up
    on the first packet for them; the others wait for their peer.  SIGINT or SIGTERM deletes
    the SAs at the peer, removes the routes and the TUN device and exits 0.  Needs root (TUN,
    routes, ports 500/4500).  `ipsec up NAME` (no --config) initiates NAME in a running one.
    """
    if config is None:
        if not names:
            fail("give --config FILE to run connections, or NAME to initiate one in a running "
                 "ipsec up")
        from ipsec_core.cli.status import control_request

        for name in names:
            print(control_request(control, netns, {"command": "up", "name": name}))
        return
    if names:
        fail(f"with --config, choose connections with --connection, not {' '.join(names)}")
    setup_logging(logging.DEBUG if verbose else logging.INFO)
    # Until the event loop takes the signals over, SIGINT and SIGTERM unwind the start-up:
    # whatever is open by then (the TUN device) is closed on the way out.
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        _up(config, connection, save_keys, netns, tun_name, mtu, path_mtu, control, offload,
            batch_wait_us, gso)
    except _Interrupted:
        logging.getLogger(LOGGER).info("stopped during start-up")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class _Interrupted(Exception):
    pass


def _interrupt(signum, frame) -> None:
    raise _Interrupted()


def _up(config: Path, connection, save_keys, netns, tun_name: str, mtu: int | None,
        path_mtu: int, control: Path | None, offload: bool = True, batch_wait_us: int = 500,
        gso: bool = True) -> None:
    from ipsec_core.vpn.control import default_path
    from ipsec_core.vpn.driver import inner_mtu

    if netns:
        from ipsec_core.vpn.netns import enter_netns

        try:
            enter_netns(netns)
        except PermissionError:
            fail(f"entering network namespace {netns!r} needs root (CAP_SYS_ADMIN)")
    file = str(config)
    configs = select(load_connections(config), connection, file=file)
    if mtu is None:
        mtu = inner_mtu(configs, path_mtu=path_mtu)
    tun = open_tun(tun_name, mtu, offload=offload)
    try:
        asyncio.run(_serve(configs, tun=tun, save_keys=save_keys,
                           control=control or default_path(netns), control_required=control is not None,
                           path_mtu=path_mtu, batch_wait=batch_wait_us / 1e6, udp_gso=gso))
    except BaseException:
        tun.close()
        raise


__all__ = ["up", "setup_logging", "load_connections"]

"""`ipsec status [--json]` and `ipsec down NAME`: ask a running `ipsec up` through its control socket.

Owns: finding the socket (`--control`, or the default for `--netns`), and printing the status in
words or as JSON.
Must not: hold protocol logic or the socket protocol (`ipsec_core.vpn.control`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ipsec_core.cli._common import fail, handle_errors, print_json

ControlOption = Annotated[Optional[Path], typer.Option(
    "--control", metavar="PATH", dir_okay=False,
    help="Control socket of the running ipsec up (default /run/ipsec-suite/control.sock).")]
NetnsOption = Annotated[Optional[str], typer.Option(
    "--netns", metavar="NAME", help="The ipsec up started with --netns NAME (its default socket).")]


def control_request(control: Path | None, netns: str | None, message: dict) -> Any:
    """One request to the running `ipsec up`; a failure is one line on stderr and exit 1."""
    from ipsec_core.vpn.control import ControlError, default_path, request

    try:
        return request(control or default_path(netns), message)
    except ControlError as exc:
        fail(str(exc))


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _drops(d: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(d.items())) or "none"


def format_status(st: dict) -> str:
    """The status answer in words, strongSwan's `--list-sas` shape."""
    lines = [f"listening: {', '.join(st.get('listening', []))}; inner {st.get('inner')}, "
             f"path mtu {st.get('path_mtu')}"]
    for conn in st["connections"]:
        children = ", ".join(f"{c['name']} ({c['mode']}, {c['start_action']})" for c in conn["children"])
        lines.append(f"{conn['name']}: {', '.join(conn['local_addrs'])} === "
                     f"{', '.join(conn['remote_addrs'])}; children {children}"
                     + ("; trap installed" if conn.get("trap") else ""))
        if not conn["ike_sas"]:
            lines.append("  no IKE SA")
        for ike in conn["ike_sas"]:
            rekey = "" if ike["rekey_in_s"] is None else f", rekey in {ike['rekey_in_s']:g} s"
            lines.append(f"  IKE SA [{ike['uid']}] {ike['state']}, {ike['local']} ({ike['local_id']}) "
                         f"=== {ike['remote']} ({ike['remote_id']}), "
                         f"{'initiator' if ike['initiator'] else 'responder'}, "
                         f"{ike['established_s']:g} s ago{rekey}")
            lines.append(f"    SPIs {ike['spi_i']}_i {ike['spi_r']}_r, {ike['proposal']}")
        for c in conn["child_sas"]:
            rekey = "" if c["rekey_in_s"] is None else f", rekey in {c['rekey_in_s']:g} s"
            backend = (c["backend_in"] if c["backend_in"] == c["backend_out"]
                       else f"{c['backend_in']} in / {c['backend_out']} out")
            lines.append(f"  CHILD SA {c['name']} {c['mode']}, SPIs {c['spi_in']}_i {c['spi_out']}_o, "
                         f"{c['proposal']}[{backend}]{rekey}")
            lines.append(f"    in  {c['packets_in']} packets, {_size(c['bytes_in'])}; drops {_drops(c['drops_in'])}")
            lines.append(f"    out {c['packets_out']} packets, {_size(c['bytes_out'])}; drops {_drops(c['drops_out'])}")
            lines.append(f"    {', '.join(c['local_ts'])} === {', '.join(c['remote_ts'])}")
    d = st["driver"]
    lines.append(f"packets: {d['inner_read']} read from {st.get('inner')}, {d['esp_sent']} ESP sent, "
                 f"{d['esp_received']} ESP received, {d['inner_written']} written to {st.get('inner')}")
    lines.append(f"drops: {_drops(st['drops'])}")
    return "\n".join(lines)


@handle_errors
def status(
    json_out: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False,
    control: ControlOption = None,
    netns: NetnsOption = None,
) -> None:
    """Show the connections of a running `ipsec up`: IKE and CHILD SAs, SPIs, algorithms,
    backends, packets, bytes, drops by reason, time to the next rekey."""
    result = control_request(control, netns, {"command": "status"})
    if json_out:
        print_json(result)
    else:
        print(format_status(result))


@handle_errors
def down(
    names: Annotated[list[str], typer.Argument(metavar="NAME...", help="Connections to delete.")],
    control: ControlOption = None,
    netns: NetnsOption = None,
) -> None:
    """Delete the IKE SAs (and their CHILD SAs) of connections in a running `ipsec up`; trap
    policies stay, so the next matching packet brings a trap connection up again."""
    for name in names:
        print(control_request(control, netns, {"command": "down", "name": name}))


__all__ = ["status", "down", "control_request", "format_status"]

"""`ipsec wireshark-keys`: an SA file as rows of Wireshark's `esp_sa` table (the rules are in
`ipsec_core.tools.wireshark`, which this command only calls)."""
from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated, Optional

import typer

from ipsec_core.cli._common import fail, handle_errors, warn
from ipsec_core.tools.wireshark import *  # noqa: F401,F403  (kept importable from here)
from ipsec_core.tools.wireshark import (WIRESHARK_UDPENCAP_PORT, EspSaRow, decode_as_ports,
                                        esp_sa_rows, tshark_args, uat_text, write_config_dir)


@handle_errors
def wireshark_keys(
    config: Annotated[Path, typer.Option("--config", "-c", metavar="SA.toml", dir_okay=False,
                                         help="SA file (TOML, \\[\\[sa]] tables).")],
    sa: Annotated[Optional[list[str]], typer.Option(
        "--sa", "-s", metavar="NAME",
        help="Only this SA (repeat for several; default: every SA of the file).")] = None,
    fmt: Annotated[str, typer.Option(
        "--format", "-f", metavar="uat|tshark-args",
        help="[bold]uat[/]: the lines of an esp_sa file; [bold]tshark-args[/]: -o arguments, "
        "one per line, shell-quoted.")] = "uat",
    config_dir: Annotated[Optional[Path], typer.Option(
        "--write-config", metavar="DIR", file_okay=False,
        help="Also write esp_sa and preferences into this folder, for "
        "WIRESHARK_CONFIG_DIR=DIR tshark ...")] = None,
) -> None:
    """Print the SAs as rows of Wireshark 4.0's esp_sa table (8 columns), to decrypt captures.

    Save the uat output as ~/.config/wireshark/esp_sa (and enable ESP decryption in the
    preferences), or use --write-config DIR, or pass the tshark-args output to tshark:
    eval tshark -r OUT.pcap $(ipsec wireshark-keys -c SA.toml --format tshark-args).
    Src/Dest are the outer addresses on the wire.  SAs Wireshark 4.0 cannot decrypt (AES-CCM,
    AES-GMAC, ChaCha20-Poly1305) are skipped with a warning on stderr.
    """
    from ipsec_core.config import find_sa, load_sa_file

    if fmt not in ("uat", "tshark-args"):
        fail(f"--format {fmt!r}: expected 'uat' or 'tshark-args'")
    file = str(config)
    configs = load_sa_file(config)
    if sa:
        configs = [find_sa(configs, name, file=file) for name in sa]
    rows: list[EspSaRow] = []
    udp_ports: list[int] = []
    for cfg in configs:
        more, warnings = esp_sa_rows(cfg)
        for w in warnings:
            warn(w)
        ports = decode_as_ports(cfg) if more else []
        if ports and fmt == "uat" and config_dir is None:
            warn(f"SA {cfg.name!r}: ESP-in-UDP on UDP ports {ports}: Wireshark looks for it on "
                 f"port {WIRESHARK_UDPENCAP_PORT} only; use Decode As UDPENCAP (tshark -d "
                 f"udp.port=={ports[0]},udpencap), --write-config, or --format tshark-args")
        udp_ports.extend(p for p in ports if p not in udp_ports)
        # An SA file may hold both ends of a pair (the out SA and its in twin): one row each.
        rows.extend(r for r in more if r not in rows)
    if not rows:
        fail(f"{file}: no SA that Wireshark 4.0 can decrypt")
    if config_dir is not None:
        write_config_dir(config_dir, rows, udp_ports)
    if fmt == "uat":
        typer.echo(uat_text(rows), nl=False)
    else:
        args = tshark_args(rows, udp_ports)
        for opt, value in zip(args[::2], args[1::2]):
            typer.echo(f"{opt} {shlex.quote(value)}")

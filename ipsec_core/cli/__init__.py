"""The `ipsec` command line (typer).

Owns: the command names and options users type (`backends`, `selftest`, `pcap protect`,
`pcap unprotect`, `wireshark-keys`, `perf`, `up`, `status`, `down`, `demo`) and the rule that errors are one line
on stderr with a non-zero exit (see `_common.handle_errors`).  `--json` output goes to stdout,
for scripts.
Must not: hold data-plane logic; commands call the library and report.
"""
from __future__ import annotations

import typer

from ipsec_core.cli import backends as _backends
from ipsec_core.cli import demo as _demo
from ipsec_core.cli import pcap as _pcap
from ipsec_core.cli import perf as _perf
from ipsec_core.cli import plugins as _plugins
from ipsec_core.cli import status as _status
from ipsec_core.cli import up as _up
from ipsec_core.cli import wireshark as _wireshark

app = typer.Typer(
    name="ipsec",
    help="A userspace IPsec stack: crypto backends, self-tests, pcap protect/unprotect, "
         "Wireshark keys.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

app.command("backends")(_backends.backends)
app.command("selftest")(_backends.selftest)
app.add_typer(_pcap.app, name="pcap")
app.command("wireshark-keys")(_wireshark.wireshark_keys)
app.command("perf")(_perf.perf)
app.command("plugins")(_plugins.plugins)
app.command("up")(_up.up)
app.command("status")(_status.status)
app.command("down")(_status.down)
app.command("demo")(_demo.demo)


def main() -> None:
    """Console-script entry point (`ipsec`)."""
    app()


__all__ = ["app", "main"]

"""`ipsec pcap protect` and `ipsec pcap unprotect`: run one SA over a classic pcap file.

Owns: `protect_file` / `unprotect_file` (file in, file out, counts back) and their commands.
Each run installs the SA afresh (sequence number 1, empty replay window); the SA's clock is the
capture's: `load_sa` installs it at 0 s, which stands for the first record's timestamp, and
packet k is processed at `now` = install time + (timestamp k - first timestamp).  Lifetimes in
seconds follow the capture, not the wall clock, and two runs over one file give the same result.
Protect applies the SA's `mtu` (`SecurityAssociation.protect_wire`): a packet may become
several fragment records with its timestamp, or be left out as "too_big".  Unprotect first
reassembles IPv4/IPv6 fragments (`ipsec_core.dataplane.fragments.Reassembler`, on the capture's clock):
the reassembled packet is written with the timestamp of the fragment that completed it;
datagrams still incomplete at the end of the file count as "frag_timeout".
Must not: change timestamps or the link type: the output keeps both from the input.
"""
from __future__ import annotations

import dataclasses
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Optional

import typer

from ipsec_core.cli._common import console, handle_errors, print_json
from ipsec_core.errors import (SILENT_DROPS, BackendError, DropReason, LifetimeExpired, LocalError, PacketDropped,
                               SequenceOverflow)
from ipsec_core.dataplane.fragments import Reassembler
from ipsec_core.vpn.pcap import (PcapReader, PcapWriter, frame_with_ip, ip_from_frame,
                                output_header)

#: Drop key of a frame that carries no IPv4/IPv6 packet (ARP, LLDP...) in `unprotect`.
NOT_IP = "not_ip"
#: Drop key when `protect` refuses a packet because the SA's sequence numbers are exhausted.
SEQUENCE_OVERFLOW = "sequence_overflow"
SILENT = {reason.value for reason in SILENT_DROPS}

app = typer.Typer(
    name="pcap",
    help="Protect or unprotect the packets of a classic pcap file with one SA from an SA file.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)


@dataclass
class PcapCounts:
    packets: int = 0
    done: int = 0                 # protected or decrypted
    passed: int = 0               # copied through unchanged (protect: non-IP frames)
    dropped: Counter = field(default_factory=Counter)
    fragments: int = 0            # unprotect: fragments received (held for reassembly);
                                  # protect: extra records written because a packet was fragmented
    linktype: str = ""


#: When `load_sa` installs the SA on the capture's clock: the first record's timestamp.
CAPTURE_START = 0.0


def load_sa(config: Path, name: str, *, want: str, backend: str | None = None):
    """The SA `name` of `config`, installed at `CAPTURE_START`; a LocalError if its direction
    is not `want`."""
    from ipsec_core.config import find_sa, load_sa_file
    from ipsec_core.dataplane.sa import SecurityAssociation

    file = str(config)
    cfg = find_sa(load_sa_file(config), name, file=file)
    if cfg.direction.value != want:
        verb, kind = ("protect", "outbound") if want == "out" else ("unprotect", "inbound")
        raise LocalError(
            f"{file}: SA {name!r} has direction = \"{cfg.direction.value}\"; `ipsec pcap {verb}` "
            f"needs an SA with direction = \"{want}\" (use the {kind} SA of the pair)")
    if backend is not None:
        cfg = dataclasses.replace(cfg, backend=backend)
    try:
        return SecurityAssociation(cfg, now=CAPTURE_START)
    except BackendError as exc:
        raise BackendError(f"{file}: SA {name!r}: {exc}") from None


def _run(sa, in_path: Path, out_path: Path, *, protect: bool) -> PcapCounts:
    counts = PcapCounts()
    parent = out_path.parent
    if not parent.is_dir():
        raise LocalError(f"{out_path}: cannot write: folder {str(parent)!r} does not exist")
    tmp = out_path.with_name(out_path.name + ".partial")
    reassembler = None if protect else Reassembler()
    with open(in_path, "rb") as fin:
        reader = PcapReader(fin, name=str(in_path), require_supported=True)
        header = reader.header
        linktype = header.linktype
        counts.linktype = header.linktype_name
        first_ts: float | None = None
        try:
            with open(tmp, "wb") as fout:
                writer = PcapWriter(fout, output_header(header))
                for rec in reader:
                    counts.packets += 1
                    ts = rec.timestamp(header)
                    if first_ts is None:
                        first_ts = ts
                    now = sa.installed_at + max(0.0, ts - first_ts)
                    packet = ip_from_frame(linktype, rec.data)
                    if packet is None:
                        if protect:
                            counts.passed += 1
                            writer.write(rec)
                        else:
                            counts.dropped[NOT_IP] += 1
                        continue
                    try:
                        if protect:
                            wire = sa.protect_wire(packet, now=now)
                        else:
                            whole = reassembler.push(packet, now=now)
                            if whole is None:
                                continue            # a fragment, held until its datagram completes
                            wire = [sa.unprotect(whole, now=now)]
                    except PacketDropped as drop:
                        counts.dropped[drop.reason.value] += 1
                        continue
                    except LifetimeExpired:
                        counts.dropped[DropReason.SA_EXPIRED.value] += 1
                        continue
                    except SequenceOverflow:
                        counts.dropped[SEQUENCE_OVERFLOW] += 1
                        continue
                    except LocalError:      # protect: not a usable IP packet
                        counts.dropped[DropReason.MALFORMED.value] += 1
                        continue
                    counts.done += 1
                    if protect:
                        counts.fragments += len(wire) - 1
                    for new in wire:
                        writer.write(rec.with_data(frame_with_ip(linktype, rec.data, new)))
                if reassembler is not None:
                    reassembler.expire(float("inf"))   # incomplete at the end of the capture
                    counts.fragments = reassembler.stats["fragments"]
                    for reason in (DropReason.FRAG_TIMEOUT, DropReason.FRAG_EVICTED):
                        if reassembler.stats[reason.value]:
                            counts.dropped[reason.value] = reassembler.stats[reason.value]
            os.replace(tmp, out_path)
        finally:
            if tmp.exists():
                tmp.unlink()
    return counts


def protect_file(sa, in_path: Path, out_path: Path) -> PcapCounts:
    """Protect every IP packet of `in_path` with `sa` (direction out) into `out_path`.

    Frames that carry no IP packet are copied through unchanged; packets the SA refuses are
    left out and counted by reason.
    """
    return _run(sa, in_path, out_path, protect=True)


def unprotect_file(sa, in_path: Path, out_path: Path) -> PcapCounts:
    """Unprotect every packet of `in_path` with `sa` (direction in) into `out_path`.

    Only decrypted packets are written; the others are counted by drop reason (frames that carry
    no IP packet as "not_ip").
    """
    return _run(sa, in_path, out_path, protect=False)


_CONFIG = Annotated[Path, typer.Option("--config", "-c", metavar="SA.toml", dir_okay=False,
                                       help="SA file (TOML, \\[\\[sa]] tables).")]
_SA = Annotated[str, typer.Option("--sa", "-s", metavar="NAME",
                                  help="Name of the SA to use (its `name` key).")]
_IN = Annotated[Path, typer.Argument(help="Input: classic pcap, Ethernet / raw IP / Linux SLL.",
                                     dir_okay=False, show_default=False, metavar="IN.pcap")]
_OUT = Annotated[Path, typer.Argument(help="Output pcap: same link type and timestamps.",
                                      dir_okay=False, show_default=False, metavar="OUT.pcap")]
_BACKEND = Annotated[Optional[str], typer.Option(
    "--backend", "-b", metavar="NAME", help="Override the SA's backend (see `ipsec backends`).")]
_JSON = Annotated[bool, typer.Option("--json", help="Print the counts as JSON (for scripts).")]


def _report(counts: PcapCounts, *, verb: str, out_path: Path) -> None:
    from rich.markup import escape

    out = console()
    out.print(f"{counts.packets} packets ({escape(counts.linktype)}): {counts.done} {verb}"
              + (f", {counts.passed} not IP, copied unchanged" if counts.passed else "")
              + f", {sum(counts.dropped.values())} dropped", highlight=False)
    if counts.fragments:
        what = ("fragments received, reassembled before unprotect" if verb == "decrypted"
                else "extra fragment records (mtu)")
        out.print(f"  {what}: {counts.fragments}", highlight=False)
    for reason, n in sorted(counts.dropped.items()):
        note = " (silent: expected traffic)" if reason in SILENT else ""
        out.print(f"  dropped {escape(reason)}: {n}{note}", highlight=False)
    out.print(f"wrote {counts.done + counts.passed} packets to {escape(str(out_path))}",
              highlight=False)


@app.command("protect")
@handle_errors
def protect_cmd(config: _CONFIG, sa: _SA, in_pcap: _IN, out_pcap: _OUT,
                backend: _BACKEND = None, as_json: _JSON = False) -> None:
    """Protect every IP packet of IN.pcap with an outbound SA (direction = "out") into OUT.pcap.

    Frames that carry no IPv4/IPv6 packet (ARP, LLDP...) are [bold]copied through unchanged[/].
    Every IP packet is protected (ESP or AH, as the SA says): there is no policy lookup.
    Packets the SA refuses (malformed, lifetime reached, over its mtu with DF: too_big) are
    left out and counted; with an mtu, a packet may be written as several fragments.  The SA
    starts afresh: sequence number 1.  --json prints {"packets", "protected", "passed",
    "dropped": {reason: count}}, and "fragments" (extra records) when there are any.
    """
    sa_obj = load_sa(config, sa, want="out", backend=backend)
    counts = protect_file(sa_obj, in_pcap, out_pcap)
    if as_json:
        data = {"packets": counts.packets, "protected": counts.done, "passed": counts.passed,
                "dropped": dict(sorted(counts.dropped.items()))}
        if counts.fragments:
            data["fragments"] = counts.fragments
        print_json(data)
    else:
        _report(counts, verb="protected", out_path=out_pcap)


@app.command("unprotect")
@handle_errors
def unprotect_cmd(config: _CONFIG, sa: _SA, in_pcap: _IN, out_pcap: _OUT,
                  backend: _BACKEND = None, as_json: _JSON = False) -> None:
    """Unprotect the ESP or AH packets of IN.pcap with an inbound SA (direction = "in") into OUT.pcap.

    IP fragments are reassembled first.  Only unprotected packets are written.  Everything else
    is counted by drop reason (auth_failed, replay, unknown_spi, not_esp, dummy...); frames
    that carry no IP packet count as [bold]not_ip[/].  Exits 0 whenever the file was processed,
    whatever was dropped.  The SA starts afresh: empty replay window.  --json prints
    {"packets", "decrypted", "dropped": {reason: count}}, and "fragments" (fragments received)
    when there are any.
    """
    sa_obj = load_sa(config, sa, want="in", backend=backend)
    counts = unprotect_file(sa_obj, in_pcap, out_pcap)
    if as_json:
        data = {"packets": counts.packets, "decrypted": counts.done,
                "dropped": dict(sorted(counts.dropped.items()))}
        if counts.fragments:
            data["fragments"] = counts.fragments
        print_json(data)
    else:
        _report(counts, verb="decrypted", out_path=out_pcap)


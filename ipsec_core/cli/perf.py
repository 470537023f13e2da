"""`ipsec perf`: what IPsec costs on this machine, per backend, proposal, packet size and mode.

Owns: the options users type and the table / JSON / plot they get.  The measuring itself is
`ipsec_core.tools.perf.measure`, which drives the same batch path the drivers use.
"""
from __future__ import annotations

import sys
from typing import Optional

import typer

from ipsec_core.cli._common import fail, handle_errors, print_json, warn
from ipsec_core.errors import BackendError, ProposalError
from ipsec_core.transforms.keywords import parse_esp


def _split(text: str, what: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        fail(f"--{what} is empty")
    return items


@handle_errors
def perf(
    backend: str = typer.Option("all", "--backend", "-b", help="A backend name, or 'all' (every available one)."),
    proposal: str = typer.Option("aes128gcm16", "--proposal", "-p",
                                 help="ESP proposal keyword(s), comma separated, e.g. aes128gcm16,aes256-sha256."),
    size: Optional[str] = typer.Option(None, "--size", "-s", help="Inner packet size(s) in bytes, comma separated "
                                       "(default 64,576,1400; for a backend's own benchmark, its sizes: gpu adds 9000)."),
    count: int = typer.Option(20000, "--count", "-n", min=1, help="Packets per measurement."),
    batch: int = typer.Option(256, "--batch", min=1, help="Packets handed to protect_batch/unprotect_batch at once."),
    direction: str = typer.Option("both", "--direction", "-d", help="protect, unprotect or both."),
    mode: str = typer.Option("tunnel", "--mode", "-m", help="tunnel or transport."),
    repeats: int = typer.Option(5, "--repeats", min=1, help="Interleaved runs; medians are reported."),
    as_json: bool = typer.Option(False, "--json", help="Print the records as a JSON list on stdout."),
    plot: Optional[str] = typer.Option(None, "--plot", help="Draw Gbit/s against packet size into this PNG (needs matplotlib)."),
    batches: Optional[str] = typer.Option(None, "--batches", help="Batch sizes of a backend's own benchmark, comma "
                                          "separated (gpu default: 1024,4096,16384,65536)."),
    esp: bool = typer.Option(False, "--esp", help="Measure through protect_batch/unprotect_batch even for a backend "
                             "that has its own benchmark (gpu)."),
    api: str = typer.Option("list", "--api", help="list: protect_batch/unprotect_batch (a list of bytes "
                            "in and out); batch: protect_packets/unprotect_packets on a PacketBatch "
                            "(in place where the backend frames batches)."),
    tune_allocator: bool = typer.Option(True, "--tune-allocator/--no-tune-allocator",
                                        help="Let glibc keep freed heap between batches, as a VPN driver does "
                                        "(ipsec_core.vpn.tuning); the records say which was used."),
) -> None:
    """Measure ESP protect/unprotect throughput through the real data path, next to the bare
    AEAD/cipher call of the same backend on the same payload (measured in the same run).

    A backend with its own benchmark (gpu) runs that one when named alone: kernel-only and
    end-to-end throughput per packet size and batch size, and latency per batch."""
    from ipsec_core.crypto.registry import get_registry
    from ipsec_core.tools.perf import MIN_PACKET_BYTES, measure

    if direction not in ("protect", "unprotect", "both"):
        fail(f"--direction {direction!r}: expected protect, unprotect or both")
    if mode not in ("tunnel", "transport"):
        fail(f"--mode {mode!r}: expected tunnel or transport")
    if api not in ("list", "batch"):
        fail(f"--api {api!r}: expected list or batch")
    proposals = _split(proposal, "proposal")
    for p in proposals:
        try:
            parse_esp(p, catalog=get_registry().transforms)
        except ProposalError as exc:
            fail(f"--proposal: {exc}")
    try:
        sizes = [int(s) for s in _split(size or "64,576,1400", "size")]
    except ValueError:
        fail(f"--size {size!r}: expected byte counts like 64,1400")
    bad = [s for s in sizes if not MIN_PACKET_BYTES <= s <= 65535]
    if bad:
        fail(f"--size {bad[0]}: packets must be {MIN_PACKET_BYTES}..65535 bytes (IPv4 + UDP at least)")
    if plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            fail("--plot needs matplotlib: pip install 'ipsec-suite[plot]'")
    if tune_allocator:
        from ipsec_core.vpn.tuning import tune_allocator as tune
        tune()
    from ipsec_core.dataplane.esp import vec as esp_vec
    if not esp_vec.available():
        warn("numpy is not installed: batches run the per-packet loop, not the vectorised path "
             "(pip install 'ipsec-suite[fast]')")
    registry = get_registry()
    if backend == "all":
        names = [r.name for r in registry.available()]
        for r in registry.records.values():
            if not r.available:
                warn(f"skipping backend {r.name}: {r.reason}")
    else:
        record = registry.get(backend)
        if not record.available:
            fail(f"backend {backend!r} is unavailable: {record.reason}")
        names = [backend]
    directions = ("protect", "unprotect") if direction == "both" else (direction,)
    own_bench = getattr(registry.get(backend).backend, "bench", None) if backend != "all" and not esp else None
    if own_bench is not None:
        if plot:
            warn("--plot draws the ESP-path records: add --esp to measure those for this backend")
        _own_bench(own_bench, proposals=proposals, sizes=sizes if size else None, batches=batches,
                   directions=directions, repeats=repeats, registry=registry, as_json=as_json)
        return

    jobs = []
    for name in names:
        for p in proposals:
            for s in sizes:
                jobs.append((name, p, s))
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    err = Console(file=sys.stderr)
    records = []
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=err, transient=True) as progress:
        task = progress.add_task("measuring", total=len(jobs) * repeats * len(directions))
        for name, p, s in jobs:
            progress.update(task, description=f"{name} {p} {s} B")
            try:
                records += measure(backend=name, proposal=p, size=s, count=count, batch=batch,
                                   directions=directions, mode=mode, repeats=repeats,
                                   registry=registry, tick=lambda: progress.advance(task), api=api)
            except BackendError as exc:
                if backend != "all":
                    raise
                warn(f"skipping {name} for {p}: {exc}")
                progress.advance(task, repeats * len(directions))
    if not records:
        fail("nothing was measured: no available backend offers these proposals")
    rows = [r.as_dict() for r in records]
    if as_json:
        print_json(rows)
    else:
        _table(rows)
    if plot:
        _plot(rows, plot)


def _own_bench(bench, *, proposals, sizes, batches, directions, repeats, registry, as_json) -> None:
    """A backend's own benchmark (`Backend.bench`, e.g. gpu): records with kernel_gbps,
    device_e2e_gbps, e2e_gbps and batch_latency_ms."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    try:
        batch_list = [int(b) for b in _split(batches, "batches")] if batches else None
    except ValueError:
        fail(f"--batches {batches!r}: expected packet counts like 1024,65536")
    if batch_list and min(batch_list) < 1:
        fail("--batches: a batch holds at least one packet")
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=Console(file=sys.stderr), transient=True) as progress:
        task = progress.add_task("measuring", total=None)
        rows = bench(proposals=proposals, sizes=sizes, batches=batch_list, directions=directions,
                     repeats=repeats, registry=registry, tick=lambda: progress.advance(task))
    if as_json:
        print_json(rows)
        return
    from rich.table import Table

    table = Table(title="Backend benchmark (inner bytes): kernel alone, device end-to-end "
                        "(pinned host buffers), end-to-end (bytes in, bytes out)")
    columns = (("backend", "backend"), ("proposal", "proposal"), ("size", "size"), ("batch", "batch"),
               ("direction", "direction"), ("kernel_gbps", "kernel Gbit/s"),
               ("device_e2e_gbps", "device e2e Gbit/s"), ("e2e_gbps", "e2e Gbit/s"),
               ("batch_latency_ms", "latency ms"), ("vs_aesni", "x aesni"))
    for _, title in columns:
        table.add_column(title, justify="left" if title in ("backend", "proposal", "direction") else "right")
    for r in rows:
        table.add_row(*("-" if r.get(key) is None else str(r.get(key)) for key, _ in columns))
    Console(file=sys.stdout, width=None if sys.stdout.isatty() else 160).print(table)


def _table(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    first = rows[0]
    caption = (f"batch {first['batch']} ({first.get('api', 'list')} API); allocator: {first['allocator']}; numpy batch path: "
               f"{'yes' if first['vectorised'] else 'no (pip install ipsec-suite[fast])'}")
    table = Table(title="ESP throughput (inner bytes); bare = the backend's primitive alone, "
                        "AESGCM = cryptography's bare AES-128-GCM call; both in the same run",
                  caption=caption)
    for col in ("backend", "proposal", "mode", "size", "direction", "path", "packets/s", "Gbit/s",
                "overhead B", "bare packets/s", "ratio", "AESGCM packets/s", "x AESGCM"):
        table.add_column(col, justify="right" if col not in ("backend", "proposal", "mode", "direction") else "left")
    for r in rows:
        table.add_row(r["backend"], r["proposal"], r["mode"], str(r["size"]), r["direction"],
                      r.get("batch_path", ""), f"{r['pps']:,.0f}", f"{r['gbps']:.3f}", str(r["overhead_bytes"]),
                      f"{r['bare_pps']:,.0f}", f"{r['ratio']:.2f}",
                      f"{r['aesgcm_pps']:,.0f}" if r.get("aesgcm_pps") else "-",
                      f"{r['vs_aesgcm']:.2f}" if r.get("vs_aesgcm") else "-")
    Console(file=sys.stdout, width=None if sys.stdout.isatty() else 160).print(table)


def _plot(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    series: dict[tuple, list] = {}
    for r in rows:
        series.setdefault((r["backend"], r["proposal"], r["direction"]), []).append((r["size"], r["gbps"]))
    pairs = sorted({(name, prop) for name, prop, _ in series})
    colours = matplotlib.colormaps["tab20"].resampled(max(len(pairs), 1))
    for (name, prop, direction), points in sorted(series.items()):
        points.sort()
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o",
                color=colours(pairs.index((name, prop))),
                linestyle="-" if direction == "protect" else "--",
                label=f"{name} {prop} {direction}")
    ax.set_xlabel("inner packet size (bytes)")
    ax.set_ylabel("Gbit/s (inner bytes, one core)")
    ax.set_xscale("log")
    ax.set_title("ipsec perf: ESP throughput by backend")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)

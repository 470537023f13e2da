"""Logic behind the CLI's measuring and export commands (no typer here): `perf`."""

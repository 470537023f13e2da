"""What every CLI command shares: one-line errors on stderr, JSON on stdout, rich consoles.

Owns: the rule "errors go to stderr as one line with a non-zero exit, never a traceback".
Must not: hold command logic.
"""
from __future__ import annotations

import functools
import json
import os
import sys
import warnings
from typing import Any, Callable, NoReturn, TypeVar

import typer

from ipsec_core.errors import IpsecError

#: Exit status of a command that failed for a reason the user can fix (typer uses 2 for usage).
EXIT_ERROR = 1
#: Set to get the traceback of an unexpected exception instead of its one-line summary.
DEBUG_ENV = "IPSEC_DEBUG"

F = TypeVar("F", bound=Callable[..., Any])

#: Exceptions the command-line framework uses for its own exits: let them through.  typer
#: releases differ in whether they run on click, so both families are listed when present.
_FRAMEWORK_EXITS: tuple[type[BaseException], ...] = tuple(
    e for e in (typer.Exit, typer.Abort, getattr(typer, "TyperException", None)) if e is not None)
try:
    import click

    _FRAMEWORK_EXITS += (click.exceptions.Exit, click.exceptions.Abort, click.ClickException)
except ImportError:  # typer without click
    pass


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def fail(message: str, *, code: int = EXIT_ERROR) -> NoReturn:
    """Print `error: message` on stderr as one line and exit with `code`."""
    print(f"error: {one_line(message)}", file=sys.stderr, flush=True)
    raise typer.Exit(code)


def warn(message: str) -> None:
    print(f"warning: {one_line(message)}", file=sys.stderr, flush=True)


def handle_errors(func: F) -> F:
    """Turn the errors a user can cause into one line on stderr and exit status 1.

    IpsecError (bad SA file, unknown backend, unreadable pcap...) and OSError (missing or
    unwritable file) are expected; anything else is a bug, reported on one line too unless
    IPSEC_DEBUG is set.
    """
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with warnings.catch_warnings():
            # Library warnings (a key file open to others, a short PSK) as one line each.
            warnings.showwarning = lambda message, *_a, **_k: warn(str(message))
            return guarded(*args, **kwargs)

    def guarded(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except _FRAMEWORK_EXITS:
            raise
        except IpsecError as exc:
            fail(str(exc))
        except OSError as exc:
            where = f"{exc.filename}: " if exc.filename else ""
            fail(f"{where}{exc.strerror or exc}")
        except KeyboardInterrupt:
            fail("interrupted", code=130)
        except Exception as exc:  # a bug: still one line, unless asked for the traceback
            if os.environ.get(DEBUG_ENV):
                raise
            fail(f"internal error: {exc!r} (set {DEBUG_ENV}=1 to see the traceback)")

    return wrapper  # type: ignore[return-value]


def print_json(data: Any) -> None:
    """JSON for scripts: plain stdout, no colour, no wrapping."""
    sys.stdout.write(json.dumps(data, indent=2) + "\n")
    sys.stdout.flush()


def console():
    """A rich console on the current stdout (created per call, so test runners capture it)."""
    from rich.console import Console

    return Console(file=sys.stdout)

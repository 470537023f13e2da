"""Named network namespaces: create, remove, and run code inside one.

Owns: the namespace plumbing the VPN process and its tests need (`ip netns` names under
/var/run/netns).
Must not: configure links or routes (that is `netlink`), or keep global state.

Linux keeps the network namespace per *thread*: `setns` moves only the calling thread, and a
thread started later inherits the namespace of the thread that started it.  What a socket, a TUN
device or a netlink socket belongs to is fixed when it is opened; afterwards its file descriptor
works from any thread.  So the pattern is: enter the namespace, open everything, and either stay
(`enter_netns` at process start, as `ipsec up --netns` will do) or come back (`in_netns`), or run a
whole function - an event loop included - on a thread of its own (`call_in_netns`).
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import itertools
import os
import threading
from typing import Any, Callable, Iterator, TypeVar

NETNS_RUN_DIR = "/var/run/netns"
CLONE_NEWNET = 0x40000000

T = TypeVar("T")

_libc: ctypes.CDLL | None = None
_counter = itertools.count()


def netns_path(name: str) -> str:
    """The bind-mount path of the namespace `name` (as `ip netns` names it)."""
    if not name or "/" in name or name in (".", ".."):
        raise ValueError(f"bad network namespace name {name!r}")
    return os.path.join(NETNS_RUN_DIR, name)


def _setns_fd(fd: int) -> None:
    if hasattr(os, "setns"):  # Python 3.12+
        os.setns(fd, CLONE_NEWNET)
        return
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns(CLONE_NEWNET) failed: {os.strerror(err)}")


def _open_netns(name: str) -> int:
    path = netns_path(name)
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise FileNotFoundError(errno.ENOENT, f"no network namespace {name!r}", path) from None


def enter_netns(name: str) -> None:
    """Move the calling thread into the namespace `name` for good (threads it starts follow)."""
    fd = _open_netns(name)
    try:
        _setns_fd(fd)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot enter network namespace {name!r}: {exc.strerror}") from None
    finally:
        os.close(fd)


@contextlib.contextmanager
def in_netns(name: str) -> Iterator[None]:
    """Run the body with the calling thread in namespace `name`; return to where it was after.

    Only the calling thread moves: do not await inside the body (other tasks of the same loop would
    run in the namespace too), and keep it to opening what must be opened there.
    """
    saved = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        enter_netns(name)
        try:
            yield
        finally:
            _setns_fd(saved)
    finally:
        os.close(saved)


def call_in_netns(name: str, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """Call `fn(*args, **kwargs)` on a new thread inside namespace `name`; return or raise its result.

    The calling thread never changes namespace, so this is safe in any process, a test runner or
    an event loop included (`call_in_netns(ns, asyncio.run, main())` runs a whole loop there).
    """
    outcome: dict[str, Any] = {}

    def runner() -> None:
        try:
            enter_netns(name)
            outcome["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # handed to the caller, re-raised there
            outcome["error"] = exc

    thread = threading.Thread(target=runner, name=f"netns-{name}", daemon=True)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def list_netns() -> list[str]:
    """Names of the namespaces under /var/run/netns."""
    try:
        return sorted(os.listdir(NETNS_RUN_DIR))
    except FileNotFoundError:
        return []


def create_netns(name: str) -> None:
    """Create the namespace `name` (as `ip netns add`); error if it exists.  Needs root."""
    from pyroute2 import netns as _pr_netns

    path = netns_path(name)
    if os.path.exists(path):
        raise FileExistsError(errno.EEXIST, f"network namespace {name!r} exists", path)
    try:
        _pr_netns.create(name)
    except Exception as exc:
        # pyroute2 runs the work in a child process and reports failures in several shapes.
        raise OSError(getattr(exc, "errno", None) or errno.EPERM,
                      f"cannot create network namespace {name!r}: {exc}") from exc
    if not os.path.exists(path):
        raise OSError(errno.EPERM, f"cannot create network namespace {name!r} (not root?)")


def remove_netns(name: str, *, missing_ok: bool = True) -> None:
    """Remove the namespace `name` (as `ip netns del`).  Its links go once nothing holds it open."""
    from pyroute2 import netns as _pr_netns

    path = netns_path(name)
    if not os.path.exists(path):
        if missing_ok:
            return
        raise FileNotFoundError(errno.ENOENT, f"no network namespace {name!r}", path)
    _pr_netns.remove(name)


@contextlib.contextmanager
def temporary_netns(prefix: str = "ipsec") -> Iterator[str]:
    """Create a namespace with a fresh name (`prefix-PID-N`), yield the name, remove it after."""
    name = f"{prefix}-{os.getpid()}-{next(_counter)}"
    create_netns(name)
    try:
        yield name
    finally:
        remove_netns(name)

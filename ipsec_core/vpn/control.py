"""The control socket of a running `ipsec up`: `ipsec status`, `ipsec up NAME`, `ipsec down NAME`.

Owns: the unix socket (its directory, its mode, who may connect), the protocol (JSON lines: one
request object per line, one answer object per line), and the client side of it.
Must not: decide anything about connections; requests go to the driver's `status()`, `up()`
and `down()`.

Requests: `{"command": "status"}`, `{"command": "up", "name": NAME}`,
`{"command": "down", "name": NAME}`.  Answers: `{"ok": true, "result": ...}` or
`{"ok": false, "error": "what is wrong"}`.

Only root can open it: the socket is mode 0600 in a directory of mode 0700 owned by the user
running `ipsec up` (root), and each connecting process's credentials (SO_PEERCRED) must be
root's or that same user's.  A stale socket (nobody answers) is replaced; a live one is an error
that names it, so two processes never share a path.
"""
from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import socket
import stat
import struct
from pathlib import Path
from typing import Any, Callable

from ipsec_core.errors import LocalError

log = logging.getLogger("ipsec")

CONTROL_DIR = Path("/run/ipsec-suite")
DEFAULT_CONTROL_PATH = CONTROL_DIR / "control.sock"
#: Longest request line accepted; a status request is a few dozen bytes.
MAX_REQUEST_BYTES = 4096
CLIENT_TIMEOUT_S = 10.0
_UCRED = struct.Struct("iII")   # pid, uid, gid


def default_path(netns: str | None = None) -> Path:
    """The control socket of `ipsec up` (of the one run with `--netns NAME`, if given)."""
    return CONTROL_DIR / f"netns-{netns}.sock" if netns else DEFAULT_CONTROL_PATH


class ControlError(LocalError):
    """The control socket cannot be opened, reached, or gave an error answer."""


def _prepare_dir(directory: Path) -> None:
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise ControlError(f"cannot create the control directory {directory}: {exc.strerror}") from None
    info = directory.stat()
    if info.st_uid != os.geteuid():
        raise ControlError(f"control directory {directory} belongs to uid {info.st_uid}, not to "
                           f"this user ({os.geteuid()}); remove it or give --control elsewhere")
    if stat.S_IMODE(info.st_mode) & 0o077:
        os.chmod(directory, 0o700)


def _alive(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
    except OSError:
        return False
    finally:
        probe.close()
    return True


class ControlServer:
    """Serves `handler(request) -> result` on a unix socket from the running asyncio loop."""

    def __init__(self, path: str | Path, handler: Callable[[dict], Any]):
        self.path = Path(path)
        self.handler = handler
        self._server: asyncio.AbstractServer | None = None
        self._sock: socket.socket | None = None
        self._inode: os.stat_result | None = None

    async def start(self) -> None:
        path = self.path
        _prepare_dir(path.parent)
        if path.exists() or path.is_symlink():
            if not stat.S_ISSOCK(path.lstat().st_mode):
                raise ControlError(f"{path} exists and is not a socket; give --control elsewhere")
            if _alive(path):
                raise ControlError(f"control socket {path} is in use by another ipsec up; give "
                                   "this one its own with --control PATH")
            path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)       # the socket is created 0600: no window with a wider mode
        try:
            sock.bind(str(path))
        except OSError as exc:
            sock.close()
            raise ControlError(f"cannot bind control socket {path}: {exc.strerror}") from None
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        self._inode = path.stat()
        sock.listen(8)
        sock.setblocking(False)
        self._sock = sock
        self._server = await asyncio.start_unix_server(self._client, sock=sock,
                                                       limit=MAX_REQUEST_BYTES)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if not self._permitted(writer):
                writer.write(_line({"ok": False, "error": "permission denied: root only"}))
                await writer.drain()
                return
            while True:
                try:
                    line = await reader.readline()
                except (asyncio.LimitOverrunError, ValueError):
                    writer.write(_line({"ok": False, "error": f"request longer than "
                                                              f"{MAX_REQUEST_BYTES} bytes"}))
                    await writer.drain()
                    return
                if not line:
                    return
                writer.write(_line(self._answer(line)))
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()

    def _permitted(self, writer: asyncio.StreamWriter) -> bool:
        sock = writer.get_extra_info("socket")
        try:
            _, uid, _ = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                      _UCRED.size))
        except OSError:
            return False
        return uid in (0, os.geteuid())

    def _answer(self, line: bytes) -> dict:
        try:
            request = json.loads(line)
        except (ValueError, UnicodeDecodeError):
            return {"ok": False, "error": "not JSON: send one JSON object per line"}
        if not isinstance(request, dict) or not isinstance(request.get("command"), str):
            return {"ok": False, "error": 'expected {"command": "status" | "up" | "down", ...}'}
        try:
            return {"ok": True, "result": self.handler(request)}
        except LocalError as exc:
            return {"ok": False, "error": str(exc)}
        except Exception as exc:  # the daemon keeps running; the client learns what failed
            log.error("control request %s failed: %r", request.get("command"), exc)
            return {"ok": False, "error": f"internal error: {exc!r}"}

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._sock is not None:
            try:
                # Only the socket file this server made: another process may own the path now.
                if os.path.samestat(self.path.stat(), self._inode):
                    self.path.unlink()
            except OSError:
                pass
            self._sock.close()
            self._sock = None


def driver_handler(driver) -> Callable[[dict], Any]:
    """The requests a `Driver` answers."""

    def handle(request: dict) -> Any:
        command = request["command"]
        if command == "status":
            return driver.status()
        if command in ("up", "down"):
            name = request.get("name")
            if not isinstance(name, str) or not name:
                raise LocalError(f'{command} needs "name": the connection')
            return getattr(driver, command)(name)
        raise LocalError(f"unknown command {command!r}; expected status, up or down")

    return handle


def _line(obj: dict) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


def request(path: str | Path, message: dict, *, timeout: float = CLIENT_TIMEOUT_S) -> Any:
    """Send one request to the control socket at `path`; the result, or ControlError."""
    path = Path(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(str(path))
        except FileNotFoundError:
            raise ControlError(f"no control socket {path}: is ipsec up running (with --control "
                               "there, or --netns for its default)?") from None
        except PermissionError:
            raise ControlError(f"cannot open control socket {path}: root only (run with sudo)") from None
        except OSError as exc:
            if exc.errno == errno.ECONNREFUSED:
                raise ControlError(f"control socket {path}: nobody is listening (ipsec up "
                                   "stopped?)") from None
            raise ControlError(f"cannot open control socket {path}: {exc.strerror}") from None
        sock.sendall(_line(message))
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except socket.timeout:
        raise ControlError(f"control socket {path}: no answer within {timeout:g} s") from None
    finally:
        sock.close()
    try:
        answer = json.loads(data)
    except ValueError:
        raise ControlError(f"control socket {path}: unreadable answer {data[:80]!r}") from None
    if not answer.get("ok"):
        raise ControlError(answer.get("error") or "request failed")
    return answer.get("result")


__all__ = ["ControlServer", "ControlError", "driver_handler", "request", "default_path",
           "DEFAULT_CONTROL_PATH"]

"""strongSwan (charon + swanctl) as an IKEv2/ESP peer in network namespaces, for tests and perf runs.

Owns: a pair of network namespaces joined by a veth pair (`NetnsPair`), charon instances inside
them (`Charon`), strongswan.conf / swanctl.conf text generated from dicts, parsing of
`swanctl --list-sas --raw` and of charon's level-4 hex dumps (the keys), and the teardown of all
of it.  Must not touch anything it did not create: namespaces, veths and run directories carry a
random suffix, processes are stopped by their own pid, never by name.  No pytest in here
(perf scripts use it too): tests turn `skip_reason()` into `pytest.skip`.

Why the setup looks the way it does (strongSwan 5.9.8, Debian 12, a kernel without XFRM ESP):
* ESP runs in userspace through kernel-libipsec (a TUN device `ipsec0` per namespace).  It must
  be listed before kernel-netlink in `charon.load`, or XFRM wins the kernel-ipsec role and every
  CHILD SA fails with NO_PROPOSAL_CHOSEN; kernel-netlink is still needed as kernel-net.
* libipsec does ESP-in-UDP only: charon fakes a NAT ("faking NAT situation to enforce UDP
  encapsulation") and moves to port 4500 after IKE_SA_INIT.  `encap = yes` says so explicitly.
* The pidfile /var/run/charon.pid is compiled in: each charon runs in a private mount namespace
  with its own run directory bind-mounted over /run.
* One vici socket per instance; swanctl takes the command first, then `--uri`.
* Debian has no save-keys plugin: keys come from the filelog at `ike = 4`, `chd = 4`.
"""
from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

CHARON = "/usr/lib/ipsec/charon"
PLUGIN_DIR = "/usr/lib/ipsec/plugins"
# kernel-libipsec before kernel-netlink: see the module docstring.
PLUGINS = ("random nonce openssl pem pkcs1 x509 pubkey sha1 sha2 hmac aes gcm chapoly curve25519 "
           "gmp kdf kernel-libipsec kernel-netlink socket-default vici").split()
DEFAULT_PSK = "interop-test-psk-not-secret"
COMMAND_TIMEOUT_S = 20.0


class StrongswanError(RuntimeError):
    """A charon/swanctl/ip command failed; the message carries its output (and a log tail)."""


# ---------------------------------------------------------------------------- availability

def skip_reason() -> str | None:
    """Why strongSwan interop cannot run here, or None when it can (root, charon, plugins, netns)."""
    if os.name != "posix" or os.geteuid() != 0:
        return "needs root (network namespaces, TUN, bind mounts)"
    for binary in ("ip", "unshare", "mount"):
        if shutil.which(binary) is None:
            return f"{binary} not found (iproute2/util-linux)"
    if not os.access(CHARON, os.X_OK) or shutil.which("swanctl") is None:
        return "strongSwan missing (run tests/setup-system.sh as root: strongswan-charon, strongswan-swanctl)"
    for plugin in ("kernel-libipsec", "openssl", "curve25519"):
        if not os.path.exists(f"{PLUGIN_DIR}/libstrongswan-{plugin}.so"):
            return f"strongSwan plugin {plugin} missing (run tests/setup-system.sh as root)"
    if not os.path.exists("/dev/net/tun"):
        return "/dev/net/tun missing (kernel-libipsec needs TUN)"
    name = "ssprobe" + secrets.token_hex(3)
    probe = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"cannot create a network namespace: {probe.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return None


def tool_missing(*binaries: str) -> str | None:
    """A skip reason naming the first of `binaries` not on PATH (tcpdump, ping, iperf3...), or None."""
    for binary in binaries:
        if shutil.which(binary) is None:
            return f"{binary} not found (run tests/setup-system.sh as root)"
    return None


# ---------------------------------------------------------------------------- commands

def run(argv: list[str], *, netns: str | None = None, check: bool = True, timeout: float = COMMAND_TIMEOUT_S,
        env: dict | None = None) -> subprocess.CompletedProcess:
    """Run argv (inside `netns` when given); raise StrongswanError with its output when it fails."""
    full = (["ip", "netns", "exec", netns] if netns else []) + list(argv)
    proc = subprocess.run(full, capture_output=True, text=True, timeout=timeout,
                          env=None if env is None else {**os.environ, **env})
    if check and proc.returncode != 0:
        raise StrongswanError(f"{' '.join(full)} -> rc {proc.returncode}\n{proc.stdout}{proc.stderr}")
    return proc


# ---------------------------------------------------------------------------- topology

@dataclass
class Side:
    """One namespace of a pair: its name, veth, underlay address (with prefix) and inner addresses."""
    netns: str
    veth: str
    addr: str                      # "192.0.2.1/24"
    inner: tuple[str, ...] = ()    # on lo, "198.51.100.1/32"

    @property
    def ip(self) -> str:
        return self.addr.split("/")[0]

    @property
    def inner_ip(self) -> str:
        return self.inner[0].split("/")[0] if self.inner else self.ip


class NetnsPair:
    """Two fresh network namespaces `a` and `b` joined by a veth pair; a context manager.

    Names get a random suffix so parallel or leftover runs never collide.  Addresses are
    configurable (IPv6 works too: pass 2001:db8:: prefixes and `ipv6=True`).
    """

    def __init__(self, *, a_addr: str = "192.0.2.1/24", b_addr: str = "192.0.2.2/24",
                 a_inner: tuple[str, ...] = ("198.51.100.1/32",), b_inner: tuple[str, ...] = ("203.0.113.1/32",),
                 ipv6: bool = False, tag: str = "ss"):
        suffix = secrets.token_hex(3)
        self.a = Side(f"{tag}A-{suffix}", f"{tag}a{suffix}", a_addr, tuple(a_inner))
        self.b = Side(f"{tag}B-{suffix}", f"{tag}b{suffix}", b_addr, tuple(b_inner))
        self.ipv6 = ipv6
        self.created: list[str] = []

    def create(self) -> "NetnsPair":
        try:
            for side in (self.a, self.b):
                run(["ip", "netns", "add", side.netns])
                self.created.append(side.netns)
            run(["ip", "link", "add", self.a.veth, "netns", self.a.netns, "type", "veth",
                 "peer", "name", self.b.veth, "netns", self.b.netns])
            for side in (self.a, self.b):
                ns = side.netns
                # no IPv6 unless asked: keeps captures free of MLD/RS noise and charon free of
                # address-change events; nodad so v6 addresses are usable at once
                v6 = "0" if self.ipv6 else "1"
                run(["sysctl", "-qw", f"net.ipv6.conf.all.disable_ipv6={v6}",
                     f"net.ipv6.conf.default.disable_ipv6={v6}"], netns=ns)
                run(["ip", "link", "set", "lo", "up"], netns=ns)
                extra = ["nodad"] if ":" in side.addr else []
                run(["ip", "addr", "add", side.addr, "dev", side.veth] + extra, netns=ns)
                for inner in side.inner:
                    run(["ip", "addr", "add", inner, "dev", "lo"] + (["nodad"] if ":" in inner else []), netns=ns)
                run(["ip", "link", "set", side.veth, "up"], netns=ns)
        except BaseException:
            self.destroy()
            raise
        return self

    def destroy(self) -> None:
        """Delete the namespaces (this also removes the veth pair and the ipsec0 TUNs)."""
        while self.created:
            subprocess.run(["ip", "netns", "del", self.created.pop()], capture_output=True)

    def exec(self, side: Side, argv: list[str], **kw) -> subprocess.CompletedProcess:
        return run(argv, netns=side.netns, **kw)

    def __enter__(self) -> "NetnsPair":
        return self.create()

    def __exit__(self, *exc) -> None:
        self.destroy()


# ---------------------------------------------------------------------------- config text

def render_conf(tree: dict, indent: int = 0) -> str:
    """strongSwan settings syntax from nested dicts: dict -> section, list -> "a, b", bool -> yes/no."""
    out = []
    pad = "    " * indent
    for key, value in tree.items():
        if value is None:
            continue
        if isinstance(value, dict):
            out.append(f"{pad}{key} {{\n{render_conf(value, indent + 1)}{pad}}}\n")
        else:
            if isinstance(value, bool):
                text = "yes" if value else "no"
            elif isinstance(value, (list, tuple)):
                text = ", ".join(str(v) for v in value)
            else:
                text = str(value)
            if text != text.strip() or "#" in text or "{" in text or "}" in text:
                text = '"' + text.replace('"', '\\"') + '"'
            out.append(f"{pad}{key} = {text}\n")
    return "".join(out)


def strongswan_conf(*, rundir: str | os.PathLike, log_levels: dict | None = None,
                    plugins: tuple[str, ...] | list[str] = PLUGINS, charon: dict | None = None) -> dict:
    """The strongswan.conf tree of one instance: plugins, ports, vici socket and filelog in `rundir`.

    `log_levels` overrides the filelog subsystem levels (ike/chd at 4 log the keys); `charon`
    is merged into the charon section last (e.g. {"send_vendor_id": True}).
    """
    rundir = Path(rundir)
    levels = {"default": 1, "ike": 4, "chd": 4, "cfg": 2, "knl": 2, "esp": 1, "net": 1}
    levels.update(log_levels or {})
    section = {
        "load_modular": False,
        "load": " ".join(plugins),
        "port": 500,
        "port_nat_t": 4500,
        "retransmit_tries": 2,
        "install_virtual_ip": False,
        "filelog": {"charonlog": {"path": str(rundir / "charon.log"), "time_format": "%T", "append": False,
                                  "flush_line": True, **levels}},
        "syslog": {"daemon": {"default": -1}},
        "plugins": {"vici": {"socket": f"unix://{rundir}/charon.vici"},
                    "kernel-libipsec": {"allow_peer_ts": False}},
    }
    for key, value in (charon or {}).items():
        if isinstance(value, dict) and isinstance(section.get(key), dict):
            section[key] = {**section[key], **value}
        else:
            section[key] = value
    return {"charon": section}


def connection(*, local_addrs: str, remote_addrs: str, local_id: str, remote_id: str,
               proposals: str | list[str] = "aes128gcm16-prfsha256-ecp256",
               esp_proposals: str | list[str] = "aes128gcm16",
               local_ts: str | list[str] = "0.0.0.0/0", remote_ts: str | list[str] = "0.0.0.0/0",
               child: str = "net", mode: str = "tunnel", start_action: str | None = None,
               encap: bool = True, rekey_time: str | int | None = None, child_rekey_time: str | int | None = None,
               child_life_time: str | int | None = None, childless: str | None = None,
               dpd_delay: str | int | None = None, fragmentation: str | None = None, mobike: bool | None = None,
               auth: str = "psk", extra: dict | None = None, child_extra: dict | None = None) -> dict:
    """One swanctl `connections.<name>` tree (IKEv2, PSK by default); None leaves strongSwan's default.

    childless: "allow" | "prefer" | "force" | "never" (RFC 6023).  start_action: none | start | trap.
    Rekey times take strongSwan syntax ("30s", "1h", 0 = never).
    """
    child_tree = {"local_ts": local_ts, "remote_ts": remote_ts, "esp_proposals": esp_proposals, "mode": mode,
                  "start_action": start_action, "rekey_time": child_rekey_time, "life_time": child_life_time,
                  **(child_extra or {})}
    return {"version": 2, "local_addrs": local_addrs, "remote_addrs": remote_addrs, "proposals": proposals,
            "encap": encap, "rekey_time": rekey_time, "childless": childless, "dpd_delay": dpd_delay,
            "fragmentation": fragmentation, "mobike": mobike,
            "local": {"auth": auth, "id": local_id}, "remote": {"auth": auth, "id": remote_id},
            "children": {child: child_tree}, **(extra or {})}


def swanctl_conf(connections: dict, *, psk: str | None = DEFAULT_PSK, ids: tuple[str, ...] = ()) -> dict:
    """The swanctl.conf tree: `connections` ({name: connection(...)}) and one IKE PSK for `ids`."""
    tree: dict = {"connections": connections}
    if psk is not None:
        ike = {f"id-{i}": ident for i, ident in enumerate(ids)}
        tree["secrets"] = {"ike-psk": {**ike, "secret": psk}}
    return tree


# ---------------------------------------------------------------------------- parsers

_TOKEN = re.compile(r"\s*(?:(?P<open>[^\s={}\[\]]+) \{|(?P<close>\})|(?P<lkey>[^\s={}]+)=\[(?P<list>[^\]]*)\]"
                    r"|(?P<key>[^\s={}]+)=(?P<value>[^\s}]*))")
INT_KEYS = frozenset("""uniqueid version local-port remote-port encr-keysize integ-keysize established rekey-time
    reauth-time reqid bytes-in packets-in bytes-out packets-out use-in use-out life-time install-time""".split())


def parse_vici_raw(text: str) -> list[tuple[str, dict]]:
    """`swanctl ... --raw` output -> [(message name, tree)]: sections are dicts, [..] lists, counters ints."""
    messages = []
    for line in text.splitlines():
        m = re.match(r"^(.*?) \{(.*)\}\s*$", line.strip())
        if not m:
            continue
        body, pos = m.group(2), 0
        stack: list[dict] = [{}]
        while pos < len(body):
            t = _TOKEN.match(body, pos)
            if not t or t.end() == pos:
                if body[pos:].strip() == "":
                    break
                raise ValueError(f"cannot parse vici raw output near {body[pos:pos + 40]!r}")
            pos = t.end()
            if t.group("open"):
                new: dict = {}
                stack[-1][t.group("open")] = new
                stack.append(new)
            elif t.group("close"):
                stack.pop()
            elif t.group("lkey"):
                stack[-1][t.group("lkey")] = t.group("list").split()
            else:
                k, v = t.group("key"), t.group("value")
                stack[-1][k] = int(v) if k in INT_KEYS and v.isdigit() else v
        messages.append((m.group(1), stack[0]))
    return messages


def parse_list_sas(text: str) -> list[dict]:
    """`swanctl --list-sas --raw` -> one dict per IKE SA: its fields plus "name", and "child-sas"
    as a list of dicts (each with "key", e.g. "net-3", and "name", "spi-in", "bytes-in", ...)."""
    sas = []
    for kind, tree in parse_vici_raw(text):
        if kind != "list-sa event":
            continue
        for name, ike in tree.items():
            ike = dict(ike, name=name)
            ike["child-sas"] = [dict(c, key=k) for k, c in ike.get("child-sas", {}).items()]
            sas.append(ike)
    return sas


_CLOSING = re.compile(r"closing CHILD_SA \S+ with SPIs ([0-9a-f]{8})_i \((\d+) bytes\) "
                      r"([0-9a-f]{8})_o \((\d+) bytes\)")


def parse_closed_children(log_text: str) -> dict[str, tuple[int, int]]:
    """The CHILD SAs charon closed (deleted or rekeyed away), from its `closing CHILD_SA` log
    lines: inbound SPI (hex) -> (bytes in, bytes out) at the time it closed.  charon logs
    bytes only, no packets; with `--list-sas` for the SAs still there, the totals of a run."""
    return {m.group(1): (int(m.group(2)), int(m.group(4))) for m in _CLOSING.finditer(log_text)}


_DUMP_HEAD = re.compile(r"^\S+ \d+\[(?P<sub>\w+)\] (?P<label>.*?) => (?P<n>\d+) bytes @ \S+\s*$")
_DUMP_LINE = re.compile(r"^\S+ \d+\[\w+\]\s+\d+: ((?:[0-9A-F]{2} ){0,15}[0-9A-F]{2})")


def parse_hexdumps(log_text: str) -> list[tuple[str, str, bytes]]:
    """Every `%B` hex dump in a charon log, in order: (subsystem, label, bytes).

    charon prints them as  `12:00:00 13[IKE] Sk_ei secret => 20 bytes @ 0x...` followed by
    lines `12:00:00 13[IKE]    0: FE 70 67 ...  .pg.` (16 bytes each).  Labels repeat (one set
    per IKE SA / CHILD SA, both directions); the caller picks by order.
    """
    lines = log_text.splitlines()
    out = []
    i = 0
    while i < len(lines):
        head = _DUMP_HEAD.match(lines[i])
        i += 1
        if not head:
            continue
        n, data = int(head.group("n")), bytearray()
        while len(data) < n and i < len(lines):
            m = _DUMP_LINE.match(lines[i])
            if not m:
                break
            data += bytes.fromhex(m.group(1).replace(" ", ""))
            i += 1
        if len(data) == n:
            out.append((head.group("sub"), head.group("label"), bytes(data)))
    return out


# ---------------------------------------------------------------------------- charon

@dataclass
class Charon:
    """One charon daemon in a namespace, with its own run dir, vici socket, log and configs."""
    netns: str
    workdir: Path
    conf: dict = field(default_factory=dict)        # strongswan.conf tree (defaults filled by start())
    proc: subprocess.Popen | None = None

    @property
    def vici_uri(self) -> str:
        return f"unix://{self.workdir}/charon.vici"

    @property
    def log_path(self) -> Path:
        return self.workdir / "charon.log"

    @property
    def conf_path(self) -> Path:
        return self.workdir / "strongswan.conf"

    def start(self, *, timeout: float = 10.0) -> "Charon":
        """Write strongswan.conf, start charon (private mount ns, workdir over /run), wait for vici."""
        self.workdir = Path(self.workdir).resolve()
        if self.workdir == Path("/run") or Path("/run") in self.workdir.parents \
                or Path("/var/run") in self.workdir.parents:
            raise StrongswanError(f"workdir {self.workdir} is hidden by the /run bind mount: use another")
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.conf:
            self.conf = strongswan_conf(rundir=self.workdir)
        self.conf_path.write_text(render_conf(self.conf))
        stdout = open(self.workdir / "charon.stdout", "wb")
        # ip netns exec, unshare and sh all exec(): proc.pid is charon's own pid
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.netns, "unshare", "--mount", "--propagation", "private",
             "sh", "-c", f"mount --bind '{self.workdir}' /run && exec {CHARON}"],
            stdout=stdout, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, "STRONGSWAN_CONF": str(self.conf_path)})
        stdout.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise StrongswanError(f"charon exited with rc {self.proc.returncode}\n{self.log_tail()}")
            if self.swanctl("--stats", check=False, timeout=5).returncode == 0:
                break
            if time.monotonic() > deadline:
                self.stop()
                raise StrongswanError(f"charon vici did not come up in {timeout}s\n{self.log_tail()}")
            time.sleep(0.1)
        if "kernel-libipsec" not in self.loaded_plugins():
            self.stop()
            raise StrongswanError("kernel-libipsec not loaded\n" + self.log_tail())
        return self

    def loaded_plugins(self) -> list[str]:
        m = re.search(r"loaded plugins: (.*)", self.log())
        return m.group(1).split() if m else []

    def swanctl(self, *args: str, check: bool = True,
                timeout: float = COMMAND_TIMEOUT_S) -> subprocess.CompletedProcess:
        """swanctl COMMAND ARGS --uri <this instance> (the command must come first)."""
        try:
            proc = run(["swanctl", *args, "--uri", self.vici_uri], netns=self.netns, check=False,
                       timeout=timeout, env={"STRONGSWAN_CONF": str(self.conf_path)})
        except subprocess.TimeoutExpired as e:
            raise StrongswanError(f"swanctl {' '.join(args)} timed out after {timeout}s\n{self.log_tail()}") from e
        if check and proc.returncode != 0:
            raise StrongswanError(f"swanctl {' '.join(args)} -> rc {proc.returncode}\n{proc.stdout}{proc.stderr}"
                                  f"\n--- charon log tail ---\n{self.log_tail()}")
        return proc

    def load(self, swanctl_tree: dict) -> str:
        """Write swanctl.conf from the tree and `swanctl --load-all` it; returns swanctl's output."""
        path = self.workdir / "swanctl.conf"
        path.write_text(render_conf(swanctl_tree))
        return self.swanctl("--load-all", "--file", str(path)).stdout

    def initiate(self, *, child: str | None = None, ike: str | None = None, timeout: int = 10) -> str:
        """`swanctl --initiate` (blocks until established or failed); raises on failure."""
        args = ["--initiate", "--timeout", str(timeout)]
        args += ["--child", child] if child else []
        args += ["--ike", ike] if ike else []
        return self.swanctl(*args, timeout=timeout + 5).stdout

    def terminate(self, *, ike: str | None = None, child: str | None = None, force: bool = False,
                  timeout: int = 10) -> str:
        """`swanctl --terminate` an IKE SA (INFORMATIONAL delete) or a CHILD SA, by config name."""
        args = ["--terminate", "--timeout", str(timeout)]
        args += ["--ike", ike] if ike else []
        args += ["--child", child] if child else []
        args += ["--force"] if force else []
        return self.swanctl(*args, timeout=timeout + 5).stdout

    def rekey(self, *, child: str | None = None, ike: str | None = None) -> str:
        """`swanctl --rekey` a CHILD SA or IKE SA by name (returns once queued, not when done)."""
        args = ["--rekey"] + (["--child", child] if child else []) + (["--ike", ike] if ike else [])
        return self.swanctl(*args).stdout

    def list_sas(self) -> list[dict]:
        """Current IKE SAs (see `parse_list_sas`)."""
        return parse_list_sas(self.swanctl("--list-sas", "--raw", "--noblock").stdout)

    def wait_established(self, *, ike: str | None = None, child: str | None = None, timeout: float = 10.0,
                         count: int = 1) -> dict:
        """Wait until an ESTABLISHED IKE SA (named `ike`, if given) has `count` INSTALLED CHILD SAs
        (named `child`, if given; count=0: the IKE SA alone); return that IKE SA's dict.
        Raises StrongswanError on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            for sa in self.list_sas():
                if sa.get("state") != "ESTABLISHED" or (ike and sa["name"] != ike):
                    continue
                kids = [c for c in sa["child-sas"] if c.get("state") == "INSTALLED"
                        and (not child or c.get("name") == child)]
                if len(kids) >= count:
                    return sa
            if time.monotonic() > deadline:
                raise StrongswanError(f"no established IKE SA {ike or ''} / CHILD SA {child or ''} after {timeout}s"
                                      f"\n{self.log_tail()}")
            time.sleep(0.1)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def hexdumps(self) -> list[tuple[str, str, bytes]]:
        """The keys and other hex dumps charon logged so far (see `parse_hexdumps`)."""
        return parse_hexdumps(self.log())

    def stop(self, *, timeout: float = 5.0) -> None:
        """SIGTERM charon (its mount namespace and /run bind mount go with it), SIGKILL if it lingers."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)


# ---------------------------------------------------------------------------- the usual pair

class StrongswanPair(contextlib.ExitStack):
    """A `NetnsPair` with a charon in each namespace: `a` initiates to `b`; a context manager.

    `pair.a` / `pair.b` are the charons, `pair.net` the namespaces.  The connection and child are
    both named `name`; `conn_a` / `conn_b` keyword dicts go to `connection()` for that side.
    Leave `start_b`/`start_a` False to run only one charon (e.g. a Python peer on the other side).
    """

    def __init__(self, *, name: str = "net", psk: str = DEFAULT_PSK, a_id: str = "a.example.org",
                 b_id: str = "b.example.org", conn_a: dict | None = None, conn_b: dict | None = None,
                 start_a: bool = True, start_b: bool = True, charon_a: dict | None = None,
                 charon_b: dict | None = None, workdir: str | os.PathLike | None = None,
                 keep_workdir: bool = False, **net_kw):
        super().__init__()
        self.name, self.psk, self.a_id, self.b_id = name, psk, a_id, b_id
        self.conn_a, self.conn_b = dict(conn_a or {}), dict(conn_b or {})
        self.start_a, self.start_b = start_a, start_b
        self.charon_a, self.charon_b = charon_a, charon_b
        self._workdir, self.keep_workdir = workdir, keep_workdir
        self.net = NetnsPair(**net_kw)
        self.a: Charon | None = None
        self.b: Charon | None = None

    def connection_for(self, side: str) -> dict:
        a, b = self.net.a, self.net.b
        local, remote = (a, b) if side == "a" else (b, a)
        ts_local = [i.split("/")[0] + "/" + ("128" if ":" in i else "32") for i in local.inner] or [local.ip]
        ts_remote = [i.split("/")[0] + "/" + ("128" if ":" in i else "32") for i in remote.inner] or [remote.ip]
        kw = dict(local_addrs=local.ip, remote_addrs=remote.ip,
                  local_id=self.a_id if side == "a" else self.b_id,
                  remote_id=self.b_id if side == "a" else self.a_id,
                  local_ts=ts_local, remote_ts=ts_remote, child=self.name)
        kw.update(self.conn_a if side == "a" else self.conn_b)
        return connection(**kw)

    def __enter__(self) -> "StrongswanPair":
        super().__enter__()
        try:
            if self._workdir is None:
                self.workdir = Path(tempfile.mkdtemp(prefix="strongswan-", dir="/tmp"))
            else:
                self.workdir = Path(self._workdir)
                self.workdir.mkdir(parents=True, exist_ok=True)
            if not self.keep_workdir:
                self.callback(shutil.rmtree, self.workdir, True)
            self.enter_context(self.net)
            secrets_ids = (self.a_id, self.b_id)
            for side, wanted, extra in (("b", self.start_b, self.charon_b), ("a", self.start_a, self.charon_a)):
                if not wanted:
                    continue
                ns = self.net.a.netns if side == "a" else self.net.b.netns
                rundir = self.workdir / side.upper()
                charon = Charon(ns, rundir, strongswan_conf(rundir=rundir, charon=extra))
                self.callback(charon.stop)
                charon.start()
                charon.load(swanctl_conf({self.name: self.connection_for(side)}, psk=self.psk, ids=secrets_ids))
                setattr(self, side, charon)
        except BaseException:
            self.close()
            raise
        return self

    def initiate(self, timeout: int = 10) -> dict:
        """a initiates `name`; returns a's IKE SA dict once its CHILD SA is installed."""
        self.a.initiate(child=self.name, timeout=timeout)
        return self.a.wait_established(ike=self.name, child=self.name, timeout=timeout)

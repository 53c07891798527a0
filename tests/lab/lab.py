"""The lab: three network namespaces client — router — server, joined by veth
pairs, IPv4 and IPv6, with the nfqscan ruleset loaded on the router.

Everything a lab starts (namespaces, processes, files) is owned by one `Lab`
object and goes away in `Lab.close()`, which is safe to call at any point of
a half-finished setup and more than once. Names carry the owning process id,
so concurrent runs never collide and leftovers of a run that was killed
outright are swept by the next one.

    with Lab() as lab:
        nginx = Nginx(lab, ports=[80])
        lab.client.run(["curl", ...])
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Documentation ranges only (RFC 5737, RFC 3849).
CLIENT4, ROUTER4_CLIENT_SIDE = "198.51.100.2", "198.51.100.1"
ROUTER4_SERVER_SIDE, SERVER4 = "203.0.113.1", "203.0.113.2"
CLIENT6, ROUTER6_CLIENT_SIDE = "2001:db8:1::2", "2001:db8:1::1"
ROUTER6_SERVER_SIDE, SERVER6 = "2001:db8:2::1", "2001:db8:2::2"

NAME_RE = re.compile(r"^nfq-(\d+)-([0-9a-f]+)-(cli|rtr|srv)$")
TMP_PREFIX = "nfq-lab-"
# The sysctls the product ships for the gateway (rules/), applied on the router.
SYSCTL_FILE = "nfqscan-sysctl.conf"

# Proxies in the environment must never see lab traffic.
CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
# ip, iptables, sysctl, nginx and dovecot live in sbin, which a CI
# environment's PATH may lack.
CLEAN_ENV["PATH"] = ":".join(dict.fromkeys(
    CLEAN_ENV.get("PATH", "").split(":")
    + ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"]))
CLEAN_ENV["PATH"] = CLEAN_ENV["PATH"].strip(":")

_libc = ctypes.CDLL(None, use_errno=True)
_CLONE_NEWNET = 0x40000000


class LabError(RuntimeError):
    pass


def wait_until(condition, timeout: float, what: str, interval: float = 0.05):
    """Poll `condition` until it returns a true value; return that value.
    Raises TimeoutError naming `what` when the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def same_address(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return False


def host_in_url(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def _run(cmd, *, timeout=60, check=True, input=None, env=None):
    proc = subprocess.run(cmd, input=input, capture_output=True, timeout=timeout,
                          env=env or CLEAN_ENV)
    if check and proc.returncode != 0:
        raise LabError(f"command failed ({proc.returncode}): {' '.join(map(str, cmd))}\n"
                       f"stdout: {proc.stdout.decode(errors='replace')[-2000:]}\n"
                       f"stderr: {proc.stderr.decode(errors='replace')[-2000:]}")
    return proc


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Process:
    """A process started in a namespace, in its own process group, with its
    output in a log file."""

    def __init__(self, name: str, popen: subprocess.Popen, log: Path):
        self.name = name
        self.popen = popen
        self.log = log

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    @property
    def returncode(self):
        return self.popen.poll()

    def send_signal(self, sig: int) -> None:
        if self.alive():
            try:
                os.killpg(self.popen.pid, sig)
            except ProcessLookupError:
                pass

    def stop(self, timeout: float = 10.0, sig: int = signal.SIGTERM):
        """Send `sig` and wait; SIGKILL after `timeout`. Returns the exit
        status as Popen reports it (negative: killed by that signal)."""
        if self.alive():
            self.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.send_signal(signal.SIGKILL)
                self.popen.wait(10)
        return self.popen.returncode

    def kill(self):
        return self.stop(timeout=10, sig=signal.SIGKILL)

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class Namespace:
    def __init__(self, lab: "Lab", role: str, name: str):
        self.lab = lab
        self.role = role
        self.name = name

    @property
    def path(self) -> str:
        return f"/run/netns/{self.name}"

    def argv(self, cmd) -> list:
        return ["ip", "netns", "exec", self.name, *map(str, cmd)]

    def run(self, cmd, *, timeout=60, check=True, input=None, env=None):
        """Run a command in this namespace and wait for it (with a deadline)."""
        return _run(self.argv(cmd), timeout=timeout, check=check, input=input, env=env)

    def spawn(self, name: str, cmd, *, cwd=None, env=None) -> Process:
        """Start a background process in this namespace. Its output goes to
        LABDIR/logs/NAME.log; the lab stops it on close."""
        log = self.lab.logs / f"{name}.log"
        with open(log, "ab") as out:
            popen = subprocess.Popen(self.argv(cmd), stdin=subprocess.DEVNULL, stdout=out,
                                     stderr=subprocess.STDOUT, cwd=cwd, env=env or CLEAN_ENV,
                                     start_new_session=True)
        proc = Process(name, popen, log)
        self.lab.processes.append(proc)
        return proc

    def sysctl(self, key: str, value) -> None:
        self.run(["sysctl", "-q", "-w", f"{key}={value}"])

    def pids(self) -> list[int]:
        out = _run(["ip", "netns", "pids", self.name], check=False).stdout.decode()
        return [int(p) for p in out.split()]

    def tcp_info(self, local_port: int) -> list[dict]:
        """The kernel's figures (`ss -ti`) for the established TCP sockets in
        this namespace whose local port is `local_port`: one dict each, with
        numeric fields such as bytes_sent (payload put on the wire,
        retransmissions included), bytes_retrans, bytes_acked, unacked."""
        out = self.run(["ss", "-tinH", "state", "established",
                        f"( sport = :{local_port} )"]).stdout.decode()
        sockets = []
        for line in out.splitlines():
            if not line.startswith((" ", "\t")):
                sockets.append({"unacked": 0, "bytes_sent": 0, "bytes_retrans": 0})
                continue
            if sockets:
                for key, value in re.findall(r"\b([a-z_]+):(\d+)\b", line):
                    sockets[-1][key] = int(value)
        return sockets

    def tcp_states(self, peer_port: int) -> list[str]:
        """The states (`ss` names: ESTAB, LAST-ACK, TIME-WAIT, ...) of this
        namespace's TCP sockets whose peer port is `peer_port`."""
        out = self.run(["ss", "-tanH", f"( dport = :{peer_port} )"]).stdout.decode()
        return [line.split()[0] for line in out.splitlines() if line.strip()]

    def socket(self, family=socket.AF_INET, type=socket.SOCK_STREAM) -> socket.socket:
        """A socket that lives in this namespace (created by a short-lived
        thread that joined it; the socket keeps its namespace for life)."""
        return self.call(socket.socket, family, type)

    def call(self, fn, *args, **kwargs):
        """fn(*args, **kwargs) run by a short-lived thread that joined this
        namespace: every socket it makes lives here (a client library used
        unchanged, e.g. ftplib.FTP_TLS). Returns its result or raises its
        exception."""
        result: dict = {}

        def run():
            try:
                fd = os.open(self.path, os.O_RDONLY)
                try:
                    if _libc.setns(fd, _CLONE_NEWNET) != 0:
                        err = ctypes.get_errno()
                        raise OSError(err, f"setns {self.name}: {os.strerror(err)}")
                finally:
                    os.close(fd)
                result["value"] = fn(*args, **kwargs)
            except BaseException as exc:  # handed to the caller below
                result["error"] = exc

        thread = threading.Thread(target=run, name=f"netns-{self.role}")
        thread.start()
        thread.join()
        if "error" in result:
            raise result["error"]
        return result["value"]

    def connect(self, address: str, port: int, timeout: float = 5.0) -> socket.socket:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sock = self.socket(family)
        sock.settimeout(timeout)
        try:
            sock.connect((address, port))
        except BaseException:
            sock.close()
            raise
        return sock

    def wait_port(self, address: str, port: int, *, greeting: bytes | None = None,
                  timeout: float = 60.0, process: "Process | None" = None) -> bytes:
        """Wait until a TCP server answers on address:port (as seen from this
        namespace). With `greeting`, also read until the server has sent
        bytes starting with it. Returns what was read. With `process`, give
        up at once if that process exits."""
        last_error: list = [None]

        def answered():
            if process is not None and not process.alive():
                raise LabError(f"{process.name} exited with {process.returncode} before "
                               f"port {port} answered:\n{process.log_tail()}")
            try:
                with self.connect(address, port, timeout=2.0) as sock:
                    if greeting is None:
                        return b"connected"
                    data = b""
                    while len(data) < len(greeting) or b"\n" not in data:
                        chunk = sock.recv(4096)
                        if not chunk:
                            break
                        data += chunk
                    if data.startswith(greeting):
                        return data
                    last_error[0] = f"greeting {data[:80]!r}"
            except OSError as exc:
                last_error[0] = exc
            return None

        try:
            return wait_until(answered, timeout, f"{address} port {port} in {self.name}",
                              interval=0.05)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc} (last: {last_error[0]})") from None


class PortCounter:
    """Packet counters on the router for one TCP server port, both families,
    placed before the queue (mangle FORWARD): every packet the router
    forwards for that port, whether it was queued or not."""

    def __init__(self, router: Namespace, port: int):
        self.router = router
        self.port = port
        self.tag = f"lab-count-{port}"
        for tool in ("iptables", "ip6tables"):
            for direction, match in (("c2s", "--dport"), ("s2c", "--sport")):
                router.run([tool, "-w", "-t", "mangle", "-I", "FORWARD", "1", "-p", "tcp",
                            match, str(port), "-m", "comment", "--comment",
                            f"{self.tag}-{direction}"])

    def packets(self) -> dict:
        """{"c2s": n, "s2c": n} summed over IPv4 and IPv6."""
        counts = {"c2s": 0, "s2c": 0}
        pattern = re.compile(r"^\[(\d+):(\d+)\].*--comment \"?" + re.escape(self.tag)
                             + r"-(c2s|s2c)\"?")
        for tool in ("iptables-save", "ip6tables-save"):
            out = self.router.run([tool, "-c", "-t", "mangle"]).stdout.decode()
            for line in out.splitlines():
                m = pattern.match(line)
                if m:
                    counts[m.group(3)] += int(m.group(1))
        return counts


class Lab:
    """client (198.51.100.2, 2001:db8:1::2) — router — server (203.0.113.2,
    2001:db8:2::2). The router forwards both families and has the nfqscan
    ruleset plus `ct state invalid drop`, as a real router has, and the
    sysctls of rules/nfqscan-sysctl.conf (liberal conntrack TCP tracking)."""

    def __init__(self):
        sweep_stale()
        self.id = f"{os.getpid()}-{secrets.token_hex(3)}"
        self.dir = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{self.id}-"))
        os.chmod(self.dir, 0o755)  # servers read their files as other users
        self.logs = self.dir / "logs"
        self.logs.mkdir()
        self.processes: list[Process] = []
        self.client = Namespace(self, "client", f"nfq-{self.id}-cli")
        self.router = Namespace(self, "router", f"nfq-{self.id}-rtr")
        self.server = Namespace(self, "server", f"nfq-{self.id}-srv")
        self.namespaces = [self.client, self.router, self.server]
        self.daemons: list = []
        self.extra_logs: list[Path] = []  # server logs shown when a test fails
        self._created: list[Namespace] = []
        self._closed = False

    # -- life cycle -------------------------------------------------------
    def __enter__(self):
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc):
        self.close()

    def start(self) -> "Lab":
        for ns in self.namespaces:
            _run(["ip", "netns", "add", ns.name])
            self._created.append(ns)
            ns.run(["ip", "link", "set", "lo", "up"])
            # nodad on the addresses below covers them; this covers link-locals.
            ns.sysctl("net.ipv6.conf.all.accept_dad", 0)
            ns.sysctl("net.ipv6.conf.default.accept_dad", 0)

        # The veth ends are created directly inside their namespaces, so no
        # name ever exists in the root namespace.
        _run(["ip", "link", "add", "eth0", "netns", self.client.name, "type", "veth",
              "peer", "name", "cli0", "netns", self.router.name])
        _run(["ip", "link", "add", "eth0", "netns", self.server.name, "type", "veth",
              "peer", "name", "srv0", "netns", self.router.name])

        def address(ns, dev, v4, v6):
            ns.run(["ip", "addr", "add", f"{v4}/24", "dev", dev])
            ns.run(["ip", "-6", "addr", "add", f"{v6}/64", "dev", dev, "nodad"])
            ns.run(["ip", "link", "set", dev, "up"])

        address(self.client, "eth0", CLIENT4, CLIENT6)
        address(self.router, "cli0", ROUTER4_CLIENT_SIDE, ROUTER6_CLIENT_SIDE)
        address(self.router, "srv0", ROUTER4_SERVER_SIDE, ROUTER6_SERVER_SIDE)
        address(self.server, "eth0", SERVER4, SERVER6)
        self.client.run(["ip", "route", "add", "default", "via", ROUTER4_CLIENT_SIDE])
        self.client.run(["ip", "-6", "route", "add", "default", "via", ROUTER6_CLIENT_SIDE])
        self.server.run(["ip", "route", "add", "default", "via", ROUTER4_SERVER_SIDE])
        self.server.run(["ip", "-6", "route", "add", "default", "via", ROUTER6_SERVER_SIDE])
        self.router.sysctl("net.ipv4.ip_forward", 1)
        self.router.sysctl("net.ipv6.conf.all.forwarding", 1)

        for tool, rules in (("iptables", "nfqscan.iptables"), ("ip6tables", "nfqscan.ip6tables")):
            with open(REPO / "rules" / rules, "rb") as f:
                self.router.run([f"{tool}-restore", "-w", "--noflush"], input=f.read())
            self.router.run([tool, "-w", "-A", "FORWARD", "-m", "conntrack",
                             "--ctstate", "INVALID", "-j", "DROP"])
        self.apply_router_sysctls()
        # Reachability of both families through the router, before any test
        # (-w: pings until one answer comes back, so that one lost or slow
        # echo on a loaded machine is no failure).
        for address_ in (SERVER4, SERVER6):
            self.client.run(["ping", "-c", "1", "-w", "20", address_], timeout=30)
        return self

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        errors = []
        for proc in reversed(self.processes):
            try:
                proc.stop(timeout=5)
            except Exception as exc:  # keep tearing down
                errors.append(f"{proc.name}: {exc}")
        for ns in self._created:
            _kill_namespace_processes(ns.name)
        for ns in self._created:
            proc = _run(["ip", "netns", "del", ns.name], check=False)
            if proc.returncode != 0:
                errors.append(f"ip netns del {ns.name}: {proc.stderr.decode().strip()}")
        if os.environ.get("NFQSCAN_LAB_KEEP"):
            print(f"lab: kept {self.dir}")
        else:
            shutil.rmtree(self.dir, ignore_errors=True)
        if errors:
            raise LabError("lab teardown: " + "; ".join(errors))

    def apply_router_sysctls(self) -> None:
        """rules/nfqscan-sysctl.conf in the router's namespace, as a deployment
        applies it (the conntrack sysctls are per namespace; conntrack is
        loaded by the ruleset's `ct state` rule, so this comes after it).
        Without it, conntrack marks the receiver's ACKs of a rewritten stream
        INVALID and the lab's invalid-drop rule stalls the transfer."""
        conf = REPO / "rules" / SYSCTL_FILE
        self.router.run(["sysctl", "-q", "-p", conf])
        for line in conf.read_text().splitlines():
            key, sep, value = line.partition("=")
            if not sep or line.lstrip().startswith(("#", ";")):
                continue
            key, value = key.strip(), value.strip()
            got = self.router.run(["sysctl", "-n", key]).stdout.decode().strip()
            if got != value:
                raise LabError(f"router: {key} is {got!r} after sysctl -p {conf}, "
                               f"expected {value!r}")

    # -- helpers ------------------------------------------------------------
    @staticmethod
    def server_address(family: int = 4) -> str:
        return SERVER4 if family == 4 else SERVER6

    @staticmethod
    def client_address(family: int = 4) -> str:
        return CLIENT4 if family == 4 else CLIENT6

    def url(self, scheme: str, port: int, path: str = "/", family: int = 4,
            userinfo: str = "") -> str:
        auth = f"{userinfo}@" if userinfo else ""
        return f"{scheme}://{auth}{host_in_url(self.server_address(family))}:{port}{path}"

    def curl(self, *args, timeout: float = 120, check: bool = True):
        """curl in the client namespace: no proxy, no globbing (IPv6 brackets),
        fail on HTTP errors, a hard time limit."""
        return self.client.run(["curl", "--silent", "--show-error", "--globoff", "--noproxy", "*",
                                "--max-time", str(int(timeout)), *args],
                               timeout=timeout + 10, check=check)

    # -- NAT topologies (most routers that run nfqscan translate addresses) --
    def masquerade(self) -> None:
        """Source NAT of everything the router sends towards the server, both
        families, as a home router's uplink does: the server sees the
        router's server-side address and a port of its choosing."""
        for tool in ("iptables", "ip6tables"):
            self.router.run([tool, "-w", "-t", "nat", "-A", "POSTROUTING", "-o", "srv0",
                             "-j", "MASQUERADE"])

    def port_forward(self, public_port: int, server_port: int) -> None:
        """Destination NAT: the router's client-side addresses, port
        `public_port`, forwarded to the server's `server_port`, both
        families (a port forward to an inside server)."""
        for tool, server in (("iptables", SERVER4), ("ip6tables", f"[{SERVER6}]")):
            self.router.run([tool, "-w", "-t", "nat", "-A", "PREROUTING", "-i", "cli0", "-p",
                             "tcp", "--dport", str(public_port), "-j", "DNAT",
                             "--to-destination", f"{server}:{server_port}"])

    def public_url(self, path: str, port: int, family: int = 4) -> str:
        """A URL on the router's client-side address (see port_forward)."""
        address = ROUTER4_CLIENT_SIDE if family == 4 else f"[{ROUTER6_CLIENT_SIDE}]"
        return f"http://{address}:{port}{path}"

    def add_tcp_loss(self, probability: float, injected: bool = False) -> None:
        """Drop forwarded TCP at random on the router, both families, at two
        places: in raw PREROUTING (before conntrack and the queue: segments
        nfqscand never sees) and first in filter FORWARD (after the queue:
        segments nfqscand passed or rewrote). Each drops `probability` of the
        packets, so a direction loses about twice that.

        Segments nfqscand injects are the router's own output, and a drop on
        the output path is no loss: the raw socket gets EPERM and sendmmsg
        sends the packet again. With `injected`, the second place moves to
        the receivers instead, raw PREROUTING in the client's and the
        server's namespaces: every packet leaving the router, forwarded or
        injected (a relay's segments and ACKs), is lost there alike.
        Frames from nfqscand's relay device enter the router at PREROUTING
        like received packets, so the router's raw PREROUTING rule drops
        them too (a whole GSO frame at a time: a burst of segments)."""
        places = [(self.router, "raw", ["-A", "PREROUTING"])]
        if injected:
            places += [(self.client, "raw", ["-A", "PREROUTING"]),
                       (self.server, "raw", ["-A", "PREROUTING"])]
        else:
            places.append((self.router, "filter", ["-I", "FORWARD", "1"]))
        for tool in ("iptables", "ip6tables"):
            for ns, table, where in places:
                ns.run([tool, "-w", "-t", table, *where, "-p", "tcp", "-m", "statistic",
                        "--mode", "random", "--probability", f"{probability:g}",
                        "-m", "comment", "--comment", "lab-loss", "-j", "DROP"])

    def tcp_loss_drops(self, comment: str = "lab-loss") -> int:
        """Packets dropped so far by the rules of add_tcp_loss (and by other
        rules whose comment starts with `comment`)."""
        dropped = 0
        for ns in (self.router, self.client, self.server):
            for tool in ("iptables-save", "ip6tables-save"):
                for table in ("raw", "filter"):
                    out = ns.run([tool, "-c", "-t", table]).stdout.decode()
                    for line in out.splitlines():
                        m = re.match(rf"^\[(\d+):\d+\].*{re.escape(comment)}", line)
                        if m:
                            dropped += int(m.group(1))
        return dropped

    def port_counter(self, port: int) -> PortCounter:
        return PortCounter(self.router, port)

    def kernel_queues(self) -> dict[int, dict]:
        """The router's /proc/net/netfilter/nfnetlink_queue: one entry per
        queue that a process has bound."""
        out = self.router.run(["cat", "/proc/net/netfilter/nfnetlink_queue"]).stdout.decode()
        keys = ("queue", "peer_portid", "queue_total", "copy_mode", "copy_range",
                "queue_dropped", "user_dropped", "id_sequence")
        queues = {}
        for line in out.splitlines():
            fields = [int(f) for f in line.split()]
            if len(fields) >= len(keys):
                entry = dict(zip(keys, fields))
                queues[entry["queue"]] = entry
        return queues

    def write_file(self, relpath: str, data: bytes, mode: int = 0o644) -> Path:
        path = self.dir / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        for parent in path.relative_to(self.dir).parents:
            os.chmod(self.dir / parent, 0o755)
        path.write_bytes(data)
        os.chmod(path, mode)
        return path

    def process_logs(self, lines: int = 40) -> str:
        parts = []
        for proc in self.processes:
            state = "running" if proc.alive() else f"exited {proc.returncode}"
            parts.append(f"----- {proc.name} ({state}): {proc.log}\n{proc.log_tail(lines)}")
        for path in self.extra_logs:
            try:
                text = "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
            except OSError:
                continue
            parts.append(f"----- {path}\n{text}")
        return "\n".join(parts)


def _kill_namespace_processes(name: str) -> None:
    for _ in range(50):
        out = _run(["ip", "netns", "pids", name], check=False).stdout.decode().split()
        if not out:
            return
        for pid in out:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        time.sleep(0.05)


def sweep_stale() -> None:
    """Remove namespaces and temp dirs of labs whose owning process is gone
    (a run killed with SIGKILL cannot clean up after itself)."""
    out = _run(["ip", "netns", "list"], check=False).stdout.decode()
    for line in out.splitlines():
        name = line.split()[0] if line.split() else ""
        m = NAME_RE.match(name)
        if m and not _pid_alive(int(m.group(1))):
            _kill_namespace_processes(name)
            _run(["ip", "netns", "del", name], check=False)
    tmp = Path(tempfile.gettempdir())
    for path in tmp.glob(f"{TMP_PREFIX}*"):
        m = re.match(re.escape(TMP_PREFIX) + r"(\d+)-", path.name)
        if m and path.is_dir() and not _pid_alive(int(m.group(1))):
            shutil.rmtree(path, ignore_errors=True)

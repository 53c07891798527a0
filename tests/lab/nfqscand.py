"""nfqscand on the lab's router, and nfqscanctl to look at it.

The daemon and the CLI come from the build directory named by the
environment variable NFQSCAN_BUILD (default `build`, relative to the repo).
Its configuration is rules/nfqscan.toml with the control socket and event log
moved into the lab's directory, plus per-test overrides. The copy lives in the
lab's directory, so the relative folders of the shipped file ("clamav",
"yara", "messages": relative to the file) are rewritten to the checkout's
rules/ folders.
"""

from __future__ import annotations

import json
import os
import pwd
import signal
import tomllib
from pathlib import Path

from lab import REPO, Lab, LabError, Process, same_address, wait_until


def build_dir() -> Path:
    path = Path(os.environ.get("NFQSCAN_BUILD", "build"))
    return path if path.is_absolute() else REPO / path


def daemon_binary() -> Path:
    return build_dir() / "src" / "nfqscand"


def ctl_binary() -> Path:
    return build_dir() / "tools" / "nfqscanctl"


def dump_toml(table: dict) -> str:
    """Enough TOML for nfqscan.toml: nested tables of scalars and lists."""

    def scalar(value) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, (int, float)):
            return repr(value)
        if isinstance(value, str):
            return json.dumps(value)
        if isinstance(value, list):
            return "[" + ", ".join(scalar(v) for v in value) + "]"
        raise TypeError(f"cannot write {value!r} as TOML")

    lines: list[str] = []

    def emit(prefix: str, tbl: dict) -> None:
        plain = [(k, v) for k, v in tbl.items() if not isinstance(v, dict)]
        nested = [(k, v) for k, v in tbl.items() if isinstance(v, dict)]
        if prefix and (plain or not nested):
            lines.append(f"\n[{prefix}]")
        lines.extend(f"{k} = {scalar(v)}" for k, v in plain)
        for key, sub in nested:
            emit(f"{prefix}.{key}" if prefix else key, sub)

    emit("", table)
    return "\n".join(lines).lstrip() + "\n"


def resolve_relative_dirs(config: dict, base: Path) -> dict:
    """Relative folders of a configuration read from `base`, made absolute,
    as nfqscand resolves them against its configuration file: every key
    named `dir`/`dirs` or ending in `_dir`/`_dirs`, in any table ([scan]
    clamav_db_dirs, yara_rule_dirs, temp_dir, and folders added later such
    as the message templates'). Empty strings stay empty (the default)."""

    def absolute(value):
        if isinstance(value, str) and value and not Path(value).is_absolute():
            return str(base / value)
        return value

    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out[key] = resolve_relative_dirs(value, base)
        elif (key == "dirs" or key.endswith("_dirs")) and isinstance(value, list):
            out[key] = [absolute(v) for v in value]
        elif key == "dir" or key.endswith("_dir"):
            out[key] = absolute(value)
        else:
            out[key] = value
    return out


def merge(base: dict, overrides: dict) -> dict:
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


class Nfqscand:
    """One nfqscand instance on the lab's router.

        daemon = Nfqscand(lab, {"protocols": {"http": {"ports": [80, 8888]}}})
        daemon.start()
        daemon.status()      # nfqscanctl status --json, parsed
        daemon.flows()       # nfqscanctl flows --json, parsed
        daemon.stop()        # SIGTERM, returns the exit status
    """

    def __init__(self, lab: Lab, overrides: dict | None = None, name: str = "nfqscand",
                 args=()):
        self.lab = lab
        self.name = name
        self.args = [str(a) for a in args]  # extra command-line arguments
        self.dir = lab.dir / name
        self.dir.mkdir(exist_ok=True)
        self.control = self.dir / "control.sock"
        with open(REPO / "rules" / "nfqscan.toml", "rb") as f:
            config = resolve_relative_dirs(tomllib.load(f), REPO / "rules")
        config = merge(config, {"daemon": {"control_socket": str(self.control),
                                           "event_log": str(self.dir / "events.jsonl")}})
        self.config = merge(config, overrides or {})
        self.config_path = self.dir / "nfqscan.toml"
        self.config_path.write_text(dump_toml(self.config))
        # The instance's folder (control socket, event log) belongs to the
        # account nfqscand switches to, as the unit's RuntimeDirectory= and
        # LogsDirectory= are.
        try:
            account = pwd.getpwnam(self.user()) if self.user() else None
        except KeyError:
            account = None  # a test of the refusal
        if account:
            os.chown(self.dir, account.pw_uid, account.pw_gid)
        self.process: Process | None = None
        self.starts = 0
        self.killed_on_purpose = False
        lab.daemons.append(self)

    def user(self) -> str:
        """[daemon] user: the account nfqscand runs as once started ("" = root)."""
        return str(self.config["daemon"].get("user", "nfqscan"))

    def queues(self) -> list[int]:
        spec = str(self.config["daemon"]["queues"])
        first, _, last = spec.partition("-")
        return list(range(int(first), int(last or first) + 1))

    # -- life cycle -------------------------------------------------------
    def start(self, timeout: float = 60.0) -> "Nfqscand":
        for binary in (daemon_binary(), ctl_binary()):
            if not os.access(binary, os.X_OK):
                raise LabError(f"{binary} is missing: build nfqscan first "
                               f"(meson setup {build_dir()} && ninja -C {build_dir()}), "
                               "or point NFQSCAN_BUILD at a build directory")
        self.starts += 1
        self.killed_on_purpose = False
        self.process = self.lab.router.spawn(f"{self.name}-{self.starts}", self.command())
        wanted = set(self.queues())

        def ready():
            if not self.process.alive():
                raise LabError(f"nfqscand exited with {self.process.returncode} while "
                               f"starting:\n{self.process.log_tail()}")
            if not self._ctl_ok("status", "--json"):
                return False
            # Answering is not enough: every queue must be bound in the kernel,
            # or the first packets would bypass it.
            return wanted <= set(self.lab.kernel_queues())

        wait_until(ready, timeout, "nfqscand to answer status and bind its queues",
                   interval=0.05)
        return self

    def command(self) -> list:
        return [daemon_binary(), "--config", self.config_path, "--foreground", *self.args]

    def run_to_exit(self, timeout: float = 20.0):
        """Run nfqscand in the foreground and wait for it to exit by itself
        (for configurations it must refuse); returns the CompletedProcess.
        One that is still running after `timeout` is killed and raises
        subprocess.TimeoutExpired."""
        return self.lab.router.run(self.command(), check=False, timeout=timeout)

    def stop(self, timeout: float = 30.0):
        """SIGTERM; returns the exit status (SIGKILL after `timeout`: generous,
        as an orderly exit on a loaded machine may take seconds)."""
        if self.process is None:
            return None
        self.killed_on_purpose = True  # not a death the fixture must report
        return self.process.stop(timeout=timeout, sig=signal.SIGTERM)

    def kill(self):
        """SIGKILL, as a crash would end it."""
        self.killed_on_purpose = True
        return self.process.kill() if self.process else None

    def alive(self) -> bool:
        return self.process is not None and self.process.alive()

    # -- nfqscanctl -------------------------------------------------------
    def ctl_command(self) -> str:
        """The nfqscanctl command line for this instance, for a person to type."""
        return f"{ctl_binary()} --control {self.control}"

    def ctl(self, *args, check: bool = True, timeout: float = 10.0):
        return self.lab.router.run([ctl_binary(), "--control", self.control, *args],
                                   check=check, timeout=timeout)

    def _ctl_ok(self, *args) -> bool:
        try:
            return self.ctl(*args, check=False, timeout=5).returncode == 0
        except Exception:
            return False

    def status(self) -> dict:
        return json.loads(self.ctl("status", "--json").stdout)

    def reload_signal(self) -> None:
        """SIGHUP, as `systemctl reload` sends it."""
        self.process.send_signal(signal.SIGHUP)

    def log_text(self) -> str:
        """Everything nfqscand wrote to stdout/stderr (its log in --foreground)."""
        return self.process.log.read_text(errors="replace") if self.process else ""

    # -- scan service -------------------------------------------------------
    def scan(self, *paths, check: bool = False, timeout: float = 60.0):
        """nfqscanctl scan --json PATHS: (exit status, parsed verdicts)."""
        proc = self.ctl("scan", "--json", *paths, check=check, timeout=timeout)
        return proc.returncode, json.loads(proc.stdout or b"[]")

    def engines(self) -> dict:
        return json.loads(self.ctl("engines", "--json").stdout)

    def detections(self, count: int = 20) -> list[dict]:
        return json.loads(self.ctl("detections", "--json", "-n", str(count)).stdout)

    def wait_engines(self, timeout: float = 60.0, generation: int = 1) -> dict:
        """The engines once generation `generation` (or later) is loaded."""
        def loaded():
            engines = self.engines()
            ready = engines["ready"] and engines["engines"]["generation"] >= generation
            return engines if ready else None

        return wait_until(loaded, timeout, f"scan engines generation {generation}",
                          interval=0.1)

    def flows(self) -> list[dict]:
        return json.loads(self.ctl("flows", "--json").stdout)

    def find_flows(self, *, server_port: int, server: str | None = None,
                   client: str | None = None) -> list[dict]:
        return [f for f in self.flows()
                if f.get("server_port") == server_port
                and (server is None or same_address(f.get("server", ""), server))
                and (client is None or same_address(f.get("client", ""), client))]

    def wait_flow(self, timeout: float = 30.0, **match) -> dict:
        """The one flow matching `match` (see find_flows), once listed."""
        found: list = []

        def listed():
            found[:] = self.find_flows(**match)
            return len(found) == 1

        try:
            wait_until(listed, timeout, f"one flow matching {match}")
        except TimeoutError as exc:
            raise AssertionError(f"{exc}; flows matching: {found}; all flows: "
                                 f"{self.flows()}") from None
        return found[0]

    # -- counters -----------------------------------------------------------
    @staticmethod
    def queue_sum(status: dict, key: str) -> int:
        return sum(q[key] for q in status["queues"])

    @staticmethod
    def kernel_sum(status: dict, key: str) -> int:
        return sum(q["kernel"][key] for q in status["queues"])

    def wait_queues_idle(self, timeout: float = 30.0) -> dict:
        """Wait until every packet the kernel queued has been read and given
        a verdict (nothing waiting, counters stable); returns that status."""
        last: dict = {}

        def idle():
            status = self.status()
            counters = [(q["packets"], q["kernel"]["id_sequence"]) for q in status["queues"]]
            done = (all(q["kernel"]["queue_total"] == 0 for q in status["queues"])
                    and counters == last.get("counters"))
            last["counters"] = counters
            last["status"] = status
            return status if done else None

        try:
            return wait_until(idle, timeout, "the queues to go idle", interval=0.2)
        except TimeoutError as exc:
            raise AssertionError(f"{exc}; last status: {last.get('status')}") from None

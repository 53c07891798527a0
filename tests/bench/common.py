"""Shared pieces of the benchmarks: the lab harness (tests/lab) on the path,
figures and the summary table, process CPU and memory from /proc, the
reference consumer, iperf3 and curl runs, random payload files.

Benchmarks print figures and ratios; they do not pass or fail. A target is
printed beside a ratio ("met" / "MISSED") for the reader, nothing more."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "lab"))

from lab import Lab, LabError, Namespace, Process, wait_until  # noqa: E402,F401
from nfqscand import build_dir  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
BENCH_TMP_PREFIX = "nfq-bench-"


# -- output -------------------------------------------------------------------

def section(title: str) -> None:
    print(f"\n=== {title} ===", flush=True)


def say(text: str) -> None:
    print(text, flush=True)


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def fmt(value, digits: int = 2, unit: str = "") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        text = f"{value:,.{digits}f}"
    elif isinstance(value, int):
        text = f"{value:,}"
    else:
        text = str(value)
    return f"{text} {unit}".rstrip()


@dataclass
class Figure:
    section: str
    name: str
    value: object
    unit: str = ""
    digits: int = 2
    note: str = ""


@dataclass
class Report:
    """Every figure a bench section measured, for the final summary table."""
    figures: list = field(default_factory=list)
    notes: list = field(default_factory=list)

    def add(self, section_: str, name: str, value, unit: str = "", digits: int = 2,
            note: str = "") -> None:
        self.figures.append(Figure(section_, name, value, unit, digits, note))

    def ratio(self, section_: str, name: str, value, target: float | None = None,
              at_least: bool = True, note: str = "") -> None:
        """A ratio, with its target when there is one (printed, never enforced)."""
        if target is not None and value is not None:
            met = value >= target if at_least else value <= target
            verdict = "met" if met else "MISSED"
            sign = ">=" if at_least else "<="
            note = f"target {sign} {target:g}: {verdict}" + (f"; {note}" if note else "")
        elif target is not None:
            note = f"target >= {target:g}: not measured" + (f"; {note}" if note else "")
        self.add(section_, name, value, "x", 2, note)

    def note(self, text: str) -> None:
        self.notes.append(text)

    def print_summary(self) -> None:
        section("summary")
        if not self.figures:
            say("(no figures)")
        else:
            self._print_table()
        if self.notes:
            say("\nnotes:")
            for n in self.notes:
                say(f"- {n}")

    def _print_table(self) -> None:
        rows = [(f.section, f.name, fmt(f.value, f.digits, f.unit), f.note) for f in self.figures]
        widths = [max([len(r[i]) for r in rows] + [len(h)])
                  for i, h in enumerate(("section", "figure", "value", "note"))]
        line = "  ".join(h.ljust(w) for h, w in zip(("section", "figure", "value", "note"),
                                                     widths))
        say(line.rstrip())
        say("  ".join("-" * w for w in widths))
        for r in rows:
            say(f"{r[0].ljust(widths[0])}  {r[1].ljust(widths[1])}  {r[2].rjust(widths[2])}  "
                f"{r[3]}".rstrip())


# -- /proc ----------------------------------------------------------------------

def cpu_seconds(pid: int) -> float:
    """utime + stime of a whole process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        text = f.read()
    fields = text[text.rindex(")") + 2:].split()
    # fields[0] is field 3 (state): utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def cpu_seconds_precise(pid: int) -> float:
    """The same CPU time as cpu_seconds() (utime + stime), at nanosecond
    resolution: the sum of the run time in /proc/PID/task/*/schedstat. It
    counts the threads alive now (nfqscand's and the reference's live as long
    as the process); falls back to cpu_seconds() without schedstat."""
    total = 0
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                    total += int(f.read().split()[0])
            except FileNotFoundError:
                continue  # a thread that just ended
    except FileNotFoundError:
        raise
    except OSError:
        return cpu_seconds(pid)
    return total / 1e9 if total else cpu_seconds(pid)


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise LabError(f"no VmRSS for pid {pid}")


def system_cpu() -> tuple[float, float]:
    """(busy, total) jiffies over all CPUs, from /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]
    total = sum(values[:8])
    return total - idle, total


def background_load(seconds: float = 1.0) -> str:
    """How busy the machine is before a section starts (other people's work
    on a shared machine skews every figure): CPU busy over `seconds` and the
    load average."""
    b0, t0 = system_cpu()
    time.sleep(seconds)
    b1, t1 = system_cpu()
    busy = (b1 - b0) / (t1 - t0) if t1 > t0 else 0.0
    with open("/proc/loadavg") as f:
        load = f.read().split()[0]
    return f"machine {busy * 100:.0f}% busy before the section, load average {load}"


class CpuWindow:
    """CPU used by one process and by the whole machine between start() and
    stop()."""

    def __init__(self, pid: int | None):
        self.pid = pid

    def start(self) -> "CpuWindow":
        self.t0 = time.monotonic()
        self.proc0 = cpu_seconds(self.pid) if self.pid else 0.0
        self.precise0 = cpu_seconds_precise(self.pid) if self.pid else 0.0
        self.sys0 = system_cpu()
        return self

    def stop(self) -> "CpuWindow":
        self.wall = time.monotonic() - self.t0
        self.proc = (cpu_seconds(self.pid) - self.proc0) if self.pid else 0.0
        # Ticks (1/CLK_TCK s) are too coarse for a 0.3 s download: the
        # per-packet figures use the schedstat time.
        self.precise = (cpu_seconds_precise(self.pid) - self.precise0) if self.pid else 0.0
        busy1, total1 = system_cpu()
        busy = busy1 - self.sys0[0]
        total = total1 - self.sys0[1]
        self.machine_busy = busy / total if total else 0.0  # 0..1 over all CPUs
        return self


# -- the router's queue rule counter -----------------------------------------------

def invalid_drops(router: Namespace) -> int:
    """Packets the router's `ct state invalid drop` rule dropped (IPv4 + IPv6)."""
    total = 0
    for tool in ("iptables-save", "ip6tables-save"):
        out = router.run([tool, "-c", "-t", "filter"]).stdout.decode()
        for line in out.splitlines():
            m = re.match(r"^\[(\d+):(\d+)\] -A FORWARD .*INVALID -j DROP", line)
            if m:
                total += int(m.group(1))
    return total


def queue_rule_packets(router: Namespace) -> int:
    """Packets that reached the NFQUEUE rule on the router (IPv4 + IPv6),
    whether the kernel then queued them or let them past (fail-open, bypass)."""
    total = 0
    for tool in ("iptables-save", "ip6tables-save"):
        out = router.run([tool, "-c", "-t", "mangle"]).stdout.decode()
        for line in out.splitlines():
            m = re.match(r"^\[(\d+):(\d+)\].*-j NFQUEUE", line)
            if m:
                total += int(m.group(1))
    return total


QUEUE_JUMP = ["-p", "tcp", "-j", "NFQSCAN"]


def set_queue_jump(router: Namespace, enabled: bool) -> None:
    """Plain forwarding: the NFQSCAN chain stays, the FORWARD jump to it goes."""
    for tool in ("iptables", "ip6tables"):
        present = router.run([tool, "-w", "-t", "mangle", "-C", "FORWARD", *QUEUE_JUMP],
                             check=False).returncode == 0
        if enabled and not present:
            router.run([tool, "-w", "-t", "mangle", "-A", "FORWARD", *QUEUE_JUMP])
        elif not enabled and present:
            router.run([tool, "-w", "-t", "mangle", "-D", "FORWARD", *QUEUE_JUMP])


# -- the reference consumer --------------------------------------------------------

def ref_binary() -> Path:
    return build_dir() / "tools" / "nfq-accept-ref"


class RefConsumer:
    """tools/bench_ref/nfq_accept_ref.cc on the router, on queues 0-1."""

    def __init__(self, lab: Lab, queues: str = "0-1", name: str = "nfq-accept-ref"):
        self.lab = lab
        self.name = name
        self.queues = queues
        self.stats_path = lab.dir / f"{name}.stats.json"
        self.process: Process | None = None
        self.starts = 0
        self._seq = 0

    def start(self, timeout: float = 10.0) -> "RefConsumer":
        binary = ref_binary()
        if not os.access(binary, os.X_OK):
            raise LabError(f"{binary} is missing: run tools/bench (it builds it), or "
                           f"ninja -C {build_dir()} tools/nfq-accept-ref")
        self.starts += 1
        self._seq = 0  # a new process counts its stats writes from 1
        self.stats_path.unlink(missing_ok=True)
        self.process = self.lab.router.spawn(
            f"{self.name}-{self.starts}",
            [binary, "--queues", self.queues, "--stats", self.stats_path])
        first, _, last = self.queues.partition("-")
        wanted = set(range(int(first), int(last or first) + 1))

        def bound():
            if not self.process.alive():
                raise LabError(f"{self.name} exited with {self.process.returncode}:\n"
                               f"{self.process.log_tail()}")
            return wanted <= set(self.lab.kernel_queues())

        wait_until(bound, timeout, f"{self.name} to bind its queues")
        return self

    @property
    def pid(self) -> int:
        return self.process.pid

    def stats(self, timeout: float = 5.0) -> dict:
        """Counters summed over the queues (SIGUSR1 makes it write them)."""
        self._seq += 1
        wanted = self._seq
        self.process.send_signal(signal.SIGUSR1)

        def written():
            try:
                data = json.loads(self.stats_path.read_text())
            except (OSError, ValueError):
                return None
            return data if data["seq"] >= wanted else None

        data = wait_until(written, timeout, f"{self.name} stats")
        self._seq = data["seq"]
        totals: dict = {}
        for q in data["queues"]:
            for key, value in q.items():
                if key != "queue":
                    totals[key] = totals.get(key, 0) + value
        return totals

    def stop(self):
        return self.process.stop(timeout=10) if self.process else None


def daemon_counters(status: dict) -> dict:
    """nfqscand's queue counters summed over the queues, plus the kernel's."""
    totals: dict = {}
    for q in status["queues"]:
        for key in ("packets", "bytes", "verdicts", "verdict_messages", "verdict_batches",
                    "recv_batches", "enobufs"):
            totals[key] = totals.get(key, 0) + q.get(key, 0)
        for key in ("queue_dropped", "user_dropped", "id_sequence"):
            totals[f"kernel_{key}"] = totals.get(f"kernel_{key}", 0) + q.get("kernel", {}).get(
                key, 0)
    return totals


def error_line(exc: Exception) -> str:
    """The telling line of a LabError (the command's stderr), else the first."""
    text = str(exc)
    for line in text.splitlines():
        if line.startswith("stderr:") and line[7:].strip():
            return line[7:].strip()[:200]
    return text.splitlines()[0][:200] if text else type(exc).__name__


def delta(after: dict, before: dict) -> dict:
    return {k: after[k] - before.get(k, 0) for k in after if isinstance(after[k], (int, float))}


# -- traffic ---------------------------------------------------------------------

def wait_listening(ns: Namespace, port: int, timeout: float = 10.0,
                   process: Process | None = None) -> None:
    """Wait until something listens on TCP `port` in `ns` (without connecting:
    iperf3 takes any connection for a test)."""

    def listening():
        if process is not None and not process.alive():
            raise LabError(f"{process.name} exited:\n{process.log_tail()}")
        out = ns.run(["ss", "-Hltn", f"sport = :{port}"], check=False).stdout
        return bool(out.strip())

    wait_until(listening, timeout, f"a listener on port {port} in {ns.name}")


def iperf3(lab: Lab, address: str, port: int, streams: int, seconds: int) -> dict:
    """One iperf3 run client -> server; returns receiver-side Gbit/s and the
    sender's retransmits."""
    proc = lab.client.run(["iperf3", "-c", address, "-p", port, "-P", streams, "-t", seconds,
                           "-J"], timeout=seconds + 30, check=False)
    try:
        data = json.loads(proc.stdout)
    except ValueError:
        data = {}
    if proc.returncode != 0 or "error" in data:
        raise LabError(f"iperf3 to {address}:{port} failed ({proc.returncode}): "
                       f"{data.get('error') or proc.stderr.decode(errors='replace')[-500:]}")
    end = data["end"]
    return {"gbps": end["sum_received"]["bits_per_second"] / 1e9,
            "retransmits": end.get("sum_sent", {}).get("retransmits", 0)}


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def curl_timed(lab: Lab, url: str, out: Path, *extra, timeout: float = 300) -> dict:
    """Download `url` from the client namespace into `out`; curl's own
    transfer time, size and status, and the sha256 of what arrived."""
    out.unlink(missing_ok=True)
    proc = lab.curl("--fail", "--output", str(out), "--write-out",
                    "%{http_code} %{size_download} %{time_total} %{time_connect} "
                    "%{time_starttransfer}", *extra, url, timeout=timeout, check=False)
    fields = proc.stdout.decode().split()
    result = {"ok": proc.returncode == 0, "rc": proc.returncode,
              "error": proc.stderr.decode(errors="replace").strip()[-300:]}
    if len(fields) == 5:
        result.update(http_code=int(fields[0]), size=int(fields[1]), seconds=float(fields[2]),
                      connect_s=float(fields[3]), first_byte_s=float(fields[4]))
    result["sha256"] = sha256_file(out) if out.exists() else None
    out.unlink(missing_ok=True)
    return result


# -- files -------------------------------------------------------------------------

class BenchFiles:
    """Random payload files made once per run in a temp dir (readable by
    nginx's www-data), and a RAM-backed dir where downloads land, so the
    disk never times a download. Both go away in close()."""

    def __init__(self):
        sweep_stale_bench_dirs()
        prefix = f"{BENCH_TMP_PREFIX}{os.getpid()}-"
        self.dir = Path(tempfile.mkdtemp(prefix=prefix))
        os.chmod(self.dir, 0o755)
        ram = Path("/dev/shm")
        self.downloads = Path(tempfile.mkdtemp(prefix=prefix, dir=ram if ram.is_dir() else None))
        self.digests: dict[str, str] = {}

    def random_file(self, name: str, size: int) -> tuple[Path, str]:
        path = self.dir / name
        if name not in self.digests:
            digest = hashlib.sha256()
            with open(path, "wb") as f:
                left = size
                while left:
                    block = os.urandom(min(left, 1 << 20))
                    digest.update(block)
                    f.write(block)
                    left -= len(block)
            os.chmod(path, 0o644)
            self.digests[name] = digest.hexdigest()
        return path, self.digests[name]

    def serve(self, www: Path, name: str, size: int) -> str:
        """Put the random file `name` into nginx's document root (a hard link
        when possible); returns its sha256."""
        path, digest = self.random_file(name, size)
        target = www / name
        target.unlink(missing_ok=True)
        try:
            os.link(path, target)
        except OSError:
            shutil.copyfile(path, target)
            os.chmod(target, 0o644)
        return digest

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
        shutil.rmtree(self.downloads, ignore_errors=True)


def sweep_stale_bench_dirs() -> None:
    for base in (Path(tempfile.gettempdir()), Path("/dev/shm")):
        for path in base.glob(f"{BENCH_TMP_PREFIX}*"):
            m = re.match(re.escape(BENCH_TMP_PREFIX) + r"(\d+)-", path.name)
            if not (m and path.is_dir()):
                continue
            try:
                os.kill(int(m.group(1)), 0)
            except ProcessLookupError:
                shutil.rmtree(path, ignore_errors=True)
            except PermissionError:
                pass


def run_quiet(cmd, timeout=60):
    return subprocess.run(cmd, capture_output=True, timeout=timeout)


# -- what the application benches (bench_http, bench_mail) share ---------------------

def percentile(values: list[float], p: float):
    if not values:
        return None
    v = sorted(values)
    k = (len(v) - 1) * p / 100
    lo, hi = math.floor(k), math.ceil(k)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def scan_delta(a: dict, b: dict, protocol: str) -> dict:
    """The scan service's counters and `protocol`'s inspector counters
    (status "protocols") between two status snapshots."""
    sa, sb = a["scan"], b["scan"]
    pa = a.get("protocols", {}).get(protocol, {})
    pb = b.get("protocols", {}).get(protocol, {})

    def hist(name):
        n = sb[name]["count"] - sa[name]["count"]
        t = sb[name]["total_us"] - sa[name]["total_us"]
        return (t / n / 1000 if n else None), n

    def released(p):
        return sum(p.get("released", {}).values())

    latency, scans = hist("scan_latency")
    wait, _ = hist("queue_wait")
    busy = sum(sb["engines"][e]["busy_us"] - sa["engines"][e]["busy_us"]
               for e in ("clamav", "yara")) / 1e6
    return {"scans": scans, "scan_ms": latency, "queue_wait_ms": wait,
            "engine_busy_s": busy, "queue_depth_max": sb["queue"]["depth_max"],
            "objects": pb.get("objects", 0) - pa.get("objects", 0),
            "clean": pb.get("clean", 0) - pa.get("clean", 0),
            "allowlisted": pb.get("allowlisted", 0) - pa.get("allowlisted", 0),
            "released": released(pb) - released(pa),
            "scan_errors": {k: v - sa["errors"].get(k, 0) for k, v in sb["errors"].items()
                            if v - sa["errors"].get(k, 0)},
            "infected": sb["infected"] - sa["infected"],
            "cache_hits": sb.get("cache", {}).get("hits", 0) - sa.get("cache", {}).get("hits", 0),
            "cache_misses": (sb.get("cache", {}).get("misses", 0)
                             - sa.get("cache", {}).get("misses", 0))}


def ctl_scan_files(daemon, paths: list[str], protocol: str,
                   shares: list[list[str]] | None = None) -> dict:
    """`nfqscanctl scan` of `paths` through the daemon's pool: scan_delta's
    keys and "verdicts", "seconds", "clean_verdicts" (how many),
    "scanner_cpu" (pid -> CPU seconds), "nfqscand_cpu" (the daemon's own).

    nfqscanctl sends one file per request and waits for its verdict, so one
    nfqscanctl keeps one scanner busy. Like the traffic side (several
    clients at once), several run at once: one per share in `shares` (the
    download clients' shares of the same files), else two per scanner
    process, so the scan service alone has every scanner busy too."""
    status0 = daemon.status()
    pids = [int(p) for p in status0["scan"]["scanner_pids"]]
    if not shares:
        n = max(1, 2 * len(pids))
        shares = [paths[i::n] for i in range(n)]
    cpu0 = {p: cpu_seconds_precise(p) for p in pids}
    dcpu0 = cpu_seconds_precise(daemon.process.pid)
    results: list[list] = [[] for _ in shares]

    def scan_share(i: int) -> None:
        share = shares[i]
        for j in range(0, len(share), 200):
            proc = daemon.ctl("scan", "--json", *share[j:j + 200], check=False, timeout=900)
            results[i] += json.loads(proc.stdout or b"[]")

    t0 = time.monotonic()
    threads = [threading.Thread(target=scan_share, args=(i,)) for i in range(len(shares))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0
    verdicts = [v for r in results for v in r]
    return {**scan_delta(status0, daemon.status(), protocol), "verdicts": verdicts,
            "seconds": wall, "concurrency": len(shares),
            "clean_verdicts": sum(1 for v in verdicts if v.get("verdict") == "clean"),
            "scanner_cpu": {p: cpu_seconds_precise(p) - cpu0[p] for p in pids},
            "nfqscand_cpu": cpu_seconds_precise(daemon.process.pid) - dcpu0}


def alternate_batches(router: Namespace, items: list, size: int, measure, progress,
                      every: int) -> None:
    """`measure(variant, batch)` over `items` in batches of `size`, each
    batch plain (queue rules jumped over) and "scanned" (through nfqscand),
    which goes first alternating; `progress(done)` after every `every`
    batches and after the last."""
    n = len(items)
    for b, i in enumerate(range(0, n, size)):
        batch = items[i:i + size]
        for variant in (("plain", "scanned") if b % 2 == 0 else ("scanned", "plain")):
            set_queue_jump(router, variant == "scanned")
            try:
                measure(variant, batch)
            finally:
                set_queue_jump(router, True)
        if (b + 1) % every == 0 or i + size >= n:
            progress(min(n, i + size))


class Rounds:
    """Runs by variant ("plain", "scanned", "ctl-scan", ...), each with its
    "round", and medians over the rounds."""

    KEY = "mbps"  # what paired() compares by default

    def __init__(self):
        self.runs: dict = defaultdict(list)  # variant -> [run]

    def med(self, variant: str, key: str):
        return median([r.get(key) for r in self.runs.get(variant, [])])

    def paired(self, num: str, den: str, key: str | None = None):
        """The median over rounds of num / den of the same round."""
        key = key or self.KEY
        by_round: dict = defaultdict(dict)
        for v in (num, den):
            for run in self.runs.get(v, []):
                by_round[run["round"]][v] = run.get(key)
        return median([ratio(p.get(num), p.get(den)) for p in by_round.values()])

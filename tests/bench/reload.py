"""`tools/bench reload`: the memory a signature reload needs, concurrent vs
blocking ([scan] reload), with a ClamAV database of realistic size.

The official databases cannot be downloaded here, so one is generated
(fixed seed): --reload-hdb MD5 hash signatures (.hdb), a quarter as many
SHA-256 ones (.hsb), and --reload-ndb body signatures (.ndb: 16-40 random
bytes each, which go into libclamav's Aho-Corasick trie), plus the shipped
YARA rules. For each mode nfqscand (2 scanner processes) loads it, then
`nfqscanctl reload` rebuilds it while a sampler reads, every 50 ms, the
proportional set size (PSS: shared copy-on-write pages counted once) of
nfqscand and all its children summed, and nfqscand's own RSS. Printed:
the build time, the steady memory before and after, the peak during the
reload, and (blocking) how long objects got engine-not-ready.
Figures, not pass/fail.
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

from common import Report, say, section
from lab import REPO, Lab
from nfqscand import Nfqscand

S = "reload"
MB = 1 << 20


def generate_database(folder: Path, hdb: int, ndb: int) -> dict:
    """Writes bulk.hdb, bulk.hsb, bulk.ndb into `folder`; returns counts and bytes."""
    rnd = random.Random(1515)
    folder.mkdir(parents=True, exist_ok=True)
    hsb = hdb // 4
    with open(folder / "bulk.hdb", "wb") as f:
        for i in range(hdb):
            f.write(b"%032x:%d:Bench.Hdb.%d\n" % (rnd.getrandbits(128), 1024 + i % 65536, i))
    with open(folder / "bulk.hsb", "wb") as f:
        for i in range(hsb):
            f.write(b"%064x:%d:Bench.Hsb.%d\n" % (rnd.getrandbits(256), 1024 + i % 65536, i))
    with open(folder / "bulk.ndb", "wb") as f:
        for i in range(ndb):
            body = rnd.randbytes(rnd.randint(16, 40)).hex().encode()
            f.write(b"Bench.Ndb.%d:0:*:%s\n" % (i, body))
    size = sum(p.stat().st_size for p in folder.iterdir())
    return {"hdb": hdb, "hsb": hsb, "ndb": ndb, "bytes": size}


def children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def proc_kib(path: str, key: str) -> int:
    """A "Key:  N kB" line of a /proc file, in bytes; 0 if the process is gone."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    except OSError:
        pass  # a scanner that just ended
    return 0


def pss_bytes(pid: int) -> int:
    return proc_kib(f"/proc/{pid}/smaps_rollup", "Pss:")


def rss_of(pid: int) -> int:
    return proc_kib(f"/proc/{pid}/status", "VmRSS:")


class Sampler:
    """Every 50 ms: PSS of nfqscand + children, nfqscand's RSS; peaks kept."""

    def __init__(self, pid: int):
        self.pid = pid
        self.peak_pss = self.peak_rss = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self):
        while not self._stop.is_set():
            # A scanner forked between reading nfqscand and reading the
            # scanners would count the pages they share more than once:
            # such a sample is dropped.
            kids = children(self.pid)
            total = pss_bytes(self.pid) + sum(pss_bytes(c) for c in kids)
            if children(self.pid) == kids:
                self.peak_pss = max(self.peak_pss, total)
            self.peak_rss = max(self.peak_rss, rss_of(self.pid))
            self.samples += 1
            self._stop.wait(0.05)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def steady(pid: int) -> tuple[int, int]:
    return (pss_bytes(pid) + sum(pss_bytes(c) for c in children(pid)), rss_of(pid))


def wait_settled(pid: int, scanners: int, timeout: float = 600) -> float:
    """Waits until the old engines are gone: only `scanners` children left
    and nfqscand's RSS unchanged (within 1%) for 5 s. Freeing millions of
    signatures takes a while on the retirer thread. Returns the seconds."""
    t0 = time.monotonic()
    last, since = rss_of(pid), time.monotonic()
    while time.monotonic() - t0 < timeout:
        time.sleep(0.5)
        rss = rss_of(pid)
        if abs(rss - last) > last / 100:
            last, since = rss, time.monotonic()
        elif len(children(pid)) <= scanners and time.monotonic() - since >= 5:
            break
    return time.monotonic() - t0


def measure(lab: Lab, report: Report, db: Path, mode: str) -> None:
    daemon = Nfqscand(lab, {"scan": {
        "clamav_db_dirs": [str(db)], "yara_rule_dirs": [str(REPO / "rules" / "yara")],
        "reload": mode, "pool_threads": 2, "watch_signatures": False, "self_check_s": 0}},
        name=f"nfqscand-{mode}").start()
    try:
        first = daemon.wait_engines(timeout=1800)
        pid = daemon.status()["pid"]
        wait_settled(pid, 2)
        before_pss, before_rss = steady(pid)
        not_ready = []
        with Sampler(pid) as sampler:
            t0 = time.monotonic()
            done = threading.Event()

            def watch_ready():
                while not done.is_set():
                    if not daemon.status()["scan"]["ready"]:
                        not_ready.append(time.monotonic())
                    done.wait(0.05)

            watcher = threading.Thread(target=watch_ready)
            watcher.start()
            try:
                daemon.ctl("reload", timeout=1800)
                second = daemon.wait_engines(timeout=1800, generation=2)
                switch_s = time.monotonic() - t0
                if mode == "concurrent":
                    # Once the old set is freed, the scanners are forked again.
                    forked = daemon.status()["scan"]["scanner_pids"]
                    deadline = time.monotonic() + 600
                    while (time.monotonic() < deadline and
                           set(daemon.status()["scan"]["scanner_pids"]) & set(forked)):
                        time.sleep(0.2)
                # The peak can come after the switch: the old set is freed
                # by the retirer thread once its last scan is done.
                settle_s = wait_settled(pid, 2)
            finally:
                done.set()
                watcher.join()
        after_pss, after_rss = steady(pid)
        e = second["engines"]
        say(f"  {mode}: {e['clamav']['signatures'] if 'clamav' in e else '?'} signatures; "
            f"build {first['engines']['load_time_ms'] / 1000:.1f} s (first), "
            f"{e['load_time_ms'] / 1000:.1f} s (reload); switch {switch_s:.1f} s, "
            f"old set gone {settle_s:.1f} s later")
        say(f"  {mode}: PSS nfqscand+scanners before {before_pss / MB:.0f} MiB, "
            f"peak {sampler.peak_pss / MB:.0f} MiB, after {after_pss / MB:.0f} MiB; "
            f"nfqscand RSS before {before_rss / MB:.0f} MiB, peak {sampler.peak_rss / MB:.0f} "
            f"MiB, after {after_rss / MB:.0f} MiB ({sampler.samples} samples)")
        report.add(S, f"{mode}: PSS before reload", before_pss / MB, "MiB", 0)
        report.add(S, f"{mode}: PSS peak during reload", sampler.peak_pss / MB, "MiB", 0)
        report.add(S, f"{mode}: PSS after reload", after_pss / MB, "MiB", 0)
        report.add(S, f"{mode}: nfqscand RSS peak", sampler.peak_rss / MB, "MiB", 0)
        report.add(S, f"{mode}: engine build", e["load_time_ms"] / 1000, "s", 1)
        if not_ready:
            window = not_ready[-1] - not_ready[0]
            say(f"  {mode}: engine-not-ready for ~{window:.1f} s")
            report.add(S, f"{mode}: engine-not-ready window", window, "s", 1)
        elif mode == "blocking":
            say("  blocking: the not-ready window was shorter than the sampling")
    finally:
        daemon.stop(timeout=60)


def run(report: Report, files, args) -> None:
    section("reload: memory of a signature reload, concurrent vs blocking")
    with Lab() as lab:
        db = lab.dir / "bench-clamav"
        t0 = time.monotonic()
        counts = generate_database(db, args.reload_hdb, args.reload_ndb)
        say(f"  generated {counts['hdb']} .hdb + {counts['hsb']} .hsb + {counts['ndb']} .ndb "
            f"signatures ({counts['bytes'] / MB:.0f} MiB of files) in "
            f"{time.monotonic() - t0:.0f} s")
        report.note(f"reload: database {counts['hdb']} hdb + {counts['hsb']} hsb + "
                    f"{counts['ndb']} ndb signatures, {counts['bytes'] / MB:.0f} MiB")
        for mode in ("concurrent", "blocking"):
            measure(lab, report, db, mode)

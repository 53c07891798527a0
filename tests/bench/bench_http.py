"""`tools/bench http`: HTTP antivirus end to end (issue 9), in one fresh lab.

A mixed corpus of clean objects made by code here (HTML, text, zips of text
and binary members, random binaries; sizes log-uniform from 4 KiB to 8 MiB,
~200 MB by default, --http-mb), served by nginx in the server namespace
(static files: Content-Length, keep-alive). Each round:
- plain: --clients (4) concurrent curl processes on the client, each fetching
  its share of the corpus over one keep-alive connection, without the FORWARD
  jump to the queue (plain forwarding);
- scanned: the same through nfqscand (the project's ClamAV signatures and
  YARA rules, [scan] pool_threads = 2, scanner processes): every response
  body is relayed, scanned, then delivered; sha256 of every object checked;
  the scanner processes' CPU (from /proc of scan.scanner_pids) over the run;
  per run the relay and stream counters, the router's ct-invalid drops and
  the slowest objects;
- scanned-close: the same with `Connection: close` on every request (a new
  connection per object: nginx closes right after each response);
- ctl-scan: `nfqscanctl scan` of the same files through the same daemon's
  pool (the scan service alone, the same scanners, the files mapped, no
  network), one nfqscanctl per client share at once (nfqscanctl waits for
  each file's verdict, so one alone keeps only one scanner busy);
- allowlisted: nfqscand with [protocols.http] allow_hosts = [the server]:
  each connection is released after its first request (allowlist_release);
- passed: the same with allowlist_release = false: the flows stay in the
  stream engine, parsed, the objects passed unscanned (the engine's own cost);
- released: nfqscand with [protocols.http] scan = false: the flows are
  released to the conntrack-mark fast path;
- scanbench: nfqscan-scanbench (the bench runner of `tools/bench scan`),
  2 workers, ClamAV + YARA, the same files, right after ctl-scan (the
  daemon idle), so that both sides of the ratio see the same machine load.
Ratios are paired within a round, then the median over rounds is printed.
Then the time to first byte of small objects (4-16 KiB; --ttfb-requests,
1000, each way): GETs one after another on one keep-alive connection (a
Python socket in the client namespace), batches of 100 alternating plain
forwarding and nfqscand; TTFB = request sent -> first byte of the response;
p50/p99 and the added ms. --perf: one extra scanned download (Connection: close) under
`perf record` (nfqscand and its scanner processes), top symbols printed.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import socket
import subprocess
import time
from pathlib import Path

import bench_scan
from common import (LabError, Report, Rounds, alternate_batches, build_dir, cpu_seconds_precise,
                    ctl_scan_files, daemon_counters, fmt, invalid_drops, median, percentile,
                    say, scan_delta, section, set_queue_jump, system_cpu)
from lab import REPO, SERVER4, Lab
from nfqscand import Nfqscand
from servers import Nginx

S = "http"
PORT = 80
MB = 1e6
KIB = 1024
# What `--variants` may name for http (cache: cache-fill and cache-hit).
HTTP_VARIANTS = ("plain", "scanned", "scanned-close", "allowlisted", "passed", "released",
                 "cache")
MIB = 1 << 20
TTFB_BATCH = 100
SCAN = {"clamav_db_dirs": [str(REPO / "rules" / "clamav")],
        "yara_rule_dirs": [str(REPO / "rules" / "yara")], "pool_threads": 2,
        "isolation": "process", "cache_entries": 0}  # every object scanned, but in the cache runs
WRITE_OUT = ("%{http_code} %{size_download} %{time_pretransfer} %{time_starttransfer} "
             "%{time_total} %{num_connects}\\n")


# -- corpus -------------------------------------------------------------------------

class HttpCorpus(bench_scan.Corpus):
    """Clean objects only: html, text, zip (deflated text and binary members),
    random binary; sizes log-uniform between 4 KiB and 8 MiB. `budget_mb`
    is split 20/25/30/25 % over html/text/zip/binary."""

    def zip_object(self) -> bytes:
        target = self.size(4 * KIB, 8 * MIB)
        members, total = [], 0
        while total < target * 1.5 or not members:  # deflate shrinks the text
            name, data = self.member()
            if self.rnd.random() < 0.2:
                name, data = "blob.bin", self.binary(self.size(4 * KIB, max(8 * KIB, target // 2)))
            members.append((name, data))
            total += len(data)
        return self.zip(members)

    def generate_http(self, budget_mb: float) -> "HttpCorpus":
        self.root.mkdir(parents=True, exist_ok=True)
        self.scale = budget_mb / 100.0
        self.fill("html", 20, lambda: ("html", self.html(self.size(4 * KIB, 2 * MIB))))
        self.fill("text", 25, lambda: ("txt", self.text(self.size(4 * KIB, 4 * MIB))))
        self.fill("zip", 30, lambda: ("zip", self.zip_object()))
        self.fill("binary", 25, lambda: ("bin", self.binary(self.size(4 * KIB, 8 * MIB))))
        return self

    def small(self, count: int) -> None:
        """`count` objects of 4-16 KiB (html, text, binary) for the TTFB test."""
        self.root.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            size = self.rnd.randint(4 * KIB, 16 * KIB)
            kind = ("html", "txt", "bin")[i % 3]
            data = (self.html(size)[:size] if kind == "html" else
                    self.text(size) if kind == "txt" else self.binary(size))
            self.write(kind, f"small-{i:04d}.{kind}", data)


def file_table(root: Path, url_prefix: str) -> list[dict]:
    out = []
    for path in sorted(root.iterdir()):
        data = path.read_bytes()
        os.chmod(path, 0o644)
        out.append({"path": path, "url": f"{url_prefix}/{path.name}", "size": len(data),
                    "sha256": hashlib.sha256(data).hexdigest()})
    return out


def split_shares(objects: list[dict], clients: int, seed: int = 3) -> list[list[dict]]:
    """Each client gets an equal share of bytes (largest first, to the least
    loaded client), in a shuffled order."""
    shares: list[list[dict]] = [[] for _ in range(clients)]
    loads = [0] * clients
    for o in sorted(objects, key=lambda o: -o["size"]):
        i = loads.index(min(loads))
        shares[i].append(o)
        loads[i] += o["size"]
    rng = random.Random(seed)
    for share in shares:
        rng.shuffle(share)
    return shares


# -- the bench ----------------------------------------------------------------------

class HttpBench(Rounds):
    def __init__(self, lab: Lab, files, report: Report, args):
        super().__init__()
        self.lab, self.files, self.report = lab, files, report
        self.rounds = max(1, args.rounds)
        self.clients = max(1, args.clients)
        self.budget_mb = args.http_mb
        self.ttfb_requests = args.ttfb_requests
        self.perf = args.perf
        # ClamAV's temp folder: it makes (and removes) a folder per scan,
        # and files for HTML it normalises: on ext4 that is most of a small
        # object's scan time.
        self.temp_dir = getattr(args, "temp_dir", "") or ""
        if self.temp_dir:
            os.makedirs(self.temp_dir, exist_ok=True)
            os.chmod(self.temp_dir, 0o1777)
        self.ttfb: dict = {"plain": [], "scanned": []}
        self.ttfb_total: dict = {"plain": [], "scanned": []}
        self.notes: list[str] = []
        self.flow_states: dict = {}
        # --variants: a subset of HTTP_VARIANTS (default all); "scanned" also
        # brings the time to first byte and the scan service alone.
        self.variants = set(args.variants.split(",")) if args.variants else set(HTTP_VARIANTS)
        unknown = self.variants - set(HTTP_VARIANTS)
        if unknown:
            raise LabError(f"http: unknown variants {sorted(unknown)} "
                           f"(known: {', '.join(HTTP_VARIANTS)})")

    # -- set-up -----------------------------------------------------------------------
    def prepare(self) -> None:
        lab = self.lab
        self.nginx = Nginx(lab, ports=[PORT])
        t0 = time.monotonic()
        say(f"corpus: generating ~{self.budget_mb:.0f} MB of clean objects (4 KiB - 8 MiB) "
            f"and {self.ttfb_requests} small ones (4-16 KiB) into nginx's root")
        self.corpus_root = self.nginx.www / "c"
        big = HttpCorpus(self.corpus_root, seed=9).generate_http(self.budget_mb)
        small = HttpCorpus(self.nginx.www / "s", seed=10)
        small.small(self.ttfb_requests)
        base = f"http://{SERVER4}:{PORT}"
        self.objects = file_table(self.nginx.www / "c", f"{base}/c")
        self.small_objects = file_table(self.nginx.www / "s", f"{base}/s")
        self.corpus_bytes = sum(o["size"] for o in self.objects)
        sizes = sorted(o["size"] for o in self.objects)
        say(f"corpus: {len(self.objects)} objects, {self.corpus_bytes / MB:.1f} MB "
            f"(median {sizes[len(sizes) // 2] / KIB:.0f} KiB, largest {sizes[-1] / MIB:.1f} MiB)"
            f" in {time.monotonic() - t0:.0f} s")
        for kind, (n, size) in big.kinds.items():
            say(f"  {kind:<7} {n:>4} objects {size / MB:>7.1f} MB")
        self.shares = shares = split_shares(self.objects, self.clients)
        described = ", ".join(f"{len(s)} objects/{sum(o['size'] for o in s) / MB:.0f} MB"
                              for s in shares)
        say(f"clients: {self.clients} concurrent curl processes ({described}), "
            f"one keep-alive connection each")

    def daemon(self, http: dict | None = None, scan: dict | None = None) -> Nfqscand:
        temp = {"temp_dir": self.temp_dir} if self.temp_dir else {}
        overrides = {"scan": {**SCAN, **temp, **(scan or {})},
                     "protocols": {"http": {"ports": [PORT], **(http or {})}}}
        d = Nfqscand(self.lab, overrides, name="nfqscand")
        d.start()
        d.wait_engines()
        return d

    # -- downloads ----------------------------------------------------------------------
    def download(self, variant: str, r: int, daemon: Nfqscand | None,
                 close: bool = False) -> dict:
        """Every client fetches its share at once; wall time from the first
        start to the last end. Every object's status, size and sha256 checked."""
        lab = self.lab
        outdir = self.files.downloads / f"{variant}-{r}"
        outdir.mkdir(exist_ok=True)
        scan0 = daemon.status() if daemon else None
        pids = [int(p) for p in (scan0 or {}).get("scan", {}).get("scanner_pids", [])]
        cpu0 = {p: cpu_seconds_precise(p) for p in pids}
        dcpu0 = cpu_seconds_precise(daemon.process.pid) if daemon else 0.0
        invalid0 = invalid_drops(lab.router)
        sys0 = system_cpu()
        procs = []
        t0 = time.monotonic()
        for c, share in enumerate(self.shares):
            cmd = ["curl", "--silent", "--show-error", "--globoff", "--noproxy", "*",
                   "--max-time", "900", "--write-out", WRITE_OUT]
            if close:
                cmd += ["-H", "Connection: close"]
            for i, o in enumerate(share):
                cmd += [o["url"], "--output", str(outdir / f"{c}-{i}")]
            procs.append(subprocess.Popen(lab.client.argv(cmd), stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE))
        # Never minutes of silence: what has arrived, every 10 s.
        next_note = t0 + 10
        while any(p.poll() is None for p in procs):
            time.sleep(0.05)
            now = time.monotonic()
            if now >= next_note:
                arrived = sum(f.stat().st_size for f in outdir.iterdir() if f.is_file())
                say(f"    ... {variant}: {now - t0:.0f} s, {arrived / MB:.0f} of "
                    f"{self.corpus_bytes / MB:.0f} MB arrived")
                next_note = now + 10
            if now - t0 > 1000:
                for p in procs:
                    p.kill()
        wall = time.monotonic() - t0
        outs = []
        for p in procs:
            out, err = p.communicate(timeout=30)
            outs.append((p.returncode, out.decode(), err.decode(errors="replace")))
        sys1 = system_cpu()
        scanner_cpu = {p: cpu_seconds_precise(p) - cpu0[p] for p in pids
                       if os.path.exists(f"/proc/{p}")}
        dcpu = (cpu_seconds_precise(daemon.process.pid) - dcpu0) if daemon else 0.0
        scan1 = daemon.status() if daemon else None
        invalid = invalid_drops(lab.router) - invalid0
        # Check what arrived.
        bad, got, transfers = [], 0, []
        for c, (share, (rc, out, err)) in enumerate(zip(self.shares, outs)):
            lines = out.splitlines()
            if rc != 0 or len(lines) != len(share):
                bad.append(f"client {c}: curl exit {rc}, {len(lines)}/{len(share)} transfers: "
                           f"{err.strip()[-200:]}")
            for i, (o, line) in enumerate(zip(share, lines)):
                code, size, _pre, first, total = line.split()[:5]
                transfers.append({"url": o["url"], "size": o["size"], "first": float(first),
                                  "total": float(total)})
                path = outdir / f"{c}-{i}"
                ok = code == "200" and int(size) == o["size"] and path.exists()
                if ok:
                    digest = hashlib.sha256(path.read_bytes()).hexdigest()
                    ok = digest == o["sha256"]
                if not ok:
                    bad.append(f"{o['url']}: status {code}, {size} bytes"
                               + ("" if code != "200" else ", content differs"))
                else:
                    got += o["size"]
                path.unlink(missing_ok=True)
        busy = (sys1[0] - sys0[0]) / max(1, sys1[1] - sys0[1])
        run = {"round": r, "seconds": wall, "mbps": got / wall / MB, "ok": not bad,
               "machine_busy": busy, "nfqscand_cpu": dcpu, "scanner_cpu": scanner_cpu}
        run["transfers"] = transfers
        if scanner_cpu:
            # MB per CPU second of nfqscan's own processes (queue workers and
            # scanners): what a scanned byte costs, whatever else the machine
            # runs (the lab's nginx and curl, other load).
            run["mb_per_cpu_s"] = got / MB / max(1e-9, sum(scanner_cpu.values()) + dcpu)
        if scan0 and scan1:
            run.update(scan_delta(scan0, scan1, "http"))
            q0, q1 = daemon_counters(scan0), daemon_counters(scan1)
            run["queued_packets"] = q1["packets"] - q0["packets"]
            run["flows_released"] = (scan1["flows"].get("released", 0)
                                     - scan0["flows"].get("released", 0))
            st0, st1 = scan0.get("streams", {}), scan1.get("streams", {})
            run["stream"] = {k: st1.get(k, 0) - st0.get(k, 0)
                             for k in ("stalls", "resets", "held_overflow", "tails_acknowledged")
                             if isinstance(st1.get(k, 0), int)}
            o0, o1 = st0.get("overflow", {}), st1.get("overflow", {})
            run["stream"]["overflow_bypassed"] = o1.get("bypassed", 0) - o0.get("bypassed", 0)
            run["stream"]["memory_mb_after"] = round(st1.get("memory_bytes", 0) / MB, 1)
            r0, r1 = st0.get("relay", {}), st1.get("relay", {})
            run["relay"] = {k: r1.get(k, 0) - r0.get(k, 0)
                            for k in ("started", "segments", "retransmissions", "timeouts",
                                      "buffer_full", "device_errors")}
        run["invalid_drops"] = invalid
        self.runs[variant].append(run)
        extra = ""
        if scanner_cpu:
            shares = "/".join(f"{v / wall * 100:.0f}%" for v in scanner_cpu.values())
            extra += f", scanners busy {shares}, nfqscand cpu {dcpu / wall * 100:.0f}%"
        if "objects" in run:
            extra += (f", objects scanned {run['objects']}, allowlisted {run['allowlisted']}, "
                      f"released {run['released']}")
        if run.get("cache_hits") or run.get("cache_misses"):
            extra += (f", verdict cache {run['cache_hits']} hits / {run['cache_misses']} misses, "
                      f"{run['scans']} scans")
        if "queued_packets" in run:
            extra += (f", {fmt(run['queued_packets'])} packets queued, "
                      f"{run['flows_released']} flows released")
        say(f"  {variant:<11} {wall:6.2f} s {run['mbps']:7.1f} MB/s, "
            f"{'all objects right' if not bad else f'{len(bad)} WRONG'}, machine "
            f"{busy * 100:.0f}% busy{extra}")
        if daemon and "relay" in run:
            say(f"    relays {run['relay']}, streams {run['stream']}, router ct-invalid drops "
                f"{invalid}")
        # How fast an object reaches the client once its first byte left:
        # for a scanned object that is the relay's delivery after the
        # verdict (its slow start included), for plain forwarding the
        # server's own TCP. A keep-alive client asks for nothing else
        # meanwhile, so this time is part of every object's cycle.
        big = [t["size"] / MB / (t["total"] - t["first"]) for t in transfers
               if t["size"] >= 1 << 20 and t["total"] > t["first"]]
        if big:
            run["delivery_mbps"] = median(big)
            say(f"    delivery after the first byte, objects of 1 MiB or more: median "
                f"{run['delivery_mbps']:.0f} MB/s ({len(big)} objects)")
        slow = sorted(transfers, key=lambda t: -t["total"])
        if slow and slow[0]["total"] > 1.0:
            over = sum(1 for t in transfers if t["total"] > 1.0)
            say(f"    {over} of {len(transfers)} objects took over 1 s; slowest: " + ", ".join(
                f"{t['size'] / KIB:.0f} KiB {t['total']:.1f} s (first byte {t['first']:.1f} s)"
                for t in slow[:4]))
        for line in bad[:5]:
            say(f"    {line}")
        if bad:
            self.notes.append(f"{variant} round {r}: {len(bad)} objects wrong, e.g. {bad[0]}")
        return run

    protocol = "http"  # whose status section counts the objects

    def scan_delta(self, a: dict, b: dict, wall: float) -> dict:
        """common.scan_delta for this bench's protocol (FtpBench sets its own)."""
        return scan_delta(a, b, self.protocol)

    def ctl_scan(self, daemon: Nfqscand, r: int) -> dict:
        """`nfqscanctl scan` of the corpus files through the daemon's pool."""
        paths = [str(o["path"]) for o in self.objects]
        # As many nfqscanctl at once as download clients, each over a
        # client's share: the same objects at the same concurrency.
        scanned = ctl_scan_files(daemon, paths, "http",
                                 [[str(o["path"]) for o in share] for share in self.shares])
        verdicts, wall = scanned.pop("verdicts"), scanned["seconds"]
        clean = scanned["clean_verdicts"]
        run = {"round": r, "mbps": self.corpus_bytes / wall / MB, "ok": clean == len(paths),
               **scanned}
        run["mb_per_cpu_s"] = self.corpus_bytes / MB / max(
            1e-9, sum(scanned["scanner_cpu"].values()) + scanned["nfqscand_cpu"])
        self.runs["ctl-scan"].append(run)
        shares = "/".join(f"{v / wall * 100:.0f}%" for v in run["scanner_cpu"].values())
        say(f"  {'ctl-scan':<11} {wall:6.2f} s {run['mbps']:7.1f} MB/s, {clean}/{len(paths)} "
            f"clean, {run['concurrency']} nfqscanctl at once, scanners busy {shares}, "
            f"nfqscand cpu {run['nfqscand_cpu'] / wall * 100:.0f}%")
        if not run["ok"]:
            others = [v for v in verdicts if v.get("verdict") != "clean"][:3]
            self.notes.append(f"ctl-scan round {r}: not all clean: {others}")
        return run

    def scanbench(self, r: int) -> dict:
        res = bench_scan.run_inprocess(self.corpus_root, 2, yara=True, temp_dir=self.temp_dir)
        run = {"round": r, "seconds": res["seconds"], "mbps": res["mb_per_s"],
               "ok": not res["infected"] and not res["errors"],
               "cpu": res["cpu_seconds"], "mb_per_cpu_s": res["mb_per_cpu_s"]}
        self.runs["scanbench"].append(run)
        say(f"  {'scanbench':<11} {res['seconds']:6.2f} s {res['mb_per_s']:7.1f} MB/s "
            f"(2 workers, ClamAV + YARA, {res['cpu_seconds'] / res['seconds'] * 100:.0f}% CPU "
            f"of its processes; engines loaded in {res['load_ms'] / 1000:.1f} s, not timed)")
        return run

    # -- time to first byte -------------------------------------------------------------
    def ttfb_batch(self, variant: str, objects: list[dict]) -> None:
        """GETs one after another on one keep-alive connection from the
        client namespace; per request the time from sending it to the first
        byte of the response, and to its last byte."""
        wrong = 0
        sock = self.lab.client.connect(SERVER4, PORT, timeout=30)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for o in objects:
                path = o["url"].split(f":{PORT}", 1)[1]
                request = f"GET {path} HTTP/1.1\r\nHost: {SERVER4}\r\n\r\n".encode()
                t0 = time.perf_counter()
                sock.sendall(request)
                data = sock.recv(1 << 16)
                t1 = time.perf_counter()
                while b"\r\n\r\n" not in data:
                    more = sock.recv(1 << 16)
                    if not more:
                        raise LabError(f"ttfb {variant}: connection closed in a response head")
                    data += more
                head, _, body = data.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                while len(body) < length:
                    more = sock.recv(1 << 16)
                    if not more:
                        break
                    body += more
                t2 = time.perf_counter()
                if not head.startswith(b"HTTP/1.1 200") or len(body) != o["size"] \
                        or hashlib.sha256(body).hexdigest() != o["sha256"]:
                    wrong += 1
                    continue
                self.ttfb[variant].append((t1 - t0) * 1000)
                self.ttfb_total[variant].append((t2 - t0) * 1000)
        finally:
            sock.close()
        if wrong:
            self.notes.append(f"ttfb {variant}: {wrong} of {len(objects)} responses wrong")

    def measure_ttfb(self, daemon: Nfqscand) -> None:
        n = len(self.small_objects)
        say(f"time to first byte: {n} GETs of 4-16 KiB objects each way, batches of "
            f"{TTFB_BATCH} on one keep-alive connection, plain and through nfqscand alternating")
        before = daemon.status()
        alternate_batches(
            self.lab.router, self.small_objects, TTFB_BATCH, self.ttfb_batch,
            lambda done: say(f"  {done}/{n}: p50 plain "
                             f"{fmt(percentile(self.ttfb['plain'], 50), 3, 'ms')}, scanned "
                             f"{fmt(percentile(self.ttfb['scanned'], 50), 3, 'ms')}"), 3)
        after = daemon.status()
        self.ttfb_scan = scan_delta(before, after, "http")
        o0 = before.get("streams", {}).get("overflow", {})
        o1 = after.get("streams", {}).get("overflow", {})
        bypassed = o1.get("bypassed", 0) - o0.get("bypassed", 0)
        if self.ttfb_scan["objects"] < len(self.ttfb["scanned"]):
            self.notes.append(
                f"ttfb: only {self.ttfb_scan['objects']} of {len(self.ttfb['scanned'])} small "
                f"objects were scanned (flows bypassed for stream memory: {bypassed}, stream "
                f"memory {after.get('streams', {}).get('memory_bytes', 0) / MB:.0f} MB)")
        say(f"  nfqscand: {self.ttfb_scan['objects']} small objects scanned, mean scan "
            f"{fmt(self.ttfb_scan['scan_ms'], 3, 'ms')}, mean queue wait "
            f"{fmt(self.ttfb_scan['queue_wait_ms'], 3, 'ms')}")

    # -- perf ---------------------------------------------------------------------------
    def profile(self, daemon: Nfqscand) -> None:
        import shutil
        if not shutil.which("perf"):
            say("perf: not installed: no profile")
            return
        pids = [daemon.process.pid] + [int(p) for p in daemon.status()["scan"]["scanner_pids"]]
        data = self.lab.dir / "perf-http.data"
        say(f"perf: one extra scanned download (Connection: close: CPU-bound, no keep-alive "
            f"stall) under perf record (pids {pids}), not in the figures")
        rec = subprocess.Popen(["perf", "record", "-q", "-F", "999", "-o", str(data), "-p",
                                ",".join(map(str, pids))],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            self.download("perf", 0, daemon, close=True)
        finally:
            rec.send_signal(2)
            rec.wait(60)
        for sort, top in (("comm,dso", 12), ("comm,sym", 30)):
            out = subprocess.run(["perf", "report", "-i", str(data), "--stdio", "--no-children",
                                  "--sort", sort], capture_output=True, timeout=300)
            lines = [ln for ln in out.stdout.decode(errors="replace").splitlines()
                     if ln.strip() and not ln.startswith("#")]
            section(f"http: perf, % of samples by {sort} (top {top})")
            for ln in lines[:top]:
                say(ln.rstrip()[:150])

    # -- the whole section --------------------------------------------------------------
    def run(self) -> None:
        self.prepare()
        want = self.variants
        if "scanned" in want:
            build = subprocess.run(["ninja", "-C", str(build_dir()), "src/scan/nfqscan-scanbench"],
                                   capture_output=True, timeout=900)
            if build.returncode != 0:
                raise LabError("building nfqscan-scanbench failed:\n"
                               + build.stdout.decode(errors="replace")[-2000:])
        lab = self.lab
        for r in range(1, self.rounds + 1):
            order = tuple(v for v in ("plain", "scanned", "scanned-close") if v in want)
            if order:
                say(f"round {r}/{self.rounds}: nfqscand scanning (engines loading) ...")
                daemon = self.daemon()
                try:
                    if r == 1 and "scanned" in want:  # on a fresh daemon
                        self.measure_ttfb(daemon)
                    for variant in (order if r % 2 else order[::-1]):
                        set_queue_jump(lab.router, variant != "plain")
                        try:
                            self.download(variant, r, daemon if variant != "plain" else None,
                                          close=variant.endswith("-close"))
                        finally:
                            set_queue_jump(lab.router, True)
                    if "scanned" in want:
                        self.ctl_scan(daemon, r)
                        # Right after the scanned downloads, so that both sides of
                        # the ratio see the same load on a shared machine (the
                        # daemon is idle meanwhile: no flows, no scans).
                        say(f"round {r}/{self.rounds}: the bench runner on the same files ...")
                        self.scanbench(r)
                        if r == 1 and self.perf:
                            self.profile(daemon)
                finally:
                    self.stop(daemon)
            for variant, http in (("allowlisted", {"allow_hosts": [SERVER4]}),
                                  ("passed", {"allow_hosts": [SERVER4],
                                              "allowlist_release": False}),
                                  ("released", {"scan": False})):
                if variant not in want:
                    continue
                say(f"round {r}/{self.rounds}: nfqscand with {json.dumps(http)} ...")
                daemon = self.daemon(http)
                try:
                    self.download(variant, r, daemon)
                    if r == 1:
                        flows = daemon.find_flows(server_port=PORT)
                        kinds = sorted({f"{f.get('disposition')} by {f.get('claimed_by')}"
                                        for f in flows})
                        say(f"    flows to port {PORT} listed after it: {len(flows)}: "
                            f"{', '.join(kinds) or '-'}")
                        self.flow_states[variant] = ", ".join(kinds)
                finally:
                    self.stop(daemon)
            if "cache" not in want:
                continue
            # Repeated objects: the first download fills the verdict cache,
            # the second is answered from it (each object still relayed whole
            # and held for its verdict).
            say(f"round {r}/{self.rounds}: nfqscand with the verdict cache: the corpus twice ...")
            daemon = self.daemon(scan={"cache_entries": 100000})
            try:
                self.download("cache-fill", r, daemon)
                self.download("cache-hit", r, daemon)
            finally:
                self.stop(daemon)
        self.summarise()

    @staticmethod
    def stop(daemon: Nfqscand) -> None:
        rc = daemon.stop()
        if rc != 0:
            raise LabError(f"nfqscand exited with {rc}:\n{daemon.process.log_tail()}")

    # -- figures ------------------------------------------------------------------------
    def summarise(self) -> None:
        rep = self.report
        section("http: downloads (medians over rounds)")
        say(f"{'variant':<12} {'MB/s':>8} {'seconds':>8} {'machine busy':>13} "
            f"{'scanners busy':>14} {'nfqscand CPU':>13}")
        for v in ("plain", "scanned", "scanned-close", "allowlisted", "passed", "released",
                  "cache-fill",
                  "cache-hit", "ctl-scan", "scanbench"):
            runs = self.runs.get(v, [])
            if not runs:
                continue
            scanners = median([sum(r["scanner_cpu"].values()) / len(r["scanner_cpu"]) / r["seconds"]
                               for r in runs if r.get("scanner_cpu")])
            dcpu = median([r["nfqscand_cpu"] / r["seconds"] for r in runs
                           if r.get("nfqscand_cpu")])
            busy = median([r.get("machine_busy") for r in runs])
            say(f"{v:<12} {fmt(self.med(v, 'mbps'), 1):>8} {fmt(self.med(v, 'seconds'), 2):>8} "
                f"{fmt(busy * 100 if busy is not None else None, 0, '%'):>13} "
                f"{fmt(scanners * 100 if scanners is not None else None, 0, '%'):>14} "
                f"{fmt(dcpu * 100 if dcpu is not None else None, 0, '%'):>13}")
        say("scanners busy: CPU time of each scanner process / wall time, mean of the two; "
            "nfqscand CPU: the daemon process (its queue workers), not the scanners")
        rep.add(S, "corpus", f"{len(self.objects)} objects, {self.corpus_bytes / MB:.0f} MB, "
                f"{self.clients} clients")
        rep.add(S, "ClamAV temp folder ([scan] temp_dir)", self.temp_dir or "default (/tmp)")
        titles = {"plain": "plain forwarding",
                  "scanned": "scanned through nfqscand (keep-alive)",
                  "scanned-close": "scanned through nfqscand (Connection: close)",
                  "allowlisted": "allowlisted (allow_hosts)",
                  "passed": "allowlisted, allowlist_release = false (passed in the engine)",
                  "released": "released (scan = false)",
                  "cache-fill": "verdict cache on, first download (all misses)",
                  "cache-hit": "verdict cache on, the same objects again (all hits)",
                  "ctl-scan": "scan service alone: nfqscanctl scan",
                  "scanbench": "scan service alone: nfqscan-scanbench, 2 workers"}
        for v, title in titles.items():
            rep.add(S, f"{title}", self.med(v, "mbps"), "MB/s", 1,
                    note=f"median of {len(self.runs.get(v, []))}")
        for v in ("plain", "scanned", "scanned-close"):
            rep.add(S, f"{v}: delivery after the first byte (objects >= 1 MiB, median)",
                    self.med(v, "delivery_mbps"), "MB/s", 0,
                    note="scanned: the relay after the verdict")
        for v, how in (("scanned", "keep-alive"), ("scanned-close", "Connection: close")):
            rep.ratio(S, f"scanned ({how}) / nfqscanctl scan (same daemon's pool)",
                      self.paired(v, "ctl-scan"), 0.8)
            rep.ratio(S, f"scanned ({how}) / nfqscan-scanbench (2 workers)",
                      self.paired(v, "scanbench"), 0.8)
        # The same in CPU: scanned MB per CPU second of nfqscand and its
        # scanners against the scan service alone's. Independent of how busy
        # the machine is, and it leaves out what the lab's own endpoints
        # (nginx, curl, their TCP stacks) take from the 2 cores the scanners
        # share with them.
        for v, how in (("scanned", "keep-alive"), ("scanned-close", "Connection: close")):
            rep.ratio(S, f"CPU: scanned ({how}) / nfqscan-scanbench, MB per CPU second",
                      self.paired(v, "scanbench", "mb_per_cpu_s"), 0.8,
                      note=f"{fmt(self.med(v, 'mb_per_cpu_s'), 1)} vs "
                           f"{fmt(self.med('scanbench', 'mb_per_cpu_s'), 1)} MB/CPU-s")
        rep.ratio(S, "CPU: nfqscanctl scan / nfqscan-scanbench, MB per CPU second",
                  self.paired("ctl-scan", "scanbench", "mb_per_cpu_s"),
                  note=f"{fmt(self.med('ctl-scan', 'mb_per_cpu_s'), 1)} MB/CPU-s")
        rep.ratio(S, "scanned (keep-alive) / plain", self.paired("scanned", "plain"))
        stalled = [sum(1 for t in r["transfers"] if t["total"] > 1.0)
                   for r in self.runs.get("scanned", [])]
        rep.add(S, "scanned (keep-alive): objects over 1 s per run",
                ", ".join(str(n) for n in stalled),
                note="relay timeouts per run: " + ", ".join(
                    str(r.get("relay", {}).get("timeouts")) for r in self.runs.get("scanned", [])))
        rep.ratio(S, "allowlisted / plain", self.paired("allowlisted", "plain"), 0.9,
                  note="the released-flow figure (net: released / plain >= 0.9)")
        rep.ratio(S, "released / plain", self.paired("released", "plain"), 0.9)
        rep.ratio(S, "allowlisted / released", self.paired("allowlisted", "released"),
                  note="allowlisted connections are released too (allowlist_release)")
        # Repeated objects: what a cache hit costs against a scan, against the
        # stream engine alone (passed: parsed and passed, no relay) and the wire.
        rep.ratio(S, "cache hits / scanned (no cache)", self.paired("cache-hit", "scanned"))
        rep.ratio(S, "passed (allowlist_release = false) / released",
                  self.paired("passed", "released"))
        rep.ratio(S, "cache hits / passed in the engine", self.paired("cache-hit", "passed"))
        rep.ratio(S, "cache hits / plain", self.paired("cache-hit", "plain"))
        hits = self.runs.get("cache-hit", [])
        if hits:
            rep.add(S, "cache-hit: hits / misses / scans (last run)",
                    f"{hits[-1].get('cache_hits')} / {hits[-1].get('cache_misses')} / "
                    f"{hits[-1].get('scans')}",
                    note=f"nfqscand CPU {fmt(self.med('cache-hit', 'nfqscand_cpu'), 2)} s")
        for v in ("scanned", "scanned-close"):
            sc = [r for r in self.runs.get(v, []) if r.get("scanner_cpu")]
            if not sc:
                continue
            least = median([min(r["scanner_cpu"].values()) / r["seconds"] for r in sc])
            mean = median([sum(r["scanner_cpu"].values()) / len(r["scanner_cpu"]) / r["seconds"]
                           for r in sc])
            rep.add(S, f"{v}: scanner processes busy (mean of 2)", mean * 100, "%", 0,
                    note=f"least busy one {fmt(least * 100, 0, '%')}")
            rep.add(S, f"{v}: engines' busy time / wall / 2",
                    median([r["engine_busy_s"] / r["seconds"] / 2 for r in sc]) * 100, "%", 0,
                    note="scan stats busy_us (ClamAV + YARA)")
            rep.add(S, f"{v}: nfqscand (queue workers) CPU",
                    median([r["nfqscand_cpu"] / r["seconds"] for r in sc]) * 100, "%", 0,
                    note="of one core")
            rep.add(S, f"{v}: mean scan time / queue wait per object",
                    f"{fmt(self.med(v, 'scan_ms'), 2)} / {fmt(self.med(v, 'queue_wait_ms'), 2)} ms")
            rep.add(S, f"{v}: machine busy", self.med(v, "machine_busy") * 100, "%", 0)
        cs = self.runs.get("ctl-scan", [])
        if cs:
            rep.add(S, "ctl-scan: scanner processes busy (mean of 2)",
                    median([sum(r["scanner_cpu"].values()) / len(r["scanner_cpu"]) / r["seconds"]
                            for r in cs]) * 100, "%", 0,
                    note="least busy one " + fmt(median(
                        [min(r["scanner_cpu"].values()) / r["seconds"] for r in cs]) * 100,
                        0, "%"))
            rep.add(S, "ctl-scan: mean scan time per object", self.med("ctl-scan", "scan_ms"),
                    "ms", 2)
        for v in ("scanned", "scanned-close", "allowlisted", "passed", "released"):
            runs = self.runs.get(v, [])
            if runs:
                rep.add(S, f"{v}: objects scanned / allowlisted / flows released / "
                        f"packets queued",
                        f"{runs[-1].get('objects')} / {runs[-1].get('allowlisted')} / "
                        f"{runs[-1].get('flows_released')} / {fmt(runs[-1].get('queued_packets'))}",
                        note=self.flow_states.get(v, ""))
        if self.ttfb["plain"]:
            section("http: time to first byte, 4-16 KiB objects (request sent -> first byte; "
                    "total: -> last byte)")
            say(f"{'':<15} {'n':>5} {'p50':>9} {'p90':>9} {'p99':>9} {'max':>9}")
            for v in ("plain", "scanned"):
                for what, t in (("first byte", self.ttfb[v]), ("total", self.ttfb_total[v])):
                    say(f"{v + ' ' + what:<15} {len(t):>5} " + " ".join(
                        f"{fmt(percentile(t, p), 3, 'ms'):>9}" for p in (50, 90, 99, 100)))
            for p in (50, 99):
                a, b = percentile(self.ttfb["scanned"], p), percentile(self.ttfb["plain"], p)
                rep.add(S, f"TTFB p{p}: plain / scanned", f"{fmt(b, 3)} / {fmt(a, 3)} ms")
                rep.add(S, f"TTFB p{p}: added by scanning", a - b, "ms", 3)
            ts = getattr(self, "ttfb_scan", {})
            if ts:
                rep.add(S, "TTFB: mean scan time / queue wait per small object",
                        f"{fmt(ts.get('scan_ms'), 3)} / {fmt(ts.get('queue_wait_ms'), 3)} ms")
        ok = all(r.get("ok") for runs in self.runs.values() for r in runs)
        rep.add(S, "every object right (status, size, sha256; all verdicts clean)",
                "yes" if ok else "NO")
        errors = [r["scan_errors"] for r in self.runs.get("scanned", []) if r.get("scan_errors")]
        if errors:
            self.notes.append(f"scan error verdicts during scanned runs: {errors}")
        for n in self.notes:
            rep.note(f"http: {n}")


def run(report: Report, files, args) -> None:
    section("http: HTTP antivirus end to end vs the scan service alone")
    with Lab() as lab:
        HttpBench(lab, files, report, args).run()

"""`tools/bench ftp`: FTP antivirus end to end (issue 12), in one fresh lab.

The clean corpus of `tools/bench http` (bench_http.HttpCorpus: HTML, text,
zips, random binaries; 4 KiB to 8 MiB; ~100 MB by default, --ftp-mb) in the
tree of a vsftpd (servers.Vsftpd) in the server namespace. Each round:
- plain: --clients (4) concurrent curl processes on the client, each
  downloading its share of the corpus (equal bytes) over one FTP control
  connection (passive, EPSV: one data connection per file), without the
  FORWARD jump to the queue (plain forwarding);
- scanned: the same through nfqscand (the project's ClamAV signatures and
  YARA rules, [scan] pool_threads = 2, scanner processes): every file is a
  predicted data connection whose data is relayed, scanned, then delivered;
  every file's reply (226) and sha256 checked; the scanner processes' CPU;
- ctl-scan: `nfqscanctl scan` of the same files through the same daemon's
  pool (the scan service alone, the same scanners, no network);
- scanbench: nfqscan-scanbench, 2 workers, ClamAV + YARA, the same files,
  no daemon running.
Ratios are paired within a round (scanned / ctl-scan, scanned / scanbench,
scanned / plain), then the median over rounds is printed. Without the FTP
inspector nfqscand scans nothing (objects 0 is printed): the scanned figure
is then plain forwarding through the queue."""

from __future__ import annotations

import hashlib
import os
import subprocess
import time

from bench_http import SCAN, HttpBench, HttpCorpus, file_table, split_shares
from common import (LabError, Report, build_dir, cpu_seconds_precise, fmt, median, say,
                    section, set_queue_jump, system_cpu)
from lab import Lab
from nfqscand import Nfqscand
from servers import Vsftpd

S = "ftp"
PORT = 21
MB = 1e6
KIB = 1024
MIB = 1 << 20
USER, PASSWORD = "bench", "bench-password"
WRITE_OUT = "%{response_code} %{size_download} %{time_total}\\n"


class FtpBench(HttpBench):
    """HttpBench's scan-service figures (ctl_scan, scanbench, scan_delta) and
    ratios, with FTP downloads instead of HTTP ones."""

    protocol = "ftp"

    def __init__(self, lab: Lab, files, report: Report, args):
        super().__init__(lab, files, report, args)
        self.budget_mb = args.ftp_mb

    def prepare(self) -> None:
        self.vsftpd = Vsftpd(self.lab, ports=[PORT], users={USER: PASSWORD})
        self.corpus_root = self.vsftpd.home / "c"
        t0 = time.monotonic()
        say(f"corpus: generating ~{self.budget_mb:.0f} MB of clean files (4 KiB - 8 MiB) "
            "into vsftpd's tree")
        corpus = HttpCorpus(self.corpus_root, seed=9).generate_http(self.budget_mb)
        self.objects = file_table(self.corpus_root, self.vsftpd.url("/c", user=USER))
        self.corpus_bytes = sum(o["size"] for o in self.objects)
        sizes = sorted(o["size"] for o in self.objects)
        say(f"corpus: {len(self.objects)} files, {self.corpus_bytes / MB:.1f} MB "
            f"(median {sizes[len(sizes) // 2] / KIB:.0f} KiB, largest {sizes[-1] / MIB:.1f} MiB)"
            f" in {time.monotonic() - t0:.0f} s")
        for kind, (n, size) in corpus.kinds.items():
            say(f"  {kind:<7} {n:>4} files {size / MB:>7.1f} MB")
        self.shares = split_shares(self.objects, self.clients)
        say(f"clients: {self.clients} concurrent curl processes, one control connection "
            "each, passive (EPSV)")

    def daemon(self, ftp: dict | None = None) -> Nfqscand:
        overrides = {"scan": dict(SCAN), "protocols": {"ftp": {"ports": [PORT], **(ftp or {})}}}
        d = Nfqscand(self.lab, overrides, name="nfqscand")
        d.start()
        d.wait_engines()
        return d

    def download(self, variant: str, r: int, daemon: Nfqscand | None, close: bool = False) -> dict:
        outdir = self.files.downloads / f"ftp-{variant}-{r}"
        outdir.mkdir(exist_ok=True)
        status0 = daemon.status() if daemon else None
        pids = [int(p) for p in (status0 or {}).get("scan", {}).get("scanner_pids", [])]
        cpu0 = {p: cpu_seconds_precise(p) for p in pids}
        sys0 = system_cpu()
        procs = []
        t0 = time.monotonic()
        for c, share in enumerate(self.shares):
            cmd = ["curl", "--silent", "--show-error", "--globoff", "--noproxy", "*",
                   "--max-time", "900", "--write-out", WRITE_OUT]
            for i, o in enumerate(share):
                cmd += [o["url"], "--output", str(outdir / f"{c}-{i}")]
            procs.append(subprocess.Popen(self.lab.client.argv(cmd), stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE))
        outs = [p.communicate(timeout=1000) for p in procs]
        wall = time.monotonic() - t0
        sys1 = system_cpu()
        scanner_cpu = {p: cpu_seconds_precise(p) - cpu0[p] for p in pids
                       if os.path.exists(f"/proc/{p}")}
        bad, got = [], 0
        for c, (share, proc, (out, err)) in enumerate(zip(self.shares, procs, outs)):
            lines = out.decode().splitlines()
            if proc.returncode != 0 or len(lines) != len(share):
                bad.append(f"client {c}: curl exit {proc.returncode}, {len(lines)}/{len(share)} "
                           f"transfers: {err.decode(errors='replace').strip()[-200:]}")
            for i, (o, line) in enumerate(zip(share, lines)):
                code, size = line.split()[:2]
                path = outdir / f"{c}-{i}"
                ok = (code == "226" and int(size) == o["size"] and path.exists()
                      and hashlib.sha256(path.read_bytes()).hexdigest() == o["sha256"])
                if ok:
                    got += o["size"]
                else:
                    bad.append(f"{o['url']}: reply {code}, {size} bytes")
                path.unlink(missing_ok=True)
        run = {"round": r, "seconds": wall, "mbps": got / wall / MB, "ok": not bad,
               "machine_busy": (sys1[0] - sys0[0]) / max(1, sys1[1] - sys0[1]),
               "scanner_cpu": scanner_cpu, "nfqscand_cpu": 0.0, "transfers": []}
        if daemon:
            run.update(self.scan_delta(status0, daemon.status(), wall))
        self.runs[variant].append(run)
        extra = ""
        if scanner_cpu:
            extra = (", scanners busy " + "/".join(f"{v / wall * 100:.0f}%"
                                                  for v in scanner_cpu.values())
                     + f", files scanned {run.get('objects')}")
        say(f"  {variant:<11} {wall:6.2f} s {run['mbps']:7.1f} MB/s, "
            f"{'all files right' if not bad else f'{len(bad)} WRONG'}, machine "
            f"{run['machine_busy'] * 100:.0f}% busy{extra}")
        for line in bad[:5]:
            say(f"    {line}")
        if bad:
            self.notes.append(f"{variant} round {r}: {len(bad)} files wrong, e.g. {bad[0]}")
        return run

    def run(self) -> None:
        self.prepare()
        build = subprocess.run(["ninja", "-C", str(build_dir()), "src/scan/nfqscan-scanbench"],
                               capture_output=True, timeout=900)
        if build.returncode != 0:
            raise LabError("building nfqscan-scanbench failed:\n"
                           + build.stdout.decode(errors="replace")[-2000:])
        for r in range(1, self.rounds + 1):
            say(f"round {r}/{self.rounds}: nfqscand scanning (engines loading) ...")
            daemon = self.daemon()
            try:
                for variant in (("plain", "scanned") if r % 2 else ("scanned", "plain")):
                    set_queue_jump(self.lab.router, variant != "plain")
                    try:
                        self.download(variant, r, daemon if variant != "plain" else None)
                    finally:
                        set_queue_jump(self.lab.router, True)
                self.ctl_scan(daemon, r)
            finally:
                self.stop(daemon)
            say(f"round {r}/{self.rounds}: the bench runner on the same files (no daemon) ...")
            self.scanbench(r)
        self.summarise()

    def summarise(self) -> None:
        rep = self.report
        section("ftp: downloads (medians over rounds)")
        say(f"{'variant':<12} {'MB/s':>8} {'seconds':>8}")
        for v in ("plain", "scanned", "ctl-scan", "scanbench"):
            if self.runs.get(v):
                say(f"{v:<12} {fmt(self.med(v, 'mbps'), 1):>8} {fmt(self.med(v, 'seconds'), 2):>8}")
        rep.add(S, "corpus", f"{len(self.objects)} files, {self.corpus_bytes / MB:.0f} MB, "
                f"{self.clients} clients")
        titles = {"plain": "plain forwarding", "scanned": "scanned through nfqscand",
                  "ctl-scan": "scan service alone: nfqscanctl scan",
                  "scanbench": "scan service alone: nfqscan-scanbench, 2 workers"}
        for v, title in titles.items():
            rep.add(S, title, self.med(v, "mbps"), "MB/s", 1,
                    note=f"median of {len(self.runs.get(v, []))}")
        rep.ratio(S, "scanned / nfqscanctl scan (same daemon's pool)",
                  self.paired("scanned", "ctl-scan"), 0.8)
        rep.ratio(S, "scanned / nfqscan-scanbench (2 workers)", self.paired("scanned", "scanbench"),
                  0.8)
        rep.ratio(S, "scanned / plain", self.paired("scanned", "plain"))
        scanned = self.runs.get("scanned", [])
        if scanned:
            rep.add(S, "scanned: files scanned per run (of the corpus)",
                    ", ".join(str(r.get("objects")) for r in scanned),
                    note=f"{len(self.objects)} files; 0: no FTP inspector in this build")
            rep.add(S, "scanned: mean scan time / queue wait per file",
                    f"{fmt(self.med('scanned', 'scan_ms'), 2)} / "
                    f"{fmt(self.med('scanned', 'queue_wait_ms'), 2)} ms")
            busy = median([sum(r["scanner_cpu"].values()) / len(r["scanner_cpu"]) / r["seconds"]
                           for r in scanned if r.get("scanner_cpu")])
            rep.add(S, "scanned: scanner processes busy (mean of 2)",
                    busy * 100 if busy is not None else None, "%", 0)
        ok = all(r.get("ok") for runs in self.runs.values() for r in runs)
        rep.add(S, "every file right (226, size, sha256; all verdicts clean)", "yes" if ok else "NO")
        for n in self.notes:
            rep.note(f"ftp: {n}")


def run(report: Report, files, args) -> None:
    section("ftp: FTP antivirus end to end vs the scan service alone")
    with Lab() as lab:
        FtpBench(lab, files, report, args).run()

"""`tools/bench scan`: scanning throughput of the in-process scan service
(libclamav + libyara through ScanService and its pool) against `clamscan`
with the same ClamAV signatures and limits, over one generated corpus.

The corpus (~150 MB, fixed seed, Python stdlib only) mixes what a gateway
sees: text, HTML, random binary, zips, zips nested three and four deep, mail
with base64 attachments, and a few EICAR carriers. It is written to a temp dir
and read back into memory by the runner (src/scan/scan_bench_main.cc,
`nfqscan-scanbench`) before the clock starts; clamscan reads it from the page
cache. clamscan's database load and start-up are measured on a one-byte file
and subtracted from its run.

Variants, each run --rounds times in rotating order (medians printed):
  the service as configured by default ([scan] isolation = "process": each
    pool thread hands objects to a scanner process), ClamAV signatures only
    (the same set as clamscan), 1 and 2 workers
  the same with isolation = "thread" (engines on the pool threads, in one
    process), 1 and 2 threads: what process isolation is measured against
  the service with ClamAV + the shipped YARA rules (the product's set), 1 and
    2 workers
  two 1-worker runners at once: what the machine allows two scanners, the
    reference for the 2-worker figures
  clamscan -d rules/clamav (one thread: clamscan scans files one after another)
CPU seconds of a runner include its scanner processes. Each run also
measures the CPU the rest of the machine used meanwhile (/proc/stat); runs
with more than DISTURBED_CPU_S of it are marked and left out of the medians.
"""

from __future__ import annotations

import email.message
import io
import json
import math
import os
import random
import subprocess
import time
import zipfile
from pathlib import Path

from common import Report, build_dir, median, ratio, say, section

REPO = Path(__file__).resolve().parents[2]
SIGNATURES = REPO / "rules" / "clamav"
YARA_RULES = REPO / "rules" / "yara"
EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$" + b"EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
# The service's default limits (ScanLimits), given to clamscan too.
CLAMSCAN_LIMITS = ["--max-filesize=32M", "--max-scansize=128M", "--max-recursion=17",
                   "--max-files=10000"]
MB = 1e6
# A run during which the rest of the machine used more CPU than this (another
# engineer's build, say) is left out of the medians when undisturbed runs exist.
DISTURBED_CPU_S = 1.0


# -- corpus -----------------------------------------------------------------------

class Corpus:
    """Writes the mixed corpus; `kinds` counts objects and bytes per kind."""

    def __init__(self, root: Path, seed: int = 20240501, scale: float = 1.0):
        self.root = root
        self.rnd = random.Random(seed)
        self.scale = scale
        self.kinds: dict[str, list[int]] = {}
        syllables = ["ka", "lo", "mi", "ne", "ru", "sta", "ver", "pon", "dal", "tri", "gen",
                     "ful", "or", "an", "es", "ti", "qua", "bel", "cor", "dis"]
        words = ["".join(self.rnd.choice(syllables) for _ in range(self.rnd.randint(1, 4)))
                 for _ in range(3000)]
        text = " ".join(self.rnd.choices(words, k=900_000))
        # Lines of ~70 characters, sentences with capitals and full stops.
        lines, line = [], []
        for w in text.split(" "):
            line.append(w)
            if sum(len(x) + 1 for x in line) > 70:
                lines.append(" ".join(line).capitalize() + ".")
                line = []
        self.text_pool = "\n".join(lines).encode()

    # sizes log-uniformly distributed between lo and hi
    def size(self, lo: int, hi: int) -> int:
        return int(math.exp(self.rnd.uniform(math.log(lo), math.log(hi))))

    def text(self, size: int) -> bytes:
        start = self.rnd.randrange(0, max(1, len(self.text_pool) - size))
        chunk = self.text_pool[start:start + size]
        while len(chunk) < size:
            chunk += b"\n" + self.text_pool[: size - len(chunk)]
        return chunk

    def html(self, size: int) -> bytes:
        body = self.text(size).split(b"\n")
        parts = [b"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>page</title>\n"
                 b"<script>var cfg = {\"id\": 42, \"lang\": \"en\"};</script></head><body>\n"]
        for i, line in enumerate(body):
            if i % 7 == 0:
                parts.append(b"<h2>" + line[:40] + b"</h2>\n")
            parts.append(b"<p>" + line + b" <a href=\"/doc/%d\">more</a></p>\n" % i)
        parts.append(b"</body></html>\n")
        return b"".join(parts)

    def binary(self, size: int) -> bytes:
        return self.rnd.randbytes(size)

    def member(self) -> tuple[str, bytes]:
        kind = self.rnd.choice(["txt", "txt", "html", "bin", "csv"])
        if kind == "bin":
            return "data.bin", self.binary(self.size(4 << 10, 512 << 10))
        if kind == "html":
            return "page.html", self.html(self.size(2 << 10, 200 << 10))
        return f"notes.{kind}", self.text(self.size(1 << 10, 300 << 10))

    def zip(self, members) -> bytes:
        buf = io.BytesIO()
        method = zipfile.ZIP_STORED if self.rnd.random() < 0.15 else zipfile.ZIP_DEFLATED
        with zipfile.ZipFile(buf, "w", method) as z:
            for i, (name, data) in enumerate(members):
                z.writestr(f"{i:02d}-{name}", data)
        return buf.getvalue()

    def mail(self, attachments) -> bytes:
        m = email.message.EmailMessage()
        m["From"] = "alice@example.org"
        m["To"] = "bob@example.net"
        m["Subject"] = "report %d" % self.rnd.randrange(10000)
        m.set_content(self.text(self.size(300, 20 << 10)).decode())
        for name, data in attachments:
            m.add_attachment(data, maintype="application", subtype="octet-stream", filename=name)
        return bytes(m)

    def write(self, kind: str, name: str, data: bytes) -> None:
        (self.root / name).write_bytes(data)
        entry = self.kinds.setdefault(kind, [0, 0])
        entry[0] += 1
        entry[1] += len(data)

    def fill(self, kind: str, budget_mb: float, make) -> None:
        budget = budget_mb * self.scale * MB
        n = 0
        while self.kinds.get(kind, [0, 0])[1] < budget:
            ext, data = make()
            self.write(kind, f"{kind}-{n:04d}.{ext}", data)
            n += 1

    def generate(self) -> "Corpus":
        self.root.mkdir(parents=True, exist_ok=True)
        self.fill("text", 30, lambda: ("txt", self.text(self.size(1 << 10, 1 << 20))))
        self.fill("html", 20, lambda: ("html", self.html(self.size(2 << 10, 400 << 10))))
        self.fill("binary", 40, lambda: ("bin", self.binary(self.size(16 << 10, 6 << 20))))
        self.fill("zip", 25, lambda: ("zip", self.zip(
            [self.member() for _ in range(self.rnd.randint(2, 8))])))

        def nested():
            data = self.zip([self.member() for _ in range(self.rnd.randint(1, 4))])
            for level in range(self.rnd.randint(2, 3)):
                data = self.zip([(f"level{level}.zip", data), self.member()])
            return "zip", data

        self.fill("nested-zip", 10, nested)

        def mail():
            attachments = []
            for _ in range(self.rnd.randint(1, 3)):
                pick = self.rnd.random()
                if pick < 0.4:
                    attachments.append(("scan.bin", self.binary(self.size(8 << 10, 1 << 20))))
                elif pick < 0.7:
                    attachments.append(("bundle.zip", self.zip(
                        [self.member() for _ in range(self.rnd.randint(1, 4))])))
                else:
                    attachments.append(("report.txt", self.text(self.size(2 << 10, 300 << 10))))
            return "eml", self.mail(attachments)

        self.fill("mail", 30, mail)
        # Carriers: both scanners must find these (and only these).
        self.write("eicar", "eicar-raw.com", EICAR)
        self.write("eicar", "eicar-zip.zip", self.zip([("eicar.com", EICAR)]))
        self.write("eicar", "eicar-nested.zip",
                   self.zip([("inner.zip", self.zip([("eicar.com", EICAR), self.member()]))]))
        self.write("eicar", "eicar-mail.eml", self.mail([("eicar.com", EICAR)]))
        return self

    @property
    def objects(self) -> int:
        return sum(n for n, _ in self.kinds.values())

    @property
    def bytes(self) -> int:
        return sum(b for _, b in self.kinds.values())


# -- runs ---------------------------------------------------------------------------

def scanbench_binary() -> Path:
    return build_dir() / "src" / "scan" / "nfqscan-scanbench"


def inprocess_cmd(corpus: Path, threads: int, yara: bool, isolation: str = "process",
                  temp_dir: str = "") -> list[str]:
    cmd = [str(scanbench_binary()), "--threads", str(threads), "--isolation", isolation,
           "--clamav-dir", str(SIGNATURES)]
    if yara:
        cmd += ["--yara-dir", str(YARA_RULES)]
    if temp_dir:
        cmd += ["--temp-dir", temp_dir]
    return cmd + [str(corpus)]


def finish(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"nfqscan-scanbench failed ({proc.returncode}): "
                           f"{err.decode(errors='replace')[-500:]}")
    return json.loads(out.decode().strip().splitlines()[-1])


def run_inprocess(corpus: Path, threads: int, yara: bool, isolation: str = "process",
                  temp_dir: str = "") -> dict:
    return finish(subprocess.Popen(inprocess_cmd(corpus, threads, yara, isolation, temp_dir),
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE))


# Repeated objects (the corpus submitted REPEAT times, as inspectors hand
# objects over: in ObjectBuffers): every object scanned each time, with
# libclamav's own clean-file cache on, and with the verdict cache.
REPEAT = 3
REPEATED = [("repeat-none", []), ("repeat-clamav-cache", ["--clamav-cache"]),
            ("repeat-verdict-cache", ["--cache-entries", "100000"])]


def run_repeated(corpus: Path, extra: list[str]) -> dict:
    cmd = inprocess_cmd(corpus, 2, True)
    cmd[1:1] = ["--repeat", str(REPEAT), "--buffers", *extra]
    return finish(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE))


def run_two_processes(corpus: Path) -> dict:
    """Two 1-worker runners over the whole corpus at once; their throughputs
    add up to what two scanners get from this machine."""
    procs = [subprocess.Popen(inprocess_cmd(corpus, 1, False), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE) for _ in range(2)]
    results = [finish(p) for p in procs]
    return {"mb_per_s": sum(r["mb_per_s"] for r in results),
            "objects_per_s": sum(r["objects_per_s"] for r in results),
            "cpu_seconds": sum(r["cpu_seconds"] for r in results),
            "cpu_total": sum(r["cpu_total"] for r in results),
            "mb_per_cpu_s": sum(r["bytes"] for r in results) / MB
            / sum(r["cpu_seconds"] for r in results)}


def run_timed(cmd: list[str]) -> tuple[float, float, bytes]:
    """Wall seconds, CPU seconds (user + system, from wait4) and stdout."""
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode not in (0, 1):  # 1: something was found
        raise RuntimeError(f"{cmd[0]} exited with {proc.returncode}")
    return wall, usage.ru_utime + usage.ru_stime, out


def run_clamscan(corpus: Path, tiny: Path) -> dict:
    base = ["clamscan", "-d", str(SIGNATURES), "--no-summary", *CLAMSCAN_LIMITS]
    # Start-up and database load (an empty file is answered before either).
    load_wall, load_cpu, _ = run_timed(base + [str(tiny)])
    wall, cpu, out = run_timed(base + ["-i", "-r", str(corpus)])
    infected = sorted(line.split(": ", 1)[0] for line in out.decode(errors="replace").splitlines()
                      if line.endswith(" FOUND"))
    return {"load_seconds": load_wall, "load_cpu": load_cpu, "total_seconds": wall,
            "cpu_total": cpu + load_cpu,
            "seconds": max(wall - load_wall, 1e-6), "cpu_seconds": max(cpu - load_cpu, 1e-6),
            "infected": infected}


def machine_busy_seconds() -> float:
    """CPU seconds all CPUs have spent busy since boot (/proc/stat)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def warm_page_cache(corpus: Path) -> None:
    for path in corpus.iterdir():
        with open(path, "rb") as f:
            while f.read(1 << 20):
                pass


# -- the section --------------------------------------------------------------------

# name, threads, kind
VARIANTS = [("clamav-1", 1, "clamav"), ("clamav-2", 2, "clamav"),
            ("thread-1", 1, "thread"), ("thread-2", 2, "thread"),
            ("yara-1", 1, "yara"), ("yara-2", 2, "yara"),
            ("2-procs", 1, "procs"), ("clamscan", 1, "clamscan")]


def run(report: Report, files, args) -> None:
    section("scan: in-process scan service vs clamscan")
    build = subprocess.run(["ninja", "-C", str(build_dir()), "src/scan/nfqscan-scanbench"],
                           capture_output=True, timeout=900)
    if build.returncode != 0:
        raise RuntimeError("building nfqscan-scanbench failed:\n"
                           + build.stdout.decode(errors="replace")[-2000:])
    corpus_dir = Path(files.dir) / "scan-corpus"
    t0 = time.monotonic()
    corpus = Corpus(corpus_dir).generate()
    say(f"corpus: {corpus.objects} objects, {corpus.bytes / MB:.1f} MB in "
        f"{time.monotonic() - t0:.0f} s ({corpus_dir})")
    for kind, (n, size) in corpus.kinds.items():
        say(f"  {kind:<11} {n:>5} objects {size / MB:>7.1f} MB")
    tiny = Path(files.dir) / "one-byte"
    tiny.write_bytes(b"x")
    warm_page_cache(corpus_dir)

    rounds = max(1, args.rounds)
    results: dict[str, list[dict]] = {name: [] for name, _, _ in VARIANTS}
    for r in range(rounds):
        order = VARIANTS[r % len(VARIANTS):] + VARIANTS[:r % len(VARIANTS)]
        for name, threads, kind in order:
            busy0 = machine_busy_seconds()
            if kind == "clamscan":
                res = run_clamscan(corpus_dir, tiny)
                res["mb_per_s"] = corpus.bytes / MB / res["seconds"]
                res["objects_per_s"] = corpus.objects / res["seconds"]
                res["mb_per_cpu_s"] = corpus.bytes / MB / res["cpu_seconds"]
            elif kind == "procs":
                res = run_two_processes(corpus_dir)
            else:
                res = run_inprocess(corpus_dir, threads, kind == "yara",
                                    "thread" if kind == "thread" else "process")
            results[name].append(res)
            # CPU the machine spent on something else meanwhile (another
            # build, say): such a run is not comparable with the others.
            others = machine_busy_seconds() - busy0 - res.get("cpu_total", res["cpu_seconds"])
            res["disturbed"] = others > DISTURBED_CPU_S
            say(f"  round {r + 1}: {name:<9} {res['mb_per_s']:7.1f} MB/s "
                f"{res['objects_per_s']:7.1f} objects/s  {res['mb_per_cpu_s']:6.1f} MB/CPU-s"
                f"  other load {max(0.0, others):4.1f} CPU-s"
                + ("  DISTURBED" if res["disturbed"] else "")
                + (f"  (db load {res['load_seconds']:.2f} s excluded)"
                   if kind == "clamscan" else ""))

    for name, extra in REPEATED:
        results[name] = []
    for r in range(rounds):
        for name, extra in REPEATED:
            busy0 = machine_busy_seconds()
            res = run_repeated(corpus_dir, extra)
            others = machine_busy_seconds() - busy0 - res["cpu_total"]
            res["disturbed"] = others > DISTURBED_CPU_S
            results[name].append(res)
            say(f"  round {r + 1}: {name:<20} {res['mb_per_s']:7.1f} MB/s "
                f"{res['mb_per_cpu_s']:6.1f} MB/CPU-s, {res['objects']} objects, "
                f"{res['clamav_scans']} ClamAV scans, {res['cached']} from the verdict cache"
                f"  other load {max(0.0, others):4.1f} CPU-s"
                + ("  DISTURBED" if res["disturbed"] else ""))

    def quiet(name: str) -> list[dict]:
        runs = [r for r in results[name] if not r["disturbed"]]
        return runs or results[name]

    def med(name: str, key: str):
        """Median over the undisturbed runs (all runs if every one was)."""
        return median([r[key] for r in quiet(name)])

    def runs_note(name: str) -> str:
        n_quiet = sum(not r["disturbed"] for r in results[name])
        n = len(results[name])
        if n_quiet == n:
            return f"median of {n}"
        return (f"median of the {n_quiet} undisturbed of {n} runs" if n_quiet
                else f"all {n} runs disturbed")

    labels = {"clamav-1": "scan service, ClamAV signatures, 1 worker",
              "clamav-2": "scan service, ClamAV signatures, 2 workers",
              "thread-1": "isolation = thread, ClamAV signatures, 1 thread",
              "thread-2": "isolation = thread, ClamAV signatures, 2 threads",
              "yara-1": "scan service, ClamAV + YARA, 1 worker",
              "yara-2": "scan service, ClamAV + YARA, 2 workers",
              "2-procs": "reference: two 1-worker processes at once",
              "clamscan": "clamscan, same signatures (db load excluded)"}
    report.add("scan", "corpus", f"{corpus.objects} objects, {corpus.bytes / MB:.0f} MB")
    for name, label in labels.items():
        report.add("scan", f"{label}: throughput", med(name, "mb_per_s"), "MB/s", 1,
                   note=runs_note(name))
        report.add("scan", f"{label}: objects", med(name, "objects_per_s"), "objects/s", 1)
        report.add("scan", f"{label}: per CPU second", med(name, "mb_per_cpu_s"), "MB/CPU-s", 1)
    report.add("scan", "clamscan database load + start-up", med("clamscan", "load_seconds"), "s")
    report.ratio("scan", "scan service per core / clamscan (MB/s, 1 worker)",
                 ratio(med("clamav-1", "mb_per_s"), med("clamscan", "mb_per_s")), target=1.0)
    report.ratio("scan", "scan service / clamscan per CPU second",
                 ratio(med("clamav-1", "mb_per_cpu_s"), med("clamscan", "mb_per_cpu_s")))
    report.ratio("scan", "2 workers / 1 worker (ClamAV signatures)",
                 ratio(med("clamav-2", "mb_per_s"), med("clamav-1", "mb_per_s")), target=1.7,
                 note=f"{os.cpu_count()} CPUs")
    report.ratio("scan", "2 workers / two 1-worker processes",
                 ratio(med("clamav-2", "mb_per_s"), med("2-procs", "mb_per_s")))
    report.ratio("scan", "2 workers / 1 worker (ClamAV + YARA)",
                 ratio(med("yara-2", "mb_per_s"), med("yara-1", "mb_per_s")), target=1.7)
    report.ratio("scan", "isolation = thread: 2 threads / 1 thread",
                 ratio(med("thread-2", "mb_per_s"), med("thread-1", "mb_per_s")))
    report.ratio("scan", "reference: 2 processes / 1 worker (what the machine allows)",
                 ratio(med("2-procs", "mb_per_s"), med("clamav-1", "mb_per_s")))
    report.ratio("scan", "YARA's cost: ClamAV + YARA / ClamAV alone (1 thread)",
                 ratio(med("yara-1", "mb_per_s"), med("clamav-1", "mb_per_s")))

    for name, label in (("repeat-none", "no cache"),
                        ("repeat-clamav-cache", "libclamav's clean-file cache on"),
                        ("repeat-verdict-cache", "verdict cache on")):
        report.add("scan", f"corpus x{REPEAT}, 2 workers, ClamAV + YARA, {label}",
                   med(name, "mb_per_s"), "MB/s", 1,
                   note=f"{runs_note(name)}; ClamAV scans {results[name][-1]['clamav_scans']}, "
                        f"cached {results[name][-1]['cached']} of {results[name][-1]['objects']}")
    report.ratio("scan", f"corpus x{REPEAT}: libclamav clean cache / no cache",
                 ratio(med("repeat-clamav-cache", "mb_per_s"), med("repeat-none", "mb_per_s")))
    report.ratio("scan", f"corpus x{REPEAT}: verdict cache / no cache",
                 ratio(med("repeat-verdict-cache", "mb_per_s"), med("repeat-none", "mb_per_s")))

    # Both scanners must agree on what is infected (same signatures).
    inproc = set(results["clamav-1"][-1]["infected"])
    clam = set(results["clamscan"][-1]["infected"])
    agree = "the same" if inproc == clam else (
        f"DIFFERENT: only in-process {sorted(inproc - clam)}, only clamscan {sorted(clam - inproc)}")
    say(f"infected objects: in-process {len(inproc)}, clamscan {len(clam)}: {agree}")
    report.add("scan", "infected objects in-process / clamscan", f"{len(inproc)} / {len(clam)}",
               note="same files" if inproc == clam else "files differ")
    errors = results["clamav-1"][-1]["errors"]
    if errors:
        report.note(f"scan: in-process error verdicts on the corpus: {errors}")

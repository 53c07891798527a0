"""`tools/bench mail`: SMTP antivirus end to end (issue 10), in one fresh lab.

A corpus of clean mail made by code here (text/plain; multipart/alternative
text + HTML; multipart/mixed with base64 attachments: zips of text and binary
members, PDF-like binaries, office-like documents (OOXML zips); message sizes
log-uniform from 2 KiB to 4 MiB, ~100 MB by default, --mail-mb), written as
.eml files (CRLF, exactly the bytes a client sends) to a temp dir. Postfix
(delivering into Dovecot's Maildirs, servers.MailServers) runs in the server
namespace. Each round:
- plain: --clients (4) threads in the client namespace, each with smtplib
  sessions (mail_clients.NamespaceSMTP) sending its share of the corpus
  (equal bytes), MESSAGES_PER_SESSION messages per session, to port 25,
  without the FORWARD jump to the queue (plain forwarding);
- scanned: the same through nfqscand (the project's ClamAV signatures and
  YARA rules, [scan] pool_threads = 2, scanner processes): every message is
  held whole (deferred DATA), scanned, then handed to Postfix;
- ctl-scan: `nfqscanctl scan` of the same .eml files through the same
  daemon's pool (the scan service alone, the same scanners, no network);
- scanbench: nfqscan-scanbench (the bench runner of `tools/bench scan`),
  2 workers, ClamAV + YARA, the same files, with no daemon running.
A run's time goes from the first connection to the last message delivered
in the Maildirs (the newest delivered file's mtime); every DATA must get
250, every message must arrive (counted by Message-ID), and a sample of them
is compared byte for byte with what was sent (Postfix.as_sent). Ratios are
paired within a round, then the median over rounds is printed.
Then the delivery latency added per message: --latency-messages (300) small
messages (2-16 KiB: text, HTML, a small attachment), each sent both ways,
one after another on one session per batch of LATENCY_BATCH, batches
alternating plain forwarding and nfqscand (TCP_NODELAY on the client
socket); per message the time from the start of smtplib's data() (DATA, 354,
the message, its final dot) to the 250 reply, and from the message's final
dot sent to the 250; p50/p99 and the added ms.
"""

from __future__ import annotations

import base64
import io
import os
import random
import re
import socket
import threading
import time
import zipfile
from pathlib import Path

import bench_scan
from common import (LabError, Report, Rounds, alternate_batches, build_dir, cpu_seconds_precise,
                    ctl_scan_files, fmt, median, percentile, say, scan_delta, section,
                    set_queue_jump, system_cpu)
from lab import REPO, SERVER4, Lab
from mail_clients import NamespaceSMTP
from nfqscand import Nfqscand
from servers import MailServers, Postfix

S = "mail"
PORT = 25
MB = 1e6
KIB = 1024
MIB = 1 << 20
MESSAGES_PER_SESSION = 10
LATENCY_BATCH = 50
SAMPLE = 20  # messages per run compared byte for byte (the largest among them)
SENDER = "bench@example.org"
SCAN = {"clamav_db_dirs": [str(REPO / "rules" / "clamav")],
        "yara_rule_dirs": [str(REPO / "rules" / "yara")], "pool_threads": 2,
        "isolation": "process", "cache_entries": 0}  # every message scanned
MESSAGE_ID = re.compile(rb"^Message-ID: (<[^>\r\n]+>)", re.M | re.I)


# -- corpus -------------------------------------------------------------------------

class MailCorpus(bench_scan.Corpus):
    """Clean messages as a client sends them (CRLF line ends, every line under
    100 characters, 7bit or base64). `budget_mb` is split 15/20/65 % over
    text, html and multipart-with-attachments; each message's size is drawn
    log-uniformly from 2 KiB to 4 MiB."""

    def __init__(self, root: Path, seed: int):
        super().__init__(root, seed=seed)
        self.serial = 0

    # -- pieces
    def crlf(self, data: bytes) -> bytes:
        return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")

    def head(self, kind: str, content_type: str) -> bytes:
        self.serial += 1
        n = self.serial
        subject = " ".join(self.text(60).decode().split()[:6])
        return (f"From: Bench Sender <{SENDER}>\r\n"
                f"To: {('Alice <alice', 'Bob <bob')[n % 2]}@lab.test>\r\n"
                f"Subject: {kind} {n}: {subject}\r\n"
                f"Message-ID: <bench-{n:05d}.{kind}@example.org>\r\n"
                f"Date: Mon, 20 Nov 2023 10:00:00 +0000\r\n"
                f"MIME-Version: 1.0\r\n{content_type}\r\n").encode()

    def body_text(self, size: int) -> bytes:
        return self.crlf(self.text(max(64, size))).rstrip(b"\r\n") + b"\r\n"

    @staticmethod
    def b64(data: bytes) -> bytes:
        return base64.encodebytes(data).replace(b"\n", b"\r\n")

    def attachment(self, name: str, ctype: str, data: bytes) -> bytes:
        return (f'Content-Type: {ctype}; name="{name}"\r\n'
                f'Content-Disposition: attachment; filename="{name}"\r\n'
                f"Content-Transfer-Encoding: base64\r\n\r\n").encode() + self.b64(data)

    def zip_file(self, size: int) -> bytes:
        """~`size` bytes: deflated text members (~40 % of their size) and
        random binary ones, each no larger than what is left."""
        members, estimate = [], 0.0
        while estimate < size or not members:
            left = max(256, int(size - estimate))
            if self.rnd.random() < 0.3:
                data = self.binary(min(left, self.size(4 * KIB, 512 * KIB)))
                members.append(("data.bin", data))
                estimate += len(data)
            else:
                data = self.text(min(int(left * 2.5), self.size(1 * KIB, 300 * KIB)))
                members.append((self.rnd.choice(["notes.txt", "table.csv", "page.html"]), data))
                estimate += len(data) * 0.4
        return self.zip(members)

    def pdf_like(self, size: int) -> bytes:
        """A PDF's shape: header, a few objects, one binary stream, xref, EOF."""
        stream = self.binary(max(256, size - 600))
        parts = [b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n",
                 b"1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n",
                 b"2 0 obj\n<< /Type /Pages /Kids [3 0 R] /Count 1 >>\nendobj\n",
                 b"3 0 obj\n<< /Type /Page /Parent 2 0 R /Contents 4 0 R >>\nendobj\n",
                 b"4 0 obj\n<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(stream),
                 stream, b"\nendstream\nendobj\n",
                 b"xref\n0 5\n0000000000 65535 f \ntrailer\n<< /Size 5 /Root 1 0 R >>\n"
                 b"startxref\n0\n%%EOF\n"]
        return b"".join(parts)

    def office_like(self, size: int) -> bytes:
        """An OOXML word document's shape: a zip with [Content_Types].xml,
        word/document.xml (the text, deflated) and an embedded image."""
        text = self.text(max(1024, int(size * 1.5))).decode().split("\n")
        paragraphs = "".join(f"<w:p><w:r><w:t>{line}</w:t></w:r></w:p>" for line in text)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr("[Content_Types].xml",
                       '<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.'
                       'openxmlformats.org/package/2006/content-types"><Default Extension='
                       '"xml" ContentType="application/xml"/></Types>')
            z.writestr("_rels/.rels", '<?xml version="1.0"?><Relationships/>')
            z.writestr("word/document.xml",
                       '<?xml version="1.0" encoding="UTF-8"?><w:document xmlns:w="http://'
                       'schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body>'
                       + paragraphs + "</w:body></w:document>")
            z.writestr("word/media/image1.png",
                       b"\x89PNG\r\n\x1a\n" + self.binary(max(64, size // 3)),
                       compress_type=zipfile.ZIP_STORED)
            z.writestr("docProps/app.xml", '<?xml version="1.0"?><Properties/>')
        return buf.getvalue()

    # -- messages
    def text_message(self, size: int) -> bytes:
        head = self.head("text", "Content-Type: text/plain; charset=us-ascii\r\n"
                                 "Content-Transfer-Encoding: 7bit\r\n")
        # A line with a leading dot: stuffed on the wire, one dot at Postfix.
        return head + self.body_text(size - len(head)) + b".signature follows\r\n-- \r\nB.\r\n"

    def html_message(self, size: int) -> bytes:
        head = self.head("html", 'Content-Type: multipart/alternative; boundary="alt-b0und"\r\n')
        html = self.crlf(self.html(max(512, (size - len(head)) * 3 // 5)))
        return (head + b"--alt-b0und\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
                + self.body_text(max(64, size // 6))
                + b"\r\n--alt-b0und\r\nContent-Type: text/html; charset=utf-8\r\n"
                  b"Content-Transfer-Encoding: 7bit\r\n\r\n"
                + html + b"\r\n--alt-b0und--\r\n")

    def multipart_message(self, size: int) -> bytes:
        head = self.head("multipart", 'Content-Type: multipart/mixed; boundary="mix-b0und"\r\n')
        text = self.body_text(self.size(300, 8 * KIB))
        # base64 grows 4/3 (+ CRLF every 76): what is left, split over 1-3 files.
        room = max(1024, int((size - len(head) - len(text)) * 0.74))
        count = self.rnd.randint(1, 3) if room > 64 * KIB else 1
        parts = [b"Content-Type: text/plain; charset=us-ascii\r\n\r\n" + text]
        for i in range(count):
            share = room // count
            pick = self.rnd.random()
            if pick < 0.35:
                parts.append(self.attachment(f"archive-{i}.zip", "application/zip",
                                             self.zip_file(share)))
            elif pick < 0.7:
                parts.append(self.attachment(f"scan-{i}.pdf", "application/pdf",
                                             self.pdf_like(share)))
            else:
                parts.append(self.attachment(
                    f"report-{i}.docx", "application/vnd.openxmlformats-officedocument."
                    "wordprocessingml.document", self.office_like(share)))
        return head + b"".join(b"--mix-b0und\r\n" + p + b"\r\n" for p in parts) \
            + b"--mix-b0und--\r\n"

    def generate_mail(self, budget_mb: float) -> "MailCorpus":
        self.root.mkdir(parents=True, exist_ok=True)
        self.scale = budget_mb / 100.0

        def size():
            return self.size(2 * KIB, 4 * MIB)

        self.fill("text", 15, lambda: ("eml", self.text_message(size())))
        self.fill("html", 20, lambda: ("eml", self.html_message(size())))
        self.fill("multipart", 65, lambda: ("eml", self.multipart_message(size())))
        return self

    def small(self, count: int) -> None:
        """`count` messages of 2-16 KiB (text, html, a small attachment)."""
        self.root.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            size = self.rnd.randint(2 * KIB, 16 * KIB)
            kind = ("text", "html", "multipart")[i % 3]
            data = (self.text_message(size) if kind == "text" else
                    self.html_message(size) if kind == "html" else self.multipart_message(size))
            self.write(kind, f"small-{i:04d}.eml", data)


def message_table(root: Path) -> list[dict]:
    out = []
    for path in sorted(root.iterdir()):
        os.chmod(path, 0o644)
        data = path.read_bytes()
        mid = MESSAGE_ID.search(data).group(1).decode()
        out.append({"path": path, "data": data, "size": len(data), "id": mid})
    return out


# -- smtplib with timing ------------------------------------------------------------

class TimedSMTP(NamespaceSMTP):
    """NamespaceSMTP that notes when the message's final dot was sent
    (smtplib's data() sends the whole dot-stuffed message in one send())."""

    nodelay = False
    sent_at = 0.0

    def _get_socket(self, host, port, timeout):
        sock = super()._get_socket(host, port, timeout)
        if self.nodelay:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def send(self, s):
        super().send(s)
        if isinstance(s, bytes) and s.endswith(b"\r\n.\r\n"):
            self.sent_at = time.perf_counter()


class LatencySMTP(TimedSMTP):
    nodelay = True


# -- the bench ----------------------------------------------------------------------

class MailBench(Rounds):
    KEY = "msgs"

    def __init__(self, lab: Lab, files, report: Report, args):
        super().__init__()
        self.lab, self.files, self.report = lab, files, report
        self.rounds = max(1, args.rounds)
        self.clients = max(1, args.clients)
        self.budget_mb = args.mail_mb
        self.latency_messages = args.latency_messages
        self.latency: dict = {v: {"data": [], "reply": []} for v in ("plain", "scanned")}
        self.notes: list[str] = []
        self.checked = 0

    # -- set-up -----------------------------------------------------------------------
    def prepare(self) -> None:
        lab = self.lab
        t0 = time.monotonic()
        say("mail servers: Postfix (SMTP 25, delivering into Dovecot's Maildirs) in the "
            "server namespace")
        self.mail = MailServers(lab)
        self.postfix = self.mail.postfix
        say(f"corpus: generating ~{self.budget_mb:.0f} MB of clean mail (2 KiB - 4 MiB) and "
            f"{self.latency_messages} small messages (2-16 KiB) into {self.files.dir}")
        self.corpus_dir = self.files.dir / "mail"
        big = MailCorpus(self.corpus_dir, seed=11).generate_mail(self.budget_mb)
        small = MailCorpus(self.files.dir / "mail-small", seed=12)
        small.serial = 100_000  # Message-IDs apart from the corpus's
        small.small(self.latency_messages)
        self.messages = message_table(self.corpus_dir)
        self.small_messages = message_table(self.files.dir / "mail-small")
        self.corpus_bytes = sum(m["size"] for m in self.messages)
        sizes = sorted(m["size"] for m in self.messages)
        say(f"corpus: {len(self.messages)} messages, {self.corpus_bytes / MB:.1f} MB "
            f"(median {sizes[len(sizes) // 2] / KIB:.0f} KiB, largest {sizes[-1] / MIB:.1f} MiB)"
            f" in {time.monotonic() - t0:.0f} s")
        self.kinds = big.kinds
        for kind, (n, size) in big.kinds.items():
            say(f"  {kind:<9} {n:>4} messages {size / MB:>7.1f} MB")
        # Each client an equal share of bytes (largest first, to the least
        # loaded client), in a shuffled order; recipients alternate.
        shares: list[list[dict]] = [[] for _ in range(self.clients)]
        loads = [0] * self.clients
        for m in sorted(self.messages, key=lambda m: -m["size"]):
            i = loads.index(min(loads))
            shares[i].append(m)
            loads[i] += m["size"]
        rng = random.Random(3)
        for s in shares:
            rng.shuffle(s)
        self.shares = shares
        self.rcpt = {m["id"]: self.mail.address(("alice", "bob")[i % 2])
                     for i, m in enumerate(self.messages + self.small_messages)}
        described = ", ".join(f"{len(s)} messages/{sum(m['size'] for m in s) / MB:.0f} MB"
                              for s in shares)
        say(f"clients: {self.clients} concurrent smtplib senders ({described}), "
            f"{MESSAGES_PER_SESSION} messages per session")

    def daemon(self) -> Nfqscand:
        overrides = {"scan": dict(SCAN), "protocols": {"smtp": {"ports": [PORT]}}}
        d = Nfqscand(self.lab, overrides, name="nfqscand")
        d.start()
        d.wait_engines()
        return d

    # -- Maildirs -----------------------------------------------------------------------
    def delivered_paths(self) -> list[Path]:
        out = []
        for user in self.postfix.users:
            maildir = self.postfix.maildir(user)
            for sub in ("new", "cur"):
                with os.scandir(maildir / sub) as it:
                    out += [Path(e.path) for e in it if e.is_file()]
        return out

    def wait_delivered(self, count: int, timeout: float, what: str) -> list[Path]:
        deadline = time.monotonic() + timeout
        next_note = time.monotonic() + 10
        while True:
            paths = self.delivered_paths()
            if len(paths) >= count:
                return paths
            now = time.monotonic()
            if now > deadline:
                raise LabError(f"{what}: {len(paths)} of {count} messages delivered after "
                               f"{timeout:.0f} s, {self.postfix.queued()} in Postfix's queue;"
                               f" maillog:\n{self.postfix.log_tail(20)}")
            if now >= next_note:
                say(f"    ... {what}: {len(paths)} of {count} delivered, "
                    f"{self.postfix.queued()} in Postfix's queue")
                next_note = now + 10
            time.sleep(0.05)

    def check_delivered(self, paths: list[Path], sent: list[dict], rng: random.Random) -> list[str]:
        """Every message there once (by Message-ID); a sample byte-identical
        (the largest one and SAMPLE - 1 drawn at random)."""
        bad = []
        by_id: dict = {}
        for p in paths:
            with open(p, "rb") as f:
                head = f.read(4096)
            m = MESSAGE_ID.search(head)
            by_id.setdefault(m.group(1).decode() if m else f"none:{p.name}", []).append(p)
        wanted = {m["id"] for m in sent}
        missing = wanted - set(by_id)
        extra = set(by_id) - wanted
        twice = [i for i, ps in by_id.items() if len(ps) > 1]
        if missing:
            bad.append(f"{len(missing)} messages not delivered, e.g. {sorted(missing)[:2]}")
        if extra:
            bad.append(f"{len(extra)} unexpected messages, e.g. {sorted(extra)[:2]}")
        if twice:
            bad.append(f"{len(twice)} messages delivered more than once")
        sample = [max(sent, key=lambda m: m["size"])]
        sample += rng.sample(sent, min(len(sent), SAMPLE) - 1) if len(sent) > 1 else []
        for m in {m["id"]: m for m in sample}.values():
            if m["id"] not in by_id:
                continue
            got = Postfix.as_sent(by_id[m["id"]][0].read_bytes())
            self.checked += 1
            if got != m["data"]:
                bad.append(f"{m['id']} ({m['size']} bytes) differs from what was sent "
                           f"({len(got)} bytes arrived)")
        return bad

    def clear_maildirs(self) -> None:
        self.postfix.reset(timeout=60)

    # -- sending ------------------------------------------------------------------------
    def send_share(self, share: list[dict], out: dict) -> None:
        """One client: sessions of MESSAGES_PER_SESSION messages, one after
        another; the time each DATA's 250 came back."""
        try:
            for i in range(0, len(share), MESSAGES_PER_SESSION):
                with TimedSMTP(self.lab.client, SERVER4, PORT, timeout=600) as smtp:
                    code, text = smtp.ehlo()
                    if code != 250:
                        raise LabError(f"EHLO: {code} {text!r}")
                    for m in share[i:i + MESSAGES_PER_SESSION]:
                        smtp.mail(SENDER)
                        code, text = smtp.rcpt(self.rcpt[m["id"]])
                        if code not in (250, 251):
                            raise LabError(f"RCPT: {code} {text!r}")
                        code, text = smtp.data(m["data"])
                        out["replies"].append((m["id"], code, time.monotonic()))
                        if code != 250:
                            out["errors"].append(f"{m['id']}: DATA {code} {text[:80]!r}")
                        else:
                            out["bytes"] += m["size"]
        except Exception as exc:  # reported by the run
            out["errors"].append(f"{type(exc).__name__}: {str(exc)[:200]}")

    def send_corpus(self, variant: str, r: int, daemon: Nfqscand | None) -> dict:
        """Every client sends its share at once; the run lasts from the first
        connection to the last message delivered in the Maildirs."""
        if self.delivered_paths():
            self.clear_maildirs()
        status0 = daemon.status() if daemon else None
        pids = [int(p) for p in (status0 or {}).get("scan", {}).get("scanner_pids", [])]
        cpu0 = {p: cpu_seconds_precise(p) for p in pids}
        dcpu0 = cpu_seconds_precise(daemon.process.pid) if daemon else 0.0
        sys0 = system_cpu()
        outs = [{"replies": [], "errors": [], "bytes": 0} for _ in self.shares]
        threads = [threading.Thread(target=self.send_share, args=(share, out), daemon=True,
                                    name=f"smtp-client-{c}")
                   for c, (share, out) in enumerate(zip(self.shares, outs))]
        start_wall, t0 = time.time(), time.monotonic()
        for t in threads:
            t.start()
        n = len(self.messages)
        next_note = t0 + 10
        while any(t.is_alive() for t in threads):
            time.sleep(0.1)
            now = time.monotonic()
            if now >= next_note:
                accepted = sum(len(o["replies"]) for o in outs)
                say(f"    ... {variant}: {now - t0:.0f} s, {accepted} of {n} messages "
                    f"accepted, {len(self.delivered_paths())} delivered")
                next_note = now + 10
            if now - t0 > 1800:
                raise LabError(f"{variant}: the senders still run after 1800 s")
        accepted_s = max((rep[2] for o in outs for rep in o["replies"]), default=t0) - t0
        errors = [e for o in outs for e in o["errors"]]
        expected = sum(1 for o in outs for rep in o["replies"] if rep[1] == 250)
        paths = self.wait_delivered(expected, 300, variant)
        # The newest Maildir file's ctime is when the last message was
        # delivered (Postfix writes it in tmp/, then renames it into new/).
        last = max((p.stat().st_ctime for p in paths), default=start_wall)
        wall = max(last - start_wall, accepted_s, 1e-3)
        sys1 = system_cpu()
        scanner_cpu = {p: cpu_seconds_precise(p) - cpu0[p] for p in pids
                       if os.path.exists(f"/proc/{p}")}
        dcpu = (cpu_seconds_precise(daemon.process.pid) - dcpu0) if daemon else 0.0
        status1 = daemon.status() if daemon else None
        bad = errors + self.check_delivered(paths, self.messages, random.Random(r))
        got_bytes = sum(o["bytes"] for o in outs)
        busy = (sys1[0] - sys0[0]) / max(1, sys1[1] - sys0[1])
        run = {"round": r, "seconds": wall, "accepted_s": accepted_s,
               "msgs": len(paths) / wall, "mbps": got_bytes / wall / MB, "ok": not bad,
               "machine_busy": busy, "nfqscand_cpu": dcpu, "scanner_cpu": scanner_cpu}
        if status0 and status1:
            run.update(scan_delta(status0, status1, "smtp"))
        self.runs[variant].append(run)
        extra = ""
        if scanner_cpu:
            shares = "/".join(f"{v / wall * 100:.0f}%" for v in scanner_cpu.values())
            extra += f", scanners busy {shares}, nfqscand cpu {dcpu / wall * 100:.0f}%"
        if "objects" in run:
            extra += (f", messages scanned {run['objects']} (clean {run['clean']}), mean scan "
                      f"{fmt(run['scan_ms'], 1, 'ms')}, queue wait "
                      f"{fmt(run['queue_wait_ms'], 1, 'ms')}")
        say(f"  {variant:<9} {wall:6.2f} s {run['msgs']:7.1f} msg/s {run['mbps']:6.1f} MB/s "
            f"(last 250 after {accepted_s:.2f} s), {len(paths)}/{n} delivered, "
            f"{'all right' if not bad else f'{len(bad)} WRONG'}, machine {busy * 100:.0f}% "
            f"busy{extra}")
        for line in bad[:5]:
            say(f"    {line}")
        if bad:
            self.notes.append(f"{variant} round {r}: {len(bad)} problems, e.g. {bad[0]}")
        if "objects" in run and run["objects"] != n:
            self.notes.append(f"{variant} round {r}: nfqscand scanned {run['objects']} SMTP "
                              f"objects for {n} messages")
        self.clear_maildirs()
        return run

    def ctl_scan(self, daemon: Nfqscand, r: int) -> dict:
        """`nfqscanctl scan` of the .eml files through the daemon's pool."""
        paths = [str(m["path"]) for m in self.messages]
        scanned = ctl_scan_files(daemon, paths, "smtp")
        verdicts, wall = scanned.pop("verdicts"), scanned["seconds"]
        clean = scanned["clean_verdicts"]
        run = {"round": r, "msgs": len(paths) / wall, "mbps": self.corpus_bytes / wall / MB,
               "ok": clean == len(paths), **scanned}
        self.runs["ctl-scan"].append(run)
        shares = "/".join(f"{v / wall * 100:.0f}%" for v in run["scanner_cpu"].values())
        say(f"  {'ctl-scan':<9} {wall:6.2f} s {run['msgs']:7.1f} msg/s {run['mbps']:6.1f} MB/s, "
            f"{clean}/{len(paths)} clean, scanners busy {shares}, mean scan "
            f"{fmt(run['scan_ms'], 1, 'ms')}")
        if not run["ok"]:
            others = [v for v in verdicts if v.get("verdict") != "clean"][:3]
            self.notes.append(f"ctl-scan round {r}: not all clean: {others}")
        return run

    def scanbench(self, r: int) -> dict:
        res = bench_scan.run_inprocess(self.corpus_dir, 2, yara=True)
        run = {"round": r, "seconds": res["seconds"], "mbps": res["mb_per_s"],
               "msgs": len(self.messages) / res["seconds"],
               "ok": not res["infected"] and not res["errors"], "cpu": res["cpu_seconds"]}
        self.runs["scanbench"].append(run)
        say(f"  {'scanbench':<9} {res['seconds']:6.2f} s {run['msgs']:7.1f} msg/s "
            f"{res['mb_per_s']:6.1f} MB/s (2 workers, ClamAV + YARA, "
            f"{res['cpu_seconds'] / res['seconds'] * 100:.0f}% CPU of its processes; engines "
            f"loaded in {res['load_ms'] / 1000:.1f} s, not timed)")
        if not run["ok"]:
            self.notes.append(f"scanbench round {r}: infected {res['infected']}, errors "
                              f"{res['errors']}")
        return run

    # -- latency ------------------------------------------------------------------------
    def latency_batch(self, variant: str, batch: list[dict]) -> None:
        """One session, the batch's messages one after another."""
        with LatencySMTP(self.lab.client, SERVER4, PORT, timeout=120) as smtp:
            code, text = smtp.ehlo()
            if code != 250:
                raise LabError(f"latency {variant}: EHLO {code} {text!r}")
            wrong = 0
            for m in batch:
                smtp.mail(SENDER)
                smtp.rcpt(self.rcpt[m["id"]])
                t0 = time.perf_counter()
                code, _ = smtp.data(m["data"])
                t1 = time.perf_counter()
                if code != 250:
                    wrong += 1
                    continue
                self.latency[variant]["data"].append((t1 - t0) * 1000)
                self.latency[variant]["reply"].append((t1 - smtp.sent_at) * 1000)
        if wrong:
            self.notes.append(f"latency {variant}: {wrong} of {len(batch)} DATA not 250")

    def measure_latency(self, daemon: Nfqscand) -> None:
        n = len(self.small_messages)
        if not n:
            return
        say(f"delivery latency: {n} messages of 2-16 KiB each way, batches of "
            f"{LATENCY_BATCH} on one session, plain and through nfqscand alternating")
        before = daemon.status()
        alternate_batches(
            self.lab.router, self.small_messages, LATENCY_BATCH, self.latency_batch,
            lambda done: say(
                f"  {done}/{n}: data() -> 250 p50 plain "
                f"{fmt(percentile(self.latency['plain']['data'], 50), 2, 'ms')}, scanned "
                f"{fmt(percentile(self.latency['scanned']['data'], 50), 2, 'ms')}"), 2)
        after = daemon.status()
        self.latency_scan = scan_delta(before, after, "smtp")
        sent = len(self.latency["plain"]["data"]) + len(self.latency["scanned"]["data"])
        paths = self.wait_delivered(sent, 120, "latency messages")
        bad = self.check_delivered(paths, self.small_messages * 2, random.Random(0))
        # Each message went twice: "delivered more than once" is expected here.
        bad = [b for b in bad if "more than once" not in b]
        if bad:
            self.notes.append(f"latency messages: {bad[0]}")
        if self.latency_scan["objects"] < len(self.latency["scanned"]["data"]):
            self.notes.append(f"latency: only {self.latency_scan['objects']} of "
                              f"{len(self.latency['scanned']['data'])} messages were scanned")
        say(f"  nfqscand: {self.latency_scan['objects']} small messages scanned, mean scan "
            f"{fmt(self.latency_scan['scan_ms'], 2, 'ms')}, mean queue wait "
            f"{fmt(self.latency_scan['queue_wait_ms'], 2, 'ms')}; "
            f"{len(paths)} delivered{', all right' if not bad else ''}")
        self.clear_maildirs()

    # -- the whole section --------------------------------------------------------------
    def run(self) -> None:
        self.prepare()
        build = bench_scan_build()
        if build:
            raise LabError("building nfqscan-scanbench failed:\n" + build)
        for r in range(1, self.rounds + 1):
            say(f"round {r}/{self.rounds}: nfqscand scanning (engines loading) ...")
            daemon = self.daemon()
            try:
                if r == 1:  # on a fresh daemon
                    self.measure_latency(daemon)
                order = ("plain", "scanned")
                for variant in (order if r % 2 else order[::-1]):
                    set_queue_jump(self.lab.router, variant != "plain")
                    try:
                        self.send_corpus(variant, r, daemon if variant != "plain" else None)
                    finally:
                        set_queue_jump(self.lab.router, True)
                self.ctl_scan(daemon, r)
            finally:
                rc = daemon.stop()
                if rc != 0:
                    raise LabError(f"nfqscand exited with {rc}:\n{daemon.process.log_tail()}")
            say(f"round {r}/{self.rounds}: the bench runner on the same files (no daemon) ...")
            self.scanbench(r)
        self.summarise()

    # -- figures ------------------------------------------------------------------------
    def summarise(self) -> None:
        rep = self.report
        section("mail: runs (medians over rounds)")
        say(f"{'variant':<10} {'msg/s':>8} {'MB/s':>7} {'seconds':>8} {'machine busy':>13} "
            f"{'scanners busy':>14} {'nfqscand CPU':>13}")
        for v in ("plain", "scanned", "ctl-scan", "scanbench"):
            runs = self.runs.get(v, [])
            if not runs:
                continue
            scanners = median([sum(r["scanner_cpu"].values()) / len(r["scanner_cpu"]) / r["seconds"]
                               for r in runs if r.get("scanner_cpu")])
            dcpu = median([r["nfqscand_cpu"] / r["seconds"] for r in runs
                           if r.get("nfqscand_cpu")])
            busy = median([r.get("machine_busy") for r in runs])
            say(f"{v:<10} {fmt(self.med(v, 'msgs'), 1):>8} {fmt(self.med(v, 'mbps'), 1):>7} "
                f"{fmt(self.med(v, 'seconds'), 2):>8} "
                f"{fmt(busy * 100 if busy is not None else None, 0, '%'):>13} "
                f"{fmt(scanners * 100 if scanners is not None else None, 0, '%'):>14} "
                f"{fmt(dcpu * 100 if dcpu is not None else None, 0, '%'):>13}")
        say("plain/scanned: from the first connection to the last message in the Maildirs; "
            "scanners busy: CPU time of each scanner process / wall time, mean of the two")
        kinds = ", ".join(f"{k} {n}" for k, (n, _) in self.kinds.items())
        rep.add(S, "corpus", f"{len(self.messages)} messages, {self.corpus_bytes / MB:.0f} MB",
                note=f"{kinds}; {self.clients} clients, {MESSAGES_PER_SESSION} per session")
        titles = {"plain": "plain forwarding",
                  "scanned": "scanned through nfqscand",
                  "ctl-scan": "scan service alone: nfqscanctl scan",
                  "scanbench": "scan service alone: nfqscan-scanbench, 2 workers"}
        for v, title in titles.items():
            rep.add(S, title, self.med(v, "msgs"), "msg/s", 1,
                    note=f"{fmt(self.med(v, 'mbps'), 1)} MB/s, median of "
                         f"{len(self.runs.get(v, []))}")
        rep.ratio(S, "scanned / nfqscanctl scan (same daemon's pool)",
                  self.paired("scanned", "ctl-scan"))
        rep.ratio(S, "scanned / nfqscan-scanbench (2 workers)",
                  self.paired("scanned", "scanbench"))
        rep.ratio(S, "scanned / plain", self.paired("scanned", "plain"))
        sc = [r for r in self.runs.get("scanned", []) if r.get("scanner_cpu")]
        if sc:
            rep.add(S, "scanned: scanner processes busy (mean of 2)",
                    median([sum(r["scanner_cpu"].values()) / len(r["scanner_cpu"]) / r["seconds"]
                            for r in sc]) * 100, "%", 0)
            rep.add(S, "scanned: nfqscand (queue workers) CPU",
                    median([r["nfqscand_cpu"] / r["seconds"] for r in sc]) * 100, "%", 0,
                    note="of one core")
            rep.add(S, "scanned: mean scan time / queue wait per message",
                    f"{fmt(self.med('scanned', 'scan_ms'), 1)} / "
                    f"{fmt(self.med('scanned', 'queue_wait_ms'), 1)} ms")
        if self.latency["plain"]["data"]:
            section("mail: delivery latency, 2-16 KiB messages (data(): DATA sent -> 250; "
                    "after dot: final dot sent -> 250)")
            say(f"{'':<18} {'n':>5} {'p50':>9} {'p90':>9} {'p99':>9} {'max':>9}")
            for v in ("plain", "scanned"):
                for what, label in (("data", "data()"), ("reply", "after dot")):
                    t = self.latency[v][what]
                    say(f"{v + ' ' + label:<18} {len(t):>5} " + " ".join(
                        f"{fmt(percentile(t, p), 2, 'ms'):>9}" for p in (50, 90, 99, 100)))
            for p in (50, 99):
                a = percentile(self.latency["scanned"]["data"], p)
                b = percentile(self.latency["plain"]["data"], p)
                rep.add(S, f"latency p{p} (data() -> 250): plain / scanned",
                        f"{fmt(b, 2)} / {fmt(a, 2)} ms")
                rep.add(S, f"latency p{p}: added by scanning", a - b, "ms", 2)
            ls = getattr(self, "latency_scan", {})
            if ls:
                rep.add(S, "latency: mean scan time / queue wait per small message",
                        f"{fmt(ls.get('scan_ms'), 2)} / {fmt(ls.get('queue_wait_ms'), 2)} ms")
        ok = all(r.get("ok") for runs in self.runs.values() for r in runs)
        rep.add(S, "every message right", "yes" if ok else "NO",
                note=f"250, delivered once, all verdicts clean; {self.checked} messages "
                     f"compared byte for byte")
        errors = [r["scan_errors"] for r in self.runs.get("scanned", []) if r.get("scan_errors")]
        if errors:
            self.notes.append(f"scan error verdicts during scanned runs: {errors}")
        for n in self.notes:
            rep.note(f"mail: {n}")


def bench_scan_build() -> str:
    """Builds nfqscan-scanbench; the tail of ninja's output on failure."""
    import subprocess
    build = subprocess.run(["ninja", "-C", str(build_dir()), "src/scan/nfqscan-scanbench"],
                           capture_output=True, timeout=900)
    return "" if build.returncode == 0 else build.stdout.decode(errors="replace")[-2000:]


def run(report: Report, files, args) -> None:
    section("mail: SMTP antivirus end to end vs the scan service alone")
    with Lab() as lab:
        MailBench(lab, files, report, args).run()

#!/usr/bin/python3
"""nfqscan demo: a client — router — server lab with nfqscand on the router,
real servers (nginx, Dovecot, Postfix, vsftpd, an SSH-like banner server) and real clients
(curl, Python). Each step drives traffic and says what nfqscand made of it;
at the end `nfqscanctl status` and `nfqscanctl flows` show the whole picture.

Run it with tools/demo (which installs and builds first), or directly:
    NFQSCAN_BUILD=build /usr/bin/python3 tests/lab/demo.py [--step NAME ...]

A new demo step is a function decorated with @step: it gets the Demo (lab,
daemon, servers) and returns a one-line result, or raises to fail.
"""

from __future__ import annotations

import argparse
import base64
import email
import html
import io
import os
import re
import signal
import sys
import time
import traceback
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from banner_server import expected_stream  # noqa: E402
from clients import banner_session, curl_download, curl_fetch, curl_mail, mail_message  # noqa: E402
from ftp_clients import curl_ftp  # noqa: E402
from http_corpus import EICAR  # noqa: E402
from lab import Lab  # noqa: E402
from nfqscand import Nfqscand  # noqa: E402
from mail_clients import NamespaceSMTP, imap_fetch, pop3_retrieve  # noqa: E402
from servers import BannerServer, Dovecot, Nginx, Postfix, Vsftpd  # noqa: E402
from tokens import rewrite, rewrite_config, token_text  # noqa: E402

STEPS: list[tuple[str, str, object]] = []


def step(name: str, title: str):
    def register(fn):
        STEPS.append((name, title, fn))
        return fn
    return register


class Demo:
    """The lab, nfqscand and the servers every step may use."""

    USER, PASSWORD = "alice", "wonderland"
    REWRITE_PORT = 8081

    def __init__(self, lab: Lab):
        self.lab = lab
        self.nginx = Nginx(lab, ports=[80, self.REWRITE_PORT])
        self.download_digest = self.nginx.add_random_file("download.bin", 20 * 1024 * 1024)
        self.nginx.add_file("av/eicar.com", EICAR)
        self.clean_digest = self.nginx.add_random_file("av/clean.bin", 2 * 1024 * 1024)
        self.tokens = token_text(5 * 1024 * 1024)
        self.nginx.add_stream_file("tokens.txt", self.tokens)
        self.dovecot = Dovecot(lab, pop3_ports=[110], imap_ports=[143],
                               users={self.USER: self.PASSWORD})
        self.message = mail_message("nfqscan demo", 50_000)
        self.dovecot.deliver(self.USER, self.message)
        self.postfix = Postfix(lab, ports=[25], dovecot=self.dovecot, users=(self.USER,))
        self.vsftpd = Vsftpd(lab, ports=[21], users={self.USER: self.PASSWORD})
        self.vsftpd.add_file("pub/eicar.com", EICAR)
        self.ftp_clean_digest = self.vsftpd.add_file("pub/report.bin",
                                                      os.urandom(2 * 1024 * 1024))
        self.ssh_bytes = 10 * 1024 * 1024
        self.ssh = BannerServer(lab, port=2222, banner=b"SSH-2.0-OpenSSH_9.2p1",
                                stream_bytes=self.ssh_bytes)
        # The stream engine's test inspector rewrites what nginx sends on
        # REWRITE_PORT only (a test facility, refused without the flag).
        self.daemon = Nfqscand(lab, rewrite_config([self.REWRITE_PORT]),
                               args=["--allow-test-inspectors"]).start()

    def flow(self, **match) -> dict:
        return self.daemon.wait_flow(**match)


def describe(flow: dict) -> str:
    return (f"nDPI {flow['dpi']}, service {flow['service']}, {flow['disposition']}"
            f" (by {flow['claimed_by']}), {flow['packets_c2s'] + flow['packets_s2c']} packets"
            f" seen, {flow['bytes_s2c']} bytes server->client")


def check(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


@step("http4", "HTTP download over IPv4 (curl, nginx, 20 MB, sha256 checked)")
def http_ipv4(demo: Demo) -> str:
    return _http_download(demo, 4)


@step("http6", "HTTP download over IPv6 (curl, nginx, 20 MB, sha256 checked)")
def http_ipv6(demo: Demo) -> str:
    return _http_download(demo, 6)


def _http_download(demo: Demo, family: int) -> str:
    started = time.monotonic()
    got = curl_download(demo.lab, demo.nginx.url("/download.bin", family=family))
    seconds = time.monotonic() - started
    check(got["sha256"] == demo.download_digest, "sha256 differs from the source")
    flow = demo.flow(server_port=80, server=demo.lab.server_address(family))
    rate = got["size_download"] * 8 / seconds / 1e6
    return f"sha256 ok, {rate:.0f} Mbit/s; {describe(flow)}"


@step("rewrite", "Stream rewrite (test inspector on port 8081: GROW -> GROWN-LONGER-TOKEN, "
                 "SHRINKME -> S in a 5 MB download)")
def stream_rewrite(demo: Demo) -> str:
    url = demo.nginx.stream_url("tokens.txt", port=demo.REWRITE_PORT)
    got = curl_download(demo.lab, url, "-0")  # HTTP/1.0: the body ends at the close
    received = got["path"].read_bytes()
    check(received == rewrite(demo.tokens), "the received file is not the expected rewrite")
    flow = demo.flow(server_port=demo.REWRITE_PORT)
    return (f"{demo.tokens.count(b'GROW')} GROW grown, {demo.tokens.count(b'SHRINKME')} SHRINKME"
            f" shrunk, {len(demo.tokens)} -> {len(received)} bytes, as expected; {describe(flow)}")


@step("pop3", "POP3 session (curl: LIST and RETR over one connection, Dovecot)")
def pop3(demo: Demo) -> str:
    url = demo.lab.url("pop3", 110, "/")
    out = curl_mail(demo.lab, [url, url + "1"], demo.USER, demo.PASSWORD)
    check(out.endswith(demo.message), "RETR returned other bytes than were delivered")
    return describe(demo.flow(server_port=110))


@step("imap", "IMAP session (curl: FETCH over IPv6, Dovecot)")
def imap(demo: Demo) -> str:
    out = curl_mail(demo.lab, [demo.lab.url("imap", 143, "/INBOX;UID=1", family=6)],
                    demo.USER, demo.PASSWORD)
    check(out == demo.message, "FETCH returned other bytes than were delivered")
    return describe(demo.flow(server_port=143))


@step("ssh", "Unscanned protocol (SSH-like banner, then 10 MB): released to the fast path")
def ssh_like(demo: Demo) -> str:
    _, data = banner_session(demo.lab, demo.lab.server_address(4), 2222,
                             b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n")
    check(data == expected_stream(demo.ssh_bytes), "the stream arrived altered")
    flow = demo.flow(server_port=2222)
    check(flow["disposition"] == "released", f"flow not released: {flow}")
    return describe(flow)


@step("scan", "nfqscanctl scan: files judged by the daemon's ClamAV + YARA engines")
def scan(demo: Demo) -> str:
    eicar = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$" + b"EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("eicar.com", eicar)
    files = [demo.lab.write_file("scan/eicar.zip", buf.getvalue()),
             demo.lab.write_file("scan/page.html", b"<html><body><pre>" + eicar
                                 + b"</pre></body></html>\n"),
             demo.lab.write_file("scan/clean.txt", b"nothing to see here\n" * 1000)]
    engines = demo.daemon.wait_engines()["engines"]
    out = demo.daemon.ctl("scan", *files, check=False)
    print("\n".join("   " + line for line in out.stdout.decode().splitlines()), flush=True)
    check(out.returncode == 1, f"nfqscanctl scan exited with {out.returncode}, expected 1")
    _, verdicts = demo.daemon.scan(*files)
    check([v["verdict"] for v in verdicts] == ["infected", "infected", "clean"],
          f"unexpected verdicts {verdicts}")
    return (f"engines generation {engines['generation']}: "
            f"{engines['clamav']['signatures']} ClamAV signatures, "
            f"{engines['yara']['rules']} YARA rules; "
            f"{len(demo.daemon.detections(100))} events in the event log")


@step("httpav", "HTTP antivirus: EICAR downloaded with curl gets the block page; "
                "a clean 2 MB file arrives byte-identical")
def http_antivirus(demo: Demo) -> str:
    demo.daemon.wait_engines()
    url = demo.nginx.url("/av/eicar.com")
    got = curl_fetch(demo.lab, url)
    page = got["body"].decode("utf-8", errors="replace")
    print(f"   curl {url} -> HTTP {got['http_code']}, "
          f"{got['headers'].get('content-type', '?')}, {len(got['body'])} bytes:", flush=True)
    # What a browser shows of the page: its text, without markup and style.
    text = re.sub(r"(?s)<(style|head)\b.*?</\1>", "", page)
    text = html.unescape(re.sub(r"<[^>]+>", " ", text))
    shown = [" ".join(line.split()) for line in text.splitlines() if line.strip()][:12]
    print("\n".join("   | " + line[:100] for line in shown), flush=True)
    check(got["http_code"] == 403, f"HTTP {got['http_code']} instead of the block page")
    check(EICAR not in got["body"], "the EICAR bytes reached the client")
    events = [e for e in demo.daemon.detections(20)
              if e.get("protocol") == "http" and e.get("object", "").endswith("/av/eicar.com")]
    check(bool(events), "no http event for the download in nfqscanctl detections")
    check(events[-1]["name"] in page, f"the page does not name {events[-1]['name']}")
    clean = curl_download(demo.lab, demo.nginx.url("/av/clean.bin"))
    check(clean["sha256"] == demo.clean_digest, "the clean file arrived altered")
    return (f"blocked: {events[-1]['name']} (event {events[-1].get('id')}, action "
            f"{events[-1]['action']}); clean file sha256 ok")


@step("mailav", "Mail antivirus: an EICAR attachment sent to Postfix with smtplib arrives "
                "as the notice; a clean message arrives byte-identical; POP3 and IMAP show "
                "the notice")
def mail_antivirus(demo: Demo) -> str:
    demo.daemon.wait_engines()
    attachment = base64.encodebytes(EICAR).decode().replace("\n", "\r\n")
    head = "From: Demo <demo@example.org>\r\nTo: alice@lab.test\r\nMIME-Version: 1.0\r\n"
    infected = (head + "Subject: invoice\r\n"
                'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
                "--b\r\nContent-Type: text/plain\r\n\r\nPlease pay the attached invoice.\r\n"
                '--b\r\nContent-Type: application/octet-stream; name="invoice.com"\r\n'
                'Content-Disposition: attachment; filename="invoice.com"\r\n'
                "Content-Transfer-Encoding: base64\r\n\r\n" + attachment + "--b--\r\n").encode()
    clean = mail_message("clean report", 200_000, seed=5)
    before = len(demo.postfix.messages(demo.USER))
    with NamespaceSMTP(demo.lab.client, demo.lab.server_address(4), 25) as smtp:
        for message in (infected, clean):
            smtp.sendmail("demo@example.org", [demo.postfix.address(demo.USER)], message)
    delivered = demo.postfix.wait_for_delivery(demo.USER, before + 2)[before:]
    by_subject = {email.message_from_bytes(d)["Subject"]: d for d in delivered}
    notice = by_subject.get("invoice", b"")
    check(bool(notice), f"the infected message was not delivered: {list(by_subject)}")
    check(EICAR not in notice and b"invoice.com" in notice, "the attachment was not replaced")
    check(Postfix.as_sent(by_subject.get(clean_subject(clean), b"")) == clean,
          "the clean message arrived altered")
    body = Postfix.body(notice).decode(errors="replace")
    print("   what alice's mailbox holds instead of the attachment:", flush=True)
    print("\n".join("   | " + line for line in body.splitlines()[:14]), flush=True)
    retrieved = pop3_retrieve(demo.lab, demo.lab.server_address(4), 110, demo.USER,
                              demo.PASSWORD)
    read = [m for m in retrieved if b"Subject: invoice" in m]
    check(len(read) == 1 and b"X-Nfqscan-Virus" in read[0] and EICAR not in read[0],
          "POP3 did not return the notice")
    fetched = imap_fetch(demo.lab, demo.lab.server_address(6), 143, demo.USER, demo.PASSWORD)
    read = [m for m in fetched if b"Subject: invoice" in m]
    check(len(read) == 1 and b"X-Nfqscan-Virus" in read[0] and EICAR not in read[0],
          "IMAP did not return the notice")
    events = [e for e in demo.daemon.detections(20) if e.get("protocol") == "smtp"]
    check(bool(events), "no smtp event in nfqscanctl detections")
    return (f"replaced: {events[-1]['name']} (event {events[-1].get('id')}); clean message "
            "byte-identical; POP3 (poplib) and IMAP over IPv6 (imaplib) show the notice")


@step("ftpav", "FTP antivirus: EICAR downloaded with curl (passive, EPSV) gets the drop "
                "message and 550; a clean 2 MB file (active, EPRT) arrives byte-identical")
def ftp_antivirus(demo: Demo) -> str:
    demo.daemon.wait_engines()
    url = demo.vsftpd.url("/pub/eicar.com")
    got = curl_ftp(demo.lab, url)
    print(f"   curl {url} -> exit {got['exit']}, {len(got['body'])} bytes on the data "
          "connection:", flush=True)
    text = got["body"].decode("utf-8", errors="replace")
    print("\n".join("   | " + line for line in text.splitlines()[:14]), flush=True)
    final = got["transfer_reply"] or "(none)"
    print(f"   control channel after the transfer: {final}", flush=True)
    check(EICAR not in got["body"], "the EICAR bytes reached the client")
    check(final.startswith("550"), f"the control channel said {final!r}, not 550")
    events = [e for e in demo.daemon.detections(20)
              if e.get("protocol") == "ftp" and e.get("object", "").endswith("eicar.com")]
    check(bool(events), "no ftp event for the download in nfqscanctl detections")
    check(events[-1]["name"] in text, f"the drop message does not name {events[-1]['name']}")
    clean = curl_ftp(demo.lab, demo.vsftpd.url("/pub/report.bin"), "--ftp-port", "-")
    check(clean["exit"] == 0 and clean["sha256"] == demo.ftp_clean_digest,
          f"the clean file arrived altered (curl exit {clean['exit']})")
    return (f"dropped: {events[-1]['name']} (event {events[-1].get('id')}, action "
            f"{events[-1]['action']}); clean file sha256 ok")


def clean_subject(message: bytes) -> str:
    return email.message_from_bytes(message)["Subject"]


def _terminate(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def hold(demo: Demo) -> None:
    lab, daemon = demo.lab, demo.daemon
    print(f"""
== the lab stays up until Ctrl-C. Namespaces: {lab.client.name} {lab.router.name} \
{lab.server.name}; files and logs: {lab.dir}
   ip netns exec {lab.client.name} curl -o /dev/null http://203.0.113.2/download.bin
   ip netns exec {lab.client.name} curl -g -o /dev/null http://[2001:db8:2::2]/download.bin
   ip netns exec {lab.client.name} curl -0 http://203.0.113.2:{demo.REWRITE_PORT}/stream/tokens.txt | head -c 400
   ip netns exec {lab.client.name} curl -i http://203.0.113.2/av/eicar.com     (the block page)
   ip netns exec {lab.client.name} curl -u {demo.USER}:{demo.PASSWORD} pop3://203.0.113.2/1
   ip netns exec {lab.client.name} curl -u {demo.USER}:{demo.PASSWORD} 'imap://203.0.113.2/INBOX;UID=1'
   ip netns exec {lab.client.name} curl -v -u {demo.USER}:{demo.PASSWORD} ftp://203.0.113.2/pub/eicar.com   (the drop message, 550)
   {daemon.ctl_command()} status      (or flows, --json)
   {daemon.ctl_command()} scan FILE   (or engines, detections, reload)""", flush=True)
    try:
        while daemon.alive():
            time.sleep(1)
        print(f"nfqscand exited with {daemon.process.returncode}")
    except KeyboardInterrupt:
        print("\n== tearing down")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--step", action="append", choices=[s[0] for s in STEPS],
                        help="run only these steps (default: all)")
    parser.add_argument("--no-steps", action="store_true", help="run no step")
    parser.add_argument("--hold", action="store_true",
                        help="keep the lab up until Ctrl-C (for poking at it by hand)")
    args = parser.parse_args()
    steps = [] if args.no_steps else [s for s in STEPS if not args.step or s[0] in args.step]
    signal.signal(signal.SIGTERM, _terminate)

    failures = step_failures = 0
    print("== starting the lab: client 198.51.100.2 / 2001:db8:1::2 — router — "
          "server 203.0.113.2 / 2001:db8:2::2", flush=True)
    with Lab() as lab:
        try:
            demo = Demo(lab)
        except Exception:
            traceback.print_exc()
            print(lab.process_logs())
            return 1
        print(f"== nfqscand running on the router (pid {demo.daemon.status()['pid']}), "
              f"config {demo.daemon.config_path}", flush=True)
        for number, (name, title, fn) in enumerate(steps, 1):
            print(f"\n-- {number}. {title}", flush=True)
            try:
                print(f"   ok: {fn(demo)}", flush=True)
            except Exception as exc:
                step_failures += 1
                print(f"   FAILED: {type(exc).__name__}: {exc}", flush=True)
        if args.hold:
            hold(demo)
        demo.daemon.wait_queues_idle()
        print("\n== nfqscanctl status\n")
        print(demo.daemon.ctl("status").stdout.decode(), flush=True)
        print("== nfqscanctl flows\n")
        print(demo.daemon.ctl("flows").stdout.decode(), flush=True)
        failures += step_failures
        rc = demo.daemon.stop()
        if rc != 0:
            failures += 1
            print(f"nfqscand exited with {rc} on SIGTERM")
        if failures:
            print(lab.process_logs())
    print(f"== lab torn down; {len(steps) - step_failures} of {len(steps)} steps ok")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

"""The quarantine (issue 11) through nfqscand, with real servers (Postfix,
nginx, http_server.py, vsftpd) and real clients (smtplib, curl, ftplib):

- an infected SMTP mail (rejected), an infected HTTP download (Content-Length
  and chunked) and an infected FTP download each become an entry with their
  metadata; `nfqscanctl quarantine export` gives back exactly the bytes that
  were sent (the message dot-unstuffed, the body de-chunked, the file);
- the event log line of each carries the entry's id;
- `quarantine release` delivers the SMTP original to the recipient's Maildir
  through [notify] relay (Postfix); an HTTP entry cannot be released;
- `quarantine delete` removes an entry; ids that try to leave the folder are
  refused;
- max_size removes the oldest entries first;
- a quarantine on a full filesystem (a small tmpfs) never blocks traffic:
  the block page still comes, clean downloads still work, the failed write
  is counted.

The folder is the daemon's (nfqscan), 0700, its files 0600."""

from __future__ import annotations

import json
import os
import pwd
import stat
import subprocess

import pytest

from clients import curl_fetch
from ftp_clients import ftp_session, retr
from http_corpus import EICAR, Corpus
from lab import REPO, wait_until
from servers import HttpLabServer, Nginx, Postfix, Vsftpd
from test_http_av import same_url
from test_smtp_av import SENDER, infected_messages, send, session
from test_spam import SPAM_MARKER
from test_spam import message as spam_body_message
from test_spam import reconfigure as spam_reconfigure

SCAN = {"clamav_db_dirs": [str(REPO / "rules" / "clamav")],
        "yara_rule_dirs": [str(REPO / "rules" / "yara")], "pool_threads": 2}


@pytest.fixture(scope="module")
def corpus():
    return Corpus()


@pytest.fixture
def quarantined(lab, nfqscand):
    """Factory: nfqscand with the project's signatures and a quarantine in
    its own folder (or `folder`), `quarantine` merged into [quarantine];
    returns (daemon, folder) once the engines are loaded."""

    def start(quarantine: dict | None = None, protocols: dict | None = None,
              notify: dict | None = None, folder=None):
        folder = folder or lab.dir / "nfqscand" / "quarantine"
        overrides = {"scan": dict(SCAN),
                     "quarantine": {"dir": str(folder), **(quarantine or {})}}
        if protocols:
            overrides["protocols"] = protocols
        if notify:
            overrides["notify"] = notify
        daemon = nfqscand(overrides)
        daemon.wait_engines()
        return daemon, folder

    return start


def entries(daemon, *args) -> list[dict]:
    return json.loads(daemon.ctl("quarantine", "list", "--json", *args).stdout)


def wait_entries(daemon, count: int, *args, timeout: float = 20.0) -> list[dict]:
    """The list once it has `count` entries (the quarantine writes on a
    thread of its own: an entry appears shortly after its verdict)."""
    return wait_until(lambda: (lambda e: e if len(e) >= count else None)(entries(daemon, *args)),
                      timeout, f"{count} quarantine entries")


def spam_message(subject: str) -> bytes:
    """A message the project's YARA spam rule (category = "spam") matches."""
    return spam_body_message(subject, b"cheap offer " + SPAM_MARKER)


def quarantine_status(daemon) -> dict:
    return daemon.status()["quarantine"]


def exported(daemon, lab, entry_id: str) -> bytes:
    path = lab.dir / f"export-{entry_id}"
    daemon.ctl("quarantine", "export", entry_id, str(path), timeout=60)
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == 0o600, oct(mode)
        return path.read_bytes()
    finally:
        path.unlink()


def event_of(daemon, entry_id: str) -> dict:
    events = [e for e in daemon.detections(200) if e.get("id") == entry_id]
    assert len(events) == 1, daemon.detections(200)
    return events[0]


def assert_owned_by_the_daemon(daemon, folder) -> None:
    account = pwd.getpwnam(daemon.user())
    st = folder.stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (account.pw_uid, 0o700), st
    for f in folder.iterdir():
        st = f.stat()
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (account.pw_uid, 0o600), (f, st)


# -- SMTP -------------------------------------------------------------------------

def test_infected_smtp_mail_is_kept_exported_identical_and_released_to_the_maildir(
        lab, quarantined, mail_servers):
    postfix = mail_servers.postfix
    daemon, folder = quarantined(protocols={"smtp": {"on_virus": "reject"}},
                                 notify={"relay": f"{lab.server_address(4)}:25"})
    message = infected_messages()["base64"]
    # A line starting with a dot: dot-stuffed on the wire, kept unstuffed.
    message = message.replace(b"Please find the file attached.\r\n",
                              b"Please find the file attached.\r\n.hidden line\r\n")
    with session(lab, 4, 25) as smtp:
        code, _ = send(smtp, mail_servers.address("alice"), message)
        assert code == 550
    entry, = wait_entries(daemon, 1)
    assert entry["protocol"] == "smtp" and entry["action"] == "reject", entry
    assert entry["sender"] == f"<{SENDER}>", entry
    assert entry["recipients"] == [mail_servers.address("alice")], entry
    assert entry["subject"] == "base64 attachment", entry
    assert entry["verdict"]["verdict"] == "infected", entry
    assert entry["size"] == len(message), entry
    assert event_of(daemon, entry["id"])["quarantine"] == entry["id"]
    assert exported(daemon, lab, entry["id"]) == message
    assert postfix.messages("alice") == []
    assert_owned_by_the_daemon(daemon, folder)

    shown = daemon.ctl("quarantine", "show", entry["id"]).stdout.decode()
    assert "base64 attachment" in shown and SENDER in shown, shown

    out = daemon.ctl("quarantine", "release", entry["id"], timeout=60).stdout.decode()
    assert "released" in out, out
    got, = postfix.wait_for_delivery("alice", 1)
    assert Postfix.body(got) == Postfix.body(message).replace(b"\r\n", b"\n")
    assert b"Subject: base64 attachment" in got
    status = quarantine_status(daemon)
    assert status["released"] == 1 and status["written"] == 1, status
    assert f"quarantine: {entry['id']} released" in daemon.log_text()
    table = daemon.ctl("status").stdout.decode()
    assert f"quarantine {folder}: 1 entries" in table, table


def test_rejected_and_dropped_spam_are_kept_and_tagged_spam_is_not(lab, quarantined, mail_servers):
    """Spam that reaches no receiver (on_spam reject, drop) is kept like a
    blocked virus; tagged spam is delivered, so nothing is kept."""
    postfix = mail_servers.postfix
    alice = mail_servers.address("alice")
    daemon, _ = quarantined(protocols={"smtp": {"on_spam": "reject"}})
    spam = spam_message("rejected spam")
    with session(lab, 4, 25) as smtp:
        code, _ = send(smtp, alice, spam)
        assert code == 550
    entry, = wait_entries(daemon, 1)
    assert entry["protocol"] == "smtp" and entry["action"] == "reject", entry
    assert entry["verdict"]["category"] == "spam", entry
    assert entry["subject"] == "rejected spam", entry
    assert exported(daemon, lab, entry["id"]) == spam
    assert event_of(daemon, entry["id"])["quarantine"] == entry["id"]

    spam_reconfigure(daemon, {"protocols": {"smtp": {"on_spam": "drop"}}})
    dropped = spam_message("dropped spam")
    with session(lab, 6, 25) as smtp:
        code, _ = send(smtp, alice, dropped)
        assert code == 250
    newest = wait_entries(daemon, 2)[0]
    assert newest["action"] == "drop" and newest["subject"] == "dropped spam", newest
    assert exported(daemon, lab, newest["id"]) == dropped

    spam_reconfigure(daemon, {"protocols": {"smtp": {"on_spam": "tag"}}})
    with session(lab, 4, 25) as smtp:
        assert send(smtp, alice, spam_message("tagged spam"))[0] == 250
    tagged, = postfix.wait_for_delivery("alice", 1)
    assert b"[SPAM] tagged spam" in tagged
    assert len(entries(daemon)) == 2, entries(daemon)
    assert quarantine_status(daemon)["written"] == 2


# -- HTTP -------------------------------------------------------------------------

def test_infected_http_downloads_are_kept_byte_identical_and_cannot_be_released(
        lab, quarantined, corpus):
    nginx = Nginx(lab, ports=[80])
    nginx.add_file("infected/eicar.zip", corpus.infected("eicar.zip").data)
    nginx.add_file("clean/eicar.zip", corpus.clean("eicar.zip").data)
    framed = HttpLabServer(lab, ports=[8080])
    framed.add_file("eicar.txt", corpus.infected("eicar.txt").data)
    daemon, folder = quarantined()

    url = nginx.url("/infected/eicar.zip", family=4)
    got = curl_fetch(lab, url)
    assert got["http_code"] == 403, got["http_code"]
    chunked_url = framed.url("/chunked/eicar.txt", family=6)
    got = curl_fetch(lab, chunked_url)
    assert got["http_code"] == 403, got["http_code"]
    got = curl_fetch(lab, nginx.url("/clean/eicar.zip", family=4))
    assert got["sha256"] == corpus.clean("eicar.zip").sha256

    chunked, plain = wait_entries(daemon, 2, "--protocol", "http")
    assert same_url(plain["object"], url) and plain["action"] == "block", plain
    assert plain["direction"] == "download", plain
    assert exported(daemon, lab, plain["id"]) == corpus.infected("eicar.zip").data
    assert chunked["object"].endswith("/chunked/eicar.txt"), chunked
    assert exported(daemon, lab, chunked["id"]) == corpus.infected("eicar.txt").data
    for e in (plain, chunked):
        assert event_of(daemon, e["id"])["quarantine"] == e["id"]
    assert entries(daemon, "--protocol", "smtp") == []
    assert len(entries(daemon, "--since", "1h")) == 2

    refused = daemon.ctl("quarantine", "release", plain["id"], check=False)
    assert refused.returncode == 1
    assert b"only SMTP mail can be released" in refused.stderr, refused.stderr
    for bad in ("../../etc/passwd", "..", "a/b"):
        r = daemon.ctl("quarantine", "show", bad, check=False)
        assert r.returncode == 1 and b"not a quarantine id" in r.stderr, r.stderr

    daemon.ctl("quarantine", "delete", plain["id"])
    assert [e["id"] for e in entries(daemon)] == [chunked["id"]]
    assert not (folder / f"{plain['id']}.data").exists()
    assert_owned_by_the_daemon(daemon, folder)


def test_max_size_removes_the_oldest_entries_first(lab, quarantined):
    server = HttpLabServer(lab, ports=[80])
    # ~450 KiB each, EICAR inside (the project's YARA rule finds it anywhere).
    bodies = {f"big{i}.bin": os.urandom(450 << 10) + EICAR + bytes([i]) for i in range(4)}
    for name, body in bodies.items():
        server.add_file(name, body)
    daemon, _ = quarantined({"max_size": "1M"})
    for i, name in enumerate(bodies):
        got = curl_fetch(lab, server.url(f"/cl/{name}", family=4))
        assert got["http_code"] == 403, got["http_code"]
        wait_until(lambda: quarantine_status(daemon)["written"] == i + 1, 20,
                   f"entry {i + 1} written")
    kept = entries(daemon)
    assert [e["object"].rsplit("/", 1)[1] for e in kept] == ["big3.bin", "big2.bin"], kept
    status = quarantine_status(daemon)
    assert status["evicted"] == 2 and status["entries"] == 2, status
    assert status["bytes"] <= 1 << 20, status
    assert exported(daemon, lab, kept[0]["id"]) == bodies["big3.bin"]


def test_a_full_disk_never_blocks_traffic_and_is_counted(lab, quarantined, corpus):
    folder = lab.dir / "small-tmpfs"
    folder.mkdir()
    account = pwd.getpwnam("nfqscan")
    subprocess.run(["mount", "-t", "tmpfs", "-o",
                    f"size=256k,mode=0700,uid={account.pw_uid},gid={account.pw_gid}",
                    "tmpfs", str(folder)], check=True)
    try:
        server = HttpLabServer(lab, ports=[80])
        big = os.urandom(600 << 10) + EICAR
        server.add_file("big.bin", big)
        server.add_file("eicar.txt", corpus.infected("eicar.txt").data)
        server.add_file("clean.txt", corpus.clean("eicar.txt").data)
        daemon, _ = quarantined(folder=folder)
        for _ in range(3):
            got = curl_fetch(lab, server.url("/cl/big.bin", family=4))
            assert got["http_code"] == 403, got["http_code"]
            got = curl_fetch(lab, server.url("/chunked/clean.txt", family=4))
            assert got["http_code"] == 200 and got["body"] == corpus.clean("eicar.txt").data
        wait_until(lambda: quarantine_status(daemon)["write_failures"] == 3, 20,
                   "three failed writes counted")
        # What fits is still kept.
        got = curl_fetch(lab, server.url("/cl/eicar.txt", family=4))
        assert got["http_code"] == 403
        entry, = wait_entries(daemon, 1)
        assert exported(daemon, lab, entry["id"]) == corpus.infected("eicar.txt").data
        assert "not kept" in daemon.log_text()
        assert not [f for f in folder.iterdir() if f.name.startswith(".tmp-")]
    finally:
        # Lazily: the daemon (stopped by the lab afterwards) may still hold it.
        subprocess.run(["umount", "-l", str(folder)], check=False)


# -- FTP --------------------------------------------------------------------------

def test_infected_ftp_download_is_kept_byte_identical(lab, quarantined, corpus):
    vsftpd = Vsftpd(lab, ports=(21,), users={"alice": "wonderland"})
    vsftpd.add_file("infected/eicar.zip", corpus.infected("eicar.zip").data)
    daemon, _ = quarantined()
    with ftp_session(lab, 4, 21, "alice", "wonderland") as ftp:
        data, reply = retr(ftp, "infected/eicar.zip")
        assert reply.startswith("550"), reply
        assert data != corpus.infected("eicar.zip").data
    entry, = wait_entries(daemon, 1, "--protocol", "ftp")
    assert entry["object"].endswith("infected/eicar.zip") and entry["action"] == "block", entry
    assert entry["file_name"] == "eicar.zip", entry
    assert exported(daemon, lab, entry["id"]) == corpus.infected("eicar.zip").data
    assert event_of(daemon, entry["id"])["quarantine"] == entry["id"]

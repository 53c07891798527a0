"""IMAP antivirus through nfqscand (issue 10): a FETCH literal that carries
a whole message (BODY[], BODY.PEEK[], RFC822) is an object, held until its
verdict. Infected: the client gets the original header and the notice as
the literal, its length rewritten; never the malware. Clean: byte-identical,
also right after a replaced one in the same FETCH, also at 10 MB and under
loss. A partial fetch is the `partial` category.

Servers: Dovecot (IMAP on 143, which rules/nfqscan.toml lists, and 1143,
which it does not: the probe finds it), messages put straight into its
Maildir. Clients: Python's imaplib and curl in the client namespace. The
messages are those of test_pop3_av."""

from __future__ import annotations

import base64
import re

import pytest

from clients import mail_message
from http_corpus import EICAR, EICAR_NAMES
from mail_clients import NamespaceIMAP4, imap_fetch
from servers import Dovecot, SmtpSink
from test_pop3_av import (NOTICE, PASSWORD, USER, assert_replaced, infected_messages,
                          served)
from test_smtp_av import assert_read_as_judged, deliver_samples
from test_stream_rewrite import LOSS

STANDARD_PORT, ODD_PORT = 143, 1143
ROUTES = [pytest.param((4, STANDARD_PORT), id="ipv4"), pytest.param((6, STANDARD_PORT), id="ipv6"),
          pytest.param((4, ODD_PORT), id=f"ipv4-port{ODD_PORT}"),
          pytest.param((6, ODD_PORT), id=f"ipv6-port{ODD_PORT}")]
FAMILIES = [pytest.param(4, id="ipv4"), pytest.param(6, id="ipv6")]


def imap_events(daemon) -> list[dict]:
    return [e for e in daemon.detections(200) if e.get("protocol") == "imap"]


def imap_counters(status: dict) -> dict:
    section = status.get("protocols", {}).get("imap", {})
    return {"scanned": int(section.get("objects", 0)), "clean": int(section.get("clean", 0)),
            "infected": int(section.get("infected", 0))}


@pytest.fixture
def dovecot(lab):
    return Dovecot(lab, pop3_ports=(), imap_ports=(STANDARD_PORT, ODD_PORT),
                   users={USER: PASSWORD})


@pytest.fixture
def imap_av(mail_av):
    """Factory: nfqscand (conftest's mail_av) with [protocols.imap] `imap`."""

    def start(imap: dict | None = None, limits: dict | None = None, notify: dict | None = None):
        return mail_av({"imap": imap} if imap else None, limits, notify)

    return start


@pytest.mark.parametrize("route", ROUTES)
def test_imap_infected_messages_are_replaced_and_the_next_clean_one_is_intact(
        lab, dovecot, imap_av, route):
    family, port = route
    samples = infected_messages()
    clean = mail_message("clean after infected", 30_000, seed=5)
    order = []
    for name, message in samples.items():
        dovecot.deliver(USER, message)
        dovecot.deliver(USER, clean)
        order += [name, "clean"]
    daemon = imap_av()

    for item in ("BODY.PEEK[]", "RFC822"):
        got = imap_fetch(lab, lab.server_address(family), port, USER, PASSWORD, item=item)
        assert len(got) == len(order), item
        for name, fetched in zip(order, got):
            if name == "clean":
                assert fetched == served(clean), f"{item}: a clean message changed"
            else:
                assert_replaced(fetched, samples[name], f"{item} {name}")
    blocked = [e for e in imap_events(daemon) if e.get("action") == "replace"]
    assert len(blocked) == 2 * len(samples), imap_events(daemon)
    assert all(e["name"] in EICAR_NAMES for e in blocked), blocked
    # The inspector's own counters (ImapCounters), summed over both sessions.
    own = daemon.status()["protocols"]["imap"]["inspector"]
    assert own["messages_scanned"] == 2 * len(order), own
    assert own["messages_blocked"] == 2 * len(samples) and own["partial"] == 0, own


@pytest.mark.parametrize("family", FAMILIES)
def test_imap_strip_replaces_only_the_infected_attachment(lab, dovecot, imap_av, family):
    dovecot.deliver(USER, infected_messages()["base64"])
    imap_av({"on_virus": "strip"})

    got, = imap_fetch(lab, lab.server_address(family), STANDARD_PORT, USER, PASSWORD,
                      item="BODY[]")

    assert EICAR not in got
    assert b"Please find the document attached.\r\nRegards\r\n" in got, got
    assert b"X-Nfqscan-Action: strip" in got and NOTICE in got, got


@pytest.mark.parametrize("family", FAMILIES)
def test_imap_curl_gets_the_notice(lab, dovecot, imap_av, family):
    message = infected_messages()["quoted-printable"]
    dovecot.deliver(USER, message)
    imap_av()

    proc = lab.curl(lab.url("imap", ODD_PORT, "/INBOX;UID=1", family), "--user",
                    f"{USER}:{PASSWORD}")

    assert_replaced(proc.stdout, message, "curl FETCH")


@pytest.mark.parametrize("family", FAMILIES)
def test_imap_10mb_clean_message_is_byte_identical_under_loss(lab, dovecot, imap_av, family):
    big = mail_message("ten megabytes", 10 * 1024 * 1024, seed=11)
    dovecot.deliver(USER, big)
    daemon = imap_av()
    lab.add_tcp_loss(LOSS)

    got, = imap_fetch(lab, lab.server_address(family), STANDARD_PORT, USER, PASSWORD,
                      timeout=120)

    assert got == served(big), "the 10 MB message changed on its way"
    assert lab.tcp_loss_drops() > 0, "the loss rules dropped nothing"
    assert not imap_events(daemon)
    assert imap_counters(daemon.status())["scanned"] >= 1


@pytest.mark.parametrize("family", FAMILIES)
def test_imap_infected_message_is_replaced_under_loss(lab, dovecot, imap_av, family):
    samples = infected_messages()
    dovecot.deliver(USER, samples["zip"])
    imap_av()
    lab.add_tcp_loss(LOSS, injected=True)

    got, = imap_fetch(lab, lab.server_address(family), STANDARD_PORT, USER, PASSWORD,
                      timeout=120)

    assert_replaced(got, samples["zip"], "zip under loss")


def test_imap_partial_fetch_falls_back_and_whole_answers_are_scanned(lab, dovecot, imap_av):
    message = infected_messages()["plain"]
    dovecot.deliver(USER, message)
    daemon = imap_av()
    client = NamespaceIMAP4(lab.client, lab.server_address(4), STANDARD_PORT)
    try:
        client.login(USER, PASSWORD)
        client.select("INBOX")
        # A range shorter than the message: partial, passed and logged.
        typ, data = client.fetch("1", "(BODY.PEEK[]<0.100>)")
        assert typ == "OK" and len(data[0][1]) == 100, data
        # A range longer than the message: the whole message, scanned.
        typ, data = client.fetch("1", "(BODY.PEEK[]<0.100000>)")
        assert typ == "OK", data
        assert EICAR not in data[0][1] and NOTICE in data[0][1], data[0][1][:400]
        # Headers only: neither scanned nor logged.
        typ, data = client.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert typ == "OK" and b"Subject: plain eicar" in data[0][1], data
    finally:
        client.logout()
    events = imap_events(daemon)
    partial = [e for e in events if e.get("category") == "partial"]
    assert len(partial) == 1 and partial[0]["action"] == "pass", events
    own = daemon.status()["protocols"]["imap"]["inspector"]
    assert own["partial"] == 1 and own["messages_scanned"] == 1, own
    assert [e["action"] for e in events if e.get("verdict") == "infected"] == ["replace"], events


def test_imap_too_big_message_passes_tagged(lab, dovecot, imap_av):
    big = mail_message("too big", 200_000, seed=14)
    dovecot.deliver(USER, big)
    imap_av({"notify_recipient_on_error_pass": True}, limits={"max_content_size": "64K"})

    got, = imap_fetch(lab, lab.server_address(6), ODD_PORT, USER, PASSWORD, item="BODY[]")

    assert re.search(rb"Subject: \*\*\*UNCHECKED\*\*\* too big\r\n", got), got[:800]
    assert got.endswith(big.split(b"\r\n\r\n", 1)[1])


def stored_messages(dovecot: Dovecot) -> list[bytes]:
    """The messages in the user's Maildir, line ends as CRLF."""
    maildir = dovecot.dir / "home" / USER / "Maildir"
    files = [p for sub in ("new", "cur") for p in (maildir / sub).iterdir()]
    return [p.read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n") for p in files]


@pytest.mark.parametrize("family", FAMILIES)
def test_imap_append_of_an_infected_message_is_stored_replaced(lab, dovecot, imap_av, family):
    bad = infected_messages()["base64"]
    good = mail_message("clean upload", 20_000, seed=21)
    daemon = imap_av()
    client = NamespaceIMAP4(lab.client, lab.server_address(family), ODD_PORT)
    try:
        client.login(USER, PASSWORD)
        typ, data = client.append("INBOX", None, None, bad)
        assert typ == "OK", data
        typ, data = client.append("INBOX", None, None, good)
        assert typ == "OK", data
    finally:
        client.logout()

    stored = stored_messages(dovecot)
    assert len(stored) == 2, stored
    replaced = [m for m in stored if b"Subject: base64 eicar" in m]
    assert len(replaced) == 1, stored
    assert EICAR not in replaced[0] and b64_eicar() not in replaced[0]
    assert NOTICE in replaced[0], replaced[0][:1500]
    assert good in stored, "a clean upload was stored changed"
    events = [e for e in imap_events(daemon) if e.get("action") == "replace"]
    assert len(events) == 1 and events[0]["object"].startswith("APPEND"), imap_events(daemon)


def b64_eicar() -> bytes:
    return base64.b64encode(EICAR)


@pytest.mark.parametrize("action,family", [("replace", 6), ("strip", 4), ("pass", 6)])
def test_imap_every_encoding_of_eicar_and_clam_exe_under_each_action(lab, dovecot, imap_av,
                                                                     action, family):
    """The samples of test_smtp_av (EICAR and clam.exe in every encoding,
    zipped, forwarded), each followed by a clean message, in one FETCH 1:*
    BODY.PEEK[]: each judged per on_virus, each clean one byte-identical."""
    samples, order, clean = deliver_samples(lambda m: dovecot.deliver(USER, m))
    daemon = imap_av({"on_virus": action})

    got = imap_fetch(lab, lab.server_address(family), ODD_PORT, USER, PASSWORD)

    assert_read_as_judged(got, samples, order, clean, action, imap_events(daemon))


def test_imap_sender_is_notified_on_virus_and_on_error_drop(lab, dovecot, imap_av):
    """notify_sender_on_virus tells the Return-Path of an infected message;
    notify_sender_on_error_drop the From of one too big to scan whose
    fallback blocks it. Both arrive at a second SMTP server (the sink)."""
    sink = SmtpSink(lab)
    infected = b"Return-Path: <owner@lists.example.org>\r\n" + infected_messages()["zip"]
    big = mail_message("too big to scan", 200_000, seed=31)  # From: sender@example.org
    dovecot.deliver(USER, infected)
    dovecot.deliver(USER, big)
    daemon = imap_av({"notify_sender_on_virus": True, "notify_sender_on_error_drop": True,
                      "fallback": {"content-size": "block"}},
                     limits={"max_content_size": "64K"},
                     notify={"relay": sink.relay, "from": "scanner@lab.test"})

    got = imap_fetch(lab, lab.server_address(6), STANDARD_PORT, USER, PASSWORD)

    assert len(got) == 2 and all(NOTICE in m for m in got), [m[:300] for m in got]
    notes = sink.wait_for_messages(2)
    by_rcpt = {tuple(n["rcpt_to"]): n for n in notes}
    assert set(by_rcpt) == {("owner@lists.example.org",), ("sender@example.org",)}, notes
    assert b"Subject: zipped eicar" in by_rcpt[("owner@lists.example.org",)]["data"]
    too_big = by_rcpt[("sender@example.org",)]["data"]
    assert b"Subject: too big to scan" in too_big and b"content-size" in too_big, too_big[:2000]
    assert daemon.status()["notify"]["sent"] == 2

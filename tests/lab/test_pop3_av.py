"""POP3 antivirus through nfqscand (issue 10): every RETR (and TOP) response
is an object, held whole until its verdict. Infected: the client gets the
message with the original header and the notice as body (replace), or with
only the infected parts replaced (strip); never the malware. Clean: the
message arrives byte-identical, also right after a replaced one in the same
session, also at 10 MB and under loss. A message larger than
max_content_size falls back (content-size): pass with the Subject tagged
(notify_recipient_on_error_pass), or the notice.

Servers: Dovecot (POP3 on 110, which rules/nfqscan.toml lists, and 1110,
which it does not: the probe finds it), messages put straight into its
Maildir. Clients: Python's poplib and curl in the client namespace."""

from __future__ import annotations

import base64
import quopri

import pytest

from clients import mail_message
from http_corpus import EICAR, EICAR_NAMES, zip_bytes
from mail_clients import NamespacePOP3, pop3_retrieve
from servers import Dovecot, SmtpSink
from test_smtp_av import assert_read_as_judged, deliver_samples
from test_stream_rewrite import LOSS

USER, PASSWORD = "alice", "wonderland"
STANDARD_PORT, ODD_PORT = 110, 1110
ROUTES = [pytest.param((4, STANDARD_PORT), id="ipv4"), pytest.param((6, STANDARD_PORT), id="ipv6"),
          pytest.param((4, ODD_PORT), id=f"ipv4-port{ODD_PORT}"),
          pytest.param((6, ODD_PORT), id=f"ipv6-port{ODD_PORT}")]
FAMILIES = [pytest.param(4, id="ipv4"), pytest.param(6, id="ipv6")]
NOTICE = b"This message was changed by nfqscan"


# -- messages -----------------------------------------------------------------

def header(subject: str, extra: str = "") -> str:
    return ("From: Mallory <mallory@example.org>\r\nTo: Alice <alice@example.org>\r\n"
            f"Subject: {subject}\r\nMessage-ID: <{subject.replace(' ', '.')}@lab.example.org>\r\n"
            "Date: Mon, 20 Nov 2023 10:00:00 +0000\r\nMIME-Version: 1.0\r\n" + extra)


TEXT_PART = ("--frontier\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
             "Please find the document attached.\r\nRegards\r\n")


def with_attachment(subject: str, name: str, content_type: str, encoding: str,
                    encoded: bytes) -> bytes:
    return (header(subject, 'Content-Type: multipart/mixed; boundary="frontier"\r\n\r\n')
            + TEXT_PART
            + f"--frontier\r\nContent-Type: {content_type}\r\n"
              f"Content-Transfer-Encoding: {encoding}\r\n"
              f'Content-Disposition: attachment; filename="{name}"\r\n\r\n').encode() \
        + encoded + b"\r\n--frontier--\r\n"


def b64_lines(data: bytes) -> bytes:
    text = base64.b64encode(data)
    return b"\r\n".join(text[i:i + 76] for i in range(0, len(text), 76))


def qp_split(data: bytes) -> bytes:
    """Quoted-printable with soft line breaks every 20 characters: the
    string is never whole in the transfer form."""
    encoded = quopri.encodestring(data).rstrip(b"\n")
    return b"=\r\n".join(encoded[i:i + 20] for i in range(0, len(encoded), 20))


def infected_messages() -> dict[str, bytes]:
    return {
        "plain": (header("plain eicar", "Content-Type: text/plain\r\n\r\n")
                  + "Hello\r\n").encode() + EICAR + b"\r\n",
        "base64": with_attachment("base64 eicar", "eicar.com", "application/octet-stream",
                                  "base64", b64_lines(EICAR)),
        "quoted-printable": with_attachment("qp eicar", "eicar.txt", "text/plain",
                                            "quoted-printable", qp_split(EICAR)),
        "zip": with_attachment("zipped eicar", "eicar.zip", "application/zip", "base64",
                               b64_lines(zip_bytes([("eicar.com", EICAR)]))),
    }


def served(message: bytes) -> bytes:
    """What poplib gives back for a message stored with CRLF line ends."""
    return message if message.endswith(b"\r\n") else message + b"\r\n"


# -- what the daemon reports --------------------------------------------------

def pop3_counters(status: dict) -> dict:
    section = status.get("protocols", {}).get("pop3", {})
    return {"flows": int(section.get("flows", 0)), "scanned": int(section.get("objects", 0)),
            "clean": int(section.get("clean", 0)), "infected": int(section.get("infected", 0)),
            "errors": dict(section.get("errors", {}) or {})}


def pop3_events(daemon) -> list[dict]:
    return [e for e in daemon.detections(200) if e.get("protocol") == "pop3"]


# -- fixtures -----------------------------------------------------------------

@pytest.fixture
def dovecot(lab):
    return Dovecot(lab, pop3_ports=(STANDARD_PORT, ODD_PORT), imap_ports=(),
                   users={USER: PASSWORD})


@pytest.fixture
def pop3_av(mail_av):
    """Factory: nfqscand (conftest's mail_av) with [protocols.pop3] `pop3`."""

    def start(pop3: dict | None = None, limits: dict | None = None, notify: dict | None = None):
        return mail_av({"pop3": pop3} if pop3 else None, limits, notify)

    return start


def assert_replaced(got: bytes, original: bytes, what: str) -> None:
    assert EICAR not in got, f"{what}: the client got the malware"
    assert got != served(original), f"{what}: delivered unchanged"
    head = original.split(b"\r\n\r\n", 1)[0]
    subject = next(line for line in head.split(b"\r\n") if line.startswith(b"Subject:"))
    assert subject in got, f"{what}: the original Subject is gone:\n{got[:600]!r}"
    assert NOTICE in got, f"{what}: no notice:\n{got[:1500]!r}"
    assert b"X-Nfqscan-Virus:" in got and b"X-Nfqscan-Event:" in got, got[:1500]


# -- tests --------------------------------------------------------------------

@pytest.mark.parametrize("route", ROUTES)
def test_pop3_infected_messages_are_replaced_and_the_next_clean_one_is_intact(
        lab, dovecot, pop3_av, route):
    family, port = route
    samples = infected_messages()
    clean = mail_message("clean after infected", 30_000, seed=5)
    order = []
    for name, message in samples.items():
        dovecot.deliver(USER, message)
        dovecot.deliver(USER, clean)
        order += [name, "clean"]
    daemon = pop3_av()

    got = pop3_retrieve(lab, lab.server_address(family), port, USER, PASSWORD)

    assert len(got) == len(order)
    for name, retrieved in zip(order, got):
        if name == "clean":
            assert retrieved == served(clean), "a clean message after a replaced one changed"
        else:
            assert_replaced(retrieved, samples[name], name)
    events = pop3_events(daemon)
    blocked = [e for e in events if e.get("action") == "replace"]
    assert len(blocked) == len(samples), events
    for e in blocked:
        assert e["verdict"] == "infected" and e["name"] in EICAR_NAMES, e
    status = daemon.status()
    counters = pop3_counters(status)
    assert counters["flows"] >= 1 and counters["infected"] >= len(samples), counters
    # The inspector's own counters (Pop3Counters), summed over flows.
    own = status["protocols"]["pop3"]["inspector"]
    assert own["messages_scanned"] == len(order) and own["messages_blocked"] == len(samples), own
    assert own["commands"] >= len(order) + 3 and own["protocol_errors"] == 0, own
    text = daemon.ctl("status").stdout.decode()
    assert f"pop3: commands {own['commands']}," in text, text


@pytest.mark.parametrize("family", FAMILIES)
def test_pop3_strip_replaces_only_the_infected_attachment(lab, dovecot, pop3_av, family):
    message = infected_messages()["base64"]
    dovecot.deliver(USER, message)
    daemon = pop3_av({"on_virus": "strip"})

    got, = pop3_retrieve(lab, lab.server_address(family), STANDARD_PORT, USER, PASSWORD)

    assert EICAR not in got and b64_lines(EICAR) not in got
    assert b"Please find the document attached.\r\nRegards\r\n" in got, got
    assert b"X-Nfqscan-Action: strip" in got, got
    assert NOTICE in got
    assert any(e.get("action") == "strip" for e in pop3_events(daemon))


@pytest.mark.parametrize("family", FAMILIES)
def test_pop3_curl_gets_the_notice(lab, dovecot, pop3_av, family):
    message = infected_messages()["zip"]
    dovecot.deliver(USER, message)
    pop3_av()

    proc = lab.curl(lab.url("pop3", ODD_PORT, "/1", family), "--user", f"{USER}:{PASSWORD}")

    assert_replaced(proc.stdout, message, "curl RETR")


@pytest.mark.parametrize("family", FAMILIES)
def test_pop3_10mb_clean_message_is_byte_identical_under_loss(lab, dovecot, pop3_av, family):
    big = mail_message("ten megabytes", 10 * 1024 * 1024, seed=11)
    small = mail_message("small", 2_000, seed=12)
    dovecot.deliver(USER, big)
    dovecot.deliver(USER, small)
    daemon = pop3_av()
    lab.add_tcp_loss(LOSS)

    got = pop3_retrieve(lab, lab.server_address(family), STANDARD_PORT, USER, PASSWORD,
                        timeout=120)

    assert got[0] == served(big), "the 10 MB message changed on its way"
    assert got[1] == served(small)
    assert lab.tcp_loss_drops() > 0, "the loss rules dropped nothing"
    assert not pop3_events(daemon), "clean messages were logged"
    counters = pop3_counters(daemon.status())
    assert counters["scanned"] >= 2 and counters["clean"] >= 2, counters


@pytest.mark.parametrize("family", FAMILIES)
def test_pop3_infected_message_is_replaced_under_loss(lab, dovecot, pop3_av, family):
    samples = infected_messages()
    clean = mail_message("clean under loss", 200_000, seed=13)
    dovecot.deliver(USER, samples["zip"])
    dovecot.deliver(USER, clean)
    pop3_av()
    lab.add_tcp_loss(LOSS, injected=True)

    got = pop3_retrieve(lab, lab.server_address(family), STANDARD_PORT, USER, PASSWORD,
                        timeout=120)

    assert_replaced(got[0], samples["zip"], "zip under loss")
    assert got[1] == served(clean)


def test_pop3_too_big_message_passes_tagged_when_the_fallback_passes(lab, dovecot, pop3_av):
    big = mail_message("too big", 200_000, seed=14)
    dovecot.deliver(USER, big)
    daemon = pop3_av({"notify_recipient_on_error_pass": True}, limits={"max_content_size": "64K"})

    got, = pop3_retrieve(lab, lab.server_address(4), STANDARD_PORT, USER, PASSWORD)

    assert b"Subject: ***UNCHECKED*** too big\r\n" in got, got[:800]
    body = big.split(b"\r\n\r\n", 1)[1]
    assert got.endswith(body), "the body changed"
    events = [e for e in pop3_events(daemon) if e.get("action") == "pass"]
    assert events and events[-1]["category"] == "content-size", pop3_events(daemon)


def test_pop3_too_big_message_gets_the_notice_when_the_fallback_blocks(lab, dovecot, pop3_av):
    big = mail_message("too big blocked", 200_000, seed=15)
    after = mail_message("after it", 1_000, seed=16)
    dovecot.deliver(USER, big)
    dovecot.deliver(USER, after)
    pop3_av({"fallback": {"content-size": "block"}}, limits={"max_content_size": "64K"})

    got = pop3_retrieve(lab, lab.server_address(6), ODD_PORT, USER, PASSWORD)

    assert b"Subject: too big blocked" in got[0] and NOTICE in got[0], got[0][:1500]
    assert len(got[0]) < 20_000, "the original body reached the client"
    assert got[1] == served(after)


def test_pop3_top_is_scanned_and_list_sizes_stay(lab, dovecot, pop3_av):
    message = infected_messages()["plain"]
    dovecot.deliver(USER, message)
    pop3_av()
    client = NamespacePOP3(lab.client, lab.server_address(4), STANDARD_PORT)
    try:
        client.user(USER)
        client.pass_(PASSWORD)
        _, listing, _ = client.list()
        _, lines, _ = client.top(1, 10)
        top = b"\r\n".join(lines)
        assert EICAR not in top and NOTICE in top, top
        _, again, _ = client.list()
        assert again == listing, "LIST changed within the session"
    finally:
        client.quit()


@pytest.mark.parametrize("action,family", [("replace", 4), ("strip", 6), ("pass", 4)])
def test_pop3_every_encoding_of_eicar_and_clam_exe_under_each_action(lab, dovecot, pop3_av,
                                                                     action, family):
    """EICAR and clam.exe as base64, quoted-printable and uuencoded
    attachments, zipped, and in a forwarded message/rfc822 (the samples of
    test_smtp_av), each followed by a clean message, RETRieved in one
    session: each judged per on_virus, each clean one byte-identical."""
    samples, order, clean = deliver_samples(lambda m: dovecot.deliver(USER, m))
    daemon = pop3_av({"on_virus": action})

    got = pop3_retrieve(lab, lab.server_address(family), STANDARD_PORT, USER, PASSWORD)

    assert_read_as_judged(got, samples, order, clean, action, pop3_events(daemon))


def test_pop3_sender_is_notified_at_the_return_path_else_from(lab, dovecot, pop3_av):
    """notify_sender_on_virus: POP3 has no envelope, so the Return-Path the
    delivering MTA recorded is told, else the From address; a bounce
    (Return-Path: <>) is never answered. The notifications arrive at a
    second SMTP server (the sink)."""
    sink = SmtpSink(lab)
    samples = infected_messages()
    dovecot.deliver(USER, b"Return-Path: <owner@lists.example.org>\r\n" + samples["base64"])
    dovecot.deliver(USER, b"Return-Path: <>\r\n" + samples["zip"])
    dovecot.deliver(USER, samples["quoted-printable"])  # From: Mallory <mallory@example.org>
    daemon = pop3_av({"notify_sender_on_virus": True},
                     notify={"relay": sink.relay, "from": "scanner@lab.test"})

    got = pop3_retrieve(lab, lab.server_address(4), STANDARD_PORT, USER, PASSWORD)

    for message in got:
        assert EICAR not in message and NOTICE in message
    notes = sink.wait_for_messages(2)
    by_rcpt = {tuple(n["rcpt_to"]): n for n in notes}
    assert set(by_rcpt) == {("owner@lists.example.org",), ("mallory@example.org",)}, notes
    for rcpt, subject in ((("owner@lists.example.org",), b"Subject: base64 eicar"),
                          (("mallory@example.org",), b"Subject: qp eicar")):
        assert by_rcpt[rcpt]["mail_from"] == "scanner@lab.test"
        assert subject in by_rcpt[rcpt]["data"], "the original headers are not attached"
        assert EICAR not in by_rcpt[rcpt]["data"]
    status = daemon.status()["notify"]
    assert status["sent"] == 2 and status["null_sender"] == 1, status

"""SMTP antivirus through nfqscand (issue 10), with a real Postfix (CHUNKING
and PIPELINING on) delivering into Maildirs, and real clients (smtplib,
swaks) in the client namespace. Every message is held whole and judged
before Postfix hears DATA:

- clean: delivered byte-identical (what Postfix wrote, less its trace
  headers, is what the client sent);
- infected (EICAR as a base64, quoted-printable or uuencoded attachment,
  zipped, inside a forwarded message/rfc822): per on_virus, "replace" (the
  original header, X-Nfqscan-*, the notice naming the detection, the part,
  the sender and the recipients), "strip" (only the infected part goes),
  "reject" (550 5.7.1 to the client, nothing at Postfix, the session goes
  on), "drop" (250, nothing delivered);
- CHUNKING is gone from the EHLO reply; the next clean message of the same
  session arrives intact; 10 MB clean messages and ~1% loss change nothing.

Postfix's Maildir is what is checked, never what the client believes."""

from __future__ import annotations

import base64
import email
import email.policy
import io
import smtplib
import zipfile

import pytest

from http_corpus import CLAM_TESTFILES, EICAR
from lab import REPO, SERVER4
from mail_clients import NamespaceSMTP, smtp_ehlo, swaks_send
from servers import MailServers, Postfix
from test_stream_rewrite import LOSS

SCAN = {"clamav_db_dirs": [str(REPO / "rules" / "clamav")],
        "yara_rule_dirs": [str(REPO / "rules" / "yara")], "pool_threads": 2}
SENDER = "sender@example.org"
ROUTES = [pytest.param((4, 25), id="ipv4"), pytest.param((6, 25), id="ipv6"),
          pytest.param((4, 2525), id="ipv4-port2525"),
          pytest.param((6, 2525), id="ipv6-port2525")]


# -- messages -------------------------------------------------------------------

def _head(subject: str, extra: str = "") -> str:
    return (f"From: Lab Sender <{SENDER}>\r\nTo: Alice <alice@lab.test>\r\n"
            f"Subject: {subject}\r\nMessage-ID: <{abs(hash(subject))}@lab.test>\r\n"
            f"Date: Mon, 20 Nov 2023 10:00:00 +0000\r\nMIME-Version: 1.0\r\n{extra}")


def _multipart(subject: str, parts: list[str]) -> bytes:
    body = "".join(f"--b0und\r\n{p}\r\n" for p in parts) + "--b0und--\r\n"
    return (_head(subject, 'Content-Type: multipart/mixed; boundary="b0und"\r\n') + "\r\n"
            + body).encode()


TEXT_PART = "Content-Type: text/plain; charset=us-ascii\r\n\r\nPlease find the file attached.\r\n"
CLEAN_FILE = base64.b64encode(b"quarterly figures " * 40).decode()


def _base64_part(name: str, data: bytes) -> str:
    encoded = base64.encodebytes(data).decode().replace("\n", "\r\n")
    return (f'Content-Type: application/octet-stream; name="{name}"\r\n'
            f'Content-Disposition: attachment; filename="{name}"\r\n'
            f"Content-Transfer-Encoding: base64\r\n\r\n{encoded}")


def _zip(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(name, data)
    return buf.getvalue()


def _quoted_printable(data: bytes) -> str:
    import quopri
    return quopri.encodestring(data).decode().replace("\n", "\r\n")


def _uuencode(name: str, data: bytes) -> str:
    import binascii
    lines = [f"begin 644 {name}"]
    for i in range(0, len(data), 45):
        lines.append(binascii.b2a_uu(data[i:i + 45]).decode().rstrip("\n"))
    lines += ["`", "end"]
    return "\r\n".join(lines) + "\r\n"


def infected_messages() -> dict[str, bytes]:
    """EICAR in the encodings mail carries it in, each with a clean part
    beside it (what strip must keep)."""
    good = _base64_part("figures.bin", b"quarterly figures " * 40)
    inner = _multipart("inner", [TEXT_PART, _base64_part("eicar.com", EICAR)]).decode()
    return {
        "base64": _multipart("base64 attachment", [TEXT_PART, _base64_part("eicar.com", EICAR),
                                                   good]),
        "quoted-printable": _multipart("qp attachment", [
            TEXT_PART,
            'Content-Type: text/plain; name="eicar.txt"\r\nContent-Disposition: attachment; '
            'filename="eicar.txt"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n'
            + _quoted_printable(EICAR), good]),
        "uuencoded": (_head("uuencoded", "Content-Type: text/plain\r\n") + "\r\nsee below\r\n\r\n"
                      + _uuencode("eicar.com", EICAR)).encode(),
        "zipped": _multipart("zip attachment", [TEXT_PART,
                                                _base64_part("eicar.zip", _zip("eicar.com", EICAR)),
                                                good]),
        "forwarded": _multipart("forwarded", [TEXT_PART, "Content-Type: message/rfc822\r\n\r\n"
                                              + inner, good]),
    }


def clean_message(subject: str, size: int = 20_000) -> bytes:
    filler = base64.b64encode(bytes(range(256)) * (size // 256 + 1)).decode()[:size]
    lines = "\r\n".join(filler[i:i + 76] for i in range(0, len(filler), 76))
    # A line with a leading dot: stuffed on the wire, one dot at Postfix.
    return (_head(subject, "Content-Type: text/plain\r\n") + "\r\n.leading dot\r\n" + lines
            + "\r\n").encode()


def decoded_text(message: bytes) -> bytes:
    """Every leaf part of `message`, decoded, concatenated: EICAR shows up
    here whatever transfer encoding carried it."""
    parsed = email.message_from_bytes(message, policy=email.policy.compat32)
    out = b""
    for part in parsed.walk():
        if part.is_multipart():
            continue
        payload = part.get_payload(decode=True)
        out += payload if isinstance(payload, bytes) else str(part.get_payload()).encode()
    return out + message


# -- sessions -------------------------------------------------------------------

def session(lab, family: int, port: int, timeout: float = 120) -> NamespaceSMTP:
    smtp = NamespaceSMTP(lab.client, lab.server_address(family), port, timeout=timeout)
    code, _ = smtp.ehlo()
    assert code == 250
    return smtp


def send(smtp: NamespaceSMTP, rcpt: str, message: bytes):
    """(code, text) of the reply to the message's end."""
    smtp.mail(SENDER)
    code, text = smtp.rcpt(rcpt)
    assert code in (250, 251), (code, text)
    try:
        return smtp.data(message)
    except smtplib.SMTPDataError as e:
        return e.smtp_code, e.smtp_error


@pytest.fixture
def smtp_av(lab, nfqscand, mail_servers):
    def start(smtp: dict | None = None, scan: dict | None = None, notify: dict | None = None):
        overrides = {"scan": {**SCAN, **(scan or {})}}
        if smtp:
            overrides["protocols"] = {"smtp": smtp}
        if notify:
            overrides["notify"] = notify
        daemon = nfqscand(overrides)
        daemon.wait_engines()
        return daemon
    return start


def smtp_events(daemon) -> list[dict]:
    return [e for e in daemon.detections(200) if e.get("protocol") == "smtp"]


def assert_notice(delivered: bytes, original: bytes, action: str):
    text = decoded_text(delivered)
    assert EICAR not in text, "the infected content reached the mailbox"
    head = delivered.split(b"\n\n", 1)[0]
    assert b"X-Nfqscan-Virus: " in head, head
    assert f"X-Nfqscan-Action: {action}".encode() in head, head
    subject = [ln for ln in original.split(b"\r\n") if ln.startswith(b"Subject:")][0]
    assert subject in head, "the original header is not kept"
    assert SENDER.encode() in text and b"alice@lab.test" in text, \
        "the notice does not name the sender and the recipient"


# -- tests ----------------------------------------------------------------------

@pytest.mark.parametrize("route", ROUTES)
def test_infected_is_replaced_and_next_clean_message_is_intact(lab, smtp_av, mail_servers,
                                                               route):
    family, port = route
    daemon = smtp_av()
    rcpt = mail_servers.address("alice")
    samples = infected_messages()
    clean = clean_message(f"clean after infected {family} {port}")
    with session(lab, family, port) as smtp:
        for name, message in samples.items():
            code, text = send(smtp, rcpt, message)
            assert code == 250, (name, code, text)
        code, _ = send(smtp, rcpt, clean)
        assert code == 250
    delivered = mail_servers.postfix.wait_for_delivery("alice", len(samples) + 1)
    by_subject = {}
    for d in delivered:
        subject = email.message_from_bytes(d)["Subject"]
        by_subject[subject] = d
    for name, message in samples.items():
        subject = email.message_from_bytes(message)["Subject"]
        assert subject in by_subject, (name, list(by_subject))
        assert_notice(by_subject[subject], message, "replace")
    got = by_subject[email.message_from_bytes(clean)["Subject"]]
    assert Postfix.as_sent(got) == clean, "the clean message after them changed"
    events = smtp_events(daemon)
    assert len([e for e in events if e.get("action") == "replace"]) == len(samples), events


def test_chunking_is_not_offered_through_nfqscand(lab, smtp_av, mail_servers):
    smtp_av()
    for family in (4, 6):
        for port in MailServers.SMTP_PORTS:
            keywords = {line.split()[0].upper()
                        for line in smtp_ehlo(lab, lab.server_address(family), port)}
            assert "CHUNKING" not in keywords and "BINARYMIME" not in keywords, keywords
            assert "PIPELINING" in keywords, keywords


def test_strip_removes_only_the_infected_part(lab, smtp_av, mail_servers):
    smtp_av({"on_virus": "strip"})
    message = infected_messages()["base64"]
    with session(lab, 4, 25) as smtp:
        assert send(smtp, mail_servers.address("alice"), message)[0] == 250
    delivered, = mail_servers.postfix.wait_for_delivery("alice", 1)
    assert EICAR not in decoded_text(delivered)
    parsed = email.message_from_bytes(delivered)
    parts = [p for p in parsed.walk() if not p.is_multipart()]
    sent = [p for p in email.message_from_bytes(message).walk() if not p.is_multipart()]
    assert len(parts) == 3, [p.get_content_type() for p in parts]
    # (the Maildir has LF line ends)
    assert parts[0].get_payload(decode=True) == \
        sent[0].get_payload(decode=True).replace(b"\r\n", b"\n")
    assert parts[2].get_filename() == "figures.bin"
    assert parts[2].get_payload(decode=True) == b"quarterly figures " * 40, \
        "the clean attachment changed"
    assert b"eicar.com" in parts[1].get_payload(decode=True)


def test_reject_refuses_with_550_and_the_session_goes_on(lab, smtp_av, mail_servers):
    daemon = smtp_av({"on_virus": "reject"})
    rcpt = mail_servers.address("alice")
    with session(lab, 6, 25) as smtp:
        code, text = send(smtp, rcpt, infected_messages()["zipped"])
        assert code == 550 and text.startswith(b"5.7.1"), (code, text)
        assert b"event" in text
        # The same session: another transaction without RSET.
        clean = clean_message("after a reject")
        assert send(smtp, rcpt, clean)[0] == 250
    got, = mail_servers.postfix.wait_for_delivery("alice", 1)
    assert Postfix.as_sent(got) == clean
    assert [e["action"] for e in smtp_events(daemon)] == ["reject"]
    assert mail_servers.postfix.queued() == 0


def test_drop_answers_250_and_delivers_nothing(lab, smtp_av, mail_servers):
    smtp_av({"on_virus": "drop"})
    rcpt = mail_servers.address("bob")
    with session(lab, 4, 2525) as smtp:
        code, text = send(smtp, rcpt, infected_messages()["uuencoded"])
        assert code == 250 and b"dropped" in text, (code, text)
        clean = clean_message("after a drop")
        assert send(smtp, rcpt, clean)[0] == 250
    got, = mail_servers.postfix.wait_for_delivery("bob", 1)
    assert Postfix.as_sent(got) == clean


def test_swaks_pipelined_clean_and_infected(lab, smtp_av, mail_servers):
    smtp_av()
    clean = clean_message("swaks clean")
    for message in (clean, infected_messages()["base64"]):
        proc = swaks_send(lab, SERVER4, 25, SENDER, mail_servers.address("alice"), message,
                          "--pipeline")
        assert "250 2.0.0 Ok: queued" in proc.stdout.decode(errors="replace")
    first, second = mail_servers.postfix.wait_for_delivery("alice", 2)
    got = {email.message_from_bytes(d)["Subject"]: d for d in (first, second)}
    assert Postfix.as_sent(got["swaks clean"]) == clean
    assert EICAR not in decoded_text(got["base64 attachment"])


def test_large_clean_message_with_loss_is_byte_identical(lab, smtp_av, mail_servers):
    smtp_av()
    lab.add_tcp_loss(LOSS)
    message = clean_message("ten megabytes", 10 * 1024 * 1024)
    with session(lab, 4, 25, timeout=300) as smtp:
        assert send(smtp, mail_servers.address("alice"), message)[0] == 250
    got, = mail_servers.postfix.wait_for_delivery("alice", 1, timeout=120)
    assert Postfix.as_sent(got) == message
    assert lab.tcp_loss_drops() > 0


def test_infected_with_loss_over_ipv6_is_replaced(lab, smtp_av, mail_servers):
    smtp_av()
    lab.add_tcp_loss(LOSS)
    message = infected_messages()["zipped"]
    with session(lab, 6, 2525, timeout=300) as smtp:
        for _ in range(3):
            assert send(smtp, mail_servers.address("alice"), message)[0] == 250
    for got in mail_servers.postfix.wait_for_delivery("alice", 3, timeout=120):
        assert_notice(got, message, "replace")


def test_message_over_max_content_size_falls_back(lab, smtp_av, mail_servers):
    # pass (default): delivered unscanned as it streams in, logged, and with
    # notify_recipient_on_error_pass its Subject tagged.
    daemon = smtp_av({"notify_recipient_on_error_pass": True},
                     scan={"limits": {"max_content_size": "1M"}})
    message = clean_message("too big", 2 * 1024 * 1024)
    with session(lab, 4, 25) as smtp:
        assert send(smtp, mail_servers.address("alice"), message)[0] == 250
    got, = mail_servers.postfix.wait_for_delivery("alice", 1)
    assert Postfix.body(got) == Postfix.body(message).replace(b"\r\n", b"\n")
    parsed = email.message_from_bytes(got)
    assert parsed["Subject"] == "***UNCHECKED*** too big", parsed["Subject"]
    assert parsed["X-Nfqscan-Error"] == "content-size"
    events = smtp_events(daemon)
    assert [e.get("category") for e in events] == ["content-size"], events


def test_sender_is_notified_through_the_relay(lab, smtp_av, mail_servers):
    daemon = smtp_av({"on_virus": "reject", "notify_sender_on_virus": True},
                     notify={"relay": mail_servers.sink.relay, "from": "scanner@lab.test"})
    message = infected_messages()["base64"]
    with session(lab, 4, 25) as smtp:
        code, _ = send(smtp, mail_servers.address("alice"), message)
        assert code == 550
        smtp.mail("<>")  # a bounce is never answered
        smtp.rcpt(mail_servers.address("alice"))
        try:
            smtp.data(message)
        except smtplib.SMTPDataError as e:
            assert e.smtp_code == 550
    got, = mail_servers.sink.wait_for_messages(1)
    assert got["mail_from"] == "scanner@lab.test", got
    assert got["rcpt_to"] == [SENDER], got
    data = got["data"]
    assert b"Subject: base64 attachment" in data, "the original headers are not attached"
    assert EICAR not in data
    status = daemon.status()["notify"]
    assert status["sent"] == 1 and status["null_sender"] == 1, status
    assert mail_servers.postfix.messages("alice") == []


@pytest.mark.parametrize("name", ["clam.exe", "clam.zip"])
def test_clamav_test_file_attachment_is_replaced(lab, smtp_av, mail_servers, name):
    """clamav-testfiles' samples (the project's signature knows clam.exe,
    ClamAV unpacks the zip) as base64 attachments."""
    path = CLAM_TESTFILES / name
    if not path.exists():
        pytest.skip("clamav-testfiles is not installed (tools/setup installs it)")
    data = path.read_bytes()
    message = _multipart(f"sample {name}", [TEXT_PART, _base64_part(name, data)])
    daemon = smtp_av()
    with session(lab, 6, 25) as smtp:
        assert send(smtp, mail_servers.address("alice"), message)[0] == 250
    got, = mail_servers.postfix.wait_for_delivery("alice", 1)
    assert b"X-Nfqscan-Virus: " in got.split(b"\n\n", 1)[0], got[:2000]
    inner = _zip_members(data) if name.endswith(".zip") else [data]
    for payload in inner:
        assert payload not in decoded_text(got), "the sample reached the mailbox"
    assert [e["action"] for e in smtp_events(daemon)] == ["replace"]


def _zip_members(data: bytes) -> list[bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return [z.read(n) for n in z.namelist()] + [data]

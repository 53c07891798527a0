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
import binascii
import email
import email.policy
import io
import smtplib
import zipfile

import pytest

from clients import mail_message
from http_corpus import CLAM_TESTFILES, EICAR
from lab import SERVER4
from mail_clients import NamespaceSMTP, imap_fetch, pop3_retrieve, smtp_ehlo, swaks_send
from servers import MailServers, Postfix
from test_stream_rewrite import LOSS

SENDER = "sender@example.org"
ROUTES = [pytest.param((4, 25), id="ipv4"), pytest.param((6, 25), id="ipv6"),
          pytest.param((4, 2525), id="ipv4-port2525"),
          pytest.param((6, 2525), id="ipv6-port2525")]


# -- messages -------------------------------------------------------------------

def _head(subject: str, extra: str = "") -> str:
    return (f"From: Lab Sender <{SENDER}>\r\nTo: Alice <alice@lab.test>\r\n"
            f"Subject: {subject}\r\nMessage-ID: <{abs(hash(subject))}@lab.test>\r\n"
            f"Date: Mon, 20 Nov 2023 10:00:00 +0000\r\nMIME-Version: 1.0\r\n{extra}")


def _multipart(subject: str, parts: list[str], boundary: str = "b0und") -> bytes:
    body = "".join(f"--{boundary}\r\n{p}\r\n" for p in parts) + f"--{boundary}--\r\n"
    return (_head(subject, f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n') + "\r\n"
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
    """Binary-safe: line ends in `data` are encoded (=0D=0A), not lines."""
    return binascii.b2a_qp(data, istext=False).decode().replace("\n", "\r\n")


def _uuencode(name: str, data: bytes) -> str:
    lines = [f"begin 644 {name}"]
    for i in range(0, len(data), 45):
        lines.append(binascii.b2a_uu(data[i:i + 45]).decode().rstrip("\n"))
    lines += ["`", "end"]
    return "\r\n".join(lines) + "\r\n"


def infected_messages(payload: bytes = EICAR, name: str = "eicar.com",
                      label: str = "") -> dict[str, bytes]:
    """`payload` (EICAR by default, or a ClamAV test file) in the encodings
    mail carries it in, each with a clean part beside it (what strip must
    keep). `label` goes in front of each Subject to tell payloads apart."""
    good = _base64_part("figures.bin", b"quarterly figures " * 40)
    stem = name.rsplit(".", 1)[0]
    # (its own boundary: the outer one would end the outer multipart early)
    inner = _multipart(f"{label}inner", [TEXT_PART, _base64_part(name, payload)],
                       boundary="inner-b0und").decode()
    return {
        "base64": _multipart(f"{label}base64 attachment",
                             [TEXT_PART, _base64_part(name, payload), good]),
        "quoted-printable": _multipart(f"{label}qp attachment", [
            TEXT_PART,
            f'Content-Type: text/plain; name="{stem}.txt"\r\nContent-Disposition: attachment; '
            f'filename="{stem}.txt"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n'
            + _quoted_printable(payload), good]),
        "uuencoded": (_head(f"{label}uuencoded", "Content-Type: text/plain\r\n")
                      + "\r\nsee below\r\n\r\n" + _uuencode(name, payload)).encode(),
        "zipped": _multipart(f"{label}zip attachment",
                             [TEXT_PART, _base64_part(f"{stem}.zip", _zip(name, payload)), good]),
        "forwarded": _multipart(f"{label}forwarded",
                                [TEXT_PART, "Content-Type: message/rfc822\r\n\r\n" + inner, good]),
    }


def clam_exe() -> bytes | None:
    """clamav-testfiles' clam.exe (the project's signature knows it), or None
    when the package is not installed (tools/setup installs it)."""
    path = CLAM_TESTFILES / "clam.exe"
    return path.read_bytes() if path.exists() else None


def all_samples() -> dict[str, tuple[bytes, bytes]]:
    """name -> (message, payload): EICAR and clam.exe in every encoding."""
    out = {f"eicar {k}": (m, EICAR) for k, m in infected_messages().items()}
    clam = clam_exe()
    if clam is None:
        pytest.skip("clamav-testfiles is not installed (tools/setup installs it)")
    out.update({f"clam.exe {k}": (m, clam)
                for k, m in infected_messages(clam, "clam.exe", "clam ").items()})
    return out


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
    return session_to(lab, lab.server_address(family), port, timeout)


def session_to(lab, address: str, port: int, timeout: float = 120) -> NamespaceSMTP:
    """An SMTP session from the client namespace to `address`, after EHLO."""
    smtp = NamespaceSMTP(lab.client, address, port, timeout=timeout)
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
def smtp_av(mail_av, mail_servers):
    def start(smtp: dict | None = None, scan: dict | None = None, notify: dict | None = None):
        return mail_av({"smtp": smtp} if smtp else None, notify=notify, scan=scan)
    return start


def smtp_events(daemon) -> list[dict]:
    return [e for e in daemon.detections(200) if e.get("protocol") == "smtp"]


def assert_notice(delivered: bytes, original: bytes, action: str, payload: bytes = EICAR):
    """`delivered` (a Maildir file, or what a POP3/IMAP client got) is the
    notice for `original`, per `action`, without `payload`."""
    text = decoded_text(delivered)
    assert payload not in text, "the infected content reached the mailbox"
    head = delivered.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0]
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
    mail_servers.postfix.wait_drained()


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
    # Loss at every receiver too (injected): nfqscand relays the message to
    # Postfix in its own segments, and the client's arrive GRO-merged (few
    # packets: the router's rule alone sometimes dropped none of them).
    lab.add_tcp_loss(LOSS, injected=True)
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


def assert_judged(got: bytes, message: bytes, payload: bytes, action: str, name: str):
    """What reached the mailbox or the reader of `message` (a sample of
    all_samples() called `name`, carrying `payload`) under on_virus
    `action` (replace, strip or pass)."""
    if action == "pass":
        assert Postfix.as_sent(got) == message, f"{name}: changed although passed"
        return
    # strip: a message whose payload is no MIME part of its own (uuencoded
    # in the text) has nothing to strip and is replaced.
    stripped = action == "strip" and not name.endswith("uuencoded")
    try:
        assert_notice(got, message, "strip" if stripped else "replace", payload)
    except AssertionError as e:
        raise AssertionError(f"{name} ({action}): {e}") from None
    if stripped:
        leaves = [p for p in email.message_from_bytes(got).walk() if not p.is_multipart()]
        figures = [p for p in leaves if p.get_filename() == "figures.bin"]
        assert len(figures) == 1, (name, [p.get_content_type() for p in leaves],
                                   got.decode(errors="replace"))
        assert figures[0].get_payload(decode=True) == b"quarterly figures " * 40, \
            f"{name}: the clean attachment changed"


def deliver_samples(deliver) -> tuple[dict, list, bytes]:
    """Every sample of all_samples() put in a mailbox with `deliver`
    (Dovecot.deliver for one user), each followed by a clean message.
    Returns the samples, the order of the mailbox (a sample's name, None for
    the clean one) and the clean message."""
    clean = mail_message("clean between", 30_000, seed=6)
    samples = all_samples()
    order = []
    for name, (message, _) in samples.items():
        deliver(message)
        deliver(clean)
        order += [name, None]
    return samples, order, clean


def assert_read_as_judged(got: list[bytes], samples: dict, order: list, clean: bytes,
                          action: str, events: list[dict]) -> None:
    """What a reader got of the mailbox of deliver_samples(), and the events
    of its protocol, under on_virus `action`."""
    assert len(got) == len(order)
    for name, read in zip(order, got):
        if name is None:
            assert read == clean, "a clean message after a judged one changed"
        else:
            assert_judged(read, *samples[name], action, name)
    expected = {"strip": {"strip", "replace"}}.get(action, {action})
    assert len(events) == len(samples), events
    assert all(e["action"] in expected and e["verdict"] == "infected" for e in events), events


# -- every sample under every action ---------------------------------------------

EXPECTED_REPLY = {"replace": 250, "strip": 250, "reject": 550, "drop": 250, "pass": 250}


@pytest.mark.parametrize("action,family", [("replace", 4), ("strip", 6), ("reject", 4),
                                           ("drop", 6), ("pass", 4)])
def test_every_encoding_of_eicar_and_clam_exe_under_each_action(lab, smtp_av, mail_servers,
                                                                 action, family):
    """EICAR and clam.exe as base64, quoted-printable and uuencoded
    attachments, zipped, and inside a forwarded message/rfc822, one session:
    what Postfix wrote to the Maildir is checked for each, and the clean
    message after them arrives byte-identical."""
    samples = all_samples()
    daemon = smtp_av({"on_virus": action})
    rcpt = mail_servers.address("alice")
    clean = clean_message(f"clean after {action}")
    with session(lab, family, 25) as smtp:
        for name, (message, _) in samples.items():
            code, text = send(smtp, rcpt, message)
            assert code == EXPECTED_REPLY[action], (name, code, text)
            if action == "reject":
                assert text.startswith(b"5.7.1") and b"found" in text, (name, text)
            if action == "drop":
                assert b"dropped" in text, (name, text)
        assert send(smtp, rcpt, clean)[0] == 250
    delivered_count = 1 if action in ("reject", "drop") else len(samples) + 1
    delivered = mail_servers.postfix.wait_for_delivery("alice", delivered_count)
    assert len(delivered) == delivered_count, [email.message_from_bytes(d)["Subject"]
                                               for d in delivered]
    by_subject = {email.message_from_bytes(d)["Subject"]: d for d in delivered}
    assert Postfix.as_sent(by_subject.pop(email.message_from_bytes(clean)["Subject"])) == clean
    for name, (message, payload) in samples.items():
        subject = email.message_from_bytes(message)["Subject"]
        if action in ("reject", "drop"):
            assert subject not in by_subject, f"{name}: delivered although {action}ed"
            continue
        assert_judged(by_subject[subject], message, payload, action, name)
    events = smtp_events(daemon)
    expected = {"strip": {"strip", "replace"}}.get(action, {action})
    assert len(events) == len(samples), events
    assert all(e["action"] in expected and e["verdict"] == "infected" for e in events), events
    if action == "reject":
        mail_servers.postfix.wait_drained()
    # The inspector's own counters (SmtpCounters).
    own = daemon.status()["protocols"]["smtp"]["inspector"]
    assert own["messages"] == len(samples) + 1, own
    counted = {"replace": "rewritten", "strip": "rewritten", "reject": "rejected",
               "drop": "dropped", "pass": "delivered"}[action]
    assert own[counted] == len(samples) + (action == "pass"), own
    assert own["delivered"] == 1 + len(samples) * (action == "pass"), own
    assert own["protocol_errors"] == 0, own


@pytest.mark.parametrize("family", [pytest.param(4, id="ipv4"), pytest.param(6, id="ipv6")])
def test_curl_smtp_upload_clean_intact_infected_replaced(lab, smtp_av, mail_servers, family):
    """curl's SMTP client (smtp://, --upload-file): a clean message arrives
    byte-identical, an infected one replaced."""
    smtp_av()
    clean = clean_message(f"curl clean {family}")
    infected = infected_messages(label="curl ")["zipped"]
    for message in (clean, infected):
        path = lab.dir / f"curl-{abs(hash(message)):x}.eml"
        path.write_bytes(message)
        lab.curl(lab.url("smtp", 2525, "", family), "--mail-from", SENDER, "--mail-rcpt",
                 mail_servers.address("bob"), "--upload-file", str(path))
    got = {email.message_from_bytes(d)["Subject"]: d
           for d in mail_servers.postfix.wait_for_delivery("bob", 2)}
    assert Postfix.as_sent(got[f"curl clean {family}"]) == clean
    assert_notice(got["curl zip attachment"], infected, "replace")


def test_mail_passed_by_smtp_is_replaced_when_read_and_its_sender_told(lab, mail_av,
                                                                       mail_servers):
    """End to end: SMTP passes (on_virus = "pass", logged), Postfix delivers
    the infected messages as sent; POP3 and IMAP readers get them replaced
    and the clean one byte-identical; POP3's notify_sender_on_virus tells the
    Return-Path Postfix wrote (the envelope sender) through the sink."""
    samples = {"base64": infected_messages()["base64"],
               "zipped": infected_messages(label="e2e ")["zipped"]}
    clean = clean_message("e2e clean")
    daemon = mail_av({"smtp": {"on_virus": "pass"}, "pop3": {"notify_sender_on_virus": True}},
                     notify={"relay": mail_servers.sink.relay, "from": "scanner@lab.test"})
    with session(lab, 4, 25) as smtp:
        for message in (*samples.values(), clean):
            assert send(smtp, mail_servers.address("alice"), message)[0] == 250
    delivered = mail_servers.postfix.wait_for_delivery("alice", 3)
    assert sorted(Postfix.as_sent(d) for d in delivered) == sorted([*samples.values(), clean])
    assert all(d.startswith(f"Return-Path: <{SENDER}>".encode()) for d in delivered)
    password = mail_servers.password("alice")

    retrieved = pop3_retrieve(lab, SERVER4, 110, "alice", password)
    fetched = imap_fetch(lab, lab.server_address(6), 1143, "alice", password)

    # (Dovecot numbers the messages in its own order: matched by Subject)
    stored_by_subject = {email.message_from_bytes(d)["Subject"]: d for d in delivered}
    for protocol, got in (("pop3", retrieved), ("imap", fetched)):
        assert len(got) == 3, protocol
        for read in got:
            stored = stored_by_subject[email.message_from_bytes(read)["Subject"]]
            if Postfix.as_sent(stored) == clean:
                assert read == stored.replace(b"\n", b"\r\n"), f"{protocol}: clean changed"
            else:
                assert_notice(read, Postfix.as_sent(stored), "replace")
    by_protocol = {}
    for e in daemon.detections(200):
        by_protocol.setdefault(e.get("protocol"), []).append(e["action"])
    assert by_protocol == {"smtp": ["pass", "pass"], "pop3": ["replace", "replace"],
                           "imap": ["replace", "replace"]}, by_protocol
    notes = mail_servers.sink.wait_for_messages(2)
    assert [n["rcpt_to"] for n in notes] == [[SENDER], [SENDER]], notes
    assert daemon.status()["notify"]["sent"] == 2

"""Spam verdicts and actions through nfqscand (issue 11), with a real rspamd
(Debian's package, on the router's loopback where nfqscand asks it over
HTTP /checkv2), a real Postfix delivering into Maildirs and real Dovecot:

- GTUBE through rspamd is spam: tagged by default (Subject prefix,
  X-Spam-Flag, X-Spam-Score, X-Spam-Report) at Postfix;
- each SMTP on_spam action checked on what Postfix delivered and what the
  client got: reject (550 5.7.1, nothing delivered), drop (250, nothing
  delivered), accept (as sent), forward (delivered to spam_forward_to only,
  the original recipients in a header);
- every spam verdict is an event (category spam, engine, score), and status
  counts spam per protocol and action;
- rspamd stopped: mail flows as sent, and the fallback event
  (engine-not-ready) is logged;
- the YARA spam rule path (the project's test marker) on SMTP, POP3 and
  IMAP, where on_spam is accept or tag only.

on_spam is changed between steps by rewriting the daemon's configuration
and `nfqscanctl reload`, in one lab: rspamd takes 15 to 60 s to start here."""

from __future__ import annotations

import email

from mail_clients import NamespaceSMTP, imap_fetch, pop3_retrieve
from nfqscand import Nfqscand, dump_toml, merge
from rspamd_server import GTUBE, Rspamd
from servers import MailServers, Postfix

SENDER = "sender@example.org"
SPAM_MARKER = b"NFQSCAN-TEST-SPAM-MARKER"


def message(subject: str, body: bytes) -> bytes:
    return (f"From: Lab Sender <{SENDER}>\r\nTo: Alice <alice@lab.test>\r\n"
            f"Subject: {subject}\r\nMessage-ID: <{abs(hash(subject))}@lab.test>\r\n"
            f"Date: Mon, 20 Nov 2023 10:00:00 +0000\r\nMIME-Version: 1.0\r\n"
            f"Content-Type: text/plain\r\n\r\n").encode() + body + b"\r\n"


def gtube(subject: str) -> bytes:
    return message(subject, b"This is the GTUBE test:\r\n" + GTUBE)


def send(lab, rcpt: str, msg: bytes, port: int = 25):
    """(code, text) of the reply to the message's end, from the client namespace."""
    with NamespaceSMTP(lab.client, lab.server_address(4), port, timeout=120) as smtp:
        assert smtp.ehlo()[0] == 250
        smtp.mail(SENDER)
        code, text = smtp.rcpt(rcpt)
        assert code == 250, (code, text)
        try:
            code, text = smtp.data(msg)
        except Exception as e:  # smtplib.SMTPDataError: a refused message
            code, text = e.smtp_code, e.smtp_error
        smtp.quit()
        return code, text


def reconfigure(daemon, overrides: dict) -> None:
    """New [protocols.*] / [spam] settings for new flows, through a reload."""
    daemon.config = merge(daemon.config, overrides)
    daemon.config_path.write_text(dump_toml(daemon.config))
    daemon.ctl("reload", timeout=120)


def head_of(delivered: bytes) -> bytes:
    return delivered.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0]


def spam_events(daemon, protocol: str) -> list[dict]:
    return [e for e in daemon.detections(200)
            if e.get("protocol") == protocol and e.get("category") == "spam"]


def smtp_smoke_is_clean(lab, mail_servers, daemon, count_before: int) -> None:
    clean = message("an ordinary message", b"Lunch at noon?")
    assert send(lab, mail_servers.address("alice"), clean)[0] == 250
    got = mail_servers.postfix.wait_for_delivery("alice", count_before + 1)[-1]
    assert Postfix.as_sent(got) == clean, "a clean message changed"


def test_smtp_spam_actions_with_rspamd(lab, mail_av, mail_servers):
    rspamd = Rspamd(lab)
    daemon = mail_av(spam={"engine": "rspamd", "rspamd_url": rspamd.url, "timeout_ms": 20000})
    postfix = mail_servers.postfix
    alice, bob = mail_servers.address("alice"), mail_servers.address("bob")

    # tag (the default): GTUBE is spam, delivered tagged.
    original = gtube("tag me")
    code, text = send(lab, alice, original)
    assert code == 250, (code, text)
    tagged = postfix.wait_for_delivery("alice", 1)[-1]
    head = head_of(tagged)
    assert email.message_from_bytes(tagged)["Subject"] == "[SPAM] tag me", head
    assert b"X-Spam-Flag: YES" in head and b"X-Spam-Score: " in head, head
    assert b"X-Spam-Report: rspamd: reject" in head and b"GTUBE" in head, head
    assert GTUBE in tagged, "the body is kept"
    smtp_smoke_is_clean(lab, mail_servers, daemon, 1)

    # reject: 550 5.7.1 to the client, nothing at Postfix.
    reconfigure(daemon, {"protocols": {"smtp": {"on_spam": "reject"}}})
    code, text = send(lab, alice, gtube("reject me"))
    assert code == 550 and b"5.7.1" in text and b"spam" in text, (code, text)
    # drop: 250 to the client, nothing at Postfix.
    reconfigure(daemon, {"protocols": {"smtp": {"on_spam": "drop"}}})
    code, text = send(lab, alice, gtube("drop me"))
    assert code == 250 and b"dropped by nfqscan" in text, (code, text)
    # accept: delivered as sent.
    reconfigure(daemon, {"protocols": {"smtp": {"on_spam": "accept"}}})
    accepted = gtube("accept me")
    assert send(lab, alice, accepted)[0] == 250
    got = postfix.wait_for_delivery("alice", 3)[-1]
    assert Postfix.as_sent(got) == accepted, "accept changed the message"
    subjects = [email.message_from_bytes(m)["Subject"] for m in postfix.messages("alice")]
    assert "reject me" not in subjects and "drop me" not in subjects, subjects

    # forward: to bob only, alice named in a header.
    reconfigure(daemon, {"protocols": {"smtp": {"on_spam": "forward",
                                                "spam_forward_to": bob}}})
    code, text = send(lab, alice, gtube("forward me"))
    assert code == 250, (code, text)
    forwarded = postfix.wait_for_delivery("bob", 1)[-1]
    head = head_of(forwarded)
    assert b"X-Nfqscan-Original-Recipients: <alice@lab.test>" in head, head
    assert b"X-Spam-Flag: YES" in head, head
    assert b"Delivered-To: bob@lab.test" in head, head
    assert email.message_from_bytes(forwarded)["Subject"] == "forward me"
    assert GTUBE in forwarded
    postfix.wait_drained()
    subjects = [email.message_from_bytes(m)["Subject"] for m in postfix.messages("alice")]
    assert "forward me" not in subjects, "the original recipient got the forwarded spam"

    # One event per spam verdict, with the engine and its score.
    events = spam_events(daemon, "smtp")
    by_action = {e["action"]: e for e in events}
    assert set(by_action) == {"tag", "reject", "drop", "accept", "forward"}, events
    for e in events:
        assert e["engine"] == "rspamd" and e["name"] == "rspamd: reject", e
        assert isinstance(e["score"], (int, float)), e
    spam = daemon.status()["protocols"]["smtp"]["spam"]
    assert spam == {"tag": 1, "reject": 1, "drop": 1, "accept": 1, "forward": 1}, spam
    assert daemon.status()["protocols"]["smtp"]["inspector"]["forwarded"] == 1
    out = daemon.ctl("detections", "-n", "20").stdout.decode()
    assert "rspamd: reject" in out, out

    # rspamd stopped: mail flows as sent, the fallback is logged.
    rspamd.stop()
    reconfigure(daemon, {"protocols": {"smtp": {"on_spam": "reject"}}})
    down = gtube("rspamd is down")
    code, text = send(lab, alice, down)
    assert code == 250, (code, text)
    got = postfix.wait_for_delivery("alice", 4)[-1]
    assert Postfix.as_sent(got) == down, "delivered as sent while the engine is down"
    fallbacks = [e for e in daemon.detections(200)
                 if e.get("protocol") == "smtp" and e.get("category") == "engine-not-ready"]
    assert fallbacks and fallbacks[-1]["action"] == "pass", fallbacks
    assert "rspamd" in fallbacks[-1]["reason"], fallbacks


def test_yara_spam_rule_on_smtp_pop3_and_imap(lab, mail_av, mail_servers):
    """No spam engine: the project's YARA spam rule (category = "spam")."""
    daemon = mail_av()
    postfix, dovecot = mail_servers.postfix, mail_servers.dovecot
    alice = mail_servers.address("alice")
    spam = message("yara spam", b"cheap offer " + SPAM_MARKER)

    # SMTP, default tag.
    assert send(lab, alice, spam)[0] == 250
    tagged = postfix.wait_for_delivery("alice", 1)[-1]
    assert email.message_from_bytes(tagged)["Subject"] == "[SPAM] yara spam"
    assert b"X-Spam-Report: yara: NfqScan_Test_Spam_Marker" in head_of(tagged)
    postfix.reset()

    # POP3 and IMAP, default tag: what the reader receives is tagged.
    dovecot.deliver("bob", spam)
    password = mail_servers.password("bob")
    server = lab.server_address(4)
    got = pop3_retrieve(lab, server, MailServers.POP3_PORTS[0], "bob", password)
    assert len(got) == 1 and email.message_from_bytes(got[0])["Subject"] == "[SPAM] yara spam"
    assert b"X-Spam-Flag: YES" in head_of(got[0])
    got = imap_fetch(lab, server, MailServers.IMAP_PORTS[0], "bob", password)
    assert len(got) == 1 and email.message_from_bytes(got[0])["Subject"] == "[SPAM] yara spam"

    # accept: the reader gets the message as stored, the verdict is logged.
    reconfigure(daemon, {"protocols": {"pop3": {"on_spam": "accept"},
                                       "imap": {"on_spam": "accept"}}})
    got = pop3_retrieve(lab, server, MailServers.POP3_PORTS[0], "bob", password)
    assert got == [spam], "POP3 accept changed the message"
    got = imap_fetch(lab, server, MailServers.IMAP_PORTS[0], "bob", password)
    assert got == [spam], "IMAP accept changed the message"

    for protocol in ("smtp", "pop3", "imap"):
        events = spam_events(daemon, protocol)
        assert events and all(e["name"] == "NfqScan_Test_Spam_Marker" for e in events), events
    status = daemon.status()["protocols"]
    assert status["smtp"]["spam"]["tag"] == 1
    assert status["pop3"]["spam"] == {"tag": 1, "accept": 1, "reject": 0, "drop": 0,
                                      "forward": 0}, status["pop3"]["spam"]
    assert status["imap"]["spam"]["tag"] == 1 and status["imap"]["spam"]["accept"] == 1


def test_pop3_reject_is_a_configuration_error(lab):
    daemon = Nfqscand(lab, {"protocols": {"pop3": {"on_spam": "reject"}}})
    proc = daemon.run_to_exit()
    err = (proc.stdout + proc.stderr).decode()
    assert proc.returncode != 0, err
    assert "protocols.pop3.on_spam" in err and "already counts" in err, err
    assert str(daemon.config_path) in err, err

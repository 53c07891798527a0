"""The mail lab itself, without nfqscand (the router forwards; the queue
rules bypass while no daemon is bound): what a client sends to Postfix over
IPv4 or IPv6, on the standard or an odd port, lands in the recipient's
Maildir as sent, and Dovecot serves those same bytes over POP3 and IMAP;
Postfix keeps CHUNKING and PIPELINING on; the SMTP sink keeps what it gets.
The mail antivirus tests build on these guarantees."""

from __future__ import annotations

import pytest

from clients import mail_message
from lab import SERVER4
from mail_clients import imap_fetch, pop3_retrieve, smtp_ehlo, smtp_send, swaks_send
from servers import MailServers, Postfix

SENDER = "sender@example.org"
# (family, index into the port lists: 0 = standard ports, 1 = odd ports)
ROUTES = [pytest.param((4, 0), id="ipv4"), pytest.param((6, 0), id="ipv6"),
          pytest.param((4, 1), id="ipv4-odd-ports"), pytest.param((6, 1), id="ipv6-odd-ports")]


def served_as(delivered: bytes) -> bytes:
    """A Maildir file as Dovecot serves it: CRLF line ends."""
    return delivered.replace(b"\n", b"\r\n")


@pytest.mark.parametrize("route", ROUTES)
def test_smtp_delivery_is_served_by_pop3_and_imap(lab, mail_servers, route):
    family, which = route
    server = lab.server_address(family)
    smtp_port = MailServers.SMTP_PORTS[which]
    message = mail_message(f"route {family} {smtp_port}", 40_000, seed=family * 10 + which)

    result = smtp_send(lab, server, smtp_port, SENDER, [mail_servers.address("alice")], message)

    assert result["reply"][0] == 250, result
    delivered, = mail_servers.postfix.wait_for_delivery("alice", 1)
    assert Postfix.as_sent(delivered) == message, "the Maildir holds other bytes than were sent"
    assert Postfix.body(delivered) == Postfix.body(message).replace(b"\r\n", b"\n")
    client = lab.client_address(family).encode()
    assert client in delivered.split(b"\n\n", 1)[0], "Received: does not name the client"

    retrieved, = pop3_retrieve(lab, server, MailServers.POP3_PORTS[which], "alice",
                               mail_servers.password("alice"))
    assert retrieved == served_as(delivered), "POP3 RETR differs from the Maildir file"
    for item in ("BODY.PEEK[]", "BODY[]", "RFC822"):
        fetched, = imap_fetch(lab, server, MailServers.IMAP_PORTS[which], "alice",
                              mail_servers.password("alice"), item=item)
        assert fetched == served_as(delivered), f"IMAP FETCH {item} differs from the Maildir file"


def test_postfix_keeps_chunking_and_pipelining(lab, mail_servers):
    for family in (4, 6):
        for port in MailServers.SMTP_PORTS:
            keywords = {line.split()[0].upper()
                        for line in smtp_ehlo(lab, lab.server_address(family), port)}
            assert {"CHUNKING", "PIPELINING", "8BITMIME"} <= keywords, (family, port, keywords)


def test_swaks_pipelined_session_delivers_to_each_recipient(lab, mail_servers):
    message = mail_message("swaks pipelined", 3_000, seed=7)
    for family, user in ((4, "alice"), (6, "bob")):
        proc = swaks_send(lab, lab.server_address(family), 25, SENDER,
                          mail_servers.address(user), message, "--pipeline")
        dialogue = proc.stdout.decode(errors="replace")
        assert "250 2.0.0 Ok: queued" in dialogue, dialogue
    for user in ("alice", "bob"):
        delivered, = mail_servers.postfix.wait_for_delivery(user, 1)
        assert Postfix.as_sent(delivered) == message, user


def test_mail_to_another_domain_is_refused(lab, mail_servers):
    result = smtp_send(lab, SERVER4, 25, SENDER, ["someone@example.net"],
                       mail_message("nowhere", 100))
    assert result["reply"] is None and result["refused"]["someone@example.net"][0] == 554, result


def test_large_message_arrives_whole_and_reset_empties_mailboxes(lab, mail_servers):
    message = mail_message("ten megabytes", 10 * 1024 * 1024, seed=3)
    smtp_send(lab, SERVER4, 2525, SENDER, [mail_servers.address("alice")], message)
    delivered, = mail_servers.postfix.wait_for_delivery("alice", 1)
    assert Postfix.as_sent(delivered) == message
    retrieved, = pop3_retrieve(lab, SERVER4, 110, "alice", mail_servers.password("alice"))
    assert Postfix.as_sent(retrieved) == message

    mail_servers.reset()

    assert mail_servers.postfix.messages("alice") == []
    assert pop3_retrieve(lab, SERVER4, 110, "alice", mail_servers.password("alice")) == []


def test_sink_keeps_envelope_and_data(lab, mail_servers):
    sink = mail_servers.sink
    # A line starting with a dot: smtplib stuffs it, the sink unstuffs it.
    message = (b"From: nfqscan <scanner@lab.test>\r\nTo: sender@example.org\r\n"
               b"Subject: notice\r\n\r\n.a line with a leading dot\r\nend\r\n")
    for family in (4, 6):
        result = smtp_send(lab, lab.server_address(family), MailServers.SINK_PORT,
                           "scanner@lab.test", ["sender@example.org", "other@example.org"],
                           message)
        assert result["reply"][0] == 250, result
    smtp_send(lab, SERVER4, MailServers.SINK_PORT, "", ["postmaster@example.org"], message)

    first, second, null = sink.wait_for_messages(3)

    for got, client in ((first, lab.client_address(4)), (second, lab.client_address(6))):
        assert got["mail_from"] == "scanner@lab.test", got
        assert got["rcpt_to"] == ["sender@example.org", "other@example.org"], got
        assert got["peer"] == client, got
        assert got["data"] == message
    assert null["mail_from"] == "" and null["rcpt_to"] == ["postmaster@example.org"], null
    sink.reset()
    assert sink.received() == []

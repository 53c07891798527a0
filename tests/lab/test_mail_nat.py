"""Mail antivirus behind NAT (issue 10): most routers that run nfqscan
translate addresses, and the mail inspectors inject bytes of their own:
SMTP's 354 (nfqscand answers DATA itself and holds the message) and 550
(reject), a replaced message relayed to Postfix in place of the original, a
replaced POP3 RETR and IMAP FETCH answer. Each behind a masquerading uplink
(source NAT) and behind a port forward (destination NAT), IPv4 and IPv6,
with ~1% loss on every packet leaving the router, injected ones included.

What is checked is what the far end got: Postfix's Maildir, what poplib and
imaplib received."""

from __future__ import annotations

import email

import pytest

from lab import ROUTER4_CLIENT_SIDE, ROUTER6_CLIENT_SIDE
from mail_clients import imap_fetch, pop3_retrieve
from servers import Postfix
from test_pop3_av import NOTICE
from test_smtp_av import (assert_notice, clean_message, infected_messages, send,
                          session_to, smtp_events)
from test_stream_rewrite import LOSS

# Public ports of the port forward (the router's client-side addresses).
PUBLIC = {25: 10025, 110: 10110, 143: 10143}
NATS = ["masquerade", "forward"]


def through(lab, nat: str, family: int, port: int) -> tuple[str, int]:
    """(address, port) a client uses to reach the server's `port` behind
    `nat`, which is set up on the router."""
    if nat == "masquerade":
        return lab.server_address(family), port
    return (ROUTER4_CLIENT_SIDE if family == 4 else ROUTER6_CLIENT_SIDE), PUBLIC[port]


def setup_nat(lab, nat: str) -> None:
    if nat == "masquerade":
        lab.masquerade()
    else:
        for server_port, public in PUBLIC.items():
            lab.port_forward(public, server_port)


@pytest.mark.parametrize("action", ["reject", "replace"])
@pytest.mark.parametrize("family", [pytest.param(4, id="ipv4"), pytest.param(6, id="ipv6")])
@pytest.mark.parametrize("nat", NATS)
def test_smtp_behind_nat_with_loss(lab, mail_servers, mail_av, nat, family, action):
    setup_nat(lab, nat)
    daemon = mail_av({"smtp": {"on_virus": action}})
    lab.add_tcp_loss(LOSS, injected=True)
    address, port = through(lab, nat, family, 25)
    rcpt = mail_servers.address("alice")
    infected = infected_messages(label=f"{nat} {family} ")
    clean = clean_message(f"clean behind {nat} {family} {action}", 8_000_000)
    with session_to(lab, address, port, timeout=300) as smtp:
        for name, message in infected.items():
            code, text = send(smtp, rcpt, message)
            if action == "reject":
                assert code == 550 and text.startswith(b"5.7.1"), (name, code, text)
            else:
                assert code == 250, (name, code, text)
        assert send(smtp, rcpt, clean)[0] == 250
    expected = 1 if action == "reject" else len(infected) + 1
    delivered = mail_servers.postfix.wait_for_delivery("alice", expected, timeout=120)
    assert len(delivered) == expected
    by_subject = {email.message_from_bytes(d)["Subject"]: d for d in delivered}
    assert Postfix.as_sent(by_subject.pop(email.message_from_bytes(clean)["Subject"])) == clean
    if action == "replace":
        for name, message in infected.items():
            assert_notice(by_subject[email.message_from_bytes(message)["Subject"]], message,
                          "replace")
    assert len(smtp_events(daemon)) == len(infected)
    status = daemon.status()
    assert status["streams"]["nat_flows"] >= 1, status["streams"]
    assert lab.tcp_loss_drops() > 0, "the loss rules dropped nothing"


@pytest.mark.parametrize("family", [pytest.param(4, id="ipv4"), pytest.param(6, id="ipv6")])
@pytest.mark.parametrize("nat", NATS)
def test_pop3_and_imap_behind_nat_with_loss(lab, mail_av, mail_servers, nat, family):
    setup_nat(lab, nat)
    samples = infected_messages(label=f"{nat} ")
    clean = clean_message(f"clean {nat}", 4_000_000)
    for message in samples.values():
        mail_servers.dovecot.deliver("alice", message)
    mail_servers.dovecot.deliver("alice", clean)
    daemon = mail_av()
    lab.add_tcp_loss(LOSS, injected=True)
    password = mail_servers.password("alice")

    pop3_address, pop3_port = through(lab, nat, family, 110)
    retrieved = pop3_retrieve(lab, pop3_address, pop3_port, "alice", password, timeout=120)
    imap_address, imap_port = through(lab, nat, family, 143)
    fetched = imap_fetch(lab, imap_address, imap_port, "alice", password, timeout=120)

    for protocol, got in (("pop3", retrieved), ("imap", fetched)):
        assert len(got) == len(samples) + 1, protocol
        for (name, message), judged in zip(samples.items(), got):
            assert NOTICE in judged, (protocol, name, judged[:1500])
            assert_notice(judged, message, "replace")
        assert got[-1] == clean, f"{protocol}: the clean message changed"
    events = [e for e in daemon.detections(200) if e.get("protocol") in ("pop3", "imap")]
    assert len(events) == 2 * len(samples), events
    assert daemon.status()["streams"]["nat_flows"] >= 2
    assert lab.tcp_loss_drops() > 0, "the loss rules dropped nothing"

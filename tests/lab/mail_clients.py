"""Python's mail clients (smtplib, poplib, imaplib) with their sockets made
in a lab namespace (the client's, by default), so their traffic crosses the
router as a real client's does. swaks runs in the namespace as a command."""

from __future__ import annotations

import imaplib
import poplib
import re
import smtplib

from lab import Lab, Namespace

CLIENT_NAME = "client.lab.test"  # EHLO name: no DNS lookup of our own


class NamespaceSMTP(smtplib.SMTP):
    def __init__(self, namespace: Namespace, host: str, port: int, timeout: float = 60):
        self.namespace = namespace
        super().__init__(host, port, local_hostname=CLIENT_NAME, timeout=timeout)

    def _get_socket(self, host, port, timeout):
        return self.namespace.connect(host, port, timeout=timeout)


class NamespacePOP3(poplib.POP3):
    def __init__(self, namespace: Namespace, host: str, port: int, timeout: float = 60):
        self.namespace = namespace
        super().__init__(host, port, timeout=timeout)

    def _create_socket(self, timeout):
        return self.namespace.connect(self.host, self.port, timeout=timeout)


class NamespaceIMAP4(imaplib.IMAP4):
    def __init__(self, namespace: Namespace, host: str, port: int, timeout: float = 60):
        self.namespace = namespace
        super().__init__(host, port, timeout=timeout)

    def _create_socket(self, timeout=None):
        return self.namespace.connect(self.host, self.port, timeout=timeout or 60)


def smtp_send(lab: Lab, address: str, port: int, mail_from: str, rcpt_to: list[str],
              message: bytes, timeout: float = 60, namespace: Namespace | None = None) -> dict:
    """One message over one SMTP session with smtplib (EHLO, MAIL, RCPT...,
    DATA, QUIT). Returns {"ehlo": [capability lines, lowercased keywords
    first], "refused": {rcpt: (code, text)}, "reply": (code, text) of the DATA}.
    smtplib dot-stuffs and sends `message` as bytes (CRLF kept)."""
    with NamespaceSMTP(namespace or lab.client, address, port, timeout=timeout) as smtp:
        code, text = smtp.ehlo()
        if code != 250:
            raise smtplib.SMTPResponseException(code, text)
        ehlo = text.decode(errors="replace").splitlines()[1:]
        smtp.mail(mail_from)
        refused = {}
        for rcpt in rcpt_to:
            code, text = smtp.rcpt(rcpt)
            if code not in (250, 251):
                refused[rcpt] = (code, text)
        if len(refused) == len(rcpt_to):
            smtp.rset()
            return {"ehlo": ehlo, "refused": refused, "reply": None}
        reply = smtp.data(message)
        return {"ehlo": ehlo, "refused": refused, "reply": reply}


def smtp_ehlo(lab: Lab, address: str, port: int, timeout: float = 30,
              namespace: Namespace | None = None) -> list[str]:
    """The EHLO reply's capability lines (after the greeting line), as the
    client sees them, e.g. ["PIPELINING", "SIZE 10240000", "CHUNKING"]."""
    with NamespaceSMTP(namespace or lab.client, address, port, timeout=timeout) as smtp:
        code, text = smtp.ehlo()
        if code != 250:
            raise smtplib.SMTPResponseException(code, text)
        return text.decode(errors="replace").splitlines()[1:]


def swaks_send(lab: Lab, address: str, port: int, mail_from: str, rcpt_to: str,
               message: bytes, *extra: str, timeout: float = 60, check: bool = True):
    """swaks in the client namespace sending `message` (its whole DATA, read
    from a file) as one transaction; `extra` adds swaks options (e.g.
    "--pipe-pipelining", "--protocol", "ESMTP"). Returns the finished process
    (swaks prints the whole dialogue on stdout)."""
    path = lab.dir / "swaks" / f"{abs(hash(message)):x}.eml"
    path.parent.mkdir(exist_ok=True)
    # swaks ends the data with CRLF "." CRLF of its own: a message that ends
    # in CRLF would arrive with an empty line more.
    path.write_bytes(message[:-2] if message.endswith(b"\r\n") else message)
    return lab.client.run(["swaks", "--server", address, "--port", str(port),
                           "--helo", CLIENT_NAME, "--from", mail_from, "--to", rcpt_to,
                           "--data", f"@{path}", "--timeout", str(int(timeout)), *extra],
                          timeout=timeout + 10, check=check)


def pop3_retrieve(lab: Lab, address: str, port: int, user: str, password: str,
                  numbers: list[int] | None = None, timeout: float = 60,
                  namespace: Namespace | None = None) -> list[bytes]:
    """poplib: USER/PASS, then RETR each message (all when `numbers` is
    None), QUIT. Returns each message as poplib gives it (dot-unstuffed
    lines joined with CRLF, plus a final CRLF)."""
    client = NamespacePOP3(namespace or lab.client, address, port, timeout=timeout)
    try:
        client.user(user)
        client.pass_(password)
        if numbers is None:
            count, _ = client.stat()
            numbers = list(range(1, count + 1))
        out = []
        for number in numbers:
            _, lines, _ = client.retr(number)
            out.append(b"\r\n".join(lines) + b"\r\n")
        return out
    finally:
        try:
            client.quit()
        except (poplib.error_proto, OSError):
            client.close()


def imap_fetch(lab: Lab, address: str, port: int, user: str, password: str,
               item: str = "BODY.PEEK[]", mailbox: str = "INBOX", timeout: float = 60,
               namespace: Namespace | None = None) -> list[bytes]:
    """imaplib: LOGIN, SELECT, then one FETCH 1:* of `item` (BODY[],
    BODY.PEEK[], RFC822, ...), LOGOUT. Returns the literal of each message in
    sequence order."""
    client = NamespaceIMAP4(namespace or lab.client, address, port, timeout=timeout)
    try:
        client.login(user, password)
        typ, data = client.select(mailbox)
        if typ != "OK":
            raise imaplib.IMAP4.error(f"SELECT {mailbox}: {data}")
        if int(data[0]) == 0:
            return []
        typ, data = client.fetch("1:*", f"({item})")
        if typ != "OK":
            raise imaplib.IMAP4.error(f"FETCH {item}: {data}")
        found = []
        for part in data:
            if isinstance(part, tuple):
                number = int(re.match(rb"(\d+)", part[0]).group(1))
                found.append((number, part[1]))
        return [literal for _, literal in sorted(found)]
    finally:
        try:
            client.logout()
        except (imaplib.IMAP4.error, OSError):
            client.shutdown()

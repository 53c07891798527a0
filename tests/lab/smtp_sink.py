#!/usr/bin/python3
"""A minimal SMTP server that keeps what it gets (run by the lab, see
servers.SmtpSink): the relay that nfqscand's notifications go to.

Speaks enough of RFC 5321 for libcurl, smtplib and swaks: EHLO/HELO, MAIL
FROM, RCPT TO, DATA, RSET, NOOP, QUIT, with PIPELINING (commands are read
line by line from one buffer, so a batch is answered in order), 8BITMIME
and SIZE advertised. Every accepted message is stored as STORE/N.eml (the
data dot-unstuffed, without the terminating dot line) and then STORE/N.json
(envelope: mail_from, rcpt_to, helo, peer); the .json appears last, by
rename, so a reader that sees it sees the whole message.
"""

import argparse
import itertools
import json
import os
import socket
import sys
import threading

MAX_LINE = 4096
MAX_MESSAGE = 64 * 1024 * 1024


class Session:
    def __init__(self, conn: socket.socket, peer: str, store: str, numbers):
        self.conn = conn
        self.peer = peer
        self.store = store
        self.numbers = numbers
        self.buffer = b""
        self.helo = ""
        self.reset()

    def reset(self) -> None:
        self.mail_from = None
        self.rcpt_to: list[str] = []

    def reply(self, text: str) -> None:
        self.conn.sendall(text.encode() + b"\r\n")

    def line(self) -> bytes | None:
        while b"\n" not in self.buffer:
            if len(self.buffer) > MAX_MESSAGE:
                return None
            chunk = self.conn.recv(65536)
            if not chunk:
                return None
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.rstrip(b"\r")

    def run(self) -> None:
        self.reply("220 sink.lab.test ESMTP nfqscan lab sink")
        while (line := self.line()) is not None:
            if len(line) > MAX_LINE:
                self.reply("500 5.5.2 line too long")
                continue
            verb, _, arg = line.decode("utf-8", "replace").partition(" ")
            verb = verb.upper()
            if verb == "EHLO":
                self.helo = arg.strip()
                self.reset()
                self.conn.sendall(b"250-sink.lab.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n"
                                  + f"250 SIZE {MAX_MESSAGE}\r\n".encode())
            elif verb == "HELO":
                self.helo = arg.strip()
                self.reset()
                self.reply("250 sink.lab.test")
            elif verb == "MAIL" and arg.upper().startswith("FROM:"):
                if not self.helo:
                    self.reply("503 5.5.1 EHLO first")
                    continue
                self.reset()
                self.mail_from = path_of(arg[5:])
                self.reply("250 2.1.0 ok")
            elif verb == "RCPT" and arg.upper().startswith("TO:"):
                if self.mail_from is None:
                    self.reply("503 5.5.1 MAIL first")
                    continue
                self.rcpt_to.append(path_of(arg[3:]))
                self.reply("250 2.1.5 ok")
            elif verb == "DATA":
                if not self.rcpt_to:
                    self.reply("503 5.5.1 RCPT first")
                    continue
                self.reply("354 end with <CRLF>.<CRLF>")
                data = self.data()
                if data is None:
                    return
                number = self.save(data)
                self.reply(f"250 2.0.0 ok: stored as {number}")
                self.reset()
            elif verb == "RSET":
                self.reset()
                self.reply("250 2.0.0 ok")
            elif verb == "NOOP":
                self.reply("250 2.0.0 ok")
            elif verb == "QUIT":
                self.reply("221 2.0.0 bye")
                return
            else:
                self.reply("502 5.5.2 command not implemented")

    def data(self) -> bytes | None:
        lines = []
        while (line := self.line()) is not None:
            if line == b".":
                return b"".join(lines)
            lines.append((line[1:] if line.startswith(b".") else line) + b"\r\n")
        return None

    def save(self, data: bytes) -> int:
        number = next(self.numbers)
        base = os.path.join(self.store, str(number))
        with open(base + ".eml", "wb") as f:
            f.write(data)
        meta = {"mail_from": self.mail_from, "rcpt_to": self.rcpt_to, "helo": self.helo,
                "peer": self.peer}
        with open(base + ".json.tmp", "w") as f:
            json.dump(meta, f)
        os.rename(base + ".json.tmp", base + ".json")
        return number


def path_of(arg: str) -> str:
    """The address of a MAIL FROM / RCPT TO argument: "<a@b> SIZE=1" -> "a@b"
    ("<>" -> "")."""
    arg = arg.strip()
    if arg.startswith("<"):
        return arg[1:arg.find(">")] if ">" in arg else arg[1:]
    return arg.split(" ")[0]


def serve(conn, peer, store, numbers) -> None:
    with conn:
        try:
            Session(conn, peer, store, numbers).run()
        except OSError as exc:
            print(f"smtp_sink: {peer}: {exc}", file=sys.stderr, flush=True)


def listen(address: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    sock.bind((address, port))
    sock.listen(64)
    return sock


def accept_loop(sock, store, numbers) -> None:
    while True:
        conn, addr = sock.accept()
        threading.Thread(target=serve, args=(conn, addr[0], store, numbers),
                         daemon=True).start()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", action="append", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--store", required=True)
    args = parser.parse_args()
    existing = [int(n.split(".")[0]) for n in os.listdir(args.store) if n.endswith(".json")]
    numbers = itertools.count(max(existing, default=0) + 1)  # next() holds the GIL: unique
    sockets = [listen(address, args.port) for address in args.listen]
    for sock in sockets[1:]:
        threading.Thread(target=accept_loop, args=(sock, args.store, numbers),
                         daemon=True).start()
    accept_loop(sockets[0], args.store, numbers)


if __name__ == "__main__":
    main()

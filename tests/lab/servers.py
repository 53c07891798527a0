"""Real servers run as private instances in the lab's server namespace.

Each instance lives in its own directory under the lab's temp dir (config,
state, logs, data); nothing under /etc is read for configuration or changed.
Every server is started in the foreground (so the lab owns the process) and
is ready when its port answers on both address families.
"""

from __future__ import annotations

import dbm.ndbm
import hashlib
import json
import os
import pwd
import re
import sys
from pathlib import Path

from lab import SERVER4, SERVER6, Lab, Process, host_in_url, wait_until

HERE = Path(__file__).resolve().parent


def _mkdirs(*paths: Path, owner: str | None = None, mode: int = 0o755) -> None:
    for path in paths:
        path.mkdir(parents=True, exist_ok=True)
        os.chmod(path, mode)
        if owner:
            pw = pwd.getpwnam(owner)
            os.chown(path, pw.pw_uid, pw.pw_gid)


class Nginx:
    """nginx serving DIR/www on the given ports, IPv4 and IPv6, with
    `dav_methods PUT` so clients can upload (into any path under DIR/www/upload),
    /stream/ served without Content-Length (SSI; see stream_url), and gzip
    for clients that accept it: /gz/ from NAME.gz files (Content-Length),
    /dyn/ compressed on the fly (chunked). Static files answer HEAD,
    If-Modified-Since (304) and Range (206) as nginx does by default."""

    def __init__(self, lab: Lab, ports=(80,), name: str = "nginx"):
        self.lab = lab
        self.ports = list(ports)
        self.name = name
        self.dir = lab.dir / name
        self.www = self.dir / "www"
        self.upload = self.www / "upload"
        _mkdirs(self.dir, self.www, self.dir / "logs")
        _mkdirs(self.upload, self.dir / "tmp", owner="www-data")
        listens = "\n".join(f"        listen {SERVER4}:{p};\n        listen [{SERVER6}]:{p};"
                            for p in self.ports)
        d = self.dir
        (d / "nginx.conf").write_text(f"""\
daemon off;
master_process on;
worker_processes 1;
user www-data;
pid {d}/nginx.pid;
error_log {d}/logs/error.log info;
events {{ worker_connections 512; }}
http {{
    access_log {d}/logs/access.log;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    types {{ text/html html; text/plain txt; application/zip zip; }}
    default_type application/octet-stream;
    sendfile on;
    keepalive_timeout 30;
    server {{
{listens}
        server_name lab;
        root {self.www};
        client_max_body_size 0;
        location /upload/ {{
            dav_methods PUT;
            create_full_put_path on;
            dav_access user:rw group:r all:r;
        }}
        # Served through SSI: nginx sends no Content-Length, and to an
        # HTTP/1.0 request (curl -0) it ends the body by closing, so a body
        # whose length changes in flight (the test rewrite) arrives whole.
        # The files must not contain "<!--".
        location /stream/ {{
            ssi on;
            ssi_types text/plain;
        }}
        # To a client that accepts gzip: /gz/NAME is NAME.gz as it is on
        # disk, with Content-Length and Content-Encoding: gzip; /dyn/NAME is
        # NAME compressed on the fly, chunked (no length is known ahead).
        location /gz/ {{
            gzip_static on;
        }}
        location /dyn/ {{
            gzip on;
            gzip_min_length 0;
            gzip_types text/plain application/octet-stream application/zip;
        }}
    }}
}}
""")
        lab.extra_logs.append(d / "logs" / "error.log")
        self.process: Process = lab.server.spawn(
            name, ["nginx", "-c", d / "nginx.conf", "-p", d, "-e", d / "logs/error.log"])
        self.wait_ready()

    def wait_ready(self) -> None:
        for port in self.ports:
            for address in (SERVER4, SERVER6):
                self.lab.server.wait_port(address, port, process=self.process)

    def add_file(self, relpath: str, data: bytes) -> str:
        """Serve `data` at /relpath; returns its sha256 hex digest."""
        path = self.www / relpath
        _mkdirs(path.parent)
        path.write_bytes(data)
        os.chmod(path, 0o644)
        return hashlib.sha256(data).hexdigest()

    def add_random_file(self, relpath: str, size: int) -> str:
        return self.add_file(relpath, os.urandom(size))

    def add_stream_file(self, name: str, data: bytes) -> str:
        """Serve `data` at /stream/NAME (no Content-Length, see stream_url);
        returns its sha256 hex digest. NAME ends in .txt (SSI is on for
        text/plain only) and `data` must not contain "<!--"."""
        if not name.endswith(".txt") or b"<!--" in data:
            raise ValueError("a stream file is a .txt without SSI comments")
        return self.add_file(f"stream/{name}", data)

    def stream_url(self, name: str, port: int | None = None, family: int = 4) -> str:
        """The URL of a stream file. Fetch it with HTTP/1.0 (curl -0): nginx
        then closes the connection at the end of the body instead of
        announcing its length."""
        return self.url(f"/stream/{name}", port=port, family=family)

    def url(self, path: str, port: int | None = None, family: int = 4) -> str:
        port = port or self.ports[0]
        address = SERVER4 if family == 4 else SERVER6
        return f"http://{host_in_url(address)}:{port}{path}"


class Dovecot:
    """Dovecot 2.3 with POP3 and IMAP on the given ports, plaintext login
    allowed, no TLS, passwd-file users with Maildirs under DIR/home."""

    MAIL_USER = "nobody"  # the uid the mail processes run as

    def __init__(self, lab: Lab, pop3_ports=(110,), imap_ports=(143,),
                 users: dict | None = None, name: str = "dovecot"):
        self.lab = lab
        self.pop3_ports = list(pop3_ports)
        self.imap_ports = list(imap_ports)
        self.users = users or {"alice": "wonderland"}
        self.name = name
        self.dir = d = lab.dir / name
        _mkdirs(d, d / "run", d / "state", d / "home")
        pw = pwd.getpwnam(self.MAIL_USER)
        lines = []
        for user, password in self.users.items():
            home = d / "home" / user
            _mkdirs(home, home / "Maildir", *(home / "Maildir" / sub for sub in ("cur", "new", "tmp")),
                    owner=self.MAIL_USER, mode=0o700)
            lines.append(f"{user}:{{PLAIN}}{password}:{pw.pw_uid}:{pw.pw_gid}::{home}::")
        (d / "users").write_text("\n".join(lines) + "\n")
        os.chmod(d / "users", 0o644)

        def listeners(service: str, ports: list) -> str:
            # The first replaces the default listener; TLS listeners are off.
            names = [service] + [f"{service}_{i}" for i in range(1, len(ports))]
            blocks = [f"  inet_listener {n} {{\n    port = {p}\n  }}"
                      for n, p in zip(names, ports or [0])]
            blocks.append(f"  inet_listener {service}s {{\n    port = 0\n  }}")
            return "\n".join(blocks)

        protocols = " ".join(p for p, ports in (("pop3", self.pop3_ports),
                                                   ("imap", self.imap_ports)) if ports)
        (d / "dovecot.conf").write_text(f"""\
protocols = {protocols}
listen = {SERVER4}, {SERVER6}
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
info_log_path = {d}/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:~/Maildir
first_valid_uid = 1
pop3_uidl_format = %08Xu%08Xv
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {d}/users
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {d}/users
}}
service pop3-login {{
{listeners("pop3", self.pop3_ports)}
}}
service imap-login {{
{listeners("imap", self.imap_ports)}
}}
""")
        lab.extra_logs.append(d / "dovecot.log")
        self.process: Process = lab.server.spawn(name, ["dovecot", "-F", "-c", d / "dovecot.conf"])
        self._count = 0
        self.wait_ready()

    def wait_ready(self) -> None:
        for address in (SERVER4, SERVER6):
            for port in self.pop3_ports:
                self.lab.server.wait_port(address, port, greeting=b"+OK", process=self.process)
            for port in self.imap_ports:
                self.lab.server.wait_port(address, port, greeting=b"* OK", process=self.process)

    def deliver(self, user: str, message: bytes) -> Path:
        """Put a message into the user's Maildir/new (as a local delivery
        agent would). Lines must end in CRLF or LF; stored as given."""
        self._count += 1
        home = self.dir / "home" / user / "Maildir"
        path = home / "new" / f"{1700000000 + self._count}.M{self._count}P1.lab"
        path.write_bytes(message)
        pw = pwd.getpwnam(self.MAIL_USER)
        os.chown(path, pw.pw_uid, pw.pw_gid)
        os.chmod(path, 0o600)
        return path


class BannerServer:
    """A custom TCP protocol server (tests/lab/banner_server.py) that greets
    with a banner, optionally waits for one line from the client, then
    streams `stream_bytes` bytes and closes. Stands in for protocols the
    scanner does not inspect, e.g. SSH."""

    def __init__(self, lab: Lab, port: int, banner: bytes, stream_bytes: int,
                 expect_line: bool = True, name: str | None = None):
        self.lab = lab
        self.port = port
        self.banner = banner
        self.stream_bytes = stream_bytes
        name = name or f"banner-{port}"
        cmd = [sys.executable if os.path.exists(sys.executable) else "/usr/bin/python3",
               HERE / "banner_server.py", "--port", port, "--banner", banner.decode(),
               "--stream-bytes", stream_bytes, "--listen", SERVER4, "--listen", SERVER6]
        if expect_line:
            cmd.append("--expect-line")
        self.process: Process = lab.server.spawn(name, cmd)
        for address in (SERVER4, SERVER6):
            lab.server.wait_port(address, port, greeting=banner.strip(), process=self.process)



class HttpLabServer:
    """tests/lab/http_server.py: the HTTP framings nginx does not produce
    (chunked with trailers, close-delimited bodies, 100-continue, a POST/PUT
    receiver that keeps what it got, multipart forms, WebSocket, keep-alive),
    on the given ports, IPv4 and IPv6. Files to serve go to DIR/www, what
    clients send to DIR/store (see http_server.py for the routes)."""

    def __init__(self, lab: Lab, ports=(80,), name: str = "http-lab"):
        self.lab = lab
        self.ports = list(ports)
        self.dir = lab.dir / name
        self.www = self.dir / "www"
        self.store = self.dir / "store"
        _mkdirs(self.dir, self.www, self.store)
        cmd = [sys.executable if os.path.exists(sys.executable) else "/usr/bin/python3",
               HERE / "http_server.py", "--listen", SERVER4, "--listen", SERVER6,
               "--root", self.www, "--store", self.store]
        for port in self.ports:
            cmd += ["--port", port]
        self.process: Process = lab.server.spawn(name, cmd)
        for port in self.ports:
            for address in (SERVER4, SERVER6):
                self.wait_answering(address, port)

    def wait_answering(self, address: str, port: int, timeout: float = 60.0) -> None:
        """Until GET /ready is answered 200 (from the server's own namespace,
        so nothing of it crosses the router)."""
        def answered():
            if not self.process.alive():
                raise RuntimeError(f"http_server exited with {self.process.returncode}:\n"
                                   f"{self.process.log_tail()}")
            try:
                with self.lab.server.connect(address, port, timeout=2.0) as sock:
                    sock.sendall(b"GET /ready HTTP/1.1\r\nHost: lab\r\nConnection: close\r\n\r\n")
                    data = b""
                    while chunk := sock.recv(4096):
                        data += chunk
                    return data.startswith(b"HTTP/1.1 200") and data.endswith(b"ready\n")
            except OSError:
                return False

        wait_until(answered, timeout, f"http_server on {address} port {port}")

    def add_file(self, name: str, data: bytes) -> str:
        """Serve `data` as NAME under every route (/cl/, /chunked/, /close/);
        returns its sha256 hex digest."""
        path = self.www / name
        path.write_bytes(data)
        os.chmod(path, 0o644)
        return hashlib.sha256(data).hexdigest()

    def url(self, path: str, port: int | None = None, family: int = 4) -> str:
        port = port or self.ports[0]
        address = SERVER4 if family == 4 else SERVER6
        return f"http://{host_in_url(address)}:{port}{path}"

    def stored(self, name: str) -> bytes | None:
        """The body of an upload to /store/NAME or /form/NAME, when the
        server received all of it; None otherwise."""
        path = self.store / name
        return path.read_bytes() if path.exists() else None

    def partial(self, name: str) -> bytes | None:
        """What the server got of an upload it never received whole (None
        when it got nothing at all, or all of it)."""
        path = self.store / f"{name}.part"
        return path.read_bytes() if path.exists() else None

    def form_file(self, name: str, filename: str) -> bytes | None:
        """A file part of a complete multipart upload to /form/NAME."""
        path = self.store / f"{name}.d" / filename
        return path.read_bytes() if path.exists() else None


class Postfix:
    """A private Postfix 3.7 on the given SMTP ports, IPv4 and IPv6, with its
    defaults otherwise (CHUNKING, PIPELINING, 8BITMIME, SMTPUTF8, DSN
    advertised; no STARTTLS: no certificate), delivering mail for `domain`
    with the virtual delivery agent into the Maildirs `dovecot` serves
    (DOVECOT/home/USER/Maildir, as Dovecot.MAIL_USER, so Dovecot reads what
    Postfix wrote); without `dovecot`, into DIR/mail/USER/Maildir for
    `users`. Any other domain is refused (no relaying, no DNS).

    The instance runs with `postfix -c DIR/etc start-fg`: its own main.cf and
    master.cf, queue and data directories, no chroot, its log in
    DIR/maillog. A delivered file is the message as Postfix writes it: LF
    line ends, trace headers prepended (see `as_sent`)."""

    MAIL_USER = Dovecot.MAIL_USER

    def __init__(self, lab: Lab, ports=(25,), dovecot: Dovecot | None = None,
                 users=("alice",), domain: str = "lab.test", name: str = "postfix",
                 message_size_limit: int = 64 * 1024 * 1024):
        self.lab = lab
        self.ports = list(ports)
        self.domain = domain
        self.name = name
        self.dir = d = lab.dir / name
        self.etc = d / "etc"
        self.spool = d / "spool"
        self.maillog = d / "maillog"
        _mkdirs(d, self.etc)
        _mkdirs(d / "data", owner="postfix")
        # The queue directory is Postfix's: `postfix check` (run by start)
        # creates its subdirectories with the owners it wants.
        _mkdirs(self.spool)
        if dovecot is not None:
            self.users = list(dovecot.users)
            self.mail_base = dovecot.dir / "home"
        else:
            self.users = list(users)
            self.mail_base = d / "mail"
            _mkdirs(self.mail_base)
            for user in self.users:
                maildir = self.mail_base / user / "Maildir"
                _mkdirs(self.mail_base / user, maildir,
                        *(maildir / sub for sub in ("cur", "new", "tmp")),
                        owner=self.MAIL_USER, mode=0o700)
        pw = pwd.getpwnam(self.MAIL_USER)
        (self.etc / "vmailbox").write_text(
            "".join(f"{user}@{domain} {user}/Maildir/\n" for user in self.users))
        (self.etc / "main.cf").write_text(f"""\
compatibility_level = 3.6
queue_directory = {self.spool}
data_directory = {d}/data
maillog_file = {self.maillog}
maillog_file_prefixes = {d}
myhostname = mail.{domain}
mydomain = {domain}
myorigin = $mydomain
mydestination =
inet_interfaces = {SERVER4}, [{SERVER6}]
inet_protocols = all
mynetworks = 127.0.0.0/8 [::1]/128
smtpd_banner = $myhostname ESMTP Postfix (lab)
smtpd_peername_lookup = no
disable_dns_lookups = yes
smtp_dns_support_level = disabled
smtp_host_lookup = native
lmtp_host_lookup = native
biff = no
# Nothing ever leaves: mail for other domains is refused at RCPT.
default_transport = error:the lab relays nothing
relay_transport = error:the lab relays nothing
smtpd_relay_restrictions = reject_unauth_destination
local_recipient_maps =
alias_maps =
alias_database =
virtual_mailbox_domains = {domain}
virtual_mailbox_base = {self.mail_base}
virtual_mailbox_maps = texthash:{self.etc}/vmailbox
virtual_uid_maps = static:{pw.pw_uid}
virtual_gid_maps = static:{pw.pw_gid}
virtual_minimum_uid = 1
message_size_limit = {message_size_limit}
virtual_mailbox_limit = 0
mailbox_size_limit = 0
# The lab's clients come and go fast; no penalties, no waiting.
smtpd_error_sleep_time = 0
smtpd_client_connection_rate_limit = 0
anvil_rate_time_unit = 1s
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
""")
        services = "".join(f"{port:<9} inet  n - n - - smtpd\n" for port in self.ports)
        (self.etc / "master.cf").write_text(services + """\
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
smtp      unix  - - n - - smtp
relay     unix  - - n - - smtp
showq     unix  n - n - - showq
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
virtual   unix  - n n - - virtual
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
""")
        # Postfix ignores configuration files younger than about 2 s.
        for path in self.etc.iterdir():
            os.utime(path, (path.stat().st_atime - 60, path.stat().st_mtime - 60))
        lab.extra_logs.append(self.maillog)
        self.process: Process = lab.server.spawn(
            name, ["postfix", "-c", self.etc, "start-fg"])
        self.wait_ready()

    def wait_ready(self) -> None:
        for port in self.ports:
            for address in (SERVER4, SERVER6):
                self.lab.server.wait_port(address, port, greeting=b"220 ", process=self.process)

    def address(self, user: str) -> str:
        return f"{user}@{self.domain}"

    def maildir(self, user: str) -> Path:
        return self.mail_base / user / "Maildir"

    def message_paths(self, user: str) -> list[Path]:
        """The user's delivered messages (new/ and cur/), oldest first (by
        the delivery time Postfix puts at the start of the file name)."""
        maildir = self.maildir(user)
        paths = [p for sub in ("new", "cur") for p in (maildir / sub).iterdir() if p.is_file()]

        def delivered(path: Path):
            seconds, _, rest = path.name.partition(".")
            micros = re.search(r"M(\d+)", rest)
            return (int(seconds) if seconds.isdigit() else 0,
                    int(micros.group(1)) if micros else 0, path.name)

        return sorted(paths, key=delivered)

    def messages(self, user: str) -> list[bytes]:
        """Every delivered message of `user` as Postfix wrote it, oldest first."""
        return [p.read_bytes() for p in self.message_paths(user)]

    def wait_for_delivery(self, user: str, count: int = 1, timeout: float = 30.0) -> list[bytes]:
        """Wait until `user` has at least `count` delivered messages; returns
        all of them, oldest first. The error on timeout has the mail log."""
        try:
            wait_until(lambda: len(self.message_paths(user)) >= count, timeout,
                       f"{count} message(s) delivered to {user}")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; {len(self.message_paths(user))} delivered, "
                               f"{self.queued()} in the queue; maillog:\n"
                               f"{self.log_tail()}") from None
        return self.messages(user)

    def queued(self) -> int:
        """Messages in the queue (received, not yet delivered or bounced)."""
        return sum(1 for sub in ("incoming", "active", "deferred", "hold", "maildrop")
                   for p in (self.spool / sub).rglob("*") if p.is_file())

    def wait_drained(self, timeout: float = 30.0) -> None:
        """Until the queue is empty. A delivered message leaves the queue a
        moment after it appears in the Maildir (the queue manager removes it
        once the local agent reports back), longer on a loaded machine: an
        empty queue is waited for, never expected at once."""
        wait_until(lambda: self.queued() == 0, timeout, f"{self.name}'s queue to drain")

    def reset(self, timeout: float = 30.0) -> None:
        """Wait for the queue to drain, then empty every user's Maildir
        (Dovecot's index files stay; it notices the removals)."""
        self.wait_drained(timeout)
        for user in self.users:
            for path in self.message_paths(user):
                path.unlink()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.maillog.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    @staticmethod
    def as_sent(delivered: bytes) -> bytes:
        """A delivered message as the client sent it: without the trace
        headers Postfix put in front (Return-Path, X-Original-To,
        Delivered-To and its own Received), with CRLF line ends. Takes
        the Maildir file (LF) or what a POP3/IMAP client got of it (CRLF)."""
        lines = delivered.replace(b"\r\n", b"\n").split(b"\n")
        i = 0
        prepended = (b"return-path:", b"x-original-to:", b"delivered-to:")
        while i < len(lines) and lines[i].lower().startswith(prepended):
            i += 1
        if i < len(lines) and lines[i].lower().startswith(b"received:"):
            i += 1
            while i < len(lines) and lines[i][:1] in (b" ", b"\t"):
                i += 1
        return b"\r\n".join(lines[i:])

    @staticmethod
    def body(message: bytes) -> bytes:
        """What follows the header block (CRLF or LF line ends)."""
        for separator in (b"\r\n\r\n", b"\n\n"):
            head, sep, body = message.partition(separator)
            if sep:
                return body
        return b""


class SmtpSink:
    """tests/lab/smtp_sink.py: a minimal SMTP server (EHLO/HELO, MAIL,
    RCPT, DATA, RSET, NOOP, QUIT; PIPELINING, 8BITMIME, SIZE) that keeps
    every message it accepts, for notifications. Runs in `namespace` (the
    server's by default) on `addresses`, port `port`."""

    def __init__(self, lab: Lab, port: int = 2526, namespace=None,
                 addresses=(SERVER4, SERVER6), name: str = "smtp-sink"):
        self.lab = lab
        self.port = port
        self.namespace = namespace or lab.server
        self.addresses = list(addresses)
        self.dir = lab.dir / name
        self.store = self.dir / "messages"
        _mkdirs(self.dir, self.store)
        cmd = [sys.executable if os.path.exists(sys.executable) else "/usr/bin/python3",
               HERE / "smtp_sink.py", "--port", port, "--store", self.store]
        for address in self.addresses:
            cmd += ["--listen", address]
        self.process: Process = self.namespace.spawn(name, cmd)
        for address in self.addresses:
            self.namespace.wait_port(address, port, greeting=b"220 ", process=self.process)

    @property
    def relay(self) -> str:
        """host:port for [notify] relay (the first address)."""
        return f"{host_in_url(self.addresses[0])}:{self.port}"

    def received(self) -> list[dict]:
        """Every accepted message, in arrival order: {"mail_from": str,
        "rcpt_to": [str], "helo": str, "peer": str, "data": bytes (as
        sent, dot-unstuffed, CRLF line ends, without the final dot line)}."""
        out = []
        for meta in sorted(self.store.glob("*.json"), key=lambda p: int(p.stem)):
            entry = json.loads(meta.read_text())
            entry["data"] = meta.with_suffix(".eml").read_bytes()
            out.append(entry)
        return out

    def wait_for_messages(self, count: int = 1, timeout: float = 30.0) -> list[dict]:
        wait_until(lambda: len(list(self.store.glob("*.json"))) >= count, timeout,
                   f"{count} message(s) at {self.relay}")
        return self.received()

    def reset(self) -> None:
        for path in self.store.iterdir():
            path.unlink()


class MailServers:
    """The mail lab of the server namespace: Postfix on SMTP_PORTS
    delivering for DOMAIN into the Maildirs of Dovecot (POP3_PORTS,
    IMAP_PORTS), and an SmtpSink on SINK_PORT for notifications. The first
    port of each list is the protocol's standard one, the second one that
    rules/nfqscan.toml does not list (found by the probes, or not at all)."""

    SMTP_PORTS = (25, 2525)
    POP3_PORTS = (110, 1110)
    IMAP_PORTS = (143, 1143)
    SINK_PORT = 2526
    DOMAIN = "lab.test"
    USERS = {"alice": "wonderland", "bob": "builder"}

    def __init__(self, lab: Lab):
        self.lab = lab
        self.dovecot = Dovecot(lab, pop3_ports=self.POP3_PORTS, imap_ports=self.IMAP_PORTS,
                               users=dict(self.USERS))
        self.postfix = Postfix(lab, ports=self.SMTP_PORTS, dovecot=self.dovecot,
                               domain=self.DOMAIN)
        self.sink = SmtpSink(lab, port=self.SINK_PORT)

    def address(self, user: str) -> str:
        return self.postfix.address(user)

    def password(self, user: str) -> str:
        return self.USERS[user]

    def reset(self) -> None:
        """Empty mailboxes and the sink (between parts of a test)."""
        self.postfix.reset()
        self.sink.reset()


class Vsftpd:
    """vsftpd 3.0 on the given control ports, IPv4 and IPv6 (one process per
    address family and port: vsftpd listens on one socket each), passive
    (PASV, EPSV; data ports `pasv_ports`, inclusive) and active (PORT, EPRT;
    data connections from port 20 unless `port20` is false). Logins:
    anonymous (read-only, DIR/anon) and the virtual users of `users`
    (password checked by PAM: pam_userdb and DIR/users.db), who all
    share DIR/home as their root, writable: uploads land in DIR/home/upload.

    Virtual users need a PAM service, which PAM only reads from /etc/pam.d:
    each process runs under `unshare --mount` with DIR/pam.d bind-mounted
    over /etc/pam.d in that mount namespace only. isolate_network is off
    (its default gives every session a network namespace of its own), and
    so is the seccomp sandbox (it refuses the calls PAM makes in the lab).
    With `tls`, AUTH TLS is offered (a self-signed certificate), not
    required. The log (DIR/vsftpd.log) has every command and reply."""

    CONTROL_PORTS = (21,)
    PASV_PORTS = (30000, 30099)
    USER = "ftp"  # what virtual users run as (the file owner of uploads)

    def __init__(self, lab: Lab, ports=CONTROL_PORTS, users: dict | None = None,
                 pasv_ports: tuple[int, int] = PASV_PORTS, port20: bool = True,
                 tls: bool = False, name: str = "vsftpd"):
        self.lab = lab
        self.ports = list(ports)
        self.users = users or {"alice": "wonderland"}
        self.pasv_ports = pasv_ports
        self.name = name
        self.dir = d = lab.dir / name
        self.anon = d / "anon"
        self.home = d / "home"
        self.upload = self.home / "upload"
        self.log = d / "vsftpd.log"
        _mkdirs(d, d / "pam.d", d / "empty", self.anon)
        # The chroot of a login must not be writable by its user (vsftpd
        # refuses it); the upload folder below it is.
        _mkdirs(self.home)
        _mkdirs(self.upload, owner=self.USER)
        # pam_userdb reads a Berkeley DB hash of user -> password, which is
        # what Debian's Python builds dbm.ndbm on. (pam_exec hangs under
        # vsftpd: its SIGCHLD handler reaps the helper pam_exec waits for.)
        with dbm.ndbm.open(str(d / "users"), "n", 0o600) as db:
            for user, password in self.users.items():
                db[user.encode()] = password.encode()
        (d / "pam.d" / "vsftpd-lab").write_text(
            f"auth required pam_userdb.so db={d}/users\n"
            "account required pam_permit.so\nsession required pam_permit.so\n")
        tls_lines = ""
        if tls:
            # A self-signed certificate: AUTH TLS offered, never required.
            lab.server.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                            "-keyout", d / "key.pem", "-out", d / "cert.pem", "-days", "2",
                            "-subj", "/CN=ftp.lab.test"])
            tls_lines = (f"ssl_enable=YES\nrsa_cert_file={d}/cert.pem\n"
                         f"rsa_private_key_file={d}/key.pem\nssl_tlsv1=YES\n"
                         "allow_anon_ssl=YES\nforce_local_logins_ssl=NO\n"
                         "force_local_data_ssl=NO\nrequire_ssl_reuse=NO\n")
        self.processes: list[Process] = []
        for port in self.ports:
            for family, address in ((4, SERVER4), (6, SERVER6)):
                conf = d / f"vsftpd-{family}-{port}.conf"
                conf.write_text(self._config(family, address, port, port20) + tls_lines)
                cmd = ["unshare", "--mount", "sh", "-c",
                       f"mount --bind {d}/pam.d /etc/pam.d && exec vsftpd {conf}"]
                self.processes.append(lab.server.spawn(f"{name}-{family}-{port}", cmd))
        lab.extra_logs.append(self.log)
        self.wait_ready()

    def _config(self, family: int, address: str, port: int, port20: bool) -> str:
        listen = (f"listen=YES\nlisten_ipv6=NO\nlisten_address={address}\n" if family == 4 else
                  f"listen=NO\nlisten_ipv6=YES\nlisten_address6={address}\n")
        low, high = self.pasv_ports
        d = self.dir
        return f"""\
{listen}listen_port={port}
background=NO
isolate_network=NO
isolate=NO
seccomp_sandbox=NO
secure_chroot_dir={d}/empty
pam_service_name=vsftpd-lab
ftpd_banner=lab FTP server ready
anonymous_enable=YES
anon_root={self.anon}
no_anon_password=YES
local_enable=YES
guest_enable=YES
guest_username={self.USER}
virtual_use_local_privs=YES
local_root={self.home}
chroot_local_user=YES
write_enable=YES
local_umask=022
pasv_enable=YES
pasv_min_port={low}
pasv_max_port={high}
port_enable=YES
connect_from_port_20={"YES" if port20 else "NO"}
xferlog_enable=YES
vsftpd_log_file={self.log}
log_ftp_protocol=YES
dual_log_enable=NO
syslog_enable=NO
use_localtime=NO
idle_session_timeout=300
data_connection_timeout=300
"""

    def wait_ready(self) -> None:
        i = 0
        for port in self.ports:
            for address in (SERVER4, SERVER6):
                self.lab.server.wait_port(address, port, greeting=b"220 ",
                                          process=self.processes[i])
                i += 1

    def add_file(self, relpath: str, data: bytes, anonymous: bool = False) -> str:
        """Put `data` at /relpath of the virtual users' tree (or of the
        anonymous one); returns its sha256 hex digest."""
        path = (self.anon if anonymous else self.home) / relpath
        _mkdirs(path.parent)
        path.write_bytes(data)
        os.chmod(path, 0o644)
        return hashlib.sha256(data).hexdigest()

    def uploaded(self, name: str) -> bytes | None:
        """What the server stored of an upload to /upload/NAME (whole or
        partial), None when it stored nothing."""
        path = self.upload / name
        return path.read_bytes() if path.exists() else None

    def url(self, path: str, port: int | None = None, family: int = 4,
            user: str | None = "alice") -> str:
        """ftp://USER:PASSWORD@server:port/path (anonymous with user None)."""
        port = port or self.ports[0]
        address = SERVER4 if family == 4 else SERVER6
        auth = f"{user}:{self.users[user]}@" if user else ""
        return f"ftp://{auth}{host_in_url(address)}:{port}{path}"

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

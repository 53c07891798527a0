"""FTP clients in a lab namespace (the client's, by default), so the control
connection and every data connection cross the router as a real client's
do: Python's ftplib (its sockets made in the namespace) and curl.

ftplib speaks PASV and PORT over IPv4, EPSV and EPRT over IPv6; with
`extended=True` it speaks EPSV and EPRT over IPv4 too (as curl does by
default). curl: EPSV by default, `--disable-epsv` for PASV, `--ftp-port -`
for active (EPRT, `--disable-eprt` for PORT)."""

from __future__ import annotations

import ftplib
import hashlib
import io
import os
import socket

from lab import Lab, Namespace

# The curl options of each data-connection mode.
CURL_MODES = {"epsv": [], "pasv": ["--disable-epsv"], "eprt": ["--ftp-port", "-"],
              "port": ["--ftp-port", "-", "--disable-eprt"]}


class NamespaceFTP(ftplib.FTP):
    """ftplib.FTP with its control and data sockets made in `namespace`.
    `passive` False: active mode (PORT/EPRT, the client listens)."""

    def __init__(self, namespace: Namespace, host: str, port: int = 21, timeout: float = 60,
                 passive: bool = True, extended: bool = False):
        self.namespace = namespace
        self.extended = extended
        super().__init__(timeout=timeout)
        self.set_pasv(passive)
        self.connect(host, port)

    def connect(self, host="", port=0, timeout=-999, source_address=None):
        if host:
            self.host = host
        if port > 0:
            self.port = port
        if timeout != -999:
            self.timeout = timeout
        self.sock = self.namespace.connect(self.host, self.port, timeout=self.timeout)
        self.af = self.sock.family
        self.file = self.sock.makefile("r", encoding=self.encoding)
        self.welcome = self.getresp()
        return self.welcome

    def makepasv(self):
        if self.extended and self.af == socket.AF_INET:
            return ftplib.parse229(self.sendcmd("EPSV"), self.sock.getpeername())
        return super().makepasv()

    def makeport(self):
        sock = self.namespace.socket(self.af)
        sock.bind(("", 0))
        sock.listen(1)
        port = sock.getsockname()[1]
        host = self.sock.getsockname()[0]
        if self.af == socket.AF_INET and not self.extended:
            self.sendport(host, port)
        else:
            self.sendeprt(host, port)
        sock.settimeout(self.timeout)
        return sock

    def ntransfercmd(self, cmd, rest=None):
        if not self.passiveserver:
            return super().ntransfercmd(cmd, rest)  # makeport above
        # ftplib's passive branch, with the data socket made in the namespace.
        host, port = self.makepasv()
        conn = self.namespace.connect(host, port, timeout=self.timeout)
        try:
            if rest is not None:
                self.sendcmd(f"REST {rest}")
            resp = self.sendcmd(cmd)
            if resp[0] == "2":
                resp = self.getresp()
            if resp[0] != "1":
                raise ftplib.error_reply(resp)
        except BaseException:
            conn.close()
            raise
        return conn, ftplib.parse150(resp) if resp[:3] == "150" else None


def ftp_session(lab: Lab, family: int, port: int = 21, user: str = "alice",
                password: str = "wonderland", passive: bool = True, extended: bool = False,
                timeout: float = 120, namespace: Namespace | None = None,
                address: str | None = None) -> NamespaceFTP:
    """A logged-in ftplib session from the client namespace, binary mode,
    to the server (or to `address`, e.g. a port forward on the router)."""
    ftp = NamespaceFTP(namespace or lab.client, address or lab.server_address(family), port,
                       timeout=timeout, passive=passive, extended=extended)
    try:
        ftp.login(user, password)
        ftp.voidcmd("TYPE I")
    except BaseException:
        ftp.close()
        raise
    return ftp


def _reply_after(ftp: NamespaceFTP, exc: BaseException) -> str:
    """The control reply that ends a transfer whose data connection broke
    (the server still answers on the control connection)."""
    try:
        return ftp.getresp()
    except ftplib.Error as reply:
        return str(reply)
    except OSError as err:
        return f"no reply ({err}) after: {exc!r}"


def retr(ftp: NamespaceFTP, path: str, rest: int | None = None) -> tuple[bytes, str]:
    """RETR `path` (after REST `rest`): (what the data connection carried,
    the final control reply, e.g. "226 Transfer complete." or "550 ...")."""
    chunks: list[bytes] = []
    try:
        reply = ftp.retrbinary(f"RETR {path}", chunks.append, rest=rest)
    except ftplib.Error as exc:
        reply = str(exc)
    except OSError as exc:
        reply = _reply_after(ftp, exc)
    return b"".join(chunks), reply


def stor(ftp: NamespaceFTP, path: str, data: bytes, command: str = "STOR",
         rest: int | None = None) -> str:
    """STOR (or APPE) `data` as `path` (after REST `rest`): the final
    control reply."""
    try:
        return ftp.storbinary(f"{command} {path}", io.BytesIO(data), rest=rest)
    except ftplib.Error as exc:
        return str(exc)
    except OSError as exc:
        return _reply_after(ftp, exc)


def curl_ftp(lab: Lab, url: str, *extra, upload: bytes | None = None,
             timeout: float = 120) -> dict:
    """curl with an ftp:// URL in the client namespace, verbose: downloads
    into a file (or, with `upload`, sends those bytes with -T). Returns exit
    (curl's status: 0, or e.g. 18 when the server did not report 226),
    body, sha256, replies (the server's reply lines curl logged, "226 ...",
    "550 ..."), transfer_reply (the reply that ended the last transfer:
    the first after its 1xx; None without one) and stderr."""
    base = lab.dir / "ftp-curl" / os.urandom(4).hex()
    base.parent.mkdir(exist_ok=True)
    out = base.with_suffix(".out")
    args = ["--verbose", *extra]
    if upload is not None:
        source = base.with_suffix(".up")
        source.write_bytes(upload)
        args += ["--upload-file", str(source)]
    else:
        args += ["--output", str(out)]
    proc = lab.curl(*args, url, timeout=timeout, check=False)
    stderr = proc.stderr.decode(errors="replace")
    body = out.read_bytes() if out.exists() else b""
    replies = [line[2:] for line in stderr.splitlines() if line.startswith("< ")]
    starts = [i for i, r in enumerate(replies) if r[:1] == "1"]
    final = replies[starts[-1] + 1] if starts and starts[-1] + 1 < len(replies) else None
    return {"exit": proc.returncode, "body": body, "sha256": hashlib.sha256(body).hexdigest(),
            "replies": replies, "transfer_reply": final, "stderr": stderr}

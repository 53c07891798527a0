"""Real clients in the lab's client namespace: curl for HTTP, POP3 and IMAP,
and Python sockets where a test needs to know every byte it sent."""

from __future__ import annotations

import base64
import functools
import hashlib
import http.client
import os
import random
import socket
import struct
import urllib.error
import urllib.request

from http_server import ws_frame
from lab import Lab, Namespace, host_in_url


def sha256_file(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def curl_download(lab: Lab, url: str, *extra, timeout: float = 120) -> dict:
    """GET `url` with curl into a file; returns curl's own figures
    (http_code, size_download, size_header, size_request) and the sha256."""
    out = lab.dir / "downloads" / f"{os.urandom(4).hex()}.bin"
    out.parent.mkdir(exist_ok=True)
    fmt = "%{http_code} %{size_download} %{size_header} %{size_request} %{num_connects}"
    proc = lab.curl("--fail", "--output", str(out), "--write-out", fmt, *extra, url,
                    timeout=timeout)
    code, size, header, request, connects = proc.stdout.decode().split()
    result = {"http_code": int(code), "size_download": int(size), "size_header": int(header),
              "size_request": int(request), "num_connects": int(connects),
              "sha256": sha256_file(out), "path": out}
    return result


def _last_header_block(text: str) -> dict:
    """The headers of the final response in a curl --dump-header file (after
    any 1xx interim responses), keys lowercased, with the trailer fields of
    a chunked body (curl writes them as a block of their own) added."""
    blocks = [b for b in text.replace("\r\n", "\n").split("\n\n") if b.strip()]
    starts = [i for i, b in enumerate(blocks) if b.startswith("HTTP/")]
    headers: dict = {}
    if not starts:
        return headers
    lines = blocks[starts[-1]].splitlines()
    headers[":status-line"] = lines[0]
    for line in lines[1:] + [l for b in blocks[starts[-1] + 1:] for l in b.splitlines()]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    return headers


def curl_fetch(lab: Lab, url: str, *extra, timeout: float = 120, check: bool = True) -> dict:
    """One request with curl, without --fail: a block page (403) is an
    answer like any other. `extra` adds curl options (-X, --data-binary,
    -H, -F, --compressed, -r ...). Returns http_code, headers (the final
    response's, keys lowercased), body, sha256 (of the body as curl saved
    it), num_connects, time_starttransfer and time_total (seconds: to the
    first byte of the response, to the end), exit (curl's exit status; with
    `check`, non-zero raises)."""
    base = lab.dir / "downloads" / os.urandom(4).hex()
    base.parent.mkdir(exist_ok=True)
    out, dump = base.with_suffix(".bin"), base.with_suffix(".head")
    fmt = "%{http_code} %{num_connects} %{size_download} %{time_starttransfer} %{time_total}"
    proc = lab.curl("--output", str(out), "--dump-header", str(dump), "--write-out", fmt,
                    *extra, url, timeout=timeout, check=check)
    fields = proc.stdout.decode().split()
    body = out.read_bytes() if out.exists() else b""
    return {"http_code": int(fields[0]) if fields else 0,
            "num_connects": int(fields[1]) if len(fields) > 1 else 0,
            "time_starttransfer": float(fields[3]) if len(fields) > 3 else 0.0,
            "time_total": float(fields[4]) if len(fields) > 4 else 0.0,
            "headers": _last_header_block(dump.read_text(errors="replace")
                                          if dump.exists() else ""),
            "body": body, "sha256": hashlib.sha256(body).hexdigest(),
            "exit": proc.returncode, "stderr": proc.stderr.decode(errors="replace")}


def curl_many(lab: Lab, urls: list[str], *extra, timeout: float = 120) -> list[dict]:
    """Several URLs in one curl run, which reuses one keep-alive connection
    while the server allows it. Returns per URL: http_code, num_connects
    (0: the transfer reused a connection), body, sha256."""
    base = lab.dir / "downloads" / os.urandom(4).hex()
    base.parent.mkdir(exist_ok=True)
    args, outs = [], []
    for i, url in enumerate(urls):
        outs.append(base.with_suffix(f".{i}"))
        args += [url, "--output", str(outs[-1])]
    proc = lab.curl("--write-out", "%{http_code} %{num_connects}\n", *extra, *args,
                    timeout=timeout, check=False)
    results = []
    for out, line in zip(outs, proc.stdout.decode().splitlines()):
        code, connects = line.split()
        body = out.read_bytes() if out.exists() else b""
        results.append({"http_code": int(code), "num_connects": int(connects), "body": body,
                        "sha256": hashlib.sha256(body).hexdigest()})
    if len(results) != len(urls):
        raise AssertionError(f"curl reported {len(results)} of {len(urls)} transfers "
                             f"(exit {proc.returncode}): {proc.stderr.decode(errors='replace')}")
    return results


class NamespaceHTTPConnection(http.client.HTTPConnection):
    """http.client's connection, its socket made in a lab namespace."""

    def __init__(self, host, port=None, *, namespace: Namespace, **kwargs):
        super().__init__(host, port, **kwargs)
        self.namespace = namespace

    def connect(self):
        timeout = self.timeout if isinstance(self.timeout, (int, float)) else 60.0
        self.sock = self.namespace.connect(self.host, self.port, timeout=timeout)


def http_connection(lab: Lab, address: str, port: int, timeout: float = 60) -> NamespaceHTTPConnection:
    """A Python http.client connection from the client namespace (keep-alive
    across requests, as http.client does)."""
    return NamespaceHTTPConnection(address, port, namespace=lab.client, timeout=timeout)


class _NamespaceHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, namespace: Namespace):
        super().__init__()
        self.namespace = namespace

    def http_open(self, req):
        return self.do_open(functools.partial(NamespaceHTTPConnection, namespace=self.namespace),
                            req)


def urllib_fetch(lab: Lab, url: str, data: bytes | None = None, method: str | None = None,
                 headers: dict | None = None, timeout: float = 120):
    """urllib.request from the client namespace, no proxies. Returns
    (status, headers, body); an HTTP error status is returned, not raised."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                         _NamespaceHTTPHandler(lab.client))
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with opener.open(request, timeout=timeout) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, err.headers, err.read()


def websocket_echo(lab: Lab, address: str, port: int, payloads: list[bytes],
                   path: str = "/ws", timeout: float = 30) -> tuple[bytes, list[bytes]]:
    """A WebSocket client: the upgrade request, then each payload as a
    masked binary frame, reading each echo back, then a close. Returns (the
    response head, the payloads echoed)."""
    key = base64.b64encode(os.urandom(16)).decode()
    with lab.client.connect(address, port, timeout=timeout) as sock:
        sock.sendall((f"GET {path} HTTP/1.1\r\nHost: {host_in_url(address)}:{port}\r\n"
                      "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                      f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
                     .encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed during the upgrade: {buf!r}")
            buf += chunk
        head, _, buf = buf.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            return head, []

        def read(n: int) -> bytes:
            nonlocal buf
            while len(buf) < n:
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionError("closed in a WebSocket frame")
                buf += chunk
            out, buf = buf[:n], buf[n:]
            return out

        def frame() -> tuple[int, bytes]:
            b0, b1 = read(2)
            n = b1 & 0x7F
            if n == 126:
                n = int.from_bytes(read(2), "big")
            elif n == 127:
                n = int.from_bytes(read(8), "big")
            return b0 & 0x0F, read(n)

        echoed = []
        for payload in payloads:
            sock.sendall(ws_frame(0x2, payload, mask=os.urandom(4)))
            opcode, data = frame()
            echoed.append(data)
        sock.sendall(ws_frame(0x8, b"\x03\xe8", mask=os.urandom(4)))
        frame()
        return head, echoed


def curl_mail(lab: Lab, urls: list[str], user: str, password: str,
              timeout: float = 60) -> bytes:
    """POP3/IMAP with curl (one connection for several URLs of one server);
    returns what curl printed: listings and message bodies, in URL order."""
    proc = lab.curl("--user", f"{user}:{password}", *urls, timeout=timeout)
    return proc.stdout


def banner_session(lab: Lab, address: str, port: int, client_banner: bytes,
                   timeout: float = 60) -> tuple[bytes, bytes]:
    """Connect from the client, read the server's banner line, send ours,
    then read until the server closes. Returns (banner, rest)."""
    with lab.client.connect(address, port, timeout=timeout) as sock:
        data = b""
        while b"\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        banner, _, rest = data.partition(b"\n")
        sock.sendall(client_banner)
        chunks = [rest]
        while True:
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
        return banner + b"\n", b"".join(chunks)


class HttpExchange:
    """One HTTP/1.1 connection driven byte by byte from the client namespace,
    so the test knows the exact TCP payload sent and received each way."""

    def __init__(self, lab: Lab, address: str, port: int, timeout: float = 60):
        self.sock = lab.client.connect(address, port, timeout=timeout)
        self.host = f"{host_in_url(address)}:{port}"
        self.sent = 0
        self.received = 0
        self._buffer = b""

    def close(self) -> None:
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def tcp_info(self) -> dict:
        """The client socket's TCP_INFO: bytes_sent counts every payload byte
        put on the wire (retransmissions included), bytes_retrans the
        retransmitted ones, unacked the segments still unacknowledged."""
        raw = self.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 512)
        unacked, = struct.unpack_from("<I", raw, 24)
        bytes_sent, bytes_retrans = struct.unpack_from("<QQ", raw, 200)
        return {"unacked": unacked, "bytes_sent": bytes_sent, "bytes_retrans": bytes_retrans}

    def request(self, method: str, path: str, body: bytes = b"", close: bool = False):
        """Send one request, read its whole response. Returns (status, headers, body)."""
        self.send(method, path, body, close)
        return self._response(method, close)

    def send(self, method: str, path: str, body: bytes = b"", close: bool = False,
             headers: dict | None = None) -> None:
        """Send one request without reading anything: several sends in a
        row are pipelined (read the responses with read_response)."""
        self.sock.sendall(self.encode(method, path, body, close, headers))

    def encode(self, method: str, path: str, body: bytes = b"", close: bool = False,
               headers: dict | None = None) -> bytes:
        head = [f"{method} {path} HTTP/1.1", f"Host: {self.host}", "User-Agent: nfqscan-lab"]
        if body or method in ("PUT", "POST"):
            head.append(f"Content-Length: {len(body)}")
        if close:
            head.append("Connection: close")
        head += [f"{k}: {v}" for k, v in (headers or {}).items()]
        data = ("\r\n".join(head) + "\r\n\r\n").encode() + body
        self.sent += len(data)
        return data

    def read_response(self, method: str = "GET"):
        """The next response: (status, headers, body), or None when the
        connection ended (FIN or RST) before another response began."""
        if not self._buffer:
            try:
                chunk = self._recv()
            except ConnectionResetError:
                return None
            if not chunk:
                return None
            self._buffer = chunk
        return self._response(method, close=False)

    def _recv(self) -> bytes:
        chunk = self.sock.recv(1 << 20)
        self.received += len(chunk)
        return chunk

    def _fill(self, what: str) -> None:
        chunk = self._recv()
        if not chunk:
            raise ConnectionError(f"connection closed in {what}: {self._buffer[:200]!r}")
        self._buffer += chunk

    def _line(self) -> bytes:
        while b"\r\n" not in self._buffer:
            self._fill("a chunk header")
        line, _, self._buffer = self._buffer.partition(b"\r\n")
        return line

    def _response(self, method: str, close: bool):
        while b"\r\n\r\n" not in self._buffer:
            self._fill("response head")
        head, _, self._buffer = self._buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {":status-line": lines[0]}
        for line in lines[1:]:
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            length = 0
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            return status, headers, self._chunked_body(headers)
        elif "content-length" in headers:
            length = int(headers["content-length"])
        else:
            length = None  # until close
        while length is None or len(self._buffer) < length:
            chunk = self._recv()
            if not chunk:
                if length is None:
                    break
                raise ConnectionError("connection closed in response body")
            self._buffer += chunk
        if length is None:
            body, self._buffer = self._buffer, b""
        else:
            body, self._buffer = self._buffer[:length], self._buffer[length:]
        if close:
            # Read to the server's FIN so `received` is the whole session.
            while self._recv():
                pass
        return status, headers, body

    def _chunked_body(self, headers: dict) -> bytes:
        """De-chunks the body; trailer fields are added to `headers`."""
        body = bytearray()
        while True:
            size = int(self._line().split(b";")[0], 16)
            if size == 0:
                break
            while len(self._buffer) < size + 2:
                self._fill("a chunk")
            body += self._buffer[:size]
            self._buffer = self._buffer[size + 2:]
        while line := self._line():
            key, _, value = line.decode("latin-1").partition(":")
            headers[key.strip().lower()] = value.strip()
        return bytes(body)


def mail_message(subject: str, body_bytes: int, seed: int = 1) -> bytes:
    """An RFC 5322 message with CRLF line ends whose body is `body_bytes` of
    base64-looking text (no line starts with a dot)."""
    rng = random.Random(seed)
    raw = rng.randbytes(body_bytes * 3 // 4 + 3)
    text = base64.b64encode(raw).decode()[:body_bytes]
    lines = [text[i:i + 76] for i in range(0, len(text), 76)]
    head = ["From: Lab Sender <sender@example.org>", "To: Alice <alice@example.org>",
            f"Subject: {subject}", "Message-ID: <" + f"{seed}.{subject.replace(' ', '.')}"
            + "@lab.example.org>", "Date: Mon, 20 Nov 2023 10:00:00 +0000",
            "MIME-Version: 1.0", "Content-Type: text/plain; charset=us-ascii"]
    return ("\r\n".join(head) + "\r\n\r\n" + "\r\n".join(lines) + "\r\n").encode()


"""Real clients in the lab's client namespace: curl for HTTP, POP3 and IMAP,
and Python sockets where a test needs to know every byte it sent."""

from __future__ import annotations

import base64
import hashlib
import os
import random
import socket
import struct

from lab import Lab, host_in_url


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
        head = [f"{method} {path} HTTP/1.1", f"Host: {self.host}", "User-Agent: nfqscan-lab"]
        if body or method in ("PUT", "POST"):
            head.append(f"Content-Length: {len(body)}")
        if close:
            head.append("Connection: close")
        data = ("\r\n".join(head) + "\r\n\r\n").encode() + body
        self.sock.sendall(data)
        self.sent += len(data)
        return self._response(method, close)

    def _recv(self) -> bytes:
        chunk = self.sock.recv(1 << 20)
        self.received += len(chunk)
        return chunk

    def _response(self, method: str, close: bool):
        while b"\r\n\r\n" not in self._buffer:
            chunk = self._recv()
            if not chunk:
                raise ConnectionError(f"connection closed in response head: {self._buffer!r}")
            self._buffer += chunk
        head, _, self._buffer = self._buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            length = 0
        elif "content-length" in headers:
            length = int(headers["content-length"])
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            raise NotImplementedError("chunked responses are not needed by the lab yet")
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


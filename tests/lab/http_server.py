#!/usr/bin/python3
"""An HTTP/1.1 server for the framings nginx does not produce (run by the lab
in the server namespace, see servers.HttpLabServer). Raw sockets, one thread
per connection, keep-alive unless the client or the route says otherwise.

    GET|HEAD /cl/NAME        ROOT/NAME with Content-Length
    GET      /chunked/NAME   ROOT/NAME chunked (chunks of varied sizes), with a
                             trailer X-Content-SHA256
    GET      /close/NAME     ROOT/NAME as HTTP/1.0 does it: no Content-Length,
                             the body ends at the close
    GET      /slow/NAME      ROOT/NAME with Content-Length: the head at once,
                             the body in SLOW_PIECES pieces over SLOW_SECONDS
    POST|PUT /store/NAME     the request body (Content-Length or chunked;
                             Expect: 100-continue answered) is written to
                             STORE/NAME.part as it arrives and renamed to
                             STORE/NAME once complete; 201 with its size and
                             sha256
    POST     /form/NAME      as /store/NAME, and once complete each file part
                             of the multipart/form-data body is written to
                             STORE/NAME.d/FILENAME
    GET      /ws             WebSocket upgrade (101), then every frame is
                             echoed back until a close frame
    GET      /ready          200 "ready" (readiness)

So a test can tell what the server got: a body it never received whole has
no STORE/NAME, only a STORE/NAME.part shorter than what was sent.
"""

import argparse
import base64
import hashlib
import os
import socket
import sys
import threading
import time
from pathlib import Path

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC11B85"
CHUNK_SIZES = (1, 17, 4096, 65536, 1000, 16384)  # cycled: odd boundaries on purpose
SLOW_PIECES, SLOW_SECONDS = 16, 4.0  # /slow/: a body that takes seconds to arrive
# Routes that serve a file of the root, and the methods each answers.
FILE_ROUTES = {"cl": ("GET", "HEAD"), "chunked": ("GET",), "slow": ("GET",), "close": ("GET",)}


class Closed(Exception):
    pass


class Connection:
    def __init__(self, sock: socket.socket, root: Path, store: Path):
        self.sock = sock
        self.root = root
        self.store = store
        self.buf = b""
        self.peer = sock.getpeername()[0]

    # -- reading ------------------------------------------------------------
    def _fill(self) -> None:
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise Closed()
        self.buf += chunk

    def read_line(self, limit: int = 65536) -> bytes:
        while b"\r\n" not in self.buf:
            if len(self.buf) > limit:
                raise ValueError("line too long")
            self._fill()
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_head(self):
        line = self.read_line()
        while line == b"":  # tolerate CRLF between pipelined requests
            line = self.read_line()
        method, target, version = line.decode("latin-1").split(" ", 2)
        headers = {}
        while True:
            line = self.read_line()
            if not line:
                break
            key, _, value = line.decode("latin-1").partition(":")
            headers[key.strip().lower()] = value.strip()
        return method, target, version, headers

    def body_pieces(self, headers: dict):
        """The request body in pieces as they arrive (de-chunked)."""
        if headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int(self.read_line().split(b";")[0], 16)
                if size == 0:
                    while self.read_line():  # trailers
                        pass
                    return
                left = size
                while left:
                    if not self.buf:
                        self._fill()
                    piece, self.buf = self.buf[:left], self.buf[left:]
                    left -= len(piece)
                    yield piece
                self.read_line()
        else:
            left = int(headers.get("content-length", "0"))
            while left:
                if not self.buf:
                    self._fill()
                piece, self.buf = self.buf[:left], self.buf[left:]
                left -= len(piece)
                yield piece

    # -- writing ------------------------------------------------------------
    def respond(self, status: str, body: bytes = b"", headers=(), head_only=False,
                close=False) -> None:
        lines = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", *headers]
        if close:
            lines.append("Connection: close")
        data = ("\r\n".join(lines) + "\r\n\r\n").encode()
        self.sock.sendall(data if head_only else data + body)

    # -- routes -------------------------------------------------------------
    def file(self, name: str) -> bytes | None:
        path = (self.root / name).resolve()
        if self.root.resolve() not in path.parents or not path.is_file():
            return None
        return path.read_bytes()

    def serve(self) -> None:
        try:
            while self.one_request():
                pass
        except (Closed, ConnectionError):
            pass
        except OSError as exc:
            log(f"{self.peer}: connection error: {exc}")
        finally:
            self.sock.close()

    def one_request(self) -> bool:
        """Serves one request; False when the connection is to be closed."""
        method, target, version, headers = self.read_head()
        close = (headers.get("connection", "").lower() == "close"
                 or version == "HTTP/1.0" and headers.get("connection", "").lower() != "keep-alive")
        route, _, name = target.lstrip("/").partition("/")
        log(f"{self.peer} {method} {target}")
        if route == "ready":
            self.respond("200 OK", b"ready\n", close=close)
        elif route in FILE_ROUTES and method in FILE_ROUTES[route]:
            data = self.file(name)
            if data is None:
                self.respond("404 Not Found", b"not found\n", close=close or route == "close")
            elif route == "cl":
                self.respond("200 OK", data, ["Content-Type: application/octet-stream"],
                             head_only=method == "HEAD", close=close)
            elif route == "chunked":
                self.send_chunked(data, close)
            elif route == "slow":
                self.send_slowly(data, close)
            else:  # close: HTTP/1.0, the body ends at the close
                self.sock.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\n"
                                  b"Connection: close\r\n\r\n" + data)
                self.sock.shutdown(socket.SHUT_WR)
                self.drain()
            if route == "close":
                return False
        elif route in ("store", "form") and method in ("POST", "PUT") and name:
            self.receive(route, name, headers, close)
        elif route == "ws" and headers.get("upgrade", "").lower() == "websocket":
            self.websocket(headers)
            return False
        else:
            self.respond("404 Not Found", b"no such route\n", close=close)
        return not close

    def send_slowly(self, data: bytes, close: bool) -> None:
        self.respond("200 OK", data, ["Content-Type: application/octet-stream"], head_only=True,
                     close=close)
        step = -(-len(data) // SLOW_PIECES)
        for at in range(0, len(data), step):
            time.sleep(SLOW_SECONDS / SLOW_PIECES)
            self.sock.sendall(data[at:at + step])

    def send_chunked(self, data: bytes, close: bool) -> None:
        head = ["HTTP/1.1 200 OK", "Content-Type: application/octet-stream",
                "Transfer-Encoding: chunked", "Trailer: X-Content-SHA256"]
        if close:
            head.append("Connection: close")
        out = [("\r\n".join(head) + "\r\n\r\n").encode()]
        pos = i = 0
        while pos < len(data):
            n = CHUNK_SIZES[i % len(CHUNK_SIZES)]
            piece = data[pos:pos + n]
            # A chunk extension now and then: legal, and parsers must skip it.
            ext = b";lab=1" if i % 5 == 3 else b""
            out.append(b"%x%s\r\n%s\r\n" % (len(piece), ext, piece))
            pos += len(piece)
            i += 1
        out.append(b"0\r\nX-Content-SHA256: %s\r\n\r\n"
                   % hashlib.sha256(data).hexdigest().encode())
        self.sock.sendall(b"".join(out))

    def receive(self, route: str, name: str, headers: dict, close: bool) -> None:
        if "/" in name or name.startswith("."):
            self.respond("400 Bad Request", b"bad name\n", close=True)
            return
        if headers.get("expect", "").lower() == "100-continue":
            self.sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        part = self.store / f"{name}.part"
        digest = hashlib.sha256()
        size = 0
        with open(part, "wb") as f:
            for piece in self.body_pieces(headers):
                f.write(piece)
                f.flush()  # what arrived is on disk even if the peer is reset
                digest.update(piece)
                size += len(piece)
        os.replace(part, self.store / name)
        if route == "form":
            self.store_form_files(name, headers.get("content-type", ""))
        log(f"{self.peer} stored {name}: {size} bytes")
        self.respond("201 Created", f"stored {size} {digest.hexdigest()}\n".encode(),
                     ["Content-Type: text/plain"], close=close)

    def store_form_files(self, name: str, content_type: str) -> None:
        boundary = content_type.partition("boundary=")[2].strip('"')
        if not boundary:
            return
        folder = self.store / f"{name}.d"
        folder.mkdir(exist_ok=True)
        body = (self.store / name).read_bytes()
        for part in body.split(b"--" + boundary.encode())[1:]:
            if part.startswith(b"--"):
                break
            head, _, content = part[2:].partition(b"\r\n\r\n")
            content = content[:-2] if content.endswith(b"\r\n") else content
            disposition = [l for l in head.decode("latin-1").split("\r\n")
                           if l.lower().startswith("content-disposition:")]
            if disposition and 'filename="' in disposition[0]:
                filename = disposition[0].split('filename="', 1)[1].split('"', 1)[0]
                (folder / os.path.basename(filename)).write_bytes(content)

    def websocket(self, headers: dict) -> None:
        accept = base64.b64encode(hashlib.sha1(
            headers.get("sec-websocket-key", "").encode() + WS_GUID).digest()).decode()
        self.sock.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n")
                          .encode())
        while True:
            opcode, payload = self.ws_frame()
            if opcode == 0x8:  # close: answer it and end
                self.sock.sendall(ws_frame(0x8, payload[:2]))
                return
            self.sock.sendall(ws_frame(opcode, payload))

    def ws_frame(self):
        b0, b1 = self.read_exact(2)
        length = b1 & 0x7F
        if length == 126:
            length = int.from_bytes(self.read_exact(2), "big")
        elif length == 127:
            length = int.from_bytes(self.read_exact(8), "big")
        mask = self.read_exact(4) if b1 & 0x80 else b"\0\0\0\0"
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(self.read_exact(length)))
        return b0 & 0x0F, payload

    def drain(self) -> None:
        """Wait for the client's close so the last bytes are not reset away."""
        self.sock.settimeout(30)
        try:
            while self.sock.recv(65536):
                pass
        except OSError:
            pass


def ws_frame(opcode: int, payload: bytes, mask: bytes | None = None) -> bytes:
    """One final WebSocket frame (RFC 6455); masked when `mask` is given."""
    head = bytes([0x80 | opcode])
    bit = 0x80 if mask else 0
    n = len(payload)
    if n < 126:
        head += bytes([bit | n])
    elif n < 1 << 16:
        head += bytes([bit | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([bit | 127]) + n.to_bytes(8, "big")
    if mask:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        head += mask
    return head + payload


def log(message: str) -> None:
    print(f"http_server: {message}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", action="append", required=True)
    parser.add_argument("--port", type=int, action="append", required=True)
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--store", type=Path, required=True)
    args = parser.parse_args()

    listeners = []
    for address in args.listen:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        for port in args.port:
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((address, port))
            sock.listen(64)
            listeners.append(sock)

    def accept_loop(sock):
        while True:
            conn, _ = sock.accept()
            threading.Thread(target=Connection(conn, args.root, args.store).serve,
                             daemon=True).start()

    threads = [threading.Thread(target=accept_loop, args=(s,), daemon=True) for s in listeners]
    for t in threads:
        t.start()
    log(f"listening on {args.listen} ports {args.port}")
    for t in threads:
        t.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())

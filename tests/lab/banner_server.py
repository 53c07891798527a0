#!/usr/bin/python3
"""A TCP server for protocols nfqscan does not inspect (run by the lab in the
server namespace): per connection it sends BANNER + CRLF, optionally reads
one line from the client (as an SSH server reads the client's version
string), then sends STREAM_BYTES pseudo-random bytes and closes.

The bytes are the SHA-256 counter stream of the seed, so a client can check
them with `expected_stream(n)` without the server telling it anything.
"""

import argparse
import hashlib
import socket
import sys
import threading

CHUNK = 64 * 1024


def expected_stream(size: int, seed: bytes = b"nfqscan-lab") -> bytes:
    block = _block(seed)
    whole, rest = divmod(size, len(block))
    return block * whole + block[:rest]


def _block(seed: bytes) -> bytes:
    # 64 KiB of pseudo-random bytes, repeated: incompressible enough for any
    # classifier, and cheap to produce for 20 MB.
    out = bytearray()
    counter = 0
    while len(out) < CHUNK:
        out += hashlib.sha256(seed + counter.to_bytes(8, "big")).digest()
        counter += 1
    return bytes(out[:CHUNK])


def serve(conn: socket.socket, banner: bytes, expect_line: bool, size: int) -> None:
    with conn:
        try:
            conn.sendall(banner + b"\r\n")
            if expect_line:
                line = b""
                while not line.endswith(b"\n"):
                    chunk = conn.recv(1024)
                    if not chunk:
                        return  # a readiness probe: greeting read, gone
                    line += chunk
            block = _block(b"nfqscan-lab")
            sent = 0
            while sent < size:
                n = min(len(block), size - sent)
                conn.sendall(block[:n])
                sent += n
            conn.shutdown(socket.SHUT_WR)
            # Wait for the client's close so the last bytes are not reset away.
            conn.settimeout(30)
            while conn.recv(4096):
                pass
        except OSError as exc:
            print(f"banner_server: connection error: {exc}", file=sys.stderr, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", action="append", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--banner", required=True)
    parser.add_argument("--stream-bytes", type=int, default=0)
    parser.add_argument("--expect-line", action="store_true")
    args = parser.parse_args()

    listeners = []
    for address in args.listen:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, args.port))
        sock.listen(64)
        listeners.append(sock)

    def accept_loop(sock):
        while True:
            conn, _ = sock.accept()
            threading.Thread(target=serve, daemon=True,
                             args=(conn, args.banner.encode(), args.expect_line,
                                   args.stream_bytes)).start()

    threads = [threading.Thread(target=accept_loop, args=(s,), daemon=True) for s in listeners]
    for t in threads:
        t.start()
    print(f"banner_server: listening on port {args.port}", flush=True)
    for t in threads:
        t.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())

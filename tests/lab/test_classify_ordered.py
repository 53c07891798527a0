"""Classification on the bytes the endpoints take (issue 13): on a port the
configuration does not name, the probes decide from the stream engine's
ordered, validated bytes, never from a raw segment the receiver discards.

A third party (Scapy, from the server's namespace with the server's
address) sends the client junk before the real exchange: a segment with a
wrong TCP checksum at the exact next number, one far outside the client's
window, or one at the exact next number whose timestamp (TSval) is older
than the server's SYN-ACK's (PAWS, RFC 7323). The client's kernel discards
all three; had nfqscand probed them, the flow would be released as "not a
scanned protocol" and the EICAR download that follows would pass. It must
still be classified as HTTP from the real request and get the block page.

Both ends are sockets the test holds, so that the junk lands before the
first real byte; the handshake's numbers are read off the wire with
tcpdump -S in the server's namespace."""

from __future__ import annotations

import json
import re
import secrets
import socket
import struct
import time

import pytest

from http_corpus import EICAR
from lab import wait_until
from test_http_av import SCAN

SCAPY = "/usr/bin/python3"
PORT = 18081  # in no [protocols.*] ports list: the probe must claim it

# Sends one segment described by argv[1] (JSON); "bad_checksum" spoils the
# TCP checksum Scapy computed; "ts": [TSval, TSecr] for a timestamp option.
FORGE = r"""
import json, sys
from scapy.all import IP, IPv6, TCP, Raw, send, conf
conf.verb = 0
s = json.loads(sys.argv[1])
l3 = IPv6(src=s["src"], dst=s["dst"]) if ":" in s["src"] else IP(src=s["src"], dst=s["dst"])
p = l3 / TCP(sport=s["sport"], dport=s["dport"], flags="PA", seq=s["seq"] % (1 << 32),
             ack=s["ack"] % (1 << 32), window=65535,
             options=[("NOP", None), ("NOP", None), ("Timestamp", tuple(s["ts"]))] if s.get("ts")
             else []) / Raw(bytes.fromhex(s["payload"]))
p = p.__class__(bytes(p))
if s["bad_checksum"]:
    p[TCP].chksum ^= 0x5555
send(p)
"""

SYN_ACK_RE = re.compile(r"Flags \[S\.\], seq (\d+), ack (\d+),[^\n]*?TS val (\d+) ecr (\d+)")
JUNK = b"JUNK that no probe knows, from nobody the client listens to\r\n" * 3


def open_pair(lab, family: int):
    """A connection from the client's namespace to PORT in the server's, and
    the server's first data number, the client's (as the server acks) and
    the SYN-ACK's timestamp option (TSval, TSecr)."""
    af = socket.AF_INET if family == 4 else socket.AF_INET6
    capture = lab.server.spawn(
        f"tcpdump-synack-{secrets.token_hex(3)}",
        ["tcpdump", "-i", "eth0", "-n", "-S", "-l", "-s", "200",
         f"tcp and src port {PORT} and tcp[tcpflags] & tcp-syn != 0"
         if family == 4 else f"ip6 and tcp and src port {PORT}"])
    try:
        wait_until(lambda: "listening on" in capture.log_tail(5) or not capture.alive(), 10,
                   "tcpdump in the server's namespace")
        listener = lab.server.socket(af)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((lab.server_address(family), PORT))
        listener.listen(1)
        listener.settimeout(10)
        client = lab.client.socket(af)
        client.settimeout(10)
        client.connect((lab.server_address(family), PORT))
        server, _ = listener.accept()
        listener.close()
        found = wait_until(lambda: SYN_ACK_RE.search(capture.log_tail(50)), 10,
                           "the SYN-ACK (with timestamps) in tcpdump's capture")
        return (client, server, int(found.group(1)) + 1, int(found.group(2)),
                (int(found.group(3)), int(found.group(4))))
    finally:
        capture.stop()


def forge(lab, segment: dict) -> None:
    segment = dict(segment, payload=segment["payload"].hex())
    lab.server.run([SCAPY, "-c", FORGE, json.dumps(segment)], timeout=60)


def read_until_closed(sock: socket.socket, timeout: float = 20) -> bytes:
    got = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except (socket.timeout, ConnectionResetError):
            break
        if not chunk:
            break
        got += chunk
    return got


def close(*socks: socket.socket) -> None:
    for sock in socks:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()


@pytest.mark.parametrize("family", [4, 6], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("junk", ["bad_checksum", "out_of_window", "old_timestamp"])
def test_junk_the_client_discards_does_not_release_an_http_flow_on_an_odd_port(
        lab, nfqscand, family, junk):
    daemon = nfqscand({"scan": SCAN})
    daemon.wait_engines()
    assert all(PORT not in p["ports"] for p in daemon.config["protocols"].values())
    before = daemon.status()
    client, server, server_seq, client_seq, (ts_val, ts_ecr) = open_pair(lab, family)
    try:
        far = (1 << 30) if junk == "out_of_window" else 0
        forge(lab, dict(src=lab.server_address(family), dst=lab.client_address(family),
                        sport=PORT, dport=client.getsockname()[1], seq=server_seq + far,
                        ack=client_seq, payload=JUNK, bad_checksum=junk == "bad_checksum",
                        # A million ticks before the SYN-ACK's TSval (serial
                        # arithmetic, as the client compares them).
                        ts=[(ts_val - 1_000_000) % (1 << 32), ts_ecr]
                        if junk == "old_timestamp" else None))
        # The junk reaches the router's queue a moment after Scapy sent it
        # (later on a loaded machine, where an idle moment may come first):
        # wait until nfqscand counted it, then look at the flow.
        def counted(status: dict) -> bool:
            if junk == "bad_checksum":
                return status["packets"]["bad_checksum"] > before["packets"]["bad_checksum"]
            counter = "paws" if junk == "old_timestamp" else "data_out_of_window"
            return (status["streams"]["peer_checks"].get(counter, 0)
                    > before["streams"]["peer_checks"].get(counter, 0))

        try:
            wait_until(lambda: counted(daemon.status()), 30, f"the {junk} junk to be counted")
        except TimeoutError as exc:
            status = daemon.status()
            raise AssertionError(f"{exc}: {status['packets']}, "
                                 f"{status['streams']['peer_checks']}") from None
        daemon.wait_queues_idle()
        flow = daemon.wait_flow(server_port=PORT)
        assert flow["disposition"] == "deciding", (
            f"the junk decided the flow before any real byte: {flow}")

        client.sendall(b"GET /eicar.com HTTP/1.1\r\nHost: odd\r\nUser-Agent: lab\r\n\r\n")
        server.settimeout(10)
        request = b""
        while b"\r\n\r\n" not in request:
            chunk = server.recv(4096)
            assert chunk, f"the server got {request!r} and then the end"
            request += chunk
        assert request.startswith(b"GET /eicar.com "), request
        server.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                       b"Content-Length: %d\r\n\r\n" % len(EICAR) + EICAR)
        got = read_until_closed(client)
    finally:
        close(client, server)

    assert EICAR not in got, f"the client got the EICAR file: {got[:300]!r}"
    assert got.startswith(b"HTTP/1.1 403"), f"no block page: {got[:300]!r}"
    flow = daemon.wait_flow(server_port=PORT)
    # nDPI reads the request packet just before the probe reads its bytes.
    assert flow["service"] == "http" and flow["claimed_by"] in ("probe", "dpi"), flow

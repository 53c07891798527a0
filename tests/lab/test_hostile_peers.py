"""Hostile peers against flows the stream engine rewrites (issue 13): a host
that knows a flow's addresses forges segments with Scapy while real Linux
endpoints talk through nfqscand's [test_rewrite] inspector (every "GROW"
the server sends becomes "GROWN-LONGER-TOKEN": offsets shifted, so a forged
segment the engine believed, or one that slipped past it, corrupts the
stream).

The forged segments leave the client's or the server's namespace with that
host's address: to the router they are indistinguishable from a third party
on either link. The numbers to forge at are read off the wire with tcpdump
(-S: absolute sequence numbers) in the namespace of the host the forgery
pretends to be, so they are in that host's sequence space. Scapy is Debian's
python3-scapy, run by /usr/bin/python3 (LAB-NOTES: python3 on PATH may lack
it).

Most tests hold both endpoints themselves (sockets created in the client's
and the server's namespaces), so that the server sends exactly what a test
needs and then stays silent while the forgery goes through."""

from __future__ import annotations

import json
import re
import secrets
import socket
import struct
import threading
import time

from clients import curl_download
from lab import wait_until
from servers import Nginx
from test_stream_rewrite import ALLOW, SMALL, assert_nothing_held
from tokens import rewrite, rewrite_config, token_digests, token_text

SCAPY = "/usr/bin/python3"
PORT = 80  # a [test_rewrite] port

# Sends the segments described in argv[1] (a JSON list) from this namespace.
# "ext": that many IPv6 destination options headers in front of TCP.
FORGE = r"""
import json, sys
from scapy.all import IP, IPv6, IPv6ExtHdrDestOpt, TCP, Raw, send, conf
conf.verb = 0
for s in json.loads(sys.argv[1]):
    if ":" in s["src"]:
        l3 = IPv6(src=s["src"], dst=s["dst"])
        for _ in range(s.get("ext", 0)):
            l3 = l3 / IPv6ExtHdrDestOpt()
    else:
        l3 = IP(src=s["src"], dst=s["dst"])
    seg = TCP(sport=s["sport"], dport=s["dport"], flags=s["flags"], seq=s["seq"] % (1 << 32),
              ack=s["ack"] % (1 << 32), window=s.get("window", 65535))
    send(l3 / seg / Raw(bytes.fromhex(s.get("payload", ""))))
"""

SEGMENT_RE = re.compile(r"Flags \[([^\]]*)\], seq (\d+):(\d+), ack (\d+),.* length (\d+)")


def forge(ns, segments: list[dict]) -> None:
    for s in segments:
        s["payload"] = s.get("payload", b"").hex()
    ns.run([SCAPY, "-c", FORGE, json.dumps(segments)], timeout=60)


class Capture:
    """tcpdump -S in `ns` of TCP from src_port to dst_port: the numbers of
    the data segments it saw, in the sender's sequence space as seen there."""

    def __init__(self, ns, src_port: int, dst_port: int):
        self.proc = ns.spawn(f"tcpdump-{ns.role}-{secrets.token_hex(3)}",
                             ["tcpdump", "-i", "eth0", "-n", "-S", "-l", "-s", "200",
                              f"tcp and src port {src_port} and dst port {dst_port}"])
        wait_until(lambda: "listening on" in self.proc.log_tail(5) or not self.proc.alive(),
                   10, f"tcpdump in {ns.name}")
        assert self.proc.alive(), self.proc.log_tail()

    def data_segments(self) -> list[tuple[int, int, int]]:
        """(seq, end, ack) of each segment with payload, in order."""
        found = []
        for line in self.proc.log_tail(10000).splitlines():
            m = SEGMENT_RE.search(line)
            if m and int(m.group(5)) > 0:
                found.append((int(m.group(2)), int(m.group(3)), int(m.group(4))))
        return found

    def wait_data(self, count: int = 1, timeout: float = 20) -> list[tuple[int, int, int]]:
        return wait_until(lambda: len(self.data_segments()) >= count and self.data_segments(),
                          timeout, "data segments in tcpdump's capture")

    def stop(self) -> None:
        self.proc.stop()


class SocketPair:
    """A TCP connection from the client's namespace to PORT in the server's,
    both ends held by the test."""

    def __init__(self, lab, family: int = 4, rcvbuf: int | None = None):
        af = socket.AF_INET if family == 4 else socket.AF_INET6
        self.server_address = lab.server_address(family)
        self.client_address = lab.client_address(family)
        listener = lab.server.socket(af)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.server_address, PORT))
        listener.listen(1)
        listener.settimeout(10)
        self.client = lab.client.socket(af)
        if rcvbuf:
            self.client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.client.settimeout(10)
        self.client.connect((self.server_address, PORT))
        self.server, _ = listener.accept()
        listener.close()
        self.client_port = self.client.getsockname()[1]

    def client_reads(self, size: int, timeout: float = 10) -> bytes:
        """What the client reads until it has `size` bytes or `timeout` passes."""
        got = b""
        deadline = time.monotonic() + timeout
        while len(got) < size and time.monotonic() < deadline:
            self.client.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                chunk = self.client.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            got += chunk
        return got

    def close(self) -> None:
        for sock in (self.client, self.server):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()


def server_segment(pair: SocketPair, lab, family: int, data: bytes) -> tuple[int, int, int]:
    """The server sends `data`; the client reads its rewrite. Returns (seq,
    end, ack) of the server's segment in the server's sequence space: `end`
    is the server's next sequence number, `ack` the client's."""
    capture = Capture(lab.server, PORT, pair.client_port)
    try:
        pair.server.sendall(data)
        expected = rewrite(data)
        assert pair.client_reads(len(expected)) == expected
        return capture.wait_data()[-1]
    finally:
        capture.stop()


def test_spoofed_ack_and_rsts_mid_transfer_leave_the_download_exact(lab, nfqscand):
    """A spoofed ACK far beyond anything sent (from the client's side), a RST
    and data far outside the window (from the server's side), mid-download:
    all dropped and counted, the download still exact."""
    nginx = Nginx(lab, ports=[PORT])
    original, expected = token_digests(SMALL)
    assert nginx.add_stream_file("tokens.txt", token_text(SMALL)) == original
    daemon = nfqscand(rewrite_config([PORT]), args=ALLOW)
    before = daemon.status()
    # The router sends towards the client at 1 Mbit/s until the forged
    # segments are out, at full speed after: the whole file would take 40 s
    # at that rate, so they land mid-transfer even on a loaded machine,
    # where each Scapy run takes seconds to start (at 2 Mbit/s throughout,
    # the download often ended first under load). A rate limit in curl
    # would only slow its reading: the socket buffers would take the whole
    # file at once.
    lab.router.run(["tc", "qdisc", "add", "dev", "cli0", "root", "tbf", "rate", "1mbit",
                    "burst", "32kbit", "latency", "1s"])

    result: dict = {}

    def fetch():
        try:
            result["got"] = curl_download(lab, nginx.stream_url("tokens.txt"), "-0",
                                          timeout=120)
        except Exception as exc:  # reported below
            result["error"] = exc

    thread = threading.Thread(target=fetch)
    thread.start()
    try:
        flow = daemon.wait_flow(server_port=PORT, server=lab.server_address(4),
                                client=lab.client_address(4))
        sport = flow["client_port"]
        # In the client's space: the server's numbers as the client sees
        # them (shifted by the rewrite), the client's own as they are.
        capture = Capture(lab.client, PORT, sport)
        try:
            seq, _, ack = capture.wait_data()[-1]
        finally:
            capture.stop()
        server, client = lab.server_address(4), lab.client_address(4)
        forge(lab.client, [dict(src=client, dst=server, sport=sport, dport=PORT, flags="A",
                                seq=ack, ack=seq + (1 << 30)) for _ in range(3)])
        to_client = dict(src=server, dst=client, sport=PORT, dport=sport, ack=ack)
        # Far enough from anything that the shift does not matter.
        forge(lab.server, [
            dict(to_client, flags="R", seq=seq + (3 << 30)),
            dict(to_client, flags="PA", seq=seq + (1 << 30), payload=b"GROW" * 200),
        ])
        assert "error" not in result and thread.is_alive(), (
            "the download ended before the forged segments went out: it proves nothing", result)
        lab.router.run(["tc", "qdisc", "change", "dev", "cli0", "root", "tbf", "rate", "10gbit",
                        "burst", "4mb", "latency", "1s"])
    finally:
        thread.join(timeout=150)
    assert "error" not in result, result.get("error")
    got = result["got"]
    assert got["http_code"] == 200
    assert got["sha256"] == expected, (
        f"the download differs from the expected rewrite: {got['size_download']} bytes")

    idle = assert_nothing_held(daemon, before)
    checks = idle["status"]["streams"]["peer_checks"]
    assert checks["acks_ahead"] >= 1, checks
    assert checks["rsts_out_of_window"] >= 1, checks
    assert checks["data_out_of_window"] >= 1, checks


def test_rsts_off_the_number_and_data_beyond_the_window_leave_the_flow_going(lab, nfqscand):
    """From the server's side, while it is silent (its numbers known
    exactly): a RST in the client's window but not at the expected number
    (dropped, the client gets a challenge ACK), one outside it (dropped),
    and data just past what the client's window plus the engine's slack
    allows (dropped, never held). The flow goes on, exact."""
    daemon = nfqscand(rewrite_config([PORT]), args=ALLOW)
    before = daemon.status()
    pair = SocketPair(lab, rcvbuf=32 * 1024)
    try:
        _, end, ack = server_segment(pair, lab, 4, b"first GROW\n")
        to_client = dict(src=pair.server_address, dst=pair.client_address, sport=PORT,
                         dport=pair.client_port, ack=ack)
        forge(lab.server, [
            dict(to_client, flags="R", seq=end + 100),
            dict(to_client, flags="R", seq=end + (3 << 30)),
            dict(to_client, flags="PA", seq=end + (1 << 20), payload=b"far SHRINKME\n" * 40),
        ])
        # The forged segments reach the router's queue a moment after Scapy
        # sent them (later on a loaded machine, where an idle moment may
        # come first): wait until all three were judged.
        def judged():
            checks = daemon.status()["streams"]["peer_checks"]
            return (checks["rsts_challenged"] >= 1 and checks["rsts_out_of_window"] >= 1
                    and checks["data_out_of_window"] >= 1)

        try:
            wait_until(judged, 30, "the three forged segments to be judged")
        except TimeoutError as exc:
            raise AssertionError(f"{exc}: {daemon.status()['streams']}") from None
        streams = daemon.wait_queues_idle()["streams"]
        assert streams["held_packets"] == 0, streams
        pair.server.sendall(b"then GROW\n")
        expected = rewrite(b"then GROW\n")
        assert pair.client_reads(len(expected)) == expected
    finally:
        pair.close()
    assert_nothing_held(daemon, before)


def test_overlapping_retransmission_with_other_bytes_delivers_the_inspected_ones(lab, nfqscand):
    """The server's segment is inspected, then lost after the router; a
    forged 'retransmission' of the same range with other bytes comes first:
    the client gets the bytes the inspector saw (rewritten), never the
    forgery's."""
    daemon = nfqscand(rewrite_config([PORT]), args=ALLOW)
    pair = SocketPair(lab)
    rule = ["-p", "tcp", "--sport", str(PORT), "-m", "string", "--algo", "bm",
            "--string", "ORIGINAL", "-j", "DROP"]
    try:
        # Settle the numbers with a first exchange.
        _, end, ack = server_segment(pair, lab, 4, b"hello GROW\n")
        # Lost between the router and the client (after nfqscand saw it),
        # and the server's own retransmissions kept back, so the forgery is
        # the first copy of that range the client can take.
        lab.client.run(["iptables", "-w", "-t", "raw", "-A", "PREROUTING", *rule])
        pair.server.sendall(b"ORIGINAL GROW\n")
        wait_until(lambda: rule_hits(lab.client, "raw"), 10, "the original segment to be lost")
        lab.server.run(["iptables", "-w", "-A", "OUTPUT", *rule])
        lab.client.run(["iptables", "-w", "-t", "raw", "-D", "PREROUTING", *rule])
        forge(lab.server, [dict(src=pair.server_address, dst=pair.client_address, sport=PORT,
                                dport=pair.client_port, flags="PA", seq=end, ack=ack,
                                payload=b"FORGERY! GROW\n")])
        expected = rewrite(b"ORIGINAL GROW\n")
        got = pair.client_reads(len(expected))
        assert got == expected, f"the client read {got!r}"
    finally:
        pair.close()


def rule_hits(ns, table: str) -> int:
    out = ns.run(["iptables-save", "-c", "-t", table]).stdout.decode()
    return sum(int(m.group(1)) for m in re.finditer(r"^\[(\d+):\d+\].*ORIGINAL", out, re.M))


def test_segment_behind_more_than_eight_ipv6_extension_headers_is_inspected(lab, nfqscand):
    """A receiver walks any number of extension headers; a segment behind
    nine, from the server's side, must be inspected and translated like any
    other, not passed raw at untranslated numbers (where the client would
    take it as old data, or worse, as new bytes nobody inspected)."""
    daemon = nfqscand(rewrite_config([PORT]), args=ALLOW)
    pair = SocketPair(lab, family=6)
    try:
        _, end, ack = server_segment(pair, lab, 6, b"head GROW\n")
        forge(lab.server, [dict(src=pair.server_address, dst=pair.client_address, sport=PORT,
                                dport=pair.client_port, flags="PA", seq=end, ack=ack, ext=9,
                                payload=b"tail GROW\n")])
        expected = rewrite(b"tail GROW\n")
        got = pair.client_reads(len(expected))
        assert got == expected, (f"the client read {got!r} of the segment behind nine "
                                 f"extension headers; packets: {daemon.status()['packets']}")
    finally:
        pair.close()


def test_urgent_data_reaches_the_client_inline_as_inspected(lab, nfqscand):
    """The server sends a byte as urgent data (MSG_OOB): the inspector saw
    it inline, so the client must read it inline too (the URG flag cleared),
    not have it taken out of the stream."""
    daemon = nfqscand(rewrite_config([PORT]), args=ALLOW)
    pair = SocketPair(lab)
    try:
        pair.server.sendall(b"before GROW ")
        pair.server.send(b"!", socket.MSG_OOB)
        pair.server.sendall(b"after\n")
        expected = rewrite(b"before GROW !after\n")
        got = pair.client_reads(len(expected))
        assert got == expected, f"the client read {got!r}"
    finally:
        pair.close()
    assert daemon.status()["streams"]["peer_checks"]["urgent_cleared"] >= 1


def test_syn_data_is_sent_again_after_the_handshake_and_inspected(lab, nfqscand):
    """TCP Fast Open: the client's SYN carries data. The engine cuts it (the
    server never gets bytes nobody inspected); the client sends it again
    after the handshake, and everything after it still flows."""
    lab.client.sysctl("net.ipv4.tcp_fastopen", 0x5)  # client, no cookie needed
    lab.server.sysctl("net.ipv4.tcp_fastopen", 0x602)  # every listener, no cookie
    daemon = nfqscand(rewrite_config([PORT]), args=ALLOW)
    listener = lab.server.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((lab.server_address(4), PORT))
    listener.listen(1)
    listener.settimeout(10)
    client = lab.client.socket()
    client.settimeout(10)
    try:
        client.sendto(b"hello ", socket.MSG_FASTOPEN, (lab.server_address(4), PORT))
        server, _ = listener.accept()
        server.settimeout(10)
        client.sendall(b"world\n")
        got = b""
        deadline = time.monotonic() + 10
        while len(got) < 12 and time.monotonic() < deadline:
            try:
                chunk = server.recv(100)
            except socket.timeout:
                break
            if not chunk:
                break
            got += chunk
        assert got == b"hello world\n", f"the server read {got!r}"
        server.sendall(b"reply GROW\n")
        expected = rewrite(b"reply GROW\n")
        reply = b""
        while len(reply) < len(expected):
            chunk = client.recv(100)
            if not chunk:
                break
            reply += chunk
        assert reply == expected
        server.close()
    finally:
        client.close()
        listener.close()
    checks = daemon.status()["streams"]["peer_checks"]
    assert checks["syn_data_dropped"] >= 1, ("the SYN carried no data: the test proves nothing",
                                             checks)

"""The engine mark leaves no packet uncovered (issue 13): the very packet
after which a flow needs the stream engine (here: the server's first
segment, which the [test_rewrite] inspector grows) carries the engine mark
request itself. Asked for by the flow's next packet instead, a nfqscand
killed in between let that next packet pass raw (bypass) at numbers the
client misreads: bytes at wrong offsets.

The window is held open on purpose: the client's ACKs never leave its
namespace, and the server's retransmission timer is pushed past the test
(rto_min, no tail loss probe), so after the grown segment nfqscand sees no
other packet of the flow before it is killed. Then the server sends more:
with the mark saved, the ruleset queues it without bypass and the dead
daemon's queue drops it; the client must read nothing more."""

from __future__ import annotations

import socket

from lab import wait_until
from test_hostile_peers import PORT, SocketPair
from test_stream_rewrite import ALLOW
from tokens import rewrite, rewrite_config


def late_retransmissions(lab) -> None:
    """The server retransmits no earlier than 30 s, without a probe (for
    connections opened from now on)."""
    lab.server.sysctl("net.ipv4.tcp_early_retrans", 0)
    route = lab.server.run(["ip", "-4", "route", "show", "default"]).stdout.decode().split()
    assert route, "no default route in the server's namespace"
    lab.server.run(["ip", "-4", "route", "change", *route, "rto_min", "30s"])


def silence_the_client(lab) -> None:
    """The client's packets to the server (its ACKs) never leave its namespace."""
    lab.client.run(["iptables", "-w", "-A", "OUTPUT", "-p", "tcp", "--dport", str(PORT),
                    "-j", "DROP"])


def test_the_packet_that_shifts_a_flow_carries_the_engine_mark(lab, nfqscand):
    daemon = nfqscand(rewrite_config([PORT]), args=ALLOW)
    late_retransmissions(lab)
    pair = SocketPair(lab)
    # Nagle would keep the next small segment back until the first is acked.
    pair.server.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    silence_the_client(lab)
    try:
        first = b"first GROW\n"
        pair.server.sendall(first)
        assert pair.client_reads(len(rewrite(first))) == rewrite(first)
        streams = daemon.status()["streams"]

        daemon.kill()
        wait_until(lambda: lab.kernel_queues() == {}, 10,
                   "the kernel to unbind the queues of the killed nfqscand")
        pair.server.sendall(b"then " + b"x" * 300 + b"\n")
        got = pair.client_reads(1, timeout=4)
        assert got == b"", (
            f"the client read {len(got)} bytes that passed raw after the kill, at "
            f"unshifted numbers: {got[:80]!r}")
    finally:
        pair.close()
    assert streams["engine_mark_carried"] == 1 and streams["engine_marked"] == 1, streams


def test_the_flow_goes_on_exact_once_its_shifting_packet_is_marked(lab, nfqscand):
    """The marked packet comes back through the queue and is answered as a
    retransmission: the client gets the rewrite once, and the flow goes on."""
    daemon = nfqscand(rewrite_config([PORT]), args=ALLOW)
    pair = SocketPair(lab)
    try:
        sent = b""
        for line in (b"one GROW\n", b"two SHRINKME\n", b"three GROW GROW\n"):
            pair.server.sendall(line)
            sent += line
            assert pair.client_reads(len(rewrite(line))) == rewrite(line)
        pair.client.sendall(b"ack\n")
        pair.server.settimeout(10)
        assert pair.server.recv(16) == b"ack\n"
    finally:
        pair.close()
    streams = daemon.status()["streams"]
    assert streams["engine_mark_carried"] == 1, streams
    assert daemon.status()["packets"]["engine_mark_missing"] == 0

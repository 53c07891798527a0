"""nfqscanctl's figures are the traffic's: per-flow payload bytes equal what
the peers sent, per-queue packets equal what the kernel queued."""

import hashlib
import os

from clients import HttpExchange
from lab import wait_until
from nfqscand import Nfqscand
from servers import Nginx


def all_acked(sockets: list[dict]) -> dict | None:
    """The one socket's figures once nothing it sent is unacknowledged."""
    return sockets[0] if len(sockets) == 1 and sockets[0]["unacked"] == 0 else None


def test_status_counters_match_traffic(lab, nfqscand):
    Nginx(lab, ports=[80])
    daemon = nfqscand()
    forwarded = lab.port_counter(80)
    upload = os.urandom(3 * 1024 * 1024 + 17)

    with HttpExchange(lab, lab.server_address(4), 80) as http:
        status, _, _ = http.request("PUT", "/upload/blob.bin", upload)
        assert status in (201, 204), status
        status, _, body = http.request("GET", "/upload/blob.bin")
        assert status == 200
        assert hashlib.sha256(body).digest() == hashlib.sha256(upload).digest()
        # While both sockets live, ask each sender's kernel what it put on
        # the wire: the application's bytes plus any retransmission.
        client = wait_until(lambda: all_acked([http.tcp_info()]), 10,
                            "the client's data to be acknowledged")
        server = wait_until(lambda: all_acked(lab.server.tcp_info(80)), 10,
                            "nginx's data to be acknowledged")
        sent, received = http.sent, http.received

    after = daemon.wait_queues_idle()
    flow = daemon.wait_flow(server_port=80)
    routed = forwarded.packets()
    # The stream's bytes, or, counting retransmitted segments again, the
    # bytes on the wire; anything else is a miscount.
    assert flow["bytes_c2s"] in (sent, client["bytes_sent"]), (
        f"the client sent {sent} payload bytes ({client['bytes_sent']} on the wire, "
        f"{client['bytes_retrans']} retransmitted): {flow}")
    assert flow["bytes_s2c"] in (received, server["bytes_sent"]), (
        f"nginx sent {received} payload bytes ({server['bytes_sent']} on the wire, "
        f"{server['bytes_retrans']} retransmitted): {flow}")
    # The router forwarded every packet the peers sent (each queued once)
    # and the frames nfqscand's relay sent through its device (the upload
    # and the download are objects the HTTP inspector relays): nothing else.
    frames = after["streams"]["relay"]["device_frames"]
    assert frames > 0, after["streams"]
    assert flow["packets_c2s"] + flow["packets_s2c"] + frames == routed["c2s"] + routed["s2c"], (
        f"router forwarded {routed}, nfqscand counted "
        f"c2s={flow['packets_c2s']} s2c={flow['packets_s2c']} and sent {frames} relay frames")
    for queue in after["queues"]:
        assert queue["packets"] == queue["kernel"]["id_sequence"], queue
        assert queue["verdicts"] == queue["packets"], queue
    assert Nfqscand.queue_sum(after, "packets") == flow["packets_c2s"] + flow["packets_s2c"], (
        after["queues"], flow)
    assert after["flows"]["total"] == 1, after["flows"]

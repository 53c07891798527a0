"""nfqscanctl's figures are the traffic's: per-flow payload bytes equal what
the peers sent, per-queue packets equal what the kernel queued."""

import hashlib
import os

from clients import HttpExchange
from nfqscand import Nfqscand
from servers import Nginx


def test_status_counters_match_traffic(lab, nfqscand):
    Nginx(lab, ports=[80])
    daemon = nfqscand()
    forwarded = lab.port_counter(80)
    upload = os.urandom(3 * 1024 * 1024 + 17)

    with HttpExchange(lab, lab.server_address(4), 80) as http:
        status, _, _ = http.request("PUT", "/upload/blob.bin", upload)
        assert status in (201, 204), status
        status, _, body = http.request("GET", "/upload/blob.bin", close=True)
        assert status == 200
        assert hashlib.sha256(body).digest() == hashlib.sha256(upload).digest()
        sent, received = http.sent, http.received

    after = daemon.wait_queues_idle()
    flow = daemon.wait_flow(server_port=80)
    routed = forwarded.packets()
    assert flow["bytes_c2s"] == sent, f"client sent {sent} payload bytes: {flow}"
    assert flow["bytes_s2c"] == received, f"client received {received} payload bytes: {flow}"
    assert (flow["packets_c2s"], flow["packets_s2c"]) == (routed["c2s"], routed["s2c"]), (
        f"router forwarded {routed}, nfqscand counted "
        f"c2s={flow['packets_c2s']} s2c={flow['packets_s2c']}")
    for queue in after["queues"]:
        assert queue["packets"] == queue["kernel"]["id_sequence"], queue
        assert queue["verdicts"] == queue["packets"], queue
    assert Nfqscand.queue_sum(after, "packets") == routed["c2s"] + routed["s2c"], (
        after["queues"], routed)
    assert after["flows"]["total"] == 1, after["flows"]

"""A full raw-socket send buffer (issue 13): nfqscand's injection sockets are
non-blocking, so when a relay's burst meets a slow device the segments that
do not fit are dropped and counted (`streams.inject.busy`), never waited
for. They are lost like segments lost on the wire: the relay retransmits
them, and the transfer must still arrive exact.

The buffer is made small on purpose (`[stream] inject_send_buffer`, a few
KiB) and the router's link to the client slow (tbf), so that the relay's
segments (through the raw sockets: no relay device) queue in the qdisc,
charged to the socket, and the next burst finds the buffer full."""

from __future__ import annotations

import pytest

from servers import Nginx
from test_stream_relay import relay_config
from test_stream_rewrite import ALLOW, SMALL, assert_nothing_held, download
from tokens import rewrite, token_digests, token_text


@pytest.mark.parametrize("family", [4, 6], ids=["ipv4", "ipv6"])
def test_a_full_injection_buffer_drops_and_counts_and_the_relay_stays_exact(
        lab, nfqscand, family):
    nginx = Nginx(lab, ports=[80])
    original, expected = token_digests(SMALL)
    assert nginx.add_stream_file("tokens.txt", token_text(SMALL)) == original
    config = relay_config(relay=True)
    config["stream"] = {"relay_device": "", "inject_send_buffer": "4K"}
    daemon = nfqscand(config, args=ALLOW)
    before = daemon.status()
    lab.router.run(["tc", "qdisc", "add", "dev", "cli0", "root", "tbf", "rate", "40mbit",
                    "burst", "32kbit", "latency", "400ms"])

    got = download(lab, daemon, nginx.stream_url("tokens.txt", family=family))

    assert got["http_code"] == 200
    assert got["sha256"] == expected != original, (
        f"the relayed file differs from the expected rewrite: {got['size_download']} bytes, "
        f"expected {len(rewrite(token_text(SMALL)))}")
    idle = assert_nothing_held(daemon, before)
    streams = idle["status"]["streams"]
    busy = streams["inject"]["busy"] - before["streams"]["inject"]["busy"]
    assert busy > 0, f"the send buffer never filled: {streams['inject']}"
    assert streams["relay"]["retransmissions"] > 0, streams["relay"]
    assert streams["relay"]["segments"] > 0 and streams["relay"]["gso_frames"] == 0, \
        streams["relay"]

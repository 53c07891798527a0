"""The stream engine's own transfer behind NAT (issue 13): the [test_rewrite]
inspector grows and shrinks tokens in a 50 MB download, rewritten in
place or relayed whole, behind masquerade (SNAT on the router's server-side
link) and through a port forward (DNAT to the inside server), without loss
and with ~1% loss on every link (injected segments included). The file must
arrive exact and the connection close (curl ends), every time."""

from __future__ import annotations

import pytest

from servers import Nginx
from test_stream_rewrite import (ALLOW, BIG, LOSS, assert_nothing_held, download)
from tokens import rewrite, rewrite_config, token_digests, token_text

PUBLIC_PORT = 8088


@pytest.mark.parametrize("loss", [0.0, LOSS], ids=["no-loss", "loss"])
@pytest.mark.parametrize("nat", ["masquerade", "port-forward"])
@pytest.mark.parametrize("mode", ["rewrite", "relay"])
def test_stream_engine_download_behind_nat_is_exact(lab, nfqscand, mode, nat, loss):
    if nat == "masquerade":
        lab.masquerade()
    else:
        lab.port_forward(PUBLIC_PORT, 80)
    nginx = Nginx(lab, ports=[80])
    original, expected = token_digests(BIG)
    assert nginx.add_stream_file("tokens.txt", token_text(BIG)) == original
    config = rewrite_config([80])
    config["test_rewrite"]["relay"] = mode == "relay"
    daemon = nfqscand(config, args=ALLOW)
    before = daemon.status()
    if loss:
        lab.add_tcp_loss(loss, injected=True)
    url = (nginx.stream_url("tokens.txt") if nat == "masquerade"
           else lab.public_url("/stream/tokens.txt", PUBLIC_PORT))

    got = download(lab, daemon, url)

    assert got["http_code"] == 200
    assert got["sha256"] == expected != original, (
        f"{mode} behind {nat}: {got['size_download']} bytes arrived, expected "
        f"{len(rewrite(token_text(BIG)))}, differing")
    if loss:
        assert lab.tcp_loss_drops() > 0, "the loss rules dropped nothing"
    idle = assert_nothing_held(daemon, before)
    streams = idle["status"]["streams"]
    assert streams["nat_flows"] >= 1, streams
    if mode == "relay":
        assert streams["relay"]["started"] >= 1, streams["relay"]
    else:
        assert streams["rewritten_packets"] > 0, streams

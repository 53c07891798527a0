"""A receiver that never acknowledges while the sender pushes (issue 13):
the stream engine's memory stays under [stream] memory_limit, nfqscand stays
responsive, and the flow is reset or stalls, never passed raw.

The flow is relayed by the [test_rewrite] inspector (relay = true):
nfqscand acknowledges nginx itself, so nginx sends as fast as the relay
takes its data, whatever the client does. The client is a real curl whose
ACKs an iptables rule in its own namespace drops once the request has
gone through: to nfqscand it is a receiver that takes nothing. What the
relay cannot deliver piles up in the engine until the cap refuses it
(streams.overflow.refused_segments) and, once the flow has not moved for a
while at the cap, the worker resets it (streams.overflow.resets)."""

from __future__ import annotations

from lab import wait_until
from servers import Nginx
from test_stream_rewrite import ALLOW, BIG
from tokens import rewrite, rewrite_config, token_text

MEMORY_LIMIT = 4 << 20  # 2 MiB per worker (the lab runs two queues)
SMALL = 256 << 10  # a download the relay stores whole well within the cap
DROP_ACKS = ["OUTPUT", "-p", "tcp", "--dport", "80", "-j", "DROP"]


def never_acking_download(lab, nfqscand) -> dict:
    """Runs the download until the worker resets it, sampling status every
    0.2 s (each sample an answer of nfqscand's). Returns the daemon, the
    samples, what the client got and the rewritten stream."""
    nginx = Nginx(lab, ports=[80])
    text = token_text(BIG)
    nginx.add_stream_file("tokens.txt", text)
    nginx.add_stream_file("small.txt", token_text(SMALL, seed=2))
    config = rewrite_config([80])
    config["test_rewrite"]["relay"] = True
    # The relay may store far more than the cap: the cap is what bounds it.
    config["stream"] = {"relay_limit": "64M", "memory_limit": str(MEMORY_LIMIT)}
    daemon = nfqscand(config, args=ALLOW)
    out = lab.dir / "hostile-receiver.bin"
    curl = lab.client.spawn("curl-never-acks", [
        "curl", "-0", "--silent", "--noproxy", "*", "--max-time", "90", "--output", str(out),
        nginx.stream_url("tokens.txt")])
    # Once the request has gone through, nothing of the client's reaches
    # the router any more.
    wait_until(lambda: any(f["server_port"] == 80 and f["bytes_c2s"] > 0 for f in daemon.flows()),
               30, "the request in nfqscand's flow table")
    lab.client.run(["iptables", "-w", "-I", *DROP_ACKS])
    samples = []
    try:
        def reset():
            status = daemon.status()
            samples.append(status)
            return status["streams"]["overflow"]["resets"] >= 1

        wait_until(reset, 60, "the worker to reset the flow stuck at the cap", interval=0.2)
        wait_until(lambda: daemon.status()["streams"]["memory_bytes"] < MEMORY_LIMIT // 4, 30,
                   "the reset flow's memory to be given back")
    finally:
        lab.client.run(["iptables", "-w", "-D", *DROP_ACKS])
        wait_until(lambda: not curl.alive(), 100, "curl to end")
    return {"daemon": daemon, "nginx": nginx, "samples": samples,
            "got": out.read_bytes() if out.exists() else b"", "expected": rewrite(text)}


def test_a_receiver_that_never_acknowledges_is_reset_never_passed_raw(lab, nfqscand):
    run = never_acking_download(lab, nfqscand)
    daemon, samples, expected = run["daemon"], run["samples"], run["expected"]
    streams = daemon.status()["streams"]
    assert streams["memory_limit"] == MEMORY_LIMIT, streams
    assert streams["overflow"]["refused_segments"] >= 1, streams
    # The engine did fill up to the cap (the test measured what it claims).
    most = max(s["streams"]["memory_bytes"] for s in samples)
    assert most > MEMORY_LIMIT // 4, (most, len(samples))
    # What reached the client (if anything) came through the inspector: a
    # prefix of the rewritten stream, far from all of it (never raw bytes).
    got = run["got"]
    assert len(got) < len(expected) // 2, len(got)
    assert expected.startswith(got), "the client got bytes the inspector did not produce"

    # nfqscand goes on serving: a new download through it is rewritten
    # completely.
    again = lab.dir / "after-hostile-receiver.bin"
    lab.client.run(["curl", "-0", "--silent", "--noproxy", "*", "--max-time", "120", "--output",
                    str(again), run["nginx"].stream_url("small.txt")], timeout=130)
    assert again.read_bytes() == rewrite(token_text(SMALL, seed=2))


def test_a_receiver_that_never_acknowledges_keeps_each_worker_under_its_share(lab, nfqscand):
    run = never_acking_download(lab, nfqscand)
    worst = max((q["stream_memory_bytes"], q["stream_memory_limit"])
                for s in run["samples"] for q in s["queues"])
    assert worst[0] <= worst[1], f"{worst[0]} bytes over a share of {worst[1]}"
    most = max(s["streams"]["memory_bytes"] for s in run["samples"])
    assert most <= MEMORY_LIMIT, most

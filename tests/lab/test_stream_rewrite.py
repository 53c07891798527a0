"""The TCP stream engine rewriting a real download in flight: nfqscand's test
inspector ([test_rewrite], accepted only with --allow-test-inspectors)
replaces every "GROW" with "GROWN-LONGER-TOKEN" and every "SHRINKME" with
"S" in what nginx sends on the configured ports, also across segment
boundaries. curl must get exactly the rewritten file (sha256), over IPv4 and
IPv6, with and without random loss on the router, and nothing may stay
held in the queue afterwards.

The token file is served through nginx's SSI location (no Content-Length)
and fetched with HTTP/1.0 (curl -0), so nginx ends the body by closing the
connection and a body whose length changed arrives whole. The router applies
rules/nfqscan-sysctl.conf (liberal conntrack tracking) and keeps its
`ct state invalid drop` rule, as a deployment would."""

from __future__ import annotations

import os
import re
import time

import pytest

from clients import curl_download, sha256_file
from lab import wait_until
from nfqscand import Nfqscand
from servers import Nginx
from tokens import rewrite, rewrite_config, token_digests, token_text

BIG = 50 * 1024 * 1024
SMALL = 5 * 1024 * 1024
GSO_MAX = 64 * 1024  # payload of one queued packet at most
ALLOW = ["--allow-test-inspectors"]
LOSS = 0.005  # per rule; two rules per direction: ~1% per direction
DOWNLOAD_LIMIT = 120  # s for curl; a stalled transfer fails here, not in CI's limit
# A 50 MB transfer takes 1-5 s here, even with the loss. A download that gets
# no new byte for this long stalled, even if it would recover later: ~1%
# random loss never backs a retransmission timer off that far (it would take
# seven losses in a row of one segment), a stall in the engine does.
STALL = 30


def start_capture(lab) -> None:
    """NFQSCAN_LAB_CAPTURE=1: tcpdump (headers only) on the client's and the
    server's interface for the test, into the lab's logs directory (keep it
    with NFQSCAN_LAB_KEEP=1). For looking into a stalled transfer."""
    if not os.environ.get("NFQSCAN_LAB_CAPTURE"):
        return
    for ns in (lab.client, lab.server):
        pcap = lab.logs / f"{ns.role}.pcap"
        proc = ns.spawn(f"tcpdump-{ns.role}", ["tcpdump", "-i", "eth0", "-n", "-s", "160",
                                              "-U", "-w", pcap, "tcp"])
        wait_until(lambda: "listening on" in proc.log_tail(5) or not proc.alive(), 10,
                   f"tcpdump in {ns.name}")


def download(lab, daemon: Nfqscand, url: str) -> dict:
    """curl -0 into a file, watched as it grows: it fails (with what
    nfqscand shows of the flows and queues) when curl fails or when no new
    byte arrives for STALL seconds. Returns curl's http_code and
    size_download, the sha256, the path and the seconds it took."""
    out = lab.dir / "downloads" / f"{os.urandom(4).hex()}.bin"
    out.parent.mkdir(exist_ok=True)
    curl = lab.client.spawn(f"curl-{out.stem}", [
        "curl", "--silent", "--show-error", "--globoff", "--noproxy", "*", "--fail", "-0",
        "--max-time", str(DOWNLOAD_LIMIT), "--output", str(out),
        "--write-out", "\nwrite-out %{http_code} %{size_download}\n", url])
    started = time.monotonic()
    progress = {"size": -1, "at": started}

    def ended_or_stalled():
        size = out.stat().st_size if out.exists() else 0
        now = time.monotonic()
        if size != progress["size"]:
            progress.update(size=size, at=now)
        if now - progress["at"] > STALL:
            raise AssertionError(
                f"download of {url} stalled: no new byte for {STALL} s at {size} bytes\n"
                f"flows: {daemon.flows()}\nstatus: {daemon.status()}")
        return not curl.alive()

    wait_until(ended_or_stalled, DOWNLOAD_LIMIT + 10, f"curl to download {url}", interval=0.2)
    seconds = time.monotonic() - started
    found = re.search(r"write-out (\d+) (\d+)", curl.log_tail(5))
    if curl.returncode != 0 or not found:
        raise AssertionError(
            f"download of {url} failed after {seconds:.1f} s: {curl.log_tail()}\n"
            f"flows: {daemon.flows()}\nstatus: {daemon.status()}")
    return {"http_code": int(found.group(1)), "size_download": int(found.group(2)),
            "sha256": sha256_file(out), "path": out, "seconds": seconds}


def assert_nothing_held(daemon: Nfqscand, before: dict) -> dict:
    """Every packet the kernel queued was read and got exactly one verdict;
    none is still waiting (a held segment would keep queue_total above 0)."""
    after = daemon.wait_queues_idle(timeout=20)
    for queue in after["queues"]:
        assert queue["kernel"]["queue_total"] == 0, queue
        assert queue["packets"] == queue["kernel"]["id_sequence"], queue
        assert queue["verdicts"] == queue["packets"], (
            f"queue {queue['queue']}: {queue['packets']} packets, {queue['verdicts']} verdicts",
            queue)
    queued = (Nfqscand.kernel_sum(after, "id_sequence")
              - Nfqscand.kernel_sum(before, "id_sequence"))
    return {"status": after, "queued": queued}


def rewritten_download(lab, nfqscand, family: int, loss: float = 0.0) -> None:
    nginx = Nginx(lab, ports=[80])
    original, expected = token_digests(BIG)
    assert original != expected
    assert nginx.add_stream_file("tokens.txt", token_text(BIG)) == original
    daemon = nfqscand(rewrite_config([80]), args=ALLOW)
    before = daemon.status()
    if loss:
        lab.add_tcp_loss(loss)
    start_capture(lab)

    got = download(lab, daemon, nginx.stream_url("tokens.txt", family=family))

    assert got["http_code"] == 200
    assert got["sha256"] != original, "the file arrived unchanged: nothing was rewritten"
    assert got["sha256"] == expected, (
        f"the rewritten file differs from the expected rewrite: {got['size_download']} bytes, "
        f"expected {len(rewrite(token_text(BIG)))}")
    if loss:
        assert lab.tcp_loss_drops() > 0, "the loss rules dropped nothing"
    idle = assert_nothing_held(daemon, before)
    assert idle["queued"] >= BIG // GSO_MAX, (
        f"the kernel queued only {idle['queued']} packets: the flow left the queue")
    flow = daemon.wait_flow(server_port=80, server=lab.server_address(family),
                            client=lab.client_address(family))
    assert flow["disposition"] == "claimed", flow
    assert flow["service"] == "http", flow
    assert flow["bytes_s2c"] >= BIG, flow
    # The engine's view: all input taken and mapped, all output acknowledged,
    # shifted by what the body grew (the response headers stay as they are).
    s2c = flow["stream"]["s2c"]
    assert s2c["in_next"] == s2c["in_mapped"] > BIG, s2c
    assert s2c["out_acked"] == s2c["out_next"], s2c
    assert s2c["out_next"] - s2c["in_next"] == got["size_download"] - BIG, s2c
    assert s2c["held_segments"] == 0 and not s2c["relaying"], s2c
    assert idle["status"]["flows"]["claimed"] >= 1, idle["status"]["flows"]
    streams = idle["status"]["streams"]
    assert streams["rewritten_packets"] > 0, streams
    assert streams["held_packets"] == 0, streams
    # A packet the kernel let through on its own would reach curl at
    # unshifted offsets: the flow's queue does not fail open while it lives.
    queue = next(q for q in idle["status"]["queues"] if q["queue"] == flow["queue"])
    assert queue["fail_open"] is False and queue["fail_open_suspensions"] >= 1, queue


def test_rewrite_grows_and_shrinks_tokens_ipv4(lab, nfqscand):
    rewritten_download(lab, nfqscand, family=4)


def test_rewrite_grows_and_shrinks_tokens_ipv6(lab, nfqscand):
    rewritten_download(lab, nfqscand, family=6)


def test_rewrite_under_one_percent_loss_ipv4(lab, nfqscand):
    rewritten_download(lab, nfqscand, family=4, loss=LOSS)


def test_rewrite_under_one_percent_loss_ipv6(lab, nfqscand):
    rewritten_download(lab, nfqscand, family=6, loss=LOSS)


def test_rewrite_refused_without_allow_test_inspectors(lab):
    daemon = Nfqscand(lab, rewrite_config([80]))
    lines = daemon.config_path.read_text().splitlines()
    line = lines.index("[test_rewrite]") + 1

    proc = daemon.run_to_exit()

    output = (proc.stdout + proc.stderr).decode(errors="replace")
    assert proc.returncode != 0, f"nfqscand accepted [test_rewrite] without the flag:\n{output}"
    assert re.search(rf"{re.escape(str(daemon.config_path))}:{line}: test_rewrite\b", output), (
        f"the error does not name {daemon.config_path}, line {line} and test_rewrite:\n{output}")
    assert "--allow-test-inspectors" in output, output
    assert lab.kernel_queues() == {}, "the refused nfqscand left a queue bound"


def test_rewrite_leaves_other_ports_untouched(lab, nfqscand):
    nginx = Nginx(lab, ports=[80, 8080])
    original, expected = token_digests(SMALL)
    nginx.add_stream_file("tokens.txt", token_text(SMALL))
    # Port 8080 is HTTP: its inspector scans it, and passes what it allows
    # as it comes (no relay, no rewrite); allowlist_release = false keeps the
    # allowlisted connection in the engine.
    config = rewrite_config([80])
    config.setdefault("protocols", {}).setdefault("http", {}).update(
        {"allow_hosts": [lab.server_address(4)], "allowlist_release": False})
    daemon = nfqscand(config, args=ALLOW)
    assert 8080 in daemon.config["protocols"]["http"]["ports"]
    before = daemon.status()

    other = download(lab, daemon, nginx.stream_url("tokens.txt", port=8080))
    after_other = assert_nothing_held(daemon, before)["status"]
    rewritten = download(lab, daemon, nginx.stream_url("tokens.txt", port=80))

    assert other["sha256"] == original, \
        "a flow to port 8080 (not in test_rewrite.ports) arrived altered"
    assert rewritten["sha256"] == expected, "the same daemon did not rewrite port 80"
    after = assert_nothing_held(daemon, before)["status"]
    assert after["streams"]["rewritten_packets"] > after_other["streams"]["rewritten_packets"], \
        (after_other["streams"], after["streams"])
    flow = daemon.wait_flow(server_port=8080)
    # Scanned (kept in the queue as HTTP), just not rewritten: the engine's
    # output is its input, byte for byte and offset for offset. (Packets of
    # this flow may still count in rewritten_packets: after a loss, segments
    # held behind the gap and retransmissions go out with refreshed numbers
    # (TSval, ACK, overlaps trimmed), and a loaded machine loses packets
    # without any loss rule: 0.5 % loss gave 6 such packets here, CI 4.)
    assert flow["disposition"] == "claimed" and flow["service"] == "http", flow
    assert flow["bytes_s2c"] >= SMALL and flow["packets_s2c"] >= SMALL // GSO_MAX, flow
    s2c = flow["stream"]["s2c"]
    assert s2c["in_next"] == s2c["out_next"] == s2c["out_acked"] > SMALL, s2c


class UnacknowledgedFin(AssertionError):
    pass


def test_rewritten_connection_closes_cleanly(lab, nfqscand):
    nginx = Nginx(lab, ports=[80])
    _, expected = token_digests(SMALL)
    nginx.add_stream_file("tokens.txt", token_text(SMALL))
    nfqscand(rewrite_config([80]), args=ALLOW)

    got = curl_download(lab, nginx.stream_url("tokens.txt"), "-0", timeout=DOWNLOAD_LIMIT)

    assert got["sha256"] == expected
    # nginx closed first (HTTP/1.0), then curl: its FIN must be acknowledged,
    # and its socket (LAST-ACK until then) goes away.
    def closed():
        return not [state for state in lab.client.tcp_states(80) if state != "TIME-WAIT"]

    try:
        wait_until(closed, 30, "the client's connection to close")
    except TimeoutError as exc:
        raise UnacknowledgedFin(f"{exc}: client sockets to port 80: "
                                f"{lab.client.tcp_states(80)}") from None


def test_fail_open_is_suspended_while_a_flow_is_in_the_engine(lab, nfqscand):
    # The queue fails open as configured, except while a flow is in the
    # stream engine: a packet the kernel let through on its own would leave a
    # hole in what was inspected or reach the receiver at unshifted offsets.
    nginx = Nginx(lab, ports=[80])
    _, expected = token_digests(SMALL)
    nginx.add_stream_file("tokens.txt", token_text(SMALL))
    daemon = nfqscand({**rewrite_config([80]), "flows": {"tcp_closing_timeout": 1}}, args=ALLOW)
    assert all(q["fail_open"] for q in daemon.status()["queues"])

    got = curl_download(lab, nginx.stream_url("tokens.txt"), "-0", timeout=DOWNLOAD_LIMIT)
    assert got["sha256"] == expected
    status = daemon.status()
    assert Nfqscand.queue_sum(status, "fail_open_suspensions") == 1, status["queues"]

    # The closed flow leaves the table after tcp_closing_timeout: fail-open
    # is back.
    def restored():
        status = daemon.status()
        return status["streams"]["active"] == 0 and all(q["fail_open"] for q in status["queues"])

    wait_until(restored, 30, "fail-open to be restored once no flow is in the stream engine")

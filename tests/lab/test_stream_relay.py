"""The TCP stream engine's store and forward (relay) through the real daemon:
nfqscand acknowledges the sender itself, stores the bytes, and delivers what
the inspector lets go to the receiver as its own segments, retransmitting
what the receiver does not acknowledge: as GSO frames through its relay
device (a TUN device, [stream] relay_device), or with relay_device = "" one
segment per packet through raw sockets.

- A download relayed whole: the test inspector ([test_rewrite] relay = true)
  stores all of nginx's response (to its FIN), replaces the tokens in the
  store and sends the result. curl must get exactly the rewritten file
  (sha256), IPv4 and IPv6, with and without ~1% random loss: before the
  router, and at the receivers (so nfqscand's own segments and ACKs are lost
  like forwarded ones). The output went as GSO frames (status
  streams.relay.gso_frames), none of which the ruleset queued back.
- The same download with relay_device = "": the raw sockets alone.
- An upload relayed (relay_requests = true): curl -T to nginx (WebDAV PUT);
  the stored file must be the one sent.
- nfqscand stopped in the middle of a relayed transfer: both peers get a
  RST, in ESTABLISHED state (the kernel's TcpEstabResets), and curl reports
  an error instead of a complete file.
- nfqscand killed (SIGKILL) in the middle of one: the flow's engine mark
  keeps its packets from passing the router raw while nfqscand is dead, and
  the restarted nfqscand resets both peers."""

from __future__ import annotations

import hashlib
import os

import pytest

from clients import curl_download, sha256_file
from lab import LabError, wait_until
from servers import Nginx
from test_stream_rewrite import (ALLOW, BIG, DOWNLOAD_LIMIT, LOSS, SMALL, assert_nothing_held,
                                 download)
from tokens import rewrite, rewrite_config, token_digests, token_text

MSS_PAYLOAD = 1448  # what one of the relay's segments carries on the lab's links
UPLOAD = 20 * 1024 * 1024


def relay_config(**test_rewrite) -> dict:
    config = rewrite_config([80])
    config["test_rewrite"].update(test_rewrite)
    return config


def count_peer_resets(lab, port: int):
    """Counts the RSTs the peers send on `port` (mangle FORWARD, before the
    queue: nfqscand's own RSTs are not forwarded packets); returns a function
    that reads the count."""
    tag = f"lab-peer-rst-{port}"
    for tool in ("iptables", "ip6tables"):
        for match in ("--dport", "--sport"):
            lab.router.run([tool, "-w", "-t", "mangle", "-I", "FORWARD", "1", "-p", "tcp",
                            match, str(port), "--tcp-flags", "RST", "RST", "-m", "comment",
                            "--comment", tag])

    def count() -> int:
        total = 0
        for tool in ("iptables-save", "ip6tables-save"):
            for line in lab.router.run([tool, "-c", "-t", "mangle"]).stdout.decode().splitlines():
                if tag in line and line.startswith("["):
                    total += int(line[1:line.index(":")])
        return total

    return count


def relayed_download(lab, nfqscand, family: int, loss: float = 0.0, device: str = "nfqscan0"):
    nginx = Nginx(lab, ports=[80])
    original, expected = token_digests(BIG)
    assert nginx.add_stream_file("tokens.txt", token_text(BIG)) == original
    config = relay_config(relay=True)
    config["stream"] = {"relay_device": device}
    daemon = nfqscand(config, args=ALLOW)
    before = daemon.status()
    peer_resets = count_peer_resets(lab, 80)
    if loss:
        lab.add_tcp_loss(loss, injected=True)

    got = download(lab, daemon, nginx.stream_url("tokens.txt", family=family))

    assert got["http_code"] == 200
    assert got["sha256"] != original, "the file arrived unchanged: nothing was rewritten"
    assert got["sha256"] == expected, (
        f"the relayed file differs from the expected rewrite: {got['size_download']} bytes, "
        f"expected {len(rewrite(token_text(BIG)))}")
    idle = assert_nothing_held(daemon, before)
    relay = idle["status"]["streams"]["relay"]
    assert relay["started"] >= 1, relay
    # The whole body went out as nfqscand's own segments.
    assert relay["segments"] >= len(rewrite(token_text(BIG))) // MSS_PAYLOAD, relay
    assert relay["acks"] > 0, relay
    if loss:
        assert lab.tcp_loss_drops() > 0, "the loss rules dropped nothing"
        assert relay["retransmissions"] > 0, relay
    # nfqscand resets nobody on its own; a peer's RST (a client that closed
    # its socket as a late retransmission came in, on a loaded machine) is
    # passed on to the other peer at each number it may expect.
    resets = idle["status"]["streams"]["resets"]
    assert resets == 0 or peer_resets() > 0, (
        f"{resets} RSTs from nfqscand while no peer reset the connection",
        idle["status"]["streams"])
    assert relay["device"] == device, relay
    if device:
        # Frames of many segments through the device, each written whole,
        # none queued back to nfqscand (the ruleset marks them).
        assert relay["gso_frames"] > 0, relay
        assert relay["device_frames"] >= relay["gso_frames"], relay
        assert relay["gso_frames"] * 4 < relay["segments"], relay
        assert relay["device_errors"] == 0, relay
        assert relay["device_queued"] == 0, relay
    else:
        assert relay["gso_frames"] == relay["device_frames"] == 0, relay
    return relay


def test_relay_whole_response_ipv4(lab, nfqscand):
    relayed_download(lab, nfqscand, family=4)


def test_relay_whole_response_ipv6(lab, nfqscand):
    relayed_download(lab, nfqscand, family=6)


def test_relay_under_one_percent_loss_ipv4(lab, nfqscand):
    relayed_download(lab, nfqscand, family=4, loss=LOSS)


def test_relay_under_one_percent_loss_ipv6(lab, nfqscand):
    relayed_download(lab, nfqscand, family=6, loss=LOSS)


def test_relay_without_device_uses_raw_sockets_ipv4(lab, nfqscand):
    relayed_download(lab, nfqscand, family=4, device="")


def test_upload_through_the_relay_arrives_intact(lab, nfqscand):
    nginx = Nginx(lab, ports=[80])
    data = os.urandom(UPLOAD)
    source = lab.dir / "upload.bin"
    source.write_bytes(data)
    daemon = nfqscand(relay_config(relay_requests=True), args=ALLOW)
    before = daemon.status()
    lab.add_tcp_loss(LOSS, injected=True)
    # The relay's frames carry up to 64 KiB each: a few hundred for the
    # upload, which random loss alone may all spare. 3% of what reaches
    # nginx with data is lost too, so the relay surely has to repair.
    for tool in ("iptables", "ip6tables"):
        lab.server.run([tool, "-w", "-t", "raw", "-A", "PREROUTING", "-p", "tcp", "--dport", "80",
                        "-m", "length", "--length", "1000:65535", "-m", "statistic", "--mode",
                        "random", "--probability", "0.03", "-m", "comment", "--comment",
                        "lab-loss-relayed", "-j", "DROP"])

    try:
        proc = lab.curl("--fail", "--upload-file", str(source), "--write-out", "%{http_code}",
                        nginx.url("/upload/relayed.bin"), timeout=DOWNLOAD_LIMIT)
    except LabError as exc:
        raise AssertionError(f"the upload failed: {exc}\nstreams: {daemon.status()['streams']}"
                             f"\nflows: {daemon.flows()}") from None

    assert proc.stdout.decode().strip() in ("201", "204"), proc.stdout
    stored = nginx.upload / "relayed.bin"
    assert stored.stat().st_size == UPLOAD
    assert sha256_file(stored) == hashlib.sha256(data).hexdigest(), \
        "the file nginx stored differs from the one curl sent"
    relay = assert_nothing_held(daemon, before)["status"]["streams"]["relay"]
    assert relay["started"] >= 1, relay
    assert relay["segments"] >= UPLOAD // MSS_PAYLOAD, relay
    assert lab.tcp_loss_drops() > 0, "the loss rules dropped nothing"
    assert lab.tcp_loss_drops("lab-loss-relayed") > 0, "no relayed data was lost"
    assert relay["retransmissions"] > 0, relay  # the relay repaired losses after the router


def estab_resets(namespace) -> int:
    """The kernel's count of RSTs that ended ESTABLISHED (or CLOSE-WAIT)
    connections in `namespace`."""
    out = namespace.run(["nstat", "-asz", "TcpEstabResets"]).stdout.decode()
    for line in out.splitlines():
        fields = line.split()
        if fields and fields[0] == "TcpEstabResets":
            return int(fields[1])
    return 0


def test_stopping_nfqscand_mid_relay_resets_both_peers(lab, nfqscand):
    nginx = Nginx(lab, ports=[80])
    original, expected = token_digests(BIG)
    nginx.add_stream_file("tokens.txt", token_text(BIG))
    # A small store and a slow reader: when nfqscand stops, nginx is still
    # sending (waiting for room) and curl still receiving.
    config = relay_config(relay=True)
    config["stream"] = {"relay_limit": "2M"}
    config["scan"] = {"limits": {"max_content_size": "1M"}}  # relay_limit holds an object
    daemon = nfqscand(config, args=ALLOW)
    resets = {ns.role: estab_resets(ns) for ns in (lab.client, lab.server)}
    out = lab.dir / "cut.bin"
    curl = lab.client.spawn("curl-relay", [
        "curl", "-0", "--silent", "--show-error", "--noproxy", "*", "--limit-rate", "2M",
        "--max-time", str(DOWNLOAD_LIMIT), "--output", str(out), nginx.stream_url("tokens.txt")])

    def relaying_with_data():
        return (out.exists() and out.stat().st_size > 3 << 20
                and daemon.status()["streams"]["relay"]["active"] >= 1)

    try:
        wait_until(relaying_with_data, 30, "the relay to deliver a few MB")
    except TimeoutError as exc:
        size = out.stat().st_size if out.exists() else None
        raise AssertionError(f"{exc}: curl has {size} bytes; streams: "
                             f"{daemon.status()['streams']}; flows: {daemon.flows()}") from None
    status = daemon.stop()
    assert status == 0, f"nfqscand exited with {status}"
    assert "depended on nfqscand" in daemon.log_text(), daemon.log_text()[-2000:]

    wait_until(lambda: not curl.alive(), 20, "curl to end after the reset")
    log = curl.log_tail()
    assert curl.returncode != 0, f"curl took the cut transfer for complete:\n{log}"
    assert "reset" in log.lower(), log
    assert out.stat().st_size < len(rewrite(token_text(BIG)))
    assert sha256_file(out) != expected
    wait_until(lambda: estab_resets(lab.server) > resets["server"], 30,
               "nginx's connection to be reset")
    assert estab_resets(lab.client) > resets["client"]
    assert "ESTAB" not in lab.client.tcp_states(80), lab.client.tcp_states(80)


def passed_counter(lab, port: int) -> callable:
    """Counting rules first in the router's filter FORWARD, after the queue:
    the packets of `port`'s flows that got past it (both directions, both
    families). Returns a function that reads the total."""
    for tool in ("iptables", "ip6tables"):
        for match in ("--sport", "--dport"):
            lab.router.run([tool, "-w", "-I", "FORWARD", "1", "-p", "tcp", match, str(port),
                            "-m", "comment", "--comment", f"lab-passed-{port}"])
    return lambda: lab.tcp_loss_drops(f"lab-passed-{port}")


@pytest.mark.parametrize("engine_mark,nat", [(0x00400000, ""), (0x00400000, "masquerade"),
                                             (0x00400000, "port-forward"), (0, "")],
                         ids=["engine-mark", "engine-mark-masquerade", "engine-mark-port-forward",
                              "no-engine-mark"])
def test_killed_nfqscand_mid_relay_stops_the_flow_and_a_restart_resets_it(lab, nfqscand,
                                                                          engine_mark, nat):
    """SIGKILL leaves no chance to reset anyone. The relayed flow carries the
    engine mark, so the ruleset queues it without `bypass`: while nfqscand
    is dead none of its packets pass the router (raw, they would reach curl
    at sequence numbers that no longer match what it got). A restarted
    nfqscand drops the flow's packets and resets both peers; curl fails,
    never with a file that looks complete; and new flows work. Without the
    engine mark ([marks] engine = 0), the same packets pass the router raw:
    what this test is there to catch. Behind masquerade the resets must
    carry the addresses conntrack knows on each side."""
    client_port = 80  # the port curl connects to
    if nat == "masquerade":
        lab.masquerade()
    elif nat == "port-forward":
        client_port = 8080
        lab.port_forward(client_port, 80)
    nginx = Nginx(lab, ports=[80])
    _, expected = token_digests(BIG)
    nginx.add_stream_file("tokens.txt", token_text(BIG))
    small_original, small_expected = token_digests(SMALL)
    nginx.add_stream_file("small.txt", token_text(SMALL))
    config = relay_config(relay=True)
    config["stream"] = {"relay_limit": "2M"}
    config["scan"] = {"limits": {"max_content_size": "1M"}}  # relay_limit holds an object
    config["marks"] = {"engine": engine_mark}
    daemon = nfqscand(config, args=ALLOW)
    out = lab.dir / "killed.bin"

    def url(name: str) -> str:
        if nat == "port-forward":
            return lab.public_url(f"/stream/{name}", client_port)
        return nginx.stream_url(name)

    curl = lab.client.spawn("curl-killed", [
        "curl", "-0", "--silent", "--show-error", "--noproxy", "*", "--limit-rate", "2M",
        "--max-time", str(DOWNLOAD_LIMIT), "--output", str(out), url("tokens.txt")])
    wait_until(lambda: out.exists() and out.stat().st_size > 3 << 20, 30,
               "the relay to deliver a few MB")
    marked = daemon.status()["streams"]["engine_marked"]
    assert marked == (1 if engine_mark else 0), daemon.status()["streams"]
    passed = passed_counter(lab, 80)
    arrived = lab.port_counter(80)  # before the queue

    daemon.kill()
    wait_until(lambda: lab.kernel_queues() == {}, 10,
               "the kernel to unbind the queues of the killed nfqscand")
    passed_before, arrived_before = passed(), sum(arrived.packets().values())
    # The peers go on sending (nginx its window, retransmissions, probes).
    wait_until(lambda: sum(arrived.packets().values()) >= arrived_before + 3, 30,
               "the peers to send more packets to the router")
    got_past = passed() - passed_before
    if not engine_mark:
        assert got_past > 0, "without the engine mark, bypass should have passed the packets"
        curl.stop()
        return
    assert got_past == 0, f"{got_past} packets of the relayed flow passed raw while nfqscand " \
                          "was dead"
    assert curl.returncode in (None, 28), curl.log_tail()  # running (or at its deadline)

    daemon.start()
    wait_until(lambda: not curl.alive(), 60, "curl to end once nfqscand is back")
    log = curl.log_tail()
    assert curl.returncode not in (0, None), f"curl took the cut transfer for complete:\n{log}"
    assert "reset" in log.lower(), log
    assert sha256_file(out) != expected
    assert out.stat().st_size < len(rewrite(token_text(BIG)))
    packets = daemon.status()["packets"]
    assert packets["engine_orphans"] >= 1, packets
    assert packets["orphan_answers"] >= 2, packets
    assert "ESTAB" not in lab.client.tcp_states(client_port), lab.client.tcp_states(client_port)
    # nginx's side is reset too (behind NAT: at the addresses and ports each
    # side knows the connection by).
    wait_until(lambda: lab.server.tcp_info(80) == [], 60, "nginx's connection to be reset")

    # A new flow through the restarted nfqscand: relayed and rewritten.
    got = curl_download(lab, url("small.txt"), "-0", timeout=DOWNLOAD_LIMIT)
    assert got["sha256"] == small_expected != small_original


def test_a_ruleset_without_the_engine_mark_rules_is_reported(lab, nfqscand):
    """A ruleset from before the engine mark (or one that lost its rules):
    relayed flows still work, but they would pass raw while nfqscand is
    down. nfqscand sees their packets come without the mark it asked for,
    counts them and warns."""
    for tool in ("iptables", "ip6tables"):
        for rule in (["-m", "mark", "--mark", "0x00400000/0x00400000", "-j", "CONNMARK",
                      "--or-mark", "0x00400000"],
                     ["-m", "connmark", "--mark", "0x00400000/0x00400000", "-j", "MARK",
                      "--or-mark", "0x00400000"],
                     ["-m", "connmark", "--mark", "0x00400000/0x00400000", "-j", "NFQUEUE",
                      "--queue-balance", "0:1"]):
            lab.router.run([tool, "-w", "-t", "mangle", "-D", "NFQSCAN", *rule])
    nginx = Nginx(lab, ports=[80])
    original, expected = token_digests(SMALL)
    nginx.add_stream_file("small.txt", token_text(SMALL))
    daemon = nfqscand(relay_config(relay=True), args=ALLOW)

    got = download(lab, daemon, nginx.stream_url("small.txt"))

    assert got["sha256"] == expected != original
    status = daemon.status()
    assert status["streams"]["engine_marked"] >= 1, status["streams"]
    assert status["packets"]["engine_mark_missing"] >= 16, status["packets"]
    wait_until(lambda: "lacks the rules that save it" in daemon.log_text(), 10,
               "nfqscand's warning about the missing engine mark rules")


def fill_stream_memory(lab, nfqscand, nginx, overflow: str):
    """nfqscand with a 12 MiB stream memory cap (6 MiB per worker) and slow
    relayed downloads of a 50 MB file whose stores fill it until every
    worker that has flows is at its share: downloads are added until then.
    Returns (daemon, the slow curls)."""
    # Relays that hold whole responses larger than the share, in stores
    # that may hold them (relay_limit): at the cap they cannot progress, so
    # the memory stays there (steady, unlike flows whose receivers free
    # some of it with every ACK: a store that reached relay_limit, or a
    # whole response delivered, lets go) until the worker sheds one as
    # stuck, 10 s later: the window the test's new flow meets the cap in.
    nginx.add_stream_file("fill.txt", token_text(BIG))
    config = relay_config(relay=True)
    config["stream"] = {"relay_limit": "64M", "memory_limit": "12M", "overflow": overflow}
    config["scan"] = {"limits": {"max_content_size": "3M"}}  # relay_limit holds an object
    daemon = nfqscand(config, args=ALLOW)
    slow = []

    def start_one():
        i = len(slow)
        out = lab.dir / f"slow{i}.bin"
        slow.append(lab.client.spawn(f"curl-slow{i}", [
            "curl", "-0", "--silent", "--noproxy", "*", "--limit-rate", "200K", "--max-time",
            "60", "--output", str(out), nginx.stream_url("fill.txt")]))
        wait_until(lambda: len(daemon.flows()) >= i + 1, 30, "the slow download's flow")

    for _ in range(2):
        start_one()

    # At the cap a worker has less room than one 64 KiB packet left (the
    # hard cap refuses input from there on, so memory stays just below it).
    def full(q) -> bool:
        return q["stream_memory_bytes"] + 64 * 1024 > q["stream_memory_limit"]

    def every_worker_at_cap():
        # The kernel spreads flows over the queues by a hash of the
        # addresses: from one client to one server they all meet in one
        # worker, and so will the next flow. Every worker with flows full.
        queues = [q for q in daemon.status()["queues"] if q["flows"] > 0]
        if queues and all(full(q) for q in queues):
            return True
        if len(slow) < 8:
            start_one()
        return False

    wait_until(every_worker_at_cap, 60, "every worker's streams to fill its cap", interval=0.2)
    return daemon, slow


def test_stream_memory_cap_bypasses_new_flows(lab, nfqscand):
    """Over [stream] memory_limit, a new flow that wants the engine is not
    inspected (overflow = "bypass"): it arrives unchanged, released to the
    fast path, and status counts it."""
    nginx = Nginx(lab, ports=[80])
    original, _ = token_digests(SMALL)
    nginx.add_stream_file("tokens.txt", token_text(SMALL))
    daemon, slow = fill_stream_memory(lab, nfqscand, nginx, "bypass")

    got = curl_download(lab, nginx.stream_url("tokens.txt"), "-0", timeout=DOWNLOAD_LIMIT)

    assert got["sha256"] == original, "a flow over the memory cap was still rewritten"
    streams = daemon.status()["streams"]
    assert streams["overflow"]["bypassed"] >= 1, streams
    for proc in slow:
        proc.stop()


def test_stream_memory_cap_drops_new_flows(lab, nfqscand):
    """overflow = "drop": over the cap, a new flow's SYNs are dropped (the
    client gets no connection), and status counts them."""
    nginx = Nginx(lab, ports=[80])
    nginx.add_stream_file("tokens.txt", token_text(SMALL))
    daemon, slow = fill_stream_memory(lab, nfqscand, nginx, "drop")

    proc = lab.curl("-0", "--connect-timeout", "3", "--output", "/dev/null",
                    nginx.stream_url("tokens.txt"), timeout=20, check=False)

    assert proc.returncode == 28, (proc.returncode, proc.stderr)  # connect timeout
    streams = daemon.status()["streams"]
    assert streams["overflow"]["dropped"] >= 1, streams
    for p in slow:
        p.stop()

"""Prometheus metrics (issue 15): `[daemon] metrics_listen` serves GET
/metrics over HTTP and `nfqscanctl metrics` prints the same exposition, both
built from the snapshot `nfqscanctl status` shows. Real traffic (an EICAR
download blocked, a clean one delivered) moves the counters; the scrape is
parsed strictly here (HELP and TYPE per family, label syntax and escapes,
cumulative histograms) and by `promtool check metrics` when Debian's
prometheus package is installed. Hostile clients (idle connections beyond
the slots, a request sent a byte at a time, a huge request) do not keep a
scraper out."""

from __future__ import annotations

import grp
import os
import re
import shutil
import subprocess
import threading
import time

import pytest

from clients import curl_fetch
from http_corpus import Corpus
from lab import REPO, wait_until
from nfqscand import Nfqscand, ctl_binary
from servers import Nginx

PORT = 9464
SCAN = {"clamav_db_dirs": [str(REPO / "rules" / "clamav")],
        "yara_rule_dirs": [str(REPO / "rules" / "yara")], "pool_threads": 2}
# nfqscand's own bounds (ControlServer::kMaxHttpConnections, kMaxHttpRequest).
SLOTS = 8
MAX_REQUEST = 8 * 1024


# -- the text format, parsed strictly -----------------------------------------

SAMPLE_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$")
LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\\\|\\"|\\n)*)"(,|$)')


def parse_labels(text: str) -> dict:
    labels, pos = {}, 0
    while pos < len(text):
        m = LABEL_RE.match(text, pos)
        assert m, f"bad labels at {text[pos:]!r}"
        value = re.sub(r"\\(.)", lambda e: "\n" if e.group(1) == "n" else e.group(1), m.group(2))
        assert m.group(1) not in labels, f"label {m.group(1)} twice in {text!r}"
        labels[m.group(1)] = value
        pos = m.end()
    return labels


def parse_exposition(text: str) -> dict:
    """{family: {"type", "help", "samples": [(name, labels, value)]}}, with
    the format's rules asserted on the way."""
    assert text.endswith("\n"), "the exposition must end with a newline"
    families: dict = {}
    current = None
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _, help_text = line[7:].partition(" ")
            assert name not in families, f"family {name} appears twice"
            current = families[name] = {"help": help_text, "type": None, "samples": []}
            last_help = name
            continue
        if line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            assert current is not None and name == last_help, f"TYPE without HELP: {line}"
            assert kind in ("counter", "gauge", "histogram"), line
            current["type"] = kind
            assert name.startswith("nfqscan_"), name
            assert (kind == "counter") == name.endswith("_total"), f"{kind} {name}"
            continue
        m = SAMPLE_RE.match(line)
        assert m and current is not None and current["type"], f"bad sample line: {line!r}"
        name, labels, value = m.group(1), parse_labels(m.group(3) or ""), float(m.group(4))
        suffixes = ("_bucket", "_sum", "_count") if current["type"] == "histogram" else ("",)
        assert any(name == last_help + s for s in suffixes), f"{name} under {last_help}"
        if current["type"] == "counter":
            assert value >= 0, line
        current["samples"].append((name, labels, value))
    for name, family in families.items():
        if family["type"] == "histogram":
            check_histogram(name, family["samples"])
    return families


def check_histogram(name: str, samples: list) -> None:
    buckets = [(float(labels["le"]), v) for n, labels, v in samples if n == name + "_bucket"]
    assert buckets and buckets[-1][0] == float("inf"), f"{name}: no +Inf bucket"
    assert [b for b, _ in buckets] == sorted(b for b, _ in buckets), f"{name}: bucket order"
    counts = [v for _, v in buckets]
    assert counts == sorted(counts), f"{name}: buckets not cumulative: {counts}"
    count = [v for n, _, v in samples if n == name + "_count"]
    assert count == [counts[-1]], f"{name}: _count {count} != +Inf bucket {counts[-1]}"


def value(families: dict, name: str, **labels) -> float:
    """The one sample of `name` with exactly `labels` (histogram series by
    their full name)."""
    family = re.sub(r"_(bucket|sum|count)$", "", name) if name not in families else name
    found = [v for n, l, v in families[family]["samples"] if n == name and l == labels]
    assert len(found) == 1, f"{name}{labels}: {found}; {families[family]['samples']}"
    return found[0]


# -- talking to the listener --------------------------------------------------

def http_get(lab, request: bytes, address: str = "127.0.0.1", port: int = PORT,
             timeout: float = 30.0) -> tuple[int, dict, bytes]:
    """One raw HTTP exchange from the router's namespace: (status, headers
    with lowercase keys, body), read until nfqscand closes."""
    sock = lab.router.connect(address, port, timeout)
    try:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    finally:
        sock.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith("HTTP/1.0 "), lines[0]
    headers = {k.strip().lower(): v.strip() for k, _, v in (l.partition(":") for l in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def scrape(lab, address: str = "127.0.0.1") -> dict:
    status, headers, body = http_get(lab, b"GET /metrics HTTP/1.1\r\nHost: nfqscan\r\n"
                                          b"Accept: text/plain\r\n\r\n", address)
    assert status == 200, (status, body[:300])
    assert headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8", headers
    assert int(headers["content-length"]) == len(body), headers
    return parse_exposition(body.decode())


def promtool_check(text: str) -> None:
    """promtool's own parser and lint rules, when prometheus is installed."""
    promtool = shutil.which("promtool")
    if promtool is None:
        return
    proc = subprocess.run([promtool, "check", "metrics"], input=text.encode(),
                          capture_output=True, timeout=60)
    out = (proc.stdout + proc.stderr).decode()
    assert proc.returncode == 0 and not out.strip(), f"promtool check metrics:\n{out}"


@pytest.fixture(scope="module")
def corpus():
    return Corpus()


# -- tests ----------------------------------------------------------------------

def test_scraped_counters_follow_the_traffic_as_status_does(lab, nfqscand, corpus, tmp_path):
    nginx = Nginx(lab, ports=[80])
    nginx.add_file("infected/eicar.txt", corpus.infected("eicar.txt").data)
    nginx.add_file("clean/eicar.txt", corpus.clean("eicar.txt").data)
    daemon = nfqscand({"daemon": {"metrics_listen": f"127.0.0.1:{PORT}"}, "scan": SCAN})
    daemon.wait_engines()
    before = scrape(lab)

    blocked = curl_fetch(lab, nginx.url("/infected/eicar.txt"))
    assert blocked["http_code"] == 403, blocked["body"][:200]
    clean = curl_fetch(lab, nginx.url("/clean/eicar.txt"))
    assert clean["http_code"] == 200 and clean["sha256"] == corpus.clean("eicar.txt").sha256

    def judged():
        http = daemon.status()["protocols"]["http"]
        return http["infected"] >= 1 and http["clean"] >= 1

    wait_until(judged, 20, "both objects judged")
    # A scrape may be the answer of up to a second ago (nfqscand takes one
    # snapshot a second for HTTP): wait for one taken after an idle status.
    # Idle is a moment, not a promise: a late packet (a FIN retransmitted on
    # a loaded machine) moves the counters on, so each try takes the idle
    # status again.
    found = {}

    def caught_up():
        found["status"] = daemon.wait_queues_idle()
        found["after"] = scrape(lab)
        return all(value(found["after"], "nfqscan_queue_packets_total",
                         queue=str(q["queue"])) == q["packets"]
                   for q in found["status"]["queues"])

    wait_until(caught_up, 60, "a scrape as new as the idle status", interval=0.2)
    status, after = found["status"], found["after"]
    promtool_check(
        http_get(lab, b"GET /metrics HTTP/1.0\r\n\r\n")[2].decode())

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    http = status["protocols"]["http"]
    assert delta("nfqscan_objects_scanned_total", protocol="http", result="infected") == 1
    assert delta("nfqscan_objects_scanned_total", protocol="http", result="clean") == 1
    assert delta("nfqscan_actions_total", protocol="http", action="block") == 1
    assert delta("nfqscan_scan_verdicts_total", result="infected") == 1
    assert value(after, "nfqscan_objects_scanned_total", protocol="http",
                 result="infected") == http["infected"]
    assert value(after, "nfqscan_objects_total", protocol="http") == http["objects"]
    assert value(after, "nfqscan_protocol_scanned_bytes_total",
                 protocol="http") == http["scanned_bytes"]
    for category, n in http["errors"].items():
        assert value(after, "nfqscan_object_errors_total", protocol="http",
                     category=category) == n
    # The latency histogram counts what status counts, in seconds.
    latency = status["scan"]["scan_latency"]
    assert delta("nfqscan_scan_duration_seconds_count") >= 2
    assert value(after, "nfqscan_scan_duration_seconds_count") == latency["count"]
    assert value(after, "nfqscan_scan_duration_seconds_sum") == pytest.approx(
        latency["total_us"] / 1e6)
    assert value(after, "nfqscan_scan_engine_generation") == status["scan"]["generation"]
    assert value(after, "nfqscan_scanner_processes") == len(status["scan"]["scanner_pids"])
    # The queues are idle: their counters stand still and agree.
    for q in status["queues"]:
        assert value(after, "nfqscan_queue_packets_total", queue=str(q["queue"])) == q["packets"]
        assert value(after, "nfqscan_queue_verdicts_total",
                     queue=str(q["queue"])) == q["verdicts"]
        assert value(after, "nfqscan_kernel_queue_packets_total",
                     queue=str(q["queue"])) == q["kernel"]["id_sequence"]
    assert delta("nfqscan_queue_packets_total", queue="0") + delta(
        "nfqscan_queue_packets_total", queue="1") > 0
    assert value(after, "nfqscan_flows_created_total") == status["flows"]["total"]
    assert value(after, "nfqscan_relays_started_total") == status["streams"]["relay"]["started"]
    assert value(after, "nfqscan_relays_started_total") >= 2  # both objects were relayed

    # nfqscanctl metrics prints the same exposition (for the textfile
    # collector, written with the documented atomic recipe).
    prom = tmp_path / "nfqscan.prom"
    lab.router.run(["sh", "-c", f"{daemon.ctl_command()} metrics > {prom}.tmp && "
                                f"mv {prom}.tmp {prom}"])
    ctl = parse_exposition(prom.read_text())
    assert set(ctl) == set(after)
    assert value(ctl, "nfqscan_objects_scanned_total", protocol="http",
                 result="infected") == http["infected"]
    promtool_check(prom.read_text())


def test_hostile_clients_do_not_keep_a_scraper_out(lab, nfqscand):
    daemon = nfqscand({"daemon": {"metrics_listen": f"127.0.0.1:{PORT}"}})
    hostile = []
    try:
        # A request sent a byte at a time and never finished (slowloris),
        # and a huge one, next to the scrape.
        slow = lab.router.connect("127.0.0.1", PORT)
        slow_since = time.monotonic()
        hostile.append(slow)
        slow.sendall(b"GET /metrics HTTP/1.1\r\n")
        huge = lab.router.connect("127.0.0.1", PORT)
        hostile.append(huge)

        def flood():
            try:
                huge.sendall(b"GET /metrics HTTP/1.1\r\nX-Junk: " + b"a" * (4 << 20))
            except OSError:
                pass  # nfqscand answered and closed after its bound

        flooder = threading.Thread(target=flood)
        flooder.start()
        families = scrape(lab)
        assert value(families, "nfqscan_flows_max") > 0
        flooder.join(30)
        # The huge request was cut at the bound and refused.
        data = b""
        huge.settimeout(10)
        try:
            while chunk := huge.recv(65536):
                data += chunk
        except ConnectionResetError:
            pass  # unread junk in nfqscand's buffer turns its close into a reset
        if data:
            assert data.startswith(b"HTTP/1.0 431 "), data[:100]
        # The scrape did not wait for the slow client's deadline (5 s): that
        # client is still open and gets its answer when it finishes. (On a
        # machine so loaded that 4 s went by, its deadline may have come.)
        if time.monotonic() - slow_since < 4:
            slow.sendall(b"\r\n")
            slow.settimeout(10)
            answer = slow.recv(100)
            assert answer.startswith(b"HTTP/1.0 200 OK"), answer

        # More silent connections than slots: the oldest make room, so a
        # scraper is served instead of closed.
        for _ in range(SLOTS + 4):
            hostile.append(lab.router.connect("127.0.0.1", PORT))
        assert value(scrape(lab), "nfqscan_flows_max") > 0
        # And the control socket is another door: it answers meanwhile.
        assert "nfqscan_build_info" in daemon.ctl("metrics").stdout.decode()
    finally:
        for sock in hostile:
            sock.close()


def test_other_requests_get_http_errors_and_ipv6_works(lab, nfqscand):
    nfqscand({"daemon": {"metrics_listen": f"[::1]:{PORT}"}})
    families = scrape(lab, "::1")
    assert [v for _, _, v in families["nfqscan_build_info"]["samples"]] == [1]
    status, _, body = http_get(lab, b"GET / HTTP/1.1\r\n\r\n", "::1")
    assert status == 404, body
    status, headers, _ = http_get(lab, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
                                  "::1")
    assert status == 405 and headers["allow"] == "GET, HEAD"
    status, headers, body = http_get(lab, b"HEAD /metrics HTTP/1.0\r\n\r\n", "::1")
    assert status == 200 and body == b"" and int(headers["content-length"]) > 1000
    status, _, _ = http_get(lab, b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n", "::1")
    assert status == 400
    status, _, _ = http_get(lab, b"GET /metrics HTTP/1.1\r\n" + b"X: y\r\n" * 2000, "::1")
    assert status == 431
    # Only the configured address is served.
    with pytest.raises(OSError):
        lab.router.connect("127.0.0.1", PORT, timeout=5).close()


def test_bad_metrics_listen_stops_the_start_naming_file_line_and_key(lab):
    daemon = Nfqscand(lab, {"daemon": {"metrics_listen": "localhost:9464"}}, name="badaddr")
    proc = daemon.run_to_exit()
    err = (proc.stdout + proc.stderr).decode()
    assert proc.returncode != 0
    assert re.search(r"nfqscan\.toml:\d+: daemon\.metrics_listen: .*not an IPv4 address", err), err
    # A port already taken: the start fails and says which key.
    holder = lab.router.socket()
    try:
        holder.bind(("127.0.0.1", PORT))
        holder.listen()
        daemon = Nfqscand(lab, {"daemon": {"metrics_listen": f"127.0.0.1:{PORT}"}}, name="busy")
        proc = daemon.run_to_exit()
        err = (proc.stdout + proc.stderr).decode()
        assert proc.returncode != 0
        assert "daemon.metrics_listen: cannot listen: 127.0.0.1:9464: Address already in use" \
            in err, err
    finally:
        holder.close()


def test_nfqscanctl_metrics_is_a_query_like_status(lab, nfqscand):
    """With [daemon] control_group, a member (not root) gets the metrics as
    it gets status; without the socket's permission nobody does."""
    daemon = nfqscand({"daemon": {"control_group": "nogroup"}})
    for folder in (lab.dir, daemon.dir):
        os.chmod(folder, 0o711)  # the lab's folders are root's: let nobody reach the socket

    def as_nobody(group: str):
        return lab.router.run(["setpriv", "--reuid=nobody", f"--regid={group}", "--clear-groups",
                               ctl_binary(), "--control", daemon.control, "metrics"],
                              check=False, timeout=20)

    member = as_nobody("nogroup")
    assert member.returncode == 0, member.stderr
    families = parse_exposition(member.stdout.decode())
    assert value(families, "nfqscan_flows_max") > 0
    outsider = as_nobody("nobody" if _group_exists("nobody") else "daemon")
    assert outsider.returncode == 1 and outsider.stdout == b"", outsider
    assert b"cannot reach nfqscand" in outsider.stderr, outsider.stderr


def _group_exists(name: str) -> bool:
    try:
        grp.getgrnam(name)
        return True
    except KeyError:
        return False

"""Allowlisted HTTP connections leave the engine (issue 9,
[protocols.http] allowlist_release): a request to an `allow_hosts` host
releases its whole connection to the conntrack-mark fast path (status
`released{allowlisted}`), so the rest of the connection is not seen by
nfqscand at all; a URL on `allow_urls` passes its own response in the engine
and keeps the connection inspected; a request pipelined behind the
allowlisted one is judged by its own Host; a request with an absolute URL
(to a forward proxy) does not release its connection; behind a relayed
(scanned) response, under loss, the release waits for the relay; downloads
on other connections are still scanned and blocked.

Servers: nginx on port 80 (static files). Clients: raw keep-alive
connections (tests/lab/clients.HttpExchange, whose Host header a test sets)
and curl. IPv4 and IPv6."""

from __future__ import annotations

import hashlib
import os

import pytest

from clients import HttpExchange, curl_fetch
from http_corpus import EICAR
from lab import wait_until
from servers import Nginx
from test_http_av import SCAN, counter_delta, http_counters
from test_stream_rewrite import LOSS

FAMILIES = [pytest.param(4, id="ipv4"), pytest.param(6, id="ipv6")]
ALLOWED_HOST = "files.example.org"  # under the allowlisted suffix
OTHER_HOST = "files.example.net"
BIG = 8 * 1024 * 1024
# Packets of a released flow that may still reach nfqscand: those already
# in the queue when the release mark was set.
STRAGGLERS = 16


@pytest.fixture
def site(lab):
    """nginx with a small and a big clean file and EICAR, under / and /pub/."""
    nginx = Nginx(lab, ports=[80])
    big = os.urandom(BIG)
    files = {"small.bin": os.urandom(4096), "big.bin": big, "eicar.com": EICAR}
    for name, data in files.items():
        nginx.add_file(f"files/{name}", data)
        nginx.add_file(f"pub/{name}", data)
    return nginx, files


@pytest.fixture
def daemon(lab, nfqscand):
    """Factory: nfqscand allowlisting the hosts under .example.org and the
    URLs under http://SERVER/pub/ (SERVER: the lab's server address of
    `family`)."""

    def start(family: int = 4, release: bool = True):
        http = {"allow_hosts": [".example.org"], "allowlist_release": release,
                "allow_urls": [f"http://{host_in_url(lab.server_address(family))}/pub/"]}
        d = nfqscand({"scan": SCAN, "protocols": {"http": http}})
        d.wait_engines()
        return d

    return start


def started(daemon, family: int = 4, release: bool = True):
    """The daemon of the `daemon` factory and its HTTP counters at the start."""
    d = daemon(family, release)
    return d, http_counters(d.status())


def host_in_url(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def flow_of(daemon, family: int, lab, client_port: int) -> dict | None:
    """The flow from `client_port` in `nfqscanctl flows` (None: not listed)."""
    server = lab.server_address(family)
    flows = [f for f in daemon.find_flows(server_port=80, server=server)
             if f.get("client_port") == client_port]
    assert len(flows) <= 1, flows
    return flows[0] if flows else None


def allowlisted_objects(daemon) -> int:
    return int(daemon.status()["protocols"]["http"].get("allowlisted", 0))


def packets(flow: dict) -> int:
    return int(flow["packets_c2s"]) + int(flow["packets_s2c"])


def wait_disposition(daemon, family: int, lab, client_port: int, disposition: str) -> dict:
    found: dict = {}

    def reached():
        found["flow"] = flow_of(daemon, family, lab, client_port)
        return (found["flow"] or {}).get("disposition") == disposition

    try:
        wait_until(reached, 30, f"the flow from port {client_port} to be {disposition}")
    except TimeoutError as exc:
        raise AssertionError(f"{exc}: {found.get('flow')}") from None
    return found["flow"]


def assert_still_inspected(daemon, family: int, lab, client_port: int) -> None:
    daemon.wait_queues_idle()
    flow = flow_of(daemon, family, lab, client_port)
    assert (flow or {}).get("disposition") == "claimed", flow


def assert_blocked(status: int, body: bytes) -> None:
    assert status == 403 and EICAR not in body, (status, body[:200])


def assert_one_virus_nothing_released(daemon, before: dict) -> None:
    delta = counter_delta(before, http_counters(daemon.status()))
    assert delta["released"] == {}, delta
    assert delta["infected"] == 1, delta


@pytest.mark.parametrize("family", FAMILIES)
def test_allowlisted_host_connection_is_released_and_leaves_nfqscand(lab, site, daemon,
                                                                     family):
    nginx, files = site
    d, before = started(daemon, family)
    with HttpExchange(lab, lab.server_address(family), 80) as http:
        http.host = ALLOWED_HOST
        port = http.sock.getsockname()[1]
        status, _, body = http.request("GET", "/files/small.bin")
        assert (status, body) == (200, files["small.bin"])
        flow = wait_disposition(d, family, lab, port, "released")
        seen = packets(flow)

        # The rest of the connection goes by the fast path: byte-identical,
        # and nfqscand sees (almost) none of its packets.
        status, _, body = http.request("GET", "/files/big.bin")
        assert status == 200
        assert hashlib.sha256(body).hexdigest() == hashlib.sha256(files["big.bin"]).hexdigest()
        # Not scanned any more: the client trusts the allowlisted server
        # with this connection.
        status, _, body = http.request("GET", "/files/eicar.com")
        assert (status, body) == (200, EICAR)
        after = flow_of(d, family, lab, port)
    # 8 MiB need hundreds of packets even as 64 KiB GSO aggregates. A
    # released flow's entry expires after tcp_closing_timeout_s (30 s): gone
    # is fine, a new entry (counting from 0) means packets came back.
    if after is not None:
        assert after["disposition"] == "released" and packets(after) >= seen, (flow, after)
        grown = packets(after) - seen
        assert grown <= STRAGGLERS, f"{grown} packets of the released flow reached nfqscand"

    delta = counter_delta(before, http_counters(d.status()))
    assert delta["released"] == {"allowlisted": 1}, delta
    assert delta["scanned"] == 0 and delta["infected"] == 0, delta

    # Another connection, another host: still scanned and blocked.
    got = curl_fetch(lab, nginx.url("/files/eicar.com", family=family), "-H",
                     f"Host: {OTHER_HOST}")
    assert got["http_code"] == 403 and EICAR not in got["body"], got["http_code"]
    delta = counter_delta(before, http_counters(d.status()))
    assert delta["infected"] == 1 and delta["actions"].get("block") == 1, delta
    assert delta["released"] == {"allowlisted": 1}, delta


@pytest.mark.parametrize("family", FAMILIES)
def test_allowlisted_url_passes_in_the_engine_and_keeps_the_connection(lab, site, daemon,
                                                                       family):
    nginx, files = site
    d, before = started(daemon, family)
    allowlisted0 = allowlisted_objects(d)
    with HttpExchange(lab, lab.server_address(family), 80) as http:
        port = http.sock.getsockname()[1]
        # On allow_urls: passes unscanned, through the engine.
        status, _, body = http.request("GET", "/pub/eicar.com")
        assert (status, body) == (200, EICAR)
        status, _, body = http.request("GET", "/pub/big.bin")
        assert status == 200 and body == files["big.bin"]
        assert_still_inspected(d, family, lab, port)
        # The next URL on the same connection is scanned.
        status, headers, body = http.request("GET", "/files/eicar.com")
        assert_blocked(status, body)
    delta = counter_delta(before, http_counters(d.status()))
    assert delta["released"] == {}, delta
    assert delta["infected"] == 1 and delta["actions"].get("block") == 1, delta
    assert allowlisted_objects(d) - allowlisted0 == 2

    # On another connection, a host on allow_hosts is released all the same.
    got = curl_fetch(lab, nginx.url("/files/eicar.com", family=family), "-H",
                     f"Host: {ALLOWED_HOST}")
    assert got["http_code"] == 200 and got["body"] == EICAR
    delta = counter_delta(before, http_counters(d.status()))
    assert delta["released"] == {"allowlisted": 1}, delta


def test_allowlist_release_false_keeps_the_connection_inspected(lab, site, daemon):
    d, before = started(daemon, release=False)
    with HttpExchange(lab, lab.server_address(4), 80) as http:
        port = http.sock.getsockname()[1]
        http.host = ALLOWED_HOST
        status, _, body = http.request("GET", "/files/eicar.com")
        assert (status, body) == (200, EICAR)
        assert_still_inspected(d, 4, lab, port)
        http.host = OTHER_HOST
        status, _, body = http.request("GET", "/files/eicar.com")
        assert_blocked(status, body)
    assert_one_virus_nothing_released(d, before)


@pytest.mark.parametrize("family", FAMILIES)
def test_request_pipelined_behind_the_allowlisted_one_is_still_scanned(lab, site, daemon,
                                                                       family):
    _, files = site
    d, before = started(daemon, family)
    with HttpExchange(lab, lab.server_address(family), 80) as http:
        # Both requests in one segment: no point between them to release at.
        http.host = ALLOWED_HOST
        data = http.encode("GET", "/files/small.bin")
        http.host = OTHER_HOST
        data += http.encode("GET", "/files/eicar.com")
        http.sock.sendall(data)
        status, _, body = http.read_response()
        assert (status, body) == (200, files["small.bin"])
        answer = http.read_response()
        assert answer is not None, "the connection ended without the block page"
        status, _, body = answer
        assert_blocked(status, body)
    assert_one_virus_nothing_released(d, before)


@pytest.mark.parametrize("family", FAMILIES)
def test_allowlisted_host_through_a_proxy_does_not_release_the_connection(lab, site, daemon,
                                                                          family):
    """Absolute URLs (what clients send to a forward proxy, here nginx on the
    proxy's port): the connection serves every origin, so only the
    allowlisted response itself passes."""
    _, files = site
    d, before = started(daemon, family)
    with HttpExchange(lab, lab.server_address(family), 80) as http:
        port = http.sock.getsockname()[1]
        http.host = ALLOWED_HOST
        status, _, body = http.request("GET", f"http://{ALLOWED_HOST}/files/small.bin")
        assert (status, body) == (200, files["small.bin"])
        assert_still_inspected(d, family, lab, port)
        http.host = OTHER_HOST
        status, _, body = http.request("GET", f"http://{OTHER_HOST}/files/eicar.com")
        assert_blocked(status, body)
    assert_one_virus_nothing_released(d, before)


@pytest.mark.parametrize("family", FAMILIES)
def test_release_after_a_relayed_response_under_loss(lab, site, daemon, family):
    """~1% loss: a scanned (relayed) download from another host first, then
    a request to the allowlisted host on the same connection: the release
    waits until the engine owes the client nothing, and every byte arrives
    as sent."""
    _, files = site
    d, before = started(daemon, family)
    lab.add_tcp_loss(LOSS)
    digest = hashlib.sha256(files["big.bin"]).hexdigest()
    with HttpExchange(lab, lab.server_address(family), 80) as http:
        port = http.sock.getsockname()[1]
        http.host = OTHER_HOST
        status, _, body = http.request("GET", "/files/big.bin")
        assert status == 200 and hashlib.sha256(body).hexdigest() == digest
        http.host = ALLOWED_HOST
        status, _, body = http.request("GET", "/files/small.bin")
        assert (status, body) == (200, files["small.bin"])
        wait_disposition(d, family, lab, port, "released")
        status, _, body = http.request("GET", "/files/big.bin")
        assert status == 200 and hashlib.sha256(body).hexdigest() == digest
    assert lab.tcp_loss_drops() > 0, "the loss rules dropped nothing"
    delta = counter_delta(before, http_counters(d.status()))
    assert delta["released"] == {"allowlisted": 1}, delta
    assert delta["scanned"] == 1 and delta["clean"] == 1, delta

"""FTP antivirus through nfqscand (issue 12), with a real vsftpd and real
clients (Python's ftplib and curl) in the client namespace.

The inspector follows the control channel and predicts each data connection
from PASV/EPSV replies and PORT/EPRT commands. The data of a RETR (server ->
client) or STOR (client -> server) is one object, scanned before the
receiver gets its last byte:

- infected download: the data connection carries the drop message
  (rules/messages/ftp-drop.txt: the detection, the file name, the event id)
  instead of the file, and the client gets `550` instead of `226`;
- infected upload: the server never stores the file whole (it gets the drop
  message, or a data connection reset before the last byte), the client gets
  `550`;
- the control session goes on: the next transfer works;
- clean files arrive byte-identical (20 MB, also under ~1% loss);
- REST (a resumed transfer) is `partial` and its fallback decides; a file
  over max_content_size is `content-size`; both logged;
- passive (PASV, EPSV) and active (PORT, EPRT), IPv4 and IPv6, the control
  channel on 21 ([protocols.ftp] ports) and on 2121 (found by the probe),
  behind masquerade and through a port forward.

Tests marked `ftp_inspector` need the FTP inspector (the ftp branch of issue
12); without it they fail because the file arrives whole with `226`. The
others (the lab itself, clean transfers through nfqscand) pass on main.
Counters are read through ftp_counters() only, events through ftp_events()."""

from __future__ import annotations

import hashlib
import os

import pytest

from ftp_clients import CURL_MODES, curl_ftp, ftp_session, ftps_retrieve, retr, stor
from http_corpus import EICAR, Corpus
from lab import REPO, ROUTER4_CLIENT_SIDE, ROUTER6_CLIENT_SIDE, wait_until
from servers import Vsftpd
from test_http_av import counter_delta, http_counters
from test_stream_rewrite import DOWNLOAD_LIMIT, LOSS

USER, PASSWORD = "alice", "wonderland"
STANDARD_PORT, ODD_PORT = 21, 2121
FAMILIES = [pytest.param(4, id="ipv4"), pytest.param(6, id="ipv6")]
# (family, passive, extended, control port): ftplib speaks PASV/PORT over
# IPv4 and EPSV/EPRT over IPv6; extended makes it EPSV/EPRT over IPv4 too.
ROUTES = [pytest.param((4, True, False, STANDARD_PORT), id="ipv4-pasv"),
          pytest.param((4, False, False, STANDARD_PORT), id="ipv4-port"),
          pytest.param((4, True, True, STANDARD_PORT), id="ipv4-epsv"),
          pytest.param((4, False, True, STANDARD_PORT), id="ipv4-eprt"),
          pytest.param((6, True, True, STANDARD_PORT), id="ipv6-epsv"),
          pytest.param((6, False, True, STANDARD_PORT), id="ipv6-eprt"),
          pytest.param((4, True, False, ODD_PORT), id=f"ipv4-pasv-port{ODD_PORT}"),
          pytest.param((6, False, True, ODD_PORT), id=f"ipv6-eprt-port{ODD_PORT}")]
MAIN_ROUTES = ROUTES[:2] + ROUTES[4:6]  # PASV, PORT, EPSV, EPRT
# Passive over IPv4, active over IPv6.
PASSIVE_ACTIVE = [pytest.param((4, True, False, STANDARD_PORT), id="ipv4-pasv"),
                  pytest.param((6, False, True, STANDARD_PORT), id="ipv6-eprt")]
SAMPLES = ["eicar.com", "eicar.zip", "clam.exe", "clam.zip"]
SCAN = {"clamav_db_dirs": [str(REPO / "rules" / "clamav")],
        "yara_rule_dirs": [str(REPO / "rules" / "yara")], "pool_threads": 2}
SMALL_LIMIT = 30  # s per socket operation of a session moving files of a few MB at most
DROP_HEAD = "this file was blocked by the security scanner"  # rules/messages/ftp-drop.txt
DROP_START = b"nfqscan: " + DROP_HEAD.encode()

ftp_inspector = pytest.mark.ftp_inspector


# -- what the daemon reports ----------------------------------------------------

def ftp_counters(status: dict) -> dict:
    """The FTP section of `nfqscanctl status --json` (the inspection counters
    every protocol has) in the shape of test_http_av.http_counters: scanned,
    clean, infected, errors {category: n}, actions {block|pass|reset: n},
    released {reason: n}. The FTP-only figures are status["ftp"]."""
    return http_counters(status, "ftp")


def ftp_events(daemon, count: int = 200) -> list[dict]:
    return [e for e in daemon.detections(count) if e.get("protocol") == "ftp"]


def wait_event(daemon, path: str, action: str, timeout: float = 30.0) -> dict:
    """The newest ftp event whose object names `path` (the file's path in
    the server's tree, e.g. "infected/eicar.com": the object may carry the
    current directory in front) with `action`."""
    found: list = []

    def logged():
        found[:] = [e for e in ftp_events(daemon)
                    if e.get("object", "").endswith(path) and e.get("action") == action]
        return bool(found)

    try:
        wait_until(logged, timeout, f"an ftp event for {path} with action {action}")
    except TimeoutError as exc:
        raise AssertionError(f"{exc}; ftp events: {ftp_events(daemon)}") from None
    return found[-1]


def expect(reply: str, code: str, what: str) -> None:
    """The control reply that ended a transfer has `code` (raised by hand:
    pytest would print the whole file of the call that made the reply)."""
    if not reply.startswith(code):
        raise AssertionError(f"{what}: the control channel said {reply!r}, expected {code}")


def expect_same(got: bytes | None, want: bytes, what: str) -> None:
    if got != want:
        size = "nothing" if got is None else f"{len(got)} bytes"
        raise AssertionError(f"{what}: got {size}, not the {len(want)} bytes sent "
                             f"(sha256 {hashlib.sha256(want).hexdigest()[:16]}...)")


def assert_dropped(daemon, data: bytes, reply: str, sample, path: str,
                   direction: str = "download") -> dict:
    """A download of `sample` (at `path`) got the drop message on its data
    connection and 550 on the control connection; the event log has it.
    Returns the event."""
    what = f"RETR {path}"
    if sample.data in data or EICAR in data:
        raise AssertionError(f"{what}: the client got the file ({len(data)} bytes; the "
                             f"control channel said {reply!r})")
    expect(reply, "550", what)
    event = wait_event(daemon, path, "block")
    assert event["verdict"] == "infected" and event["category"] == "virus", event
    assert event["name"] in sample.detections, event
    assert event.get("direction") == direction, event
    text = data.decode("utf-8", errors="replace")
    assert DROP_HEAD in text, f"{what}: not the drop message:\n{text[:600]}"
    assert event["name"] in text, f"{what}: the drop message does not name {event['name']}"
    assert os.path.basename(path) in text, f"{what}: the drop message does not name the file"
    assert str(event.get("id")) in text, f"{what}: the drop message lacks the event id {event}"
    return event


def assert_not_stored_whole(vsftpd: Vsftpd, name: str, sample) -> None:
    stored = vsftpd.uploaded(name)
    if stored is not None and (sample.data in stored or EICAR in stored):
        raise AssertionError(f"vsftpd stored the infected upload {name} whole "
                             f"({len(stored)} bytes)")


def assert_event_for_upload(daemon, path: str, sample) -> dict:
    event = wait_event(daemon, path, "block")
    assert event["verdict"] == "infected" and event["name"] in sample.detections, event
    assert event.get("direction") == "upload", event
    return event


# -- fixtures ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def corpus():
    return Corpus()


@pytest.fixture
def samples(corpus) -> list[str]:
    if not corpus.has("clam.exe"):
        pytest.skip("clamav-testfiles is not installed (tools/setup installs it)")
    return SAMPLES


@pytest.fixture
def vsftpd(lab, corpus):
    """vsftpd on 21 and 2121 (both families) serving each sample of the
    corpus at /infected/NAME and its clean twin at /clean/NAME."""
    server = Vsftpd(lab, ports=(STANDARD_PORT, ODD_PORT), users={USER: PASSWORD})
    publish(server, corpus)
    return server


def publish(server: Vsftpd, corpus) -> None:
    for name in SAMPLES + ["eicar-big.bin"]:
        if corpus.has(name):
            server.add_file(f"infected/{name}", corpus.infected(name).data)
            server.add_file(f"clean/{name}", corpus.clean(name).data)


@pytest.fixture
def ftp_av(lab, nfqscand):
    """Factory: nfqscand with the project's signatures and [protocols.ftp]
    `ftp` merged in (and [scan.limits] `limits`), once its engines are
    loaded."""

    def start(ftp: dict | None = None, limits: dict | None = None):
        scan = dict(SCAN)
        if limits:
            scan["limits"] = limits
        overrides = {"scan": scan}
        if ftp:
            overrides["protocols"] = {"ftp": ftp}
        daemon = nfqscand(overrides)
        daemon.wait_engines()
        return daemon

    return start


def session(lab, route, timeout: float = SMALL_LIMIT):
    """An ftplib session for `route`; `timeout` bounds each socket operation
    (a stalled transfer fails there)."""
    family, passive, extended, port = route
    return ftp_session(lab, family, port, USER, PASSWORD, passive=passive, extended=extended,
                       timeout=timeout)


# -- the lab itself and clean transfers (pass on main) ----------------------------

def test_lab_vsftpd_serves_every_mode_directly(lab, corpus):
    """The harness without nfqscand: vsftpd answers PASV, EPSV, PORT and
    EPRT on both families and both control ports, stores uploads, refuses
    a wrong password; curl's four modes work."""
    server = Vsftpd(lab, ports=(STANDARD_PORT, ODD_PORT), users={USER: PASSWORD})
    data = corpus.clean("eicar.zip").data
    server.add_file("clean/a.zip", data)
    for param in ROUTES:
        route = param.values[0]
        with session(lab, route) as ftp:
            got, reply = retr(ftp, "clean/a.zip")
            expect(reply, "226", f"{param.id} RETR")
            expect_same(got, data, f"{param.id} RETR")
            name = f"{param.id}.bin"
            expect(stor(ftp, f"upload/{name}", data), "226", f"{param.id} STOR")
            expect_same(server.uploaded(name), data, f"{param.id} STOR")
    for mode, args in CURL_MODES.items():
        got = curl_ftp(lab, server.url("/clean/a.zip", family=6), *args)
        assert got["exit"] == 0 and got["body"] == data, (mode, got["stderr"][-400:])
    with pytest.raises(Exception, match="530"):
        ftp_session(lab, 4, STANDARD_PORT, USER, "wrong")
    log = server.log.read_text()
    for command in ("PASV", "EPSV", "PORT", "EPRT"):
        assert f'"{command}' in log, f"vsftpd never saw {command}"


def clean_20mb_round_trip(lab, vsftpd, corpus, route, what: str) -> None:
    """On one session: the 20 MB clean file downloaded, then uploaded;
    both byte-identical, both confirmed with 226."""
    sample = corpus.clean("eicar-big.bin")
    with session(lab, route, timeout=DOWNLOAD_LIMIT) as ftp:
        got, reply = retr(ftp, "clean/eicar-big.bin")
        expect(reply, "226", f"RETR of 20 MB{what}")
        expect_same(got, sample.data, f"RETR of 20 MB{what}")
        expect(stor(ftp, "upload/big.bin", sample.data), "226", f"STOR of 20 MB{what}")
    expect_same(vsftpd.uploaded("big.bin"), sample.data, f"STOR of 20 MB{what}")


@pytest.mark.parametrize("route", MAIN_ROUTES)
def test_ftp_clean_20mb_download_and_upload_are_byte_identical(lab, vsftpd, corpus, ftp_av,
                                                                route):
    """Works without the inspector too: FTP through nfqscand changes nothing."""
    daemon = ftp_av()
    clean_20mb_round_trip(lab, vsftpd, corpus, route, "")
    # The control connection went through the daemon.
    assert daemon.find_flows(server_port=STANDARD_PORT), daemon.flows()
    assert not [e for e in ftp_events(daemon) if e.get("verdict") == "infected"]


@pytest.mark.parametrize("mode", list(CURL_MODES))
@pytest.mark.parametrize("family", FAMILIES)
def test_ftp_clean_curl_download_and_upload_are_byte_identical(lab, vsftpd, corpus, ftp_av,
                                                                family, mode):
    ftp_av()
    sample = corpus.clean("eicar.zip")
    got = curl_ftp(lab, vsftpd.url("/clean/eicar.zip", family=family), *CURL_MODES[mode])
    assert got["exit"] == 0, got["stderr"][-600:]
    expect_same(got["body"], sample.data, "curl download")
    up = curl_ftp(lab, vsftpd.url(f"/upload/{mode}.zip", family=family), *CURL_MODES[mode],
                  upload=sample.data)
    assert up["exit"] == 0, up["stderr"][-600:]
    expect_same(vsftpd.uploaded(f"{mode}.zip"), sample.data, "curl upload")


# -- infected downloads -------------------------------------------------------------

@ftp_inspector
@pytest.mark.parametrize("route", ROUTES)
def test_ftp_infected_downloads_get_the_drop_message_and_550_and_the_session_goes_on(
        lab, vsftpd, corpus, ftp_av, samples, route):
    """One control session: clean, infected, clean, infected, ... clean.
    Every infected file is replaced, every clean one (its twin) is intact."""
    daemon = ftp_av()
    with session(lab, route) as ftp:
        for name in samples:
            clean = corpus.clean(name)
            got, reply = retr(ftp, f"clean/{name}")
            expect(reply, "226", f"RETR clean/{name}")
            expect_same(got, clean.data, f"RETR clean/{name}")
            got, reply = retr(ftp, f"infected/{name}")
            assert_dropped(daemon, got, reply, corpus.infected(name), f"infected/{name}")
        got, reply = retr(ftp, "clean/eicar.com")
        expect(reply, "226", "the last RETR")
        expect_same(got, corpus.clean("eicar.com").data, "the last RETR")
    if route[3] == ODD_PORT:
        flow = daemon.find_flows(server_port=ODD_PORT)
        assert flow and flow[0]["claimed_by"] in ("probe", "dpi"), flow
    counters = ftp_counters(daemon.status())
    assert counters["infected"] >= len(samples), counters


@ftp_inspector
@pytest.mark.parametrize("mode", list(CURL_MODES))
@pytest.mark.parametrize("family", FAMILIES)
def test_ftp_curl_infected_download_gets_the_drop_message_and_550(lab, vsftpd, corpus, ftp_av,
                                                                 family, mode):
    daemon = ftp_av()
    sample = corpus.infected("eicar.zip")

    got = curl_ftp(lab, vsftpd.url("/infected/eicar.zip", family=family), *CURL_MODES[mode])

    # curl reports a transfer the server did not confirm with 226.
    assert got["exit"] != 0, got["stderr"][-600:]
    reply = got["transfer_reply"] or ""
    expect(reply, "550", "curl RETR")
    # curl reads no more than the size SIZE and the 150 reply announced (the
    # original file's): it keeps the head of the drop message, whose first
    # two lines (under 150 bytes; the zip has more) name the detection.
    body = got["body"]
    assert body.startswith(DROP_START), (
        f"not the drop message: {body[:300]!r}; curl: {got['stderr'][-2500:]}")
    assert EICAR not in body and len(body) <= len(sample.data)
    event = wait_event(daemon, "infected/eicar.zip", "block")
    assert event["name"] in sample.detections, event
    assert event["name"].encode() in body, f"the head of the drop message: {body!r}"


@ftp_inspector
@pytest.mark.parametrize("family", FAMILIES)
def test_ftp_anonymous_download_is_scanned_too(lab, vsftpd, corpus, ftp_av, family):
    daemon = ftp_av()
    vsftpd.add_file("pub/eicar.com", EICAR, anonymous=True)
    vsftpd.add_file("pub/clean.zip", corpus.clean("eicar.zip").data, anonymous=True)
    with ftp_session(lab, family, STANDARD_PORT, "anonymous", "lab@example.org",
                     timeout=SMALL_LIMIT) as ftp:
        got, reply = retr(ftp, "pub/eicar.com")
        assert_dropped(daemon, got, reply, corpus.infected("eicar.com"), "pub/eicar.com")
        got, reply = retr(ftp, "pub/clean.zip")
        expect(reply, "226", "anonymous RETR of a clean file")
        expect_same(got, corpus.clean("eicar.zip").data, "anonymous RETR of a clean file")


@ftp_inspector
def test_ftp_curl_several_files_in_one_run_only_the_infected_is_replaced(lab, vsftpd, corpus,
                                                                        ftp_av):
    daemon = ftp_av()
    names = ["clean/eicar.com", "infected/eicar.com", "clean/eicar.zip"]
    base = lab.dir / "multi"
    base.mkdir()
    args = []
    for i, name in enumerate(names):
        args += [vsftpd.url(f"/{name}"), "--output", str(base / str(i))]
    lab.curl(*args, check=False)
    got = [(base / str(i)).read_bytes() if (base / str(i)).exists() else None
           for i in range(len(names))]
    expect_same(got[0], corpus.clean("eicar.com").data, names[0])
    expect_same(got[2], corpus.clean("eicar.zip").data, names[2])
    assert got[1] is not None, f"{names[1]}: curl wrote nothing"
    assert EICAR not in got[1] and DROP_HEAD in got[1].decode(errors="replace"), got[1][:300]
    wait_event(daemon, "infected/eicar.com", "block")


# -- infected uploads -------------------------------------------------------------

@ftp_inspector
@pytest.mark.parametrize("route", MAIN_ROUTES + ROUTES[6:7])
def test_ftp_infected_uploads_get_550_and_are_never_stored_whole(lab, vsftpd, corpus, ftp_av,
                                                                  samples, route):
    daemon = ftp_av()
    with session(lab, route) as ftp:
        for name in samples:
            sample = corpus.infected(name)
            reply = stor(ftp, f"upload/{name}", sample.data)
            assert reply.startswith("550"), f"STOR {name}: {reply!r}"
            assert_not_stored_whole(vsftpd, name, sample)
            assert_event_for_upload(daemon, f"upload/{name}", sample)
            # The session goes on: the clean twin is stored intact.
            clean = corpus.clean(name)
            reply = stor(ftp, f"upload/clean-{name}", clean.data)
            expect(reply, "226", f"STOR clean-{name} after an infected one")
            expect_same(vsftpd.uploaded(f"clean-{name}"), clean.data, f"STOR clean-{name}")


@ftp_inspector
@pytest.mark.parametrize("family", FAMILIES)
def test_ftp_curl_infected_upload_gets_550_and_is_never_stored_whole(lab, vsftpd, corpus,
                                                                    ftp_av, family):
    daemon = ftp_av()
    sample = corpus.infected("clam.zip") if corpus.has("clam.zip") else corpus.infected("eicar.zip")

    got = curl_ftp(lab, vsftpd.url("/upload/up.zip", family=family), upload=sample.data)

    assert got["exit"] != 0, got["stderr"][-600:]
    assert (got["transfer_reply"] or "").startswith("550"), got["replies"]
    assert_not_stored_whole(vsftpd, "up.zip", sample)
    assert_event_for_upload(daemon, "upload/up.zip", sample)


@ftp_inspector
@pytest.mark.parametrize("route", PASSIVE_ACTIVE)
def test_ftp_appe_and_stou_uploads_are_scanned_and_listings_pass(lab, vsftpd, corpus, ftp_av,
                                                                 route):
    """APPE and STOU carry an upload as STOR does; LIST and NLST are not
    files: they pass unscanned."""
    daemon = ftp_av()
    sample = corpus.infected("eicar.zip")
    head = b"first part\n"
    with session(lab, route) as ftp:
        expect(stor(ftp, "upload/appended.zip", head), "226", "STOR of the first part")
        expect(stor(ftp, "upload/appended.zip", sample.data, command="APPE"), "550",
               "APPE of an infected zip")
        stored = vsftpd.uploaded("appended.zip") or b""
        if sample.data in stored or EICAR in stored:
            raise AssertionError("vsftpd appended the infected zip")
        assert_event_for_upload(daemon, "upload/appended.zip", sample)
        clean = corpus.clean("eicar.zip").data
        expect(stor(ftp, "upload/appended-clean.zip", clean, command="APPE"), "226",
               "APPE of the clean twin")
        expect_same(vsftpd.uploaded("appended-clean.zip"), clean, "APPE of the clean twin")
        ftp.cwd("/upload")
        expect(stor(ftp, "", sample.data, command="STOU"), "550", "STOU of an infected zip")
        for path in vsftpd.upload.iterdir():
            data = path.read_bytes()
            if sample.data in data or EICAR in data:
                raise AssertionError(f"vsftpd stored the infected STOU upload as {path.name}")
        listing = ftp.nlst()
        assert "appended-clean.zip" in listing, listing
        lines = []
        ftp.retrlines("LIST", lines.append)
        assert any("appended-clean.zip" in line for line in lines), lines
    assert daemon.status()["ftp"]["listings"] >= 2


# -- under loss -------------------------------------------------------------------

@pytest.mark.parametrize("family", FAMILIES)
def test_ftp_clean_20mb_transfers_are_byte_identical_under_loss(lab, vsftpd, corpus, ftp_av,
                                                                 family):
    """Works without the inspector too."""
    ftp_av()
    lab.add_tcp_loss(LOSS)
    # Passive on one family, active on the other: both data directions.
    clean_20mb_round_trip(lab, vsftpd, corpus, (family, family == 4, True, STANDARD_PORT),
                          " under loss")
    assert lab.tcp_loss_drops() > 0, "the loss rules dropped nothing"


@ftp_inspector
@pytest.mark.parametrize("family", FAMILIES)
def test_ftp_infected_20mb_download_and_upload_are_blocked_under_loss(lab, vsftpd, corpus,
                                                                       ftp_av, family):
    daemon = ftp_av()
    lab.add_tcp_loss(LOSS, injected=True)
    big = corpus.infected("eicar-big.bin")
    route = (family, family == 6, True, STANDARD_PORT)
    with session(lab, route, timeout=DOWNLOAD_LIMIT) as ftp:
        got, reply = retr(ftp, "infected/eicar-big.bin")
        assert_dropped(daemon, got, reply, big, "infected/eicar-big.bin")
        expect(stor(ftp, "upload/big.bin", big.data), "550", "infected STOR under loss")
        assert_not_stored_whole(vsftpd, "big.bin", big)
        got, reply = retr(ftp, "clean/eicar.zip")
        expect(reply, "226", "RETR after them")
        expect_same(got, corpus.clean("eicar.zip").data, "RETR after them")
    assert lab.tcp_loss_drops() > 0, "the loss rules dropped nothing"


# -- REST, ABOR, limits, on_virus ---------------------------------------------------

@ftp_inspector
@pytest.mark.parametrize("family", FAMILIES)
def test_ftp_resumed_download_passes_as_partial_and_is_logged(lab, vsftpd, corpus, ftp_av,
                                                               family):
    daemon = ftp_av()
    data = corpus.clean("eicar-big.bin").data[:1_000_000]
    vsftpd.add_file("clean/part.bin", data)
    offset = 400_000

    with session(lab, (family, True, True, STANDARD_PORT)) as ftp:
        got, reply = retr(ftp, "clean/part.bin", rest=offset)
    expect(reply, "226", "resumed RETR")
    expect_same(got, data[offset:], "resumed RETR")
    event = wait_event(daemon, "clean/part.bin", "pass")
    assert event["verdict"] == "error" and event["category"] == "partial", event
    status = daemon.status()
    assert ftp_counters(status)["errors"].get("partial", 0) >= 1, status["protocols"]
    assert status["ftp"]["resumed"] >= 1, status["ftp"]

    # curl -C: the same, from another client.
    got = curl_ftp(lab, vsftpd.url("/clean/part.bin", family=family), "--continue-at",
                   str(offset))
    assert got["exit"] == 0, got["stderr"][-600:]
    expect_same(got["body"], data[offset:], "curl --continue-at")


@ftp_inspector
@pytest.mark.parametrize("route", PASSIVE_ACTIVE)
def test_ftp_resumed_transfers_are_blocked_when_the_partial_fallback_says_block(lab, vsftpd,
                                                                              corpus, ftp_av,
                                                                              route):
    daemon = ftp_av({"fallback": {"partial": "block"}})
    data = corpus.clean("eicar-big.bin").data[:1_000_000]
    vsftpd.add_file("clean/part.bin", data)
    offset = 400_000

    with session(lab, route) as ftp:
        got, reply = retr(ftp, "clean/part.bin", rest=offset)
        expect(reply, "550", "resumed RETR")
        assert DROP_HEAD in got.decode(errors="replace"), f"not the drop message: {got[:200]!r}"
        event = wait_event(daemon, "clean/part.bin", "block")
        assert event["category"] == "partial", event
        # A resumed upload (REST, then STOR) too: the first part is a whole
        # object of its own (clean), the rest is partial.
        expect(stor(ftp, "upload/whole.bin", data[:offset]), "226", "STOR of the first part")
        expect(stor(ftp, "upload/whole.bin", data[offset:], rest=offset), "550",
               "resumed STOR")
        event = wait_event(daemon, "upload/whole.bin", "block")
        assert event["category"] == "partial" and event["direction"] == "upload", event
        got, reply = retr(ftp, "clean/eicar.zip")
        expect(reply, "226", "RETR after them")
        expect_same(got, corpus.clean("eicar.zip").data, "RETR after them")


@ftp_inspector
def test_ftp_abort_mid_upload_is_logged_and_the_session_goes_on(lab, vsftpd, corpus, ftp_av):
    """ABOR while the data connection is still open (the client has sent
    part of the file and not its end): the object ends without a verdict on
    what is missing, logged as partial; the next transfers work."""
    daemon = ftp_av()
    before = daemon.status().get("ftp", {}).get("aborted", 0)
    with session(lab, (4, True, False, STANDARD_PORT)) as ftp:
        conn = ftp.transfercmd("STOR upload/aborted.bin")
        conn.sendall(corpus.clean("eicar-big.bin").data[:8192])
        ftp.putcmd("ABOR")
        conn.close()
        replies = until_noop(ftp)
        assert any(r[:3] in ("225", "226", "426") for r in replies), replies
        event = wait_event(daemon, "upload/aborted.bin", "drop")
        assert event["category"] == "partial", event
        got, reply = retr(ftp, "clean/eicar.zip")
        expect(reply, "226", "RETR after ABOR")
        expect_same(got, corpus.clean("eicar.zip").data, "RETR after ABOR")
        got, reply = retr(ftp, "infected/eicar.com")
        expect(reply, "550", "infected RETR after ABOR")
        assert EICAR not in got
    assert daemon.status()["ftp"]["aborted"] == before + 1


def until_noop(ftp) -> list[str]:
    """Send NOOP and read every reply line up to its 200: the replies still
    owed (an ABOR's 426 and 226 come as two)."""
    ftp.putcmd("NOOP")
    lines = []
    while True:
        line = ftp.getline()
        lines.append(line)
        if line.startswith("200 "):
            return lines


@ftp_inspector
def test_ftp_file_over_max_content_size_passes_by_default_and_is_logged(lab, vsftpd, corpus,
                                                                       ftp_av):
    daemon = ftp_av(limits={"max_content_size": "64K"})
    data = corpus.clean("eicar-big.bin").data[:200_000]
    vsftpd.add_file("clean/over.bin", data)
    with session(lab, (6, True, True, STANDARD_PORT)) as ftp:
        got, reply = retr(ftp, "clean/over.bin")
    expect(reply, "226", "RETR over max_content_size")
    expect_same(got, data, "RETR over max_content_size")
    event = wait_event(daemon, "clean/over.bin", "pass")
    assert event["category"] == "content-size", event


@ftp_inspector
@pytest.mark.parametrize("route", PASSIVE_ACTIVE)
def test_ftp_file_over_max_content_size_is_blocked_when_the_fallback_blocks(lab, vsftpd, corpus,
                                                                           ftp_av, route):
    daemon = ftp_av({"fallback": {"content-size": "block"}}, limits={"max_content_size": "64K"})
    data = corpus.clean("eicar-big.bin").data[:200_000]
    vsftpd.add_file("clean/over.bin", data)
    with session(lab, route) as ftp:
        got, reply = retr(ftp, "clean/over.bin")
        expect(reply, "550", "RETR over max_content_size")
        assert got != data and len(got) < 64 * 1024, f"{len(got)} bytes arrived"
        got, reply = retr(ftp, "clean/eicar.com")
        expect(reply, "226", "RETR after it")
        expect_same(got, corpus.clean("eicar.com").data, "RETR after it")
    assert wait_event(daemon, "clean/over.bin", "block")["category"] == "content-size"


@ftp_inspector
def test_ftp_on_virus_pass_delivers_the_file_and_logs_pass(lab, vsftpd, corpus, ftp_av):
    daemon = ftp_av({"on_virus": "pass"})
    sample = corpus.infected("eicar.com")
    with session(lab, (4, True, False, STANDARD_PORT)) as ftp:
        got, reply = retr(ftp, "infected/eicar.com")
    expect(reply, "226", "RETR with on_virus pass")
    expect_same(got, sample.data, "RETR with on_virus pass")
    event = wait_event(daemon, "infected/eicar.com", "pass")
    assert event["verdict"] == "infected" and event["name"] in sample.detections, event


@ftp_inspector
def test_ftp_auth_tls_session_is_released_unscanned_and_counted(lab, corpus, ftp_av):
    """AUTH TLS: the commands, the replies and so the data connections they
    predict are encrypted: nfqscand cannot scan them, releases the control
    connection and counts it (tls), never silently."""
    server = Vsftpd(lab, ports=(STANDARD_PORT,), users={USER: PASSWORD}, tls=True,
                    name="vsftpd-tls")
    publish(server, corpus)
    daemon = ftp_av()

    got, version = ftps_retrieve(lab, 4, STANDARD_PORT, USER, PASSWORD, "infected/eicar.com")

    assert version and version.startswith("TLS"), version
    expect_same(got, EICAR, "RETR over TLS (unscanned: delivered as sent)")
    status = daemon.status()
    assert status["ftp"]["tls"] == 1, status["ftp"]
    control = daemon.wait_flow(server_port=STANDARD_PORT)
    assert control["disposition"] == "released", control
    assert ftp_counters(status)["released"].get("tls") == 1, ftp_counters(status)


# -- events and counters ----------------------------------------------------------

@ftp_inspector
def test_ftp_status_counters_and_events_match_the_transfers(lab, vsftpd, corpus, ftp_av):
    daemon = ftp_av()
    before = ftp_counters(daemon.status())
    with session(lab, (4, True, False, STANDARD_PORT)) as ftp:
        for name in ("clean/eicar.com", "clean/eicar.zip"):
            expect(retr(ftp, name)[1], "226", f"RETR {name}")
        expect(retr(ftp, "infected/eicar.zip")[1], "550", "RETR infected/eicar.zip")
        expect(stor(ftp, "upload/eicar.com", EICAR), "550", "STOR of EICAR")
        expect(stor(ftp, "upload/ok.txt", b"fine\n"), "226", "STOR of a clean file")
    daemon.wait_queues_idle()
    status = daemon.status()
    delta = counter_delta(before, ftp_counters(status))
    assert delta["scanned"] == 5 and delta["clean"] == 3 and delta["infected"] == 2, delta
    assert delta["actions"].get("block") == 2, delta
    # The FTP block: the control channel's view (one session, 5 transfers).
    ftp_block = status["ftp"]
    assert ftp_block["sessions"] >= 1, ftp_block
    assert ftp_block["expectations"] >= 5 and ftp_block["claimed"] >= 5, ftp_block
    assert (ftp_block["downloads"], ftp_block["uploads"]) == (3, 2), ftp_block
    assert ftp_block["files_scanned"] == 5 and ftp_block["files_blocked"] == 2, ftp_block
    assert ftp_block["replies_replaced"] == 2, ftp_block
    events = ftp_events(daemon)
    assert sorted((e["direction"], e["action"]) for e in events) == \
        [("download", "block"), ("upload", "block")], events
    for event in events:
        assert event["flow"] and event.get("id"), event
    assert "ftp" in daemon.ctl("status").stdout.decode().lower()
    out = daemon.ctl("detections").stdout.decode()
    assert "eicar.zip" in out and "ftp" in out, out


# -- behind NAT -----------------------------------------------------------------

@ftp_inspector
@pytest.mark.parametrize("family", FAMILIES)
def test_ftp_behind_masquerade_blocks_and_delivers_byte_identical(lab, vsftpd, corpus, ftp_av,
                                                                 family):
    """Passive only: active mode through masquerade needs the kernel's FTP
    helper to rewrite PORT (vsftpd refuses a PORT naming another host)."""
    lab.masquerade()
    daemon = ftp_av()
    with session(lab, (family, True, True, STANDARD_PORT), timeout=DOWNLOAD_LIMIT) as ftp:
        got, reply = retr(ftp, "clean/eicar-big.bin")
        expect(reply, "226", "RETR of 20 MB")
        expect_same(got, corpus.clean("eicar-big.bin").data, "RETR of 20 MB")
        got, reply = retr(ftp, "infected/eicar.zip")
        assert_dropped(daemon, got, reply, corpus.infected("eicar.zip"), "infected/eicar.zip")
        expect(stor(ftp, "upload/eicar.com", EICAR), "550", "STOR of EICAR")
        assert_not_stored_whole(vsftpd, "eicar.com", corpus.infected("eicar.com"))
    assert daemon.status()["streams"]["nat_flows"] >= 2


@ftp_inspector
@pytest.mark.parametrize("family", FAMILIES)
def test_ftp_through_a_port_forward_blocks_and_delivers_byte_identical(lab, corpus, ftp_av,
                                                                      family):
    """The router forwards its port 2100 to the server's 21 and the passive
    ports one to one (as a port forward to an inside FTP server is set up);
    EPSV names only a port, so the client opens the data connection to the
    router too."""
    low, high = 30100, 30103
    server = Vsftpd(lab, ports=(STANDARD_PORT,), users={USER: PASSWORD}, pasv_ports=(low, high),
                    name="vsftpd-forwarded")
    publish(server, corpus)
    lab.port_forward(2100, STANDARD_PORT)
    for port in range(low, high + 1):
        lab.port_forward(port, port)
    daemon = ftp_av()
    public = ROUTER4_CLIENT_SIDE if family == 4 else ROUTER6_CLIENT_SIDE
    with ftp_session(lab, family, 2100, USER, PASSWORD, extended=True, address=public) as ftp:
        got, reply = retr(ftp, "clean/eicar.zip")
        expect(reply, "226", "RETR through the port forward")
        expect_same(got, corpus.clean("eicar.zip").data, "RETR through the port forward")
        got, reply = retr(ftp, "infected/eicar.com")
        assert_dropped(daemon, got, reply, corpus.infected("eicar.com"), "infected/eicar.com")
    assert daemon.status()["streams"]["nat_flows"] >= 2

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

from ftp_clients import CURL_MODES, curl_ftp, ftp_session, retr, stor
from http_corpus import EICAR, Corpus
from lab import REPO, ROUTER4_CLIENT_SIDE, ROUTER6_CLIENT_SIDE, wait_until
from servers import Vsftpd
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
SAMPLES = ["eicar.com", "eicar.zip", "clam.exe", "clam.zip"]
SCAN = {"clamav_db_dirs": [str(REPO / "rules" / "clamav")],
        "yara_rule_dirs": [str(REPO / "rules" / "yara")], "pool_threads": 2}
DROP_HEAD = "this file was blocked by the security scanner"  # rules/messages/ftp-drop.txt

ftp_inspector = pytest.mark.ftp_inspector


# -- what the daemon reports ----------------------------------------------------

def ftp_counters(status: dict) -> dict:
    """The FTP section of `nfqscanctl status --json` in the one shape the
    tests use (as http_counters in test_http_av.py): scanned, clean,
    infected, errors {category: n}, actions {block|pass|reset: n},
    released {reason: n}. Missing keys read as 0."""
    section = status.get("protocols", {}).get("ftp", {})

    def table(value) -> dict:
        return {k: int(v) for k, v in value.items()} if isinstance(value, dict) else {}

    return {"scanned": int(section.get("objects", 0)), "clean": int(section.get("clean", 0)),
            "infected": int(section.get("infected", 0)),
            "errors": table(section.get("errors", {})),
            "actions": table(section.get("actions", {})),
            "released": table(section.get("released", {}))}


def counter_delta(before: dict, after: dict) -> dict:
    out = {}
    for key, value in after.items():
        if isinstance(value, dict):
            old = before.get(key, {})
            out[key] = {k: v - old.get(k, 0) for k, v in value.items() if v - old.get(k, 0)}
        else:
            out[key] = value - before.get(key, 0)
    return out


def ftp_events(daemon, count: int = 200) -> list[dict]:
    return [e for e in daemon.detections(count) if e.get("protocol") == "ftp"]


def wait_event(daemon, path: str, action: str, timeout: float = 10.0) -> dict:
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


def assert_dropped(daemon, data: bytes, reply: str, sample, path: str,
                   direction: str = "download") -> dict:
    """A download of `sample` (at `path`) got the drop message on its data
    connection and 550 on the control connection; the event log has it.
    Returns the event."""
    what = f"RETR {path}"
    assert reply.startswith("550"), f"{what}: the control channel said {reply!r}, not 550"
    assert data != sample.data and sample.data not in data and EICAR not in data, \
        f"{what}: the client got the file ({len(data)} bytes)"
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
    assert stored is None or (stored != sample.data and sample.data not in stored
                              and EICAR not in stored), \
        f"vsftpd stored the infected upload {name} whole ({len(stored)} bytes)"


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


def session(lab, route, **kwargs):
    family, passive, extended, port = route
    return ftp_session(lab, family, port, USER, PASSWORD, passive=passive, extended=extended,
                       **kwargs)


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
            assert (got, reply[:3]) == (data, "226"), (param.id, reply)
            name = f"{param.id}.bin"
            assert stor(ftp, f"upload/{name}", data).startswith("226"), param.id
            assert server.uploaded(name) == data, param.id
    for mode, args in CURL_MODES.items():
        got = curl_ftp(lab, server.url("/clean/a.zip", family=6), *args)
        assert got["exit"] == 0 and got["body"] == data, (mode, got["stderr"][-400:])
    with pytest.raises(Exception, match="530"):
        ftp_session(lab, 4, STANDARD_PORT, USER, "wrong")
    log = server.log.read_text()
    for command in ("PASV", "EPSV", "PORT", "EPRT"):
        assert f'"{command}' in log, f"vsftpd never saw {command}"


@pytest.mark.parametrize("route", MAIN_ROUTES)
def test_ftp_clean_20mb_download_and_upload_are_byte_identical(lab, vsftpd, corpus, ftp_av,
                                                                route):
    """Works without the inspector too: FTP through nfqscand changes nothing."""
    daemon = ftp_av()
    sample = corpus.clean("eicar-big.bin")

    with session(lab, route) as ftp:
        got, reply = retr(ftp, "clean/eicar-big.bin")
        assert reply.startswith("226"), reply
        assert hashlib.sha256(got).hexdigest() == sample.sha256, f"{len(got)} bytes, altered"
        assert stor(ftp, "upload/big.bin", sample.data).startswith("226")
    stored = vsftpd.uploaded("big.bin")
    assert stored is not None and hashlib.sha256(stored).hexdigest() == sample.sha256, \
        f"the upload arrived altered ({len(stored or b'')} bytes)"
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
    assert got["exit"] == 0 and got["body"] == sample.data, got["stderr"][-600:]
    up = curl_ftp(lab, vsftpd.url(f"/upload/{mode}.zip", family=family), *CURL_MODES[mode],
                  upload=sample.data)
    assert up["exit"] == 0, up["stderr"][-600:]
    assert vsftpd.uploaded(f"{mode}.zip") == sample.data


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
            assert (reply[:3], got == clean.data) == ("226", True), \
                f"clean/{name}: {reply!r}, {len(got)} bytes"
            got, reply = retr(ftp, f"infected/{name}")
            assert_dropped(daemon, got, reply, corpus.infected(name), f"infected/{name}")
        got, reply = retr(ftp, "clean/eicar.com")
        assert reply.startswith("226") and got == corpus.clean("eicar.com").data
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
    assert reply.startswith("550"), got["replies"]
    assert_dropped(daemon, got["body"], reply, sample, "infected/eicar.zip")


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
    got = [(base / str(i)).read_bytes() for i in range(len(names))]
    assert got[0] == corpus.clean("eicar.com").data
    assert got[2] == corpus.clean("eicar.zip").data
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
            assert reply.startswith("226"), f"STOR clean-{name} after an infected one: {reply!r}"
            assert vsftpd.uploaded(f"clean-{name}") == clean.data


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


# -- under loss -------------------------------------------------------------------

@pytest.mark.parametrize("family", FAMILIES)
def test_ftp_clean_20mb_transfers_are_byte_identical_under_loss(lab, vsftpd, corpus, ftp_av,
                                                                 family):
    """Works without the inspector too."""
    ftp_av()
    lab.add_tcp_loss(LOSS)
    sample = corpus.clean("eicar-big.bin")
    # Passive on one family, active on the other: both data directions.
    route = (family, family == 4, True, STANDARD_PORT)
    with session(lab, route, timeout=DOWNLOAD_LIMIT) as ftp:
        got, reply = retr(ftp, "clean/eicar-big.bin")
        assert reply.startswith("226"), reply
        assert hashlib.sha256(got).hexdigest() == sample.sha256, f"{len(got)} bytes, altered"
        assert stor(ftp, "upload/big.bin", sample.data).startswith("226")
    assert hashlib.sha256(vsftpd.uploaded("big.bin") or b"").hexdigest() == sample.sha256
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
        reply = stor(ftp, "upload/big.bin", big.data)
        assert reply.startswith("550"), reply
        assert_not_stored_whole(vsftpd, "big.bin", big)
        got, reply = retr(ftp, "clean/eicar.zip")
        assert reply.startswith("226") and got == corpus.clean("eicar.zip").data
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
    assert reply.startswith("226") and got == data[offset:], (reply, len(got))
    event = wait_event(daemon, "clean/part.bin", "pass")
    assert event["verdict"] == "error" and event["category"] == "partial", event
    assert ftp_counters(daemon.status())["errors"].get("partial", 0) >= 1

    # curl -C: the same, from another client.
    got = curl_ftp(lab, vsftpd.url("/clean/part.bin", family=family), "--continue-at",
                   str(offset))
    assert got["exit"] == 0 and got["body"] == data[offset:], got["stderr"][-600:]


@ftp_inspector
def test_ftp_resumed_transfers_are_blocked_when_the_partial_fallback_says_block(lab, vsftpd,
                                                                              corpus, ftp_av):
    daemon = ftp_av({"fallback": {"partial": "block"}})
    data = corpus.clean("eicar-big.bin").data[:1_000_000]
    vsftpd.add_file("clean/part.bin", data)
    offset = 400_000

    with session(lab, (4, False, False, STANDARD_PORT)) as ftp:
        got, reply = retr(ftp, "clean/part.bin", rest=offset)
        assert reply.startswith("550"), reply
        assert got != data[offset:] and DROP_HEAD in got.decode(errors="replace"), len(got)
        event = wait_event(daemon, "clean/part.bin", "block")
        assert event["category"] == "partial", event
        # A resumed upload (REST, then STOR) too: the first part is a whole
        # object of its own (clean), the rest is partial.
        assert stor(ftp, "upload/whole.bin", data[:offset]).startswith("226")
        reply = stor(ftp, "upload/whole.bin", data[offset:], rest=offset)
        assert reply.startswith("550"), reply
        event = wait_event(daemon, "upload/whole.bin", "block")
        assert event["category"] == "partial" and event["direction"] == "upload", event
        got, reply = retr(ftp, "clean/eicar.zip")
        assert reply.startswith("226") and got == corpus.clean("eicar.zip").data


@ftp_inspector
def test_ftp_abort_mid_download_leaves_the_session_usable(lab, vsftpd, corpus, ftp_av):
    ftp_av()
    with session(lab, (4, True, False, STANDARD_PORT)) as ftp:
        conn = ftp.transfercmd("RETR clean/eicar-big.bin")
        first = conn.recv(65536)
        assert first, "nothing of the download arrived"
        ftp.abort()
        conn.close()
        got, reply = retr(ftp, "clean/eicar.zip")
        assert reply.startswith("226") and got == corpus.clean("eicar.zip").data, reply
        got, reply = retr(ftp, "infected/eicar.com")
        assert reply.startswith("550") and EICAR not in got, reply


@ftp_inspector
def test_ftp_file_over_max_content_size_passes_by_default_and_is_logged(lab, vsftpd, corpus,
                                                                       ftp_av):
    daemon = ftp_av(limits={"max_content_size": "64K"})
    data = corpus.clean("eicar-big.bin").data[:200_000]
    vsftpd.add_file("clean/over.bin", data)
    with session(lab, (6, True, True, STANDARD_PORT)) as ftp:
        got, reply = retr(ftp, "clean/over.bin")
    assert reply.startswith("226") and got == data, (reply, len(got))
    event = wait_event(daemon, "clean/over.bin", "pass")
    assert event["category"] == "content-size", event


@ftp_inspector
def test_ftp_file_over_max_content_size_is_blocked_when_the_fallback_blocks(lab, vsftpd, corpus,
                                                                           ftp_av):
    daemon = ftp_av({"fallback": {"content-size": "block"}}, limits={"max_content_size": "64K"})
    data = corpus.clean("eicar-big.bin").data[:200_000]
    vsftpd.add_file("clean/over.bin", data)
    with session(lab, (4, False, False, STANDARD_PORT)) as ftp:
        got, reply = retr(ftp, "clean/over.bin")
        assert reply.startswith("550"), reply
        assert got != data and len(got) < 64 * 1024, len(got)
        got, reply = retr(ftp, "clean/eicar.com")
        assert reply.startswith("226") and got == corpus.clean("eicar.com").data
    assert wait_event(daemon, "clean/over.bin", "block")["category"] == "content-size"


@ftp_inspector
def test_ftp_on_virus_pass_delivers_the_file_and_logs_pass(lab, vsftpd, corpus, ftp_av):
    daemon = ftp_av({"on_virus": "pass"})
    sample = corpus.infected("eicar.com")
    with session(lab, (4, True, False, STANDARD_PORT)) as ftp:
        got, reply = retr(ftp, "infected/eicar.com")
    assert reply.startswith("226") and got == sample.data, reply
    event = wait_event(daemon, "infected/eicar.com", "pass")
    assert event["verdict"] == "infected" and event["name"] in sample.detections, event


# -- events and counters ----------------------------------------------------------

@ftp_inspector
def test_ftp_status_counters_and_events_match_the_transfers(lab, vsftpd, corpus, ftp_av):
    daemon = ftp_av()
    before = ftp_counters(daemon.status())
    with session(lab, (4, True, False, STANDARD_PORT)) as ftp:
        for name in ("clean/eicar.com", "clean/eicar.zip"):
            assert retr(ftp, name)[1].startswith("226")
        assert retr(ftp, "infected/eicar.zip")[1].startswith("550")
        assert stor(ftp, "upload/eicar.com", EICAR).startswith("550")
        assert stor(ftp, "upload/ok.txt", b"fine\n").startswith("226")
    daemon.wait_queues_idle()
    delta = counter_delta(before, ftp_counters(daemon.status()))
    assert delta["scanned"] == 5 and delta["clean"] == 3 and delta["infected"] == 2, delta
    assert delta["actions"].get("block") == 2, delta
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
    with session(lab, (family, True, True, STANDARD_PORT)) as ftp:
        sample = corpus.clean("eicar-big.bin")
        got, reply = retr(ftp, "clean/eicar-big.bin")
        assert reply.startswith("226") and hashlib.sha256(got).hexdigest() == sample.sha256
        got, reply = retr(ftp, "infected/eicar.zip")
        assert_dropped(daemon, got, reply, corpus.infected("eicar.zip"), "infected/eicar.zip")
        assert stor(ftp, "upload/eicar.com", EICAR).startswith("550")
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
        assert reply.startswith("226") and got == corpus.clean("eicar.zip").data, reply
        got, reply = retr(ftp, "infected/eicar.com")
        assert_dropped(daemon, got, reply, corpus.infected("eicar.com"), "infected/eicar.com")
    assert daemon.status()["streams"]["nat_flows"] >= 2

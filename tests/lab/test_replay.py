"""nfqscand --replay (issue 15): a lab session captured on the router with
tcpdump while nfqscand judged it live, then replayed offline with the same
configuration, gives the same detections (protocol, direction, object,
verdict, name, action) as the live event log; clean traffic gives none.

The capture is what README's Replay section tells an admin to take on a
router: `tcpdump -i any` (Linux cooked), from which the replay keeps each
packet as it arrived (the copies the router sent on, and nfqscand's own
relayed output from the TUN relay device, are skipped). So the replay sees
what each peer sent, before nfqscand changed anything."""

from __future__ import annotations

import json
import secrets

import pytest

from clients import curl_fetch
from ftp_clients import retr
from http_corpus import Corpus
from lab import wait_until
from nfqscand import daemon_binary
from servers import Vsftpd
from test_ftp_av import USER, PASSWORD, STANDARD_PORT, expect, publish
from test_ftp_av import session as ftp_session
from test_http_av import nginx_with
from test_smtp_av import clean_message, infected_messages, send
from test_smtp_av import session as smtp_session

# What must agree between a live event and its replay (ids and times differ).
SAME = ("protocol", "direction", "object", "verdict", "name", "category", "action")


@pytest.fixture(scope="module")
def corpus():
    return Corpus()


class RouterCapture:
    """tcpdump -i any on the lab's router, written whole (-s 0) packet by
    packet (-U) to `path`."""

    def __init__(self, lab, path, link_type: str | None = None):
        self.path = path
        # Whole packets (GRO makes them up to 64 KiB), each written as it
        # comes; immediate mode cuts the ring into snap-length slots, so the
        # buffer must be large (-B, KiB) or the kernel drops packets.
        args = ["tcpdump", "-i", "any", "-n", "-s", "0", "-B", "65536", "-U", "--immediate-mode",
                "-w", str(path)]
        if link_type:
            args += ["-y", link_type]
        self.proc = lab.router.spawn(f"tcpdump-router-{secrets.token_hex(3)}", args + ["tcp"])
        wait_until(lambda: "listening on" in self.proc.log_tail(5) or not self.proc.alive(),
                   10, "tcpdump on the router")
        assert self.proc.alive(), self.proc.log_tail()

    def stop(self) -> None:
        """Stops tcpdump once its file stops growing; the capture must be
        whole (a replay of a capture with holes cannot match live). On a
        loaded machine tcpdump may still be behind the traffic: packets it
        has not taken from the ring when it stops are neither written nor
        counted as dropped."""
        sizes: list[int] = []

        def settled():
            sizes.append(self.path.stat().st_size if self.path.exists() else -1)
            return len(sizes) >= 3 and sizes[-1] == sizes[-3]

        wait_until(settled, 60, "tcpdump to write what it captured", interval=0.5)
        self.proc.stop()
        log = self.proc.log_tail(10)
        assert "0 packets dropped by kernel" in log, log


def replay(lab, capture, config) -> tuple[list[dict], str]:
    """nfqscand --replay --json: (the event lines, the summary on stderr)."""
    proc = lab.router.run([daemon_binary(), "--replay", capture, "--config", config, "--json"],
                          timeout=300)
    events = [json.loads(line) for line in proc.stdout.decode().splitlines() if line.strip()]
    return events, proc.stderr.decode(errors="replace")


def key(event: dict) -> tuple:
    return tuple(event.get(k) for k in SAME)


def wait_live_events(daemon, count: int) -> list[dict]:
    return wait_until(lambda: (e := daemon.detections(50)) and len(e) >= count and e,
                      30, f"{count} events in the live event log")


@pytest.mark.parametrize("family,nat", [pytest.param(4, None, id="ipv4"),
                                        pytest.param(6, None, id="ipv6"),
                                        pytest.param(4, "masquerade", id="ipv4-masquerade")])
def test_replay_of_a_router_capture_has_the_detections_of_live(lab, mail_av, mail_servers,
                                                                 corpus, family, nat):
    if nat == "masquerade":
        # The server's packets come in addressed to the router: the replay
        # pairs the halves by their handshakes.
        lab.masquerade()
    nginx = nginx_with(lab, corpus, 80)
    vsftpd = Vsftpd(lab, ports=(STANDARD_PORT,), users={USER: PASSWORD})
    publish(vsftpd, corpus)
    daemon = mail_av()
    capture = RouterCapture(lab, lab.dir / "router.pcap")

    # SMTP: an infected mail (replaced), then a clean one.
    rcpt = mail_servers.address("alice")
    message = infected_messages()["base64"]
    with smtp_session(lab, family, 25) as smtp:
        code, text = send(smtp, rcpt, message)
        assert code == 250, (code, text)
        code, text = send(smtp, rcpt, clean_message("clean after the infected one"))
        assert code == 250, (code, text)
    # HTTP: the block page instead of an infected download, then a clean one.
    got = curl_fetch(lab, nginx.url("/infected/eicar.com", family=family), check=False)
    assert got["http_code"] == 403, got["http_code"]
    got = curl_fetch(lab, nginx.url("/clean/eicar.com", family=family))
    assert got["http_code"] == 200
    # FTP: an infected download (the drop message and 550), then a clean one
    # (PASV over IPv4, EPSV over IPv6).
    with ftp_session(lab, (family, True, family == 6, STANDARD_PORT)) as ftp:
        _, reply = retr(ftp, "infected/eicar.zip")
        expect(reply, "550", "RETR infected/eicar.zip")
        _, reply = retr(ftp, "clean/eicar.zip")
        expect(reply, "226", "RETR clean/eicar.zip")

    live = wait_live_events(daemon, 3)
    daemon.wait_queues_idle()
    capture.stop()
    assert sorted({e["protocol"] for e in live}) == ["ftp", "http", "smtp"], live

    replayed, summary = replay(lab, capture.path, daemon.config_path)
    assert sorted(map(key, replayed)) == sorted(map(key, live)), \
        f"live:\n{json.dumps(live, indent=1)}\nreplayed:\n{json.dumps(replayed, indent=1)}" \
        f"\n{summary}"
    # Each forwarded packet was captured twice (in on one side, out on the
    # other): the replay took it once.
    assert "outgoing copies" in summary, summary
    if nat:
        assert "NAT undone" in summary, summary
    # Replaying again gives the same: nothing depends on the machine's speed.
    again, _ = replay(lab, capture.path, daemon.config_path)
    assert sorted(map(key, again)) == sorted(map(key, replayed))


def test_replay_of_clean_traffic_has_no_detections(lab, mail_av, mail_servers, corpus):
    nginx = nginx_with(lab, corpus, 80)
    vsftpd = Vsftpd(lab, ports=(STANDARD_PORT,), users={USER: PASSWORD})
    publish(vsftpd, corpus)
    daemon = mail_av()
    # Linux cooked v1 this time (tcpdump -y LINUX_SLL; its default for -i any
    # is v2).
    capture = RouterCapture(lab, lab.dir / "clean.pcap", "LINUX_SLL")

    rcpt = mail_servers.address("alice")
    with smtp_session(lab, 4, 25) as smtp:
        code, text = send(smtp, rcpt, clean_message("a clean message"))
        assert code == 250, (code, text)
    for name in ("eicar.com", "eicar.zip"):
        got = curl_fetch(lab, nginx.url(f"/clean/{name}", family=4))
        assert got["http_code"] == 200
    with ftp_session(lab, (4, True, False, STANDARD_PORT)) as ftp:
        _, reply = retr(ftp, "clean/eicar.zip")
        expect(reply, "226", "RETR clean/eicar.zip")
    daemon.wait_queues_idle()
    capture.stop()
    assert daemon.detections(50) == []

    replayed, summary = replay(lab, capture.path, daemon.config_path)
    assert replayed == [], summary
    # It did look: the mail, the downloads and the FTP file were scanned.
    scanned = {line.split(":")[0].strip(): line for line in summary.splitlines()
               if line.startswith("  ")}
    for protocol in ("smtp", "http", "ftp"):
        assert protocol in scanned, summary

"""FTP antivirus through nfqscand, a smoke test of the inspector's side
(issue 12; the full lab suite is test_ftp_av.py): real vsftpd, Python's
ftplib in the client namespace, passive and active, IPv4 and IPv6. An
infected download gets the drop message on its data connection and "550"
on the control connection, and the session goes on: a clean file fetched
right after arrives byte-identical; an infected upload is stored as the
drop message."""

from __future__ import annotations

import hashlib
import os

import pytest

from ftp_clients import ftp_session, retr, stor
from http_corpus import EICAR
from lab import REPO
from servers import Vsftpd

SCAN = {"clamav_db_dirs": [str(REPO / "rules" / "clamav")],
        "yara_rule_dirs": [str(REPO / "rules" / "yara")], "pool_threads": 2}
MODES = [pytest.param((4, True, False), id="ipv4-pasv"),
         pytest.param((4, False, False), id="ipv4-port"),
         pytest.param((6, True, False), id="ipv6-epsv"),
         pytest.param((6, False, False), id="ipv6-eprt")]


@pytest.fixture
def vsftpd(lab):
    return Vsftpd(lab)


@pytest.mark.parametrize("mode", MODES)
def test_ftp_smoke_infected_retr_is_dropped_and_the_session_goes_on(lab, nfqscand, vsftpd,
                                                                   mode):
    family, passive, extended = mode
    daemon = nfqscand({"scan": SCAN})
    daemon.wait_engines()
    clean = os.urandom(3 << 20)
    vsftpd.add_file("pub/eicar.com", EICAR)
    vsftpd.add_file("pub/clean.bin", clean)
    ftp = ftp_session(lab, family, passive=passive, extended=extended)
    try:
        got, reply = retr(ftp, "/pub/eicar.com")
        assert EICAR not in got, "the client got the malware"
        assert b"was blocked" in got and b"/pub/eicar.com" in got, got[:400]
        assert reply.startswith("550 ") and "eicar.com" in reply, reply
        got, reply = retr(ftp, "/pub/clean.bin")
        assert reply.startswith("226"), reply
        assert hashlib.sha256(got).digest() == hashlib.sha256(clean).digest()
        reply = stor(ftp, "/upload/up.com", EICAR)
        assert reply.startswith("550 "), reply
        stored = vsftpd.uploaded("up.com")
        assert stored is not None and EICAR not in stored, stored
    finally:
        ftp.close()
    status = daemon.status()
    ftp_counters = status["ftp"]
    assert ftp_counters["files_blocked"] >= 2, ftp_counters
    assert ftp_counters["replies_replaced"] >= 2, ftp_counters
    events = [e for e in daemon.detections(50) if e.get("protocol") == "ftp"]
    assert any(e.get("object") == "/pub/eicar.com" for e in events), events


@pytest.mark.parametrize("extended", [pytest.param(False, id="pasv"),
                                      pytest.param(True, id="epsv")])
def test_ftp_smoke_behind_masquerade_on_an_odd_control_port(lab, nfqscand, extended):
    """The control connection on 2121 (no configured port: the probe finds
    it) through a masquerading router: the expectations are keyed on the
    addresses the queue sees, before the source NAT. (Active mode behind
    masquerade needs the kernel's FTP NAT helper to rewrite PORT: vsftpd
    refuses a PORT naming another address than the control connection's.)"""
    vsftpd = Vsftpd(lab, ports=(2121,))
    lab.masquerade()
    daemon = nfqscand({"scan": SCAN})
    daemon.wait_engines()
    clean = os.urandom(1 << 20)
    vsftpd.add_file("pub/eicar.com", EICAR)
    vsftpd.add_file("pub/clean.bin", clean)
    ftp = ftp_session(lab, 4, port=2121, extended=extended)
    try:
        got, reply = retr(ftp, "/pub/eicar.com")
        assert EICAR not in got and b"was blocked" in got, got[:400]
        assert reply.startswith("550 "), reply
        got, reply = retr(ftp, "/pub/clean.bin")
        assert reply.startswith("226") and got == clean, (reply, len(got))
    finally:
        ftp.close()
    assert daemon.status()["ftp"]["claimed"] >= 2, daemon.status()["ftp"]


def test_ftp_smoke_control_and_data_on_different_worker_queues(lab, nfqscand, vsftpd):
    """The control connection on queue 0, its data connections on queue 1
    (rules inserted before the shipped queue-balance rule, as fanout or NAT
    can split them): the expectation claims the data flow on the other
    worker, and the verdict reaches the control worker, whose 226 becomes
    550 (infected) or goes (clean)."""
    for tool in ("iptables", "ip6tables"):
        for n, match in enumerate((["--dport", "21"], ["--sport", "21"])):
            lab.router.run([tool, "-w", "-t", "mangle", "-I", "NFQSCAN", str(5 + n), "-p", "tcp",
                            *match, "-j", "NFQUEUE", "--queue-num", "0", "--queue-bypass"])
        lab.router.run([tool, "-w", "-t", "mangle", "-I", "NFQSCAN", "7", "-p", "tcp", "-j",
                        "NFQUEUE", "--queue-num", "1", "--queue-bypass"])
    daemon = nfqscand({"scan": SCAN})
    daemon.wait_engines()
    clean = os.urandom(2 << 20)
    vsftpd.add_file("pub/eicar.com", EICAR)
    vsftpd.add_file("pub/clean.bin", clean)
    ftp = ftp_session(lab, 4)
    try:
        queues = {}
        got, reply = retr(ftp, "/pub/eicar.com")
        for f in daemon.flows():
            queues[(f.get("claimed_by"), f.get("server_port"))] = f.get("queue")
        assert EICAR not in got and b"was blocked" in got, got[:300]
        assert reply.startswith("550 "), reply
        got, reply = retr(ftp, "/pub/clean.bin")
        assert reply.startswith("226") and got == clean, (reply, len(got))
    finally:
        ftp.close()
    control = [q for (by, port), q in queues.items() if port == 21]
    data = [q for (by, port), q in queues.items() if by == "expectation"]
    assert control == [0] and data and set(data) == {1}, queues

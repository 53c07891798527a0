"""The scan service through the running nfqscand: `nfqscanctl scan` judges
files with the daemon's engines, `reload` (and SIGHUP) rebuilds them without a
restart and keeps them when a rule file is broken, `engines` shows what is
loaded, `detections` reads the event log, `status` shows the scan pool.

Each test's daemon loads copies of rules/clamav and rules/yara in the lab's
directory, so that a test can add or break rules without touching the
checkout. Test files are generated here (the EICAR string is assembled from
two halves so that this file is not itself an EICAR carrier)."""

from __future__ import annotations

import contextlib
import grp
import gzip
import io
import json
import os
import random
import select
import shutil
import signal
import socket
import stat
import zipfile
from email.message import EmailMessage
from pathlib import Path

import pytest

from clients import curl_download
from lab import REPO, wait_until
from nfqscand import ctl_binary
from servers import Nginx

EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$" + b"EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
EICAR_NAMES = {"NfqScan_Test_EICAR", "NfqScan.Test.EICAR.UNOFFICIAL"}
CLAM_TESTFILES = Path("/usr/share/clamav-testfiles")
# Signatures in rules/clamav/nfqscan-test.ndb, rules in rules/yara/nfqscan-test.yar.
SHIPPED_CLAMAV_SIGNATURES = 2
SHIPPED_YARA_RULES = 3

NEW_RULE = b"""rule Lab_Reload_Marker
{
    meta:
        category = "policy"
    strings:
        $m = "NFQSCAN-LAB-RELOAD-MARKER"
    condition:
        $m
}
"""
# A syntax error: the condition on line 5 ends with "and".
BROKEN_RULE = b"""rule Lab_Broken
{
    strings:
        $a = "whatever"
    condition: $a and
}
"""
BROKEN_LINE = 6  # libyara notices it at the closing brace


def zip_bytes(members) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members:
            z.writestr(name, data)
    return buf.getvalue()


def mail_with_attachment(name: str, data: bytes) -> bytes:
    m = EmailMessage()
    m["From"] = "alice@example.org"
    m["To"] = "bob@example.net"
    m["Subject"] = "attachment"
    m.set_content("See the attachment.\n")
    m.add_attachment(data, maintype="application", subtype="octet-stream", filename=name)
    return bytes(m)


class ScanLab:
    """Rule copies and test files in the lab's directory, and a daemon that
    loads those copies."""

    def __init__(self, lab, nfqscand_factory, overrides: dict | None = None,
                 extra_yara_dirs: list[Path] | None = None):
        self.lab = lab
        self.rules = lab.dir / "rules"
        self.yara = self.rules / "yara"
        self.clamav = self.rules / "clamav"
        shutil.copytree(REPO / "rules" / "yara", self.yara)
        shutil.copytree(REPO / "rules" / "clamav", self.clamav)
        self.files = lab.dir / "files"
        self.files.mkdir()
        yara_dirs = [str(d) for d in (extra_yara_dirs or [])] + [str(self.yara)]
        scan = {"clamav_db_dirs": [str(self.clamav)], "yara_rule_dirs": yara_dirs,
                "pool_threads": 2, "queue_length": 64}
        scan.update((overrides or {}).get("scan", {}))
        self.daemon = nfqscand_factory({**(overrides or {}), "scan": scan})

    def file(self, name: str, data: bytes) -> str:
        path = self.files / name
        path.write_bytes(data)
        return str(path)

    def by_path(self, verdicts: list[dict]) -> dict[str, dict]:
        return {Path(v["path"]).name: v for v in verdicts}


@pytest.fixture
def scanlab(lab, nfqscand):
    """A daemon with its engines loaded from rule copies in the lab dir."""
    s = ScanLab(lab, nfqscand)
    s.daemon.wait_engines()
    return s


def test_nfqscanctl_scan_detects_eicar_raw_in_zip_in_mail_and_in_html(scanlab):
    f = scanlab.file
    paths = [
        f("eicar.com", EICAR),
        f("eicar.zip", zip_bytes([("eicar.com", EICAR)])),
        f("eicar.gz", gzip.compress(EICAR, mtime=0)),
        f("eicar.eml", mail_with_attachment("eicar.com", EICAR)),
        f("eicar.html", b"<!DOCTYPE html>\n<html><body><p>test</p>\n<pre>" + EICAR
          + b"</pre>\n</body></html>\n"),
    ]

    rc, verdicts = scanlab.daemon.scan(*paths)

    assert rc == 1, "exit status 1 when something is infected"
    assert [v["path"] for v in verdicts] == paths
    v = scanlab.by_path(verdicts)
    for name in ("eicar.com", "eicar.zip", "eicar.gz", "eicar.eml", "eicar.html"):
        assert v[name]["verdict"] == "infected", v[name]
        assert v[name]["name"] in EICAR_NAMES, v[name]
        assert v[name]["engine"] in ("clamav", "yara"), v[name]
        assert v[name]["category"] == "virus", v[name]
    assert v["eicar.com"]["layer"] == "eicar.com"
    assert v["eicar.zip"]["layer"] == "eicar.zip/eicar.com"
    assert v["eicar.eml"]["layer"] == "eicar.eml/eicar.com"
    assert v["eicar.gz"]["layer"].startswith("eicar.gz/")
    # ClamAV does not raw-scan HTML: the YARA pass over the object finds it.
    assert v["eicar.html"]["engine"] == "yara"
    assert v["eicar.html"]["name"] == "NfqScan_Test_EICAR"
    assert v["eicar.html"]["layer"] == "eicar.html"


def test_nfqscanctl_scan_reports_clean_files_clean(scanlab):
    rnd = random.Random(4)
    text = b"Lorem ipsum dolor sit amet, consectetur adipiscing elit.\n" * 20000
    paths = [
        scanlab.file("random.bin", rnd.randbytes(3 << 20)),
        scanlab.file("text.txt", text),
        scanlab.file("clean.zip", zip_bytes([("a.txt", text), ("b.bin", rnd.randbytes(1 << 16))])),
    ]

    rc, verdicts = scanlab.daemon.scan(*paths)

    assert rc == 0, verdicts
    for v in verdicts:
        assert v["verdict"] == "clean", v
        assert v["skipped"] is False
        for key in ("engine", "name", "layer", "category"):
            assert key not in v, f"{key} in a clean verdict: {v}"
    # Human output: one row per file and a summary.
    out = scanlab.daemon.ctl("scan", *paths).stdout.decode()
    assert "3 files: 3 clean, 0 infected, 0 errors" in out, out
    for p in paths:
        assert p in out


def test_nfqscanctl_scan_reports_errors_per_file_without_failing_the_rest(scanlab):
    truncated = bytes(zip_bytes([("a.txt", b"hello world\n" * 500),
                                 ("b.txt", b"more text\n" * 500)]))
    paths = [
        scanlab.file("truncated.zip", truncated[: len(truncated) // 2]),
        str(scanlab.files / "missing.bin"),
        scanlab.file("eicar.com", EICAR),
    ]

    rc, verdicts = scanlab.daemon.scan(*paths)

    v = scanlab.by_path(verdicts)
    assert v["truncated.zip"]["verdict"] == "error"
    assert v["truncated.zip"]["category"] == "corrupt", v["truncated.zip"]
    assert v["missing.bin"]["verdict"] == "error"
    assert "No such file" in v["missing.bin"]["reason"], v["missing.bin"]
    assert "category" not in v["missing.bin"], "an unreadable file is not a scan category"
    assert v["eicar.com"]["verdict"] == "infected"
    assert rc == 1
    rc, _ = scanlab.daemon.scan(paths[0])
    assert rc == 2, "exit status 2 when there are errors and nothing infected"


def test_clamav_signature_finds_clam_exe_inside_archives_with_layer_path(scanlab):
    if not (CLAM_TESTFILES / "clam.zip").exists():
        pytest.skip("clamav-testfiles is not installed (tools/setup installs it)")
    # The shipped .ndb signature; no YARA rule knows clam.exe.
    rc, verdicts = scanlab.daemon.scan(str(CLAM_TESTFILES / "clam.exe"),
                                       str(CLAM_TESTFILES / "clam.zip"))
    assert rc == 1
    v = scanlab.by_path(verdicts)
    for name in ("clam.exe", "clam.zip"):
        assert v[name]["verdict"] == "infected", v[name]
        assert v[name]["engine"] == "clamav", v[name]
        assert v[name]["name"] == "NfqScan.Test.ClamAVTestFile.UNOFFICIAL", v[name]
    assert v["clam.zip"]["layer"] == "clam.zip/clam.exe"


def test_reload_adds_a_yara_rule_without_restart(scanlab):
    daemon = scanlab.daemon
    marker = scanlab.file("notes.zip", zip_bytes([
        ("notes.eml", mail_with_attachment("notes.txt", b"text NFQSCAN-LAB-RELOAD-MARKER text\n"))]))
    pid = daemon.status()["pid"]
    before = daemon.engines()
    assert daemon.scan(marker)[1][0]["verdict"] == "clean"

    (scanlab.yara / "lab-reload.yar").write_bytes(NEW_RULE)
    out = daemon.ctl("reload").stdout.decode()

    assert f"{SHIPPED_YARA_RULES + 1} YARA rules" in out, out
    after = daemon.engines()
    assert after["engines"]["generation"] == before["engines"]["generation"] + 1
    assert after["engines"]["yara"]["rules"] == SHIPPED_YARA_RULES + 1
    assert str(scanlab.yara / "lab-reload.yar") in after["engines"]["yara"]["rule_files"]
    rc, verdicts = daemon.scan(marker)
    assert verdicts[0]["verdict"] == "infected", verdicts
    assert verdicts[0]["engine"] == "yara"
    assert verdicts[0]["name"] == "Lab_Reload_Marker"
    assert verdicts[0]["category"] == "policy"
    # The marker is in a base64 attachment of a mail inside a zip.
    assert verdicts[0]["layer"] == "notes.zip/notes.eml/notes.txt", verdicts
    assert daemon.status()["pid"] == pid, "nfqscand restarted"


def test_broken_rule_file_is_reported_and_the_old_rules_keep_working(scanlab):
    daemon = scanlab.daemon
    marker = scanlab.file("marker.txt", b"NFQSCAN-LAB-RELOAD-MARKER\n")
    eicar = scanlab.file("eicar.zip", zip_bytes([("eicar.com", EICAR)]))
    (scanlab.yara / "lab-reload.yar").write_bytes(NEW_RULE)
    daemon.ctl("reload")
    good = daemon.engines()["engines"]
    broken = scanlab.yara / "lab-broken.yar"
    broken.write_bytes(BROKEN_RULE)

    proc = daemon.ctl("reload", check=False)

    err = proc.stderr.decode()
    assert proc.returncode == 1, (proc.stdout, err)
    assert f"{broken}:{BROKEN_LINE}" in err, err
    assert "the running ones stay" in err
    state = daemon.engines()
    assert state["engines"]["generation"] == good["generation"], "the broken set was swapped in"
    last = state["reload"]["last"]
    assert last["ok"] is False and last["file"] == str(broken) and last["line"] == BROKEN_LINE
    wait_until(lambda: f"{broken}:{BROKEN_LINE}" in daemon.log_text(), 5,
               "the error with file and line in the daemon's log")
    # The old engines still judge: the rule added before and the shipped ones.
    v = scanlab.by_path(daemon.scan(marker, eicar)[1])
    assert v["marker.txt"]["name"] == "Lab_Reload_Marker", v
    assert v["eicar.zip"]["verdict"] == "infected", v
    assert daemon.status()["scan"]["last_reload_error"].startswith(f"{broken}:{BROKEN_LINE}")

    # SIGHUP takes the same path: the error goes to the log.
    log_before = daemon.log_text().count(f"{broken}:{BROKEN_LINE}")
    daemon.reload_signal()
    wait_until(lambda: daemon.log_text().count(f"{broken}:{BROKEN_LINE}") > log_before, 10,
               "the SIGHUP reload's error in the log")
    # Fixed: the next reload succeeds.
    broken.unlink()
    proc = daemon.ctl("reload")
    assert daemon.engines()["engines"]["generation"] == good["generation"] + 1
    assert daemon.status()["scan"]["last_reload_error"] is None


def test_engines_lists_versions_counts_and_rule_files(scanlab):
    e = scanlab.daemon.engines()

    assert e["ready"] is True
    info = e["engines"]
    assert info["backend"] == "inprocess"
    assert info["generation"] == 1
    assert info["clamav"]["version"], info
    assert info["clamav"]["signatures"] == SHIPPED_CLAMAV_SIGNATURES
    assert info["clamav"]["db_dirs"] == [str(scanlab.clamav)]
    assert info["yara"]["version"], info
    assert info["yara"]["rules"] == SHIPPED_YARA_RULES
    assert info["yara"]["rule_files"] == [str(scanlab.yara / "nfqscan-test.yar")]
    assert info["load_time_ms"] >= 0 and info["loaded_at"].endswith("Z")
    assert e["reload"]["last"]["ok"] is True

    out = scanlab.daemon.ctl("engines").stdout.decode()
    assert f"ClamAV: libclamav {info['clamav']['version']}, {SHIPPED_CLAMAV_SIGNATURES} signatures" \
        in out, out
    assert f"{SHIPPED_YARA_RULES} rules in 1 files" in out, out


def test_detections_show_the_cli_scan_events(scanlab):
    daemon = scanlab.daemon
    eicar = scanlab.file("eicar.zip", zip_bytes([("eicar.com", EICAR)]))
    clean = scanlab.file("clean.txt", b"nothing here\n")
    truncated = zip_bytes([("a.txt", b"hello\n" * 1000)])
    corrupt = scanlab.file("corrupt.zip", truncated[: len(truncated) // 2])
    quiet = scanlab.file("quiet.com", EICAR)

    daemon.scan(eicar, clean, corrupt)
    daemon.ctl("scan", "--no-log", quiet, check=False)

    events = daemon.detections(10)
    # Detections and scan errors are logged; clean files and --no-log are not.
    assert [e["object"] for e in events] == [eicar, corrupt], events
    infected, error = events
    assert infected["protocol"] == "cli" and infected["action"] == "none"
    # The verdict's fields, named as in `scan --json`.
    assert infected["verdict"] == "infected"
    assert infected["layer"] == "eicar.zip/eicar.com"
    assert infected["engine"] in ("clamav", "yara") and infected["name"]
    assert error["verdict"] == "error"
    assert error["category"] == "corrupt"
    assert infected["time"].endswith("Z")
    # The file itself: one JSON object per line.
    lines = Path(daemon.config["daemon"]["event_log"]).read_text().splitlines()
    assert len(lines) == 2
    assert [e["object"] for e in daemon.detections(1)] == [corrupt]
    out = daemon.ctl("detections", "-n", "5").stdout.decode()
    assert "2 events" in out and "eicar.zip/eicar.com" in out, out


def test_event_log_is_reopened_on_sighup(scanlab):
    daemon = scanlab.daemon
    log = Path(daemon.config["daemon"]["event_log"])
    eicar = scanlab.file("eicar.com", EICAR)
    daemon.scan(eicar)
    rotated = log.with_name(log.name + ".1")
    os.rename(log, rotated)  # as logrotate does

    daemon.process.send_signal(signal.SIGHUP)
    wait_until(log.exists, 10, "the event log to be reopened")
    daemon.scan(eicar)

    assert len(rotated.read_text().splitlines()) == 1
    assert len(log.read_text().splitlines()) == 1
    assert daemon.detections(5)[0]["object"] == eicar


def test_status_shows_the_scan_section(scanlab):
    daemon = scanlab.daemon
    paths = [scanlab.file(f"f{i}.txt", b"plain text %d\n" % i) for i in range(5)]
    paths.append(scanlab.file("eicar.com", EICAR))
    daemon.scan(*paths)

    status = daemon.status()
    s = status["scan"]

    assert s["ready"] is True and s["generation"] == 1 and s["backend"] == "inprocess"
    assert s["threads"] == 2
    # The engines run in scanner processes, children of nfqscand.
    assert s["isolation"] == "process" and len(s["scanner_pids"]) == 2, s
    for pid in s["scanner_pids"]:
        stat = Path(f"/proc/{pid}/stat").read_text()
        assert int(stat.rsplit(")", 1)[1].split()[1]) == status["pid"], stat
    assert s["scanner_restarts"] == 0
    assert s["queue"]["capacity"] == 64
    assert s["completed"] >= 6 and s["clean"] >= 5 and s["infected"] >= 1, s
    assert s["scan_latency"]["count"] >= 6
    assert sum(b["count"] for b in s["scan_latency"]["buckets"]) == s["scan_latency"]["count"]
    assert s["bytes"] > 0 and s["throughput_mb_per_s"] > 0
    assert s["event_log"]["open"] is True and s["event_log"]["written"] >= 1
    out = daemon.ctl("status").stdout.decode()
    assert "scan: engines ready (generation 1, inprocess), 2 threads, queue 0/64" in out, out
    assert "scan latency" in out
    assert "scanner processes: " in out, out


def read_reply(sock: socket.socket, timeout: float) -> dict:
    """The one-line JSON reply of a control request."""
    sock.settimeout(timeout)
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    return json.loads(data)


def test_status_is_answered_while_a_scan_is_running(scanlab):
    """A scan request is held while the pool works on it; the control thread
    goes on answering other requests meanwhile."""
    daemon = scanlab.daemon
    # Eight different files: copies of one would be answered by the verdict
    # cache after the first and finish too fast to tell.
    rnd = random.Random(7)
    bigs = [scanlab.file(f"big{i}.bin", rnd.randbytes(24 << 20)) for i in range(8)]
    request = {"command": "scan", "paths": bigs, "log": False}
    with contextlib.ExitStack() as stack:
        files = [stack.enter_context(open(path, "rb")) for path in bigs]
        scan = stack.enter_context(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
        scan.connect(str(daemon.control))
        # The files go as open descriptors (the daemon opens no paths).
        socket.send_fds(scan, [json.dumps(request).encode() + b"\n"], [f.fileno() for f in files])
        wait_until(lambda: daemon.status()["scan"]["completed"] >= 1 or None, 30,
                   "the first file of the scan")
        status = daemon.status()
        # Answered while the scan's reply is still outstanding.
        readable, _, _ = select.select([scan], [], [], 0)
        assert not readable, "the scan finished before status was answered; too fast to tell"
        assert status["scan"]["completed"] < 8
        reply = read_reply(scan, timeout=120)
    assert reply["ok"] is True, reply
    assert [v["verdict"] for v in reply["result"]] == ["clean"] * 8, reply
    assert [v["path"] for v in reply["result"]] == bigs


def test_traffic_flows_while_the_engines_load_and_verdicts_wait_for_them(lab, nfqscand):
    # Enough YARA rules that compiling them takes seconds.
    big = lab.dir / "big-yara"
    big.mkdir()
    rnd = random.Random(7)
    with open(big / "many.yar", "w") as f:
        for i in range(150_000):
            word = "".join(rnd.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(12))
            f.write(f'rule R{i} {{ strings: $a = "{word}{i}" condition: $a }}\n')
    nginx = Nginx(lab, ports=[80])
    digest = nginx.add_random_file("file.bin", 4 << 20)
    scanlab = ScanLab(lab, nfqscand, extra_yara_dirs=[big])
    daemon = scanlab.daemon
    eicar = scanlab.file("eicar.com", EICAR)

    status = daemon.status()["scan"]
    assert status["ready"] is False and status["loading"] is True, status
    rc, verdicts = daemon.scan(eicar)
    assert verdicts[0]["verdict"] == "error", verdicts
    assert verdicts[0]["category"] == "engine-not-ready", verdicts
    got = curl_download(lab, nginx.url("/file.bin"))
    assert got["sha256"] == digest
    assert daemon.status()["scan"]["ready"] is False, "the test's load finished too early"
    flow = daemon.wait_flow(server_port=80)
    assert flow["disposition"] == "claimed", flow

    engines = daemon.wait_engines(timeout=120)
    assert engines["engines"]["yara"]["rules"] == 150_000 + SHIPPED_YARA_RULES
    assert daemon.scan(eicar)[1][0]["verdict"] == "infected"


def start_clamd(lab, port: int = 3310):
    """Debian's clamd in the server namespace, listening on TCP, with the
    project's signatures and the service's default limits."""
    base = lab.dir / "clamd"
    (base / "db").mkdir(parents=True)
    (base / "tmp").mkdir()
    shutil.copy(REPO / "rules" / "clamav" / "nfqscan-test.ndb", base / "db")
    conf = base / "clamd.conf"
    conf.write_text(
        "Foreground yes\n"
        f"TCPSocket {port}\nTCPAddr {lab.server_address(4)}\n"
        f"DatabaseDirectory {base / 'db'}\nTemporaryDirectory {base / 'tmp'}\n"
        f"LogFile {base / 'clamd.log'}\n"
        "AlertExceedsMax yes\nAlertEncrypted yes\nAlertBrokenExecutables yes\n"
        "MaxFileSize 32M\nStreamMaxLength 32M\nMaxScanSize 128M\nMaxRecursion 17\n"
        "MaxFiles 10000\nMaxScanTime 30000\n")
    lab.extra_logs.append(base / "clamd.log")
    proc = lab.server.spawn("clamd", ["/usr/sbin/clamd", "-c", conf])

    def listening():
        if not proc.alive():
            raise AssertionError(f"clamd exited:\n{proc.log_tail()}")
        try:
            lab.router.connect(lab.server_address(4), port, timeout=1).close()
            return True
        except OSError:
            return False

    wait_until(listening, 60, "clamd to listen")
    return proc


def test_clamd_backend_gives_the_same_verdicts_and_clamd_down_is_engine_not_ready(lab, nfqscand):
    if not Path("/usr/sbin/clamd").exists():
        pytest.skip("clamd is not installed (tools/setup installs clamav-daemon)")
    if not (CLAM_TESTFILES / "clam.zip").exists():
        pytest.skip("clamav-testfiles is not installed (tools/setup installs it)")
    clamd = start_clamd(lab)
    address = f"{lab.server_address(4)}:3310"
    scanlab = ScanLab(lab, nfqscand, {"scan": {"engine": "clamd", "clamd_address": address}})
    daemon = scanlab.daemon
    info = daemon.wait_engines()["engines"]
    assert info["backend"] == "clamd"
    assert info["clamav"]["clamd_address"] == address
    assert info["clamav"]["version"].startswith("ClamAV"), info
    eicar = scanlab.file("eicar.zip", zip_bytes([("eicar.com", EICAR)]))
    clean = scanlab.file("clean.txt", b"nothing to see here\n" * 1000)
    clam = str(CLAM_TESTFILES / "clam.zip")

    rc, verdicts = daemon.scan(eicar, clean, clam)

    v = scanlab.by_path(verdicts)
    # YARA still runs in nfqscand, on every layer its local unpacking finds.
    assert v["eicar.zip"]["verdict"] == "infected" and v["eicar.zip"]["engine"] == "yara", v
    assert v["eicar.zip"]["layer"] == "eicar.zip/eicar.com"
    assert v["clean.txt"]["verdict"] == "clean", v
    # Only clamd has the ClamAV signatures here: the same name as in-process;
    # the layer is the object's name, clamd does not say which layer matched.
    assert v["clam.zip"]["verdict"] == "infected", v
    assert v["clam.zip"]["engine"] == "clamav"
    assert v["clam.zip"]["name"] == "NfqScan.Test.ClamAVTestFile.UNOFFICIAL"
    assert v["clam.zip"]["layer"] == "clam.zip"
    assert rc == 1

    clamd.stop()
    rc, verdicts = daemon.scan(clam, eicar)
    v = scanlab.by_path(verdicts)
    assert v["clam.zip"]["verdict"] == "error", v
    assert v["clam.zip"]["category"] == "engine-not-ready", v
    assert v["eicar.zip"]["verdict"] == "infected", "a virus outranks the missing clamd"


def control_reply(path, request: dict, fds=()) -> dict:
    """One raw control request (with `fds` passed as SCM_RIGHTS); the reply."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(path))
        socket.send_fds(sock, [json.dumps(request).encode() + b"\n"], list(fds))
        return read_reply(sock, timeout=30)


def test_control_socket_lets_the_group_query_and_only_root_reload_or_scan(lab, nfqscand):
    """[daemon] control_group = "nogroup": the socket file is 0660 with that
    group; `nobody` (in it) gets status but is refused reload and scan by its
    kernel-reported uid; scan takes descriptors the caller opened, so a file
    nobody cannot read is never read for it; a request with bare paths is
    refused."""
    daemon = nfqscand({"daemon": {"control_group": "nogroup"}})
    daemon.wait_engines()
    nogroup = grp.getgrnam("nogroup").gr_gid
    st = os.stat(daemon.control)
    assert stat.S_IMODE(st.st_mode) == 0o660 and st.st_gid == nogroup, oct(st.st_mode)
    # The lab's folders are root's (0700): let nobody walk to the socket.
    for folder in (lab.dir, daemon.dir):
        os.chmod(folder, 0o711)
    secret = daemon.dir / "secret.com"
    secret.write_bytes(EICAR)
    os.chmod(secret, 0o600)
    readable = daemon.dir / "readable.com"
    readable.write_bytes(EICAR)
    os.chmod(readable, 0o644)
    as_nobody = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                 ctl_binary(), "--control", daemon.control]

    status = lab.router.run([*as_nobody, "status", "--json"], check=False, timeout=20)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["pid"] == daemon.process.popen.pid
    reload = lab.router.run([*as_nobody, "reload", "--no-wait"], check=False, timeout=20)
    assert reload.returncode == 1
    assert b"permission denied: uid 65534" in reload.stderr, reload.stderr
    scan = lab.router.run([*as_nobody, "scan", "--json", readable], check=False, timeout=20)
    assert scan.returncode == 2 and b"permission denied" in scan.stderr, scan.stderr
    hidden = lab.router.run([*as_nobody, "scan", "--json", secret], check=False, timeout=20)
    assert hidden.returncode == 2, hidden
    [entry] = json.loads(hidden.stdout)
    assert entry["verdict"] == "error" and "Permission denied" in entry["reason"], entry

    # Root opens it and hands it over; the daemon judges it.
    rc, verdicts = daemon.scan(str(secret))
    assert rc == 1 and verdicts[0]["verdict"] == "infected", verdicts
    bare = control_reply(daemon.control, {"command": "scan", "paths": [str(secret)]})
    assert bare["ok"] is False and "file descriptors" in bare["error"], bare
    with open(secret, "rb") as file:
        passed = control_reply(daemon.control, {"command": "scan", "paths": ["x.com"]},
                               [file.fileno()])
    assert passed["ok"] is True and passed["result"][0]["verdict"] == "infected", passed


def test_control_socket_without_a_group_is_roots_alone(lab, nfqscand):
    daemon = nfqscand()
    assert stat.S_IMODE(os.stat(daemon.control).st_mode) == 0o600
    for folder in (lab.dir, daemon.dir):
        os.chmod(folder, 0o711)
    status = lab.router.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                             ctl_binary(), "--control", daemon.control, "status"],
                            check=False, timeout=20)
    assert status.returncode == 1 and b"cannot reach nfqscand" in status.stderr, status.stderr

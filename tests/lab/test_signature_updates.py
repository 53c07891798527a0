"""Signature updates picked up by nfqscand itself (issue 15): a ClamAV
signature file or a YARA rule dropped into the configured folders is in use
within seconds without `nfqscanctl reload`; a freshclam-like burst of renames
leads to one rebuild; a broken file is refused and the running engines keep
judging (status shows why); the periodic self-check finds an update when
inotify is off; `[scan] reload = "blocking"` answers engine-not-ready while
the engines are switched and "concurrent" never does.

Real daemon, real libclamav/libyara, the files judged through `nfqscanctl
scan` (the daemon's pool, as traffic is). Every wait is on a condition with
a generous timeout; the machine is shared and loaded."""

from __future__ import annotations

import hashlib
import os
import random
import threading
import time

from lab import wait_until
from test_scan import BROKEN_LINE, BROKEN_RULE, EICAR, ScanLab, scanlab, zip_bytes  # noqa: F401

# Generous: the rebuild is 2 s after the last change, and the machine is busy.
PICKED_UP = 60

NDB_MARKER = b"NFQSCAN-LAB-DROPPED-NDB-MARKER"
NDB_SIGNATURE = b"Lab.Dropped.Ndb:0:*:" + NDB_MARKER.hex().encode() + b"\n"
YARA_MARKER = b"NFQSCAN-LAB-DROPPED-YARA-MARKER"
YARA_RULE = b"""rule Lab_Dropped_Yara
{
    meta:
        category = "virus"
    strings:
        $m = "NFQSCAN-LAB-DROPPED-YARA-MARKER"
    condition:
        $m
}
"""


def hdb_line(data: bytes, name: str) -> bytes:
    return f"{hashlib.md5(data).hexdigest()}:{len(data)}:{name}\n".encode()


def verdict(daemon, path: str) -> dict:
    return daemon.scan(path)[1][0]


def generation(daemon) -> int:
    return daemon.engines()["engines"]["generation"]


def wait_detected(daemon, path: str, name: str) -> dict:
    def found():
        v = verdict(daemon, path)
        return v if v["verdict"] == "infected" and v["name"] == name else None

    return wait_until(found, PICKED_UP, f"{name} detected in {path}", interval=0.25)


def last_build(daemon) -> dict:
    return daemon.engines()["reload"]["last"]


def test_clamav_signature_dropped_into_the_folder_is_in_use_within_seconds(scanlab):
    daemon = scanlab.daemon
    body = scanlab.file("body.txt", b"some text " + NDB_MARKER + b" more text\n")
    hashed_data = random.Random(15).randbytes(4096)
    hashed = scanlab.file("hashed.bin", hashed_data)
    assert verdict(daemon, body)["verdict"] == "clean"
    assert verdict(daemon, hashed)["verdict"] == "clean"
    before = generation(daemon)

    (scanlab.clamav / "lab-dropped.ndb").write_bytes(NDB_SIGNATURE)
    (scanlab.clamav / "lab-dropped.hdb").write_bytes(hdb_line(hashed_data, "Lab.Dropped.Hdb"))

    v = wait_detected(daemon, body, "Lab.Dropped.Ndb.UNOFFICIAL")
    assert v["engine"] == "clamav", v
    assert wait_detected(daemon, hashed, "Lab.Dropped.Hdb.UNOFFICIAL")["engine"] == "clamav"
    last = last_build(daemon)
    assert last["ok"] is True and last["trigger"] == "signatures", last
    assert "lab-dropped.ndb" in last["changes"] and "lab-dropped.hdb" in last["changes"], last
    assert last["generation"] > before
    status = daemon.status()["scan"]
    assert status["signatures"]["inotify"] is True, status["signatures"]
    assert status["signatures"]["builds"] >= 1, status["signatures"]
    assert "signature files changed (inotify)" in daemon.log_text()
    # The human views say it too.
    assert "signature updates: inotify on" in daemon.ctl("status").stdout.decode()
    assert "(signature update: added" in daemon.ctl("engines").stdout.decode()


def test_yara_rule_dropped_into_the_folder_is_in_use_within_seconds(scanlab):
    daemon = scanlab.daemon
    sample = scanlab.file("sample.zip", zip_bytes([("inner.txt", b"x " + YARA_MARKER + b" y")]))
    assert verdict(daemon, sample)["verdict"] == "clean"

    # Into a subfolder created after the start: it is watched as it appears.
    sub = scanlab.yara / "local"
    sub.mkdir()
    (sub / "lab-dropped.yar").write_bytes(YARA_RULE)

    v = wait_detected(daemon, sample, "Lab_Dropped_Yara")
    assert v["engine"] == "yara" and v["layer"] == "sample.zip/inner.txt", v
    assert str(sub / "lab-dropped.yar") in daemon.engines()["engines"]["yara"]["rule_files"]


def test_freshclam_like_renames_lead_to_one_rebuild(scanlab):
    """freshclam downloads into temporary names and renames each database into
    place, one after another, and rewrites freshclam.dat: one rebuild."""
    daemon = scanlab.daemon
    before = generation(daemon)
    builds = daemon.status()["scan"]["signatures"]["builds"]
    files = {
        "daily.ndb": NDB_SIGNATURE,
        "main.hdb": hdb_line(b"main database sample", "Lab.Main.Hdb"),
        "bytecode.hdb": hdb_line(b"bytecode database sample", "Lab.Bytecode.Hdb"),
    }
    for name, content in files.items():
        tmp = scanlab.clamav / f"tmp.{name}.part"
        tmp.write_bytes(content)
        os.rename(tmp, scanlab.clamav / name)
        time.sleep(0.2)  # freshclam handles one database after the other
    (scanlab.clamav / "freshclam.dat").write_bytes(b"freshclam state\n")

    engines = daemon.wait_engines(timeout=PICKED_UP, generation=before + 1)
    assert engines["engines"]["generation"] == before + 1
    last = engines["reload"]["last"]
    for name in files:
        assert name in last["changes"], last
    assert "freshclam.dat" not in last["changes"], last
    # Nothing else is coming: well past the debounce delay (2 s) there is
    # still exactly one more generation.
    time.sleep(6)
    assert generation(daemon) == before + 1, daemon.engines()
    assert daemon.status()["scan"]["signatures"]["builds"] == builds + 1


def test_broken_signature_file_is_refused_and_the_running_engines_stay(scanlab):
    daemon = scanlab.daemon
    eicar = scanlab.file("eicar.zip", zip_bytes([("eicar.com", EICAR)]))
    before = daemon.engines()
    broken = scanlab.yara / "lab-broken.yar"

    broken.write_bytes(BROKEN_RULE)

    def refused():
        last = last_build(daemon)
        return last if last and last["trigger"] == "signatures" and not last["ok"] else None

    last = wait_until(refused, PICKED_UP, "the broken update refused", interval=0.25)
    assert last["file"] == str(broken) and last["line"] == BROKEN_LINE, last
    status = daemon.status()["scan"]
    assert status["last_reload_error"].startswith(f"{broken}:{BROKEN_LINE}"), status
    assert status["ready"] is True
    assert generation(daemon) == before["engines"]["generation"], "the broken set was swapped in"
    v = verdict(daemon, eicar)
    assert v["verdict"] == "infected", v
    # The broken file is not retried on every check: nothing changed since.
    builds = status["signatures"]["builds"]
    time.sleep(4)
    assert daemon.status()["scan"]["signatures"]["builds"] == builds

    # Fixed: picked up like any update.
    broken.unlink()
    (scanlab.yara / "lab-dropped.yar").write_bytes(YARA_RULE)
    sample = scanlab.file("sample.txt", YARA_MARKER)
    wait_detected(daemon, sample, "Lab_Dropped_Yara")
    assert daemon.status()["scan"]["last_reload_error"] is None


def test_self_check_finds_an_update_without_inotify(lab, nfqscand):
    s = ScanLab(lab, nfqscand, {"scan": {"watch_signatures": False, "self_check_s": 2}})
    s.daemon.wait_engines()
    body = s.file("body.txt", NDB_MARKER)
    status = s.daemon.status()["scan"]["signatures"]
    assert status["inotify"] is False and status["self_check_s"] == 2, status

    (s.clamav / "lab-dropped.ndb").write_bytes(NDB_SIGNATURE)

    wait_detected(s.daemon, body, "Lab.Dropped.Ndb.UNOFFICIAL")
    status = s.daemon.status()["scan"]["signatures"]
    assert status["checks"]["inotify"] == 0 and status["checks"]["self_check"] >= 1, status
    assert "signature files changed (self-check)" in s.daemon.log_text()


def big_hash_database(path, count: int) -> None:
    """`count` made-up MD5 signatures: enough for a build that takes a while."""
    rnd = random.Random(1515)
    with open(path, "wb") as f:
        for i in range(count):
            f.write(b"%032x:%d:Lab.Bulk.%d\n" % (rnd.getrandbits(128), 1000 + i % 5000, i))


def verdicts_during_a_reload(lab, nfqscand, mode: str) -> tuple[list[dict], list[bool]]:
    """A daemon with a slow-to-build database in `mode`; objects scanned and
    status polled without pause while `nfqscanctl reload` switches engines."""
    s = ScanLab(lab, nfqscand, {"scan": {"reload": mode, "watch_signatures": False,
                                         "self_check_s": 0}})
    big_hash_database(s.clamav / "lab-bulk.hdb", 1_500_000)
    s.daemon.wait_engines(timeout=180)
    assert s.daemon.status()["scan"]["reload_mode"] == mode
    eicar = s.file("eicar.zip", zip_bytes([("eicar.com", EICAR)]))
    verdicts: list[dict] = []
    ready: list[bool] = []
    done = threading.Event()

    def scan_loop():
        while not done.is_set():
            verdicts.append(verdict(s.daemon, eicar))
            ready.append(s.daemon.status()["scan"]["ready"])

    scanner = threading.Thread(target=scan_loop)
    scanner.start()
    try:
        wait_until(lambda: len(verdicts) >= 2, 60, "scans before the reload")
        s.daemon.ctl("reload", timeout=180)
        s.daemon.wait_engines(timeout=180, generation=2)
        count = len(verdicts)
        wait_until(lambda: len(verdicts) >= count + 2, 60, "scans after the reload")
    finally:
        done.set()
        scanner.join()
    return verdicts, ready


def test_blocking_reload_answers_engine_not_ready_during_the_switch(lab, nfqscand):
    verdicts, ready = verdicts_during_a_reload(lab, nfqscand, "blocking")
    kinds = [v["category"] if v["verdict"] == "error" else v["verdict"] for v in verdicts]
    assert "engine-not-ready" in kinds, kinds
    assert False in ready, "status never showed the engines out of service"
    # Before and after the switch the engines judge.
    assert kinds[0] == "infected" and kinds[-1] == "infected", kinds
    assert set(kinds) <= {"infected", "engine-not-ready"}, kinds


def test_concurrent_reload_keeps_judging_during_the_switch(lab, nfqscand):
    verdicts, ready = verdicts_during_a_reload(lab, nfqscand, "concurrent")
    kinds = [v["category"] if v["verdict"] == "error" else v["verdict"] for v in verdicts]
    assert set(kinds) == {"infected"}, kinds
    assert all(ready), ready

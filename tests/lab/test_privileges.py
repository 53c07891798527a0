"""Least privilege (issue 14): nfqscand started as root, as the lab does,
switches to [daemon] user (nfqscan, created by tools/setup) once its relay
device, control socket and the kernel's queue table are open, and keeps
exactly CAP_NET_ADMIN and CAP_NET_RAW, in every thread. Scanned traffic,
reloads and the event log still work as that account."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest

from clients import curl_fetch
from http_corpus import Corpus
from lab import wait_until
from test_http_av import SCAN, assert_block_page, nginx_with

CAP_NET_ADMIN_AND_RAW = (1 << 12) | (1 << 13)


def proc_status(pid: int, task: int | None = None) -> dict[str, str]:
    path = Path(f"/proc/{pid}/task/{task}/status" if task else f"/proc/{pid}/status")
    fields = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def assert_account_and_capabilities(fields: dict[str, str], account, what: str) -> None:
    ids = f"{account.pw_uid}\t{account.pw_uid}\t{account.pw_uid}\t{account.pw_uid}"
    assert fields["Uid"] == ids, f"{what}: Uid {fields['Uid']}"
    gids = f"{account.pw_gid}\t{account.pw_gid}\t{account.pw_gid}\t{account.pw_gid}"
    assert fields["Gid"] == gids, f"{what}: Gid {fields['Gid']}"
    assert "0" not in fields["Groups"].split(), f"{what}: Groups {fields['Groups']}"
    for key in ("CapPrm", "CapEff", "CapBnd"):
        assert int(fields[key], 16) == CAP_NET_ADMIN_AND_RAW, f"{what}: {key} {fields[key]}"
    assert int(fields["CapInh"], 16) == 0, f"{what}: CapInh {fields['CapInh']}"
    assert int(fields["CapAmb"], 16) == 0, f"{what}: CapAmb {fields['CapAmb']}"
    assert fields["NoNewPrivs"] == "1", f"{what}: NoNewPrivs {fields['NoNewPrivs']}"


@pytest.fixture
def account():
    try:
        return pwd.getpwnam("nfqscan")
    except KeyError:
        pytest.fail("the account nfqscan is missing: run tools/setup "
                    "(systemd-sysusers systemd/nfqscan.sysusers.conf)")


def test_nfqscand_started_as_root_runs_as_nfqscan_with_two_capabilities_and_still_scans(
        lab, nfqscand, account):
    corpus = Corpus()
    nginx = nginx_with(lab, corpus, 80)
    daemon = nfqscand({"scan": SCAN})
    assert daemon.user() == "nfqscan"
    daemon.wait_engines()
    pid = daemon.status()["pid"]
    assert pid == daemon.process.popen.pid

    assert_account_and_capabilities(proc_status(pid), account, "nfqscand")
    # Capabilities belong to threads: every one (queue workers, scan pool,
    # control, engine loader) has the same.
    tasks = sorted(int(t) for t in os.listdir(f"/proc/{pid}/task"))
    assert len(tasks) > 4, tasks
    for task in tasks:
        assert_account_and_capabilities(proc_status(pid, task), account, f"thread {task}")
    # The scanner processes are children of the switched daemon: its account.
    scanners = daemon.status()["scan"]["scanner_pids"]
    assert scanners, daemon.status()["scan"]
    for scanner in scanners:
        fields = proc_status(scanner)
        assert fields["Uid"].split()[0] == str(account.pw_uid), f"scanner {scanner}: {fields}"
    assert f"running as user nfqscan (uid {account.pw_uid}" in daemon.log_text()

    # Its files: the event log it creates is the account's; the control
    # socket (created before the switch) keeps its mode.
    url = nginx.url("/infected/eicar.com")
    got = curl_fetch(lab, url)
    assert_block_page(daemon, got["http_code"], got["headers"], got["body"],
                      corpus.infected("eicar.com"), url)
    log = Path(daemon.config["daemon"]["event_log"])
    assert log.stat().st_uid == account.pw_uid, log.stat()
    assert (daemon.control.stat().st_mode & 0o777) == 0o600

    # Reloads re-read the configuration as nfqscan: by the control socket and
    # by SIGHUP (which also reopens the event log, moved away as logrotate does).
    daemon.ctl("reload")
    daemon.wait_engines(generation=2)
    log.rename(log.with_name(log.name + ".1"))
    daemon.reload_signal()
    daemon.wait_engines(generation=3)
    url = nginx.url("/infected/eicar.com", family=6)
    got = curl_fetch(lab, url)
    assert_block_page(daemon, got["http_code"], got["headers"], got["body"],
                      corpus.infected("eicar.com"), url)
    wait_until(log.exists, 10, "the event log to be created again after SIGHUP")
    assert log.stat().st_uid == account.pw_uid
    assert daemon.status()["scan"]["last_reload_error"] is None
    # Still the same account and sets after the reloads.
    assert_account_and_capabilities(proc_status(pid), account, "nfqscand after reload")

    # The account can remove its socket at exit (its folder is the account's).
    assert daemon.stop() == 0
    assert not daemon.control.exists()


def test_unknown_user_is_refused_naming_file_line_and_key(lab, nfqscand):
    from nfqscand import Nfqscand
    daemon = Nfqscand(lab, {"daemon": {"user": "no-such-user-here"}})
    done = daemon.run_to_exit()
    err = done.stderr.decode() + done.stdout.decode()
    assert done.returncode == 2, err
    assert f"{daemon.config_path}:" in err and "daemon.user" in err, err
    assert 'no user named "no-such-user-here"' in err, err
    line = next(i for i, text in enumerate(daemon.config_path.read_text().splitlines(), 1)
                if text.startswith("user ="))
    assert f"{daemon.config_path}:{line}: daemon.user" in err, err


def test_empty_user_keeps_root(lab, nfqscand):
    """user = "": nothing is dropped (the lab's old behaviour), and the log
    says so."""
    daemon = nfqscand({"daemon": {"user": ""}})
    fields = proc_status(daemon.status()["pid"])
    assert fields["Uid"].split()[0] == "0"
    assert int(fields["CapEff"], 16) & ~CAP_NET_ADMIN_AND_RAW, fields["CapEff"]
    assert "[daemon] user is \"\", nothing was dropped" in daemon.log_text()

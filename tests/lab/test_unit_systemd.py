"""The systemd unit run for real: tools/unit-check starts systemd as PID 1 of
its own namespaces on an overlay of / (nothing it writes reaches the host)
and checks what systemd/nfqscand.service runs as (account, capabilities of
every thread, no_new_privs, seccomp), that the scanners are confined, that a
scan, a scrape of metrics_listen, both reloads and the stop work. Issue 14's "run the unit for real"."""
from __future__ import annotations

import subprocess

from lab import REPO
from nfqscand import build_dir


def test_the_unit_runs_nfqscand_confined_under_systemd():
    proc = subprocess.run([str(REPO / "tools" / "unit-check"), "--build-dir", str(build_dir())],
                          capture_output=True, timeout=300)
    out = proc.stdout.decode(errors="replace") + proc.stderr.decode(errors="replace")
    assert proc.returncode == 0, out
    assert "unit-check: 0 failed" in out, out
    for check in ("nfqscand runs as nfqscan with CAP_NET_ADMIN+CAP_NET_RAW only",
                  "every thread has the same",
                  "the scanner processes run as nfqscan without capabilities, under seccomp",
                  "nfqscanctl scan finds EICAR",
                  "GET /metrics on metrics_listen counts the EICAR scan",
                  "nfqscanctl metrics prints the exposition",
                  "systemctl stop: success, socket removed"):
        assert f"PASS {check}" in out, (check, out)

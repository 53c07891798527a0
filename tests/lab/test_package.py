"""The Debian package: tools/package builds it from debian/ with
dpkg-buildpackage (unit tests off: tools/test runs them) and lintian, and
tools/package-check installs it on a throwaway copy of this machine under a
real systemd (an overlay of /, systemd as PID 1 of its own namespaces) and
checks the install, the account, the unit (enabled, not started, verified,
started), the configuration, the files, and that remove and purge leave it
clean. Issue 15's "the package built, installed and checked"."""
from __future__ import annotations

import subprocess
from pathlib import Path

from lab import REPO


def test_the_package_builds_lintian_clean_installs_runs_and_purges_clean():
    # Into tools/package's own build-deb/, where a build by hand goes too.
    built = subprocess.run([str(REPO / "tools" / "package")], capture_output=True, timeout=3600)
    log = built.stdout.decode(errors="replace") + built.stderr.decode(errors="replace")
    assert built.returncode == 0, log
    deb = Path(log.strip().splitlines()[-1])
    assert deb.is_file() and deb.suffix == ".deb", log
    # lintian: no error and no warning that is not overridden with a reason.
    tags = [line.strip() for line in log.splitlines() if line.strip()[:3] in ("E: ", "W: ")]
    assert not tags, log

    checked = subprocess.run([str(REPO / "tools" / "package-check"), str(deb)],
                             capture_output=True, timeout=900)
    out_text = checked.stdout.decode(errors="replace") + checked.stderr.decode(errors="replace")
    assert checked.returncode == 0, out_text
    assert "package-check: 0 failed" in out_text, out_text
    for check in ("dpkg -i installs nfqscan",
                  "the account nfqscan is a system account",
                  "nfqscand.service is enabled and not started",
                  "systemd-analyze verify accepts the installed unit",
                  "nfqscanctl config check /etc/nfqscan/nfqscan.toml passes",
                  "/etc/nfqscan (configuration, rulesets, YARA, ClamAV, messages) are conffiles",
                  "the install did not apply it",
                  "systemctl start nfqscand: active, nfqscanctl scan finds EICAR",
                  "dpkg -i over the installed package restarts the running nfqscand",
                  "dpkg -r stops nfqscand",
                  "dpkg --purge leaves no file"):
        assert any(line.startswith("PASS ") and check in line for line in out_text.splitlines()), \
            (check, out_text)

"""pytest fixtures for the lab: a fresh client — router — server lab per test,
nfqscand on demand, logs of every lab process attached to a failing test."""

import os
import signal
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lab import REPO, Lab  # noqa: E402
from nfqscand import Nfqscand  # noqa: E402
from servers import MailServers  # noqa: E402


def _terminate(signum, frame):
    # CI's time limit and `kill` send SIGTERM: unwind through the fixtures
    # so the namespaces and processes go away.
    raise KeyboardInterrupt(f"signal {signum}")


signal.signal(signal.SIGTERM, _terminate)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    lab = getattr(item, "lab_instance", None)
    if report.failed and lab is not None and report.when in ("call", "teardown"):
        report.sections.append(("lab process logs (last lines)", lab.process_logs()))


@pytest.fixture
def lab(request):
    """A started lab, torn down after the test whatever happened. Every
    nfqscand the test started must still be running at the end (unless the
    test killed it on purpose) and must exit 0 on SIGTERM."""
    if os.geteuid() != 0:
        pytest.fail("the lab needs root (network namespaces, iptables)")
    with Lab() as instance:
        request.node.lab_instance = instance
        yield instance
        problems = []
        for daemon in instance.daemons:
            if daemon.process is None:
                continue
            if daemon.alive():
                rc = daemon.stop()
                if rc != 0:
                    problems.append(f"{daemon.name} exited with {rc} on SIGTERM")
            elif not daemon.killed_on_purpose:
                problems.append(f"{daemon.name} died during the test "
                                f"(exit status {daemon.process.returncode})")
        if problems:
            pytest.fail("; ".join(problems), pytrace=False)


@pytest.fixture
def nfqscand(lab):
    """Factory: nfqscand(overrides, args=()) starts the daemon on the router
    with rules/nfqscan.toml plus `overrides` (and extra command-line `args`)
    and returns it once its queues are bound."""

    def start(overrides=None, args=()):
        return Nfqscand(lab, overrides, args=args).start()

    return start


@pytest.fixture
def mail_av(lab, nfqscand):
    """Factory for the mail antivirus tests: start(protocols, limits, notify,
    scan) runs nfqscand with the project's signatures (rules/clamav,
    rules/yara, two scan threads), `protocols` as [protocols.*] (e.g.
    {"smtp": {"on_virus": "reject"}}), `limits` as [scan.limits], `notify`
    as [notify], `spam` as [spam] and `scan` merged into [scan], and returns it once its
    engines are loaded."""

    def start(protocols: dict | None = None, limits: dict | None = None,
              notify: dict | None = None, scan: dict | None = None, spam: dict | None = None):
        table = {"clamav_db_dirs": [str(REPO / "rules" / "clamav")],
                 "yara_rule_dirs": [str(REPO / "rules" / "yara")], "pool_threads": 2,
                 **(scan or {})}
        if limits:
            table["limits"] = limits
        overrides = {"scan": table}
        if protocols:
            overrides["protocols"] = protocols
        if notify:
            overrides["notify"] = notify
        if spam:
            overrides["spam"] = spam
        daemon = nfqscand(overrides)
        daemon.wait_engines()
        return daemon

    return start


@pytest.fixture
def mail_servers(lab):
    """Postfix (SMTP 25, 2525) delivering for lab.test to the Maildirs of
    Dovecot (POP3 110, 1110; IMAP 143, 1143; users alice and bob), and an
    SMTP sink (2526) for notifications, all in the server namespace, both
    address families (servers.MailServers)."""
    return MailServers(lab)

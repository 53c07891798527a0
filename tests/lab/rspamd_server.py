"""A private rspamd (Debian's package) for the spam lab (issue 11): started
in a namespace (the router's by default, where nfqscand reaches it on
127.0.0.1:11333) as _rspamd, with its database, run and log folders in the
lab directory, so nothing under /etc or /var changes. It needs no redis for
its GTUBE test message, which it answers with action "reject"."""

from __future__ import annotations

import shutil
import subprocess

from lab import Lab, LabError, wait_until

GTUBE = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
PORT = 11333


class Rspamd:
    def __init__(self, lab: Lab, namespace=None, name: str = "rspamd"):
        if shutil.which("rspamd") is None:
            raise LabError("rspamd is not installed (tools/setup installs it)")
        self.lab = lab
        self.namespace = namespace or lab.router
        self.name = name
        self.dir = lab.dir / name
        self.process = None
        for sub in ("db", "run", "log"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        subprocess.run(["chown", "-R", "_rspamd:_rspamd", str(self.dir)], check=True)
        self.dir.chmod(0o755)
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{PORT}"

    def start(self, timeout: float = 180.0) -> None:
        d = self.dir
        self.process = self.namespace.spawn(self.name, [
            "rspamd", "-f", "-u", "_rspamd", "-g", "_rspamd", "-c", "/etc/rspamd/rspamd.conf",
            "-p", d / "run" / "rspamd.pid", f"--var=DBDIR={d / 'db'}",
            f"--var=RUNDIR={d / 'run'}", f"--var=LOGDIR={d / 'log'}"])
        # It answers after loading its rules (~15 s here): poll, do not sleep.
        wait_until(self._answers, timeout, f"rspamd on 127.0.0.1:{PORT} in {self.namespace.name}",
                   interval=0.5)

    def _answers(self) -> bool:
        if not self.process.alive():
            raise LabError(f"rspamd exited with {self.process.returncode}:\n"
                           f"{self.process.log_tail()}")
        return self._ping()

    def _ping(self) -> bool:
        r = self.namespace.run(["curl", "-s", "--max-time", "2", f"{self.url}/ping"], check=False,
                               timeout=10)
        return r.returncode == 0 and r.stdout.strip().startswith(b"pong")

    def stop(self) -> None:
        if self.process is not None and self.process.alive():
            self.process.stop(timeout=20)
        # Its workers are forked children in the same session: wait for the port to close.
        wait_until(lambda: not self._ping(), 30, "rspamd to stop")

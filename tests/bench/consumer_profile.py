"""Where a queue consumer's CPU goes, from `perf record -g` of its process
(optional: `tools/bench net --perf`; needs the linux-perf package).

The consumer's CPU time is mostly kernel work done in its own system calls:
recvmmsg copies each (GSO, up to 64 KiB) packet to user space, and the
verdict's sendmsg re-injects the packet, which then runs on through
forwarding, veth and, in softirq on the same CPU, the receiver's TCP stack.
The breakdown below shows those shares next to the consumer's own code."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

# (label, symbol) as `perf report --children` names them; shares overlap
# (children include their callees), so they do not add up to 100 %.
SYMBOLS = [
    ("recvmmsg (receive, copy to user)", "__x64_sys_recvmmsg"),
    ("  copy of packet data to user", "_copy_to_iter"),
    ("sendto/sendmsg (verdicts)", "__x64_sys_sendto"),
    ("  verdict -> re-injection", "nfqnl_recv_verdict_batch"),
    ("  softirq run in the consumer's context", "handle_softirqs"),
    ("  receiver's TCP (tcp_v4_rcv)", "tcp_v4_rcv"),
    ("epoll_wait", "__x64_sys_epoll_wait"),
    ("poll", "__x64_sys_poll"),
    ("scheduling (sleep/wake)", "schedule"),
]


def available() -> bool:
    return shutil.which("perf") is not None


class PerfRecord:
    """perf record -g of one process for a fixed time, started in the
    background; .wait() then .breakdown()."""

    def __init__(self, pid: int, seconds: float, out: Path):
        self.out = out
        self.proc = subprocess.Popen(
            ["perf", "record", "-q", "-g", "-o", str(out), "-p", str(pid), "--", "sleep",
             f"{seconds:g}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def wait(self, timeout: float = 60) -> None:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def breakdown(self) -> dict:
        """{label: percent of the process's samples}, plus 'user space'."""
        result: dict = {}
        if not self.out.exists():
            return result
        children = _report(self.out, ["--children", "--sort", "sym"])
        for label, symbol in SYMBOLS:
            for line in children.splitlines():
                m = re.match(r"^\s+([\d.]+)%\s+([\d.]+)%\s+\[[k.]\]\s+(\S+)\s*$", line)
                if m and m.group(3) == symbol:
                    result[label] = float(m.group(1))
                    break
        by_dso = _report(self.out, ["--no-children", "--sort", "dso"])
        user = 0.0
        for line in by_dso.splitlines():
            m = re.match(r"^\s+([\d.]+)%\s+(\S+)", line)
            if m and m.group(2) != "[kernel.kallsyms]":
                user += float(m.group(1))
        result["user space (all libraries and the program)"] = user
        return result


def _report(data: Path, args: list) -> str:
    proc = subprocess.run(["perf", "report", "-i", str(data), "--stdio", *args],
                          capture_output=True, timeout=120)
    return proc.stdout.decode(errors="replace")

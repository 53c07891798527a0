"""`scan`: scanning throughput (in-process libclamav/libyara vs clamscan).
Not written yet: the scanning engines are another engineer's work, and their
benchmark will replace this placeholder (keep `run(report, files, args)`)."""

from __future__ import annotations

from common import Report, say, section


def run(report: Report, files, args) -> None:
    section("scan: scanning throughput")
    say("not yet: no scan benchmark in this tree")
    report.add("scan", "scan benchmark", "not yet")

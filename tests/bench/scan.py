"""`scan`: scanning throughput, in-process libclamav/libyara (the scan
service) vs clamscan with the same signatures. The benchmark itself lives in
bench_scan.py (owned by the scan module); this keeps `run(report, files, args)`."""

from __future__ import annotations

from common import Report


def run(report: Report, files, args) -> None:
    import bench_scan

    bench_scan.run(report, files, args)

#!/usr/bin/python3
"""nfqscan benchmarks: figures and ratios measured in one run, not tests.

    tools/bench [all|net|stream|flows|scan|http|mail|ftp] [--rounds N] [--seconds S]

net:   TCP throughput (iperf3, 1 and 4 streams) and a 200 MiB HTTP download,
       plain forwarding vs through nfqscand (flow kept in the queue, flow
       released to the fast path) vs a minimal accept-all NFQUEUE consumer;
       consumer CPU per packet, packets per verdict message and per batch.
stream: the TCP stream engine on a 200 MiB download: plain forwarding vs
       nfqscand without it, passing, rewriting tokens, relaying whole
       responses; throughput ratios and CPU per packet per mode.
flows: memory per tracked flow at 100k idle flows; a SYN flood against a
       small flow cap while a clean download runs.
scan:  scanning throughput: the in-process scan service (1 and 2 threads) vs
       clamscan with the same signatures, over a generated ~150 MB corpus.
http:  HTTP antivirus end to end: concurrent curl clients downloading a
       mixed corpus of clean objects through nfqscand (scanned) vs the scan
       service alone on the same files; allowlisted and released flows vs
       plain forwarding; the time to first byte added to small objects.
mail:  SMTP antivirus end to end: concurrent smtplib senders submitting a
       corpus of clean mail to Postfix through nfqscand (scanned) vs plain
       forwarding vs the scan service alone on the same messages; the
       delivery latency added to small messages.
ftp:   FTP antivirus end to end: concurrent curl clients downloading a
       corpus of clean files from vsftpd through nfqscand (scanned) vs plain
       forwarding vs the scan service alone on the same files.
reload: the memory a signature reload needs, [scan] reload = "concurrent" vs
       "blocking", with a generated ClamAV database of realistic size (peak
       PSS of nfqscand and its scanners, build time, engine-not-ready time).

Needs root (network namespaces, iptables). Every namespace, process and temp
file goes away at the end, on Ctrl-C and on failure. The build directory is
$NFQSCAN_BUILD (default build).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import BenchFiles, Report, background_load, say, section  # noqa: E402
from lab import Lab  # noqa: E402


def _terminate(signum, frame):
    # `kill` and CI time limits send SIGTERM: unwind like Ctrl-C so that the
    # labs' context managers tear everything down.
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", nargs="?", default="all", choices=["all", "net", "stream", "flows", "scan", "http", "mail",
                                 "ftp", "reload"])
    parser.add_argument("--rounds", type=int, default=3,
                        help="net: runs of each variant and test (medians are printed)")
    parser.add_argument("--seconds", type=int, default=5, help="net: length of one iperf3 run")
    parser.add_argument("--variants", default="",
                        help="stream: a comma-separated subset of plain,kept,pass,rewrite,relay; "
                             "http: of plain,scanned,scanned-close,allowlisted,passed,released,cache")
    parser.add_argument("--perf", action="store_true",
                        help="net: profile nfqscand and the reference under perf (extra runs); "
                             "http: nfqscand and its scanners during one extra scanned download")
    parser.add_argument("--flows", type=int, default=100_000,
                        help="flows: idle flows for the memory figure")
    parser.add_argument("--flood-seconds", type=float, default=10.0,
                        help="flows: length of the SYN flood")
    parser.add_argument("--clients", type=int, default=4,
                        help="http, ftp: concurrent curl clients downloading the corpus; "
                             "mail: concurrent SMTP senders")
    parser.add_argument("--http-mb", type=float, default=200.0,
                        help="http: size of the generated corpus in MB")
    parser.add_argument("--ttfb-requests", type=int, default=1000,
                        help="http: small-object requests each way for the time to first byte")
    parser.add_argument("--temp-dir", default="",
                        help="http: [scan] temp_dir of nfqscand and the bench runner (created "
                             "mode 1777: the scanners write it as nobody), e.g. a folder on "
                             "a tmpfs; default: their default (/tmp)")
    parser.add_argument("--mail-mb", type=float, default=100.0,
                        help="mail: size of the generated mail corpus in MB")
    parser.add_argument("--ftp-mb", type=float, default=100.0,
                        help="ftp: size of the generated corpus in MB")
    parser.add_argument("--reload-hdb", type=int, default=4_000_000,
                        help="reload: MD5 hash signatures generated (plus a quarter as "
                             "many SHA-256 ones)")
    parser.add_argument("--reload-ndb", type=int, default=100_000,
                        help="reload: body signatures generated")
    parser.add_argument("--latency-messages", type=int, default=300,
                        help="mail: small messages each way for the delivery latency")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench: needs root (network namespaces, iptables)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _terminate)

    sections = (["net", "stream", "flows", "scan", "http", "mail", "ftp"]
                if args.what == "all" else [args.what])
    report = Report()
    files = BenchFiles()
    failed = []
    started = time.monotonic()
    say(f"nfqscan bench: {', '.join(sections)} (build {os.environ.get('NFQSCAN_BUILD', 'build')}, "
        f"{os.cpu_count()} CPUs, kernel {os.uname().release})")
    try:
        for name in sections:
            t0 = time.monotonic()
            load = background_load()
            say(f"\n[{name}] {load}")
            report.note(f"{name}: {load}")
            try:
                if name == "net":
                    import net
                    with Lab() as lab:
                        net.NetBench(lab, files, report, args.rounds, args.seconds,
                                     args.perf).run()
                elif name == "stream":
                    import stream
                    stream.run(report, files, args)
                elif name == "flows":
                    import flows
                    flows.run(report, files, args)
                elif name == "scan":
                    import scan
                    scan.run(report, files, args)
                elif name == "http":
                    import bench_http
                    bench_http.run(report, files, args)
                elif name == "reload":
                    import reload
                    reload.run(report, files, args)
                elif name == "mail":
                    import bench_mail
                    bench_mail.run(report, files, args)
                else:
                    import bench_ftp
                    bench_ftp.run(report, files, args)
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # report it, go on with the next section
                failed.append(name)
                section(f"{name}: FAILED")
                traceback.print_exc()
                report.note(f"{name} failed: {type(exc).__name__}: {str(exc).splitlines()[0]}")
            say(f"({name}: {time.monotonic() - t0:.0f} s)")
    except KeyboardInterrupt as exc:
        say(f"\nbench: interrupted ({exc or 'Ctrl-C'}); everything was torn down")
        report.print_summary()
        return 130
    finally:
        files.close()
    report.print_summary()
    say(f"\nbench: {time.monotonic() - started:.0f} s"
        + (f"; sections that failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

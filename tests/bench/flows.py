"""`flows`: what tracked flows cost, and whether the cap holds under a flood.

1. Memory per tracked flow: nfqscand with a large cap and a long handshake
   timeout; hping3 sends N SYNs from a few spoofed client addresses (behind
   the client namespace) with incrementing source ports to a port the server
   silently drops, so every SYN is one idle flow in the handshake state.
   flows.memory_bytes (nfqscand's own accounting) and VmRSS before and after.
2. SYN flood against a small cap: nfqscand with max_flows 5000, a bounded
   flood of spoofed SYNs to nginx's port 80 for ~10 s while clean 50 MiB
   downloads run from the client's real address; status every 0.5 s.

The spoofed sources are in 192.0.2.0/24 (TEST-NET-1), routed by the router
back to the client namespace, which does not own them and drops the replies:
a SYN flood's SYN-ACKs go nowhere, as they would on a real network.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from pathlib import Path

from common import (LabError, Report, curl_timed, daemon_counters, delta, error_line, fmt,
                    invalid_drops, median, queue_rule_packets, ratio, rss_bytes, say, section,
                    set_queue_jump, wait_until)
from lab import CLIENT4, SERVER4, Lab
from nfqscand import Nfqscand
from servers import Nginx

S = "flows"
SPOOF_NET = "192.0.2.0/24"
IDLE_PORT = 9  # the server drops SYNs to it: no reply, the flows stay idle
CONNTRACK_MAX = Path("/proc/sys/net/netfilter/nf_conntrack_max")
FLOOD_CAP = 5000
FLOOD_SYNS = 200_000
FLOOD_SOURCES = 8
DOWNLOAD_FILE = "download-50MiB.bin"
DOWNLOAD_SIZE = 50 * 1024 * 1024


class ConntrackCapacity:
    """nf_conntrack_max is one global limit (each namespace counts its own
    entries against it). Raise it only when the run needs more, and put the
    old value back."""

    def __init__(self, needed: int):
        self.needed = needed
        self.original = int(CONNTRACK_MAX.read_text())
        self.raised = False

    def __enter__(self):
        if self.original < self.needed:
            CONNTRACK_MAX.write_text(str(self.needed))
            self.raised = True
            say(f"nf_conntrack_max raised from {self.original} to {self.needed} for this run")
        else:
            say(f"nf_conntrack_max {self.original} >= {self.needed} needed: left as it is")
        return self

    def __exit__(self, *exc):
        if self.raised:
            CONNTRACK_MAX.write_text(str(self.original))
            say(f"nf_conntrack_max restored to {self.original}")


def conntrack_count(lab: Lab) -> int | None:
    proc = lab.router.run(["cat", "/proc/sys/net/netfilter/nf_conntrack_count"], check=False)
    text = proc.stdout.decode().strip()
    return int(text) if text.isdigit() else None


def spoof_routes(lab: Lab) -> None:
    """Replies to the spoofed sources go back to the client namespace."""
    lab.router.run(["ip", "route", "add", SPOOF_NET, "via", CLIENT4])


def hping3_syns(lab: Lab, name: str, source: str, port: int, base_port: int, count: int,
                interval_us: int, limit_s: float):
    """A bounded SYN sender: `count` SYNs from `source` with source ports
    base_port, base_port+1, ... (hping3 increments them) to SERVER4:port."""
    return lab.client.spawn(name, ["timeout", f"{limit_s:.0f}", "hping3", "-q", "-S",
                                   "-a", source, "-p", port, "-s", base_port,
                                   "-i", f"u{interval_us}", "-c", count, SERVER4])


def hping3_sent(proc) -> int:
    m = re.search(r"(\d+) packets transmitted", proc.log_tail(20))
    return int(m.group(1)) if m else 0


def wait_procs(procs, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for p in procs:
        p.popen.wait(max(0.1, deadline - time.monotonic()))


# -- 1. memory per flow ---------------------------------------------------------

def status_latency_ms(daemon: Nfqscand) -> float:
    times = []
    for _ in range(3):
        t = time.monotonic()
        daemon.status()
        times.append((time.monotonic() - t) * 1000)
    return median(times)


def memory_per_flow(report: Report, n_flows: int) -> None:
    section(f"flows: memory per tracked flow ({n_flows:,} idle flows)")
    sources = max(1, math.ceil(n_flows / 50_000)) * 2  # spread over both queues
    per_source = math.ceil(n_flows / sources)
    with ConntrackCapacity(n_flows + n_flows // 4 + 10_000), Lab() as lab:
        spoof_routes(lab)
        lab.server.run(["iptables", "-w", "-A", "INPUT", "-p", "tcp", "--dport", IDLE_PORT,
                        "-j", "DROP"])
        max_flows = max(400_000, 4 * n_flows)
        daemon = Nfqscand(lab, {"flows": {"max_flows": max_flows,
                                          "tcp_handshake_timeout": 3600}}).start()
        pid = daemon.process.pid
        time.sleep(1.0)
        s0 = daemon.status()
        rss0 = rss_bytes(pid)
        status0_ms = status_latency_ms(daemon)
        say(f"nfqscand max_flows {s0['flows']['max']:,}, before: {s0['flows']['active']} flows, "
            f"memory_bytes {s0['flows']['memory_bytes']:,}, VmRSS {rss0 / 2**20:.1f} MiB")

        active = 0
        for attempt in range(1, 4):
            t0 = time.monotonic()
            procs = [hping3_syns(lab, f"hping3-idle-{attempt}-{i}", f"192.0.2.{10 + i}",
                                 IDLE_PORT, 10_000, per_source, 100, 120)
                     for i in range(sources)]
            wait_procs(procs, 130)
            sent = sum(hping3_sent(p) for p in procs)
            last = [-1]

            def settled():
                now = daemon.status()["flows"]["active"]
                done = now == last[0]
                last[0] = now
                return now if done else None

            active = wait_until(settled, 30, "the flow count to settle", interval=0.5)
            say(f"pass {attempt}: {sent:,} SYNs from {sources} sources in "
                f"{time.monotonic() - t0:.1f} s; flows active {active:,}")
            if active >= n_flows:
                break
        s1 = daemon.status()
        rss1 = rss_bytes(pid)
        status_ms = status_latency_ms(daemon)
        states = {}
        for f in json.loads(daemon.ctl("flows", "--json", "--limit", "1000").stdout):
            states[f["state"]] = states.get(f["state"], 0) + 1
        flows_added = s1["flows"]["active"] - s0["flows"]["active"]
        mem_delta = s1["flows"]["memory_bytes"] - s0["flows"]["memory_bytes"]
        rss_delta = rss1 - rss0
        per_flow_mem = mem_delta / flows_added if flows_added else None
        per_flow_rss = rss_delta / flows_added if flows_added else None
        ct = conntrack_count(lab)
        say(f"after: {s1['flows']['active']:,} flows (states of the first 1000 listed: {states}), "
            f"evicted {s1['flows']['evicted']}, memory_bytes {s1['flows']['memory_bytes']:,}, "
            f"VmRSS {rss1 / 2**20:.1f} MiB; router conntrack entries {ct}")
        say(f"per flow: {fmt(per_flow_mem, 0, 'B')} by nfqscand's accounting, "
            f"{fmt(per_flow_rss, 0, 'B')} by VmRSS (target <= 2048 B)")
        say(f"nfqscanctl status took {status0_ms:.0f} ms with no flows, {status_ms:.0f} ms with "
            f"{s1['flows']['active']:,} (each worker walks its whole flow table for it, and "
            f"handles no packet meanwhile)")
        report.add(S, "idle flows tracked", s1["flows"]["active"])
        report.add(S, "status latency: no flows / with them", f"{status0_ms:.0f} / "
                   f"{status_ms:.0f} ms", note="nfqscanctl status --json, median of 3")
        report.add(S, "bytes per flow (flows.memory_bytes)", per_flow_mem, "B", 0,
                   note="target <= 2048: " + ("met" if per_flow_mem and per_flow_mem <= 2048
                                              else "MISSED"))
        report.add(S, "bytes per flow (VmRSS)", per_flow_rss, "B", 0,
                   note="target <= 2048: " + ("met" if per_flow_rss and per_flow_rss <= 2048
                                              else "MISSED"))
        rc = daemon.stop()
        if rc != 0:
            raise LabError(f"nfqscand exited with {rc} on SIGTERM")


# -- 2. SYN flood against the cap --------------------------------------------------

class StatusSampler(threading.Thread):
    """Reads nfqscand's status every `interval` s until stopped."""

    def __init__(self, daemon: Nfqscand, interval: float = 0.5):
        super().__init__(name="status-sampler", daemon=True)
        self.daemon_ = daemon
        self.interval = interval
        self.samples: list[dict] = []
        self.failures: list[str] = []
        self.stop_event = threading.Event()

    def run(self):
        while not self.stop_event.is_set():
            t = time.monotonic()
            try:
                s = self.daemon_.status()
                self.samples.append({"t": t, "active": s["flows"]["active"],
                                     "evicted": s["flows"]["evicted"],
                                     "packets": sum(q["packets"] for q in s["queues"])})
            except Exception as exc:  # a slow answer is a finding, not a crash
                self.failures.append(error_line(exc))
            self.stop_event.wait(max(0.0, self.interval - (time.monotonic() - t)))

    def stop(self):
        self.stop_event.set()
        self.join(10)


class FloodLab:
    """A lab with nginx serving the 50 MiB file and the route for the
    spoofed sources; runs clean downloads and bounded floods."""

    def __init__(self, lab: Lab, files):
        self.lab = lab
        spoof_routes(lab)
        nginx = Nginx(lab, ports=[80])
        self.digest = files.serve(nginx.www, DOWNLOAD_FILE, DOWNLOAD_SIZE)
        self.url = f"http://{SERVER4}:80/{DOWNLOAD_FILE}"
        self.out = files.downloads / "flood.bin"

    def download(self) -> dict:
        r = curl_timed(self.lab, self.url, self.out, timeout=120)
        r["good"] = r["ok"] and r["sha256"] == self.digest and r.get("size") == DOWNLOAD_SIZE
        return r

    def baseline(self, label: str) -> float | None:
        runs = [self.download() for _ in range(3)]
        say(f"{label}, without flood: {', '.join(fmt(r.get('seconds'), 3, 's') for r in runs)} "
            f"(all sha256 right: {all(r['good'] for r in runs)})")
        return median([r.get("seconds") for r in runs if r["good"]])

    def flood(self, flood_seconds: float) -> dict:
        """FLOOD_SYNS spoofed SYNs to port 80 over ~flood_seconds; clean
        downloads back to back from the client's own address meanwhile
        (from the moment the flood has had time to fill the flow table)."""
        per_source = FLOOD_SYNS // FLOOD_SOURCES
        interval_us = max(1, int(flood_seconds * 1e6 / per_source))
        t0 = time.monotonic()
        procs = [hping3_syns(self.lab, f"hping3-flood-{i}", f"192.0.2.{20 + i}", 80, 20_000,
                             per_source, interval_us, flood_seconds * 3 + 10)
                 for i in range(FLOOD_SOURCES)]
        during = []
        try:
            time.sleep(min(2.0, flood_seconds / 4))
            while any(p.alive() for p in procs):
                during.append(self.download())
            wait_procs(procs, flood_seconds * 3 + 15)
            wall = time.monotonic() - t0
        finally:
            for p in procs:
                p.stop(timeout=2)
        sent = sum(hping3_sent(p) for p in procs)
        good = [r for r in during if r["good"]]
        return {"sent": sent, "wall": wall, "during": during, "good": good,
                "median": median([r.get("seconds") for r in good])}

    @staticmethod
    def describe(label: str, f: dict) -> None:
        say(f"{label}: {f['sent']:,} SYNs in {f['wall']:.1f} s ({f['sent'] / f['wall']:,.0f}/s) "
            f"from {FLOOD_SOURCES} spoofed sources")
        say(f"  downloads during the flood: {len(f['during'])}, with the right sha256: "
            f"{len(f['good'])}; times (connect / total) " + (", ".join(
                f"{fmt(r.get('connect_s'), 3)}/{fmt(r.get('seconds'), 3)} s"
                for r in f["during"]) or "none"))
        for r in f["during"]:
            if not r["good"]:
                say(f"  failed download: rc {r['rc']} {r['error']}")


def syn_flood(report: Report, files, flood_seconds: float) -> None:
    section(f"flows: SYN flood against max_flows {FLOOD_CAP} (~{flood_seconds:g} s, "
            f"{FLOOD_SYNS:,} SYNs) with clean downloads")
    # The same flood through plain forwarding first (its own lab: the
    # flood's conntrack entries go with it), to tell what the flood costs the
    # machine from what it costs nfqscand.
    with ConntrackCapacity(FLOOD_SYNS + 20_000), Lab() as lab:
        fl = FloodLab(lab, files)
        set_queue_jump(lab.router, False)
        plain_base = fl.baseline("plain forwarding")
        plain = fl.flood(flood_seconds)
        fl.describe("plain forwarding, flood", plain)

    with ConntrackCapacity(FLOOD_SYNS + 20_000), Lab() as lab:
        fl = FloodLab(lab, files)
        daemon = Nfqscand(lab, {"flows": {"max_flows": FLOOD_CAP}}).start()
        cap = daemon.status()["flows"]["max"]
        base_t = fl.baseline("nfqscand")
        rule0, invalid0 = queue_rule_packets(lab.router), invalid_drops(lab.router)
        s0 = daemon.status()
        sampler = StatusSampler(daemon)
        sampler.start()
        try:
            f = fl.flood(flood_seconds)
            time.sleep(1.0)
        finally:
            sampler.stop()
        s1 = daemon.status()
        rule1, invalid1 = queue_rule_packets(lab.router), invalid_drops(lab.router)
        counters = delta(daemon_counters(s1), daemon_counters(s0))
        unseen = (rule1 - rule0) - counters["packets"]
        max_active = max([x["active"] for x in sampler.samples] + [s1["flows"]["active"]])
        evicted = s1["flows"]["evicted"] - s0["flows"]["evicted"]
        created = s1["flows"]["total"] - s0["flows"]["total"]
        fl.describe("nfqscand, flood", f)
        say(f"  {len(sampler.samples)} status samples, {len(sampler.failures)} failed")
        for failure in sorted(set(sampler.failures))[:3]:
            say(f"  status failed: {failure}")
        say(f"  flows: max active seen {max_active:,} (cap {cap:,}: "
            f"{'held' if max_active <= cap else 'EXCEEDED'}), created {created:,}, "
            f"evicted {evicted:,}")
        say(f"  queue: {counters['packets']:,} packets seen by nfqscand, {unseen:,} reached the "
            f"queue rule unseen, ENOBUFS {counters['enobufs']}, kernel dropped "
            f"{counters['kernel_queue_dropped'] + counters['kernel_user_dropped']}; "
            f"router dropped {invalid1 - invalid0} as conntrack INVALID")
        rc = daemon.stop()
        if rc != 0:
            raise LabError(f"nfqscand exited with {rc} on SIGTERM")

    report.add(S, "flood: SYNs sent", f["sent"], note=f"{f['sent'] / f['wall']:,.0f}/s, "
                                                      f"{FLOOD_SOURCES} sources")
    report.add(S, "flood: max flows active seen", max_active,
               note=f"cap {cap:,}: {'held' if max_active <= cap else 'EXCEEDED'}; "
                    f"{len(sampler.samples)} samples, {len(sampler.failures)} status timeouts")
    report.add(S, "flood: flows evicted", evicted)
    report.add(S, "flood: packets past the queue unseen", unseen,
               note="fail-open (queue full) or ENOBUFS")
    report.add(S, "flood: clean downloads right / run", f"{len(f['good'])}/{len(f['during'])}",
               note="50 MiB through nfqscand, sha256 checked")
    report.add(S, "download 50 MiB, nfqscand, no flood", base_t, "s", 3)
    report.add(S, "download 50 MiB, nfqscand, flood", f["median"], "s", 3)
    report.ratio(S, "nfqscand: download time flood / no flood", ratio(f["median"], base_t),
                 note="lower is better")
    report.add(S, "download 50 MiB, plain, no flood", plain_base, "s", 3)
    report.add(S, "download 50 MiB, plain, flood", plain["median"], "s", 3,
               note=f"{len(plain['good'])}/{len(plain['during'])} right")
    report.ratio(S, "plain: download time flood / no flood", ratio(plain["median"], plain_base),
                 note="what the flood costs without nfqscand")


def run(report: Report, files, args) -> None:
    memory_per_flow(report, args.flows)
    syn_flood(report, files, args.flood_seconds)

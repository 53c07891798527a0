"""`net`: throughput and per-packet cost, in one fresh lab.

Each test runs its variants back to back (plain, nfqscand, reference; the
order reversed every other round) so that a noisy neighbour hurts them
alike, `rounds` times. Figures are medians over rounds; ratios are taken
within a round first (paired), then the median of those:
- plain: the ruleset without the FORWARD jump to the queue chain;
- kept: nfqscand, every packet through the queue and the stream engine:
  iperf3's port is a [test_rewrite] port with nothing to replace (bytes
  passed unchanged; a port of a real protocol would see its inspector
  release iperf3's bytes as not that protocol), the HTTP download on port
  80 claimed by the HTTP inspector;
- released: nfqscand, iperf3 on a port nothing claims: released to the
  conntrack-mark fast path after its first payload;
- reference: tools/bench_ref's accept-all consumer on the same queues.
Tests: iperf3 client -> server with 1 and 4 streams; curl of a 200 MiB
random file from nginx (sha256 checked). Per-packet cost: the consumer's CPU
time (utime + stime) over the packets it handled in that run.
"""

from __future__ import annotations

from collections import defaultdict

from common import (CpuWindow, RefConsumer, Report, daemon_counters, delta, fmt, iperf3,
                    median, queue_rule_packets, ratio, say, section, set_queue_jump,
                    wait_listening, curl_timed, LabError)
from lab import SERVER4, Lab
from nfqscand import Nfqscand
from servers import Nginx

S = "net"
KEPT_PORT = 5201       # a [test_rewrite] port (nothing replaced): kept in the engine
RELEASED_PORT = 5301   # listed nowhere, not HTTP: released after the first payload
HTTP_PORT = 80
HTTP_ODD_PORT = 8081   # not configured: shows the HTTP probe claiming it anyway
HTTP_FILE = "download-200MiB.bin"
HTTP_SIZE = 200 * 1024 * 1024

VARIANTS = ("plain", "kept", "released", "reference")
TESTS = ("tcp1", "tcp4", "http")
TEST_TITLES = {"tcp1": "iperf3 1 stream", "tcp4": "iperf3 4 streams", "http": "HTTP 200 MiB"}


# A kept run whose consumer saw fewer packets than this was not kept.
KEPT_MIN_PACKETS = 1000


def daemon_config() -> dict:
    return {"protocols": {"http": {"ports": [HTTP_PORT, 8080]}},
            "test_rewrite": {"ports": [KEPT_PORT], "replace": []}}


class Consumer:
    """What the runs need from nfqscand or the reference: a pid and counters."""

    def __init__(self, kind: str, daemon: Nfqscand | None = None,
                 ref: RefConsumer | None = None):
        self.kind = kind
        self.daemon = daemon
        self.ref = ref

    @property
    def pid(self):
        if self.daemon:
            return self.daemon.process.pid
        if self.ref:
            return self.ref.pid
        return None

    def counters(self) -> dict:
        if self.daemon:
            return daemon_counters(self.daemon.status())
        if self.ref:
            return self.ref.stats()
        return {}


class NetBench:
    def __init__(self, lab: Lab, files, report: Report, rounds: int, seconds: int,
                 perf: bool = False):
        self.perf = perf
        self.profiles: dict = {}
        self.lab = lab
        self.files = files
        self.report = report
        self.rounds = rounds
        self.seconds = seconds
        self.runs: dict = defaultdict(list)  # (variant, test) -> [run]
        self.http_odd_port_claim = None

    # -- one measured run ---------------------------------------------------------
    def measure(self, variant: str, test: str, consumer: Consumer, action, r: int) -> dict:
        # The rule counts a packet before the consumer can: read the rule
        # first at the start and last at the end, so that "unseen" never
        # goes negative from a packet between the two reads.
        rule0 = queue_rule_packets(self.lab.router)
        before = consumer.counters()
        window = CpuWindow(consumer.pid).start()
        result = action()
        window.stop()
        after = consumer.counters()
        rule1 = queue_rule_packets(self.lab.router)
        d = delta(after, before) if before else {}
        run = dict(result)
        run.update(variant=variant, test=test, round=r, cpu_s=window.precise,
                   cpu_ticks_s=window.proc,
                   wall_s=window.wall,
                   machine_busy=window.machine_busy, to_queue=rule1 - rule0,
                   packets=d.get("packets"), verdict_messages=d.get("verdict_messages"),
                   verdict_batches=d.get("verdict_batches"), recv_batches=d.get("recv_batches"),
                   enobufs=d.get("enobufs"))
        if run["packets"] and run["packets"] >= 100:
            # A released flow's handful of packets says nothing per packet.
            run["us_per_packet"] = window.precise / run["packets"] * 1e6
        if variant == "kept" and (run["packets"] or 0) < KEPT_MIN_PACKETS:
            raise LabError(f"{variant} {test}: nfqscand saw only {run['packets']} packets: "
                           "the flow left the queue, the figure would measure the fast path")
        self.runs[(variant, test)].append(run)
        say(f"  {variant:<9} {TEST_TITLES[test]:<17} {self.describe(run)}")
        return run

    @staticmethod
    def describe(run: dict) -> str:
        if run["test"] == "http":
            main = (f"{fmt(run.get('seconds'), 3, 's')} "
                    f"({fmt(run.get('gbps'), 2, 'Gbit/s')}) sha256 "
                    f"{'ok' if run.get('sha_ok') else 'WRONG'}")
        else:
            main = f"{fmt(run['gbps'], 2, 'Gbit/s')} retr {run.get('retransmits', 0)}"
        extra = f"  machine {run['machine_busy'] * 100:.0f}% busy"
        if run.get("packets") is not None:
            unseen = run["to_queue"] - run["packets"]
            extra += (f", consumer cpu {run['cpu_s']:.3f} s, {fmt(run['packets'])} pkts"
                      f" ({fmt(run.get('us_per_packet'), 2, 'us/pkt')})")
            if run["to_queue"] and unseen > 0:
                extra += f", {fmt(unseen)} reached the queue rule unseen"
            if run.get("enobufs"):
                extra += f", ENOBUFS {run['enobufs']}"
        return main + extra

    def iperf_action(self, port: int, streams: int):
        return lambda: iperf3(self.lab, SERVER4, port, streams, self.seconds)

    def http_action(self, port: int, digest: str):
        url = f"http://{SERVER4}:{port}/{HTTP_FILE}"
        out = self.files.downloads / "net.bin"

        def action():
            r = curl_timed(self.lab, url, out)
            if not r["ok"]:
                raise LabError(f"curl {url} failed ({r['rc']}): {r['error']}")
            r["sha_ok"] = r["sha256"] == digest and r.get("size") == HTTP_SIZE
            r["gbps"] = HTTP_SIZE * 8 / r["seconds"] / 1e9 if r.get("seconds") else None
            return r

        return action

    # -- the whole section ---------------------------------------------------------
    def run(self) -> None:
        lab = self.lab
        say(f"lab {lab.id}: {self.rounds} rounds of each variant, iperf3 {self.seconds} s runs")
        nginx = Nginx(lab, ports=[HTTP_PORT, HTTP_ODD_PORT])
        digest = self.files.serve(nginx.www, HTTP_FILE, HTTP_SIZE)
        for port in (KEPT_PORT, RELEASED_PORT):
            proc = lab.server.spawn(f"iperf3-{port}", ["iperf3", "-s", "-p", port])
            wait_listening(lab.server, port, process=proc)
        daemon = Nfqscand(lab, daemon_config(), args=["--allow-test-inspectors"])
        ref = RefConsumer(lab)

        self.digest = digest
        self.daemon, self.ref = daemon, ref
        for r in range(1, self.rounds + 1):
            # Each test runs its variants back to back, in alternating order
            # from round to round, so that a neighbour's load (this is a
            # shared machine) lands on them alike; ratios are then taken
            # within a round (paired) before the median.
            order = ("plain", "nfqscand", "reference")
            order = order if r % 2 else order[::-1]
            say(f"round {r}/{self.rounds} ({', '.join(order)})")
            for test in TESTS:
                for group in order:
                    self.run_group(group, test, r)
        if self.perf:
            self.profile(daemon, ref)
        self.summarise()

    def run_group(self, group: str, test: str, r: int) -> None:
        """One test (tcp1, tcp4, http) under plain forwarding, nfqscand
        (kept, and released for iperf3) or the reference consumer."""
        streams = 4 if test == "tcp4" else 1
        lab = self.lab
        if group == "plain":
            set_queue_jump(lab.router, False)  # the queue chain is not jumped to
            try:
                action = (self.http_action(HTTP_PORT, self.digest) if test == "http"
                          else self.iperf_action(RELEASED_PORT, streams))
                self.measure("plain", test, Consumer("plain"), action, r)
            finally:
                set_queue_jump(lab.router, True)
        elif group == "nfqscand":
            self.daemon.start()
            nfq = Consumer("nfqscand", daemon=self.daemon)
            if test == "http":
                self.measure("kept", test, nfq, self.http_action(HTTP_PORT, self.digest), r)
                if r == 1:
                    self.check_http_odd_port(self.daemon, self.digest)
            else:
                self.measure("kept", test, nfq, self.iperf_action(KEPT_PORT, streams), r)
                self.measure("released", test, nfq, self.iperf_action(RELEASED_PORT, streams), r)
            rc = self.daemon.stop()
            if rc != 0:
                raise LabError(f"nfqscand exited with {rc} on SIGTERM:\n"
                               f"{self.daemon.process.log_tail()}")
        else:
            self.ref.start()
            refc = Consumer("reference", ref=self.ref)
            action = (self.http_action(HTTP_PORT, self.digest) if test == "http"
                      else self.iperf_action(KEPT_PORT, streams))
            self.measure("reference", test, refc, action, r)
            self.ref.stop()

    def paired(self, test: str, key: str, num: str, den: str, invert: bool = False):
        """Median over rounds of num/den measured in the same round."""
        by_round: dict = {}
        for v in (num, den):
            for run in self.runs.get((v, test), []):
                by_round.setdefault(run["round"], {})[v] = run.get(key)
        values = []
        for pair in by_round.values():
            a, b = pair.get(num), pair.get(den)
            values.append(ratio(b, a) if invert else ratio(a, b))
        return median(values)

    def profile(self, daemon: Nfqscand, ref: RefConsumer) -> None:
        """Extra runs under perf (not part of the medians): where the
        consumer's CPU goes, nfqscand (kept) vs the reference."""
        import consumer_profile as profile
        if not profile.available():
            say("perf: not installed (apt-get install linux-perf): no profile")
            return
        say("profiling (extra runs, not in the figures): iperf3 1 stream under perf record -g")
        for variant, consumer in (("kept", daemon), ("reference", ref)):
            consumer.start()
            record = profile.PerfRecord(consumer.process.pid, max(1, self.seconds - 1),
                                        self.lab.dir / f"perf-{variant}.data")
            result = iperf3(self.lab, SERVER4, KEPT_PORT, 1, self.seconds)
            record.wait()
            consumer.stop()
            self.profiles[variant] = record.breakdown()
            say(f"  {variant:<9} {fmt(result['gbps'], 2, 'Gbit/s')} under perf")

    def check_http_odd_port(self, daemon: Nfqscand, digest: str) -> None:
        """HTTP on a port nothing configures: is it released? (No: the HTTP
        probe claims it from the request line.)"""
        url = f"http://{SERVER4}:{HTTP_ODD_PORT}/{HTTP_FILE}"
        r = curl_timed(self.lab, url, self.files.downloads / "odd.bin")
        flows = daemon.find_flows(server_port=HTTP_ODD_PORT)
        claims = sorted({f"{f['disposition']} by {f['claimed_by']}" for f in flows})
        self.http_odd_port_claim = ", ".join(claims) or "no flow listed"
        ok = r["ok"] and r["sha256"] == digest
        say(f"  HTTP on unconfigured port {HTTP_ODD_PORT}: flow {self.http_odd_port_claim}, "
            f"{fmt(r.get('seconds'), 3, 's')}, sha256 {'ok' if ok else 'WRONG'}")

    # -- figures ---------------------------------------------------------------
    def med(self, variant: str, test: str, key: str):
        return median([run.get(key) for run in self.runs.get((variant, test), [])])

    def summarise(self) -> None:
        rep = self.report
        section("net: throughput (medians; ratios in the summary are medians of per-round "
                "ratios)")
        say(f"{'variant':<10} {'1 stream':>14} {'4 streams':>14} {'HTTP 200 MiB':>14}")
        for v in VARIANTS:
            cells = [fmt(self.med(v, "tcp1", "gbps"), 2, "Gbit/s"),
                     fmt(self.med(v, "tcp4", "gbps"), 2, "Gbit/s")]
            http = "skipped" if v == "released" else fmt(self.med(v, "http", "seconds"), 3, "s")
            say(f"{v:<10} {cells[0]:>14} {cells[1]:>14} {http:>14}")
        for test in ("tcp1", "tcp4"):
            label = "1 stream" if test == "tcp1" else "4 streams"
            for v in VARIANTS:
                rep.add(S, f"iperf3 {label}: {v}", self.med(v, test, "gbps"), "Gbit/s")
        for test in ("tcp1", "tcp4"):
            label = "1 stream" if test == "tcp1" else "4 streams"
            rep.ratio(S, f"{label}: kept / plain", self.paired(test, "gbps", "kept", "plain"),
                      0.5)
            rep.ratio(S, f"{label}: released / plain",
                      self.paired(test, "gbps", "released", "plain"), 0.9)
            rep.ratio(S, f"{label}: reference / plain",
                      self.paired(test, "gbps", "reference", "plain"))
            rep.ratio(S, f"{label}: kept / reference",
                      self.paired(test, "gbps", "kept", "reference"), 0.9)

        # HTTP download times
        sha_all = all(run.get("sha_ok") for key, runs in self.runs.items() if key[1] == "http"
                      for run in runs)
        for v in ("plain", "kept", "reference"):
            rep.add(S, f"HTTP 200 MiB: {v}", self.med(v, "http", "seconds"), "s", 3)
        rep.ratio(S, "HTTP: kept speed / plain speed",
                  self.paired("http", "seconds", "kept", "plain", invert=True))
        rep.ratio(S, "HTTP: reference speed / plain speed",
                  self.paired("http", "seconds", "reference", "plain", invert=True))
        rep.ratio(S, "HTTP: kept speed / reference speed",
                  self.paired("http", "seconds", "kept", "reference", invert=True))
        rep.add(S, "HTTP: every download's sha256 right", "yes" if sha_all else "NO")
        rep.add(S, "HTTP: released variant", "skipped",
                note=f"HTTP is claimed by probe on any port (port {HTTP_ODD_PORT}: "
                     f"{self.http_odd_port_claim}); no config switch turns the probe off")

        # per-packet cost
        section("net: per-packet cost (medians over runs)")
        say(f"{'variant/test':<22} {'us/pkt':>8} {'pkts/run':>10} {'pkts/verdict msg':>17} "
            f"{'pkts/sendmsg':>13} {'pkts/recvmmsg':>14} {'unseen':>8}")
        for v in ("kept", "released", "reference"):
            for test in TESTS:
                runs = self.runs.get((v, test), [])
                if not runs:
                    continue
                us = self.med(v, test, "us_per_packet")
                pkts = self.med(v, test, "packets")
                per_msg = median([ratio(r.get("packets"), r.get("verdict_messages")) for r in runs])
                per_batch = median([ratio(r.get("packets"), r.get("verdict_batches"))
                                    for r in runs])
                per_recv = median([ratio(r.get("packets"), r.get("recv_batches")) for r in runs])
                unseen = median([r["to_queue"] - r["packets"] for r in runs
                                 if r.get("packets") is not None])
                say(f"{v + ' ' + test:<22} {fmt(us, 2):>8} {fmt(pkts, 0):>10} "
                    f"{fmt(per_msg, 1):>17} {fmt(per_batch, 1):>13} {fmt(per_recv, 1):>14} "
                    f"{fmt(unseen, 0):>8}")
                if v == "released" and test == "tcp1":
                    rep.add(S, "released 1 stream: packets nfqscand saw per run", pkts, "", 0,
                            note="the rest took the conntrack-mark fast path")
                elif test == "tcp1" or (test == "http" and v != "released"):
                    title = "1 stream" if test == "tcp1" else "HTTP"
                    rep.add(S, f"{v} {title}: consumer CPU per packet", us, "us", 2)
                    rep.add(S, f"{v} {title}: packets per verdict message", per_msg, "", 1)
                    rep.add(S, f"{v} {title}: packets per sendmsg (batch)", per_batch, "", 1)
        rep.ratio(S, "1 stream: CPU/pkt kept / reference",
                  self.paired("tcp1", "us_per_packet", "kept", "reference"),
                  note="nfqscand's own work per packet, relative")
        say("unseen: packets that reached the NFQUEUE rule but not the consumer "
            "(fail-open past a full queue, or lost to ENOBUFS)")
        say("consumer CPU = utime + stime of the process (read as its threads' schedstat run "
            "time, ns resolution): it includes the kernel work done in its system calls "
            "(copying each packet to user space; the verdict re-injecting the packet, which "
            "then runs on through forwarding, veth and the receiver's TCP stack)")
        if self.profiles:
            section("net: where the consumer's CPU goes (perf, % of its samples; overlapping)")
            labels = list(dict.fromkeys(k for p in self.profiles.values() for k in p))
            say(f"{'':<46} " + " ".join(f"{v:>10}" for v in self.profiles))
            for label in labels:
                say(f"{label:<46} " + " ".join(
                    f"{fmt(p.get(label), 1, '%'):>10}" for p in self.profiles.values()))
            for variant, p in self.profiles.items():
                rep.add(S, f"perf {variant}: share in user space",
                        p.get("user space (all libraries and the program)"), "%", 1)
                rep.add(S, f"perf {variant}: share in sendto (verdict + re-injection)",
                        p.get("sendto/sendmsg (verdicts)"), "%", 1)
                rep.add(S, f"perf {variant}: share in recvmmsg (copy to user)",
                        p.get("recvmmsg (receive, copy to user)"), "%", 1)

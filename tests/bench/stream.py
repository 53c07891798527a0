"""`stream`: what the TCP stream engine costs, in one fresh lab.

A 200 MiB text full of the test inspector's tokens, served by nginx without
Content-Length and fetched with curl -0 (HTTP/1.0, close-delimited: a body
whose length changes arrives whole). Variants, back to back each round, the
order reversed every other round; figures are medians, ratios paired within
a round:
- plain: the ruleset without the FORWARD jump to the queue chain;
- kept: nfqscand, the flow claimed as HTTP, no stream engine;
- pass: the stream engine on the flow, an inspector that replaces nothing;
- rewrite: [test_rewrite]: every GROW grows, every SHRINKME shrinks;
- relay: the same with relay = true: nfqscand acknowledges nginx itself,
  stores the response (up to [stream] relay_limit, 64 MiB: a full store is
  let go and sent) and sends it to curl as its own segments, as GSO frames
  through its relay device;
- relay_raw: the same with relay_device = "": one segment per packet through
  raw sockets (not in the default set; ask for it with --variants).
The received file's sha256 is checked against the expected rewrite. CPU per
packet: nfqscand's CPU time over the packets the queue handed it (in relay
mode that includes the segments it sends and the ACKs it writes).
"""

from __future__ import annotations

import hashlib
import random
from collections import defaultdict

from common import CpuWindow, LabError, Report, curl_timed, daemon_counters, delta, fmt, median, \
    ratio, say, set_queue_jump
from lab import SERVER4, Lab
from nfqscand import Nfqscand
from servers import Nginx
from tokens import REPLACE, rewrite

S = "stream"
SIZE = 200 * 1024 * 1024
VARIANTS = ("plain", "kept", "pass", "rewrite", "relay")
OPTIONAL_VARIANTS = ("relay_raw",)
ALL_VARIANTS = VARIANTS + OPTIONAL_VARIANTS


def token_corpus(size: int) -> bytes:
    """`size` bytes: a 1 MiB block of filler with ~5% tokens and near misses,
    repeated (generating 200 MiB at random would take longer than the runs)."""
    rng = random.Random(7)
    pieces = ["GROW", "SHRINKME", "GRO", "SHRINK", "GROWGROW", "SHRINKMGROW"]
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(1, 12)))
             for _ in range(2000)]
    out, total = [], 0
    while total < 1 << 20:
        w = rng.choice(pieces) if rng.random() < 0.08 else rng.choice(words)
        out.append(w + (" " if rng.random() < 0.9 else "\n"))
        total += len(out[-1])
    block = "".join(out).encode()[:1 << 20]
    data = (block * (size // len(block) + 1))[:size - 1] + b"\n"
    assert b"<!--" not in data
    return data


def config(variant: str) -> dict:
    c: dict = {"protocols": {"http": {"ports": [80]}}}
    if variant in ("pass", "rewrite", "relay", "relay_raw"):
        replace = [] if variant == "pass" else [list(p) for p in REPLACE]
        c["test_rewrite"] = {"ports": [80], "replace": replace,
                             "relay": variant.startswith("relay")}
    if variant == "relay_raw":
        c["stream"] = {"relay_device": ""}
    return c


class StreamBench:
    def __init__(self, lab: Lab, files, report: Report, rounds: int, variants=VARIANTS):
        self.lab, self.files, self.report, self.rounds = lab, files, report, rounds
        self.variants = tuple(v for v in ALL_VARIANTS if v in variants)
        self.runs: dict = defaultdict(list)

    def run(self) -> None:
        lab = self.lab
        nginx = Nginx(lab, ports=[80])
        data = token_corpus(SIZE)
        nginx.add_stream_file("tokens.txt", data)
        digests = {"plain": hashlib.sha256(data).hexdigest()}
        digests["kept"] = digests["pass"] = digests["plain"]
        digests["rewrite"] = digests["relay"] = digests["relay_raw"] = \
            hashlib.sha256(rewrite(data)).hexdigest()
        del data
        url = nginx.stream_url("tokens.txt")
        say(f"lab {lab.id}: {self.rounds} rounds, 200 MiB token text via curl -0")
        for r in range(1, self.rounds + 1):
            order = self.variants if r % 2 else self.variants[::-1]
            say(f"round {r}/{self.rounds}")
            for variant in order:
                self.measure(variant, url, digests[variant], r)
        self.summarise()

    def measure(self, variant: str, url: str, digest: str, r: int) -> None:
        lab = self.lab
        out = self.files.downloads / "stream.bin"
        daemon = None
        if variant == "plain":
            set_queue_jump(lab.router, False)
        else:
            args = ["--allow-test-inspectors"] if variant in ("pass", "rewrite", "relay",
                                                              "relay_raw") else []
            daemon = Nfqscand(lab, config(variant), args=args)
            daemon.start()
        try:
            before = daemon_counters(daemon.status()) if daemon else {}
            window = CpuWindow(daemon.process.pid if daemon else None).start()
            result = curl_timed(lab, url, out, "-0")
            window.stop()
            after = daemon_counters(daemon.status()) if daemon else {}
            streams = daemon.status()["streams"] if daemon else {}
        finally:
            if daemon:
                rc = daemon.stop()
                if rc != 0:
                    raise LabError(f"nfqscand exited with {rc}:\n{daemon.process.log_tail()}")
            else:
                set_queue_jump(lab.router, True)
        if not result["ok"]:
            raise LabError(f"{variant}: curl failed ({result['rc']}): {result['error']}")
        run = {"round": r, "seconds": result["seconds"], "sha_ok": result["sha256"] == digest,
               "mbps": result["size"] / result["seconds"] / 1e6}
        packets = delta(after, before).get("packets") if daemon else None
        if packets:
            run["us_per_packet"] = window.precise / packets * 1e6
            run["packets"] = packets
        self.runs[variant].append(run)
        extra = ""
        if packets:
            extra = (f", nfqscand cpu {window.precise:.2f} s, {fmt(packets)} pkts "
                     f"({run['us_per_packet']:.2f} us/pkt)")
        if streams.get("injected_packets"):
            extra += f", {fmt(streams['injected_packets'])} extra segments injected"
        if streams.get("relay", {}).get("segments"):
            extra += f", relay sent {fmt(streams['relay']['segments'])} segments"
            if streams["relay"].get("device_frames"):
                extra += (f" in {fmt(streams['relay']['device_frames'])} frames "
                          f"({fmt(streams['relay']['gso_frames'])} GSO)")
        say(f"  {variant:<8} {result['seconds']:.2f} s, {run['mbps']:.0f} MB/s, sha256 "
            f"{'ok' if run['sha_ok'] else 'WRONG'}{extra}")
        if not run["sha_ok"]:
            raise LabError(f"{variant}: the download differs from the expected content")

    def paired(self, key: str, num: str, den: str):
        values = []
        for a, b in zip(self.runs[num], self.runs[den]):
            values.append(ratio(a.get(key), b.get(key)))
        values = [v for v in values if v is not None]
        return median(values) if values else None

    def summarise(self) -> None:
        rep = self.report
        for v in self.variants:
            rep.add(S, f"{v}: download speed", median([x["mbps"] for x in self.runs[v]]), "MB/s", 0)
        for v in self.variants[self.variants[0] == "plain":]:
            rep.add(S, f"{v}: nfqscand CPU per packet",
                    median([x["us_per_packet"] for x in self.runs[v] if "us_per_packet" in x]),
                    "us", 2)
        rep.ratio(S, "rewrite / plain throughput", self.paired("mbps", "rewrite", "plain"), 0.40)
        rep.ratio(S, "relay / plain throughput", self.paired("mbps", "relay", "plain"), 0.30)
        if "relay_raw" in self.variants:
            rep.ratio(S, "relay_raw / plain throughput",
                      self.paired("mbps", "relay_raw", "plain"))
        rep.ratio(S, "pass / kept throughput", self.paired("mbps", "pass", "kept"))
        rep.ratio(S, "CPU/pkt rewrite / pass", self.paired("us_per_packet", "rewrite", "pass"))
        rep.ratio(S, "CPU/pkt relay / pass", self.paired("us_per_packet", "relay", "pass"))


def run(report: Report, files, args) -> None:
    with Lab() as lab:
        variants = args.variants.split(",") if args.variants else VARIANTS
        unknown = set(variants) - set(ALL_VARIANTS)
        if unknown:
            raise LabError(f"stream: unknown variants {sorted(unknown)} "
                           f"(known: {', '.join(ALL_VARIANTS)})")
        StreamBench(lab, files, report, args.rounds, variants).run()

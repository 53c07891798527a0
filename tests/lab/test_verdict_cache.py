"""The verdict cache (issue 16) through the real daemon: an object already
judged by the same engines is answered from the cache, without a scan, and
the event log says so (`cached: true`); a reload makes the next identical
object be scanned again; scan errors are never cached. Real nginx, curl and
nfqscanctl; the scan counters are nfqscanctl status's
(`scan.engines.*.scans`, `scan.scan_latency.count`, `scan.cache`)."""

from __future__ import annotations

from clients import curl_fetch
from lab import wait_until
from servers import Nginx
from test_http_av import assert_block_page, corpus, http_av, http_events, same_url  # noqa: F401
from test_scan import EICAR, ScanLab, zip_bytes
from test_stream_rewrite import DOWNLOAD_LIMIT


def scan_counters(daemon) -> dict:
    """clamav and yara scans, their sum, and the cache's counters, from status."""
    scan = daemon.status()["scan"]
    clamav, yara = scan["engines"]["clamav"]["scans"], scan["engines"]["yara"]["scans"]
    return {"clamav": clamav, "yara": yara, "engines": clamav + yara,
            "objects": scan["scan_latency"]["count"], "cache": scan["cache"]}


def serve_one(lab, http_av, path: str, data: bytes):
    """nginx serving `data` at /PATH and nfqscand with its engines loaded:
    (daemon, url, scan counters before any download)."""
    nginx = Nginx(lab, ports=[80])
    nginx.add_file(path, data)
    daemon = http_av()
    return daemon, nginx.url(f"/{path}"), scan_counters(daemon)


def url_events(daemon, url: str) -> list[dict]:
    return [e for e in http_events(daemon) if same_url(e.get("object", ""), url)]


def test_infected_download_twice_second_blocked_from_the_cache(lab, http_av, corpus):
    sample = corpus.infected("eicar.zip")
    daemon, url, before = serve_one(lab, http_av, "files/eicar.zip", sample.data)

    for i in range(2):
        got = curl_fetch(lab, url)
        assert_block_page(daemon, got["http_code"], got["headers"], got["body"], sample, url)
        if i == 0:
            once = scan_counters(daemon)
    wait_until(lambda: len(url_events(daemon, url)) == 2, 10, "two block events")
    first, second = url_events(daemon, url)
    assert first["cached"] is False and second["cached"] is True, (first, second)
    assert second["name"] == first["name"] and second["layer"] == first["layer"], (first, second)
    assert second["elapsed_ms"] == 0, second

    after = scan_counters(daemon)
    # One object scanned (YARA alone may have found it: its virus match ends
    # the scan), and nothing at all for the second.
    assert once["objects"] - before["objects"] == 1, (before, once)
    assert once["engines"] > before["engines"], (before, once)
    assert after["engines"] == once["engines"] and after["objects"] == once["objects"], \
        (once, after)
    assert after["cache"]["hits"] - before["cache"]["hits"] == 1, (before, after)
    assert after["cache"]["misses"] - before["cache"]["misses"] == 1, (before, after)
    assert after["cache"]["entries"] >= 1 and after["cache"]["memory_bytes"] > 0, after
    # The human listings say it too.
    assert "infected (cached)" in daemon.ctl("detections", "-n", "5").stdout.decode()
    assert "verdict cache: 1 hits" in daemon.ctl("status").stdout.decode()

    # New engines: judged again, by them.
    daemon.ctl("reload")
    daemon.wait_engines(generation=2)
    got = curl_fetch(lab, url)
    assert_block_page(daemon, got["http_code"], got["headers"], got["body"], sample, url)
    wait_until(lambda: len(url_events(daemon, url)) == 3, 10, "a third block event")
    assert url_events(daemon, url)[-1]["cached"] is False
    again = scan_counters(daemon)
    assert again["objects"] - after["objects"] == 1 and again["engines"] > after["engines"], \
        (after, again)


def test_clean_20mb_download_ten_times_is_scanned_once(lab, http_av, corpus):
    sample = corpus.clean("eicar-big.bin")
    assert len(sample.data) >= 20 << 20
    daemon, url, before = serve_one(lab, http_av, "big.bin", sample.data)

    for i in range(10):
        got = curl_fetch(lab, url, timeout=DOWNLOAD_LIMIT)
        assert got["http_code"] == 200, (i, got["http_code"], got["body"][:200])
        assert got["sha256"] == sample.sha256, f"download {i} arrived altered"
        if i == 0:
            first = scan_counters(daemon)

    after = scan_counters(daemon)
    assert first["clamav"] - before["clamav"] == 1, (before, first)
    assert first["objects"] - before["objects"] == 1, (before, first)
    assert after["engines"] == first["engines"] and after["objects"] == first["objects"], \
        (first, after)
    assert after["cache"]["hits"] - before["cache"]["hits"] == 9, (before, after)
    assert after["cache"]["misses"] - before["cache"]["misses"] == 1, (before, after)
    assert not url_events(daemon, url), "a clean download was logged"


def test_nfqscanctl_scan_hits_the_cache_and_errors_are_scanned_every_time(lab, nfqscand):
    """Files from `nfqscanctl scan` carry no digest: the pool thread hashes
    them, and the second identical file is answered from the cache. A scan
    error (a truncated zip: corrupt) is never cached."""
    scanlab = ScanLab(lab, nfqscand)
    scanlab.daemon.wait_engines()
    packed = zip_bytes([("a.txt", b"hello world\n" * 500), ("b.txt", b"more text\n" * 500)])
    infected = scanlab.file("eicar.zip", zip_bytes([("eicar.com", EICAR)]))
    clean = scanlab.file("clean.zip", packed)
    broken = scanlab.file("truncated.zip", packed[: len(packed) // 2])
    before = scan_counters(scanlab.daemon)

    rounds = [scanlab.by_path(scanlab.daemon.scan(infected, clean, broken)[1]) for _ in range(2)]

    first, second = rounds
    assert first["eicar.zip"]["verdict"] == second["eicar.zip"]["verdict"] == "infected", rounds
    assert second["eicar.zip"]["name"] == first["eicar.zip"]["name"], rounds
    assert first["clean.zip"]["verdict"] == second["clean.zip"]["verdict"] == "clean", rounds
    assert not first["eicar.zip"]["cached"] and not first["clean.zip"]["cached"], first
    assert second["eicar.zip"]["cached"] and second["clean.zip"]["cached"], second
    for v in (first, second):
        assert v["truncated.zip"]["category"] == "corrupt", v
        assert "cached" not in v["truncated.zip"], v
    after = scan_counters(scanlab.daemon)
    # Scanned: eicar.zip and clean.zip once, truncated.zip twice.
    assert after["objects"] - before["objects"] == 4, (before, after)
    assert after["cache"]["hits"] - before["cache"]["hits"] == 2, (before, after)
    assert after["cache"]["misses"] - before["cache"]["misses"] == 4, (before, after)
    assert after["cache"]["entries"] == 2, after
    # The human table says which verdicts came from the cache.
    out = scanlab.daemon.ctl("scan", infected, clean, check=False).stdout.decode()
    assert "infected (cached)" in out and "clean (cached)" in out, out

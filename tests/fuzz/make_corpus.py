#!/usr/bin/env python3
"""Seed corpora of the fuzz targets, written by code (no binary blobs):

    make_corpus.py OUT_DIR [TARGET...]

writes OUT_DIR/<target>/seed-<name> for each target (all by default). The
layouts mirror the comments at the top of each *_fuzz.cc. Seeds named
finding-* are inputs the fuzzers found problems with (kept so each run
checks them again; the commit that fixed each says what it was).
"""
import base64
import struct
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


# -- decode_fuzz: IP packets ---------------------------------------------------
def csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def tcp(sport=40000, dport=80, seq=1000, ack=0, flags=0x18, payload=b"", options=b""):
    offset = (20 + len(options)) // 4
    return struct.pack("!HHIIBBHHH", sport, dport, seq, ack, offset << 4, flags, 65535, 0, 0) + options + payload


def udp(payload=b""):
    return struct.pack("!HHHH", 5353, 53, 8 + len(payload), 0) + payload


def ipv4(proto, l4, frag=0, ihl=5, total=None):
    options = b"\x01" * ((ihl - 5) * 4)
    total = 20 + len(options) + len(l4) if total is None else total
    header = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, total, 1, frag, 64, proto, 0,
                         bytes([192, 0, 2, 1]), bytes([198, 51, 100, 1])) + options
    header = header[:10] + struct.pack("!H", csum(header)) + header[12:]
    return header + l4


def ipv6(next_header, rest, payload_length=None):
    length = len(rest) if payload_length is None else payload_length
    return struct.pack("!IHBB16s16s", 0x60000000, length, next_header, 64,
                       bytes(15) + b"\1", bytes(15) + b"\2") + rest


def ext(next_header, length_units=0):  # hop-by-hop / routing / destination options
    return bytes([next_header, length_units]) + bytes(6 + 8 * length_units)


def decode_seeds():
    get = b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"
    mss = b"\x02\x04\x05\xb4\x01\x03\x03\x07"
    yield "v4-tcp-get", ipv4(6, tcp(payload=get))
    yield "v4-tcp-syn-options", ipv4(6, tcp(flags=0x02, options=mss))
    yield "v4-ip-options", ipv4(6, tcp(payload=b"x"), ihl=7)
    yield "v4-udp", ipv4(17, udp(b"\x12\x34query"))
    yield "v4-icmp", ipv4(1, b"\x08\x00\x00\x00\x00\x01\x00\x01")
    yield "v4-fragment-later", ipv4(6, b"tail of a fragment", frag=0x0010)
    yield "v4-truncated", ipv4(6, tcp(payload=get))[:30]
    yield "v4-gso-length-zero", ipv4(6, tcp(payload=b"y" * 100), total=0)
    yield "v6-tcp", ipv6(6, tcp(dport=25, payload=b"EHLO x\r\n"))
    yield "v6-hop-dst-tcp", ipv6(0, ext(60) + ext(6) + tcp(payload=b"z"))
    yield "v6-routing-udp", ipv6(43, ext(17, 1) + udp(b"abc"))
    yield "v6-fragment-first", ipv6(44, bytes([6, 0, 0, 1, 0, 0, 0, 7]) + tcp(payload=b"f"))
    yield "v6-fragment-later", ipv6(44, bytes([6, 0, 0, 0x10, 0, 0, 0, 7]) + b"later")
    yield "v6-ah", ipv6(51, bytes([6, 1, 0, 0]) + bytes(8) + tcp(payload=b"a"))
    yield "v6-esp", ipv6(50, bytes(16))
    yield "v6-long-chain", ipv6(60, b"".join(ext(60) for _ in range(9)) + ext(6) + tcp())
    yield "not-ip", b"\x50" + bytes(40)


# -- probe_fuzz: [split][script: (0x80 if server)|length, bytes ...] ----------
def probe_script(*pieces):
    out = bytearray([0])
    for from_server, text in pieces:
        for i in range(0, len(text), 0x7F):
            chunk = text[i:i + 0x7F]
            out += bytes([(0x80 if from_server else 0) | len(chunk)]) + chunk
    return bytes(out)


def probe_seeds():
    greetings = {
        "smtp": b"220 mail.example.com ESMTP Postfix\r\n",
        "ftp": b"220 (vsFTPd 3.0.3)\r\n",
        "pop3": b"+OK Dovecot ready.\r\n",
        "imap": b"* OK [CAPABILITY IMAP4rev1] Dovecot ready.\r\n",
        "220-bare": b"220-welcome\r\n220 hi\r\n",
    }
    replies = {"smtp": b"EHLO client\r\n", "ftp": b"USER anonymous\r\n"}
    for name, greeting in greetings.items():
        reply = replies.get(name, b"")
        # The single-direction probes read the raw input: [split][greeting][reply].
        yield f"text-{name}", bytes([1 + len(greeting)]) + greeting + reply
        yield f"script-{name}", probe_script((True, greeting), (False, reply))
    yield "script-220-then-ehlo", probe_script((True, b"220 "), (True, b"x\r\n"), (False, b"EHLO a\r\n"))
    yield "script-220-then-user", probe_script((True, b"220 hello\r\n"), (False, b"USER x\r\n"))
    for method in (b"GET", b"POST", b"PROPFIND", b"CONNECT"):
        request = method + b" /index.html HTTP/1.1\r\nHost: a\r\n\r\n"
        yield f"text-{method.decode().lower()}", b"\0" + request
        yield f"script-{method.decode().lower()}", probe_script((False, request))
    yield "script-http-response-first", probe_script((True, b"HTTP/1.1 200 OK\r\n\r\n"))
    yield "script-long-garbage", probe_script((False, b"G" * 200), (True, b"2" * 200))


# -- quarantine_meta_fuzz: a quarantine entry's ID.json ------------------------
def quarantine_meta_seeds():
    good = (b'{"id":"3fa2c1d0-0-17","time":"2026-12-06T10:00:00.000Z","time_ms":1796551200000,'
            b'"protocol":"smtp","flow":"192.0.2.1:40000 -> 198.51.100.2:25",'
            b'"direction":"upload","object":"message","file_name":"","sender":"<a@example.org>",'
            b'"recipients":["b@example.org"],"subject":"invoice","verdict":{"verdict":'
            b'"infected","engine":"yara","name":"NfqScan_Test_EICAR","category":"virus"},'
            b'"action":"reject","event_id":"3fa2c1d0-0-17","size":1234}')
    yield "entry", good
    yield "traversal", good.replace(b'"3fa2c1d0-0-17"', b'"../../etc/passwd"', 1)
    yield "negative-size", good.replace(b'"size":1234', b'"size":-1')
    yield "truncated", good[:97]
    yield "empty", b""


# -- config_fuzz: TOML text ----------------------------------------------------
def config_seeds():
    shipped = ROOT / "rules" / "nfqscan.toml"
    if shipped.exists():
        yield "shipped", shipped.read_bytes()
    yield "empty", b""
    yield "queues", b'[daemon]\nqueues = "0-3"\nlog_level = "debug"\n'
    yield "queues-bad", b'[daemon]\nqueues = "7-2"\n'
    yield "stream", (b"[stream]\nhold_limit = 1048576\npending_limit = 65536\n"
                     b'relay_limit = 67108864\nmemory_limit = 1073741824\noverflow = "drop"\n'
                     b'relay_device = ""\n')
    yield "protocols", (b"[protocols.http]\nports = [80, 8080, 3128]\n"
                        b"[protocols.smtp]\nports = [25, 587]\n[protocols.ftp]\nports = [21]\n")
    yield "ports-clash", b"[protocols.http]\nports = [25]\n[protocols.smtp]\nports = [25]\n"
    yield "ports-range", b"[protocols.http]\nports = [0, 65536, -1]\n"
    yield "test-rewrite", (b"[test_rewrite]\nports = [8080]\n"
                           b'replace = [["GROW", "GROWN-LONGER"], ["SHRINKME", "S"]]\n'
                           b"relay = true\nrelay_requests = false\n")
    yield "marks", b"[marks]\nrelease = 0x100000\ninject = 0x100000\n"
    yield "scan", (b'[scan]\nbackend = "clamd"\nclamav_db_dirs = ["clamav", "/var/lib/clamav"]\n'
                   b'yara_rule_dirs = ["yara"]\nthreads = 2\n')
    yield "unknown-key", b"[queue]\nbatch_size = 32\nbogus = true\n"
    yield "syntax-error", b"[queue\nbatch_size = = 3\n"
    yield "types", b'[queue]\nbatch_size = "many"\nfail_open = 1\ngso = 1.5e300\n'
    yield "huge-integers", b"[flows]\nmax_flows = 9223372036854775807\nudp_timeout_s = -9223372036854775808\n"
    yield "dates-and-arrays", b"[flows]\nmax_flows = 1979-05-27T07:32:00Z\n[[protocols]]\na = [[1], [\"x\"]]\n"


# -- tcp_stream_fuzz -----------------------------------------------------------
def seg(delta, length, fin=False, from_input=b""):
    op = 0 | (0x10 if fin else 0) | (0x20 if from_input else 0)
    return bytes([op]) + struct.pack("!HH", delta, length) + from_input


def ack(n):
    return bytes([1]) + struct.pack("!H", n)


def deliver(n):
    return bytes([2]) + struct.pack("!H", n)


def insert(data):
    return bytes([3, len(data)]) + data


def pass_(n):
    return bytes([0, n])


def replace(n, data):
    return bytes([2 | (len(data) << 3), n]) + data


KEEP = bytes([3, 0])
RELAY_ON = bytes([4, 0])
RELAY_OFF = bytes([5, 0])
PASS_ALL = bytes([6, 0])


def stream_seeds():
    head = lambda isn=1000, limits=0x15: struct.pack("!I", isn) + bytes([limits])
    at = 2048  # delta for "at input_next"
    yield "in-order-pass", head() + seg(at, 100) + PASS_ALL + ack(100) + seg(at, 100, fin=True) + PASS_ALL + ack(0xFFFF)
    yield "rewrite-grow-shrink", (head() + seg(at, 40) + pass_(10) + replace(5, b"LONGER-REPLACEMENT") + pass_(5)
                                  + replace(10, b"s") + KEEP + ack(20) + seg(at - 30, 60) + PASS_ALL + ack(0xFFFF))
    yield "out-of-order-hold", (head() + seg(at + 100, 50) + seg(at, 100) + PASS_ALL + PASS_ALL
                                + ack(0xFFFF) + seg(at, 10, fin=True) + PASS_ALL)
    yield "retransmit-conflict", (head() + seg(at, 30) + PASS_ALL + seg(at - 30, 30, from_input=b"X" * 30)
                                  + ack(10) + seg(at - 20, 20))
    yield "relay", (head(limits=0x35) + seg(at, 200) + RELAY_ON + KEEP + seg(at, 300) + KEEP + seg(at, 100)
                    + replace(200, b"REPLACED") + RELAY_OFF + PASS_ALL + deliver(0xFFFF) + ack(0xFFFF)
                    + seg(at, 5, fin=True) + PASS_ALL + deliver(0xFFFF) + ack(0xFFFF))
    yield "insert", head() + seg(at, 10) + PASS_ALL + insert(b"+OK inserted\r\n") + deliver(0xFFFF) + ack(0xFFFF)
    yield "pending-limit", head(limits=0x00) + seg(at, 3000) + KEEP + seg(at, 3000) + KEEP + ack(0xFFFF)
    yield "wrap", head(isn=0xFFFFFF00) + seg(at, 4000) + PASS_ALL + ack(0xFFFF) + seg(at, 4000) + PASS_ALL + ack(0xFFFF)
    yield "pressure", head(limits=0x80) + seg(at + 500, 100) + seg(at, 100) + PASS_ALL
    # tcp_stream_fuzz's first findings (see the commits "stream: ..."):
    yield "finding-insertion-retransmit", base64.b64decode("AQACmgAACJ8CjgAAAJIA8QCxoOcBAM4=")
    yield "finding-bytes-after-fin", base64.b64decode("BAAAAAAEAAAAAAASHP8BHAGlHP+lHP+l")
    yield "finding-deleted-front", base64.b64decode("AAPoFQAIAAEAAgICLQAAAAAALQALAC0=")
    yield "finding-insert-after-fin", base64.b64decode("AAABAPYcAKJ7opshTf///5cBkgMAcLphAAD2HACie6KbIQcAAA==")


# -- http_inspector_fuzz: [setup] then ops -------------------------------------
def client(data):
    out = b""
    for i in range(0, len(data), 255):
        out += bytes([0, len(data[i:i + 255])]) + data[i:i + 255]
    return out


def server(data):
    out = b""
    for i in range(0, len(data), 255):
        out += bytes([1, len(data[i:i + 255])]) + data[i:i + 255]
    return out


def verdict(kind=0, which=0):
    """kind: 0 default (clean, infected with setup bit 0), 1 infected, 2 error,
    3 skipped; which: index of the outstanding scan, 15 a stale id."""
    return bytes([2 | (kind << 2) | (which << 4)])


def end(from_server, stalled=False):
    return bytes([3 | (4 if from_server else 0) | (8 if stalled else 0)])


# Setup bits (http_inspector_fuzz.cc): fallbacks other than the defaults.
INFECTED, PROTOCOL_ERROR_PASS, CONTENT_SIZE_BLOCK, OUT_OF_RESOURCE_BLOCK, PARTIAL_BLOCK = 1, 2, 4, 8, 16


def http_chunked(chunks, trailers=b"", head=b"HTTP/1.1 200 OK\r\n"):
    out = head + b"Transfer-Encoding: chunked\r\n\r\n"
    for c in chunks:
        out += b"%x\r\n" % len(c) + c + b"\r\n"
    return out + b"0\r\n" + trailers + b"\r\n"


def multipart(boundary, parts):
    out = b""
    for headers, body in parts:
        out += b"--" + boundary + b"\r\n" + headers + b"\r\n" + body + b"\r\n"
    return out + b"--" + boundary + b"--\r\n"


def http_seeds():
    eicar = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
    get = b"GET /file.exe HTTP/1.1\r\nHost: www.example.com\r\n\r\n"
    ok = lambda body, extra=b"": (b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                                  + extra + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    # Content-Length responses.
    yield "get-clean", b"\0" + client(get) + server(ok(b"hello")) + verdict(0) + end(True) + end(False)
    yield "get-infected", bytes([INFECTED]) + client(get) + server(ok(eicar)) + verdict(1)
    yield "get-error", b"\0" + client(get) + server(ok(b"x" * 600)) + verdict(2)
    yield "get-in-pieces", (b"\0" + client(get[:7]) + client(get[7:30]) + client(get[30:])
                            + b"".join(server(bytes([c])) for c in ok(b"piecewise")) + verdict(0))
    yield "get-fin-inside-body", b"\0" + client(get) + server(ok(b"z" * 100)[:-40]) + end(True) + verdict(0)
    # Chunked, with extensions and trailers.
    chunked = http_chunked([b"hello", b"abcdefghijklmnopqrstuvwxyz"], b"Trailer: x\r\nX-Sum: 1\r\n")
    yield "chunked", b"\0" + client(get) + server(chunked) + verdict(0)
    yield "chunked-ext", (b"\0" + client(get) + server(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                                      b"5;name=v\r\nhello\r\n0\r\nX-T: 1\r\n\r\n") + verdict(3))
    yield "chunked-grows-too-big", (bytes([CONTENT_SIZE_BLOCK]) + client(get)
                                    + server(http_chunked([b"c" * 4000] * 5)) + verdict(0))
    yield "chunked-empty", b"\0" + client(get) + server(http_chunked([])) + client(get) + server(ok(b"after"))
    # Close-delimited.
    yield "close-delimited", (b"\0" + client(get) + server(b"HTTP/1.0 200 OK\r\n\r\nbody until close")
                              + end(True) + verdict(0))
    yield "close-delimited-infected", (b"\0" + client(b"GET / HTTP/1.0\r\n\r\n")
                                       + server(b"HTTP/1.0 200 OK\r\nContent-Type: text/html\r\n\r\n" + eicar)
                                       + end(True) + verdict(1) + end(False))
    # Pipelining: three requests, one HEAD, answered in order, verdicts out of order.
    pipelined = get + b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n" + get
    yield "pipelined", (b"\0" + client(pipelined) + server(ok(b"one"))
                        + server(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n")
                        + server(ok(b"three")) + verdict(0) + verdict(0))
    yield "pipelined-verdicts-reordered", (b"\0" + client(get * 4) + server(ok(b"1") + ok(b"2") + ok(b"3"))
                                           + verdict(0, 2) + verdict(1, 1) + verdict(0) + verdict(0, 15))
    # 100-continue: the interim answer passes, the upload is scanned.
    expect = b"PUT /up.bin HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 68\r\n\r\n"
    yield "expect-100-continue", (b"\0" + client(expect) + server(b"HTTP/1.1 100 Continue\r\n\r\n")
                                  + client(eicar) + verdict(0) + server(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"))
    # Uploads: a plain body and multipart/form-data with files.
    post = b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 68\r\n\r\n" + eicar
    yield "post-upload", bytes([INFECTED]) + client(post) + verdict(1) + server(ok(b"stored"))
    form = multipart(b"XyZ", [
        (b'Content-Disposition: form-data; name="a"\r\n', b"field value"),
        (b'Content-Disposition: form-data; name="f1"; filename="one.exe"\r\n'
         b"Content-Type: application/x-msdownload\r\n", eicar),
        (b'Content-Disposition: form-data; name="f2"; filename="two.txt"\r\n'
         b"Content-Transfer-Encoding: base64\r\n", base64.b64encode(b"second file")),
    ])
    form_head = (b"POST /form HTTP/1.1\r\nHost: a\r\nContent-Type: multipart/form-data; boundary=XyZ\r\n"
                 b"Content-Length: " + str(len(form)).encode() + b"\r\n\r\n")
    yield "multipart-upload", b"\0" + client(form_head + form) + verdict(0, 1) + verdict(1) + server(ok(b"ok"))
    yield "multipart-chunked", (b"\0" + client(http_chunked([form[:50], form[50:]],
                                                            head=b"POST /form HTTP/1.1\r\nHost: a\r\n"
                                                            b"Content-Type: multipart/form-data; boundary=XyZ\r\n"))
                                + verdict(0) + verdict(0))
    # 101 and CONNECT: released after the switching head.
    yield "upgrade", (b"\0" + client(b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
                      + server(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x05hello")
                      + client(b"\x81\x85abcd\x00\x00\x00\x00\x00"))
    yield "upgrade-refused", (b"\0" + client(b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n")
                              + server(ok(b"no")) + verdict(0) + client(get) + server(ok(b"yes")) + verdict(0))
    yield "upgrade-with-body", (b"\0" + client(b"POST /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n"
                                               b"Connection: Upgrade\r\nContent-Length: 68\r\n\r\n" + eicar)
                                + server(b"HTTP/1.1 101 Switching Protocols\r\n\r\n") + verdict(1))
    yield "connect", (b"\0" + client(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
                      + server(b"HTTP/1.1 200 Connection established\r\n\r\n") + client(b"\x16\x03\x01") + server(b"\x16\x03\x03"))
    # Fallbacks without a scan.
    yield "range", b"\0" + client(get) + server(b"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-4/100\r\nContent-Length: 5\r\n\r\nhello")
    yield "range-blocked", bytes([PARTIAL_BLOCK]) + client(get) + server(b"HTTP/1.1 206 Partial Content\r\nContent-Length: 5\r\n\r\nhello")
    yield "allowlisted", b"\0" + client(b"GET / HTTP/1.1\r\nHost: cdn.allowed.example\r\n\r\n") + server(ok(b"fine"))
    yield "too-big", b"\0" + client(get) + server(b"HTTP/1.1 200 OK\r\nContent-Length: 99999999\r\n\r\n") + server(b"y" * 1000)
    yield "stalled", b"\0" + client(get) + server(ok(b"s" * 300)[:-100]) + end(True, stalled=True) + server(b"s" * 100) + verdict(0)
    yield "relay-full", (bytes([OUT_OF_RESOURCE_BLOCK]) + client(get)
                         + server(b"HTTP/1.0 200 OK\r\n\r\n") + server(b"r" * 20000) + end(True, stalled=True))
    yield "no-body-statuses", (b"\0" + client(get * 3) + server(b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n")
                               + server(b"HTTP/1.1 304 Not Modified\r\n\r\n") + server(ok(b"last")) + verdict(0))
    # Not HTTP, or HTTP that breaks.
    yield "not-http", b"\0" + client(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03") + server(b"\x16\x03\x03")
    yield "server-first", b"\0" + server(b"220 smtp.example ESMTP\r\n") + client(b"EHLO x\r\n")
    yield "garbage-request", b"\0" + client(b"\x00\xff garbage \r\n\r\n")
    yield "garbage-after-request", bytes([PROTOCOL_ERROR_PASS]) + client(get + b"\x01junk\r\n") + server(ok(b"q")) + verdict(0)
    yield "garbage-response", b"\0" + client(get) + server(b"HTTP/1.1 abc\r\n\r\n")
    yield "garbage-while-judging", (bytes([PROTOCOL_ERROR_PASS]) + client(get) + server(ok(eicar))
                                    + client(b"\x7f\x7f\r\n") + server(b"more") + verdict(1))
    yield "response-without-request", b"\0" + client(get) + server(ok(b"1") + ok(b"2")) + verdict(0)
    yield "header-bomb", b"\0" + client(b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(200)) + b"\r\n")
    yield "bad-content-length", b"\0" + client(get) + server(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello")
    yield "te-and-cl", (b"\0" + client(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n"
                                        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n"))
    # http_inspector_fuzz's findings (see the commits "http: ...").
    yield "finding-eof-inside-status-line", b"\0" + client(get) + server(b"HT\0")
    yield "finding-release-while-judging", base64.b64decode(
        "AwAAAH5HRVQgL2ZpbGUuZXhlIEhUVFAvMS4xDQpIb3N0OiB3d3cuZXhhbXBsZS5jb20NCg0KSEVBRCAv"
        "IEhUVFAvMS4xDQpIb3N0OiBhDQoNCkdFVCAvZmlsZS5leGUgSFRUUC8xLjENCkhvc3Q6IHd3dy5leGFt"
        "cGxlLmNvbQ0KCg0BUUhUVFAvMS4xIDIwMCBPSw0KQ29udGVudC1UeXBlOiBhcHBsaWNhdGlvbi9vY3Rl"
        "dC1zdHJlYW0NCkNvbnRlbnQtTGVuZ3RoOiAzDQoNCm9uZQEmSFRUUC8xLjEgMjAwIE9LDQpDb250ZW50"
        "LUxlbmd0aDogOQ0KDQoBU0hUVFAvMS4xIDInMCBPSw0KQ29udGVudC1UeXABAAABAAAAAmU6IGFwcGxp"
        "Y2F0AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAaW9uL29jdGV0LXN0cmVhbQ0KQ29udGVudC1M"
        "ZW5ndGg6IDUNCg0KdGhyZWUCAg==")


# -- smtp_inspector_fuzz: [setup][setup2] then ops (client/server/verdict/end as above)
def serve(variant=0):
    """The small SMTP server answers what reached it (variant 5: RCPT refused,
    6: DATA refused, 7: the message refused)."""
    return bytes([3 | 16 | (variant << 5)])


# Setup bits (smtp_inspector_fuzz.cc).
REPLACE, STRIP, REJECT, DROP, VIRUS_PASS = 0, 1, 2, 3, 4
STARTTLS_STRIP, STARTTLS_BLOCK = 8, 16
SMTP_PROTOCOL_ERROR_PASS, SMTP_CONTENT_SIZE_BLOCK, SMALL_CONTENT = 32, 64, 128
# setup2
SMTP_INFECTED, SMTP_OUT_OF_RESOURCE_BLOCK, TAG_ERROR_PASS, POLICY_DETECTIONS = 1, 2, 4, 8


def smtp_seeds():
    eicar = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
    # The small server greets (and answers) alone: the seeds that check
    # what it takes. Seeds with replies of their own greet by hand.
    greeting = serve()
    manual_greeting = server(b"220 mx.example.com ESMTP\r\n")
    ehlo = b"EHLO client.example.com\r\n"
    envelope = b"MAIL FROM:<alice@example.com>\r\nRCPT TO:<bob@example.com>\r\n"
    message = b"From: alice@example.com\r\nSubject: hi\r\n\r\nhello\r\n..stuffed\r\n.\r\n"
    infected = (b"From: alice@example.com\r\nSubject: files\r\nMIME-Version: 1.0\r\n"
                b"Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n"
                b"--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
                b"--b\r\nContent-Type: application/octet-stream\r\n"
                b"Content-Disposition: attachment; filename=\"eicar.com\"\r\n\r\n" + eicar
                + b"\r\n--b--\r\n.\r\n")

    def setup(a=0, b=0):
        return bytes([a, b])

    # A clean session, one step at a time, the server's replies fuzzed bytes.
    yield "clean", (setup() + manual_greeting + client(ehlo)
                    + server(b"250-mx.example.com\r\n250-PIPELINING\r\n250-CHUNKING\r\n250 8BITMIME\r\n")
                    + client(b"MAIL FROM:<a@example.com>\r\n") + server(b"250 2.1.0 Ok\r\n")
                    + client(b"RCPT TO:<b@example.com>\r\n") + server(b"250 2.1.5 Ok\r\n")
                    + client(b"DATA\r\n") + client(message) + verdict(0)
                    + server(b"354 go ahead\r\n") + server(b"250 2.0.0 Ok: queued\r\n")
                    + client(b"QUIT\r\n") + server(b"221 2.0.0 Bye\r\n") + end(False) + end(True))
    # The same with the small server answering, pipelined.
    yield "pipelined", (setup() + greeting + client(ehlo + envelope + b"DATA\r\n") + serve()
                        + client(message) + verdict(0) + serve() + client(b"QUIT\r\n") + serve())
    for name, how in (("replace", REPLACE), ("strip", STRIP), ("reject", REJECT), ("drop", DROP),
                      ("pass", VIRUS_PASS)):
        yield f"infected-{name}", (setup(how, SMTP_INFECTED) + greeting + client(ehlo) + serve()
                                   + client(envelope + b"DATA\r\n") + serve() + client(infected)
                                   + verdict(1) + verdict(0, 1) + verdict(1) + serve()
                                   + client(envelope + b"DATA\r\n" + message) + serve() + verdict(0)
                                   + serve() + client(b"QUIT\r\n") + serve())
    yield "infected-parts-reordered", (setup(REPLACE) + greeting + client(ehlo + envelope + b"DATA\r\n")
                                       + serve() + client(infected) + verdict(1) + verdict(0, 2)
                                       + verdict(1, 1) + verdict(2) + serve())
    yield "scan-error-tagged", (setup(REPLACE, TAG_ERROR_PASS) + greeting + client(ehlo + envelope + b"DATA\r\n")
                                + serve() + client(message) + verdict(2) + serve())
    yield "two-messages-server-refuses", (setup(REJECT) + greeting + client(ehlo + envelope + b"DATA\r\n")
                                          + serve() + client(message) + verdict(0) + serve(6)
                                          + client(envelope + b"DATA\r\n") + serve(7) + client(message)
                                          + verdict(0) + serve(7))
    yield "rcpt-refused", (setup() + greeting + client(ehlo + envelope + b"DATA\r\n") + serve(5)
                           + client(message) + serve())
    big = b"Subject: big\r\n\r\n" + b"".join(b"line %d of a long message\r\n" % i for i in range(40)) + b".\r\n"
    yield "too-big-pass", (setup(SMALL_CONTENT) + greeting + client(ehlo + envelope + b"DATA\r\n") + serve()
                           + client(big) + serve())
    yield "too-big-block", (setup(SMALL_CONTENT | SMTP_CONTENT_SIZE_BLOCK | DROP) + greeting
                            + client(ehlo + envelope + b"DATA\r\n") + serve() + client(big) + serve())
    yield "fin-inside-message", (setup() + greeting + client(ehlo + envelope + b"DATA\r\n") + serve()
                                 + client(message[:20]) + end(False) + serve())
    yield "stalled-relay", (setup() + greeting + client(ehlo + envelope + b"DATA\r\n") + serve()
                            + client(b"Subject: s\r\n\r\n" + b"x" * 200) + end(False, stalled=True))
    yield "bdat", (setup() + greeting + client(ehlo) + serve() + client(envelope) + serve()
                   + client(b"BDAT 10 LAST\r\n0123456789") + serve())
    yield "bdat-pass", (setup(SMTP_PROTOCOL_ERROR_PASS) + greeting + client(ehlo + envelope) + serve()
                        + client(b"BDAT 68 LAST\r\n" + eicar) + serve())
    for name, how in (("allow", 0), ("strip", STARTTLS_STRIP), ("block", STARTTLS_BLOCK)):
        yield f"starttls-{name}", (setup(how) + greeting + client(ehlo) + serve() + client(b"STARTTLS\r\n")
                                   + serve() + client(b"\x16\x03\x01\x00\x05hello") + serve())
    yield "smtps", setup() + client(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03") + server(b"\x16\x03\x03")
    yield "auth-334", (setup() + manual_greeting + client(ehlo) + serve() + client(b"AUTH LOGIN\r\n")
                       + server(b"334 VXNlcm5hbWU6\r\n") + client(b"YWxpY2U=\r\n")
                       + server(b"334 UGFzc3dvcmQ6\r\n") + client(b"c2VjcmV0\r\n")
                       + server(b"235 2.7.0 Authentication successful\r\n")
                       + client(envelope + b"DATA\r\n") + server(b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n")
                       + client(message) + verdict(0) + server(b"354 go ahead\r\n250 2.0.0 Ok\r\n"))
    yield "bare-lf-dot", (setup() + greeting + client(ehlo + envelope + b"DATA\r\n") + serve()
                          + client(b"Subject: a\r\n\r\nx\n.\nMAIL FROM:<e@example.com>\r\n") + serve())
    yield "bare-lf-dot-pass", (setup(SMTP_PROTOCOL_ERROR_PASS) + greeting + client(ehlo + envelope + b"DATA\r\n")
                               + serve() + client(b"Subject: a\r\n\r\n" + eicar + b"\r\n.\nRSET\r\n") + serve())
    yield "endless-pipelining", (setup() + greeting + client(b"NOOP\r\n" * 300) + serve())
    yield "data-without-transaction", (setup() + manual_greeting + client(ehlo + b"DATA\r\n") + serve()
                                       + server(b"354 go\r\n") + client(message))
    yield "not-smtp", setup() + server(b"HTTP/1.1 200 OK\r\n\r\n") + client(b"GET / HTTP/1.1\r\n\r\n")
    yield "multiline-and-malformed-reply", (setup() + manual_greeting + client(ehlo)
                                            + server(b"250-a\r\n250-b\r\n251 c\r\n") + client(b"QUIT\r\n"))
    # smtp_inspector_fuzz's findings (see the commits "smtp: ...").
    yield "finding-fin-before-replies", (setup(REJECT, SMTP_INFECTED) + greeting
                                         + client(ehlo + envelope + b"DATA\r\n" + infected + b"QUIT\r\n")
                                         + end(False) + serve() + serve())
    yield "finding-data-tab", (setup(REJECT, SMTP_INFECTED) + greeting + client(ehlo) + serve()
                               + client(envelope) + serve() + client(b"DATA\t\r\n") + serve()
                               + client(infected) + serve() + verdict(1))
    yield "finding-reply-breaks-while-held", (setup(REJECT | SMTP_PROTOCOL_ERROR_PASS, SMTP_INFECTED)
                                              + greeting + client(ehlo + envelope) + serve()
                                              + client(b"DATA\r\n" + infected) + server(b"garbage\r\n")
                                              + verdict(1))
    yield "finding-ehlo-reply-of-just-the-code", (setup() + manual_greeting + client(ehlo)
                                                  + server(b"250-mx.example.com\r\n250-CHUNKING\r\n250\r\n"))
    yield "finding-redrive-after-reset", (setup() + manual_greeting + client(ehlo) + serve()
                                          + client(b"DATA\r\nNOOP\r\n") + server(b"354 go ahead\r\n"))
# -- pop3_inspector_fuzz, imap_inspector_fuzz: [setup] then ops ---------------
# Setup bits (pop3/imap_inspector_fuzz.cc): 5-6 starttls, 7 strip and tag.
TLS_STRIP, TLS_BLOCK, STRIP_AND_TAG = 32, 64, 128
EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$" + b"EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"


def mail(subject, body):
    return (b"From: a@example.org\r\nTo: b@example.org\r\nSubject: " + subject
            + b"\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
            b"--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n--b\r\n"
            b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            + base64.b64encode(body) + b"\r\n--b--\r\n")


def stuffed(message):
    lines = message.split(b"\r\n")
    return b"\r\n".join(b"." + l if l.startswith(b".") else l for l in lines) + b".\r\n"


def pop3_seeds():
    login = server(b"+OK ready\r\n") + client(b"USER a\r\n") + server(b"+OK\r\n") + client(b"PASS b\r\n") + server(b"+OK\r\n")
    bad, good = mail(b"bad", EICAR), mail(b"good", b"clean")
    yield "retr", b"\0" + login + client(b"RETR 1\r\n") + server(b"+OK\r\n" + stuffed(good)) + verdict(0)
    yield "retr-infected", (bytes([INFECTED]) + login + client(b"RETR 1\r\nRETR 2\r\nLIST\r\n")
                            + server(b"+OK\r\n" + stuffed(bad)) + server(b"+OK\r\n" + stuffed(good))
                            + server(b"+OK\r\n1 10\r\n.\r\n") + verdict(1) + verdict(0) + verdict(0) + verdict(0))
    yield "retr-strip", (bytes([INFECTED | STRIP_AND_TAG]) + login + client(b"RETR 1\r\n")
                         + server(b"+OK\r\n" + stuffed(bad)) + verdict(1) + verdict(1) + verdict(0))
    yield "too-big", (bytes([CONTENT_SIZE_BLOCK]) + login + client(b"RETR 1\r\n")
                      + server(b"+OK\r\n" + stuffed(mail(b"big", b"x" * 20000))))
    yield "too-big-tagged", (bytes([STRIP_AND_TAG]) + login + client(b"TOP 1 10\r\n")
                             + server(b"+OK\r\n" + stuffed(mail(b"big", b"x" * 20000))))
    yield "auth", (b"\0" + server(b"+OK\r\n") + client(b"AUTH PLAIN\r\n") + server(b"+ \r\n")
                   + client(b"AGEAYg==\r\n") + server(b"+OK\r\n") + client(b"CAPA\r\n")
                   + server(b"+OK\r\nSTLS\r\nTOP\r\n.\r\n"))
    yield "stls-strip", (bytes([TLS_STRIP]) + server(b"+OK\r\n") + client(b"CAPA\r\nNOOP\r\nSTLS\r\nNOOP\r\n")
                         + server(b"+OK\r\nSTLS\r\n.\r\n+OK\r\n+OK\r\n"))
    yield "stls-allow", (b"\0" + server(b"+OK\r\n") + client(b"STLS\r\n\x16\x03\x01") + server(b"+OK go\r\n\x16\x03\x03"))
    yield "bare-lf-dot", b"\0" + login + client(b"RETR 1\r\n") + server(b"+OK\r\nSubject: a\r\n\r\nx\n.\r\n")
    yield "fin-inside", b"\0" + login + client(b"RETR 1\r\n") + server(b"+OK\r\nSubject: a\r\n\r\n" + EICAR) + end(True) + verdict(1)
    yield "not-pop3", b"\0" + server(b"SSH-2.0-x\r\n") + client(b"SSH-2.0-y\r\n")
    # pop3_inspector_fuzz's first finding (see the commit "pop3: ... fuzz"): a
    # bare-LF "." line inside a message being dropped, protocol-error pass.
    yield "finding-lost-framing-while-dropping", base64.b64decode(
        "/wELK09LIHJlYWR5DQoACFVTRVIgYQ0KAQUrT0sNCgAIUEFTUyBiDQoBBStPSw0KAAhSRVRSIDEN"
        "CgH/K09LDQpGcm9tOiBhQGV44W1wbGUub3JnDQpUbzogYkBleAAAAAAAAB9qYW1wbGUub3JnDQpT"
        "AAhSRVRSIDENCgH/K09LDQpGcm9tOiBhQGV4YW1wbGUub3JnDQpUbzogYkBleGFtcGxlLm9yZw0K"
        "U3ViamVjdDogYmFkDQpNSU1FLVZlcnNpb246IDEuMA0KQ29udGVudC1UeXBlOiBtdWx0aXBhcnQv"
        "bWmImpvE352QgJlkYXJ5PWINCg0KLS1iDQpDb250ZW50LVR5cGU6IMbGAAEFK09LDQoACSBUTFMN"
        "ChYDxsbGxsbGxsbGxsbGAAEFK09LDQoACSBUTFMNChYDAQELK09LIGdvDQrGxsbGxsbGxsbGxsbG"
        "xsbGxsbGxsbGxsbGxsbGbg0KDQpoZWxsbw0KLS1iDQpDb250ZW50LVR5L3BsYWluDQoNCmhlbGxv"
        "DQotLWINCkNvbnRlbnQtVHlwZTogYXBwbGljYXQkb24vb2N0ZXQtAQELc3RyZWFtDQpDb250ZW50"
        "LVRyYW5zZmVyLUVuY29kaW5naDRlSGg0ZUhoNGVIaDRlSGg0ZUhoNGVIaDRlSGg0ZUZwWU5UUW9V"
        "RjRwTjBOREtUZDlKRVZKUTBGU0xWTlVRVTVFUVZKRUxVRk9WRWxXU1ZKVlV5MVVSVk5VTFVaSlRF"
        "VWhKRWdyU0NvPQ0KLStPSyBnby0NYi0tDQoWAwouDQoGAwYC")


def imap_seeds():
    login = (server(b"* OK [CAPABILITY IMAP4rev1 LITERAL+ STARTTLS] ready\r\n") + client(b"a1 LOGIN a {1}\r\n")
             + server(b"+ go\r\n") + client(b"b\r\n") + server(b"a1 OK\r\n"))
    bad, good = mail(b"bad", EICAR), mail(b"good", b"clean")
    lit = lambda m: b"{%d}\r\n" % len(m) + m
    yield "fetch", (b"\0" + login + client(b"a2 FETCH 1:2 (UID BODY.PEEK[])\r\n")
                    + server(b"* 1 FETCH (UID 1 BODY[] " + lit(good) + b")\r\n* 2 FETCH (UID 2 RFC822 " + lit(bad)
                             + b" FLAGS (\\Seen))\r\na2 OK\r\n") + verdict(0) + verdict(1) + verdict(0) + verdict(1))
    yield "fetch-binary-strip", (bytes([INFECTED | STRIP_AND_TAG]) + login + client(b"a2 FETCH 1 BINARY[]\r\n")
                                 + server(b"* 1 FETCH (BINARY[] ~" + lit(bad) + b")\r\na2 OK\r\n") + verdict(1) + verdict(1) + verdict(0))
    yield "partial", (bytes([PARTIAL_BLOCK]) + login + client(b"a2 FETCH 1 (BODY[2] BODY[]<0.10> BODY[HEADER])\r\n")
                      + server(b"* 1 FETCH (BODY[2] {3}\r\nabc BODY[]<0> {4}\r\nabcd BODY[HEADER] {2}\r\n\r\n)\r\na2 OK\r\n"))
    yield "partial-whole", (b"\0" + login + client(b"a2 FETCH 1 BODY.PEEK[]<0.99999>\r\n")
                            + server(b"* 1 FETCH (BODY[]<0> " + lit(good) + b")\r\na2 OK\r\n") + verdict(0))
    yield "too-big", (bytes([CONTENT_SIZE_BLOCK]) + login + client(b"a2 FETCH 1 BODY[]\r\n")
                      + server(b"* 1 FETCH (BODY[] " + lit(mail(b"big", b"y" * 20000)) + b")\r\n"))
    yield "too-big-tagged", (bytes([STRIP_AND_TAG]) + login + client(b"a2 FETCH 1 BODY[]\r\n")
                             + server(b"* 1 FETCH (BODY[] " + lit(mail(b"big", b"y" * 20000)) + b")\r\n"))
    yield "append", (bytes([INFECTED]) + login + client(b"a2 APPEND INBOX (\\Seen) {%d}\r\n" % len(bad)) + client(bad + b"\r\n")
                     + verdict(1) + verdict(1) + verdict(0) + server(b"a2 OK\r\n"))
    yield "append-sync", (bytes([INFECTED]) + server(b"* OK ready\r\n") + client(b"a2 APPEND INBOX {%d}\r\n" % len(bad))
                          + server(b"+ go\r\n") + client(bad + b"\r\n") + verdict(1) + verdict(1) + verdict(0))
    yield "idle", (b"\0" + login + client(b"a2 IDLE\r\n") + server(b"+ idling\r\n* 1 EXISTS\r\n") + client(b"DONE\r\n")
                   + server(b"a2 OK\r\n"))
    yield "starttls-block", (bytes([TLS_BLOCK]) + server(b"* OK [CAPABILITY IMAP4rev1 STARTTLS] x\r\n")
                             + client(b"a1 CAPABILITY\r\na2 STARTTLS\r\n") + server(b"* CAPABILITY STARTTLS\r\na1 OK\r\n"))
    yield "starttls-allow", (b"\0" + server(b"* OK x\r\n") + client(b"a1 STARTTLS\r\n\x16\x03") + server(b"a1 OK\r\n\x16\x03"))
    yield "long-line", b"\0" + login + client(b"a2 SEARCH ALL\r\n") + server(b"* SEARCH" + b" 1" * 40000 + b"\r\na2 OK\r\n")
    yield "not-imap", b"\0" + server(b"220 smtp\r\n") + client(b"EHLO x\r\n")
    # Findings of a first run (see the commit "imap: ... fuzz"): the client's
    # FIN inside an APPEND literal (the relay was turned off after its line),
    # an APPEND line ended by a bare LF.
    yield "finding-fin-inside-append", base64.b64decode(
        "AQE1KiBPSyBbQ0FQQUJJTElUWSBJTUFQNHJldjEgTElURVJBTCsgU1RBUlRUTFNdIHJlYWR5DQoA"
        "EGExIExPR0lOIGEgezF9DQoBBisgZ28NCgADYg0KAQdhMSBPSw0KAB9hMiBBUFBFTkQgSU5CT1gg"
        "KFxTZWVuKSB7MzQxfQ0KAP9Gcm9tOiBhQGV4YW1wbGUub3JnDQpUbzogYkBleGFtcGxlLm9yZw0K"
        "U3ViamVjdDogYmFkDQpNSU1FLVZlcnNpb246IDEuMA0KQ29udGVudC1UeXBlOiBtdWx0aXBhcnQv"
        "bWl4ZWQ7IGJvdW5kYXJ5PWINCg0KLS1iDQpDb250ZW50LVR5cGU6IHRleHQvcGxhaW4NCg0KaGVs"
        "bG8NCi0tYg0KQ29udGVudC1UeXBlOiBhcHBsaWNhdGlvbi8gMSBFWElTVFMNCgAGRE9ORQ0KAQdh"
        "MiBPSw0Kb2N0ZXQtc3RyZWFtDQpDb250ZW50LVRyYW5zZmVyLUVuY29kaW5nOiBiYXNlNjQNCg0K"
        "V0RWUElWQWxRRUZRV3pSAFhjVUZwWU5UUW9VRjRwTjBOREtUZDlKRVZKUTBGU0xWTlVRVTVFUVZK"
        "RUxVRk9WRWxXU1ZKVlV5MVVSVk5VTFVaSlRFVWhKRWdyU0NvNQ0KLS1iLS0NCg0KBgYCAQdhMiBP"
        "Sw0K")
    yield "finding-append-bare-lf", base64.b64decode(
        "AQE1KiBPSyBbQ0FQQUJJTElUWSBJTUFQNHJldjEgTElURVJBTCsgXVRBUlRUTFNdIHJlYWR5DQoA"
        "EGExIExPR0lOIGEgezF9DQoBBisgZ28NCgADYg0KAQdhMSBPSw0KAB9hMiBBUFBFTkQKIElOQk9Y"
        "IChcU2VlbikgezM0MX0NClZQSVZBbFFFRlFXelIAWGNVRnBZTlQA/0Zyb206IGFAZXhhbXBsZS5v"
        "cmcNClRvOiBiQGV4YW1wbGUub3JnDQpTdWJqZWN0OiBiYWQNCk1JTUUtVmVyc2lvbjogMS4wDQpD"
        "b250ZW50LVR5cGVXU1ZKVlV5MVpSOiBtdWx0aXBhcnQvbWl4ZWQ7IGJvdW5kYXJ5PWINCg0KLS1i"
        "DQpDb250ZW50LVR5cGU6IHRleHQacGxhaW4NCgwKaGVsbG8NCi0tYg0KQ29udGVudC1UeXBlOiBh"
        "cHBsaWNhdGlvbi9vY3RldC1zdHJlYW0NCkNvbnRlbnQtVHJhbnNmZXItRW5jb2Rpbmc6IGJhc2U2"
        "NA0KDQpXRFZQSVZBbFFFRlFXelIAWGNVRnBZTlRRb1VGNHBOME5ES1QzNDF9DQpWUElWQWxRRUZR"
        "ZDlKRVZKUTBGU0xWTlVRVTVFUVZKRUxVRk9WRWxXU1ZKVlV5MVVSVk5VTFVaSlRFVWhKRWdyU0Nv"
        "PQ0KLS1iLS0NCg0KBgYCAQdhMiBPSw0K")


# -- ftp_control_fuzz: [mode] then text lines (mode 0) or the simulator (mode 1)
def ftp_control_seeds():
    yield "lines", (b"\0227 Entering Passive Mode (192,0,2,7,195,80).\n"
                    b"229 Extended (|||6446|)\nPORT 10,1,2,3,200,10\n"
                    b"EPRT |2|1080::8:800:200C:417A|5282|\nEPRT |1|132.235.1.2|6275|\n"
                    b"211-Features:\n EPSV\n211 End\n257 \"/a \"\"b\"\"\" created\n"
                    b"\xff\xf4\xff\xf2ABOR\nCWD ../x\n")
    yield "hostile-numbers", (b"\0227 (99999999999999999999,1,1,1,1,1)\n227 (256,0,0,1,4,1)\n"
                              b"229 (|||65536|)\nPORT 1,2,3,4,5,6,7\nEPRT |2|" + b"1" * 300
                              + b"|21|\n")
    login = (server(b"220 (vsFTPd 3.0.3)\r\n") + client(b"USER a\r\n") + server(b"331 pw\r\n")
             + client(b"PASS b\r\n") + server(b"230 ok\r\n"))
    yield "session", (b"\1\0" + login + client(b"PASV\r\n")
                      + server(b"227 Entering Passive Mode (10,0,1,1,200,1).\r\n")
                      + client(b"CWD /pub\r\n") + server(b"250 ok\r\n")
                      + client(b"REST 10\r\nRETR a\r\n") + server(b"350 ok\r\n150 go\r\n")
                      + server(b"226-done\r\n226 bye\r\n") + client(b"ABOR\r\n")
                      + server(b"226 ok\r\n") + client(b"AUTH TLS\r\n\x16\x03\x01")
                      + server(b"234 go\r\n"))
    yield "garbage", b"\1\0" + login + server(b"no reply\r\n") + end(True)


# -- capture_fuzz: pcap and pcapng files ------------------------------------------
def pcap_file(linktype, frames, magic=0xa1b2c3d4, snaplen=262144):
    out = struct.pack("<IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)
    for i, frame in enumerate(frames):
        out += struct.pack("<IIII", 1_700_000_000 + i, 0, len(frame), len(frame)) + frame
    return out


def pcapng_file(linktype, frames):
    def block(kind, body):
        body += b"\0" * (-len(body) % 4)
        return struct.pack("<II", kind, len(body) + 12) + body + struct.pack("<I", len(body) + 12)
    out = block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    out += block(1, struct.pack("<HHI", linktype, 0, 262144))
    for i, frame in enumerate(frames):
        out += block(6, struct.pack("<IIIII", 0, 0, i, len(frame), len(frame)) + frame)
    return out


def capture_seeds():
    syn = ipv4(6, tcp(flags=0x02))
    data = ipv4(6, tcp(payload=b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
    ether = b"\x02" * 12 + b"\x08\x00"
    vlan = b"\x02" * 12 + b"\x81\x00\x00\x07\x08\x00"
    sll = lambda pkttype: struct.pack(">HHH8sH", pkttype, 1, 6, b"", 0x0800)
    sll2 = lambda pkttype: struct.pack(">HHIHBB8s", 0x0800, 0, 3, 1, pkttype, 6, b"")
    yield "ethernet", pcap_file(1, [ether + syn, vlan + data])
    yield "sll", pcap_file(113, [sll(0) + syn, sll(4) + syn, sll(0) + data])
    yield "sll2", pcap_file(276, [sll2(0) + syn, sll2(4) + syn, sll2(0) + data])
    yield "raw", pcap_file(101, [syn, data])
    yield "big-endian", struct.pack(">IHHiIII", 0xa1b2c3d4, 2, 4, 0, 0, 65535, 1) + \
        struct.pack(">IIII", 1, 0, len(ether + syn), len(ether + syn)) + ether + syn
    yield "pcapng", pcapng_file(1, [ether + syn, ether + data])
    yield "cut-record", pcap_file(1, [ether + syn])[:-7]
    yield "bad-length", pcap_file(1, [])[:24] + struct.pack("<IIII", 1, 0, 0xFFFFFF, 40) + syn


def rspamd_reply_seeds():
    # [threshold byte][reply JSON]
    gtube = (b'{"is_skipped":false,"score":0.0,"required_score":15.0,"action":"reject",'
             b'"symbols":{"GTUBE":{"name":"GTUBE","score":0.0}},"messages":{}}')
    yield "gtube", b"\x00" + gtube
    yield "clean", b"\x28" + b'{"score":1.5,"action":"no action","symbols":{}}'
    yield "greylist", b"\x00" + b'{"score":4,"action":"greylist"}'
    yield "not-json", b"\x00<html>502</html>"


SEEDS = {
    "decode_fuzz": decode_seeds,
    "probe_fuzz": probe_seeds,
    "config_fuzz": config_seeds,
    "tcp_stream_fuzz": stream_seeds,
    "capture_fuzz": capture_seeds,
    "http_inspector_fuzz": http_seeds,
    "smtp_inspector_fuzz": smtp_seeds,
    "pop3_inspector_fuzz": pop3_seeds,
    "imap_inspector_fuzz": imap_seeds,
    "ftp_control_fuzz": ftp_control_seeds,
    "rspamd_reply_fuzz": rspamd_reply_seeds,
    "quarantine_meta_fuzz": quarantine_meta_seeds,
}


def main(argv):
    if len(argv) < 2 or argv[1] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if len(argv) >= 2 else 2
    out = Path(argv[1])
    targets = argv[2:] or list(SEEDS)
    for target in targets:
        if target not in SEEDS:
            print(f"make_corpus: unknown target {target}", file=sys.stderr)
            return 2
        folder = out / target
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in SEEDS[target]():
            (folder / f"seed-{name}").write_bytes(data)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

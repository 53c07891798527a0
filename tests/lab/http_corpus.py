"""Test content for HTTP antivirus, generated here (no binary blobs): each
infected object has a clean twin of the same size and kind, so a test can
run the same transfer both ways and only the verdict differs.

The EICAR string is assembled from two halves so that this file is not
itself an EICAR carrier. The ClamAV test files come from Debian's
clamav-testfiles (tools/setup installs it); the project's signature
NfqScan.Test.ClamAVTestFile (rules/clamav/nfqscan-test.ndb) knows clam.exe.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import random
import zipfile
from dataclasses import dataclass
from pathlib import Path

EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$" + b"EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
# What the shipped signatures call it: YARA's rule, ClamAV's .ndb signature.
EICAR_NAMES = {"NfqScan_Test_EICAR", "NfqScan.Test.EICAR.UNOFFICIAL"}
CLAM_TESTFILES = Path("/usr/share/clamav-testfiles")
CLAM_NAME = "NfqScan.Test.ClamAVTestFile.UNOFFICIAL"
BIG = 20 * 1024 * 1024


@dataclass(frozen=True)
class Sample:
    """One object of the corpus: `name` is the file name it is served under
    (the extension matters to nginx's types and to scan profiles)."""
    name: str
    data: bytes
    infected: bool
    detections: frozenset = frozenset()  # names a verdict may carry

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def zip_bytes(members, compression=zipfile.ZIP_STORED) -> bytes:
    """A zip of (name, data) members with fixed timestamps: the same input
    gives the same bytes, and stored members of equal sizes give zips of
    equal sizes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as z:
        for name, data in members:
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
            info.compress_type = compression
            z.writestr(info, data)
    return buf.getvalue()


def clean_text(size: int, seed: int = 1) -> bytes:
    """Readable lines of exactly `size` bytes."""
    rng = random.Random(seed)
    words = ("router", "packet", "window", "segment", "verdict", "object", "scan",
             "flow", "queue", "stream", "clean", "bytes", "header", "body")
    out = bytearray()
    while len(out) < size:
        out += (" ".join(rng.choice(words) for _ in range(10)) + "\n").encode()
    return bytes(out[:size])


def text_with(marker: bytes, size: int, seed: int = 1) -> bytes:
    """`size` bytes of text with `marker` on a line of its own in the middle."""
    head = clean_text(size // 2, seed)
    head = head[: head.rfind(b"\n") + 1]
    line = marker + b"\n"
    return head + line + clean_text(size - len(head) - len(line), seed + 1)


def random_with(marker: bytes, size: int, seed: int = 1) -> bytes:
    """`size` pseudo-random bytes with `marker` at the middle."""
    data = bytearray(random.Random(seed).randbytes(size))
    middle = size // 2
    data[middle:middle + len(marker)] = marker
    return bytes(data)


def _clean_like(data: bytes) -> bytes:
    """A harmless stand-in of the same size as the EICAR-sized `data`."""
    return clean_text(len(data), seed=len(data))


class Corpus:
    """Infected samples and their clean twins (same name stem, same size).

        corpus = Corpus()
        corpus.infected("eicar.com"), corpus.clean("eicar.com")
    """

    def __init__(self, big: int = BIG):
        self._infected: dict[str, Sample] = {}
        self._clean: dict[str, Sample] = {}
        eicar_names = frozenset(EICAR_NAMES)
        same_size = _clean_like(EICAR)
        self._add("eicar.com", EICAR, same_size, eicar_names)
        self._add("eicar.txt", text_with(EICAR, 64 * 1024), clean_text(64 * 1024, 2), eicar_names)
        # An HTML page: ClamAV skips its raw scan, YARA finds EICAR.
        html = (b"<!DOCTYPE html>\n<html><body><p>test page</p>\n<pre>%s</pre>\n</body></html>\n")
        self._add("eicar.html", html % EICAR, html % same_size, frozenset({"NfqScan_Test_EICAR"}))
        # Stored members of equal size: both zips have the same size.
        self._add("eicar.zip", zip_bytes([("eicar.com", EICAR)]),
                  zip_bytes([("eicar.com", same_size)]), eicar_names)
        # A file served with Content-Encoding: gzip (the decoded form is scanned).
        self._add("eicar.txt.gz", gzip.compress(self.infected("eicar.txt").data, mtime=0),
                  gzip.compress(self.clean("eicar.txt").data, mtime=0), eicar_names)
        # EICAR as the last bytes of a text: what a trickle must never give.
        tail = clean_text(64 * 1024 - len(EICAR), 3)
        self._add("eicar-end.txt", tail + EICAR, clean_text(64 * 1024, 4), eicar_names)
        self._add("eicar-big.bin", random_with(EICAR, big, seed=20), random_with(
            same_size, big, seed=20), eicar_names)
        clam = CLAM_TESTFILES / "clam.exe"
        if clam.exists():
            exe = clam.read_bytes()
            twin = random.Random(5).randbytes(len(exe))
            self._add("clam.exe", exe, twin, frozenset({CLAM_NAME}))
            self._add("clam.zip", (CLAM_TESTFILES / "clam.zip").read_bytes(), None,
                      frozenset({CLAM_NAME}))

    def _add(self, name: str, infected: bytes, clean: bytes | None, detections) -> None:
        self._infected[name] = Sample(name, infected, True, detections)
        if clean is not None:
            self._clean[name] = Sample(name, clean, False)

    def infected(self, name: str) -> Sample:
        return self._infected[name]

    def clean(self, name: str) -> Sample:
        """The clean twin; for clam.zip (no twin of the same size that
        still is a zip of a PE file) a zip of a random file of the same
        member size."""
        if name not in self._clean and name == "clam.zip":
            exe = self._clean["clam.exe"].data
            self._clean[name] = Sample(name, zip_bytes([("clam.exe", exe)],
                                                       zipfile.ZIP_DEFLATED), False)
        return self._clean[name]

    def names(self) -> list[str]:
        return list(self._infected)

    def has(self, name: str) -> bool:
        return name in self._infected


def multipart_form(fields: dict[str, str], files: list[tuple[str, str, bytes]],
                   boundary: str = "nfqscan-lab-boundary-7MA4YWxkTrZu0gW") -> tuple[bytes, str]:
    """A multipart/form-data body: text `fields` and (field, filename, data)
    `files`. Returns (body, content type)."""
    out = bytearray()
    for key, value in fields.items():
        out += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{key}\"\r\n\r\n"
                f"{value}\r\n").encode()
    for field, filename, data in files:
        out += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; "
                f"filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
                ).encode() + data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"

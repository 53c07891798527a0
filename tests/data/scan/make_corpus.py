#!/usr/bin/env python3
"""Writes the scan module's test corpus into a directory.

    make_corpus.py OUTDIR

Everything is generated here from the standard library (plus `zip -P` for the
password-protected archive, skipped when `zip` is missing), with fixed random
seeds, so the tests never depend on binary blobs. The EICAR string is
assembled from two halves so that this file itself is not an EICAR carrier.
"""

import gzip
import io
import os
import random
import shutil
import subprocess
import sys
import tempfile
import zipfile
from email.message import EmailMessage

EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$" + b"EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
POLICY_MARKER = b"NFQSCAN-TEST-POLICY-MARKER"
SPAM_MARKER = b"NFQSCAN-TEST-SPAM-MARKER"

FILLER = (
    b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod "
    b"tempor incididunt ut labore et dolore magna aliqua.\n"
)


def zip_bytes(members, method=zipfile.ZIP_DEFLATED):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as z:
        for name, data in members:
            z.writestr(name, data)
    return buf.getvalue()


def mail(subject, body, attachments=()):
    m = EmailMessage()
    m["From"] = "alice@example.org"
    m["To"] = "bob@example.net"
    m["Subject"] = subject
    m["Message-ID"] = "<%s@example.org>" % subject.replace(" ", "-")
    m.set_content(body)
    for name, data, maintype, subtype in attachments:
        # EmailMessage encodes binary attachments as base64.
        m.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return bytes(m)


def write(outdir, name, data):
    with open(os.path.join(outdir, name), "wb") as f:
        f.write(data)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    outdir = sys.argv[1]
    os.makedirs(outdir, exist_ok=True)
    rnd = random.Random(20240501)

    # --- EICAR in its usual disguises
    write(outdir, "eicar.com", EICAR)
    write(outdir, "eicar.zip", zip_bytes([("eicar.com", EICAR)]))
    write(outdir, "eicar.gz", gzip.compress(EICAR, mtime=0))
    write(outdir, "eicar-attachment.eml",
          mail("eicar attached", "See the attachment.\n",
               [("eicar.com", EICAR, "application", "octet-stream")]))
    write(outdir, "eicar.html",
          b"<!DOCTYPE html>\n<html><head><title>test</title></head><body>\n"
          b"<p>The test string:</p>\n<pre>" + EICAR + b"</pre>\n</body></html>\n")

    # --- clean objects
    write(outdir, "clean-random.bin", rnd.randbytes(3 << 20))
    write(outdir, "clean.txt", FILLER * 2000)
    write(outdir, "clean.zip", zip_bytes([
        ("docs/readme.txt", FILLER * 50),
        ("docs/notes.txt", b"Nothing to see here.\n" * 100),
        ("data.bin", rnd.randbytes(64 << 10)),
    ]))
    write(outdir, "clean.eml",
          mail("quarterly figures", "Figures attached.\n",
               [("figures.csv", b"quarter,revenue\nQ1,100\nQ2,120\n", "text", "csv")]))

    # --- YARA markers below encodings and archives: the marker never appears
    # in the raw bytes of the object, only in an unpacked layer.
    notes = FILLER * 40 + POLICY_MARKER + b"\n" + FILLER * 40
    write(outdir, "marker-mail-in-zip.zip", zip_bytes([
        ("message.eml", mail("notes", "Notes attached.\n",
                             [("notes.txt", notes, "application", "octet-stream")])),
    ]))
    write(outdir, "marker-zip-in-mail.eml",
          mail("bundle", "Bundle attached.\n",
               [("bundle.zip", zip_bytes([("notes.txt", notes)]), "application", "zip")]))
    write(outdir, "spam.txt", FILLER * 10 + SPAM_MARKER + b"\n")
    # Spam text in the body, a virus in an attachment: the virus must win.
    write(outdir, "spam-and-virus.eml",
          mail("offer", "Buy now! " + SPAM_MARKER.decode() + "\n",
               [("invoice.zip", zip_bytes([("invoice.com", EICAR)]), "application", "zip")]))

    # --- limits
    deep = FILLER * 10
    for level in range(8):
        deep = zip_bytes([("level%d.zip" % level if level else "a.txt", deep)])
    write(outdir, "deep.zip", deep)
    write(outdir, "bomb.zip", zip_bytes([("zeros.bin", bytes(20 << 20))]))
    write(outdir, "eicar-and-bomb.zip",
          zip_bytes([("zeros.bin", bytes(20 << 20)), ("eicar.com", EICAR)]))
    write(outdir, "many-files.zip",
          zip_bytes([("f%03d.txt" % i, FILLER + str(i).encode()) for i in range(80)]))
    write(outdir, "slow.zip",
          zip_bytes([("r%d.bin" % i, rnd.randbytes(1 << 20)) for i in range(6)],
                    method=zipfile.ZIP_STORED))
    clean_zip = zip_bytes([("a.txt", FILLER * 200), ("b.txt", FILLER * 300)])
    write(outdir, "truncated.zip", clean_zip[: len(clean_zip) // 2])
    broken = bytearray(clean_zip)
    eocd = broken.rfind(b"PK\x05\x06")
    broken[eocd + 16:eocd + 20] = (len(broken) + 1000).to_bytes(4, "little")
    write(outdir, "broken-directory.zip", bytes(broken))

    zip_tool = shutil.which("zip")
    if zip_tool:
        with tempfile.TemporaryDirectory() as tmp:
            with open(os.path.join(tmp, "secret.txt"), "wb") as f:
                f.write(FILLER * 20)
            target = os.path.abspath(os.path.join(outdir, "encrypted.zip"))
            if os.path.exists(target):
                os.unlink(target)
            subprocess.run([zip_tool, "-q", "-P", "secret", target, "secret.txt"], cwd=tmp,
                           check=True)


if __name__ == "__main__":
    main()

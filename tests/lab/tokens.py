"""Content for the stream engine's test inspector ([test_rewrite]): text full
of the tokens it replaces, and what a receiver must get after the rewrite.

The rewrite is every "GROW" -> "GROWN-LONGER-TOKEN" (a segment grows) and
every "SHRINKME" -> "S" (it shrinks), leftmost first, never overlapping, on
the bytes the server sent (a replacement is not itself searched again)."""

from __future__ import annotations

import functools
import hashlib
import random

REPLACE = [("GROW", "GROWN-LONGER-TOKEN"), ("SHRINKME", "S")]


def rewrite_config(ports) -> dict:
    """nfqscand's configuration for it: {"test_rewrite": rewrite_config([80])}."""
    return {"test_rewrite": {"ports": list(ports),
                             "replace": [list(pair) for pair in REPLACE]}}


def rewrite(data: bytes) -> bytes:
    """The expected rewritten stream. The two tokens cannot overlap (no
    suffix of one is a prefix of the other), so replacing them one after the
    other is the same as one leftmost-first pass; the placeholder keeps the
    "GROW" inside the replacement of GROW from being seen again."""
    assert b"\0" not in data
    return (data.replace(b"GROW", b"\0").replace(b"SHRINKME", b"S")
            .replace(b"\0", b"GROWN-LONGER-TOKEN"))


# Pieces that almost match, or match in an awkward place: a token's prefix
# that does not complete, a token right after its own partial prefix, tokens
# back to back, a shrunk "S" followed by the rest of a SHRINKME (which must
# not be matched again in the output).
NEAR_MISSES = ["GRO", "GR", "G", "SHRINK", "SHRINKM", "SHRIN", "S", "GROGROW", "GGROW",
               "SSHRINKME", "SHRINKMESHRINKME", "GROWGROW", "SHRINKMGROW", "GROWSHRINKME",
               "SHRINKMEHRINKME", "GROWN", "SHRINKMSHRINKME"]


@functools.lru_cache(maxsize=2)
def token_text(size: int, seed: int = 1) -> bytes:
    """`size` bytes of lowercase filler and spaces with about 5% of the
    pieces "GROW", 5% "SHRINKME" and 2% near misses, so that tokens lie
    across every kind of segment boundary. Ends in a newline (never in a
    token's proper prefix, which the inspector would rightly hold back until
    the stream says what follows). Contains no "<!--" (served through SSI)."""
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"  # the tokens are upper case
    fillers = ["".join(rng.choice(letters + "  ") for _ in range(rng.randint(1, 64)))
               + ("\n" if rng.random() < 0.1 else "") for _ in range(4096)]
    population = ["GROW", "SHRINKME", *NEAR_MISSES, *fillers]
    weights = [5.0, 5.0, *([2.0 / len(NEAR_MISSES)] * len(NEAR_MISSES)),
               *([88.0 / len(fillers)] * len(fillers))]
    parts, total = [], 0
    while total < size:
        chunk = "".join(rng.choices(population, weights, k=65536))
        parts.append(chunk)
        total += len(chunk)
    data = "".join(parts)[:size - 1].encode() + b"\n"
    assert len(data) == size and b"<!--" not in data
    return data


@functools.lru_cache(maxsize=2)
def token_digests(size: int, seed: int = 1) -> tuple[str, str]:
    """(sha256 of token_text, sha256 of its rewrite)."""
    data = token_text(size, seed)
    return hashlib.sha256(data).hexdigest(), hashlib.sha256(rewrite(data)).hexdigest()

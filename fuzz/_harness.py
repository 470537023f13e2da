"""What every fuzz target shares: a byte reader that never fails, the atheris entry point (with
a plain random-mutation loop when atheris is missing), the corpus on disk, and a small mutator
for the bounded smoke runs.

A target signals a finding by raising anything other than the errors it is documented to
raise: atheris then stores the input as a crash file.  Invariants (state unchanged by a drop, a
valid packet accepted after it) are plain `assert`s so the crash names what broke.
"""
from __future__ import annotations

import os
import random
import sys
from pathlib import Path
from typing import Callable, Iterable

CORPUS_DIR = Path(__file__).resolve().parent / "corpus"


class Reader:
    """Pulls numbers and byte strings off fuzz input; past the end it yields zeros / empty bytes,
    so every input maps to some test case (atheris' FuzzedDataProvider does the same)."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def int(self, nbytes: int = 1) -> int:
        chunk = self.data[self.pos:self.pos + nbytes]
        self.pos += nbytes
        return int.from_bytes(chunk, "big") if chunk else 0

    def pick(self, seq):
        return seq[self.int(2 if len(seq) > 255 else 1) % len(seq)]

    def bytes(self, n: int) -> bytes:
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def rest(self) -> bytes:
        out = self.data[self.pos:]
        self.pos = len(self.data)
        return out

    def left(self) -> int:
        return max(0, len(self.data) - self.pos)


def corpus(target: str) -> list[bytes]:
    folder = CORPUS_DIR / target
    if not folder.is_dir():
        return []
    return [p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()]


def write_corpus(target: str, seeds: Iterable[bytes]) -> int:
    """Store seeds as fuzz/corpus/<target>/seed-NNN (used by fuzz/make_corpus.py)."""
    folder = CORPUS_DIR / target
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("seed-*"):
        old.unlink()
    n = 0
    for n, seed in enumerate(seeds, 1):
        (folder / f"seed-{n:03d}").write_bytes(seed)
    return n


def mutate(data: bytes, rng: random.Random) -> bytes:
    """A few libFuzzer-style edits: flip bits, set interesting bytes, insert, erase, splice."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(7)
        if op == 0 and buf:
            i = rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)
        elif op == 1 and buf:
            buf[rng.randrange(len(buf))] = rng.choice((0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)))
        elif op == 2:
            i = rng.randint(0, len(buf))
            buf[i:i] = rng.randbytes(rng.randint(1, 8))
        elif op == 3 and buf:
            i = rng.randrange(len(buf))
            del buf[i:i + rng.randint(1, 8)]
        elif op == 4 and len(buf) > 1:
            del buf[rng.randrange(1, len(buf)):]
        elif op == 5 and len(buf) >= 2:
            i = rng.randrange(len(buf) - 1)
            buf[i:i + 2] = rng.choice((b"\0\0", b"\xff\xff", b"\x80\x00", b"\x00\x01"))
        elif op == 6 and len(buf) >= 4:
            i, j = sorted(rng.sample(range(len(buf)), 2))
            buf[i:j] = buf[i:j][::-1]
    return bytes(buf)


def smoke(target: str, test_one_input: Callable[[bytes], None], *, mutations: int,
          seed: int = 0) -> int:
    """Every corpus entry, then `mutations` mutants of corpus entries; returns inputs run."""
    seeds = corpus(target) or [b""]
    rng = random.Random(seed)
    for data in seeds:
        test_one_input(data)
    for _ in range(mutations):
        test_one_input(mutate(rng.choice(seeds), rng))
    return len(seeds) + mutations


def main(target: str, test_one_input: Callable[[bytes], None]) -> None:
    """`python3 -m fuzz.<target> [atheris/libFuzzer options] [CORPUS_DIR ...]`.

    Without atheris (`pip install atheris`), `--runs N` runs N random mutants of the checked-in
    corpus and stops at the first finding."""
    try:
        import atheris
    except ImportError:
        runs = 100_000
        if "--runs" in sys.argv:
            runs = int(sys.argv[sys.argv.index("--runs") + 1])
        print(f"atheris is not installed: {runs} random mutants of fuzz/corpus/{target}")
        n = smoke(target, test_one_input, mutations=runs, seed=int.from_bytes(os.urandom(4), "big"))
        print(f"{n} inputs, no finding")
        return
    count = 0

    def counted(data: bytes) -> None:
        nonlocal count
        count += 1
        try:
            test_one_input(data)
        except BaseException:
            print(f"\nfinding at input {count} of this process", file=sys.stderr)
            raise

    atheris.instrument_all()
    atheris.Setup(sys.argv, counted)
    atheris.Fuzz()

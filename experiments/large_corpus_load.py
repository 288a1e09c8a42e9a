"""Load time and peak memory of `data.load` on a corpus of WikiText-103's size.

    python experiments/large_corpus_load.py [--dir=DIR] [--tokens=103227021]

Writes a synthetic training file with WikiText-103's token count (103,227,021 with one
<eos> per line), line count and vocabulary size (267,735 words, Zipf-distributed), plus
small valid/test files, into --dir (kept for reruns), then loads it twice with
`--config.data.name=dir` semantics, each time in a fresh process, and prints the wall time
and that process's peak resident memory: first from the text (which also writes the ids
cache), then from the cache.
"""

import argparse
import json
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

VOCAB = 267_735
LINES = 1_801_350  # WikiText-103's training lines (blank ones included)

LOADER = """
import json, resource, sys, time
import ml_collections
from lstm_lm import data
start = time.perf_counter()
config = ml_collections.ConfigDict(dict(name="dir", data_dir=sys.argv[1], train_file="",
    valid_file="", test_file="", url="", min_count=1, max_vocab_size=0))
corpus = data.load(config)
print(json.dumps(dict(seconds=round(time.perf_counter() - start, 1),
    train_tokens=len(corpus.train), vocab=len(corpus.vocab),
    peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))))
"""


def words(rng: np.random.Generator) -> np.ndarray:
    """VOCAB distinct lowercase words of 2-9 letters in rank order: the 1,000 most frequent
    ranks get the shortest words, as function words are, the rest random ones, so that
    the text has about WikiText-103's 5.2 bytes per token (539 MB)."""
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    made = set()
    while len(made) < VOCAB:
        for n in rng.integers(2, 10, VOCAB):
            made.add("".join(rng.choice(letters, n)))
    by_length = sorted(made, key=lambda w: (len(w), w))[:VOCAB]
    rest = list(rng.permutation(by_length[1000:]))
    return np.array(by_length[:1000] + rest, dtype=object)


def write_corpus(directory: pathlib.Path, tokens: int) -> None:
    rng = np.random.default_rng(0)
    vocab = words(rng)
    p = 1.0 / np.arange(1, VOCAB + 1)  # Zipf
    p /= p.sum()
    per_line = tokens // LINES - 1  # words per line besides <eos>
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "train.txt", "w") as f:
        written = 0
        while written < tokens:
            n = min(10_000, (tokens - written) // (per_line + 1) or 1)
            ids = rng.choice(VOCAB, (n, per_line), p=p)
            lines = [" ".join(row) for row in vocab[ids]]
            f.write("\n".join(lines) + "\n")
            written += n * (per_line + 1)
    for name in ("valid.txt", "test.txt"):
        ids = rng.choice(VOCAB, (4000, per_line), p=p)
        (directory / name).write_text("\n".join(" ".join(r) for r in vocab[ids]) + "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", default=str(pathlib.Path(tempfile.gettempdir()) / "wt103_sized"))
    parser.add_argument("--tokens", type=int, default=103_227_021)
    args = parser.parse_args()
    directory = pathlib.Path(args.dir)
    if not (directory / "train.txt").is_file():
        start = time.perf_counter()
        write_corpus(directory, args.tokens)
        print(f"wrote {directory} in {time.perf_counter() - start:.0f} s", flush=True)
    shutil.rmtree(directory / ".lstm_lm_ids", ignore_errors=True)
    size_mb = (directory / "train.txt").stat().st_size / 1e6
    for source in ("text", "cache"):
        out = subprocess.run(
            [sys.executable, "-c", LOADER, str(directory)],
            capture_output=True,
            text=True,
            check=True,
        )
        print(json.dumps(dict(json.loads(out.stdout), source=source, train_mb=round(size_mb))))


if __name__ == "__main__":
    main()

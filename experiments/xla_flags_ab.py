"""XLA CPU options against the defaults, for our training and evaluation throughput.

    python experiments/xla_flags_ab.py --shape=medium \\
        --flags="--xla_cpu_prefer_vector_width=512" --flags="--xla_cpu_use_onednn=true"

Each variant (the defaults first, then each `--flags`) is a `benchmark.py` worker of our
side in a process of its own with that `XLA_FLAGS`, all alive at once; in each round
they take turns, one timed window each, train then eval, the order rotating from round
to round. Printed: each variant's median words/s and the median over rounds of its ratio
to the defaults' window of the same round (this machine's speed drifts over minutes;
neighbouring windows compare more fairly than medians).
"""

import argparse
import os
import sys

import benchmark
import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="medium", choices=sorted(benchmark.SHAPES))
    parser.add_argument("--flags", action="append", default=[], help="XLA_FLAGS of a variant")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--batches", type=int, default=0, help="per window; 0 = by shape")
    args = parser.parse_args()
    variants = ["", *args.flags]
    batches = args.batches or benchmark.BATCHES[args.shape]
    cmd = [
        sys.executable,
        benchmark.__file__,
        "--worker=ours",
        f"--shapes={args.shape}",
        f"--batches={batches}",
    ]
    workers = {  # one warms up at a time
        v: benchmark.Worker(cmd, env={**os.environ, "XLA_FLAGS": flags})
        for v, flags in enumerate(variants)
    }
    rates = benchmark.take_turns(workers, args.rounds)
    for w in workers.values():
        w.close()
    print(
        f"{args.shape}, {args.rounds} rounds of {batches}-batch windows; ratio = median over "
        "rounds of variant / defaults"
    )
    print("| XLA_FLAGS | train words/s | train ratio | eval words/s | eval ratio |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for v, flags in enumerate(variants):
        cells = []
        for mode in ("train", "eval"):
            ratio = np.median(np.divide(rates[v, mode], rates[0, mode]))
            cells += [f"{np.median(rates[v, mode]):,.0f}", f"{ratio:.3f}"]
        print(f"| {flags or '(defaults)'} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

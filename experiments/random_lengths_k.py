"""Training words/s of AWD's random BPTT lengths at K batches per jitted call, against
TF's fixed length, on ptb_small_regularized's model (2x300 tied, every regulariser).

    python experiments/random_lengths_k.py [--ks=1,4,10] [--batches=40] [--rounds=3]

A call of K > 1 random-length batches pads them to the longest bucket and trains each at
its own bucket's length (train.train_chunk's switch), so its numbers are K = 1's to the
bit, with fewer host round trips and one compilation. Each variant trains
the same `--batches` batches of one epoch layout (the trainer's Epoch, chunk_bounds and
jitted train_chunk) per round after a compiling round; medians of the rounds.
"""

import argparse
import pathlib
import sys
import time

import jax
import numpy as np

from lstm_lm import config as config_lib
from lstm_lm import model, parallel, train

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # configs/
from configs import ptb_small_regularized  # noqa: E402

VOCAB = 10_000


def variant(random: bool, k: int, num_batches: int):
    """(a function that trains the batches once and returns the seconds, words)."""
    config = ptb_small_regularized.get_config()
    config.train.update(random_lengths=random, steps_per_call=k)
    cfg = config_lib.model_config(config, VOCAB)
    mesh = parallel.make_mesh(1)
    state, _, train_fn, _ = train.create_training(config, cfg, 10**6, mesh)
    stream = np.random.default_rng(0).integers(0, VOCAB, (config.train.batch_size, 200_000))
    layout = train.epoch_layout(stream.astype(np.int32), config, epoch=1)
    bounds = train.chunk_bounds(0, num_batches, k)
    holder = [state, parallel.put_carry(model.zero_carry(cfg, config.train.batch_size), mesh)]

    def run():
        start = time.perf_counter()
        for lo, hi in bounds:
            batches = layout.batches(lo, hi)
            args = [a for a in batches if a is not None]
            holder[0], holder[1], metrics, _ = train_fn(*holder, *args)
            jax.block_until_ready(metrics)
        return time.perf_counter() - start, layout.steps(num_batches) * config.train.batch_size

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ks", default="1,4,10")
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"JAX {jax.__version__} on {jax.devices()}")
    ks = [int(k) for k in args.ks.split(",")]
    runs = {"fixed, K=10": variant(False, 10, args.batches)}
    runs |= {f"random, K={k}": variant(True, k, args.batches) for k in ks}
    rates = {name: [] for name in runs}
    for r in range(args.rounds + 1):  # round 0 compiles every bucket it meets
        for name, run in runs.items():
            seconds, words = run()
            if r:
                rates[name].append(words / seconds)
    base = np.median(rates["fixed, K=10"])
    for name, rate in rates.items():
        print(f"{name:14} {np.median(rate):8.0f} words/s  x{np.median(rate) / base:.2f}")


if __name__ == "__main__":
    main()

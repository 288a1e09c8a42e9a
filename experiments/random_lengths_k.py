"""Training words/s of AWD's random BPTT lengths at K batches per jitted call, against
TF's fixed length, on ptb_small_regularized's model (2x300 tied, every regulariser); or,
with --bitwise=CONFIG, whether K batches a call give every bit of one batch a call at a
config's own shapes.

    python experiments/random_lengths_k.py [--ks=1,4,10] [--batches=40] [--rounds=3]
    python experiments/random_lengths_k.py --bitwise=awd_lstm_ptb --ks=1,4 --batches=8

A call of K > 1 random-length batches pads them to the longest bucket and trains each at
its own bucket's length (train.train_chunk's switch), so its numbers are K = 1's to the
bit, with fewer host round trips and one compilation. Each variant trains the same
`--batches` batches of one epoch layout (the trainer's Epoch, chunk_bounds and jitted
train_chunk) on random ids; speed: per round after a compiling round, medians of the
rounds.
"""

import argparse
import importlib
import pathlib
import sys
import time

import jax
import numpy as np

from lstm_lm import config as config_lib
from lstm_lm import model, parallel, train

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # configs/

VOCAB = 10_000


def variant(config_name: str, random: bool, k: int, num_batches: int):
    """(a function that trains the batches once and returns (seconds, words, costs), the
    state and carry holder)."""
    config = importlib.import_module(f"configs.{config_name}").get_config()
    config.train.update(random_lengths=random, steps_per_call=k)
    cfg = config_lib.model_config(config, VOCAB)
    mesh = parallel.make_mesh(1)
    state, _, train_fn, _ = train.create_training(config, cfg, 10**6, mesh)
    stream = np.random.default_rng(0).integers(0, VOCAB, (config.train.batch_size, 200_000))
    layout = train.epoch_layout(stream.astype(np.int32), config, epoch=1)
    bounds = train.chunk_bounds(0, num_batches, k)
    carry = parallel.put_carry(model.zero_carry(cfg, config.train.batch_size), mesh)
    holder = [state, carry]

    def run():
        start, costs = time.perf_counter(), []
        for lo, hi in bounds:
            args = [a for a in layout.batches(lo, hi) if a is not None]
            holder[0], holder[1], metrics, _ = train_fn(*holder, *args)
            costs.append(np.asarray(metrics["cross_entropy"])[: hi - lo])
        words = layout.steps(num_batches) * config.train.batch_size
        return time.perf_counter() - start, words, np.concatenate(costs)

    return run, holder


def speed(ks: list[int], num_batches: int, rounds: int) -> None:
    name = "ptb_small_regularized"
    runs = {"fixed, K=10": variant(name, False, 10, num_batches)[0]}
    runs |= {f"random, K={k}": variant(name, True, k, num_batches)[0] for k in ks}
    rates = {name: [] for name in runs}
    for r in range(rounds + 1):  # round 0 compiles every bucket it meets
        for name, run in runs.items():
            seconds, words, _ = run()
            if r:
                rates[name].append(words / seconds)
    base = np.median(rates["fixed, K=10"])
    for name, rate in rates.items():
        print(f"{name:14} {np.median(rate):8.0f} words/s  x{np.median(rate) / base:.2f}")


def bitwise(config_name: str, ks: list[int], num_batches: int) -> None:
    """Trains the batches once per K from the same start and compares every leaf of the
    state and carry and every batch's cost with the first K's."""
    leaves = {}
    for k in ks:
        run, holder = variant(config_name, True, k, num_batches)
        seconds, _, costs = run()  # compilation included
        print(f"K={k}: costs {costs.tolist()} in {seconds:.1f} s with compilation")
        leaves[k] = [*jax.tree.leaves(holder), costs]
    for k in ks[1:]:
        same = all(np.array_equal(a, b) for a, b in zip(leaves[ks[0]], leaves[k]))
        print(f"K={k} against K={ks[0]}: {'bitwise the same' if same else 'DIFFERENT'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ks", default="1,4,10")
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bitwise", default="", help="a config in configs/ to check instead")
    args = parser.parse_args()
    print(f"JAX {jax.__version__} on {jax.devices()}")
    ks = [int(k) for k in args.ks.split(",")]
    if args.bitwise:
        bitwise(args.bitwise, ks, args.batches)
    else:
        speed(ks, args.batches, args.rounds)


if __name__ == "__main__":
    main()

"""Training words/s with the batch's rows split across 1, 2, 4, ... devices.

    python experiments/scaling.py [--devices=1,2,4] [--shape=small] [--batch_size=20]

It runs lstm_lm's own jitted training step (`train.create_training`) on a mesh of each
size, in alternating timed windows after a warm-up, and prints median words/s, the ratio
to one device, and the bytes of the gradient all-reduce that each step adds.

On a machine with one CPU and no accelerator, the devices are simulated
(XLA_FLAGS=--xla_force_host_platform_device_count=N, set here before JAX starts): they
share the same cores, so the figures show what splitting costs, not a speed-up.
"""

import argparse
import json
import os
import sys
import time

SHAPES = {"small": (200, 20), "medium": (650, 35), "large": (1500, 35)}  # hidden, steps
VOCAB, LAYERS = 10_000, 2


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", default="1,2,4")
    parser.add_argument("--shape", default="small", choices=SHAPES)
    parser.add_argument("--batch_size", type=int, default=20)
    parser.add_argument("--batches", type=int, default=20, help="per timed window")
    parser.add_argument("--windows", type=int, default=5)
    return parser.parse_args()


def num_params(hidden: int) -> int:
    lstm = LAYERS * (2 * hidden * 4 * hidden + 4 * hidden)
    return VOCAB * hidden + lstm + hidden * VOCAB + VOCAB


def main() -> None:
    args = parse_args()
    counts = [int(n) for n in args.devices.split(",")]
    if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
        flag = f"--xla_force_host_platform_device_count={max(counts)}"
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flag}".strip()
    import jax
    import numpy as np

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
    from lstm_lm import config as config_lib
    from lstm_lm import model, parallel, train

    hidden, num_steps = SHAPES[args.shape]
    config = config_lib.default_config()
    config.model.hidden_size = hidden
    config.train.update(num_steps=num_steps, batch_size=args.batch_size)
    cfg = config_lib.model_config(config, VOCAB)
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, VOCAB, (args.batches, args.batch_size, num_steps + 1))
    inputs, targets = tokens[..., :-1].astype(np.int32), tokens[..., 1:].astype(np.int32)

    runners = {}
    for n in counts:
        mesh = parallel.make_mesh(n)
        state, _, train_fn, _ = train.create_training(config, cfg, 10**6, mesh)
        carry = parallel.put_carry(model.zero_carry(cfg, args.batch_size), mesh)
        batches = parallel.put_rows(inputs, mesh), parallel.put_rows(targets, mesh)
        runners[n] = [train_fn, state, carry, batches]

    def window(n: int) -> float:
        train_fn, state, carry, batches = runners[n]
        start = time.perf_counter()
        state, carry, metrics_N, _ = train_fn(state, carry, *batches)
        metrics_N["cross_entropy"].block_until_ready()
        runners[n][1:3] = state, carry
        return inputs.size / (time.perf_counter() - start)

    for n in counts:
        window(n)  # warm-up: compile, allocate
    rates = {n: [] for n in counts}
    for _ in range(args.windows):
        for n in counts:
            rates[n].append(window(n))

    platform = jax.devices()[0].platform
    grad_bytes = 4 * num_params(hidden)
    print(f"JAX {jax.__version__}, {len(jax.devices())} {platform} devices")
    print(f"shape {args.shape}, batch {args.batch_size}, gradient all-reduce {grad_bytes:,} bytes")
    print("devices  rows/device  train w/s  vs 1 device")
    medians = {n: float(np.median(r)) for n, r in rates.items()}
    for n in counts:
        rows = args.batch_size // n
        print(f"{n:7d}  {rows:11d}  {medians[n]:9.0f}  {medians[n] / medians[counts[0]]:11.2f}")
    out = dict(
        platform=platform,
        shape=args.shape,
        batch_size=args.batch_size,
        grad_bytes=grad_bytes,
        words_per_sec=medians,
    )
    print(json.dumps(out))


if __name__ == "__main__":
    main()

"""Time per training batch of ptb_small_mogrifier's model, its loop written several ways,
against ptb_small_regularized's LSTM, in one process.

    python experiments/mogrifier_ab.py [--rounds=4] [--batches=10]

- "lstm": ptb_small_regularized (the LSTM's fast path: input matmul hoisted, gradient
  written out);
- "mogrifier": ptb_small_mogrifier as lstm_lm runs it (`cells.cell_scan`: the gates as
  concat([x, h]) @ concat([w_x, w_h]) at every step, autodiff);
- "mogrifier, two gate matmuls": x @ w_x + h @ w_h at every step instead;
- "mogrifier, unroll 2": two steps per loop iteration;
- "mogrifier, full rank": rank 0, for the cost of the factorisation's saving.

Each variant is the trainer's jitted train_chunk (train.create_training) over the same
random batches (V = 10,000, batch 20, 35 steps), with the variant swapped in for
`cells.cell_scan` while it compiles. In each round every variant runs 2 consecutive
calls, the second timed; medians of the rounds are printed, with the ratio to "lstm".
"""

import argparse
import importlib
import pathlib
import sys
import time

import jax
import numpy as np

from lstm_lm import cells, model, parallel, train
from lstm_lm import config as config_lib

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # configs/
CELL_SCAN = cells.cell_scan
VOCAB, BATCH = 10_000, 20


def two_gate_matmuls(layer, carry, x_TxBxI, real_T, forget_bias, cap_input_gate=False, unroll=1):
    """cells.cell_scan with the gates as two matmuls, of x and of h."""
    assert real_T is None

    def step(carry, x_BxI):
        c_BxH, h_BxH = carry
        x_BxI, h_BxH = cells.mogrify(layer["mogrifier"], x_BxI, h_BxH)
        gates_Bx4H = x_BxI @ layer["w_x"] + h_BxH @ layer["w_h"] + layer["b"]
        carry = cells.lstm_update(c_BxH, gates_Bx4H, forget_bias, cap_input_gate)[0]
        return carry, carry[1]

    return jax.lax.scan(step, carry, x_TxBxI, unroll=unroll)


def unroll_2(layer, carry, x_TxBxI, real_T, forget_bias, cap_input_gate=False, unroll=1):
    return CELL_SCAN(layer, carry, x_TxBxI, real_T, forget_bias, cap_input_gate, unroll=2)


def build(config_name: str, scan_fn=CELL_SCAN, **model_overrides):
    """(jitted train_chunk, state, carry) for a config, compiled with `scan_fn`."""
    config = importlib.import_module(f"configs.{config_name}").get_config()
    config.model.update(model_overrides)
    cfg = config_lib.model_config(config, VOCAB)
    mesh = parallel.make_mesh(1)
    state, _, train_fn, _ = train.create_training(config, cfg, 10**6, mesh)
    carry = parallel.put_carry(model.zero_carry(cfg, BATCH), mesh)
    return [train_fn, state, carry, scan_fn]


VARIANTS = {
    "lstm": ("ptb_small_regularized", CELL_SCAN, {}),
    "mogrifier": ("ptb_small_mogrifier", CELL_SCAN, {}),
    "mogrifier, two gate matmuls": ("ptb_small_mogrifier", two_gate_matmuls, {}),
    "mogrifier, unroll 2": ("ptb_small_mogrifier", unroll_2, {}),
    "mogrifier, full rank": ("ptb_small_mogrifier", CELL_SCAN, {"mogrifier_rank": 0}),
}


def time_variants(names: list[str], rounds: int, batches: int) -> dict[str, float]:
    """Median ms per training batch of each of VARIANTS' `names`, interleaved by round."""
    tokens = np.random.default_rng(0).integers(0, VOCAB, (batches, BATCH, 36))
    inputs = (tokens[..., :-1].astype(np.int32), tokens[..., 1:].astype(np.int32))
    runs = {
        name: build(VARIANTS[name][0], VARIANTS[name][1], **VARIANTS[name][2]) for name in names
    }
    times = {name: [] for name in runs}
    for r in range(rounds + 1):  # round 0 compiles
        for name, run in runs.items():
            train_fn, state, carry, scan_fn = run
            cells.cell_scan = scan_fn
            try:
                for call in range(2):
                    start = time.perf_counter()
                    state, carry, metrics, _ = train_fn(state, carry, *inputs)
                    jax.block_until_ready(metrics)
                    if call and r:
                        times[name].append(1e3 * (time.perf_counter() - start) / batches)
            finally:
                cells.cell_scan = CELL_SCAN
            run[1:3] = state, carry
    for name, (train_fn, *_) in runs.items():
        assert train_fn._cache_size() == 1, name  # nothing compiled again
    return {name: float(np.median(t)) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--batches", type=int, default=10)
    args = parser.parse_args()
    print(f"JAX {jax.__version__} on {jax.devices()}")
    ms = time_variants(list(VARIANTS), args.rounds, args.batches)
    for name, t in ms.items():
        print(f"{name:28} {t:8.1f} ms/batch  x{t / ms['lstm']:.2f}")


if __name__ == "__main__":
    main()

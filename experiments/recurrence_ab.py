"""Time per batch of the LSTM's loop over time, written four ways, in one process.

    python experiments/recurrence_ab.py [--shapes=small,medium] [--rounds=4]

- "vjp": lstm_lm as it is: `cells.recurrence`, whose backward pass is written out
  (gate gradients in the loop, dL/dw_h as one matmul after it);
- "autodiff": the same loop as a plain `lax.scan` of `cells.lstm_cell`, differentiated
  by JAX (dL/dw_h summed step by step inside the backward loop), as before;
- "vjp unrolled" / "autodiff unrolled": the same with all time steps unrolled.

Training runs the trainer's jitted `train_chunk` (benchmark.Ours) with each variant
swapped in for `model.lstm_layer` while it compiles; evaluation runs `eval_pass`, whose
loop is unrolled as lstm_lm evaluates (`evaluation.EVAL_UNROLL`) or not. In each round
every variant runs 3 consecutive calls, of which the last 2 are timed; medians of all
rounds are printed.
"""

import argparse
import time

import benchmark
import jax
import numpy as np

from lstm_lm import cells, evaluation, model

LSTM_LAYER, EVAL_UNROLL = model.lstm_layer, evaluation.EVAL_UNROLL


def autodiff_layer(layer, carry, x_TxBxH, forget_bias, length=None, unroll=1):
    """model.lstm_layer's loop left to JAX's autodiff (no padding: the benchmark's
    batches have none)."""
    assert length is None
    xw_TxBx4H = x_TxBxH @ layer["w_x"] + layer["b"]

    def step(carry, xw_Bx4H):
        carry = cells.lstm_cell(layer["w_h"], carry, xw_Bx4H, forget_bias)
        return carry, carry[1]

    return jax.lax.scan(step, carry, xw_TxBx4H, unroll=unroll)


def unrolled(layer_fn):
    def layer(layer, carry, x_TxBxH, forget_bias, length=None, unroll=1):
        return layer_fn(layer, carry, x_TxBxH, forget_bias, length, unroll=True)

    return layer


TRAIN_VARIANTS = {
    "vjp": LSTM_LAYER,
    "autodiff": autodiff_layer,
    "vjp unrolled": unrolled(LSTM_LAYER),
    "autodiff unrolled": unrolled(autodiff_layer),
}
EVAL_VARIANTS = {"unrolled (as lstm_lm)": EVAL_UNROLL, "not unrolled": 1}


def runner(shape: str, batches: int, layer_fn=LSTM_LAYER, eval_unroll=EVAL_UNROLL):
    """A benchmark.Ours whose train and eval functions are compiled, for chunks of
    `batches`, with `layer_fn` and `eval_unroll` in place (another chunk size would
    compile them again, without)."""
    hidden, num_steps, max_grad_norm = benchmark.SHAPES[shape]
    ours = benchmark.Ours(hidden, num_steps, max_grad_norm)
    inputs, targets = benchmark.random_batches(batches, num_steps)
    model.lstm_layer, evaluation.EVAL_UNROLL = layer_fn, eval_unroll
    try:  # the first calls trace and compile
        ours.train(inputs, targets)
        ours.evaluate(inputs, targets)
    finally:
        model.lstm_layer, evaluation.EVAL_UNROLL = LSTM_LAYER, EVAL_UNROLL
    return ours


def ms_per_batch(runners: dict, mode: str, rounds: int, batches: int, shape: str) -> dict:
    inputs, targets = benchmark.random_batches(batches, benchmark.SHAPES[shape][1])
    times = {name: [] for name in runners}
    for _ in range(rounds):
        for name, ours in runners.items():
            fn = ours.train if mode == "train" else ours.evaluate
            for call in range(3):
                start = time.perf_counter()
                fn(inputs, targets)
                if call:
                    times[name].append(1e3 * (time.perf_counter() - start) / batches)
    for name, ours in runners.items():  # nothing compiled again, unpatched
        assert ours.train_fn._cache_size() == ours.eval_fn._cache_size() == 1, name
    return {name: float(np.median(t)) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", default="small,medium")
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    print(f"JAX {jax.__version__} on {jax.devices()}")
    for shape in args.shapes.split(","):
        batches = {"tiny": 2, "small": 20, "medium": 4}[shape]
        train = {name: runner(shape, batches, fn) for name, fn in TRAIN_VARIANTS.items()}
        for name, ms in ms_per_batch(train, "train", args.rounds, batches, shape).items():
            print(f"{shape:7} train {name:22} {ms:8.2f} ms/batch")
        evals = {name: runner(shape, batches, eval_unroll=u) for name, u in EVAL_VARIANTS.items()}
        for name, ms in ms_per_batch(evals, "eval", args.rounds, batches, shape).items():
            print(f"{shape:7} eval  {name:22} {ms:8.2f} ms/batch")


if __name__ == "__main__":
    main()

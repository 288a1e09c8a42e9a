"""Training and evaluation time per batch with the softmax weight stored [V, H] (as
lstm_lm stores it) against TF's [H, V].

    python experiments/softmax_layout.py [--shapes=small,medium] [--rounds=8]

Both variants run `model.cost_fn` with clip_by_global_norm + SGD (`optim.make_optimizer`)
on random ids, in one process, alternating chunks of batches. The [H, V] variant keeps
the weight transposed and hands `cost_fn` its transpose, so the two transposes cancel
and XLA compiles TF's layout. Prints the median and fastest ms per batch of each.
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lstm_lm import model, optim

SHAPES = {"small": (200, 20), "medium": (650, 35)}  # hidden_size, num_steps
VOCAB, LAYERS, BATCH = 10_000, 2, 20


def chunk_fns(cfg: model.ModelConfig, stored_hv: bool):
    """(jitted train chunk, jitted eval chunk) for one storage layout."""
    optimizer = optim.make_optimizer(5.0, optax.constant_schedule(1.0))

    def cost(params, carry, inputs_BxT, targets_BxT):
        if stored_hv:
            params = {**params, "softmax": {**params["softmax"], "w": params["softmax"]["w"].T}}
        return model.cost_fn(params, cfg, carry, inputs_BxT, targets_BxT)

    def train_chunk(params, opt_state, carry, inputs_NxBxT, targets_NxBxT):
        def body(state, batch):
            params, opt_state, carry = state
            (loss, carry), grads = jax.value_and_grad(cost, has_aux=True)(params, carry, *batch)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state, carry), loss

        state, losses_N = jax.lax.scan(
            body, (params, opt_state, carry), (inputs_NxBxT, targets_NxBxT)
        )
        return state, losses_N

    def eval_chunk(params, carry, inputs_NxBxT, targets_NxBxT):
        def body(carry, batch):
            loss, carry = cost(params, carry, *batch)
            return carry, loss

        return jax.lax.scan(body, carry, (inputs_NxBxT, targets_NxBxT))[1].sum()

    return jax.jit(train_chunk, donate_argnums=(0, 1, 2)), jax.jit(eval_chunk), optimizer


def compare(shape: str, rounds: int, batches: int) -> None:
    hidden, steps = SHAPES[shape]
    cfg = model.ModelConfig(VOCAB, hidden, LAYERS, init_scale=0.1)
    tokens = np.random.default_rng(0).integers(0, VOCAB, (batches, BATCH, steps + 1))
    inputs, targets = jnp.asarray(tokens[..., :-1]), jnp.asarray(tokens[..., 1:])
    params_vh = model.init_params(jax.random.PRNGKey(0), cfg)
    variants = {}
    for name, stored_hv in (("[V, H]", False), ("[H, V]", True)):
        params = jax.tree.map(jnp.copy, params_vh)
        if stored_hv:
            params["softmax"]["w"] = params["softmax"]["w"].T
        train_fn, eval_fn, optimizer = chunk_fns(cfg, stored_hv)
        state = (params, optimizer.init(params), model.zero_carry(cfg, BATCH))
        variants[name] = [train_fn, eval_fn, state, [], []]
    for _ in range(rounds + 1):  # round 0 compiles and warms up
        for variant in variants.values():
            train_fn, eval_fn, state, train_ms, eval_ms = variant
            start = time.perf_counter()
            state, losses_N = train_fn(*state, inputs, targets)
            variant[2] = state
            losses_N.block_until_ready()
            train_ms.append(1e3 * (time.perf_counter() - start) / batches)
            start = time.perf_counter()
            eval_fn(state[0], model.zero_carry(cfg, BATCH), inputs, targets).block_until_ready()
            eval_ms.append(1e3 * (time.perf_counter() - start) / batches)
    for name, (*_, train_ms, eval_ms) in variants.items():
        train_ms, eval_ms = train_ms[1:], eval_ms[1:]
        print(
            f"{shape:7} softmax w {name}: train {np.median(train_ms):6.1f} ms/batch"
            f" (fastest {min(train_ms):6.1f}), eval {np.median(eval_ms):6.1f}"
            f" (fastest {min(eval_ms):6.1f})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", default="small,medium")
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    print(f"JAX {jax.__version__} on {jax.devices()}")
    for shape in args.shapes.split(","):
        compare(shape, args.rounds, batches={"small": 10, "medium": 4}[shape])


if __name__ == "__main__":
    main()

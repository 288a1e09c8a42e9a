"""Would a wavefront over the layers speed up the loop over time? Two independent
recurrences in one `lax.scan` body (the shape a wavefront gives: layer 1's step t beside
layer 0's step t + 1) against one, medium's shapes ([20, 650] @ [650, 2600] a step).

    python experiments/wavefront_probe.py [--rounds=30]

Every loop returns all its carries and outputs, so that XLA cannot drop one of them.
"""

import argparse

import jax
import jax.numpy as jnp
from bf16_probe import median_seconds

B, H, T = 20, 650, 35


def cell(x_Bx4H, h_BxH, w_Hx4H):
    g = x_Bx4H + h_BxH @ w_Hx4H
    return jnp.tanh(g[:, :H]) * jax.nn.sigmoid(g[:, H : 2 * H])


def one_loop(w, w1, xw):
    def step(h, x):
        h = cell(x, h, w)
        return h, h

    return jax.lax.scan(step, jnp.zeros((xw.shape[1], H)), xw)


def two_loops(w, w1, xw):
    def step(hs, x):
        h0, h1 = cell(x, hs[0], w), cell(x, hs[1], w1)
        return (h0, h1), h0 + h1

    return jax.lax.scan(step, (jnp.zeros((B, H)), jnp.zeros((B, H))), xw)


def one_loop_batch_40(w, w1, xw):
    return one_loop(w, w1, jnp.concatenate([xw, xw], axis=1))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    w, w1 = (jax.random.normal(k, (H, 4 * H)) * 0.01 for k in keys[:2])
    xw = jax.random.normal(keys[2], (T, B, 4 * H))
    variants = [
        ("one loop (one layer)", one_loop, T),
        ("two loops in one body, one weight each", two_loops, 2 * T),
        ("one loop at batch 40", one_loop_batch_40, 2 * T),
    ]
    print("| loop | ms | ms per [20, 650] @ [650, 2600] | GFLOP/s |\n| --- | ---: | ---: | ---: |")
    for name, fn, matmuls in variants:
        t = median_seconds(jax.jit(fn), w, w1, xw, rounds=args.rounds)
        gflops = 2 * B * H * 4 * H * matmuls / t / 1e9
        print(f"| {name} | {t * 1e3:.2f} | {t / matmuls * 1e3:.3f} | {gflops:.0f} |")


if __name__ == "__main__":
    main()

"""The QRNN's pooling (c_t = f_t z_t + (1 - f_t) c_{t-1}) two ways, forward and backward:
a sequential `lax.scan` against `lax.associative_scan` (lstm_lm/qrnn.py forget_mult),
at awd_qrnn_ptb's layer shape and the medium one; median seconds of several rounds, each
way jitted alone, in one process.

    python experiments/qrnn_pooling.py
"""

import statistics
import time

import jax
import jax.numpy as jnp

from lstm_lm import qrnn

SHAPES = {"awd_qrnn_ptb (70 x 20 x 1550)": (70, 20, 1550), "medium (35 x 20 x 650)": (35, 20, 650)}


def timed(fn, *args, rounds: int = 20) -> float:
    jax.block_until_ready(fn(*args))  # compile
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    print(f"jax {jax.__version__}, {jax.devices()[0].device_kind}")
    for name, (T, B, H) in SHAPES.items():
        keys = jax.random.split(jax.random.PRNGKey(0), 3)
        f = jax.nn.sigmoid(jax.random.normal(keys[0], (T, B, H)))
        z = jnp.tanh(jax.random.normal(keys[1], (T, B, H)))
        c = jax.random.normal(keys[2], (B, H))
        seconds = {}
        for associative in (False, True):

            def loss(f, z, c, associative=associative):
                return jnp.sum(qrnn.forget_mult(f, z, c, associative) ** 2)

            step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))
            seconds[associative] = timed(step, f, z, c)
        ratio = seconds[True] / seconds[False]
        print(
            f"{name}: scan {1e3 * seconds[False]:.2f} ms, associative "
            f"{1e3 * seconds[True]:.2f} ms (associative / scan {ratio:.2f})"
        )


if __name__ == "__main__":
    main()

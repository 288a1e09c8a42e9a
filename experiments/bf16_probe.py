"""Would bfloat16 matmuls (float32 accumulation) speed up training on this CPU? XLA's
float32 and bfloat16 matmuls side by side at the medium model's shapes, alone and inside
the softmax layer's forward and backward pass (issue 23, item 3).

    python experiments/bf16_probe.py [--rounds=20]

Rows: GFLOP/s of a [M, K] x [K, N] matmul in float32, with float32 inputs cast to bfloat16
in the jitted function, and with bfloat16 inputs; then seconds of value_and_grad of the
softmax cross-entropy ([700, 650] hidden states, V = 10,000) with the logits matmul in
float32, in bfloat16 through JAX's autodiff (whose transposed matmuls take the float32
cotangent, so XLA runs them in float32), and through a VJP written with every matmul in
bfloat16. Medians of `--rounds` calls after one warm-up call.
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

BF16 = jnp.bfloat16


def median_seconds(fn, *args, rounds: int) -> float:
    """Median seconds of `rounds` calls of fn(*args), after one untimed call."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def dot_bf16_autodiff(a, b):
    return jnp.dot(a.astype(BF16), b.astype(BF16), preferred_element_type=jnp.float32)


@jax.custom_vjp
def dot_bf16(a, b):
    """a @ b with bfloat16 operands and float32 accumulation, forward and backward."""
    return dot_bf16_autodiff(a, b)


def _dot_fwd(a, b):
    a16, b16 = a.astype(BF16), b.astype(BF16)
    return jnp.dot(a16, b16, preferred_element_type=jnp.float32), (a16, b16)


def _dot_bwd(residuals, g):
    a16, b16 = residuals
    g16 = g.astype(BF16)
    da = jnp.dot(g16, b16.T, preferred_element_type=jnp.float32)
    db = jnp.dot(a16.T, g16, preferred_element_type=jnp.float32)
    return da, db


dot_bf16.defvjp(_dot_fwd, _dot_bwd)


def matmuls(rounds: int) -> None:
    rng = np.random.default_rng(0)
    shapes = [(700, 650, 10000), (700, 650, 2600), (20, 650, 2600), (2000, 2000, 2000)]
    names = ["softmax logits", "input projection", "one recurrent step", "square"]
    f32 = jax.jit(lambda a, b: a @ b)
    cast = jax.jit(dot_bf16_autodiff)
    bf16 = jax.jit(lambda a, b: jnp.dot(a, b, preferred_element_type=jnp.float32))
    print("matmul                               f32   bf16 (cast in)  bf16 (inputs)  GFLOP/s")
    for (m, k, n), name in zip(shapes, names):
        a = jnp.asarray(rng.standard_normal((m, k)), jnp.float32)
        b = jnp.asarray(rng.standard_normal((k, n)), jnp.float32)
        flops = 2 * m * k * n / 1e9
        rates = [
            flops / median_seconds(f32, a, b, rounds=rounds),
            flops / median_seconds(cast, a, b, rounds=rounds),
            flops / median_seconds(bf16, a.astype(BF16), b.astype(BF16), rounds=rounds),
        ]
        shape = f"[{m},{k}]x[{k},{n}] {name}"
        print(f"{shape:36} {rates[0]:6.1f} {rates[1]:12.1f} {rates[2]:14.1f}")


def softmax_layer(rounds: int) -> None:
    rng = np.random.default_rng(0)
    h = jnp.asarray(rng.standard_normal((700, 650)) * 0.1, jnp.float32)
    w = jnp.asarray(rng.standard_normal((10000, 650)) * 0.05, jnp.float32)
    y = jnp.asarray(rng.integers(0, 10000, 700))

    def loss(h, w, matmul):
        log_probs = jax.nn.log_softmax(matmul(h, w.T))
        return -jnp.take_along_axis(log_probs, y[:, None], 1).mean()

    variants = {"float32": jnp.dot, "bf16, autodiff": dot_bf16_autodiff, "bf16, own VJP": dot_bf16}
    grads = {}
    print("softmax layer, value_and_grad         seconds  ratio to float32  max rel. grad error")
    for name, matmul in variants.items():
        fn = jax.jit(jax.value_and_grad(lambda h, w, m=matmul: loss(h, w, m), argnums=(0, 1)))
        seconds = median_seconds(fn, h, w, rounds=rounds)
        grads[name] = fn(h, w)[1]
        base = grads["float32"]
        error = max(
            float(jnp.abs(g - b).max() / jnp.abs(b).max()) for g, b in zip(grads[name], base)
        )
        grads.setdefault("seconds", seconds)
        print(f"{name:36} {seconds:8.4f} {grads['seconds'] / seconds:12.2f}x {error:16.1e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    print(f"JAX {jax.__version__} on {jax.devices()}")
    matmuls(args.rounds)
    softmax_layer(args.rounds)


if __name__ == "__main__":
    main()

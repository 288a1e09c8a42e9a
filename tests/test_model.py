"""The model against independent references: a numpy LSTM, finite differences, log(V)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lstm_lm import cells, model, regularisers


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def numpy_basic_lstm_cell(kernel, bias, c, h, x, forget_bias):
    """TF BasicLSTMCell written from its documentation: one matmul on concat([x, h])."""
    gates = np.concatenate([x, h], axis=1) @ kernel + bias
    i, j, f, o = np.split(gates, 4, axis=1)
    new_c = c * sigmoid(f + forget_bias) + sigmoid(i) * np.tanh(j)
    return new_c, np.tanh(new_c) * sigmoid(o)


def numpy_log_probs(params, carry, inputs, forget_bias=0.0):
    """log p [B, T, V] of every word at every step, and the final carry: a whole forward
    pass step by step in numpy (float64). Layers may differ in size; with tied embeddings
    the softmax weight is the embedding."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    c = [np.asarray(layer_c, np.float64) for layer_c, _ in carry]
    h = [np.asarray(layer_h, np.float64) for _, layer_h in carry]
    steps = []
    for t in range(inputs.shape[1]):
        x = p["embedding"][inputs[:, t]]
        for layer_idx, layer in enumerate(p["lstm"]):
            kernel = np.concatenate([layer["w_x"], layer["w_h"]], axis=0)
            c[layer_idx], h[layer_idx] = numpy_basic_lstm_cell(
                kernel, layer["b"], c[layer_idx], h[layer_idx], x, forget_bias
            )
            x = h[layer_idx]
        softmax_w = p["softmax"]["w"] if "w" in p["softmax"] else p["embedding"]  # [V, H]
        logits = x @ softmax_w.T + p["softmax"]["b"]
        logits = logits - logits.max(axis=1, keepdims=True)
        steps.append(logits - np.log(np.exp(logits).sum(axis=1, keepdims=True)))
    return np.stack(steps, axis=1), list(zip(c, h))


def numpy_cost(params, carry, inputs, targets, forget_bias=0.0):
    """TF's cost (summed over steps, averaged over the batch) of numpy_log_probs, and the
    final carry."""
    log_probs, carry = numpy_log_probs(params, carry, inputs, forget_bias)
    batch, steps = inputs.shape
    target_log_probs = log_probs[np.arange(batch)[:, None], np.arange(steps), targets]
    return -target_log_probs.sum() / batch, carry


# Zaremba's shape; layers of different sizes under a distinct embedding; tied embeddings.
SHAPES = {
    "even": dict(),
    "uneven": dict(num_layers=3, hidden_sizes=(6, 4, 3), embedding_size=5),
    "tied": dict(hidden_sizes=(6, 5), embedding_size=5, tie_embeddings=True),
}


def tiny_setup(seed=0, vocab=13, hidden=5, layers=2, batch=3, steps=4, init_scale=0.5, **shape):
    shape = dict(num_layers=layers) | shape
    cfg = model.ModelConfig(vocab_size=vocab, hidden_size=hidden, init_scale=init_scale, **shape)
    k_params, k_carry, k_data = jax.random.split(jax.random.PRNGKey(seed), 3)
    params = model.init_params(k_params, cfg)
    keys = jax.random.split(k_carry, 2 * cfg.num_layers)
    carry = [
        (jax.random.normal(keys[2 * i], (batch, h)), jax.random.normal(keys[2 * i + 1], (batch, h)))
        for i, h in enumerate(cfg.layer_sizes)
    ]
    tokens = np.asarray(jax.random.randint(k_data, (batch, steps + 1), 0, vocab))
    return cfg, params, carry, tokens[:, :-1], tokens[:, 1:]


@pytest.mark.parametrize("forget_bias", [0.0, 1.0])
def test_cell_matches_numpy_basic_lstm_cell(forget_bias):
    rng = np.random.default_rng(0)
    batch, in_size, hidden = 4, 6, 6
    kernel = rng.uniform(-1, 1, (in_size + hidden, 4 * hidden)).astype(np.float32)
    bias = rng.uniform(-1, 1, 4 * hidden).astype(np.float32)
    c, h, x = (rng.normal(size=(batch, hidden)).astype(np.float32) for _ in range(3))
    want_c, want_h = numpy_basic_lstm_cell(kernel, bias, c, h, x, forget_bias)
    w_x, w_h = kernel[:in_size], kernel[in_size:]
    got_c, got_h = cells.lstm_cell(w_h, (c, h), x @ w_x + bias, forget_bias)
    np.testing.assert_allclose(got_c, want_c, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_h, want_h, rtol=1e-5, atol=1e-6)


# The time loop one step per iteration (training), unrolled whole (evaluation), and in
# blocks of 3 of the 4 steps, which leaves a remainder.
@pytest.mark.parametrize("unroll", [1, True, 3])
@pytest.mark.parametrize("shape", SHAPES)
def test_forward_cost_and_carry_match_numpy_loop(shape, unroll):
    cfg, params, carry, inputs, targets = tiny_setup(**SHAPES[shape])
    cost, new_carry = model.cost_fn(params, cfg, carry, inputs, targets, unroll=unroll)
    want_cost, want_carry = numpy_cost(params, carry, inputs, targets)
    np.testing.assert_allclose(cost, want_cost, rtol=1e-5)
    assert len(new_carry) == len(want_carry) == cfg.num_layers
    for got, want in zip(jax.tree.leaves(new_carry), jax.tree.leaves(want_carry)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_parameter_shapes_follow_the_layer_sizes_and_tying_keeps_one_matrix():
    V = 13
    _, uneven, *_ = tiny_setup(vocab=V, **SHAPES["uneven"])
    shapes = jax.tree.map(lambda a: a.shape, uneven)
    assert shapes["embedding"] == (V, 5) and shapes["softmax"] == {"w": (V, 3), "b": (V,)}
    assert [layer["w_x"] for layer in shapes["lstm"]] == [(5, 24), (6, 16), (4, 12)]
    assert [layer["w_h"] for layer in shapes["lstm"]] == [(6, 24), (4, 16), (3, 12)]
    _, tied, *_ = tiny_setup(vocab=V, **SHAPES["tied"])
    assert set(tied["softmax"]) == {"b"} and tied["embedding"].shape == (V, 5)


@pytest.mark.parametrize("shape", ["even", "tied"])  # tied: the embedding's gradient sums both uses
def test_gradients_match_finite_differences(shape):
    cfg, params, carry, inputs, targets = tiny_setup(
        vocab=7, hidden=3, batch=2, steps=3, **SHAPES[shape]
    )
    with jax.enable_x64(True):
        params64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
        carry64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), carry)

        @jax.jit
        def cost(p):
            return model.cost_fn(p, cfg, carry64, inputs, targets)[0]

        assert_gradients_match_finite_differences(cost, params64, per_leaf=5)


def assert_gradients_match_finite_differences(value_fn, params64, per_leaf, eps=1e-6):
    """jax.grad of a float64 `value_fn` against central differences, at `per_leaf`
    random entries of each parameter."""
    grads = jax.grad(value_fn)(params64)
    leaves, treedef = jax.tree.flatten(params64)
    rng = np.random.default_rng(0)
    for leaf_idx, (leaf, grad) in enumerate(zip(leaves, jax.tree.leaves(grads))):
        for flat_idx in rng.choice(leaf.size, size=min(per_leaf, leaf.size), replace=False):
            idx = np.unravel_index(flat_idx, leaf.shape)
            shifted = []
            for sign in (1, -1):
                new = list(leaves)
                new[leaf_idx] = leaf.at[idx].add(sign * eps)
                shifted.append(value_fn(jax.tree.unflatten(treedef, new)))
            numeric = (shifted[0] - shifted[1]) / (2 * eps)
            np.testing.assert_allclose(grad[idx], numeric, rtol=1e-5, atol=1e-8)


def autodiff_layer(layer, carry, x_TxBxI, forget_bias, length):
    """The layer as a plain lax.scan of the cell, left to JAX's autodiff: the reference
    for cells.recurrence's hand-written backward pass."""

    def step(carry, xw_and_t):
        xw, t = xw_and_t
        new = cells.lstm_cell(layer["w_h"], carry, xw, forget_bias)
        real = True if length is None else t < length
        return jax.tree.map(lambda n, o: jnp.where(real, n, o), new, carry), new[1]

    xw_TxBx4H = x_TxBxI @ layer["w_x"] + layer["b"]
    return jax.lax.scan(step, carry, (xw_TxBx4H, jnp.arange(len(xw_TxBx4H))))


@pytest.mark.parametrize("length", [None, 4])  # 4 of 6 steps: two padding steps
def test_layer_vjp_matches_autodiff_of_the_plain_scan(length):
    T, B, D, H = 6, 3, 4, 5  # D: the input size
    with jax.enable_x64(True):
        keys = jax.random.split(jax.random.PRNGKey(3), 8)
        normal = lambda k, shape: 0.7 * jax.random.normal(k, shape, jnp.float64)  # noqa: E731
        layer = {"w_x": normal(keys[0], (D, 4 * H)), "w_h": normal(keys[1], (H, 4 * H))}
        layer["b"] = normal(keys[2], (4 * H,))
        carry = (normal(keys[3], (B, H)), normal(keys[4], (B, H)))
        x = normal(keys[5], (T, B, D))
        # Cotangents for every output: the final (c, h) and each step's h.
        d_out = ((normal(keys[6], (B, H)), normal(keys[7], (B, H))), normal(keys[0], (T, B, H)))
        length = None if length is None else jnp.int32(length)

        def pullback(fn):
            out, vjp = jax.vjp(lambda *a: fn(*a, 0.8, length), layer, carry, x)
            return out, vjp(d_out)

        got_out, got_grads = pullback(model.lstm_layer)
        want_out, want_grads = pullback(autodiff_layer)
    for got, want in zip(jax.tree.leaves(got_out), jax.tree.leaves(want_out)):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    for got, want in zip(jax.tree.leaves(got_grads), jax.tree.leaves(want_grads)):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_scan_over_t_equals_two_halves_with_carry_passed_through():
    cfg, params, carry, inputs, targets = tiny_setup(steps=6)
    logits_all, carry_all = model.forward(params, cfg, carry, inputs)
    logits_a, carry_mid = model.forward(params, cfg, carry, inputs[:, :3])
    logits_b, carry_end = model.forward(params, cfg, carry_mid, inputs[:, 3:])
    np.testing.assert_allclose(logits_all, np.concatenate([logits_a, logits_b]), rtol=1e-6)
    for got, want in zip(jax.tree.leaves(carry_end), jax.tree.leaves(carry_all)):
        np.testing.assert_allclose(got, want, rtol=1e-6)


def test_initial_cost_per_step_is_about_log_vocab():
    vocab, steps = 10000, 20
    cfg = model.ModelConfig(vocab, 200, 2, init_scale=0.1)
    params = model.init_params(jax.random.PRNGKey(0), cfg)
    tokens = np.random.default_rng(0).integers(0, vocab, (20, steps + 1))
    cost, _ = model.cost_fn(params, cfg, model.zero_carry(cfg, 20), tokens[:, :-1], tokens[:, 1:])
    assert abs(float(cost) / steps - math.log(vocab)) < 0.05


def test_init_is_uniform_within_init_scale():
    cfg = model.ModelConfig(vocab_size=50, hidden_size=40, num_layers=2, init_scale=0.3)
    for leaf in jax.tree.leaves(model.init_params(jax.random.PRNGKey(0), cfg)):
        assert float(jnp.max(jnp.abs(leaf))) <= 0.3
        assert float(jnp.max(jnp.abs(leaf))) > 0.25  # spread over the range, not zeros
        assert abs(float(jnp.mean(leaf))) < 0.05


def test_dropout_acts_only_in_training_and_keeps_the_expectation():
    cfg, params, carry, inputs, targets = tiny_setup()
    cfg_drop = model.ModelConfig(
        cfg.vocab_size, cfg.hidden_size, cfg.num_layers, cfg.init_scale, keep_prob=0.5
    )
    eval_logits, _ = model.forward(params, cfg_drop, carry, inputs)
    plain_logits, _ = model.forward(params, cfg, carry, inputs)
    np.testing.assert_allclose(eval_logits, plain_logits)
    train_logits, _ = model.forward(params, cfg_drop, carry, inputs, jax.random.PRNGKey(3))
    assert not np.allclose(train_logits, plain_logits)
    x = jnp.ones((1000, 100))
    keep = regularisers.keep_mask(jax.random.PRNGKey(0), x.shape, 0.7)
    dropped = regularisers.apply_keep(keep, x, 0.7)
    np.testing.assert_allclose(np.unique(np.asarray(dropped)), [0.0, 1 / 0.7], rtol=1e-6)
    assert abs(float(dropped.mean()) - 1.0) < 0.01

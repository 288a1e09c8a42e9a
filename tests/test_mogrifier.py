"""The Mogrifier LSTM and the capped input gate against numpy written from the equations
(Melis et al. 2020; lamb's TiledLSTMCell), finite differences, and the plain LSTM."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lstm_lm import cells, model
from tests.test_model import assert_gradients_match_finite_differences, sigmoid, tiny_setup


def numpy_mogrifier_step(layer, c, h, x, forget_bias, cap_input_gate=False):
    """One step in float64 from the paper's equations: R rounds of mutual gating (odd
    rounds x = 2 sigma(Q h + b) * x, even rounds h = 2 sigma(R x + b) * h), then the LSTM
    (gates i, j, f, o) on the gated x and h; the cell state is never gated."""
    for r, rnd in enumerate(layer.get("mogrifier", [])):
        w = rnd["w"] if "w" in rnd else rnd["u"] @ rnd["v"]
        if r % 2 == 0:
            x = 2 * sigmoid(h @ w + rnd["b"]) * x
        else:
            h = 2 * sigmoid(x @ w + rnd["b"]) * h
    gates = x @ layer["w_x"] + h @ layer["w_h"] + layer["b"]
    i, j, f, o = np.split(gates, 4, axis=1)
    i, j, f, o = sigmoid(i), np.tanh(j), sigmoid(f + forget_bias), sigmoid(o)
    i = np.minimum(1 - f, i) if cap_input_gate else i
    c = c * f + i * j
    return c, np.tanh(c) * o


def numpy_cost(params, carry, inputs, targets, forget_bias, cap_input_gate=False):
    """TF's cost of a whole forward pass, step by step in float64."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    state = [tuple(np.asarray(a, np.float64) for a in layer_carry) for layer_carry in carry]
    cost = 0.0
    for t in range(inputs.shape[1]):
        x = p["embedding"][inputs[:, t]]
        for idx, layer in enumerate(p["lstm"]):
            state[idx] = numpy_mogrifier_step(layer, *state[idx], x, forget_bias, cap_input_gate)
            x = state[idx][1]
        logits = x @ p["softmax"]["w"].T + p["softmax"]["b"]
        logits = logits - logits.max(axis=1, keepdims=True)
        log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        cost -= log_probs[np.arange(len(x)), targets[:, t]].sum() / len(x)
    return cost, state


def setup(rounds, rank, cap=False, batch=3, steps=4, vocab=11, seed=0):
    """test_model's tiny_setup with layers of uneven sizes under an embedding of another
    size, so that every round's matrix is rectangular and rounds of x and of h have
    different shapes; the rounds' biases are made non-zero, so that a bias added in the
    wrong place shows."""
    cfg, params, carry, inputs, targets = tiny_setup(
        seed,
        vocab,
        hidden=0,
        batch=batch,
        steps=steps,
        hidden_sizes=(6, 4),
        embedding_size=5,
        forget_bias=0.7,
        cell="mogrifier",
        mogrifier_rounds=rounds,
        mogrifier_rank=rank,
        cap_input_gate=cap,
    )
    k_bias = jax.random.fold_in(jax.random.PRNGKey(seed), 1)
    params = jax.tree_util.tree_map_with_path(
        lambda path, a: (
            a + 0.3 * jax.random.normal(k_bias, a.shape)
            if "mogrifier" in jax.tree_util.keystr(path) and a.ndim == 1
            else a
        ),
        params,
    )
    return cfg, params, carry, inputs, targets


PARAMS_KEY = jax.random.split(jax.random.PRNGKey(0), 3)[0]  # tiny_setup's, for seed 0


@pytest.mark.parametrize("rank", [0, 2])
@pytest.mark.parametrize("rounds", [1, 2, 3, 4, 5])
def test_mogrifier_cost_and_carry_match_numpy(rounds, rank):
    cfg, params, carry, inputs, targets = setup(rounds, rank)
    assert len(params["lstm"][0]["mogrifier"]) == rounds
    cost, new_carry = model.cost_fn(params, cfg, carry, inputs, targets)
    want_cost, want_carry = numpy_cost(params, carry, inputs, targets, cfg.forget_bias)
    np.testing.assert_allclose(cost, want_cost, rtol=1e-5)
    for got, want in zip(jax.tree.leaves(new_carry), jax.tree.leaves(want_carry)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_round_shapes_alternate_and_rank_factorises_them():
    _, full, *_ = setup(rounds=3, rank=0)
    _, low, *_ = setup(rounds=3, rank=2)
    shapes = jax.tree.map(lambda a: a.shape, full["lstm"][1]["mogrifier"])  # I = 6, H = 4
    assert shapes == [
        {"w": (4, 6), "b": (6,)},  # round 1: x [6] gated from h [4]
        {"w": (6, 4), "b": (4,)},  # round 2: h gated from x
        {"w": (4, 6), "b": (6,)},
    ]
    shapes = jax.tree.map(lambda a: a.shape, low["lstm"][1]["mogrifier"][:2])
    assert shapes == [{"u": (4, 2), "v": (2, 6), "b": (6,)}, {"u": (6, 2), "v": (2, 4), "b": (4,)}]


def test_the_mogrifier_leaves_the_lstm_weights_of_the_plain_model():
    cfg, mog, *_ = setup(rounds=4, rank=2)
    plain = model.init_params(
        PARAMS_KEY,
        model.ModelConfig(
            **{**cfg.__dict__, "cell": "lstm", "mogrifier_rounds": 0, "mogrifier_rank": 0}
        ),
    )
    for layer_mog, layer_plain in zip(mog["lstm"], plain["lstm"]):
        for name in ("w_x", "w_h", "b"):
            np.testing.assert_array_equal(layer_mog[name], layer_plain[name])


def test_zero_rounds_is_the_lstm_bitwise():
    """cell="mogrifier" with R = 0 builds and runs exactly the plain LSTM: the same
    parameters, cost, carry and gradients, to the bit."""
    cfg_mog, params, carry, inputs, targets = setup(rounds=0, rank=0)
    cfg_lstm = model.ModelConfig(**{**cfg_mog.__dict__, "cell": "lstm"})
    params_lstm = model.init_params(PARAMS_KEY, cfg_lstm)
    params_mog = model.init_params(PARAMS_KEY, cfg_mog)
    for a, b in zip(jax.tree.leaves(params_lstm), jax.tree.leaves(params_mog)):
        np.testing.assert_array_equal(a, b)

    def value_and_grads(cfg):
        fn = jax.jit(lambda p: model.cost_fn(p, cfg, carry, inputs, targets))
        return jax.value_and_grad(lambda p: fn(p)[0])(params_lstm), fn(params_lstm)[1]

    for got, want in zip(
        jax.tree.leaves(value_and_grads(cfg_mog)), jax.tree.leaves(value_and_grads(cfg_lstm))
    ):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("rank", [0, 2])
def test_gradients_through_mogrifier_layers_match_finite_differences(rank):
    cfg, params, carry, inputs, targets = setup(rounds=3, rank=rank, batch=2, steps=3, vocab=7)
    with jax.enable_x64(True):
        params64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
        carry64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), carry)

        @jax.jit
        def cost(p):
            return model.cost_fn(p, cfg, carry64, inputs, targets)[0]

        assert_gradients_match_finite_differences(cost, params64, per_leaf=3)


@pytest.mark.parametrize("rounds", [0, 2])
def test_the_capped_input_gate_matches_numpy(rounds):
    cfg, params, carry, inputs, targets = setup(rounds, rank=0, cap=True)
    cost, new_carry = model.cost_fn(params, cfg, carry, inputs, targets)
    want_cost, want_carry = numpy_cost(params, carry, inputs, targets, cfg.forget_bias, True)
    np.testing.assert_allclose(cost, want_cost, rtol=1e-5)
    for got, want in zip(jax.tree.leaves(new_carry), jax.tree.leaves(want_carry)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    uncapped, _ = numpy_cost(params, carry, inputs, targets, cfg.forget_bias, False)
    assert abs(uncapped - want_cost) > 1e-3  # the cap binds somewhere in this setup


def test_the_plain_cell_in_the_generic_loop_equals_the_fast_path():
    """cells.cell_scan (autodiff) and cells.recurrence (written-out gradient) on an LSTM
    layer: the same outputs and gradients to float tolerance."""
    cfg, params, carry, inputs, _ = setup(rounds=0, rank=0, steps=6)
    layer, layer_carry = params["lstm"][0], carry[0]
    x_TxBxE = params["embedding"][inputs.T]

    def total(fn):
        def value(layer, layer_carry):
            (c, h), out = fn(layer, layer_carry)
            return jnp.sum(out**3) + jnp.sum(c * h)

        return jax.value_and_grad(value, argnums=(0, 1))(layer, layer_carry)

    fast = total(lambda ly, c: model.lstm_layer(ly, c, x_TxBxE, 0.7, jnp.int32(4)))
    generic = total(
        lambda ly, c: cells.cell_scan(ly, c, x_TxBxE, model.step_mask(6, jnp.int32(4)), 0.7)
    )
    for got, want in zip(jax.tree.leaves(generic), jax.tree.leaves(fast)):
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6)


def test_a_padded_mogrifier_batch_ends_with_the_carry_of_its_real_steps():
    cfg, params, carry, inputs, _ = setup(rounds=3, rank=2, steps=6)
    x_TxBxE = params["embedding"][inputs.T]
    layer = params["lstm"][0]
    padded, _ = model.lstm_layer(layer, carry[0], x_TxBxE, 0.7, jnp.int32(4))
    real, _ = model.lstm_layer(layer, carry[0], x_TxBxE[:4], 0.7)
    for got, want in zip(padded, real):  # two programs: equal to float rounding
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    unpadded, _ = model.lstm_layer(layer, carry[0], x_TxBxE, 0.7)
    assert not np.allclose(unpadded[1], real[1], atol=1e-3)  # the padding was held


def test_the_mogrifier_configs_set_lambs_values_and_the_parameter_count():
    import importlib

    from lstm_lm import config as config_lib

    for name, vocab, want in [("mogrifier_ptb", 10_000, 24.0e6), ("mogrifier_wt2", 33_278, 35.0e6)]:
        config = importlib.import_module(f"configs.{name}").get_config()
        config_lib.validate(config)
        cfg = config_lib.model_config(config, vocab)
        shapes = jax.eval_shape(lambda cfg=cfg: model.init_params(jax.random.PRNGKey(0), cfg))
        assert abs(model.parameter_count(shapes) - want) < 0.01 * want, name
        assert (config.optim.name, config.optim.b1, config.train.test_weights) == (
            "adam",
            0.0,
            "best",
        )
        assert (config.train.batch_size, config.train.num_steps) == (64, 70)
        assert config.model.cap_input_gate and config.model.forget_bias == 1.0
    small = importlib.import_module("configs.ptb_small_mogrifier").get_config()
    regularized = importlib.import_module("configs.ptb_small_regularized").get_config()
    differs = {
        k
        for k in config_lib.default_config().to_dict()["model"]
        if small.model[k] != regularized.model[k]
    }
    assert differs == {"cell", "mogrifier_rounds", "mogrifier_rank", "cap_input_gate"}

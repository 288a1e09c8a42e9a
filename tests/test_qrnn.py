"""The QRNN against a float64 numpy QRNN written here from salesforce/pytorch-qrnn's
QRNNLayer.forward and CPUForgetMult (c_t = f z + (1 - f) c_{t-1}), its pooling two ways,
finite differences, weight drop and zoneout masks, padding, and its keys refused."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lstm_lm import config as config_lib
from lstm_lm import model, qrnn
from tests.test_model import assert_gradients_match_finite_differences, sigmoid

V, B = 13, 3


def qrnn_cfg(**overrides):
    shape = dict(
        vocab_size=V, hidden_size=0, num_layers=2, init_scale=0.3, cell="qrnn",
        hidden_sizes=(6, 4), embedding_size=5,
    )  # fmt: skip
    return model.ModelConfig(**shape | overrides)


def numpy_qrnn_layer(layer, c, x_prev, x_TxBxI, window, output_gate=True, f_scale=None):
    """QRNNLayer.forward in float64: the source [x_t, x_{t-1}] (window 2, x_{-1} the saved
    previous input), Z, F, O = split(linear(source)), tanh / sigmoid / sigmoid, then
    CPUForgetMult step by step; returns ((c_T, x_{T-1}), h_TxBxH)."""
    w, b = np.asarray(layer["w"], np.float64), np.asarray(layer["b"], np.float64)
    x = np.asarray(x_TxBxI, np.float64)
    if window == 2:
        source = np.concatenate([x, np.concatenate([x_prev[None], x[:-1]])], axis=-1)
    else:
        source = x
    y = source @ w + b
    parts = np.split(y, 3 if output_gate else 2, axis=-1)
    z, f = np.tanh(parts[0]), sigmoid(parts[1])
    if f_scale is not None:
        f = f * f_scale
    hs = []
    for t in range(len(x)):
        c = f[t] * z[t] + (1 - f[t]) * c
        hs.append(sigmoid(parts[2][t]) * c if output_gate else c)
    return (c, x[-1]), np.stack(hs)


def numpy_outputs(params, cfg, carry, inputs_BxT):
    """The stacked layers' last outputs [T, B, H_L] and the new carry, in float64."""
    x = np.asarray(params["embedding"], np.float64)[np.asarray(inputs_BxT).T]
    new_carry = []
    for layer, (c, x_prev), window in zip(params["lstm"], carry, cfg.windows):
        (c, x_prev), x = numpy_qrnn_layer(
            layer, np.asarray(c, np.float64), np.asarray(x_prev, np.float64), x, window,
            cfg.qrnn_output_gate,
        )  # fmt: skip
        new_carry.append((c, x_prev))
    return x, new_carry


@pytest.mark.parametrize("output_gate", [True, False])
@pytest.mark.parametrize("windows", [(2, 1), (1, 2)])
def test_the_qrnn_matches_numpy_across_two_batches_with_its_saved_input(windows, output_gate):
    cfg = qrnn_cfg(qrnn_windows=windows, qrnn_output_gate=output_gate, init="awd")
    params = model.init_params(jax.random.PRNGKey(0), cfg)
    tokens = np.random.default_rng(0).integers(0, V, (B, 9))
    carry = model.zero_carry(cfg, B)
    assert [a.shape for pair in carry for a in pair] == [(B, 6), (B, 5), (B, 4), (B, 6)]
    want, want_carry = numpy_outputs(params, cfg, carry, tokens)
    # read in two batches, the carry (the state and the last input) threaded between
    first, _, carry_mid = model.layer_outputs(params, cfg, carry, tokens[:, :4])
    second, _, carry_end = model.layer_outputs(params, cfg, carry_mid, tokens[:, 4:])
    got = np.concatenate([np.asarray(first), np.asarray(second)])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    for got_pair, want_pair in zip(carry_end, want_carry):
        for g, w in zip(got_pair, want_pair):
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def test_the_associative_pooling_equals_the_sequential_one():
    rng = np.random.default_rng(1)
    f = jnp.asarray(rng.uniform(0, 1, (50, 3, 4)), jnp.float32)
    z = jnp.asarray(rng.normal(size=(50, 3, 4)), jnp.float32)
    c0 = jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)
    sequential = qrnn.forget_mult(f, z, c0)
    np.testing.assert_allclose(
        qrnn.forget_mult(f, z, c0, associative=True), sequential, rtol=1e-5, atol=1e-6
    )
    c, want = np.asarray(c0, np.float64), []
    for t in range(50):  # CPUForgetMult
        c = np.asarray(f[t], np.float64) * np.asarray(z[t]) + (1 - np.asarray(f[t])) * c
        want.append(c)
    np.testing.assert_allclose(sequential, np.stack(want), rtol=1e-5, atol=1e-6)


def test_qrnn_gradients_match_finite_differences():
    cfg = qrnn_cfg()
    tokens = np.random.default_rng(2).integers(0, V, (B, 6))
    with jax.enable_x64(True):
        params = jax.tree.map(
            lambda a: jnp.asarray(a, jnp.float64), model.init_params(jax.random.PRNGKey(0), cfg)
        )
        carry = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64) + 0.1, model.zero_carry(cfg, B))

        def cost(p):
            return model.cost_fn(p, cfg, carry, tokens[:, :-1], tokens[:, 1:])[0]

        assert_gradients_match_finite_differences(cost, params, per_leaf=4)


def test_weight_drop_masks_the_whole_linear_map_and_zoneout_the_forget_gates():
    cfg = qrnn_cfg(weight_drop=0.5, zoneout=0.25, qrnn_windows=(2, 2))
    params = model.init_params(jax.random.PRNGKey(0), cfg)
    tokens = np.random.default_rng(3).integers(0, V, (B, 5))
    masks = model.dropout_masks(jax.random.PRNGKey(4), cfg, B, 5)
    assert [m.shape for m in masks["w_h"]] == [(10, 18), (12, 12)]  # [window I, 3H]
    assert [m.shape for m in masks["zoneout"]] == [(5, B, 6), (5, B, 4)]
    got, _, _ = model.layer_outputs(params, cfg, model.zero_carry(cfg, B), tokens, masks)
    x = np.asarray(params["embedding"], np.float64)[tokens.T]
    for layer, w_keep, z_keep in zip(params["lstm"], masks["w_h"], masks["zoneout"]):
        dropped = {**layer, "w": np.where(w_keep, np.asarray(layer["w"]) / 0.5, 0.0)}
        c0, x_prev = np.zeros((B, layer["b"].shape[0] // 3)), np.zeros((B, x.shape[-1]))
        _, x = numpy_qrnn_layer(dropped, c0, x_prev, x, 2, f_scale=np.asarray(z_keep))
    np.testing.assert_allclose(got, x, rtol=1e-5, atol=1e-6)
    # evaluation: the whole map, the forget gates scaled by 1 - zoneout
    evaluated, _, _ = model.layer_outputs(params, cfg, model.zero_carry(cfg, B), tokens)
    x = np.asarray(params["embedding"], np.float64)[tokens.T]
    for layer in params["lstm"]:
        c0, x_prev = np.zeros((B, layer["b"].shape[0] // 3)), np.zeros((B, x.shape[-1]))
        _, x = numpy_qrnn_layer(layer, c0, x_prev, x, 2, f_scale=0.75)
    np.testing.assert_allclose(evaluated, x, rtol=1e-5, atol=1e-6)


def test_the_carry_after_a_padded_batch_is_the_carry_after_its_real_steps():
    cfg = qrnn_cfg()
    params = model.init_params(jax.random.PRNGKey(0), cfg)
    tokens = np.random.default_rng(5).integers(0, V, (B, 10))
    carry = model.zero_carry(cfg, B)
    padded = np.where(np.arange(10) < 7, tokens, 0)
    _, _, carry_pad = model.layer_outputs(params, cfg, carry, padded, None, jnp.int32(7))
    _, _, carry_real = model.layer_outputs(params, cfg, carry, tokens[:, :7])
    for got, want in zip(jax.tree.leaves(carry_pad), jax.tree.leaves(carry_real)):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"model.qrnn_windows": (3, 1)}, "each 1 or 2"),
        ({"model.qrnn_windows": (2,)}, "one window per layer"),
        ({"model.zoneout": 1.0}, "zoneout is a drop probability"),
        ({"model.cell": "lstm", "model.zoneout": 0.1}, "an option of the QRNN"),
        ({"model.cap_input_gate": True}, "acts on the LSTM's gates"),
        ({"model.forget_bias": 1.0}, "acts on the LSTM's gates"),
        ({"model.init": "lamb", "model.tie_embeddings": True}, "draws LSTM layers"),
    ],
)
def test_qrnn_keys_that_cannot_act_are_refused_by_name(overrides, message):
    config = config_lib.default_config()
    config.model.cell = "qrnn"
    config.update_from_flattened_dict(overrides)
    with pytest.raises(config_lib.ConfigError, match=message):
        config_lib.validate(config)


# orbax's restore can leave one of its read coroutines un-awaited (see test_runs.py)
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.filterwarnings("ignore:coroutine .* was never awaited:RuntimeWarning")
def test_an_awd_qrnn_run_learns_and_resumes_mid_epoch_bitwise(tmp_path):
    """AWD's recipe on the QRNN (random lengths, weight drop on the linear maps, NT-ASGD):
    the saved previous inputs are in the carry and the checkpoint, so a run resumed
    mid-epoch is bitwise the one that never stopped."""
    from helpers import write_corpus
    from test_runs import awd_tiny_config, rewind

    from lstm_lm import train

    config = awd_tiny_config(write_corpus(tmp_path / "data"))
    config.model.update(cell="qrnn", hidden_sizes=(8, 4))
    config.optim.learning_rate = 3.0  # AWD's 30 throws a model this small about
    config.train.num_epochs = 3
    workdir = tmp_path / "run"
    straight = train.train_and_evaluate(config, workdir)
    # words drawn at random: their frequencies give 38.8, a model that learned nothing 42
    assert 1 < straight["test_perplexity"] < 40
    rewind(workdir, 21)  # mid epoch 2
    resumed = train.train_and_evaluate(config, workdir)
    for key in ("train_perplexity", "valid_perplexity", "test_perplexity", "step"):
        assert resumed[key] == straight[key], key


def test_the_awd_qrnn_config_sets_the_repositorys_values():
    import importlib

    config = importlib.import_module("configs.awd_qrnn_ptb").get_config()
    config_lib.validate(config)
    cfg = config_lib.model_config(config, 10_000)
    assert (cfg.cell, cfg.windows, cfg.layer_sizes) == ("qrnn", (2, 1, 1, 1), (1550,) * 3 + (400,))
    assert (config.seed, config.optim.max_grad_norm, cfg.weight_drop) == (9001, 0.2, 0.1)
    assert (cfg.dropout_hidden, cfg.dropout_input) == (0.3, 0.4)
    shapes = jax.eval_shape(lambda: model.init_params(jax.random.PRNGKey(0), cfg))
    assert model.parameter_count(shapes) == 24_020_150  # "the same number" as the LSTM's 24M

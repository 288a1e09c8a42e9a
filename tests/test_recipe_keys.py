"""The keys that map the papers' own code, one by one: lamb's initialisers and trained
forget bias, PyTorch's second LSTM bias, lamb's averaging trigger, the state and per-step
dropout masks, and the refusals of values that cannot act (tests/test_recipe_steps.py
checks whole updates)."""

import importlib
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lstm_lm import config as config_lib
from lstm_lm import data, evaluation, model, parallel, train


def lamb_cfg(**overrides):
    shape = dict(vocab_size=50, hidden_size=40, num_layers=2, init_scale=0.1, embedding_size=40)
    return model.ModelConfig(**shape | dict(init="lamb", tie_embeddings=True) | overrides)


def test_lambs_init_draws_each_tile_truncated_at_two_stddevs_of_its_own_fan_in():
    cfg = lamb_cfg(hidden_sizes=(300, 300), embedding_size=300, vocab_size=2000)
    params = model.init_params(jax.random.PRNGKey(0), cfg)
    # (array, lamb's stddev parameter): a tile of fan-in n, sqrt(1.3 / n); the embedding
    # TF's variance_scaling over E, sqrt(1 / E) / 0.8796; the biases as the tiles of H.
    for array, stddev in [
        (params["lstm"][0]["w_x"], math.sqrt(1.3 / 300)),
        (params["lstm"][0]["w_h"], math.sqrt(1.3 / 300)),
        (params["lstm"][1]["b"], math.sqrt(1.3 / 300)),
        (params["embedding"], math.sqrt(1 / 300) / 0.87962566103423978),
    ]:
        a = np.asarray(array, np.float64).ravel()
        assert np.abs(a).max() <= 2 * stddev * (1 + 1e-6)  # truncated at 2 stddev
        # N(0, s^2) cut at +-2s has the standard deviation 0.8796 s
        assert a.std() == pytest.approx(0.8796 * stddev, rel=0.05)
        assert abs(a.mean()) < 0.05 * stddev
    assert not np.any(params["softmax"]["b"])


def test_lambs_init_draws_a_layers_input_tile_from_its_own_input_size():
    cfg = lamb_cfg(hidden_sizes=(400, 100), embedding_size=100)
    params = model.init_params(jax.random.PRNGKey(1), cfg)
    w_x_first = np.asarray(params["lstm"][0]["w_x"])  # fan-in 100 (the embedding)
    w_x_second = np.asarray(params["lstm"][1]["w_x"])  # fan-in 400 (the first layer)
    assert w_x_first.std() == pytest.approx(0.8796 * math.sqrt(1.3 / 100), rel=0.05)
    assert w_x_second.std() == pytest.approx(0.8796 * math.sqrt(1.3 / 400), rel=0.05)


def test_a_trainable_forget_bias_starts_the_forget_gates_and_is_not_added_again():
    H = 40
    plain = model.init_params(jax.random.PRNGKey(0), lamb_cfg())
    cfg = lamb_cfg(forget_bias=1.0, trainable_forget_bias=True)
    trained = model.init_params(jax.random.PRNGKey(0), cfg)
    for got, want in zip(trained["lstm"], plain["lstm"]):
        shift = np.asarray(got["b"]) - np.asarray(want["b"])
        np.testing.assert_allclose(shift[2 * H : 3 * H], 1.0, rtol=1e-6)
        assert not np.any(shift[: 2 * H]) and not np.any(shift[3 * H :])
    assert cfg.constant_forget_bias == 0.0
    assert lamb_cfg(forget_bias=1.0).constant_forget_bias == 1.0
    # The trained model with forget_bias in its bias computes what the constant one does.
    inputs = jnp.arange(12).reshape(3, 4) % 50
    carry = model.zero_carry(cfg, 3)
    constant = model.layer_outputs(plain, lamb_cfg(forget_bias=1.0), carry, inputs)[0]
    np.testing.assert_allclose(
        model.layer_outputs(trained, cfg, carry, inputs)[0], constant, rtol=1e-5, atol=1e-6
    )


def test_the_hidden_bias_is_pytorchs_b_hh_drawn_apart_and_summed_into_the_gates():
    shape = dict(vocab_size=30, hidden_size=8, num_layers=1, init_scale=0.1, init="awd")
    one = model.init_params(jax.random.PRNGKey(0), model.ModelConfig(**shape))
    cfg = model.ModelConfig(**shape, hidden_bias=True)
    two = model.init_params(jax.random.PRNGKey(0), cfg)
    layer = two["lstm"][0]
    np.testing.assert_allclose(layer["b"] + layer["b_h"], one["lstm"][0]["b"], rtol=1e-6)
    assert np.abs(layer["b_h"]).max() <= 8**-0.5
    inputs = jnp.arange(10).reshape(2, 5) % 30
    carry = model.zero_carry(cfg, 2)
    one_layer = {**one, "lstm": [{**one["lstm"][0], "w_x": layer["w_x"], "w_h": layer["w_h"]}]}
    np.testing.assert_allclose(
        model.layer_outputs(two, cfg, carry, inputs)[0],
        model.layer_outputs(one_layer, model.ModelConfig(**shape), carry, inputs)[0],
        rtol=1e-5,
        atol=1e-6,
    )


def history(*valid):
    return [dict(epoch=i + 1, valid_perplexity=v) for i, v in enumerate(valid)]


def test_lambs_trigger_waits_its_epochs_after_the_best_or_until_its_latest_epoch():
    # training.py: turns since the best >= trigger_averaging_turns, or the turn >= the latest
    assert not train.lamb_trigger(history(9, 8, 8.5), after_best=2, at_epoch=0)
    assert train.lamb_trigger(history(9, 8, 8.5, 8.2), after_best=2, at_epoch=0)
    assert not train.lamb_trigger(history(9, 8, 8.0, 8.0), after_best=3, at_epoch=0)  # ties
    assert train.lamb_trigger(history(9, 8, 7), after_best=0, at_epoch=3)
    assert not train.lamb_trigger(history(9, 8), after_best=0, at_epoch=3)
    assert not train.lamb_trigger(history(9, 9.5, 9.7), after_best=0, at_epoch=0)


def test_state_masks_are_one_per_layer_and_batch_and_per_step_masks_change_every_step():
    cfg = lamb_cfg(dropout_state=0.5, dropout_input=0.5, dropout_per_step=True)
    masks = model.dropout_masks(jax.random.PRNGKey(0), cfg, 4, 6)
    assert [m.shape for m in masks["state"]] == [(4, 40), (4, 40)]
    assert not np.array_equal(masks["state"][0], masks["state"][1])
    inputs = masks["locked"][0]
    assert inputs.shape == (6, 4, 40) and not np.array_equal(inputs[0], inputs[1])
    assert model.dropout_masks(jax.random.PRNGKey(0), lamb_cfg(), 4, 6)["state"] == [None, None]
    # State dropout acts on h before the step: with every unit of h dropped, the outputs
    # are those of a zero carry, whatever the carry holds.
    carry = [(jnp.ones((4, 40)), jnp.ones((4, 40)))] * 2
    params = model.init_params(jax.random.PRNGKey(1), cfg)
    inputs_BxT = jnp.zeros((4, 1), jnp.int32)
    none_kept = {**model.dropout_masks(None, cfg, 4, 1), "state": [jnp.zeros((4, 40), bool)] * 2}
    zero_h = [(c, jnp.zeros_like(h)) for c, h in carry]
    np.testing.assert_allclose(
        model.layer_outputs(params, cfg, carry, inputs_BxT, none_kept)[0],
        model.layer_outputs(params, cfg, zero_h, inputs_BxT)[0],
        rtol=1e-6,
    )


def test_the_skip_connection_outputs_the_sum_of_the_layers_undropped_outputs():
    cfg = lamb_cfg(skip_connection=True)
    params = model.init_params(jax.random.PRNGKey(0), cfg)
    inputs = jnp.arange(12).reshape(3, 4) % 50
    carry = model.zero_carry(cfg, 3)
    summed, _, _ = model.layer_outputs(params, cfg, carry, inputs)
    one_layer = {**params, "lstm": params["lstm"][:1]}
    first, _, _ = model.layer_outputs(one_layer, lamb_cfg(num_layers=1), carry[:1], inputs)
    second, _, _ = model.layer_outputs(params, lamb_cfg(), carry, inputs)
    np.testing.assert_allclose(summed, first + second, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"model.dropout_state": 1.0}, "dropout_state is a drop probability"),
        ({"model.dropout_state": -0.1}, "dropout_state must be >= 0"),
        ({"optim.l2_penalty": -1e-4}, "l2_penalty must be >= 0"),
        ({"optim.average_after_best": -1}, "average_after_best must be >= 0"),
        ({"model.skip_connection": True, "model.hidden_sizes": (20, 30)}, "one size"),
        ({"model.init": "lamb"}, "tie_embeddings=True"),
        (
            {"model.init": "lamb", "model.tie_embeddings": True, "model.softmax": "adaptive"},
            "'adaptive'",
        ),
        ({"optim.tf_adam": True}, "config.optim.name='adam'"),
        ({"eval.temperature_lowest": 1.2}, "from 1.06 down to it"),
        ({"eval.temperature_lowest": -0.8}, "temperature_lowest must be >= 0"),
        ({"model.drop_state_probability": 1.0}, "drop_state_probability is a drop"),
        ({"optim.torch_asgd": True, "optim.name": "adam"}, "config.optim.name='sgd'"),
    ],
)
def test_recipe_keys_that_cannot_act_are_refused_by_name(overrides, message):
    config = config_lib.default_config()
    config.update_from_flattened_dict(overrides)
    with pytest.raises(config_lib.ConfigError, match=message):
        config_lib.validate(config)


@pytest.mark.parametrize(
    "name, vocab, count",
    [("mogrifier_ptb", 10_000, 23_986_480), ("mogrifier_wt2", 33_278, 34_991_552)],
)
def test_the_mogrifier_configs_have_the_parameter_count_of_lambs_rule(name, vocab, count):
    """lamb's rule (lamb_flags._budget_hidden_size): the largest hidden size within the
    budget; its counts hold one vocabulary entry (<UNK>) more: 23,987,393 and 34,991,825."""
    config = importlib.import_module(f"configs.{name}").get_config()
    config_lib.validate(config)
    cfg = config_lib.model_config(config, vocab)
    shapes = jax.eval_shape(lambda: model.init_params(jax.random.PRNGKey(0), cfg))
    assert model.parameter_count(shapes) == count
    assert config.model.skip_connection and config.model.trainable_forget_bias
    assert (config.optim.tf_adam, config.optim.token_mean_loss) == (True, False)


def test_every_target_scores_the_rows_tails_as_one_window_over_the_whole_row_would():
    cfg = model.ModelConfig(vocab_size=20, hidden_size=6, num_layers=1, init_scale=0.3)
    params = model.init_params(jax.random.PRNGKey(0), cfg)
    ids = np.random.default_rng(0).integers(0, 20, 2 * 23 + 1)  # rows of 23: 22 targets
    eval_fn, mesh = evaluation.make_eval_fn(cfg), parallel.make_mesh(1)

    def ppl(steps, every_target):
        return evaluation.evaluate(
            eval_fn, params, ids, 2, steps, cfg=cfg, mesh=mesh, every_target=every_target
        )

    whole_rows = ppl(22, False)  # one window of every target of each row
    assert ppl(5, True) == pytest.approx(whole_rows, rel=1e-5)  # 4 windows and 2 steps
    assert ppl(5, False) != pytest.approx(whole_rows, rel=1e-5)  # 20 of the 22
    assert ppl(11, True) == pytest.approx(whole_rows, rel=1e-5)  # no tail
    assert evaluation.scored_targets(len(ids), 2, 5, True) == 44
    assert evaluation.scored_targets(len(ids), 2, 5, False) == 40
    # PTB's test split as AWD-LSTM tests it (batch 1, bptt 70): all 82,429 targets, 39 more
    # than TF's layout scores.
    assert evaluation.scored_targets(82_430, 1, 70, True) == 82_429
    assert evaluation.scored_targets(82_430, 1, 70, False) == 82_390


def numpy_perplexities(cfg, params, ids, batch_size, num_steps, temperatures, max_batches):
    """Perplexity at each temperature, the logits (softmax.logits' log-scores, from our
    forward pass) multiplied by it in float64 numpy; a mixture's components one by one."""
    inputs_NxBxT, targets_NxBxT = data.epoch_batches(ids, batch_size, num_steps)
    inputs_NxBxT, targets_NxBxT = inputs_NxBxT[:max_batches], targets_NxBxT[:max_batches]
    carry, hs = model.zero_carry(cfg, batch_size), []
    for x in inputs_NxBxT:
        h_TxBxH, carry = model.hidden_states(params, cfg, carry, x)
        hs.append(np.asarray(h_TxBxH, np.float64))
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    out = []
    for t in temperatures:
        total = 0.0
        for h_TxBxH, y_BxT in zip(hs, targets_NxBxT):
            if cfg.softmax == "mos":
                mos = p["softmax"]
                latent = np.tanh(h_TxBxH @ mos["latent"]["w"] + mos["latent"]["b"])
                T, B = latent.shape[:2]
                decoder = mos.get("w", p["embedding"])  # untied here
                logits = t * (latent.reshape(T, B, cfg.mos_experts, -1) @ decoder.T + mos["b"])
                experts = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
                prior = h_TxBxH @ mos["prior"]
                prior = prior - np.log(np.exp(prior).sum(-1, keepdims=True))
                log_probs = np.log(np.exp(prior[..., None] + experts).sum(-2))
            else:
                logits = t * (h_TxBxH @ p["softmax"]["w"].T + p["softmax"]["b"])
                log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
            total -= np.take_along_axis(log_probs, y_BxT.T[..., None], -1).sum()
        out.append(math.exp(total / targets_NxBxT.size))
    return out


@pytest.mark.parametrize("softmax", ["full", "mos"])
def test_the_softmax_temperature_multiplies_the_logits_and_lambs_search_picks_its_best(softmax):
    shape = dict(vocab_size=20, hidden_size=6, num_layers=1, init_scale=0.8, softmax=softmax)
    cfg = model.ModelConfig(**shape, **({"mos_experts": 2} if softmax == "mos" else {}))
    params = model.init_params(jax.random.PRNGKey(0), cfg)
    ids = np.random.default_rng(0).integers(0, 20, 400)
    eval_fn, mesh = evaluation.make_eval_fn(cfg), parallel.make_mesh(1)
    got = evaluation.evaluate(eval_fn, params, ids, 2, 5, cfg=cfg, mesh=mesh, temperature=0.9)
    want = numpy_perplexities(cfg, params, ids, 2, 5, [0.9], None)[0]
    assert got == pytest.approx(want, rel=1e-5)
    # lamb's evaluation.py: 1.06, 1.04, ... down to the lowest, on the first
    # max(1, 50000 // B // T) batches, stopped after two tries without a better one.
    grid = [1.06 - 0.02 * i for i in range(14)]  # down to 0.80
    quick = numpy_perplexities(cfg, params, ids, 2, 5, grid, 50_000 // 2 // 5)
    best_i = 0
    for i in range(len(grid)):
        best_i = i if quick[i] < quick[best_i] else best_i
        if best_i + 1 < i:
            break
    tuned = evaluation.tune_temperature(eval_fn, params, ids, 2, 5, 0.8, cfg=cfg, mesh=mesh)
    assert tuned == pytest.approx(grid[best_i])
    assert tuned != 1.06  # this model's best lies inside the grid


def test_provenance_names_the_code_or_says_it_is_unknown(tmp_path):
    from lstm_lm import provenance

    assert provenance.code(tmp_path) == {"commit": "unknown", "changed": None}  # no checkout
    here = provenance.code()
    assert here["commit"] == "unknown" or len(here["commit"]) == 40
    record = provenance.record()
    assert record["versions"]["jax"] == jax.__version__ and record["device_count"] >= 1
    first = provenance.appended(tmp_path / "run.json", {"n": 1})
    (tmp_path / "run.json").write_text(first)
    assert json.loads(provenance.appended(tmp_path / "run.json", {"n": 2})) == {
        "records": [{"n": 1}, {"n": 2}]
    }

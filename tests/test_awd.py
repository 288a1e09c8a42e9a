"""AWD-LSTM's pieces against independent references: masks read back from the outputs and
from gradients, a numpy LSTM, numpy AR/TAR, finite differences, hand-written traces of
NT-ASGD and of the averaged iterates."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lstm_lm import config as config_lib
from lstm_lm import data, model, optim, parallel, regularisers, softmax, train
from lstm_lm import step as step_lib
from tests.test_model import assert_gradients_match_finite_differences, numpy_basic_lstm_cell

KEY = jax.random.PRNGKey(7)


def awd_cfg(**overrides):
    shape = dict(vocab_size=11, hidden_size=6, num_layers=1, init_scale=0.5)
    return model.ModelConfig(**(shape | overrides))


def setup(cfg, batch=4, steps=9, seed=0):
    params = model.init_params(jax.random.PRNGKey(seed), cfg)
    tokens = np.random.default_rng(seed).integers(0, cfg.vocab_size, (batch, steps + 1))
    return params, tokens[:, :-1].astype(np.int32), tokens[:, 1:].astype(np.int32)


def numpy_layer(layer, x_TxBxI, w_h=None):
    """One LSTM layer from zeros, step by step in float64; `w_h` replaces the layer's."""
    w_h = np.asarray(layer["w_h"] if w_h is None else w_h, np.float64)
    kernel = np.concatenate([np.asarray(layer["w_x"], np.float64), w_h])
    H = w_h.shape[0]
    c = h = np.zeros((x_TxBxI.shape[1], H))
    outputs = []
    for x in x_TxBxI:
        c, h = numpy_basic_lstm_cell(kernel, np.asarray(layer["b"], np.float64), c, h, x, 0.0)
        outputs.append(h)
    return np.stack(outputs), (c, h)


def test_locked_masks_are_the_same_at_every_step_and_differ_across_sequences():
    x_TxBxH = jnp.ones((12, 8, 50))
    keep = regularisers.keep_mask
    locked = np.asarray(regularisers.apply_locked(keep(KEY, (8, 50), 0.6), x_TxBxH, 0.4))
    assert set(np.unique(locked)) == {0.0, np.float32(1 / 0.6)}
    assert (locked == locked[0]).all()  # every time step the same
    assert len({row.tobytes() for row in locked[0]}) == 8  # each sequence its own
    zaremba = np.asarray(regularisers.apply_keep(keep(KEY, x_TxBxH.shape, 0.6), x_TxBxH, 0.6))
    assert not (zaremba[1:] == zaremba[0]).all(axis=(1, 2)).any()  # a new mask per step
    assert regularisers.apply_locked(keep(None, (8, 50), 0.6), x_TxBxH, 0.4) is x_TxBxH


def test_the_output_site_drops_whole_sequences_of_units_in_the_model():
    cfg = awd_cfg(dropout_output=0.5)
    params, inputs, _ = setup(cfg)
    masks = model.dropout_masks(KEY, cfg, *inputs.shape)
    raw, dropped, _ = model.layer_outputs(params, cfg, model.zero_carry(cfg, 4), inputs, masks)
    ratio = np.asarray(dropped / raw)
    np.testing.assert_allclose(ratio, np.broadcast_to(ratio[0], ratio.shape))
    np.testing.assert_allclose(np.unique(ratio.round(5)), [0.0, 2.0])


def test_weight_drop_uses_one_mask_for_every_step_of_a_batch_and_none_in_evaluation():
    cfg = awd_cfg(weight_drop=0.5)
    params, inputs, _ = setup(cfg)
    carry = model.zero_carry(cfg, 4)

    def outputs_sum(w_h, key):
        p = {**params, "lstm": [{**params["lstm"][0], "w_h": w_h}]}
        masks = model.dropout_masks(key, cfg, *inputs.shape)
        return jnp.sum(model.layer_outputs(p, cfg, carry, inputs, masks)[0])

    w_h = params["lstm"][0]["w_h"]
    # A dropped weight has no gradient; were the mask drawn per step, nearly every weight
    # would be kept at some step of the nine.
    kept = np.asarray(jax.grad(outputs_sum)(w_h, KEY)) != 0
    assert 0.35 < 1 - kept.mean() < 0.65
    x_TxBxE = np.asarray(params["embedding"], np.float64)[inputs.T]
    want, _ = numpy_layer(params["lstm"][0], x_TxBxE, np.where(kept, 2 * w_h, 0.0))
    got, _, _ = model.layer_outputs(params, cfg, carry, inputs, model.dropout_masks(KEY, cfg, 4, 9))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    other_batch = np.asarray(jax.grad(outputs_sum)(w_h, jax.random.fold_in(KEY, 1))) != 0
    assert (other_batch != kept).mean() > 0.3
    plain, _ = numpy_layer(params["lstm"][0], x_TxBxE)
    np.testing.assert_allclose(
        model.layer_outputs(params, cfg, carry, inputs)[0], plain, rtol=1e-4, atol=1e-5
    )


def test_embedding_dropout_zeroes_whole_words_and_scales_the_rest():
    V, E = 30, 4
    embedding = jax.random.uniform(KEY, (V, E), minval=1.0, maxval=2.0)
    inputs_BxT = np.tile(np.arange(V), (3, 2))  # every word six times
    keep_V = regularisers.keep_mask(KEY, (V,), 0.75)
    x_TxBxE = np.asarray(regularisers.apply_word_keep(keep_V, embedding, inputs_BxT, 0.25))
    scale = x_TxBxE / np.asarray(embedding)[inputs_BxT.T]
    np.testing.assert_allclose(np.unique(scale.round(5)), [0.0, np.float32(1 / 0.75).round(5)])
    for word in range(V):
        assert len(np.unique(scale[inputs_BxT.T == word].round(5))) == 1  # the whole word
    assert 0 < (scale[..., 0] == 0).mean() < 0.6


def test_with_every_regulariser_off_the_step_is_zarembas_step():
    """Zaremba's step: value_and_grad of TF's cost (model.cost_fn, the evaluation's),
    clipped SGD. (Bitwise equality of whole runs is in experiments/awd_lstm/.)"""
    cfg = awd_cfg(num_layers=2, keep_prob=0.7)
    params, inputs, targets = setup(cfg)
    carry = model.zero_carry(cfg, 4)
    optimizer = optim.make_optimizer(0.5, optim.lr_schedule(1.0, 0.5, 1, 100))
    state = optim.TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params), KEY)
    step = jax.jit(functools.partial(step_lib.train_step, cfg=cfg, optimizer=optimizer))
    new_state, new_carry, metrics = step(state, carry, inputs, targets)

    @jax.jit
    def todays_step(params):
        key = jax.random.fold_in(KEY, 0)
        (cost, carry_out), grads = jax.value_and_grad(model.cost_fn, has_aux=True)(
            params, cfg, carry, inputs, targets, key
        )
        updates, _ = optimizer.update(grads, optimizer.init(params), params)
        return optax.apply_updates(params, updates), carry_out, cost

    want_params, want_carry, want_cost = todays_step(params)
    assert float(metrics["cross_entropy"]) == float(metrics["objective"])
    assert float(metrics["cross_entropy"]) == pytest.approx(float(want_cost), rel=1e-6)
    for got, want in zip(
        jax.tree.leaves((new_state.params, new_carry)), jax.tree.leaves((want_params, want_carry))
    ):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def numpy_ar_tar(raw, dropped, length):
    raw, dropped = np.asarray(raw, np.float64)[:length], np.asarray(dropped, np.float64)[:length]
    return np.mean(dropped**2), np.mean((raw[1:] - raw[:-1]) ** 2)


@pytest.mark.parametrize("length", [None, 6])
def test_ar_and_tar_match_numpy(length):
    rng = np.random.default_rng(0)
    raw, dropped = rng.normal(size=(2, 9, 3, 5)).astype(np.float32)
    mask_T = model.step_mask(9, None if length is None else jnp.int32(length))
    ar, tar = model.activation_penalties(raw, dropped, mask_T)
    want_ar, want_tar = numpy_ar_tar(raw, dropped, length or 9)
    assert float(ar) == pytest.approx(want_ar, rel=1e-5)
    assert float(tar) == pytest.approx(want_tar, rel=1e-5)


def test_the_awd_objective_has_the_gradients_of_finite_differences():
    cfg = awd_cfg(vocab_size=7, hidden_size=3, num_layers=2, tie_embeddings=True, embedding_size=3)
    params, inputs, targets = setup(cfg, batch=2, steps=5)
    objective = step_lib.Objective(token_mean=True, ar_alpha=2.0, tar_beta=1.0, base_length=5)
    with jax.enable_x64(True):
        params64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
        carry64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), model.zero_carry(cfg, 2))

        @jax.jit
        def value(p):
            args = (p, carry64, inputs, targets, None, jnp.int32(4))
            return step_lib.objective_fn(*args, cfg=cfg, objective=objective)[0]

        assert_gradients_match_finite_differences(value, params64, per_leaf=4)


def test_the_awd_objective_is_the_token_mean_plus_ar_and_tar():
    cfg = awd_cfg(dropout_output=0.3)
    params, inputs, targets = setup(cfg)
    carry = model.zero_carry(cfg, 4)
    length = jnp.int32(6)
    objective = step_lib.Objective(token_mean=True, ar_alpha=2.0, tar_beta=1.0, base_length=9)
    value, (cross_entropy, _) = step_lib.objective_fn(
        params, carry, inputs, targets, KEY, length, cfg=cfg, objective=objective
    )
    masks = model.dropout_masks(KEY, cfg, *inputs.shape)
    raw, dropped, _ = model.layer_outputs(params, cfg, carry, inputs, masks, length)
    logits = np.asarray(softmax.logits(params, cfg, dropped), np.float64)[:6]
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    token_log_probs = np.take_along_axis(log_probs, targets.T[:6, :, None], -1)
    assert float(cross_entropy) == pytest.approx(-token_log_probs.sum() / 4, rel=1e-5)
    ar, tar = numpy_ar_tar(raw, dropped, 6)
    want = -token_log_probs.mean() + 2.0 * ar + 1.0 * tar
    assert float(value) == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("unroll", [1, 4])
def test_the_carry_after_a_padded_batch_is_the_carry_after_its_real_steps(unroll):
    cfg = awd_cfg(num_layers=2)
    params, inputs, _ = setup(cfg, steps=10)
    carry = model.zero_carry(cfg, 4)
    padded = np.where(np.arange(10) < 7, inputs, 0)
    raw_pad, _, carry_pad = model.layer_outputs(
        params, cfg, carry, padded, None, jnp.int32(7), unroll
    )
    raw_real, _, carry_real = model.layer_outputs(params, cfg, carry, inputs[:, :7])
    for got, want in zip(jax.tree.leaves(carry_pad), jax.tree.leaves(carry_real)):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(raw_pad[:7], raw_real, rtol=1e-6, atol=1e-7)


def test_random_lengths_walk_the_rows_as_awds_loop_and_stay_in_bounds():
    lengths = data.random_lengths(np.random.default_rng(0), 20_000, 70)
    assert lengths.sum() == 20_000 - 1  # every position but the last has a target
    assert lengths.min() >= 1 and lengths[:-1].min() >= data.MIN_LENGTH
    assert lengths.max() <= 70 + data.EXTRA
    assert 0.01 < (lengths[:-1] < 52).mean() < 0.1  # the short windows, about 5%
    assert 60 < np.median(lengths) < 80
    again = data.random_lengths(np.random.default_rng(0), 20_000, 70)
    np.testing.assert_array_equal(lengths, again)


def test_an_epoch_of_random_lengths_compiles_once_per_padded_length():
    cfg = awd_cfg(vocab_size=20, hidden_size=4)
    optimizer = optim.make_optimizer(1.0, lambda step: 0.5, length_scaled=True)
    params = model.init_params(jax.random.PRNGKey(0), cfg)
    state = optim.TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params), KEY)
    traced_lengths = []

    def counted_chunk(*args, **kwargs):
        traced_lengths.append(args[2].shape[-1])  # runs once per compilation
        return step_lib.train_chunk(*args, **kwargs)

    objective = step_lib.Objective(base_length=20)
    kwargs = dict(cfg=cfg, optimizer=optimizer, objective=objective)
    chunk_fn = jax.jit(functools.partial(counted_chunk, **kwargs))
    stream_BxL = np.random.default_rng(0).integers(0, 20, (2, 3000)).astype(np.int32)
    lengths_N = data.random_lengths(np.random.default_rng(1), 3000, 20)
    epoch = train.Epoch(stream_BxL, lengths_N, random=True, bucket=8)
    assert len(set(lengths_N.tolist())) > 15
    carry = model.zero_carry(cfg, 2)
    for b in range(len(epoch)):
        state, carry, _, _ = chunk_fn(state, carry, *epoch.batches(b, b + 1))
    assert sorted(traced_lengths) == sorted({-(-n // 8) * 8 for n in lengths_N.tolist()})
    assert len(traced_lengths) <= (20 + data.EXTRA) // 8 + 1


def awd_training(steps_per_call: int, vocab_size: int = 30):
    """(config, jitted train_chunk, state, carry) of a small AWD-like run with random
    lengths: every regulariser on, the learning rate scaled by length."""
    config = config_lib.default_config()
    config.model.update(
        num_layers=2, hidden_sizes=(12, 8), keep_prob=0.7, weight_drop=0.3, dropout_hidden=0.2
    )
    config.optim.update(max_grad_norm=0.5, token_mean_loss=True, ar_alpha=2.0, tar_beta=1.0)
    config.train.update(
        num_steps=20, batch_size=3, random_lengths=True, length_bucket=25,
        steps_per_call=steps_per_call,
    )  # fmt: skip
    cfg = config_lib.model_config(config, vocab_size)
    mesh = parallel.make_mesh(1)
    state, _, train_fn, _ = train.create_training(config, cfg, 100, mesh)
    return config, train_fn, state, parallel.put_carry(model.zero_carry(cfg, 3), mesh)


def test_a_call_of_random_length_batches_is_bitwise_one_call_per_batch():
    # AWD's lengths around 20 (at most 60), in buckets of 25: one call per batch compiles
    # per bucket; four per call pads each call to 75 steps, compiles once and switches on
    # each batch's bucket, and must give every bit of the parameters, optimizer state,
    # carry and per-step metrics the same, through a call cut short by the epoch's end
    # and one cut where a resumed run would start.
    stream_BxL = np.random.default_rng(0).integers(0, 30, (3, 400)).astype(np.int32)
    results = {}
    for k in (1, 4):
        config, train_fn, state, carry = awd_training(k)
        layout = train.epoch_layout(stream_BxL, config, epoch=2)
        assert len({-(-n // 25) for n in layout.lengths_N.tolist()}) >= 2  # several buckets
        bounds = train.chunk_bounds(0, 13, k) + train.chunk_bounds(13, len(layout), k)
        metrics = []
        for lo, hi in bounds:
            state, carry, metrics_K, _ = train_fn(state, carry, *layout.batches(lo, hi))
            metrics.append({name: np.asarray(m)[: hi - lo] for name, m in metrics_K.items()})
        if k == 4:
            assert layout.batches(0, 4)[0].shape == (4, 3, 75)
            assert (hi - lo, len(bounds)) == (len(layout) % 4 or 4, -(-len(layout) // 4) + 1)
            assert train_fn._cache_size() == 1
        results[k] = (
            state,
            carry,
            {n: np.concatenate([m[n] for m in metrics]) for n in metrics[0]},
        )
    (state_1, carry_1, metrics_1), (state_4, carry_4, metrics_4) = results[1], results[4]
    assert int(state_4.step) == len(metrics_4["cross_entropy"]) == len(layout)
    for a, b in zip(
        jax.tree.leaves((state_1, carry_1, metrics_1)),
        jax.tree.leaves((state_4, carry_4, metrics_4)),
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_a_steps_learning_rate_is_scaled_by_its_length_over_the_base_length():
    cfg = awd_cfg()
    params, inputs, targets = setup(cfg, steps=10)
    carry, length = model.zero_carry(cfg, 4), jnp.int32(4)
    new_params = []
    for lr, length_scaled in ((0.5, True), (0.5 * 4 / 10, False)):
        optimizer = optim.make_optimizer(1e9, lambda step, lr=lr: lr, length_scaled=length_scaled)
        state = optim.TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params), KEY)
        step = functools.partial(
            step_lib.train_step,
            cfg=cfg,
            optimizer=optimizer,
            objective=step_lib.Objective(base_length=10),
        )
        new_params.append(jax.jit(step)(state, carry, inputs, targets, length)[0].params)
    for scaled, plain, old in zip(*map(jax.tree.leaves, (*new_params, params))):
        assert np.abs(np.asarray(scaled - old)).max() > 0
        np.testing.assert_allclose(scaled, plain, rtol=1e-6, atol=1e-7)


def test_nt_asgd_switches_at_the_epoch_a_hand_trace_says():
    # AWD: switch when the latest loss is worse than the best of those > nonmono epochs back.
    valid = [300, 200, 150, 140, 141, 139, 142, 143, 138]
    history = [{"valid_perplexity": v} for v in valid]
    switches = [e for e in range(1, len(valid) + 1) if train.nonmonotone(history[:e], 2)]
    # epoch 5 (141): the best up to epoch 2 is 200 -> no; epoch 7 (142): best of 1..4 is 140
    assert switches[0] == 7
    assert not any(train.nonmonotone(history[:e], 0) for e in range(1, 10))


def test_the_average_is_the_mean_of_the_iterates_since_the_switch():
    cfg = awd_cfg(vocab_size=9, hidden_size=3)
    optimizer = optim.make_optimizer(1e9, lambda step: 0.3, averaging=True)
    params, inputs, targets = setup(cfg, batch=2, steps=3)
    state = optim.TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params), KEY)
    step = jax.jit(functools.partial(step_lib.train_step, cfg=cfg, optimizer=optimizer))
    carry = model.zero_carry(cfg, 2)
    for _ in range(3):
        state, carry, _ = step(state, carry, inputs, targets)
    assert optim.eval_params(state) is state.params  # not averaging yet
    state = optim.start_averaging(state)
    iterates = []
    for _ in range(4):
        state, carry, _ = step(state, carry, inputs, targets)
        iterates.append(jax.tree.map(np.asarray, state.params))
    want = jax.tree.map(lambda *ps: np.mean(np.stack(ps), axis=0), *iterates)
    for got, w in zip(jax.tree.leaves(optim.eval_params(state)), jax.tree.leaves(want)):
        np.testing.assert_allclose(got, w, rtol=1e-5, atol=1e-7)


def test_awd_init_draws_the_lstm_from_its_size_and_zeroes_the_softmax_bias():
    cfg = awd_cfg(vocab_size=500, hidden_size=100, init="awd", init_scale=0.1)
    params = model.init_params(jax.random.PRNGKey(0), cfg)
    bound = 100**-0.5
    for name in ("w_x", "w_h"):
        w = np.asarray(params["lstm"][0][name])
        assert bound * 0.98 < np.abs(w).max() <= bound
    b = np.asarray(params["lstm"][0]["b"])
    assert bound < np.abs(b).max() <= 2 * bound  # the sum of PyTorch's two biases
    assert 0.098 < np.abs(np.asarray(params["embedding"])).max() <= 0.1
    assert not np.asarray(params["softmax"]["b"]).any()


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("model.weight_drop", 1.0, r"config.model.weight_drop is a drop probability in \[0, 1\)"),
        ("model.dropout_input", -0.1, r"config.model.dropout_input must be >= 0"),
        ("model.init", "xavier", r"config.model.init must be one of uniform, awd"),
        ("optim.nonmono", -1, r"config.optim.nonmono must be >= 0"),
        ("train.length_bucket", 0, r"config.train.length_bucket must be > 0"),
    ],
)
def test_awd_keys_out_of_range_are_refused_by_name(key, value, message):
    config = config_lib.default_config()
    group, name = key.split(".")
    config[group][name] = value
    with pytest.raises(config_lib.ConfigError, match=message):
        config_lib.validate(config)


def test_the_awd_configs_set_the_repositorys_values():
    import importlib

    ptb = importlib.import_module("configs.awd_lstm_ptb").get_config()
    wt2 = importlib.import_module("configs.awd_lstm_wt2").get_config()
    for config in (ptb, wt2):
        config_lib.validate(config)
        assert config.model.hidden_sizes == (1150, 1150, 400) and config.model.tie_embeddings
        assert (config.optim.learning_rate, config.optim.max_grad_norm) == (30.0, 0.25)
        assert (config.optim.ar_alpha, config.optim.tar_beta, config.optim.nonmono) == (2, 1, 5)
    assert (ptb.seed, ptb.train.batch_size, ptb.model.dropout_input) == (141, 20, 0.4)
    assert (wt2.seed, wt2.train.batch_size, wt2.model.dropout_input) == (1882, 80, 0.65)
    assert wt2.data.name == "wikitext2" and wt2.model.dropout_hidden == 0.2


@pytest.mark.parametrize("site, layer", [("dropout_input", 0), ("dropout_hidden", 1)])
def test_the_input_and_between_layer_sites_drop_whole_units_for_the_whole_sequence(site, layer):
    # Read from the gradient: row u of dL/dw_x of the layer after the site sums unit u of
    # that layer's input over the steps, so with one sequence it is zero exactly when
    # the site dropped unit u for the whole sequence (a fresh mask per step would almost
    # never do so for 20 steps), and no other layer's w_x loses a row.
    cfg = awd_cfg(hidden_size=16, num_layers=2, **{site: 0.5})
    params, inputs, targets = setup(cfg, batch=1, steps=20)
    key = jax.random.PRNGKey(3)

    def objective(params, key):
        carry = model.zero_carry(cfg, 1)
        return step_lib.objective_fn(
            params, carry, inputs, targets, key, None, cfg=cfg, objective=step_lib.Objective()
        )[0]

    gradient = jax.jit(jax.grad(objective))

    def zero_rows(key):
        grads = gradient(params, key)
        return [int((np.abs(np.asarray(g["w_x"])).sum(axis=1) == 0).sum()) for g in grads["lstm"]]

    dropped = zero_rows(key)
    assert 3 <= dropped[layer] <= 13, dropped  # about half of 16
    assert dropped[1 - layer] == 0, dropped
    again = zero_rows(jax.random.PRNGKey(4))  # another key, another mask
    assert again[layer] > 0

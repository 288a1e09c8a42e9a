"""The schedule, the optimizer step, the chunked loop, config checks."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lstm_lm import config as config_lib
from lstm_lm import data, evaluation, model, optim, train
from lstm_lm import step as step_lib


def test_schedule_is_tf_staircase_per_epoch():
    steps_per_epoch = 7
    schedule = optim.lr_schedule(1.0, 0.5, full_lr_epochs=4, steps_per_epoch=steps_per_epoch)
    want = [1.0, 1.0, 1.0, 1.0, 0.5, 0.25, 0.125, 0.0625]  # TF small config, epochs 0..7
    for epoch, lr in enumerate(want):
        for step in (epoch * steps_per_epoch, (epoch + 1) * steps_per_epoch - 1):
            assert float(schedule(step)) == pytest.approx(lr)
    large = optim.lr_schedule(1.0, 1 / 1.15, full_lr_epochs=14, steps_per_epoch=1)
    assert float(large(13)) == pytest.approx(1.0)
    assert float(large(16)) == pytest.approx(1.15**-3, rel=1e-6)


def small_state(cfg, lr=1.0, max_grad_norm=5.0):
    optimizer = optim.make_optimizer(max_grad_norm, optim.lr_schedule(lr, 0.5, 1, 100))
    params = model.init_params(jax.random.PRNGKey(0), cfg)
    state = optim.TrainState(
        jnp.zeros((), jnp.int32), params, optimizer.init(params), jax.random.PRNGKey(1)
    )
    step_kwargs = dict(cfg=cfg, optimizer=optimizer)
    return state, step_kwargs


def random_batches(num_batches, batch_size, num_steps, vocab, seed=0):
    tokens = np.random.default_rng(seed).integers(
        0, vocab, (num_batches, batch_size, num_steps + 1)
    )
    return tokens[..., :-1].astype(np.int32), tokens[..., 1:].astype(np.int32)


def test_one_train_step_lowers_the_cost_on_a_fixed_batch():
    cfg = model.ModelConfig(vocab_size=50, hidden_size=16, num_layers=2, init_scale=0.1)
    state, step_kwargs = small_state(cfg)
    inputs, targets = (a[0] for a in random_batches(1, 4, 5, cfg.vocab_size))
    carry = model.zero_carry(cfg, 4)
    before, _ = model.cost_fn(state.params, cfg, carry, inputs, targets)
    state, _, metrics = jax.jit(functools.partial(step_lib.train_step, **step_kwargs))(
        state, carry, inputs, targets
    )
    after, _ = model.cost_fn(state.params, cfg, carry, inputs, targets)
    assert float(metrics["cross_entropy"]) == pytest.approx(float(before), rel=1e-6)
    assert float(metrics["objective"]) == float(metrics["cross_entropy"])  # no regulariser
    assert float(after) < float(before) - 0.1
    assert int(state.step) == 1


def test_sgd_step_is_clipped_gradient_times_lr():
    cfg = model.ModelConfig(vocab_size=20, hidden_size=8, num_layers=1, init_scale=0.5)
    state, step_kwargs = small_state(cfg, lr=0.7, max_grad_norm=0.01)
    inputs, targets = (a[0] for a in random_batches(1, 3, 4, cfg.vocab_size))
    carry = model.zero_carry(cfg, 3)
    grads = jax.grad(lambda p: model.cost_fn(p, cfg, carry, inputs, targets)[0])(state.params)
    norm = math.sqrt(sum(float(jnp.sum(g**2)) for g in jax.tree.leaves(grads)))
    assert norm > 0.01  # so the clip is active
    new_state, _, metrics = jax.jit(functools.partial(step_lib.train_step, **step_kwargs))(
        state, carry, inputs, targets
    )
    assert float(metrics["grad_norm"]) == pytest.approx(norm, rel=1e-5)
    for old, new, g in zip(*map(jax.tree.leaves, (state.params, new_state.params, grads))):
        np.testing.assert_allclose(new, old - 0.7 * g * (0.01 / norm), rtol=1e-4, atol=1e-7)


def test_chunked_training_equals_step_by_step_with_carry_threaded():
    cfg = model.ModelConfig(
        vocab_size=30, hidden_size=8, num_layers=2, init_scale=0.1, keep_prob=0.8
    )
    state, step_kwargs = small_state(cfg)
    inputs, targets = random_batches(6, 3, 4, cfg.vocab_size)
    step_fn = jax.jit(functools.partial(step_lib.train_step, **step_kwargs))
    loop_state, carry, costs = state, model.zero_carry(cfg, 3), []
    for x, y in zip(inputs, targets):
        loop_state, carry, metrics = step_fn(loop_state, carry, x, y)
        costs.append(float(metrics["cross_entropy"]))
    chunk_fn = jax.jit(functools.partial(step_lib.train_chunk, **step_kwargs))
    chunk_state, chunk_carry, metrics_a, finite = chunk_fn(
        state, model.zero_carry(cfg, 3), inputs[:3], targets[:3]
    )
    chunk_state, chunk_carry, metrics_b, _ = chunk_fn(
        chunk_state, chunk_carry, inputs[3:], targets[3:]
    )
    chunk_costs = np.concatenate([metrics_a["cross_entropy"], metrics_b["cross_entropy"]])
    np.testing.assert_allclose(chunk_costs, costs, rtol=1e-5)
    assert bool(finite)
    for got, want in zip(jax.tree.leaves(chunk_state.params), jax.tree.leaves(loop_state.params)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    for got, want in zip(jax.tree.leaves(chunk_carry), jax.tree.leaves(carry)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_eval_pass_threads_the_carry_from_zeros():
    cfg = model.ModelConfig(vocab_size=30, hidden_size=8, num_layers=2, init_scale=0.3)
    params = model.init_params(jax.random.PRNGKey(0), cfg)
    inputs, targets = random_batches(5, 3, 4, cfg.vocab_size)
    carry, want = model.zero_carry(cfg, 3), 0.0
    for x, y in zip(inputs, targets):
        cost, carry = model.cost_fn(params, cfg, carry, x, y)
        want += float(cost)
    got, got_carry = evaluation.eval_pass(
        params, model.zero_carry(cfg, 3), inputs, targets, cfg=cfg
    )
    np.testing.assert_allclose(float(got), want, rtol=1e-5)
    for got, want in zip(jax.tree.leaves(got_carry), jax.tree.leaves(carry)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    "key, value",
    [
        ("train.batch_size", 0),
        ("train.num_steps", -1),
        ("model.keep_prob", 0.0),
        ("model.keep_prob", 1.5),
        ("optim.learning_rate", 0.0),
        ("train.max_batches_per_epoch", -2),
        ("optim.learning_rate", float("inf")),
        ("optim.max_grad_norm", float("nan")),
        ("train.steps_per_call", 0),
        ("train.keep_checkpoints", 0),
        ("train.checkpoint_every_steps", -1),
        ("data.min_count", 0),
        ("model.embedding_size", -1),
    ],
)
def test_nonsensical_config_values_are_refused_by_name(key, value):
    config = config_lib.default_config()
    group, name = key.split(".")
    config[group][name] = value
    with pytest.raises(config_lib.ConfigError, match=f"config.{key} must be"):
        config_lib.validate(config)


@pytest.mark.parametrize(
    "model_overrides, message",
    [
        (dict(hidden_sizes=(4, 4, 4)), r"hidden_sizes=\(4, 4, 4\) has 3 sizes for .*num_layers=2"),
        (dict(hidden_sizes=(4, 0)), r"config.model.hidden_sizes must be > 0, got 0"),
        (dict(tie_embeddings=True, hidden_sizes=(8, 6)), r"last layer's size \(6\) .* \(8\)"),
        (dict(tie_embeddings=True, embedding_size=5), r"last layer's size \(200\) .* \(5\)"),
    ],
)
def test_model_shapes_that_cannot_be_built_are_refused(model_overrides, message):
    config = config_lib.default_config()
    config.model.update(model_overrides)
    with pytest.raises(config_lib.ConfigError, match=message):
        config_lib.validate(config)


def test_the_model_group_is_the_model_config_but_the_vocabulary():
    config = config_lib.default_config()
    config.model.hidden_sizes = (6, 4)
    cfg = config_lib.model_config(config, vocab_size=11)
    assert cfg.vocab_size == 11 and cfg.layer_sizes == (6, 4) and cfg.input_size == 6
    assert hash(cfg) == hash(config_lib.model_config(config, vocab_size=11))


def test_chunk_bounds_follow_the_epochs_fixed_grid_from_any_start():
    assert train.chunk_bounds(0, 11, 4) == [(0, 4), (4, 8), (8, 11)]
    assert train.chunk_bounds(4, 11, 4) == [(4, 8), (8, 11)]
    assert train.chunk_bounds(8, 11, 4) == [(8, 11)]
    assert train.chunk_bounds(6, 11, 4) == [(6, 8), (8, 11)]  # a position off the grid
    assert train.chunk_bounds(11, 11, 4) == []


def epoch_config(num_steps, random_lengths=False, bucket=5, max_batches=0, seed=0):
    config = config_lib.default_config()
    config.seed = seed
    config.train.update(
        num_steps=num_steps,
        random_lengths=random_lengths,
        length_bucket=bucket,
        max_batches_per_epoch=max_batches,
    )
    return config


def test_the_training_batches_are_tfs_reader_vector():
    # TF's reader_test.py vector: 15 ids, batch 3, 2 steps -> two batches, written out.
    data_BxL = data.batchify([4, 3, 2, 1, 0, 5, 6, 1, 1, 1, 1, 0, 3, 4, 1], 3)
    epoch = train.epoch_layout(data_BxL, epoch_config(num_steps=2), epoch=1)
    assert len(epoch) == 2 and epoch.steps() == 4
    inputs, targets, lengths = epoch.batches(0, 2)
    assert lengths is None
    np.testing.assert_array_equal(inputs[0], [[4, 3], [5, 6], [1, 0]])
    np.testing.assert_array_equal(targets[0], [[3, 2], [6, 1], [0, 3]])
    np.testing.assert_array_equal(inputs[1], [[2, 1], [1, 1], [3, 4]])
    np.testing.assert_array_equal(targets[1], [[1, 0], [1, 1], [4, 1]])
    # A call may start anywhere in the epoch: batches [1, 2) are batch 1.
    np.testing.assert_array_equal(epoch.batches(1, 2)[0][0], [[2, 1], [1, 1], [3, 4]])


def test_random_length_batches_are_consecutive_windows_offset_by_one_and_padded():
    # Two rows of 0..29 and 100..129, hand-chosen lengths 7, 3, 12: the windows start at
    # 0, 7, 10; inputs are row[s:s+n], targets row[s+1:s+1+n]; a call pads to the next
    # multiple of the bucket (5) above its longest window, with zeros.
    data_BxL = np.stack([np.arange(30), np.arange(100, 130)]).astype(np.int32)
    epoch = train.Epoch(data_BxL, np.array([7, 3, 12], np.int32), random=True, bucket=5)
    inputs, targets, lengths = epoch.batches(0, 3)
    assert inputs.shape == targets.shape == (3, 2, 15)
    np.testing.assert_array_equal(lengths, [7, 3, 12])
    for k, (start, n) in enumerate([(0, 7), (7, 3), (10, 12)]):
        for b, base in enumerate((0, 100)):
            want_x = list(range(base + start, base + start + n)) + [0] * (15 - n)
            want_y = list(range(base + start + 1, base + start + 1 + n)) + [0] * (15 - n)
            assert inputs[k, b].tolist() == want_x and targets[k, b].tolist() == want_y
    inputs, _, lengths = epoch.batches(1, 2)  # a call of the short window alone: 5 wide
    assert inputs.shape == (1, 2, 5) and inputs[0, 0].tolist() == [7, 8, 9, 0, 0]
    # The layout of an epoch: AWD's lengths from (seed, epoch), walking each row once.
    drawn = train.epoch_layout(data_BxL, epoch_config(5, random_lengths=True), epoch=3)
    again = data.random_lengths(np.random.default_rng([0, 3]), 30, 5)
    np.testing.assert_array_equal(drawn.lengths_N, again)
    assert drawn.steps() == 29  # every id but the last of a row is an input once


@pytest.mark.parametrize(
    "regulariser", [dict(keep_prob=0.5), dict(weight_drop=0.5), dict(dropout_output=0.5)]
)
def test_every_training_step_draws_fresh_dropout_masks(regulariser):
    # With the learning rate 0 the parameters stay; from the same carry on the same batch,
    # two consecutive steps differ only in their masks. A frozen key gives equal costs.
    cfg = model.ModelConfig(
        vocab_size=13, hidden_size=8, num_layers=2, init_scale=0.5, **regulariser
    )
    state, step_kwargs = small_state(cfg, lr=0.0)
    inputs, targets = random_batches(1, 3, 6, 13)
    step = jax.jit(functools.partial(step_lib.train_step, **step_kwargs))
    carry = model.zero_carry(cfg, 3)
    costs = []
    for _ in range(3):
        state, _, metrics = step(state, carry, inputs[0], targets[0])
        costs.append(float(metrics["cross_entropy"]))
    assert len(set(costs)) == 3, costs
    # The masks come from (dropout key, step): a resumed run at step 1 draws step 1's.
    resumed = state.replace(step=jnp.ones((), jnp.int32))
    again = step(resumed, carry, inputs[0], targets[0])[2]["cross_entropy"]
    assert float(again) == costs[1]

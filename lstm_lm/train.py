"""Training and evaluation: schedule -> optimizer -> train_step -> eval -> the loop.

The step functions are plain Python over explicit state, jitted once in
`train_and_evaluate`. A jitted call walks a whole chunk of batches (`lax.scan` over
`train_step`), so the host only syncs at log points; the recurrent carry goes from
batch to batch, is reset to zeros at the start of each epoch and of each evaluation.
"""

import functools
import json
import math
import pathlib
import time

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from lstm_lm import data, model

PROGRESS_REPORTS_PER_EPOCH = 10


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # global step, int32 scalar
    params: dict
    opt_state: optax.OptState


def base_config() -> ml_collections.ConfigDict:
    """Every key the trainer reads, with defaults; the config files set the rest."""
    return ml_collections.ConfigDict(
        {
            "data_dir": "",  # '' = $LSTM_LM_DATA_DIR or ~/.cache/lstm_lm/ptb
            "seed": 0,
            "init_scale": 0.1,
            "learning_rate": 1.0,
            "max_grad_norm": 5.0,
            "num_layers": 2,
            "num_steps": 20,
            "hidden_size": 200,
            "full_lr_epochs": 4,
            "num_epochs": 13,
            "keep_prob": 1.0,
            "lr_decay": 0.5,
            "batch_size": 20,
            "forget_bias": 0.0,
            "test_batch_size": 1,
            "test_num_steps": 1,
            "max_batches_per_epoch": 0,  # 0 = the whole training set each epoch
        }
    )


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Raise ValueError naming the key and value of the first nonsensical setting."""
    positive = [
        "init_scale",
        "learning_rate",
        "max_grad_norm",
        "num_layers",
        "num_steps",
        "hidden_size",
        "num_epochs",
        "lr_decay",
        "batch_size",
        "test_batch_size",
        "test_num_steps",
    ]
    for key in positive:
        if not config[key] > 0:
            raise ValueError(f"config.{key} must be > 0, got {config[key]!r}.")
    if not 0.0 < config.keep_prob <= 1.0:
        raise ValueError(f"config.keep_prob must be in (0, 1], got {config.keep_prob!r}.")
    for key in ("full_lr_epochs", "max_batches_per_epoch"):
        if config[key] < 0:
            raise ValueError(f"config.{key} must be >= 0, got {config[key]!r}.")


def lr_schedule(
    learning_rate: float, lr_decay: float, full_lr_epochs: int, steps_per_epoch: int
) -> optax.Schedule:
    """TF's staircase: epoch i (from 0) uses lr * lr_decay ** max(i + 1 - full_lr_epochs, 0)."""

    def schedule(step):
        epoch = step // steps_per_epoch
        return learning_rate * lr_decay ** jnp.maximum(epoch + 1 - full_lr_epochs, 0)

    return schedule


def make_optimizer(max_grad_norm: float, schedule: optax.Schedule) -> optax.GradientTransformation:
    return optax.chain(optax.clip_by_global_norm(max_grad_norm), optax.sgd(schedule))


def train_step(
    state: TrainState,
    carry: model.Carry,
    inputs_BxT: jax.Array,
    targets_BxT: jax.Array,
    *,
    cfg: model.ModelConfig,
    optimizer: optax.GradientTransformation,
    dropout_key: jax.Array,
) -> tuple[TrainState, model.Carry, jax.Array]:
    """One SGD step on one batch: (new state, new carry, cost)."""
    step_key = jax.random.fold_in(dropout_key, state.step)
    grad_fn = jax.value_and_grad(model.cost_fn, has_aux=True)
    (cost, carry), grads = grad_fn(state.params, cfg, carry, inputs_BxT, targets_BxT, step_key)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return TrainState(state.step + 1, params, opt_state), carry, cost


def train_chunk(
    state: TrainState,
    carry: model.Carry,
    inputs_NxBxT: jax.Array,
    targets_NxBxT: jax.Array,
    **step_kwargs,
) -> tuple[TrainState, model.Carry, jax.Array]:
    """`train_step` over N consecutive batches: (state, carry, summed cost)."""

    def body(state_and_carry, batch):
        state, carry, cost = train_step(*state_and_carry, *batch, **step_kwargs)
        return (state, carry), cost

    (state, carry), costs_N = jax.lax.scan(body, (state, carry), (inputs_NxBxT, targets_NxBxT))
    return state, carry, jnp.sum(costs_N)


def eval_pass(
    params: dict, inputs_NxBxT: jax.Array, targets_NxBxT: jax.Array, *, cfg: model.ModelConfig
) -> jax.Array:
    """Summed cost over all N batches, the carry starting from zeros and threaded through."""

    def body(carry, batch):
        cost, carry = model.cost_fn(params, cfg, carry, *batch)
        return carry, cost

    carry = model.zero_carry(cfg, inputs_NxBxT.shape[1])
    _, costs_N = jax.lax.scan(body, carry, (inputs_NxBxT, targets_NxBxT))
    return jnp.sum(costs_N)


def perplexity(cost_sum: float, num_batches: int, num_steps: int) -> float:
    """exp(total cost / total time steps), as TF's run_epoch."""
    return math.exp(cost_sum / (num_batches * num_steps))


def evaluate(eval_fn, params, raw_ids: np.ndarray, batch_size: int, num_steps: int) -> float:
    """Perplexity of `params` on `raw_ids` laid out as TF's reader does."""
    inputs_NxBxT, targets_NxBxT = data.epoch_batches(raw_ids, batch_size, num_steps)
    cost_sum = float(eval_fn(params, inputs_NxBxT, targets_NxBxT))
    return perplexity(cost_sum, len(inputs_NxBxT), num_steps)


def run_epoch(train_fn, state, epoch_inputs, epoch_targets, cfg, epoch: int):
    """Train over one epoch's batches, logging about every 10%: (state, perplexity, wps)."""
    num_batches, batch_size, num_steps = epoch_inputs.shape
    bounds = np.linspace(0, num_batches, PROGRESS_REPORTS_PER_EPOCH + 1).round().astype(int)
    carry = model.zero_carry(cfg, batch_size)
    cost_sum, start = 0.0, time.perf_counter()
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        if hi == lo:
            continue
        state, carry, chunk_cost = train_fn(state, carry, epoch_inputs[lo:hi], epoch_targets[lo:hi])
        cost_sum += float(chunk_cost)
        if not math.isfinite(cost_sum):
            raise FloatingPointError(
                f"Non-finite training cost in epoch {epoch}, batches {lo}-{hi} "
                f"(global step {int(state.step)}). Lower learning_rate or max_grad_norm."
            )
        words_per_sec = hi * batch_size * num_steps / (time.perf_counter() - start)
        logging.info(
            "epoch %d %3.0f%% perplexity %.2f speed %.0f wps",
            epoch,
            100 * hi / num_batches,
            perplexity(cost_sum, hi, num_steps),
            words_per_sec,
        )
    return state, perplexity(cost_sum, num_batches, num_steps), words_per_sec


def model_config(config: ml_collections.ConfigDict, vocab_size: int) -> model.ModelConfig:
    return model.ModelConfig(
        vocab_size=vocab_size,
        hidden_size=config.hidden_size,
        num_layers=config.num_layers,
        init_scale=config.init_scale,
        keep_prob=config.keep_prob,
        forget_bias=config.forget_bias,
    )


def load_data(config: ml_collections.ConfigDict):
    """(epoch_inputs_NxBxT, epoch_targets_NxBxT, valid_ids, test_ids, vocab): the training
    epoch laid out once, cut to `max_batches_per_epoch` when that is set."""
    train_ids, valid_ids, test_ids, vocab = data.ptb_raw_data(config.data_dir or None)
    epoch_inputs, epoch_targets = data.epoch_batches(train_ids, config.batch_size, config.num_steps)
    if config.max_batches_per_epoch:
        epoch_inputs = epoch_inputs[: config.max_batches_per_epoch]
        epoch_targets = epoch_targets[: config.max_batches_per_epoch]
    return epoch_inputs, epoch_targets, valid_ids, test_ids, vocab


def create_training(config: ml_collections.ConfigDict, cfg: model.ModelConfig, steps_per_epoch):
    """(initial state, schedule, jitted train_chunk, jitted eval_pass)."""
    init_key, dropout_key = jax.random.split(jax.random.PRNGKey(config.seed))
    schedule = lr_schedule(
        config.learning_rate, config.lr_decay, config.full_lr_epochs, steps_per_epoch
    )
    optimizer = make_optimizer(config.max_grad_norm, schedule)
    params = model.init_params(init_key, cfg)
    state = TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params))
    step_kwargs = dict(cfg=cfg, optimizer=optimizer, dropout_key=dropout_key)
    train_fn = jax.jit(functools.partial(train_chunk, **step_kwargs), donate_argnums=(0, 1))
    eval_fn = jax.jit(functools.partial(eval_pass, cfg=cfg))
    return state, schedule, train_fn, eval_fn


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> dict:
    """Train, validate each epoch, test at the end; writes config.json, metrics.jsonl
    and results.json into `workdir` and returns the results."""
    validate_config(config)
    start = time.perf_counter()
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.json").write_text(config.to_json(indent=2) + "\n")
    epoch_inputs, epoch_targets, valid_ids, test_ids, vocab = load_data(config)
    steps_per_epoch = len(epoch_inputs)
    logging.info("vocabulary %d words; %d batches per epoch", len(vocab), steps_per_epoch)
    cfg = model_config(config, len(vocab))
    state, schedule, train_fn, eval_fn = create_training(config, cfg, steps_per_epoch)

    metrics_path = workdir / "metrics.jsonl"
    metrics_path.write_text("")
    train_seconds = 0.0
    for epoch in range(1, config.num_epochs + 1):
        # Schedule -> train one epoch -> validate -> record.
        epoch_start = time.perf_counter()
        lr = float(schedule((epoch - 1) * steps_per_epoch))
        logging.info("epoch %d learning rate %.4g", epoch, lr)
        state, train_ppl, wps = run_epoch(train_fn, state, epoch_inputs, epoch_targets, cfg, epoch)
        train_seconds += time.perf_counter() - epoch_start
        valid_ppl = evaluate(eval_fn, state.params, valid_ids, config.batch_size, config.num_steps)
        seconds = time.perf_counter() - epoch_start
        logging.info(
            "epoch %d train perplexity %.2f valid perplexity %.2f (%.0fs)",
            epoch,
            train_ppl,
            valid_ppl,
            seconds,
        )
        record = dict(
            epoch=epoch,
            lr=lr,
            train_perplexity=train_ppl,
            valid_perplexity=valid_ppl,
            words_per_sec=wps,
            seconds=seconds,
        )
        with metrics_path.open("a") as f:
            f.write(json.dumps(record) + "\n")

    test_ppl = evaluate(
        eval_fn, state.params, test_ids, config.test_batch_size, config.test_num_steps
    )
    logging.info(
        "test perplexity %.2f (batch %d, steps %d)",
        test_ppl,
        config.test_batch_size,
        config.test_num_steps,
    )
    results = dict(
        train_perplexity=train_ppl,
        valid_perplexity=valid_ppl,
        test_perplexity=test_ppl,
        total_seconds=time.perf_counter() - start,
        # Training alone (compilation included), evaluation excluded.
        words_per_sec=config.num_epochs * epoch_inputs.size / train_seconds,
    )
    (workdir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return results

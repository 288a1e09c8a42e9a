"""Training and evaluation: schedule -> optimizer -> train_step -> eval -> the loop.

The step functions are plain Python over explicit state, jitted once in
`create_training`. A jitted call walks `steps_per_call` batches (`lax.scan` over
`train_step`), so the host only syncs between calls; the recurrent carry goes from
batch to batch, is reset to zeros at the start of each epoch and of each evaluation.

The batch's rows are split across the devices of a mesh (`parallel`); the step itself
is written for one device, and XLA partitions it.

The calls of an epoch follow a fixed grid (batches 0, K, 2K, ...), and checkpoints are
only taken between calls, so a run resumed from a checkpoint makes the same calls on the
same values as one that never stopped: its results are bitwise the same on CPU.
"""

import contextlib
import dataclasses
import functools
import json
import math
import pathlib
import signal
import threading
import time
from collections.abc import Callable

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from lstm_lm import checkpoints, data, model, parallel, reporting


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # global step, int32 scalar
    params: dict
    opt_state: optax.OptState
    dropout_key: jax.Array  # folded with `step` for each step's dropout masks


class ConfigError(ValueError):
    """A config value makes no sense, alone or for the data; the message names the key."""


class Interrupted(Exception):
    """Training stopped on SIGTERM/SIGINT after saving a checkpoint at `step`."""

    def __init__(self, signum: int, step: int):
        super().__init__(f"{signal.Signals(signum).name} received; stopped at step {step}.")
        self.signum, self.step = signum, step


def base_config() -> ml_collections.ConfigDict:
    """Every key the trainer reads, with defaults; the config files set the rest."""
    return ml_collections.ConfigDict(
        {
            "data_dir": "",  # '' = $LSTM_LM_DATA_DIR or ~/.cache/lstm_lm/ptb
            "data_url": data.PTB_URL,  # fetched when data_dir lacks the files
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
            "steps_per_call": 50,  # batches per jitted call; signals are handled between calls
            "checkpoint_every_steps": 500,  # 0 = only at the end of each epoch
            "keep_checkpoints": 3,  # the newest this many are kept
            "num_devices": 0,  # the batch's rows are split across this many; 0 = all devices
        }
    )


POSITIVE_KEYS = (
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
    "steps_per_call",
    "keep_checkpoints",
)
NON_NEGATIVE_KEYS = (
    "full_lr_epochs",
    "max_batches_per_epoch",
    "checkpoint_every_steps",
    "num_devices",
)


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Raise ConfigError naming the key and value of the first nonsensical setting."""
    for key in POSITIVE_KEYS + NON_NEGATIVE_KEYS:
        value = config[key]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"config.{key} must be a number, got {value!r}.")
        if not math.isfinite(value):
            raise ConfigError(f"config.{key} must be finite, got {value!r}.")
    for key in POSITIVE_KEYS:
        if not config[key] > 0:
            raise ConfigError(f"config.{key} must be > 0, got {config[key]!r}.")
    for key in NON_NEGATIVE_KEYS:
        if config[key] < 0:
            raise ConfigError(f"config.{key} must be >= 0, got {config[key]!r}.")
    if not 0.0 < config.keep_prob <= 1.0:
        raise ConfigError(f"config.keep_prob must be in (0, 1], got {config.keep_prob!r}.")
    devices = jax.devices()
    if config.num_devices > len(devices):
        raise ConfigError(
            f"config.num_devices={config.num_devices}, but there are {len(devices)} "
            f"{devices[0].platform} devices; 0 uses all of them."
        )
    if jax.process_count() > 1 and config.num_devices not in (0, len(devices)):
        raise ConfigError(
            f"With {jax.process_count()} processes the mesh spans all {len(devices)} "
            "devices: set config.num_devices=0."
        )
    num_devices = config.num_devices or len(devices)
    if config.batch_size % num_devices:
        raise ConfigError(
            f"config.batch_size={config.batch_size} does not divide by the {num_devices} "
            "devices that share its rows; change batch_size or num_devices."
        )


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
) -> tuple[TrainState, model.Carry, tuple[jax.Array, jax.Array]]:
    """One SGD step on one batch: (new state, new carry, (cost, gradient norm))."""
    step_key = jax.random.fold_in(state.dropout_key, state.step)
    grad_fn = jax.value_and_grad(model.cost_fn, has_aux=True)
    (cost, carry), grads = grad_fn(state.params, cfg, carry, inputs_BxT, targets_BxT, step_key)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
    return new_state, carry, (cost, optax.tree.norm(grads))


def train_chunk(
    state: TrainState,
    carry: model.Carry,
    inputs_NxBxT: jax.Array,
    targets_NxBxT: jax.Array,
    **step_kwargs,
) -> tuple[TrainState, model.Carry, jax.Array, jax.Array, jax.Array]:
    """`train_step` over N consecutive batches:
    (state, carry, costs_N, grad_norms_N, whether the final parameters are all finite)."""

    def body(state_and_carry, batch):
        state, carry, metrics = train_step(*state_and_carry, *batch, **step_kwargs)
        return (state, carry), metrics

    (state, carry), (costs_N, grad_norms_N) = jax.lax.scan(
        body, (state, carry), (inputs_NxBxT, targets_NxBxT)
    )
    return state, carry, costs_N, grad_norms_N, jnp.isfinite(optax.tree.norm(state.params))


def eval_pass(
    params: dict,
    carry: model.Carry,
    inputs_NxBxT: jax.Array,
    targets_NxBxT: jax.Array,
    *,
    cfg: model.ModelConfig,
) -> tuple[jax.Array, model.Carry]:
    """(summed cost over all N batches, final carry), the carry threaded through."""

    def body(carry, batch):
        cost, carry = model.cost_fn(params, cfg, carry, *batch)
        return carry, cost

    carry, costs_N = jax.lax.scan(body, carry, (inputs_NxBxT, targets_NxBxT))
    return jnp.sum(costs_N), carry


def perplexity(cost_sum: float, num_batches: int, num_steps: int) -> float:
    """exp(total cost / total time steps), as TF's run_epoch."""
    return math.exp(cost_sum / (num_batches * num_steps))


def make_eval_fn(cfg: model.ModelConfig):
    """`eval_pass` jitted for `cfg`; it follows its inputs' shardings."""
    return jax.jit(functools.partial(eval_pass, cfg=cfg))


def check_split_fits(split, num_ids, batch_size, num_steps, batch_name, steps_name) -> None:
    """ConfigError unless `num_ids` ids give at least one batch of batch_size x num_steps;
    the names are the settings to lower."""
    if data.epoch_size(num_ids, batch_size, num_steps) <= 0:
        raise ConfigError(
            f"The {split} split has {num_ids} words, too few for {batch_name}={batch_size} "
            f"rows of {steps_name}={num_steps} steps (each row needs at least "
            f"{num_steps + 1} words). Lower {batch_name} or {steps_name}."
        )


def evaluate(eval_fn, params, raw_ids: np.ndarray, batch_size: int, num_steps: int, *, cfg, mesh):
    """Perplexity of `params` on `raw_ids` laid out as TF's reader does, from a zero
    carry; the rows are split across `mesh` when they divide by its size."""
    inputs_NxBxT, targets_NxBxT = data.epoch_batches(raw_ids, batch_size, num_steps)
    carry = parallel.put_carry(model.zero_carry(cfg, batch_size), mesh)
    cost_sum, _ = eval_fn(
        params,
        carry,
        parallel.put_rows(inputs_NxBxT, mesh),
        parallel.put_rows(targets_NxBxT, mesh),
    )
    return perplexity(float(parallel.to_host(cost_sum)), len(inputs_NxBxT), num_steps)


@contextlib.contextmanager
def stop_signals():
    """Inside the block, SIGTERM or SIGINT (Ctrl-C) is recorded in the yielded list for the
    loop to see between jitted calls; a second Ctrl-C stops at once. Outside the main
    thread, where Python cannot take signals, the list stays empty."""
    received = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handler(signum, frame):
        if received and signum == signal.SIGINT:
            raise KeyboardInterrupt
        received.append(signum)
        logging.warning(
            "%s received: saving a checkpoint after the current call, then stopping.",
            signal.Signals(signum).name,
        )

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield received
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def check_finite(costs_N, grad_norms_N, params_finite: bool, epoch: int, batch: int, step: int):
    """Raise FloatingPointError naming the first bad step of a call that began at global
    `step` (batch `batch` of `epoch`)."""
    bad = np.flatnonzero(~(np.isfinite(costs_N) & np.isfinite(grad_norms_N)))
    if len(bad) == 0 and params_finite:
        return
    if len(bad):
        where = f"global step {step + bad[0] + 1} (epoch {epoch}, batch {batch + bad[0] + 1})"
        what = f"cost {costs_N[bad[0]]}, gradient norm {grad_norms_N[bad[0]]}"
    else:
        where = f"global steps {step + 1}-{step + len(costs_N)} (epoch {epoch})"
        what = "parameters became non-finite"
    raise FloatingPointError(
        f"Training diverged at {where}: {what}. No checkpoint was written after it; the "
        "earlier ones are kept. Rerun with a lower --config.learning_rate or "
        "--config.max_grad_norm to resume from the latest."
    )


def chunk_bounds(start: int, num_batches: int, steps_per_call: int) -> list[tuple[int, int]]:
    """The jitted calls [lo, hi) that finish an epoch from batch `start`: the fixed grid
    0, K, 2K, ..., num_batches, cut at `start`."""
    grid = [b for b in range(0, num_batches, steps_per_call) if b > start]
    edges = [start, *grid, num_batches] if start < num_batches else []
    return list(zip(edges[:-1], edges[1:]))


def train_epoch(train_fn, state, carry, progress, epoch_inputs, epoch_targets, *, loop):
    """Train epoch `progress.epoch` from batch `progress.batch` to its end: (state, progress).

    Saves a checkpoint every `checkpoint_every_steps` steps and, when a stop signal has
    arrived, saves one and raises Interrupted (neither at the epoch's last call, which
    the epoch-end checkpoint covers).
    """
    num_batches, batch_size, num_steps = epoch_inputs.shape
    start_batch, start_time = progress.batch, time.perf_counter()
    every = loop.config.checkpoint_every_steps
    for lo, hi in chunk_bounds(progress.batch, num_batches, loop.config.steps_per_call):
        call_start = time.perf_counter()
        state, carry, costs_N, grad_norms_N, params_finite = train_fn(
            state,
            carry,
            parallel.put_rows(epoch_inputs[lo:hi], loop.mesh),
            parallel.put_rows(epoch_targets[lo:hi], loop.mesh),
        )
        costs = parallel.to_host(costs_N).astype(np.float64)
        grad_norms = parallel.to_host(grad_norms_N).astype(np.float64)
        step = checkpoints.step_of(state)
        first_step = step - (hi - lo)
        finite = bool(parallel.to_host(params_finite))
        check_finite(costs, grad_norms, finite, progress.epoch, lo, first_step)
        seconds = time.perf_counter() - call_start
        progress = dataclasses.replace(
            progress,
            batch=hi,
            cost_sum=progress.cost_sum + float(costs.sum()),
            epoch_seconds=progress.epoch_seconds + seconds,
            train_seconds=progress.train_seconds + seconds,
        )
        scalars = dict(
            perplexity=perplexity(progress.cost_sum, hi, num_steps),
            learning_rate=float(loop.schedule(step - 1)),
            grad_norm=float(grad_norms.mean()),
            words_per_sec=(hi - start_batch)
            * batch_size
            * num_steps
            / (time.perf_counter() - start_time),
        )
        loop.reporter.train_progress(progress.epoch, lo, hi, num_batches, step, scalars)
        due = every and step // every > first_step // every
        if hi < num_batches and (due or loop.stop):
            with loop.reporter.pause():
                loop.save(state, carry, progress)
        if hi < num_batches and loop.stop:
            raise Interrupted(loop.stop[0], step)
    return state, progress


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
    epoch laid out once, cut to `max_batches_per_epoch` when that is set. A split too short
    for its batch layout is a ConfigError naming the keys to change."""
    train_ids, valid_ids, test_ids, vocab = data.ptb_raw_data(
        config.data_dir or None, url=config.data_url
    )
    layouts = [
        ("train", train_ids, "batch_size", "num_steps"),
        ("valid", valid_ids, "batch_size", "num_steps"),
        ("test", test_ids, "test_batch_size", "test_num_steps"),
    ]
    for split, ids, batch_key, steps_key in layouts:
        check_split_fits(
            split,
            len(ids),
            config[batch_key],
            config[steps_key],
            f"config.{batch_key}",
            f"config.{steps_key}",
        )
    epoch_inputs, epoch_targets = data.epoch_batches(train_ids, config.batch_size, config.num_steps)
    if config.max_batches_per_epoch:
        epoch_inputs = epoch_inputs[: config.max_batches_per_epoch]
        epoch_targets = epoch_targets[: config.max_batches_per_epoch]
    return epoch_inputs, epoch_targets, valid_ids, test_ids, vocab


def initial_state(config: ml_collections.ConfigDict, cfg: model.ModelConfig, optimizer):
    init_key, dropout_key = jax.random.split(jax.random.PRNGKey(config.seed))
    params = model.init_params(init_key, cfg)
    return TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params), dropout_key)


def create_training(
    config: ml_collections.ConfigDict, cfg: model.ModelConfig, steps_per_epoch: int, mesh
):
    """(initial state, schedule, jitted train_chunk, jitted eval_pass) for `mesh`: the
    state replicated on it, train_chunk's outputs replicated but for the carry, which
    stays split by rows like its inputs. Eval follows its inputs' shardings."""
    schedule = lr_schedule(
        config.learning_rate, config.lr_decay, config.full_lr_epochs, steps_per_epoch
    )
    optimizer = make_optimizer(config.max_grad_norm, schedule)
    repl, rows = parallel.replicated(mesh), parallel.rows(mesh, 1, 3, config.batch_size)
    state = jax.tree.map(lambda a: parallel.put(a, repl), initial_state(config, cfg, optimizer))
    train_fn = jax.jit(
        functools.partial(train_chunk, cfg=cfg, optimizer=optimizer),
        out_shardings=(repl, (rows, rows), repl, repl, repl),
        donate_argnums=(0, 1),
    )
    return state, schedule, train_fn, make_eval_fn(cfg)


@dataclasses.dataclass
class Loop:
    """What `train_epoch` needs beyond the state: settings and the run's side effects."""

    config: ml_collections.ConfigDict
    schedule: optax.Schedule
    mesh: jax.sharding.Mesh
    reporter: reporting.Reporter
    save: Callable  # save(state, carry, progress)
    stop: list  # signals received, from `stop_signals`


def next_epoch(progress, epoch: int, lr: float, valid_ppl: float, valid_seconds: float, shape):
    """The Progress that starts epoch + 1, with a record of `epoch` (whose batches were
    [N, B, T] = `shape`) appended to the history."""
    num_batches, batch_size, num_steps = shape
    record = dict(
        epoch=epoch,
        lr=lr,
        train_perplexity=perplexity(progress.cost_sum, num_batches, num_steps),
        valid_perplexity=valid_ppl,
        words_per_sec=num_batches * batch_size * num_steps / progress.epoch_seconds,
        seconds=progress.epoch_seconds + valid_seconds,
    )
    return checkpoints.Progress(
        epoch=epoch + 1, train_seconds=progress.train_seconds, history=[*progress.history, record]
    )


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> dict:
    """Train, validate each epoch, test at the end, continuing from the workdir's latest
    checkpoint if there is one. Writes config.json, vocab.txt, checkpoints/, metrics.jsonl,
    tensorboard/, learning_curve.png and results.json into `workdir` (the files from
    process 0 only); returns the results. Raises Interrupted, after saving, on a signal."""
    validate_config(config)
    process_start, chief = time.perf_counter(), jax.process_index() == 0
    mesh = parallel.make_mesh(config.num_devices)
    epoch_inputs, epoch_targets, valid_ids, test_ids, vocab = load_data(config)
    checkpoints.check_workdir(workdir, config, vocab)
    if chief:
        checkpoints.write_workdir(workdir, config, vocab)
    steps_per_epoch, batch_size, num_steps = epoch_inputs.shape
    logging.info("vocabulary %d words; %d batches per epoch", len(vocab), steps_per_epoch)
    logging.info("devices sharing the batch rows: %d", mesh.size)
    cfg = model_config(config, len(vocab))
    state, schedule, train_fn, eval_fn = create_training(config, cfg, steps_per_epoch, mesh)
    evaluate_on = functools.partial(evaluate, eval_fn, cfg=cfg, mesh=mesh)

    def zero_carry():
        return parallel.put_carry(model.zero_carry(cfg, batch_size), mesh)

    mngr = checkpoints.manager(workdir, config.keep_checkpoints)
    carry, progress = zero_carry(), checkpoints.Progress()
    if restored := checkpoints.restore(mngr, state, carry):
        state, carry, progress = restored
        logging.info(
            "Resuming from the checkpoint at step %d: epoch %d, batch %d.",
            checkpoints.step_of(state),
            progress.epoch,
            progress.batch,
        )
    wall_before = progress.wall_seconds

    def save(state, carry, progress):
        wall = wall_before + time.perf_counter() - process_start
        checkpoints.save(mngr, state, carry, dataclasses.replace(progress, wall_seconds=wall))

    report = reporting.Reporter if chief else reporting.Silent
    reporter = report(workdir, progress.history, checkpoints.step_of(state))
    try:
        with stop_signals() as stop:
            loop = Loop(config, schedule, mesh, reporter, save, stop)
            for epoch in range(progress.epoch, config.num_epochs + 1):
                # Schedule -> train (from a checkpoint's batch) -> validate -> record -> save.
                carry = carry if progress.batch else zero_carry()
                lr = float(schedule((epoch - 1) * steps_per_epoch))
                reporter.epoch_start(epoch, steps_per_epoch, progress.batch, lr)
                state, progress = train_epoch(
                    train_fn, state, carry, progress, epoch_inputs, epoch_targets, loop=loop
                )
                valid_start = time.perf_counter()
                valid_ppl = evaluate_on(state.params, valid_ids, batch_size, num_steps)
                valid_seconds = time.perf_counter() - valid_start
                progress = next_epoch(
                    progress, epoch, lr, valid_ppl, valid_seconds, epoch_inputs.shape
                )
                step = checkpoints.step_of(state)
                reporter.epoch_end(progress.history, step)
                save(state, zero_carry(), progress)
                if stop:
                    raise Interrupted(stop[0], step)
        test_ppl = evaluate_on(
            state.params, test_ids, config.test_batch_size, config.test_num_steps
        )
        reporter.test(test_ppl, checkpoints.step_of(state))
    finally:
        reporter.close()
        mngr.close()
    logging.info(
        "test perplexity %.2f (batch %d, steps %d)",
        test_ppl,
        config.test_batch_size,
        config.test_num_steps,
    )
    last = progress.history[-1]
    results = dict(
        train_perplexity=last["train_perplexity"],
        valid_perplexity=last["valid_perplexity"],
        test_perplexity=test_ppl,
        step=checkpoints.step_of(state),
        total_seconds=wall_before + time.perf_counter() - process_start,
        # Training alone (compilation included), evaluation excluded.
        words_per_sec=len(progress.history) * epoch_inputs.size / progress.train_seconds,
    )
    if chief:
        (workdir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return results

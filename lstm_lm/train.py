"""Training: train_step -> train_chunk -> the epoch -> the loop that validates, tests and
checkpoints. The optimizer and TrainState are in `optim`, evaluation in `evaluation`.

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
import pathlib
import signal
import threading
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from lstm_lm import checkpoints, data, evaluation, model, optim, parallel, reporting
from lstm_lm import config as config_lib


class Interrupted(Exception):
    """Training stopped on SIGTERM/SIGINT after saving a checkpoint at `step`."""

    def __init__(self, signum: int, step: int):
        super().__init__(f"{signal.Signals(signum).name} received; stopped at step {step}.")
        self.signum, self.step = signum, step


def train_step(
    state: optim.TrainState,
    carry: model.Carry,
    inputs_BxT: jax.Array,
    targets_BxT: jax.Array,
    *,
    cfg: model.ModelConfig,
    optimizer: optax.GradientTransformation,
) -> tuple[optim.TrainState, model.Carry, dict[str, jax.Array]]:
    """One SGD step on one batch: (new state, new carry, metrics). The metrics are the
    `cross_entropy` that perplexity is computed from, the `objective` that was
    differentiated (the same here; a regulariser would add to it alone), and the
    gradient's global norm before clipping."""
    step_key = jax.random.fold_in(state.dropout_key, state.step)

    def objective_fn(params):
        cross_entropy, new_carry = model.cost_fn(
            params, cfg, carry, inputs_BxT, targets_BxT, step_key
        )
        return cross_entropy, (cross_entropy, new_carry)

    grad_fn = jax.value_and_grad(objective_fn, has_aux=True)
    (objective, (cross_entropy, carry)), grads = grad_fn(state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
    metrics = dict(
        cross_entropy=cross_entropy, objective=objective, grad_norm=optax.tree.norm(grads)
    )
    return new_state, carry, metrics


def train_chunk(
    state: optim.TrainState,
    carry: model.Carry,
    inputs_NxBxT: jax.Array,
    targets_NxBxT: jax.Array,
    **step_kwargs,
) -> tuple[optim.TrainState, model.Carry, dict[str, jax.Array], jax.Array]:
    """`train_step` over N consecutive batches: (state, carry, each metric per step [N],
    whether the final parameters are all finite)."""

    def body(state_and_carry, batch):
        state, carry, metrics = train_step(*state_and_carry, *batch, **step_kwargs)
        return (state, carry), metrics

    (state, carry), metrics_N = jax.lax.scan(body, (state, carry), (inputs_NxBxT, targets_NxBxT))
    return state, carry, metrics_N, jnp.isfinite(optax.tree.norm(state.params))


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


def check_finite(
    objectives_N, grad_norms_N, params_finite: bool, epoch: int, batch: int, step: int
):
    """Raise FloatingPointError naming the first bad step of a call that began at global
    `step` (batch `batch` of `epoch`) from its steps' objectives and gradient norms."""
    bad = np.flatnonzero(~(np.isfinite(objectives_N) & np.isfinite(grad_norms_N)))
    if len(bad) == 0 and params_finite:
        return
    if len(bad):
        where = f"global step {step + bad[0] + 1} (epoch {epoch}, batch {batch + bad[0] + 1})"
        what = f"cost {objectives_N[bad[0]]}, gradient norm {grad_norms_N[bad[0]]}"
    else:
        where = f"global steps {step + 1}-{step + len(objectives_N)} (epoch {epoch})"
        what = "parameters became non-finite"
    raise FloatingPointError(
        f"Training diverged at {where}: {what}. No checkpoint was written after it; the "
        "earlier ones are kept. Rerun with a lower --config.optim.learning_rate or "
        "--config.optim.max_grad_norm to resume from the latest."
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
    every = loop.config.train.checkpoint_every_steps
    for lo, hi in chunk_bounds(progress.batch, num_batches, loop.config.train.steps_per_call):
        call_start = time.perf_counter()
        state, carry, metrics_N, params_finite = train_fn(
            state,
            carry,
            parallel.put_rows(epoch_inputs[lo:hi], loop.mesh),
            parallel.put_rows(epoch_targets[lo:hi], loop.mesh),
        )
        metrics = {k: parallel.to_host(v).astype(np.float64) for k, v in metrics_N.items()}
        costs, grad_norms = metrics["cross_entropy"], metrics["grad_norm"]
        step = checkpoints.step_of(state)
        first_step = step - (hi - lo)
        finite = bool(parallel.to_host(params_finite))
        check_finite(metrics["objective"], grad_norms, finite, progress.epoch, lo, first_step)
        seconds = time.perf_counter() - call_start
        progress = dataclasses.replace(
            progress,
            batch=hi,
            cost_sum=progress.cost_sum + float(costs.sum()),
            epoch_seconds=progress.epoch_seconds + seconds,
            train_seconds=progress.train_seconds + seconds,
        )
        scalars = dict(
            perplexity=evaluation.perplexity(progress.cost_sum, hi, num_steps),
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


def load_data(config: ml_collections.ConfigDict):
    """(epoch_inputs_NxBxT, epoch_targets_NxBxT, corpus): the training epoch laid out
    once, cut to `max_batches_per_epoch` when that is set. A split too short for its
    batch layout is a ConfigError naming the keys to change."""
    corpus = data.load(config.data)
    layouts = [
        ("train", corpus.train, "train.batch_size", "train.num_steps"),
        ("valid", corpus.valid, "train.batch_size", "train.num_steps"),
        ("test", corpus.test, "eval.test_batch_size", "eval.test_num_steps"),
    ]
    for split, ids, batch_key, steps_key in layouts:
        batch_size, num_steps = config_lib.get(config, batch_key), config_lib.get(config, steps_key)
        evaluation.check_split_fits(
            split, len(ids), batch_size, num_steps, f"config.{batch_key}", f"config.{steps_key}"
        )
    train = config.train
    epoch_inputs, epoch_targets = data.epoch_batches(
        corpus.train, train.batch_size, train.num_steps
    )
    if train.max_batches_per_epoch:
        epoch_inputs = epoch_inputs[: train.max_batches_per_epoch]
        epoch_targets = epoch_targets[: train.max_batches_per_epoch]
    return epoch_inputs, epoch_targets, corpus


def create_training(
    config: ml_collections.ConfigDict, cfg: model.ModelConfig, steps_per_epoch: int, mesh
):
    """(initial state, schedule, jitted train_chunk, jitted eval_pass) for `mesh`: the
    state replicated on it, train_chunk's outputs replicated but for the carry, which
    stays split by rows like its inputs. Eval follows its inputs' shardings."""
    optimizer, schedule = optim.from_config(config.optim, steps_per_epoch)
    repl = parallel.replicated(mesh)
    carry_shardings = parallel.carry_shardings(model.zero_carry(cfg, config.train.batch_size), mesh)
    state = jax.tree.map(
        lambda a: parallel.put(a, repl), optim.initial_state(config.seed, cfg, optimizer)
    )
    train_fn = jax.jit(
        functools.partial(train_chunk, cfg=cfg, optimizer=optimizer),
        out_shardings=(repl, carry_shardings, repl, repl),
        donate_argnums=(0, 1),
    )
    return state, schedule, train_fn, evaluation.make_eval_fn(cfg)


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
        train_perplexity=evaluation.perplexity(progress.cost_sum, num_batches, num_steps),
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
    config_lib.validate(config)
    process_start, chief = time.perf_counter(), jax.process_index() == 0
    mesh = parallel.make_mesh(config.train.num_devices)
    epoch_inputs, epoch_targets, corpus = load_data(config)
    vocab = corpus.vocab
    checkpoints.check_workdir(workdir, config, vocab)
    if chief:
        checkpoints.write_workdir(workdir, config, vocab)
    steps_per_epoch, batch_size, num_steps = epoch_inputs.shape
    logging.info("vocabulary %d words; %d batches per epoch", len(vocab), steps_per_epoch)
    logging.info("devices sharing the batch rows: %d", mesh.size)
    cfg = config_lib.model_config(config, len(vocab))
    state, schedule, train_fn, eval_fn = create_training(config, cfg, steps_per_epoch, mesh)
    evaluate_on = functools.partial(evaluation.evaluate, eval_fn, cfg=cfg, mesh=mesh)

    def zero_carry():
        return parallel.put_carry(model.zero_carry(cfg, batch_size), mesh)

    mngr = checkpoints.manager(workdir, config.train.keep_checkpoints)
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
            for epoch in range(progress.epoch, config.train.num_epochs + 1):
                # Schedule -> train (from a checkpoint's batch) -> validate -> record -> save.
                carry = carry if progress.batch else zero_carry()
                lr = float(schedule((epoch - 1) * steps_per_epoch))
                reporter.epoch_start(epoch, steps_per_epoch, progress.batch, lr)
                state, progress = train_epoch(
                    train_fn, state, carry, progress, epoch_inputs, epoch_targets, loop=loop
                )
                valid_start = time.perf_counter()
                valid_ppl = evaluate_on(state.params, corpus.valid, batch_size, num_steps)
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
            state.params, corpus.test, config.eval.test_batch_size, config.eval.test_num_steps
        )
        reporter.test(test_ppl, checkpoints.step_of(state))
    finally:
        reporter.close()
        mngr.close()
    logging.info(
        "test perplexity %.2f (batch %d, steps %d)",
        test_ppl,
        config.eval.test_batch_size,
        config.eval.test_num_steps,
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

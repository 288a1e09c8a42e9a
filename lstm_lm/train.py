"""Training: the epoch's batches -> the loop that validates, tests and checkpoints. The
objective and the step (`train_step`, `train_chunk`) are in `step`, the optimizer and
TrainState in `optim`, evaluation in `evaluation`.

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
import ml_collections
import numpy as np
import optax
from absl import logging

from lstm_lm import (
    checkpoints,
    data,
    evaluation,
    inference,
    model,
    optim,
    parallel,
    provenance,
    reporting,
)
from lstm_lm import config as config_lib
from lstm_lm import step as step_lib


class Interrupted(Exception):
    """Training stopped on SIGTERM/SIGINT after saving a checkpoint at `step`."""

    def __init__(self, signum: int, step: int):
        super().__init__(f"{signal.Signals(signum).name} received; stopped at step {step}.")
        self.signum, self.step = signum, step


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


@dataclasses.dataclass(frozen=True)
class Epoch:
    """One epoch's batches: consecutive windows of `lengths_N` steps over the rows of the
    training stream `data_BxL` (TF's reader when every length is num_steps).

    With random lengths a batch is padded to a multiple of `bucket` above its length and
    carries its length, so the jitted step compiles once per padded length, not per
    length. A call of one batch is padded so; with `call_size` K > 1 (see `call_bucket`)
    every call is K batches padded to `padded_length`, the longest bucket, the batches
    past the epoch's end of length 0, so that one compilation serves the whole run and
    train_chunk cuts each batch back to its own bucket."""

    data_BxL: np.ndarray
    lengths_N: np.ndarray
    random: bool
    bucket: int
    padded_length: int = 0  # > 0: every call padded to it, and to call_size batches
    call_size: int = 1

    def __len__(self) -> int:
        return len(self.lengths_N)

    def steps(self, batches: int | None = None) -> int:
        """Time steps in the first `batches` batches (default: all)."""
        return int(self.lengths_N[:batches].sum())

    def batches(self, lo: int, hi: int):
        """(inputs_KxBxT, targets_KxBxT, lengths_K or None) of batches [lo, hi); with
        `padded_length`, followed by call_size - (hi - lo) batches of length 0."""
        starts_N = np.cumsum(self.lengths_N) - self.lengths_N
        starts_K, lengths_K = starts_N[lo:hi], self.lengths_N[lo:hi]
        if self.padded_length:
            fill = self.call_size - (hi - lo)
            starts_K = np.concatenate([starts_K, np.zeros(fill, starts_K.dtype)])
            lengths_K = np.concatenate([lengths_K, np.zeros(fill, lengths_K.dtype)])
            pad_to = self.padded_length
        elif self.random:
            pad_to = round_up(int(lengths_K.max()), self.bucket)
        else:
            pad_to = int(lengths_K[0])
        inputs, targets = data.window_batches(self.data_BxL, starts_K, lengths_K, pad_to)
        return inputs, targets, (lengths_K if self.random else None)


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def call_bucket(train: ml_collections.ConfigDict) -> int:
    """The bucket train_chunk cuts each batch of a call back to: `train.length_bucket`
    with random lengths at several batches a call, else 0 (a call's batches share one
    length: fixed lengths, or one batch a call)."""
    return train.length_bucket if train.random_lengths and train.steps_per_call > 1 else 0


def epoch_layout(data_BxL: np.ndarray, config: ml_collections.ConfigDict, epoch: int) -> Epoch:
    """Epoch `epoch`'s batches: TF's fixed windows of num_steps or, with
    `train.random_lengths`, AWD's random ones, drawn from (seed, epoch) so that a resumed
    run draws the same; cut to `max_batches_per_epoch` when that is set."""
    train = config.train
    if train.random_lengths:
        rng = np.random.default_rng([config.seed, epoch])
        lengths_N = data.random_lengths(rng, data_BxL.shape[1], train.num_steps)
        lengths_N = lengths_N[: train.max_batches_per_epoch or None]
    else:
        lengths_N = np.full(fixed_batches(data_BxL, train), train.num_steps, np.int32)
    bucket = call_bucket(train)
    longest = round_up(data.longest_random_length(train.num_steps), bucket) if bucket else 0
    return Epoch(
        data_BxL,
        lengths_N,
        train.random_lengths,
        train.length_bucket,
        padded_length=longest,
        call_size=train.steps_per_call,
    )


def fixed_batches(data_BxL: np.ndarray, train: ml_collections.ConfigDict) -> int:
    """Batches per epoch in TF's layout, cut to `max_batches_per_epoch`; with random
    lengths, the schedule's epoch."""
    num_batches = (data_BxL.shape[1] - 1) // train.num_steps
    return min(num_batches, train.max_batches_per_epoch or num_batches)


def train_epoch(train_fn, state, carry, progress, epoch: Epoch, *, loop):
    """Train epoch `progress.epoch` from batch `progress.batch` to its end: (state, progress).

    Saves a checkpoint every `checkpoint_every_steps` steps and, when a stop signal has
    arrived, saves one and raises Interrupted (neither at the epoch's last call, which
    the epoch-end checkpoint covers).
    """
    num_batches, batch_size = len(epoch), epoch.data_BxL.shape[0]
    start_batch, start_time = progress.batch, time.perf_counter()
    every = loop.config.train.checkpoint_every_steps
    for lo, hi in chunk_bounds(progress.batch, num_batches, loop.config.train.steps_per_call):
        call_start = time.perf_counter()
        inputs, targets, lengths = epoch.batches(lo, hi)
        batches = [parallel.put_rows(inputs, loop.mesh), parallel.put_rows(targets, loop.mesh)]
        if lengths is not None:
            batches.append(parallel.put(lengths, parallel.replicated(loop.mesh)))
        state, carry, metrics_N, params_finite = train_fn(state, carry, *batches)
        metrics = {
            k: parallel.to_host(v)[: hi - lo].astype(np.float64) for k, v in metrics_N.items()
        }
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
        words = (epoch.steps(hi) - epoch.steps(start_batch)) * batch_size
        scalars = dict(
            perplexity=evaluation.perplexity(progress.cost_sum, epoch.steps(hi)),
            learning_rate=float(loop.schedule(step - 1)),
            grad_norm=float(grad_norms.mean()),
            words_per_sec=words / (time.perf_counter() - start_time),
        )
        scalars = evaluation.with_bits(scalars, loop.config.data)
        loop.reporter.train_progress(progress.epoch, lo, hi, num_batches, step, scalars)
        due = every and step // every > first_step // every
        if hi < num_batches and (due or loop.stop):
            with loop.reporter.pause():
                loop.save(state, carry, progress)
        if hi < num_batches and loop.stop:
            raise Interrupted(loop.stop[0], step)
    return state, progress


def load_data(config: ml_collections.ConfigDict):
    """(train_BxL, corpus): the training stream laid out in batch_size rows, and the
    corpus. A split too short for its batch layout is a ConfigError naming the keys."""
    corpus = data.load(config.data)
    valid_batch = "eval.valid_batch_size" if config.eval.valid_batch_size else "train.batch_size"
    layouts = [
        ("train", corpus.train, "train.batch_size", "train.num_steps"),
        ("valid", corpus.valid, valid_batch, "train.num_steps"),
        ("test", corpus.test, "eval.test_batch_size", "eval.test_num_steps"),
    ]
    for split, ids, batch_key, steps_key in layouts:
        batch_size, num_steps = config_lib.get(config, batch_key), config_lib.get(config, steps_key)
        evaluation.check_split_fits(
            split, len(ids), batch_size, num_steps, f"config.{batch_key}", f"config.{steps_key}"
        )
    return data.batchify(corpus.train, config.train.batch_size), corpus


def create_training(
    config: ml_collections.ConfigDict, cfg: model.ModelConfig, steps_per_epoch: int, mesh
):
    """(initial state, schedule, jitted train_chunk, jitted eval_pass) for `mesh`: the
    state replicated on it, train_chunk's outputs replicated but for the carry, which
    stays split by rows like its inputs. Eval follows its inputs' shardings."""
    optimizer, schedule = optim.from_config(config, steps_per_epoch)
    objective = step_lib.objective_of(config)
    repl = parallel.replicated(mesh)
    carry_shardings = parallel.carry_shardings(model.zero_carry(cfg, config.train.batch_size), mesh)
    state = jax.tree.map(
        lambda a: parallel.put(a, repl), optim.initial_state(config.seed, cfg, optimizer)
    )
    train_fn = jax.jit(
        functools.partial(
            step_lib.train_chunk,
            bucket=call_bucket(config.train),
            cfg=cfg,
            optimizer=optimizer,
            objective=objective,
        ),
        out_shardings=(repl, carry_shardings, repl, repl),
        donate_argnums=(0, 1),
    )
    return state, schedule, train_fn, evaluation.make_eval_fn(cfg)


def finetune_start(state: optim.TrainState, config, cfg, vocab, mesh) -> optim.TrainState:
    """The state that starts fine-tuning (AWD's finetune.py): the weights of the run in
    `train.finetune_from` (its average, when it was averaging), a fresh optimizer state,
    averaging on from the first step."""
    source = inference.load_run(pathlib.Path(config.train.finetune_from))
    shape = ("layer_sizes", "input_size", "tie_embeddings", "vocab_size", "cell", "hidden_bias")
    shape += ("mogrifier_rounds", "mogrifier_rank", "softmax", "softmax_cutoffs")
    shape += ("softmax_div_value", "softmax_head_bias", "mos_experts", "windows")
    shape += ("qrnn_output_gate",)
    if [getattr(source.cfg, k) for k in shape] != [getattr(cfg, k) for k in shape]:
        raise config_lib.ConfigError(
            f"config.train.finetune_from={config.train.finetune_from!r} holds a model of "
            f"another shape ({source.cfg}) than this config's ({cfg}); fine-tune with its "
            "config."
        )
    if list(source.vocab) != list(vocab):
        raise config_lib.ConfigError(
            f"config.train.finetune_from={config.train.finetune_from!r} was trained on "
            "another vocabulary than this config's data gives; use the same data settings."
        )
    params = jax.tree.map(lambda a: parallel.put(a, parallel.replicated(mesh)), source.params)
    optimizer, _ = optim.from_config(config, steps_per_epoch=1)
    opt_state = jax.tree.map(
        lambda a: parallel.put(a, parallel.replicated(mesh)), optimizer.init(params)
    )
    return optim.start_averaging(state.replace(params=params, opt_state=opt_state))


@dataclasses.dataclass
class Loop:
    """What `train_epoch` needs beyond the state: settings and the run's side effects."""

    config: ml_collections.ConfigDict
    schedule: optax.Schedule
    mesh: jax.sharding.Mesh
    reporter: reporting.Reporter
    save: Callable  # save(state, carry, progress)
    stop: list  # signals received, from `stop_signals`


def next_epoch(
    progress,
    epoch: int,
    lr,
    valid_ppl,
    valid_seconds,
    layout: Epoch,
    averaged,
    data_config,
    temperature=None,
):
    """The Progress that starts epoch + 1, with a record of `epoch` (trained on `layout`;
    validated with averaged weights or not, at a softmax `temperature` when one was tuned;
    bits per symbol at char and byte level) appended to the history."""
    words = layout.steps() * layout.data_BxL.shape[0]
    record = dict(
        epoch=epoch,
        lr=lr,
        train_perplexity=evaluation.perplexity(progress.cost_sum, layout.steps()),
        valid_perplexity=valid_ppl,
        words=words,
        words_per_sec=words / progress.epoch_seconds,
        seconds=progress.epoch_seconds + valid_seconds,
        averaged=averaged,
    )
    if temperature is not None:
        record["temperature"] = temperature
    record = evaluation.with_bits(record, data_config)
    return checkpoints.Progress(
        epoch=epoch + 1, train_seconds=progress.train_seconds, history=[*progress.history, record]
    )


def nonmonotone(history: list[dict], nonmono: int) -> bool:
    """NT-ASGD's trigger (AWD's main.py): the latest validation perplexity is worse than
    the best of those more than `nonmono` epochs before it."""
    *before, latest = [r["valid_perplexity"] for r in history]
    return nonmono > 0 and len(before) > nonmono and latest > min(before[:-nonmono])


def lamb_trigger(history: list[dict], after_best: int, at_epoch: int) -> bool:
    """lamb's trigger of averaging (`training.py`, trigger_averaging_turns and
    trigger_averaging_at_the_latest, a turn being an epoch here): `after_best` epochs
    have passed since the best validation perplexity so far, or the latest epoch is
    `at_epoch` or later; 0 leaves either out."""
    valid = [r["valid_perplexity"] for r in history]
    since_best = len(valid) - 1 - valid.index(min(valid))
    return (after_best > 0 and since_best >= after_best) or 0 < at_epoch <= history[-1]["epoch"]


def is_best(history: list[dict]) -> bool:
    """Whether the latest epoch has the lowest validation perplexity so far."""
    *before, latest = [r["valid_perplexity"] for r in history]
    return not before or latest < min(before)


def tested_weights(state: optim.TrainState, history: list[dict], best_mngr) -> tuple:
    """(params, record): the weights to test and their epoch's record. Without a
    `best_mngr` (train.test_weights="last") the last epoch's, else the best-validation
    weights kept in the workdir."""
    if best_mngr is None:
        return optim.eval_params(state), history[-1]
    best = checkpoints.restore_best(best_mngr, optim.eval_params(state))
    if best is None:
        raise checkpoints.CheckpointError(
            f"{best_mngr.directory} holds no best-validation weights, though "
            "train.test_weights='best' keeps them after every epoch."
        )
    return best


def finetune_done(history: list[dict], config: ml_collections.ConfigDict) -> bool:
    """Fine-tuning stops, as AWD's finetune.py, once validation is non-monotone."""
    return bool(config.train.finetune_from and history) and nonmonotone(
        history, config.optim.nonmono
    )


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> dict:
    """Train, validate each epoch, test at the end, continuing from the workdir's latest
    checkpoint if there is one. Writes config.json, vocab.txt, checkpoints/, metrics.jsonl,
    tensorboard/, learning_curve.png and results.json into `workdir` (the files from
    process 0 only); returns the results. Raises Interrupted, after saving, on a signal.
    Once averaging (NT-ASGD, fine-tuning) has started, validation, test and the results
    use the averaged weights. Process 0 holds the workdir's lock throughout: a second
    trainer on it stops at once with checkpoints.WorkdirBusy. A file that cannot be written
    (a full disk) stops the run with checkpoints.WriteFailed, the checkpoints before it
    whole, so that a rerun resumes."""
    config_lib.validate(config)
    chief = jax.process_index() == 0
    with checkpoints.workdir_lock(workdir) if chief else contextlib.nullcontext():
        try:
            return train_in_workdir(config, workdir)
        except checkpoints.WriteFailed as e:  # a full disk, say: say what a rerun resumes from
            e.then = checkpoints.resume_note(checkpoints.latest_step(workdir))
            raise


def train_in_workdir(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> dict:
    """train_and_evaluate's run, once the config is checked and the workdir held."""
    process_start, chief = time.perf_counter(), jax.process_index() == 0
    mesh = parallel.make_mesh(config.train.num_devices)
    train_BxL, corpus = load_data(config)
    vocab = corpus.vocab
    checkpoints.check_workdir(workdir, config, vocab)
    if chief:
        checkpoints.write_workdir(workdir, config, vocab)
        run_json = workdir / "run.json"  # who ran it: code, versions, devices, command
        checkpoints.write_text(run_json, provenance.appended(run_json, provenance.record()))
    batch_size, num_steps = len(train_BxL), config.train.num_steps
    valid_batch_size = config.eval.valid_batch_size or batch_size
    steps_per_epoch = fixed_batches(train_BxL, config.train)
    logging.info("vocabulary %d words; %d batches per epoch", len(vocab), steps_per_epoch)
    logging.info("devices sharing the batch rows: %d", mesh.size)
    cfg = config_lib.model_config(config, len(vocab))
    state, schedule, train_fn, eval_fn = create_training(config, cfg, steps_per_epoch, mesh)
    every_target = config.eval.score_every_target
    evaluate_on = functools.partial(
        evaluation.evaluate, eval_fn, cfg=cfg, mesh=mesh, every_target=every_target
    )
    valid_targets = evaluation.scored_targets(
        len(corpus.valid), valid_batch_size, num_steps, every_target
    )
    test_targets = evaluation.scored_targets(
        len(corpus.test), config.eval.test_batch_size, config.eval.test_num_steps, every_target
    )

    def tune_temperature(params) -> float | None:
        """lamb's softmax temperature for `params` when eval.temperature_lowest is set."""
        if not config.eval.temperature_lowest:
            return None
        return evaluation.tune_temperature(
            eval_fn,
            params,
            corpus.valid,
            valid_batch_size,
            num_steps,
            config.eval.temperature_lowest,
            cfg=cfg,
            mesh=mesh,
        )

    logging.info(
        "validation scores %d of the %d targets, the test %d of %d",
        valid_targets,
        len(corpus.valid) - 1,
        test_targets,
        len(corpus.test) - 1,
    )

    def zero_carry():
        return parallel.put_carry(model.zero_carry(cfg, batch_size), mesh)

    mngr = checkpoints.manager(workdir, config.train.keep_checkpoints)
    best_mngr = checkpoints.best_manager(workdir) if config.train.test_weights == "best" else None
    logging.info("%d parameters", model.parameter_count(state.params))
    carry, progress = zero_carry(), checkpoints.Progress()
    if restored := checkpoints.restore(mngr, state, carry):
        state, carry, progress = restored
        logging.info(
            "Resuming from the checkpoint at step %d: epoch %d, batch %d.",
            checkpoints.step_of(state),
            progress.epoch,
            progress.batch,
        )
    elif config.train.finetune_from:
        state = finetune_start(state, config, cfg, vocab, mesh)
        logging.info("Fine-tuning the weights of %s.", config.train.finetune_from)
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
                if finetune_done(progress.history, config):
                    logging.info("Validation is non-monotone: fine-tuning is done.")
                    break
                # Schedule -> train (from a checkpoint's batch) -> validate -> record ->
                # [keep the best weights] -> NT-ASGD's switch (or fine-tuning's stop) -> save.
                layout = epoch_layout(train_BxL, config, epoch)
                carry = carry if progress.batch else zero_carry()
                lr = float(schedule((epoch - 1) * steps_per_epoch))
                reporter.epoch_start(epoch, len(layout), progress.batch, lr)
                state, progress = train_epoch(train_fn, state, carry, progress, layout, loop=loop)
                valid_start = time.perf_counter()
                temperature = tune_temperature(optim.eval_params(state))
                valid_ppl = evaluate_on(
                    optim.eval_params(state),
                    corpus.valid,
                    valid_batch_size,
                    num_steps,
                    temperature=temperature,
                )
                valid_seconds = time.perf_counter() - valid_start
                averaged = optim.is_averaging(state)
                progress = next_epoch(
                    progress,
                    epoch,
                    lr,
                    valid_ppl,
                    valid_seconds,
                    layout,
                    averaged,
                    config.data,
                    temperature,
                )
                if best_mngr and is_best(progress.history):
                    checkpoints.save_best(best_mngr, optim.eval_params(state), progress.history[-1])
                if not averaged and nonmonotone(progress.history, config.optim.nonmono):
                    logging.info("NT-ASGD: validation is non-monotone; averaging from now on.")
                    state = optim.start_averaging(state)
                elif not averaged and lamb_trigger(
                    progress.history, config.optim.average_after_best, config.optim.average_at_epoch
                ):
                    logging.info("lamb's trigger: averaging from now on.")
                    state = optim.start_averaging(state)
                step = checkpoints.step_of(state)
                reporter.epoch_end(progress.history, step)
                save(state, zero_carry(), progress)
                if stop:
                    raise Interrupted(stop[0], step)
        test_start = time.perf_counter()
        test_params, tested = tested_weights(state, progress.history, best_mngr)
        test_ppl = evaluate_on(
            test_params,
            corpus.test,
            config.eval.test_batch_size,
            config.eval.test_num_steps,
            temperature=tested.get("temperature"),
        )
        test_seconds = time.perf_counter() - test_start
        test_scalars = evaluation.with_bits(dict(perplexity=test_ppl), config.data)
        reporter.test(test_scalars, checkpoints.step_of(state))
    finally:
        reporter.close()
        mngr.close()
        if best_mngr:
            best_mngr.close()
    logging.info(
        "test perplexity %.2f%s (%s weights, epoch %d; batch %d, steps %d; %d targets; %.1fs)",
        test_ppl,
        evaluation.bits_note(test_scalars, "bpc"),
        config.train.test_weights,
        tested["epoch"],
        config.eval.test_batch_size,
        config.eval.test_num_steps,
        test_targets,
        test_seconds,
    )
    fixed_words = steps_per_epoch * num_steps * batch_size  # records from before "words"
    results = dict(
        # The tested weights' epoch: the last, or with test_weights="best" the best;
        # each perplexity followed by its bits per symbol at char and byte level.
        train_perplexity=tested["train_perplexity"],
        valid_perplexity=tested["valid_perplexity"],
        test_perplexity=test_ppl,
        valid_targets=valid_targets,  # the targets each perplexity is the mean over
        test_targets=test_targets,
        **({"softmax_temperature": tested["temperature"]} if "temperature" in tested else {}),
        test_weights=config.train.test_weights,
        test_epoch=tested["epoch"],
        test_seconds=test_seconds,  # the test pass, compilation included
        step=checkpoints.step_of(state),
        total_seconds=wall_before + time.perf_counter() - process_start,
        # Training alone (compilation included), evaluation excluded.
        words_per_sec=sum(r.get("words", fixed_words) for r in progress.history)
        / progress.train_seconds,
    )
    results = evaluation.with_bits(results, config.data)
    if chief:
        checkpoints.write_text(workdir / "results.json", json.dumps(results, indent=2) + "\n")
    return results

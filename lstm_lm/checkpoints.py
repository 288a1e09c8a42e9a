"""Checkpoints: all a run needs to continue exactly where it stopped, kept with orbax.

A workdir holds

    config.json          the config in effect (rewritten when a resume changes a value)
    vocab.txt            the vocabulary, one word per line, in id order
    checkpoints/<step>/  orbax: "state" (TrainState: step, params, optimizer state,
                         dropout key) and "carry" ((c, h) per layer), plus "progress" as JSON
    lock                 who trains in the workdir (host, PID, since when); the kernel's
                         lock on it, held while training, is what counts
    best/<epoch>/        with train.test_weights="best": the weights of the epoch with the
                         best validation perplexity so far ("params"), and that epoch's
                         record ("record", JSON); apart from the rolling checkpoints

`Progress` is where the loop stands: the epoch in progress, how many of its batches
are done and their summed cost, and the records of the finished epochs. A save inside
an epoch keeps the recurrent carry, so the rest of the epoch sees what it would have
seen without the interruption.

orbax writes each checkpoint into a temporary directory and renames it when complete,
so a process killed during a save leaves the previous checkpoint as the latest.
"""

import contextlib
import dataclasses
import datetime
import fcntl
import json
import logging as std_logging
import os
import pathlib
import re
import socket

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from lstm_lm import config as config_lib

# Keys that fix the saved arrays' shapes or the meaning of the data position; a resume
# that changes one of them is refused. Other changes are allowed and logged.
MUST_MATCH = (
    "data.level",
    "model.num_layers",
    "model.hidden_size",
    "model.hidden_sizes",
    "model.embedding_size",
    "model.tie_embeddings",
    "model.cell",
    "model.mogrifier_rounds",
    "model.mogrifier_rank",
    "model.softmax",
    "model.softmax_cutoffs",
    "model.softmax_div_value",
    "model.softmax_head_bias",
    "model.mos_experts",
    "train.batch_size",
    "train.num_steps",
    "train.max_batches_per_epoch",
    "train.random_lengths",
    "train.finetune_from",
    "optim.nonmono",  # whether the optimizer state holds an average
    "optim.weight_decay",
    "optim.name",  # the optimizer state's shape
    "train.test_weights",  # "best": the best epoch's weights are kept from the start
)


def _quiet_orbax(record: std_logging.LogRecord) -> bool:
    """Keep orbax's warnings and errors, drop its dozens of info lines per save."""
    return record.levelno >= std_logging.WARNING or f"{os.sep}orbax{os.sep}" not in record.pathname


logging.get_absl_logger().addFilter(_quiet_orbax)


class CheckpointError(Exception):
    """A checkpoint or workdir cannot be used; the message says which and what to do."""


@dataclasses.dataclass
class Progress:
    epoch: int = 1  # the epoch in progress (num_epochs + 1 once training is over)
    batch: int = 0  # batches of that epoch already trained
    cost_sum: float = 0.0  # their summed cost
    epoch_seconds: float = 0.0  # training time spent on that epoch so far
    train_seconds: float = 0.0  # training time of the whole run so far
    wall_seconds: float = 0.0  # wall time of the whole run so far, at the save
    history: list = dataclasses.field(default_factory=list)  # one record per finished epoch


class WriteFailed(CheckpointError):
    """A file of the run could not be written: a full disk, a read-only workdir, an I/O
    error. Files written before stay whole. `then` (set by the training loop, which knows
    the latest checkpoint) says how to go on."""

    def __init__(self, path, cause: str):
        super().__init__(path, cause)
        self.path, self.cause, self.then = path, cause, ""

    def __str__(self) -> str:
        return " ".join(filter(None, [f"Could not write {self.path}: {self.cause}.", self.then]))


def resume_note(latest_step: int | None) -> str:
    """WriteFailed.then for a training run whose latest complete checkpoint is that step."""
    if latest_step is None:
        return "No checkpoint was saved yet: make room (or make it writable) and rerun."
    return (
        f"The latest checkpoint, step {latest_step}, is whole: make room (or make it "
        "writable), then rerun the same command to resume from it."
    )


def os_cause(error: BaseException) -> str | None:
    """The operating system's reason a write failed, e.g. "No space left on device (errno
    28)": from an OSError in the exception's chain, or from tensorstore's message, which
    orbax raises as a ValueError ("... [os_error_code='28']"). None when it names none."""
    seen = error
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno:
            return f"{os.strerror(seen.errno)} (errno {seen.errno})"
        if match := re.search(r"os_error_code='(\d+)'", str(seen)):
            code = int(match.group(1))
            return f"{os.strerror(code)} (errno {code})"
        seen = seen.__cause__ or seen.__context__
    return None


@contextlib.contextmanager
def writing(path: pathlib.Path):
    """Around a write of `path`: an OSError, or a failure the operating system names (a
    full disk, a read-only folder), is WriteFailed naming `path` and the cause. orbax
    raises tensorstore's failures as ValueError, and leaves an unfinished save in a
    temporary directory, which it removes when a manager is next opened on the folder.
    Other errors pass unchanged."""
    try:
        yield
    except Exception as e:
        cause = os_cause(e)
        if cause is None and not isinstance(e, OSError):
            raise
        raise WriteFailed(path, cause or str(e)) from e


def write_text(path: pathlib.Path, text: str) -> None:
    """Write `text` to `path` whole or not at all: into path.tmp, then renamed over path, so
    a failed write leaves the old file as it was. WriteFailed when it cannot."""
    tmp = path.with_name(path.name + ".tmp")
    with writing(path):
        try:
            tmp.write_text(text)
            os.replace(tmp, path)
        except OSError:
            with contextlib.suppress(OSError):  # a read-only folder refuses this too
                tmp.unlink(missing_ok=True)
            raise


class WorkdirBusy(CheckpointError):
    """Another training process holds the workdir."""


@contextlib.contextmanager
def workdir_lock(workdir: pathlib.Path):
    """Hold the workdir for one trainer: an exclusive lock (flock) on workdir/lock for the
    block, which the kernel releases when the process ends however it ends, so a killed
    trainer leaves nothing stale. WorkdirBusy, naming the holder, when another process
    holds it; the file says who (host, PID, since when)."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 4096).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise WorkdirBusy(
            f"{workdir} is being trained by {holder}. Wait for that run to end (or stop "
            "it, and rerun this command to resume from its checkpoint), or train in "
            "another --workdir."
        ) from None
    since = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    note = f"host {socket.gethostname()}, PID {os.getpid()}, since {since}\n"
    try:
        with writing(path):
            os.ftruncate(fd, 0)
            os.write(fd, note.encode())
    except WriteFailed:  # a disk too full for this note is too full to train on
        os.close(fd)
        raise
    try:
        yield
    finally:
        os.close(fd)  # releases the lock


def check_workdir(workdir: pathlib.Path, config: ml_collections.ConfigDict, vocab) -> None:
    """When the workdir holds a run, check that `config` and `vocab` can continue it: a
    change to a MUST_MATCH key or to the vocabulary is a CheckpointError; other changes
    are logged. Every process checks, so that all of them stop on a refusal."""
    config_path, vocab_path = workdir / "config.json", workdir / "vocab.txt"
    if config_path.exists():
        saved = flatten(json.loads(load_config(workdir).to_json()))
        wanted = flatten(json.loads(config.to_json()))  # tuples as JSON has them: lists
        changed = {k: (saved.get(k), v) for k, v in wanted.items() if saved.get(k) != v}
        refused = sorted(k for k in changed if k in MUST_MATCH)
        if refused:
            diffs = ", ".join(f"{k}: {changed[k][0]!r} -> {changed[k][1]!r}" for k in refused)
            raise CheckpointError(
                f"{workdir} holds a run whose config differs in {diffs}; its checkpoints "
                "cannot continue with that. Use the saved values or another --workdir."
            )
        for key, (old, new) in sorted(changed.items()):
            logging.warning("Resuming with config.%s changed: %r -> %r", key, old, new)
    if vocab_path.exists() and vocab_path.read_text().split("\n")[:-1] != list(vocab):
        raise CheckpointError(
            f"The vocabulary built from the data differs from {vocab_path}, which the run "
            "in this workdir was trained with. Point data_dir at that run's data or use "
            "another --workdir."
        )


def write_workdir(workdir: pathlib.Path, config: ml_collections.ConfigDict, vocab) -> None:
    """config.json (the config in effect) and vocab.txt (one word per line, in id order)."""
    workdir.mkdir(parents=True, exist_ok=True)
    write_text(workdir / "config.json", config.to_json(indent=2) + "\n")
    write_text(workdir / "vocab.txt", "".join(w + "\n" for w in vocab))


def load_vocab(workdir: pathlib.Path) -> dict[str, int]:
    path = workdir / "vocab.txt"
    if not path.is_file():
        raise CheckpointError(f"{path} is missing: {workdir} does not hold a training run.")
    return {word: i for i, word in enumerate(path.read_text().split("\n")[:-1])}


def flatten(tree: dict, prefix: str = "") -> dict:
    """{"model": {"hidden_size": 2}} -> {"model.hidden_size": 2}."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def load_config(workdir: pathlib.Path) -> ml_collections.ConfigDict:
    """The run's config.json; CheckpointError for a missing one or one of the flat
    layout of lstm_lm 0.1, whose checkpoints also hold the carry in another layout."""
    path = workdir / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{path} is missing: {workdir} does not hold a training run.")
    saved = json.loads(path.read_text())
    if "model" not in saved:
        raise CheckpointError(
            f"{path} is a flat config of lstm_lm 0.1 (hidden_size={saved.get('hidden_size')!r} "
            "at the top level); this version groups the keys (config.model.hidden_size) and "
            "keeps the carry per layer, so it cannot continue or load that run. Train in a "
            "new workdir, or use lstm_lm 0.1 (commit 19ea1e8) for that run."
        )
    # Keys added since the run was saved take their defaults (which leave the model and
    # the training as they were); JSON's lists are the config's tuples.
    config = config_lib.default_config()
    config.update_from_flattened_dict(
        {k: tuple(v) if isinstance(v, list) else v for k, v in flatten(saved).items()}
    )
    return config


def manager(workdir: pathlib.Path, keep: int | None) -> ocp.CheckpointManager:
    """Checkpoints under workdir/checkpoints, the newest `keep` kept (None: all). Saves are
    synchronous: when `save` returns, the checkpoint is complete on disk. Opening it removes
    what an unfinished save left."""
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, enable_async_checkpointing=False, cleanup_tmp_directories=True
    )
    return ocp.CheckpointManager(workdir.resolve() / "checkpoints", options=options)


def latest_step(workdir: pathlib.Path) -> int | None:
    """The step of the workdir's latest complete checkpoint, or None."""
    with contextlib.closing(manager(workdir, None)) as mngr:
        return mngr.latest_step()


def step_of(state) -> int:
    """The global step of a TrainState, on any process (the step is replicated)."""
    return int(np.asarray(state.step.addressable_data(0)))


def save(mngr: ocp.CheckpointManager, state, carry, progress: Progress) -> None:
    """Save at `state.step`, unless that step is already saved. Every process calls this
    (orbax writes each array once); each waits until the checkpoint is complete."""
    step = step_of(state)
    if mngr.latest_step() == step:
        return
    with writing(mngr.directory / str(step)):
        mngr.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                carry=ocp.args.StandardSave(carry),
                progress=ocp.args.JsonSave(dataclasses.asdict(progress)),
            ),
        )
    logging.info(
        "saved checkpoint at step %d (epoch %d, batch %d)", step, progress.epoch, progress.batch
    )


def restore(mngr: ocp.CheckpointManager, state, carry, step: int | None = None):
    """(state, carry, progress) of checkpoint `step` (default: the latest), or None when
    there is none. `state` and `carry` give the tree structure, shapes and dtypes."""
    step = mngr.latest_step() if step is None else step
    if step is None:
        return None
    if step not in mngr.all_steps():
        steps = ", ".join(map(str, mngr.all_steps())) or "none"
        raise CheckpointError(f"No checkpoint at step {step} in {mngr.directory} (has: {steps}).")
    try:
        restored = mngr.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(_abstract(state)),
                carry=ocp.args.StandardRestore(_abstract(carry)),
                progress=ocp.args.JsonRestore(),
            ),
        )
        progress = Progress(**restored["progress"])
    except Exception as e:  # orbax and tensorstore raise many types for a damaged file
        raise CheckpointError(
            f"Checkpoint {mngr.directory / str(step)} is unreadable ({type(e).__name__}: "
            f"{e}). If it is damaged, move that directory away to fall back to the previous "
            "checkpoint. If its arrays have other shapes than this code expects (a workdir "
            "from before the softmax weight became [V, H], say), train in a new workdir."
        ) from e
    return restored["state"], restored["carry"], progress


def best_manager(workdir: pathlib.Path) -> ocp.CheckpointManager:
    """The best-validation weights under workdir/best/<epoch>, only the latest kept."""
    options = ocp.CheckpointManagerOptions(
        max_to_keep=1, enable_async_checkpointing=False, cleanup_tmp_directories=True
    )
    return ocp.CheckpointManager(workdir.resolve() / "best", options=options)


def save_best(mngr: ocp.CheckpointManager, params, record: dict) -> None:
    """Keep `params` as the best weights, with their epoch's `record` (from the history),
    unless that epoch is already saved: a resumed run that repeats the epoch after a
    crash computes the same weights. Every process calls this."""
    if mngr.latest_step() == record["epoch"]:
        return
    for later in [e for e in mngr.all_steps() if e > record["epoch"]]:  # a rewound run's
        mngr.delete(later)
    with writing(mngr.directory / str(record["epoch"])):
        mngr.save(
            record["epoch"],
            args=ocp.args.Composite(
                params=ocp.args.StandardSave(params), record=ocp.args.JsonSave(record)
            ),
        )
    logging.info(
        "saved the best weights so far: epoch %d, valid perplexity %.2f",
        record["epoch"],
        record["valid_perplexity"],
    )


def restore_best(mngr: ocp.CheckpointManager, params):
    """(params, record) of the best weights, or None when none were saved. `params` gives
    the tree structure, shapes and dtypes."""
    epoch = mngr.latest_step()
    if epoch is None:
        return None
    try:
        restored = mngr.restore(
            epoch,
            args=ocp.args.Composite(
                params=ocp.args.StandardRestore(_abstract(params)), record=ocp.args.JsonRestore()
            ),
        )
    except Exception as e:  # as in `restore`
        raise CheckpointError(
            f"The best weights in {mngr.directory / str(epoch)} are unreadable "
            f"({type(e).__name__}: {e})."
        ) from e
    return restored["params"], restored["record"]


def _abstract(tree):
    """Shapes, dtypes and the shardings to restore onto: the template's, or one device
    when it has none; so a checkpoint restores on any number of devices."""
    one_device = jax.sharding.SingleDeviceSharding(jax.devices()[0])

    def spec(a):
        sharding = getattr(a, "sharding", None) or one_device
        return jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding)

    return jax.tree.map(spec, tree)

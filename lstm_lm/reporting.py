"""Where a training run's numbers go, all in the workdir or on the terminal:

- progress: a bar on an interactive terminal, else a log line about every 10% of an epoch;
- `tensorboard/`: event files (tensorboardX, no TensorFlow needed) with train perplexity,
  learning rate, gradient norm and words/s as training goes, valid/test perplexity (and
  bits per symbol, `bpc`, beside each perplexity at char and byte level);
- `metrics.jsonl`: one JSON record per finished epoch;
- `learning_curve.png`: train/valid perplexity per epoch, redrawn after each epoch.
"""

import contextlib
import json
import pathlib
import sys

import tqdm
from absl import logging

from lstm_lm import checkpoints, evaluation

REPORTS_PER_EPOCH = 10  # log lines per epoch when there is no progress bar


class Reporter:
    """The run's sink for numbers. `history` (records of finished epochs, e.g. from a
    checkpoint) is rewritten to metrics.jsonl; TensorBoard events from `start_step` on
    are dropped, as a resumed run writes them anew. A write that fails raises
    checkpoints.WriteFailed; metrics.jsonl is rewritten whole each time, so it is never
    left half-written."""

    def __init__(self, workdir: pathlib.Path, history: list[dict], start_step: int):
        self.workdir = workdir
        self.metrics_path = workdir / "metrics.jsonl"
        write_metrics(self.metrics_path, history)
        import tensorboardX  # here, not at the top: it takes seconds (it loads torch if present)

        self.writer = tensorboardX.SummaryWriter(
            str(workdir / "tensorboard"), purge_step=start_step or None, flush_secs=30
        )
        self.interactive = sys.stderr.isatty()
        self.bar = None

    def epoch_start(self, epoch: int, num_batches: int, start_batch: int, lr: float) -> None:
        logging.info("epoch %d learning rate %.4g", epoch, lr)
        if start_batch:
            logging.info("epoch %d resumes at batch %d of %d", epoch, start_batch, num_batches)
        if self.interactive:
            self.bar = tqdm.tqdm(
                total=num_batches, initial=start_batch, desc=f"epoch {epoch}", unit="batch"
            )

    def train_progress(self, epoch, lo, hi, num_batches, step, scalars: dict) -> None:
        """After batches [lo, hi) of the epoch; `scalars`: perplexity, lr, grad_norm, wps."""
        for name, value in scalars.items():
            self.writer.add_scalar(f"train/{name}", value, step)
        if self.bar is not None:
            self.bar.update(hi - lo)
            self.bar.set_postfix(perplexity=f"{scalars['perplexity']:.2f}")
        elif hi * REPORTS_PER_EPOCH // num_batches > lo * REPORTS_PER_EPOCH // num_batches:
            logging.info(
                "epoch %d %3.0f%% perplexity %.2f%s speed %.0f wps",
                epoch,
                100 * hi / num_batches,
                scalars["perplexity"],
                evaluation.bits_note(scalars, "bpc"),
                scalars["words_per_sec"],
            )

    def pause(self):
        """A context in which log lines can be written without breaking the bar."""
        if self.bar is None:
            return contextlib.nullcontext()
        return tqdm.tqdm.external_write_mode(file=sys.stderr)

    def epoch_end(self, history: list[dict], step: int) -> None:
        """For the epoch just recorded in `history`: log, append to metrics.jsonl,
        TensorBoard, and redraw the learning curve."""
        record = history[-1]
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        logging.info(
            "epoch %d train perplexity %.2f%s valid perplexity %.2f%s (%.0fs)",
            record["epoch"],
            record["train_perplexity"],
            evaluation.bits_note(record, "train_bpc"),
            record["valid_perplexity"],
            evaluation.bits_note(record, "valid_bpc"),
            record["seconds"],
        )
        write_metrics(self.metrics_path, history)
        self.writer.add_scalar("valid/perplexity", record["valid_perplexity"], step)
        if "valid_bpc" in record:
            self.writer.add_scalar("valid/bpc", record["valid_bpc"], step)
        with checkpoints.writing(self.workdir / "tensorboard"):
            self.writer.flush()
        plot_learning_curve(history, self.workdir / "learning_curve.png")

    def test(self, scalars: dict, step: int) -> None:
        """`scalars`: the test perplexity, and its bpc at char and byte level."""
        for name, value in scalars.items():
            self.writer.add_scalar(f"test/{name}", value, step)

    def close(self) -> None:
        """Closes the bar and the event files; a failure to flush them is logged, not
        raised, so that it does not hide the error that may be ending the run."""
        if self.bar is not None:
            self.bar.close()
        try:
            self.writer.close()
        except OSError as e:
            logging.warning("Could not write the last TensorBoard events: %s", e)


class Silent:
    """A Reporter that reports nothing: for the processes other than process 0."""

    def __init__(self, *args):
        pass

    def epoch_start(self, *args):
        pass

    def train_progress(self, *args):
        pass

    def pause(self):
        return contextlib.nullcontext()

    def epoch_end(self, *args):
        pass

    def test(self, *args):
        pass

    def close(self):
        pass


def write_metrics(path: pathlib.Path, history: list[dict]) -> None:
    """metrics.jsonl: one JSON record per finished epoch."""
    checkpoints.write_text(path, "".join(json.dumps(r) + "\n" for r in history))


def curve_series(history: list[dict]) -> tuple[str, bool, dict[str, list[float]]]:
    """What the learning curve plots: (y label, log scale?, {"train": [...], "valid": [...]})
    per epoch: perplexity on a log scale, or bits per symbol on a linear one where the
    records have them (char and byte level)."""
    bits = "valid_bpc" in history[0]
    key = "{}_bpc" if bits else "{}_perplexity"
    series = {split: [r[key.format(split)] for r in history] for split in ("train", "valid")}
    return ("bits per symbol", False, series) if bits else ("perplexity", True, series)


def plot_learning_curve(history: list[dict], path: pathlib.Path) -> None:
    """Train and valid perplexity (or bits per symbol: see curve_series) per epoch, to a
    PNG at `path`."""
    import matplotlib  # here, not at the top: a second of import that only this needs

    matplotlib.use("Agg")  # files only, no display needed
    from matplotlib import pyplot as plt
    from matplotlib.ticker import FormatStrFormatter, MaxNLocator

    epochs = [r["epoch"] for r in history]
    label, log, series = curve_series(history)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for (split, values), marker in zip(series.items(), ("o-", "s-")):
        ax.plot(epochs, values, marker, label=split)
    if log:
        ax.set_yscale("log")
        ax.yaxis.set_minor_formatter(FormatStrFormatter("%g"))
    ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(label)
    ax.set_title(path.parent.name)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    try:
        with checkpoints.writing(path):
            fig.savefig(path)
    finally:
        plt.close(fig)

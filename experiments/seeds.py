"""Train one config over several seeds and print each run's numbers with their spread.

    python experiments/seeds.py --config=configs/ptb_small.py --root=runs/seeds \
        [--seeds=0,1,2] [--finetune_epochs=2] [--table_only]

Each seed trains through main.py, one after another, into ROOT/<config name>_seed<S>
(a run already there resumes, or is only read when it has results.json). With
--finetune_epochs=N, each run is then fine-tuned from its weights for N epochs into
ROOT/<config name>_seed<S>_finetune, as the AWD configs' docstrings say. The table gives
valid and test perplexity per run and their mean +- sample standard deviation (n - 1).
"""

import json
import pathlib
import statistics
import subprocess
import sys

from absl import app, flags

flags.DEFINE_string("config", None, "The config file to train.")
flags.DEFINE_string("root", None, "The folder the runs' workdirs go in.")
flags.DEFINE_list("seeds", ["0", "1", "2"], "The seeds (config.seed).")
flags.DEFINE_integer(
    "finetune_epochs", 0, "Fine-tune each run for this many epochs.", lower_bound=0
)
flags.DEFINE_bool("table_only", False, "Do not train: print the table of the runs there.")
flags.mark_flags_as_required(["config", "root"])
FLAGS = flags.FLAGS

MAIN = pathlib.Path(__file__).resolve().parents[1] / "main.py"


def train(workdir, seed, extra=()):
    """Runs main.py for one seed unless workdir already holds its results."""
    if (workdir / "results.json").exists():
        return
    command = [
        sys.executable,
        str(MAIN),
        f"--config={FLAGS.config}",
        f"--workdir={workdir}",
        f"--config.seed={seed}",
        *extra,
    ]
    print("+", " ".join(command), flush=True)
    subprocess.run(command, check=True)


def read_results(workdir):
    """results.json of a run, or None where it has not finished."""
    path = workdir / "results.json"
    return json.loads(path.read_text()) if path.exists() else None


def spread(values):
    """'mean +- sd' of a list (sd with n - 1; a single value has none)."""
    if len(values) < 2:
        return f"{values[0]:.2f} (one run)" if values else "-"
    return f"{statistics.mean(values):.2f} +- {statistics.stdev(values):.2f}"


def table(rows):
    """A markdown table of (name, results) pairs, then the spread of each kind of run."""
    lines = [
        "| run | epoch tested | valid | test | seconds |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, results in rows:
        if results is None:
            lines.append(f"| {name} | not finished | | | |")
            continue
        lines.append(
            f"| {name} | {results['test_epoch']} | {results['valid_perplexity']:.2f} | "
            f"{results['test_perplexity']:.2f} | {results['total_seconds']:.0f} |"
        )
    for label, tuned in (("trained", False), ("fine-tuned", True)):
        done = [r for n, r in rows if r is not None and n.endswith("_finetune") == tuned]
        if done:
            lines.append(
                f"\n{label}, {len(done)} runs: valid "
                f"{spread([r['valid_perplexity'] for r in done])}, test "
                f"{spread([r['test_perplexity'] for r in done])}"
            )
    return "\n".join(lines)


def main(argv):
    del argv
    root = pathlib.Path(FLAGS.root)
    name = pathlib.Path(FLAGS.config).stem
    rows = []
    for seed in FLAGS.seeds:
        workdir = root / f"{name}_seed{seed}"
        if not FLAGS.table_only:
            train(workdir, seed)
        rows.append((workdir.name, read_results(workdir)))
        if FLAGS.finetune_epochs:
            tuned = root / f"{name}_seed{seed}_finetune"
            if not FLAGS.table_only:
                train(
                    tuned,
                    seed,
                    [
                        f"--config.train.finetune_from={workdir}",
                        f"--config.train.num_epochs={FLAGS.finetune_epochs}",
                    ],
                )
            rows.append((tuned.name, read_results(tuned)))
        print(table(rows), flush=True)


if __name__ == "__main__":
    app.run(main)

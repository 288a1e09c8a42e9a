"""Train and evaluate an LSTM language model on the Penn Treebank.

python main.py --config=configs/ptb_small.py [--workdir=DIR] [--config.KEY=VALUE ...]
"""

import datetime
import pathlib
import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from lstm_lm import data, train

config_flags.DEFINE_config_file("config", None, "Path to a config file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Where to write config.json, metrics.jsonl, results.json.")
flags.DEFINE_string(
    "jax_cache_dir",
    str(pathlib.Path.home() / ".cache" / "lstm_lm" / "jax"),
    "JAX's persistent compilation cache: a rerun skips compiling. Empty to disable.",
)
flags.mark_flags_as_required(["config"])
FLAGS = flags.FLAGS


def default_workdir(config_path: str) -> pathlib.Path:
    """workdirs/<config name>-<UTC time>: a new directory per run, so nothing is overwritten."""
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")
    return pathlib.Path("workdirs") / f"{pathlib.Path(config_path).stem}-{stamp}"


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    workdir = pathlib.Path(
        FLAGS.workdir or default_workdir(config_flags.get_config_filename(FLAGS["config"]))
    )
    if workdir.is_file():
        sys.exit(f"--workdir={workdir} is a file; give a directory.")
    if (workdir / "metrics.jsonl").exists():
        sys.exit(f"{workdir} already holds a run (metrics.jsonl); give another --workdir.")
    if FLAGS.jax_cache_dir:
        jax.config.update("jax_compilation_cache_dir", FLAGS.jax_cache_dir)
    logging.info("workdir: %s", workdir.resolve())
    logging.info("JAX %s on %s", jax.__version__, jax.devices())
    try:
        train.train_and_evaluate(FLAGS.config, workdir)
    except (data.DataError, ValueError, FloatingPointError) as e:
        sys.exit(f"Error: {e}")


if __name__ == "__main__":
    logging.set_verbosity(logging.INFO)
    app.run(main)

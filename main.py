"""Train an LSTM language model (on the Penn Treebank, WikiText or your own text), or use one.

    python main.py --config=configs/ptb_small.py [--workdir=DIR] [--config.KEY=VALUE ...]
    python main.py --mode=evaluate --workdir=DIR [--eval_batch_size=1 --eval_num_steps=1]
                   [--cache_window=500 --cache_lambda=0.15 --cache_theta=0.3]
                   [--dynamic_eval --dynamic_lr=1e-3 --dynamic_decay=2e-4 --dynamic_rule=rms]
    python main.py --mode=score --workdir=DIR --text_file=FILE [--per_word=ROWS.tsv]
                   [cache and dynamic flags]
    python main.py --mode=predict --workdir=DIR --prompt="the stock" [--top_k=10]
                   [--prompt_file=FILE]
    python main.py --mode=sample --workdir=DIR [--prompt=TEXT --num_words=50 --temperature=1
                   --top_k=0 --greedy --no_unk --no_eos --seed=0]
    python main.py --mode=embeddings --workdir=DIR --out=OUT [--num_words=2000]
                   [--which=input|output] [--neighbours=stock,bank,monday]

Training resumes from DIR's latest checkpoint when DIR already holds the run, and splits
the batch across all devices. On several hosts, run the same command on each with
--distributed (or --coordinator_address, --num_processes, --process_id). The other
modes read DIR's config.json, vocab.txt and checkpoint (--step, default the latest).
"""

import datetime
import json
import pathlib
import shlex
import sys

import jax
import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from lstm_lm import adaptive, checkpoints, data, embeddings, inference, train
from lstm_lm import config as config_lib

config_flags.DEFINE_config_file("config", None, "Path to a config file.", lock_config=True)
flags.DEFINE_enum(
    "mode",
    "train",
    ["train", "evaluate", "score", "predict", "sample", "embeddings"],
    "What to do.",
)
flags.DEFINE_string("workdir", None, "The run's directory; training resumes from it.")
flags.DEFINE_string(
    "jax_cache_dir",
    str(pathlib.Path.home() / ".cache" / "lstm_lm" / "jax"),
    "JAX's persistent compilation cache: a rerun skips compiling. Empty to disable.",
)
flags.DEFINE_integer(
    "step", None, "evaluate/score/predict/sample/embeddings: checkpoint step (default latest)."
)
flags.DEFINE_integer(
    "eval_batch_size", None, lower_bound=1, help="evaluate: batch size for both splits."
)
flags.DEFINE_integer(
    "eval_num_steps", None, lower_bound=1, help="evaluate: unrolled steps for both splits."
)
flags.DEFINE_string("text_file", None, "score: the text file to score.")
flags.DEFINE_string(
    "per_word",
    None,
    "score: also write each scored word's log-probability and rank to this .tsv or .jsonl.",
)
ADAPTIVE_FLAGS = [
    flags.DEFINE_integer(
        "cache_window",
        0,
        "evaluate/score: the neural cache's window, past words per stream (0: no cache).",
        lower_bound=0,
    ),
    # The defaults below are the values chosen on ptb_small's valid split
    # (experiments/adaptive_eval/); experiments/tune_eval.py chooses them for another run.
    flags.DEFINE_float("cache_lambda", 0.15, "evaluate/score: the cache's weight, in [0, 1)."),
    flags.DEFINE_float(
        "cache_theta", 0.3, "evaluate/score: the cache scores' inverse temperature."
    ),
    flags.DEFINE_bool(
        "dynamic_eval", False, "evaluate/score: a gradient step after each scored segment."
    ),
    flags.DEFINE_float("dynamic_lr", 1e-3, "evaluate/score: dynamic evaluation's learning rate."),
    flags.DEFINE_float(
        "dynamic_decay",
        2e-4,
        "evaluate/score: dynamic evaluation's pull back to the trained weights.",
    ),
    flags.DEFINE_enum(
        "dynamic_rule",
        "rms",
        ["rms", "sgd"],
        "evaluate/score: RMS-normalised steps (statistics from the training split) or plain SGD.",
    ),
    flags.DEFINE_integer(
        "dynamic_rms_batches",
        0,
        "evaluate/score: training batches to gather the RMS over (0: all).",
        lower_bound=0,
    ),
]
flags.DEFINE_string(
    "prompt", "", "predict/sample: the words to start from (default: a new sentence)."
)
flags.DEFINE_string("prompt_file", None, "predict: a file of prompts, one per line.")
flags.DEFINE_integer(
    "top_k",
    None,
    "predict: how many words to list (default 10, 0 = all). sample: draw from the k most "
    "likely words only (default 0 = all).",
    lower_bound=0,
)
flags.DEFINE_integer(
    "num_words",
    None,
    "sample: how many words to draw (default 50). embeddings: how many of the most "
    "frequent words to write and picture (default 2000, or the whole vocabulary).",
    lower_bound=1,
)
flags.DEFINE_float("temperature", 1.0, "sample: softmax temperature.")
flags.DEFINE_bool("greedy", False, "sample: always take the most likely word.")
flags.DEFINE_bool("no_unk", False, "sample: never draw <unk> (renormalise without it).")
flags.DEFINE_bool("no_eos", False, "sample: never draw <eos>, so never end a line.")
flags.DEFINE_integer("seed", 0, "sample: random seed; embeddings: t-SNE's random state.")
flags.DEFINE_string("out", None, "embeddings: the directory to write the files to.")
flags.DEFINE_enum(
    "which",
    "input",
    list(embeddings.MATRICES),
    "embeddings: the input embedding or the softmax weight (one matrix when tied).",
)
flags.DEFINE_list(
    "neighbours", [], "embeddings: print these words' nearest words by cosine, as w1,w2,..."
)
flags.DEFINE_bool(
    "distributed",
    False,
    "Several processes: call jax.distributed.initialize(), which finds its settings itself "
    "on Cloud TPU and under SLURM; elsewhere give the three flags below.",
)
flags.DEFINE_string("coordinator_address", None, "Several processes: host:port of process 0.")
flags.DEFINE_integer("num_processes", None, "Several processes: how many.")
flags.DEFINE_integer("process_id", None, "Several processes: this one's index, from 0.")
FLAGS = flags.FLAGS

USER_ERRORS = (
    data.DataError,
    checkpoints.CheckpointError,
    config_lib.ConfigError,
    FloatingPointError,
)


def default_workdir(config_path: str) -> pathlib.Path:
    """workdirs/<config name>-<UTC time>: a new directory per run, so nothing is overwritten."""
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")
    return pathlib.Path("workdirs") / f"{pathlib.Path(config_path).stem}-{stamp}"


def adaptive_evaluation() -> tuple[adaptive.Cache | None, adaptive.Dynamic | None]:
    """The cache and dynamic evaluation the flags ask for (None: not asked)."""
    cache = dynamic = None
    if FLAGS.cache_window:
        if not 0.0 <= FLAGS.cache_lambda < 1.0:
            raise config_lib.ConfigError(
                f"--cache_lambda must be in [0, 1), got {FLAGS.cache_lambda}."
            )
        if not FLAGS.cache_theta > 0.0:
            raise config_lib.ConfigError(f"--cache_theta must be > 0, got {FLAGS.cache_theta}.")
        cache = adaptive.Cache(FLAGS.cache_window, FLAGS.cache_lambda, FLAGS.cache_theta)
    if FLAGS.dynamic_eval:
        if not FLAGS.dynamic_lr >= 0.0:
            raise config_lib.ConfigError(f"--dynamic_lr must be >= 0, got {FLAGS.dynamic_lr}.")
        if not 0.0 <= FLAGS.dynamic_decay <= 1.0:
            raise config_lib.ConfigError(
                f"--dynamic_decay must be in [0, 1], got {FLAGS.dynamic_decay}."
            )
        rms = FLAGS.dynamic_rule == "rms"
        dynamic = adaptive.Dynamic(FLAGS.dynamic_lr, FLAGS.dynamic_decay, rms=rms)
    return cache, dynamic


def use_compilation_cache(cache_dir: str) -> None:
    """Keep every compiled function in `cache_dir`, however fast it compiled: JAX's
    defaults skip those that took under a second, which on a fast CPU is all of a small
    model's, so whether a rerun compiles again would depend on the machine."""
    jax.config.update("jax_compilation_cache_dir", cache_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)  # -1: no size floor


def without_flag(args: list[str], name: str) -> list[str]:
    """`args` less the flag `name` in each of absl's spellings: --name=V, --name V, and
    the same with one dash."""
    kept, skip_value = [], False
    for arg in args:
        if skip_value:
            skip_value = False
        elif arg in (f"--{name}", f"-{name}"):
            skip_value = True
        elif not arg.startswith((f"--{name}=", f"-{name}=")):
            kept.append(arg)
    return kept


def resume_command(workdir: pathlib.Path) -> str:
    """This process's command line with --workdir pinned, so rerunning it resumes."""
    args = without_flag(sys.argv[1:], "workdir")
    return shlex.join(["python", sys.argv[0], *args, f"--workdir={workdir}"])


def train_mode(workdir: pathlib.Path) -> None:
    try:
        train.train_and_evaluate(FLAGS.config, workdir)
    except train.Interrupted as e:
        print(
            f"{e} A checkpoint is saved in {workdir / 'checkpoints'}. To resume, rerun:\n"
            f"  {resume_command(workdir)}",
            file=sys.stderr,
        )
        sys.exit(128 + e.signum)


def evaluate_mode(workdir: pathlib.Path) -> None:
    cache, dynamic = adaptive_evaluation()
    run = inference.load_run(workdir, FLAGS.step)
    results = inference.evaluate_run(
        run,
        FLAGS.eval_batch_size,
        FLAGS.eval_num_steps,
        cache=cache,
        dynamic=dynamic,
        rms_batches=FLAGS.dynamic_rms_batches,
    )
    print(json.dumps(dict(results, step=run.step), indent=2))


def score_mode(workdir: pathlib.Path) -> None:
    if not FLAGS.text_file:
        raise app.UsageError("--mode=score needs --text_file.")
    cache, dynamic = adaptive_evaluation()
    per_word = pathlib.Path(FLAGS.per_word) if FLAGS.per_word else None
    run = inference.load_run(workdir, FLAGS.step)
    path = pathlib.Path(FLAGS.text_file)
    print(
        json.dumps(
            inference.score_file(run, path, cache, dynamic, FLAGS.dynamic_rms_batches, per_word),
            indent=2,
        )
    )


def predict_mode(workdir: pathlib.Path) -> None:
    prompts = [FLAGS.prompt]
    if FLAGS.prompt_file:
        prompts = inference.read_prompts(pathlib.Path(FLAGS.prompt_file))
    run = inference.load_run(workdir, FLAGS.step)
    top_k = 10 if FLAGS.top_k is None else FLAGS.top_k
    results = [dict(prompt=p, next_words=inference.predict(run, p, top_k)) for p in prompts]
    if sys.stdout.isatty():
        print("\n\n".join(prediction_table(**result) for result in results))
    else:
        print(json.dumps(results, indent=2))


def prediction_table(prompt: str, next_words: list[dict]) -> str:
    """The next words after `prompt` as a table for a terminal."""
    lines = [f"after {prompt!r}:" if prompt else "at the start of a sentence:"]
    lines.append(f"{'rank':>6}  {'word':<16} {'probability':>11} {'log p':>8}")
    for rank, w in enumerate(next_words, 1):
        lines.append(f"{rank:>6}  {w['word']:<16} {w['probability']:>11.4f} {w['log_prob']:>8.3f}")
    return "\n".join(lines)


def sample_mode(workdir: pathlib.Path) -> None:
    run = inference.load_run(workdir, FLAGS.step)
    text = inference.sample_text(
        run,
        FLAGS.prompt,
        50 if FLAGS.num_words is None else FLAGS.num_words,
        temperature=FLAGS.temperature,
        top_k=FLAGS.top_k or 0,
        greedy=FLAGS.greedy,
        seed=FLAGS.seed,
        no_unk=FLAGS.no_unk,
        no_eos=FLAGS.no_eos,
    )
    print(text)


def embeddings_mode(workdir: pathlib.Path) -> None:
    if not FLAGS.out and not FLAGS.neighbours:
        raise app.UsageError("--mode=embeddings needs --out=DIR (or --neighbours=WORDS).")
    run = inference.load_run(workdir, FLAGS.step)
    out = pathlib.Path(FLAGS.out) if FLAGS.out else None
    written = inference.look_at_embeddings(
        run, FLAGS.which, FLAGS.num_words, FLAGS.neighbours, out, FLAGS.seed
    )
    for word, near in written["neighbours"].items():
        print(f"{word}: " + ", ".join(f"{w} {cosine:.3f}" for w, cosine in near))
    if FLAGS.out:
        print(f"Wrote {', '.join(written['files'])} to {FLAGS.out}.")


MODES = {
    "train": train_mode,
    "evaluate": evaluate_mode,
    "score": score_mode,
    "predict": predict_mode,
    "sample": sample_mode,
    "embeddings": embeddings_mode,
}
# The flags that only some modes read; given with another mode, they are an error.
FLAG_MODES = {
    **{f.name: ("evaluate", "score") for f in ADAPTIVE_FLAGS},
    "step": ("evaluate", "score", "predict", "sample", "embeddings"),
    "eval_batch_size": ("evaluate",),
    "eval_num_steps": ("evaluate",),
    "text_file": ("score",),
    "per_word": ("score",),
    "prompt": ("predict", "sample"),
    "prompt_file": ("predict",),
    "top_k": ("predict", "sample"),
    "num_words": ("sample", "embeddings"),
    "temperature": ("sample",),
    "greedy": ("sample",),
    "no_unk": ("sample",),
    "no_eos": ("sample",),
    "seed": ("sample", "embeddings"),
    "out": ("embeddings",),
    "which": ("embeddings",),
    "neighbours": ("embeddings",),
}


def check_flags() -> None:
    """UsageError for a flag the mode does not read, or a missing --config/--workdir."""
    if FLAGS.mode == "train" and FLAGS.config is None:
        raise app.UsageError("Training needs --config=configs/<name>.py.")
    if FLAGS.mode != "train" and FLAGS.workdir is None:
        raise app.UsageError(f"--mode={FLAGS.mode} needs --workdir of a trained run.")
    given = [name for name, modes in FLAG_MODES.items() if FLAGS[name].present]
    for name in given:
        if FLAGS.mode not in FLAG_MODES[name]:
            modes = " or ".join(FLAG_MODES[name])
            raise app.UsageError(f"--{name}: for --mode={modes} only.")
    if FLAGS.prompt_file and FLAGS["prompt"].present:
        raise app.UsageError("Give --prompt or --prompt_file, not both.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    check_flags()
    workdir = pathlib.Path(
        FLAGS.workdir or default_workdir(config_flags.get_config_filename(FLAGS["config"]))
    )
    if workdir.exists() and not workdir.is_dir():
        sys.exit(f"Error: --workdir={workdir} is not a directory.")
    if FLAGS.jax_cache_dir:
        use_compilation_cache(FLAGS.jax_cache_dir)
    if FLAGS.distributed or FLAGS.coordinator_address:
        jax.distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
    logging.info("workdir: %s", workdir.resolve())
    logging.info(
        "JAX %s, process %d of %d, devices %s",
        jax.__version__,
        jax.process_index(),
        jax.process_count(),
        jax.devices(),
    )
    try:
        MODES[FLAGS.mode](workdir)
    except USER_ERRORS as e:
        sys.exit(f"Error: {e}")


def parse_flags(argv: list[str]) -> list[str]:
    """absl's parsing, with a --config.KEY that the config lacks told in one line."""
    try:
        return app.parse_flags_with_usage(argv)
    except (AttributeError, KeyError) as e:  # what ml_collections raises for an unknown key
        while e.args and isinstance(e.args[0], Exception):  # unwrap to the KeyError's text
            e = e.args[0]
        detail = str(e.args[0] if e.args else e).replace("\n", ". ")
        sys.exit(f"Error: the config has no such key: {detail}{grouped_key_hint(argv)}")


def grouped_key_hint(argv: list[str]) -> str:
    """Where a top-level --config.KEY of lstm_lm 0.1's flat config lives now, if it does."""
    defaults = config_lib.default_config()
    for arg in argv:
        key = arg.split("=")[0].removeprefix("--config.")
        if not arg.startswith("--config.") or "." in key or key in defaults:
            continue
        for group, values in defaults.items():
            if isinstance(values, ml_collections.ConfigDict) and key in values:
                return f" (the keys are grouped now: --config.{group}.{key})"
    return ""


if __name__ == "__main__":
    logging.set_verbosity(logging.INFO)
    app.run(main, flags_parser=parse_flags)

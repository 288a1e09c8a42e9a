"""Using a trained run's checkpoint: evaluate it on its corpus, score a text file (per
word too), predict the next word, sample.

Each function takes the run's workdir (its config.json, vocab.txt and checkpoints/) and
a checkpoint step (None = the latest); none of them needs the training data except
`evaluate_run`, which reads the valid and test splits.
"""

import csv
import dataclasses
import functools
import io
import json
import pathlib
import re

import jax
import numpy as np
from absl import logging

from lstm_lm import (
    adaptive,
    checkpoints,
    data,
    embeddings,
    evaluation,
    model,
    optim,
    parallel,
    sampling,
    symbols,
)
from lstm_lm import config as config_lib

ADAPTIVE_STEPS = 20  # segment length of the cache and dynamic evaluation, by default


@dataclasses.dataclass(frozen=True)
class Run:
    config: object  # ml_collections.ConfigDict, as saved in config.json
    cfg: model.ModelConfig
    params: dict
    vocab: dict[str, int]
    step: int
    # The softmax temperature tuned for these weights (eval.temperature_lowest), if any.
    temperature: float | None = None


def load_run(workdir: pathlib.Path, step: int | None = None) -> Run:
    """The parameters of checkpoint `step` with the run's config and vocabulary; by
    default the weights the run tests: the latest checkpoint's, or for
    `train.test_weights="best"` the best-validation ones (workdir/best). CheckpointError
    when the workdir holds no usable checkpoint."""
    config, vocab = checkpoints.load_config(workdir), checkpoints.load_vocab(workdir)
    cfg = config_lib.model_config(config, len(vocab))
    optimizer, _ = optim.from_config(config, steps_per_epoch=1)
    state_shapes = jax.eval_shape(lambda: optim.initial_state(config.seed, cfg, optimizer))
    carry_shapes = jax.eval_shape(lambda: model.zero_carry(cfg, config.train.batch_size))
    mngr = checkpoints.manager(workdir, config.train.keep_checkpoints)
    restored_step = step
    try:
        restored = checkpoints.restore(mngr, state_shapes, carry_shapes, step)
    finally:
        mngr.close()
    if restored is None:
        raise checkpoints.CheckpointError(f"{workdir} has no checkpoint yet.")
    state, _, progress = restored
    params, step = optim.eval_params(state), checkpoints.step_of(state)
    logging.info("Loaded %s at step %d.", workdir, step)
    # Weights validated at an epoch's end carry that validation's tuned temperature.
    record = progress.history[-1] if progress.history and progress.batch == 0 else {}
    if restored_step is None and config.train.test_weights == "best":
        params, record = load_best(workdir, params)
        logging.info("Using its best-validation weights, of epoch %d.", record["epoch"])
    logging.info("%d parameters", model.parameter_count(params))
    return Run(config, cfg, params, vocab, step, record.get("temperature"))


def load_best(workdir: pathlib.Path, params: dict) -> tuple[dict, dict]:
    """(params, record) of the run's best-validation weights; `params` gives the shapes."""
    mngr = checkpoints.best_manager(workdir)
    try:
        best = checkpoints.restore_best(mngr, params)
    finally:
        mngr.close()
    if best is None:
        raise checkpoints.CheckpointError(
            f"{workdir} has no best-validation weights (best/) yet: no epoch has finished."
        )
    return best


def evaluate_run(
    run: Run,
    batch_size: int | None,
    num_steps: int | None,
    cache: adaptive.Cache | None = None,
    dynamic: adaptive.Dynamic | None = None,
    rms_batches: int = 0,
) -> dict[str, float]:
    """Valid and test perplexity. By default each split uses the layout training reported
    it with (valid: eval.valid_batch_size, else train.batch_size, x train.num_steps; test:
    eval.test_batch_size x test_num_steps); with the cache or dynamic evaluation, each
    split is one stream (batch 1, TF's test protocol) in segments of ADAPTIVE_STEPS,
    unless told otherwise."""
    corpus = data.load(run.config.data)
    if list(corpus.vocab) != list(run.vocab):
        raise checkpoints.CheckpointError(
            "The data's vocabulary differs from the run's vocab.txt: evaluate on the data "
            "the run was trained on (config.data.data_dir or $LSTM_LM_DATA_DIR)."
        )
    train, test = run.config.train, run.config.eval
    layouts = {
        "valid": (corpus.valid, test.valid_batch_size or train.batch_size, train.num_steps),
        "test": (corpus.test, test.test_batch_size, test.test_num_steps),
    }
    adapting = cache is not None or dynamic is not None
    rms = training_rms(run, corpus.train, dynamic, rms_batches)
    eval_fn, mesh = evaluation.make_eval_fn(run.cfg), parallel.make_mesh(1)
    results = {}
    for split, (ids, default_batch, default_steps) in layouts.items():
        if adapting:
            default_batch, default_steps = 1, ADAPTIVE_STEPS
        b, t = batch_size or default_batch, num_steps or default_steps
        evaluation.check_split_fits(split, len(ids), b, t, "--eval_batch_size", "--eval_num_steps")
        if adapting:
            log_probs = adaptive.stream_log_probs(
                run.params, ids, b, t, cfg=run.cfg, cache=cache, dynamic=dynamic, rms=rms
            )
            perplexity, targets = adaptive.stream_perplexity(log_probs), log_probs.size
        else:  # at the temperature the run tuned for these weights, as it tested them
            every_target = run.config.eval.get("score_every_target", False)
            perplexity = evaluation.evaluate(
                eval_fn,
                run.params,
                ids,
                b,
                t,
                cfg=run.cfg,
                mesh=mesh,
                every_target=every_target,
                temperature=run.temperature,
            )
            targets = evaluation.scored_targets(len(ids), b, t, every_target)
        results[f"{split}_perplexity"], results[f"{split}_targets"] = perplexity, targets
        scores = evaluation.with_bits(dict(perplexity=perplexity), run.config.data)
        bits = evaluation.bits_note(scores, "bpc")
        logging.info(
            "%s perplexity %.2f%s (batch %d, steps %d; %d targets)",
            split,
            perplexity,
            bits,
            b,
            t,
            targets,
        )
    return evaluation.with_bits(results, run.config.data)


def training_rms(run: Run, train_ids, dynamic: adaptive.Dynamic | None, max_batches: int):
    """The gradient statistics of RMS dynamic evaluation, over the run's training split in
    its training layout; None when they are not needed."""
    if dynamic is None or not dynamic.rms:
        return None
    if train_ids is None:
        train_ids = data.load(run.config.data).train
    logging.info("Gathering the gradients' RMS over the training split for dynamic evaluation.")
    layout = run.config.train.batch_size, run.config.train.num_steps
    return adaptive.gradient_rms(
        run.params, train_ids, *layout, cfg=run.cfg, max_batches=max_batches
    )


def score_ids(
    run: Run, ids: np.ndarray, num_steps: int = 100, cache=None, dynamic=None, rms=None
) -> float:
    """Perplexity of the stream `ids` read as one row: every id after the first is
    predicted from all before it (the first is context only, as in TF's evaluation),
    with the cache and dynamic evaluation when they are given."""
    return adaptive.stream_perplexity(word_scores(run, ids, num_steps, cache, dynamic, rms)[0])


def word_scores(
    run: Run, ids: np.ndarray, num_steps: int = 100, cache=None, dynamic=None, rms=None, ranks=False
) -> tuple[np.ndarray, np.ndarray | None]:
    """(log p [L], rank [L] or None) of each id of `ids` after the first, read as one row
    as `score_ids` does; a rank is 1 for the word the model found most likely."""
    if len(ids) < 2:
        raise data.DataError(f"Need at least two words to score, got {len(ids)}.")
    log_probs, word_ranks = adaptive.stream_scores(
        run.params,
        ids,
        1,
        num_steps,
        cfg=run.cfg,
        cache=cache,
        dynamic=dynamic,
        rms=rms,
        ranks=ranks,
    )
    return log_probs[0], None if word_ranks is None else word_ranks[0]


def score_file(
    run: Run,
    path: pathlib.Path,
    cache=None,
    dynamic=None,
    rms_batches: int = 0,
    per_word: pathlib.Path | None = None,
) -> dict:
    """Perplexity of a text file (and bits per symbol at char and byte level), its words
    (characters, bytes: see lstm_lm/symbols.py) read as the run's corpus is (newline =
    <eos>), those outside the vocabulary mapped to <unk>; the cache and dynamic
    evaluation as given (RMS dynamic evaluation reads the run's training split for its
    statistics). With `per_word` (a .tsv or .jsonl path), each scored word's row goes
    there too: see per_word_rows."""
    if per_word is not None and per_word.suffix not in ROW_WRITERS:
        raise config_lib.ConfigError(
            f"--per_word={per_word}: the file must end in .tsv or .jsonl, to say its format."
        )
    words = symbols.read_symbols(path, data.tokens_of(run.config.data))
    ids = symbols.words_to_ids(words, run.vocab)
    num_unknown = sum(w not in run.vocab for w in words)
    rms = training_rms(run, None, dynamic, rms_batches)
    log_probs, ranks = word_scores(
        run, ids, cache=cache, dynamic=dynamic, rms=rms, ranks=per_word is not None
    )
    if per_word is not None:
        ROW_WRITERS[per_word.suffix](per_word, per_word_rows(words, log_probs, ranks, run.vocab))
    perplexity = adaptive.stream_perplexity(log_probs)
    # The perplexity is the mean over every word but the first, which is context only.
    result = dict(
        perplexity=perplexity,
        words=len(words),
        scored_words=len(log_probs),
        unknown_words=num_unknown,
    )
    return dict(evaluation.with_bits(result, run.config.data), step=run.step)


def per_word_rows(words: list[str], log_probs, ranks, vocab) -> list[dict]:
    """One row per scored word (every word but the first, which is context only): its
    position in the text (the first word's is 0; `<eos>` counts), the word as written, its natural
    log-probability, its rank in the distribution it was scored by (1 = the most likely
    word) and whether it was read as `<unk>`."""
    return [
        dict(position=i, word=w, log_prob=float(lp), rank=int(r), unk=w not in vocab)
        for i, w, lp, r in zip(range(1, len(words)), words[1:], log_probs, ranks)
    ]


def write_tsv(path: pathlib.Path, rows: list[dict]) -> None:
    """A header of the rows' keys, then a tab-separated line per row, written by `csv` so
    that a field holding a tab or a double quote (a character model's symbols) is quoted
    as CSV quotes it and any CSV reader gets it back; WriteFailed when the file cannot be
    written (so for each writer here)."""
    text = io.StringIO()
    writer = csv.writer(text, delimiter="\t", lineterminator="\n")
    writer.writerows([list(rows[0]), *(row.values() for row in rows)])
    checkpoints.write_text(path, text.getvalue())


def write_jsonl(path: pathlib.Path, rows: list[dict]) -> None:
    checkpoints.write_text(path, "".join(json.dumps(row) + "\n" for row in rows))


ROW_WRITERS = {".tsv": write_tsv, ".jsonl": write_jsonl}


def prompt_ids(run: Run, prompt: str) -> np.ndarray:
    """The prompt's word ids (its characters' or bytes' at those levels); an empty prompt
    starts a new sentence (the model is fed `<eos>`). Words outside the vocabulary are
    read as `<unk>`, with a warning."""
    prompt_words = symbols.text_symbols(prompt, data.tokens_of(run.config.data)) or [data.EOS]
    unknown = sorted({w for w in prompt_words if w not in run.vocab})
    if unknown:
        logging.warning("Prompt words not in the vocabulary, read as <unk>: %s", unknown)
    return symbols.words_to_ids(prompt_words, run.vocab)


def check_top_k(run: Run, top_k: int) -> None:
    """ConfigError unless top_k is in [0, V] (0: every word)."""
    if not 0 <= top_k <= run.cfg.vocab_size:
        raise config_lib.ConfigError(f"top_k must be in [0, {run.cfg.vocab_size}], got {top_k}.")


@functools.partial(jax.jit, static_argnames=("cfg",))
def next_word_log_probs(params, ids_P, *, cfg) -> jax.Array:
    """log p(next word) [V] after the prompt ids [P], from a zero carry."""
    logits_PxBxV, _ = model.forward(params, cfg, model.zero_carry(cfg, 1), ids_P[None, :])
    return jax.nn.log_softmax(logits_PxBxV[-1, 0])


def predict(run: Run, prompt: str, top_k: int) -> list[dict]:
    """The `top_k` most likely next words after `prompt` (0: every word), most likely
    first, each with its probability and natural log-probability."""
    check_top_k(run, top_k)
    log_probs_V = np.asarray(next_word_log_probs(run.params, prompt_ids(run, prompt), cfg=run.cfg))
    order = np.argsort(-log_probs_V, kind="stable")[: top_k or None]
    id_to_word = list(run.vocab)
    return [
        dict(word=id_to_word[i], probability=float(np.exp(lp)), log_prob=float(lp))
        for i, lp in zip(order, log_probs_V[order])
    ]


def read_prompts(path: pathlib.Path) -> list[str]:
    """The prompts in a text file, one per non-blank line."""
    try:
        prompts = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    except OSError as e:
        raise data.DataError(f"Could not read the prompt file {path}: {e.strerror}.") from e
    if not prompts:
        raise data.DataError(f"The prompt file {path} has no prompts: write one per line.")
    return prompts


def look_at_embeddings(
    run: Run,
    which: str,
    num_words: int | None,
    neighbour_words: list[str],
    out: pathlib.Path | None,
    seed: int = 0,
) -> dict:
    """The `which` ("input" or "output") word vectors: each of `neighbour_words`' ten
    nearest words by cosine, and with `out`, the `num_words` most frequent words' vectors
    and labels for the Embedding Projector and their t-SNE picture written there
    (lstm_lm/embeddings.py; None: embeddings.NUM_WORDS, or the whole vocabulary if it is
    smaller). Returns {"neighbours": {word: [(word, cosine), ...]}, "files": the names
    written}."""
    V, id_to_word = run.cfg.vocab_size, list(run.vocab)
    if num_words is None:
        num_words = min(embeddings.NUM_WORDS, V)
    if out is not None and not 5 <= num_words <= V:
        raise config_lib.ConfigError(
            f"--num_words={num_words}: the vocabulary has {V} words, and a t-SNE picture "
            f"needs at least 5: give a number in [5, {V}]."
        )
    unknown = [w for w in neighbour_words if w not in run.vocab]
    if unknown:
        raise config_lib.ConfigError(
            f"--neighbours: {', '.join(unknown)} not in the vocabulary ({run.cfg.vocab_size} "
            "words, in vocab.txt)."
        )
    vectors_VxD = embeddings.vectors(run.params, which)
    neighbours = {
        w: [(id_to_word[i], c) for i, c in embeddings.nearest(vectors_VxD, run.vocab[w], 10)]
        for w in neighbour_words
    }
    if out is None:
        return dict(neighbours=neighbours, files=[])
    words, vectors_NxD = id_to_word[:num_words], vectors_VxD[:num_words]
    embeddings.write_projector_files(out, vectors_NxD, words)
    points_Nx2 = embeddings.tsne_points(vectors_NxD, seed)
    title = f"t-SNE of the {which} vectors of the {num_words} most frequent words"
    embeddings.write_tsne_picture(out / "tsne.png", points_Nx2, words, title)
    return dict(neighbours=neighbours, files=["vectors.tsv", "metadata.tsv", "tsne.png"])


def sample_text(
    run: Run,
    prompt: str,
    num_words: int,
    *,
    temperature: float,
    top_k: int,
    greedy: bool,
    seed: int,
    no_unk: bool = False,
    no_eos: bool = False,
) -> str:
    """The prompt and `num_words` sampled words after it, `<eos>` shown as a newline.
    An empty prompt starts a new sentence (the model is fed `<eos>`). `no_unk`, `no_eos`:
    never draw `<unk>` or `<eos>` (the rest of the distribution renormalised)."""
    if num_words <= 0:
        raise config_lib.ConfigError(f"The number of words to sample must be > 0, got {num_words}.")
    if not greedy and not temperature > 0:
        raise config_lib.ConfigError(
            f"The temperature must be > 0, got {temperature}, or use greedy."
        )
    check_top_k(run, top_k)
    banned = [w for w, ban in ((data.UNK, no_unk), (data.EOS, no_eos)) if ban and w in run.vocab]
    words_N = sampling.sample(
        run.params,
        prompt_ids(run, prompt),
        jax.random.PRNGKey(seed),
        temperature,
        cfg=run.cfg,
        num_words=num_words,
        top_k=top_k,
        greedy=greedy,
        banned=tuple(run.vocab[w] for w in banned),
    )
    id_to_word = list(run.vocab)
    tokens = data.tokens_of(run.config.data)
    sampled = [id_to_word[i] for i in np.asarray(words_N)]
    if tokens != "words":
        return prompt + symbols.join_symbols(sampled, tokens)
    text = " ".join([*prompt.split(), *sampled])
    return re.sub(rf" ?{data.EOS} ?", "\n", text)

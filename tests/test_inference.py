"""Sampling against a word-by-word Python loop and the softmax it should draw from;
scoring against one forward pass over the whole text; next-word predictions and per-word
rows against a numpy forward pass; the embedding files and neighbours against numpy."""

import json
import logging
import struct

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lstm_lm import config as config_lib
from lstm_lm import embeddings, inference, model, sampling
from tests.test_model import numpy_log_probs

CFG = model.ModelConfig(vocab_size=12, hidden_size=8, num_layers=2, init_scale=0.5)
PARAMS = model.init_params(jax.random.PRNGKey(0), CFG)
PROMPT = jnp.array([3, 1, 4], jnp.int32)
VOCAB = {w: i for i, w in enumerate(["<eos>", "<unk>", *(f"w{i}" for i in range(2, 12))])}
RUN = inference.Run(config=config_lib.default_config(), cfg=CFG, params=PARAMS, vocab=VOCAB, step=0)


def logits_after(ids) -> np.ndarray:
    """The next-word logits [V] after `ids`, from one forward pass over all of them."""
    logits_TxBxV, _ = model.forward(
        PARAMS, CFG, model.zero_carry(CFG, 1), jnp.asarray(ids, jnp.int32)[None, :]
    )
    return np.asarray(logits_TxBxV[-1, 0])


def test_greedy_sampling_equals_argmax_word_by_word():
    got = sampling.sample(PARAMS, PROMPT, jax.random.PRNGKey(0), cfg=CFG, num_words=8, greedy=True)
    ids = list(np.asarray(PROMPT))
    for _ in range(8):
        ids.append(int(np.argmax(logits_after(ids))))
    np.testing.assert_array_equal(got, ids[len(PROMPT) :])


def test_top_1_sampling_is_greedy_and_top_k_draws_stay_in_the_top_k():
    greedy = sampling.sample(
        PARAMS, PROMPT, jax.random.PRNGKey(0), cfg=CFG, num_words=6, greedy=True
    )
    for seed in range(3):
        key = jax.random.PRNGKey(seed)
        np.testing.assert_array_equal(
            sampling.sample(PARAMS, PROMPT, key, 2.0, cfg=CFG, num_words=6, top_k=1), greedy
        )
        drawn = np.asarray(sampling.sample(PARAMS, PROMPT, key, cfg=CFG, num_words=6, top_k=3))
        ids = list(np.asarray(PROMPT))
        for word in drawn:
            assert word in np.argsort(logits_after(ids))[-3:]
            ids.append(int(word))


@pytest.mark.parametrize("temperature, top_k", [(1.0, 0), (0.5, 4)])
def test_first_word_frequencies_follow_the_tempered_truncated_softmax(temperature, top_k):
    logits = logits_after(np.asarray(PROMPT)) / temperature
    if top_k:
        logits[np.argsort(logits)[:-top_k]] = -np.inf
    want = np.exp(logits - logits.max())
    want /= want.sum()
    keys = jax.random.split(jax.random.PRNGKey(42), 20_000)
    first = jax.vmap(
        lambda k: sampling.sample(PARAMS, PROMPT, k, temperature, cfg=CFG, num_words=1, top_k=top_k)
    )(keys)
    freq = np.bincount(np.asarray(first[:, 0]), minlength=CFG.vocab_size) / len(keys)
    # 20k draws: the standard error of each frequency is at most 0.0035.
    np.testing.assert_allclose(freq, want, atol=0.015)
    assert np.all(freq[want == 0] == 0)


def test_score_ids_equals_one_forward_pass_over_the_whole_text():
    ids = np.random.default_rng(0).integers(0, CFG.vocab_size, 53).astype(np.int32)
    run = inference.Run(
        config=config_lib.default_config(), cfg=CFG, params=PARAMS, vocab={}, step=0
    )
    cost, _ = model.cost_fn(PARAMS, CFG, model.zero_carry(CFG, 1), ids[None, :-1], ids[None, 1:])
    want = np.exp(float(cost) / (len(ids) - 1))
    for num_steps in (7, 13, 52, 100):  # remainders 3, 0, 0 and a text shorter than a window
        assert inference.score_ids(run, ids, num_steps) == pytest.approx(want, rel=1e-5)


def numpy_stream_log_probs(ids) -> np.ndarray:
    """log p of every word [len(ids), V] after each of `ids`, in float64 numpy from a
    zero carry."""
    carry = [(np.zeros((1, h)), np.zeros((1, h))) for h in CFG.layer_sizes]
    return numpy_log_probs(PARAMS, carry, np.asarray(ids)[None, :])[0][0]


def numpy_next_word_log_probs(ids) -> np.ndarray:
    """log p(next word) [V] after `ids`."""
    return numpy_stream_log_probs(ids)[-1]


def test_predict_lists_the_numpy_softmax_after_the_prompt_most_likely_first(caplog):
    want = numpy_next_word_log_probs([3, 1, 4])
    got = inference.predict(RUN, "w3 <unk> w4", top_k=5)
    assert [VOCAB[w["word"]] for w in got] == list(np.argsort(-want)[:5])
    top_5 = np.sort(want)[::-1][:5]
    np.testing.assert_allclose([w["log_prob"] for w in got], top_5, rtol=1e-5)
    np.testing.assert_allclose([w["probability"] for w in got], np.exp(top_5), rtol=1e-5)
    every = inference.predict(RUN, "w3 <unk> w4", top_k=0)
    assert len(every) == CFG.vocab_size
    assert sum(w["probability"] for w in every) == pytest.approx(1.0, rel=1e-5)
    with caplog.at_level(logging.WARNING):  # a word outside the vocabulary reads as <unk>
        assert inference.predict(RUN, "w3 zebra w4", top_k=5) == got
    assert "zebra" in caplog.text
    new_sentence = inference.predict(RUN, "", top_k=3)  # an empty prompt: after <eos>
    want = numpy_next_word_log_probs([VOCAB["<eos>"]])
    assert [VOCAB[w["word"]] for w in new_sentence] == list(np.argsort(-want)[:3])


def test_per_word_rows_give_the_perplexity_and_the_ranks_of_numpy_s_distribution():
    ids = np.random.default_rng(1).integers(0, CFG.vocab_size, 30).astype(np.int32)
    words = [list(VOCAB)[i] for i in ids]
    words[5] = "zebra"  # outside the vocabulary: scored as <unk>
    ids[5] = VOCAB["<unk>"]
    log_probs, ranks = inference.word_scores(RUN, ids, num_steps=7, ranks=True)
    rows = inference.per_word_rows(words, log_probs, ranks, VOCAB)
    assert [r["position"] for r in rows] == list(range(1, 30))
    assert [r["word"] for r in rows] == words[1:]
    assert [r["unk"] for r in rows] == [w == "zebra" for w in words[1:]]
    assert np.exp(-np.mean([r["log_prob"] for r in rows])) == pytest.approx(
        inference.score_ids(RUN, ids, 7), rel=1e-6
    )
    want = numpy_stream_log_probs(ids[:-1])
    np.testing.assert_allclose(
        [r["log_prob"] for r in rows], want[np.arange(29), ids[1:]], rtol=1e-5, atol=1e-6
    )
    order = np.argsort(-want, axis=1)  # each step's words, the most likely first
    want_ranks = [1 + int(np.flatnonzero(order[t] == ids[t + 1])[0]) for t in range(29)]
    assert [r["rank"] for r in rows] == want_ranks
    assert len(set(want_ranks)) > 3


def test_no_unk_never_draws_unk_and_keeps_the_other_words_odds():
    unk = VOCAB["<unk>"]
    logits = logits_after(np.asarray(PROMPT))
    want = np.exp(logits - logits.max())
    want[unk] = 0.0
    want /= want.sum()
    keys = jax.random.split(jax.random.PRNGKey(7), 20_000)
    first = jax.vmap(
        lambda k: sampling.sample(PARAMS, PROMPT, k, cfg=CFG, num_words=3, banned=(unk,))
    )(keys)
    assert not np.any(np.asarray(first) == unk)
    freq = np.bincount(np.asarray(first[:, 0]), minlength=CFG.vocab_size) / len(keys)
    np.testing.assert_allclose(freq, want, atol=0.015)  # as the tempered test above
    greedy_logits = logits.copy()
    greedy_logits[unk] = -np.inf
    greedy = sampling.sample(
        PARAMS, PROMPT, keys[0], cfg=CFG, num_words=1, greedy=True, banned=(unk,)
    )
    assert int(greedy[0]) == int(np.argmax(greedy_logits))


def png_size(path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk."""
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", header[16:24])


@pytest.mark.parametrize("which", ["input", "output"])
def test_embedding_files_and_neighbours_follow_the_checkpoint_s_matrix(tmp_path, which):
    matrix = np.asarray(PARAMS["embedding"] if which == "input" else PARAMS["softmax"]["w"])
    got = inference.look_at_embeddings(RUN, which, 8, ["w5", "<eos>"], tmp_path, seed=0)
    vectors = np.loadtxt(tmp_path / "vectors.tsv", delimiter="\t")
    np.testing.assert_allclose(vectors, matrix[:8], rtol=1e-5)
    assert (tmp_path / "metadata.tsv").read_text().split("\n") == [*list(VOCAB)[:8], ""]
    side = embeddings.TSNE_INCHES * embeddings.TSNE_DPI
    assert png_size(tmp_path / "tsne.png") == (side, side)
    unit = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
    for word, near in got["neighbours"].items():
        cosines = unit @ unit[VOCAB[word]]
        order = [i for i in np.argsort(-cosines) if i != VOCAB[word]][:10]
        assert [w for w, _ in near] == [list(VOCAB)[i] for i in order]
        np.testing.assert_allclose([c for _, c in near], cosines[order], rtol=1e-5)


def test_score_file_writes_the_same_rows_as_tsv_and_jsonl(tmp_path):
    text = tmp_path / "text.txt"
    text.write_text("w2 w3 zebra w4\nw5 w2 w2\n")
    for name in ("rows.tsv", "rows.jsonl"):
        scores = inference.score_file(RUN, text, per_word=tmp_path / name)
    header, *tsv = [line.split("\t") for line in (tmp_path / "rows.tsv").read_text().splitlines()]
    jsonl = [json.loads(line) for line in (tmp_path / "rows.jsonl").read_text().splitlines()]
    assert [list(row) for row in jsonl] == [header] * len(tsv) == [header] * 8
    assert [[str(v) for v in row.values()] for row in jsonl] == tsv
    assert np.exp(-np.mean([row["log_prob"] for row in jsonl])) == pytest.approx(
        scores["perplexity"]
    )

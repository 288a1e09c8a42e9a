"""Sampling against a word-by-word Python loop and the softmax it should draw from;
scoring against one forward pass over the whole text."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lstm_lm import inference, model, sampling

CFG = model.ModelConfig(vocab_size=12, hidden_size=8, num_layers=2, init_scale=0.5)
PARAMS = model.init_params(jax.random.PRNGKey(0), CFG)
PROMPT = jnp.array([3, 1, 4], jnp.int32)


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
    run = inference.Run(config=None, cfg=CFG, params=PARAMS, vocab={}, step=0)
    cost, _ = model.cost_fn(PARAMS, CFG, model.zero_carry(CFG, 1), ids[None, :-1], ids[None, 1:])
    want = np.exp(float(cost) / (len(ids) - 1))
    for num_steps in (7, 13, 52, 100):  # remainders 3, 0, 0 and a text shorter than a window
        assert inference.score_ids(run, ids, num_steps) == pytest.approx(want, rel=1e-5)

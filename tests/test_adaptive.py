"""The cache and dynamic evaluation against brute-force numpy and a hand-written loop; the
plain evaluation when they are off; no word used before it is scored."""

import functools

import jax
import numpy as np
import pytest

from lstm_lm import adaptive, data, evaluation, model, parallel, softmax

CFG = model.ModelConfig(vocab_size=6, hidden_size=5, num_layers=2, init_scale=0.5)
PARAMS = model.init_params(jax.random.PRNGKey(0), CFG)


def stream(length: int, seed: int = 0) -> np.ndarray:
    """Ids over a 6-word vocabulary: every word repeats many times."""
    return np.random.default_rng(seed).integers(0, CFG.vocab_size, length).astype(np.int32)


def rms_of_training(ids):
    return adaptive.gradient_rms(PARAMS, ids, 2, 4, cfg=CFG)


@pytest.mark.parametrize("batch_size", [1, 2])
def test_lambda_0_and_learning_rate_0_give_the_plain_evaluation(batch_size):
    ids = stream(83)
    plain = adaptive.stream_log_probs(PARAMS, ids, batch_size, 5, cfg=CFG)
    with_nothing = [
        dict(cache=adaptive.Cache(window=7, lam=0.0, theta=1.0)),
        dict(dynamic=adaptive.Dynamic(learning_rate=0.0, decay=0.1, rms=False)),
        dict(dynamic=adaptive.Dynamic(learning_rate=0.0, decay=0.1), rms=rms_of_training(ids)),
    ]
    for options in with_nothing:
        got = adaptive.stream_log_probs(PARAMS, ids, batch_size, 5, cfg=CFG, **options)
        np.testing.assert_array_equal(got, plain)
    # ... and the plain stream is the evaluation's perplexity (batch 1: every word after the first).
    eval_fn = evaluation.make_eval_fn(CFG)
    want = evaluation.evaluate(
        eval_fn, PARAMS, ids, batch_size, 5, cfg=CFG, mesh=parallel.make_mesh(1)
    )
    if batch_size == 1:
        want = evaluation.evaluate(eval_fn, PARAMS, ids, 1, 1, cfg=CFG, mesh=parallel.make_mesh(1))
        assert plain.shape == (1, len(ids) - 1)
    assert np.exp(-plain.mean()) == pytest.approx(want, rel=1e-5)


def numpy_cache_log_probs(ids, batch_size, cache: adaptive.Cache):
    """Brute force, row by row in float64: at each step the window is the pairs of the W
    steps before it, wherever they sit in the ring buffer."""
    rows = ids[: len(ids) // batch_size * batch_size].reshape(batch_size, -1)
    inputs, targets = rows[:, :-1], rows[:, 1:]
    outputs_TxBxH, _ = model.hidden_states(PARAMS, CFG, model.zero_carry(CFG, batch_size), inputs)
    logits = np.asarray(softmax.logits(PARAMS, CFG, outputs_TxBxH), np.float64)
    model_log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    h = np.asarray(outputs_TxBxH, np.float64)
    out = np.zeros(targets.shape)
    for b in range(batch_size):
        for t in range(targets.shape[1]):
            p_model = np.exp(model_log_probs[t, b, targets[b, t]])
            window = range(max(0, t - cache.window), t)
            if not window:
                out[b, t] = np.log(p_model)
                continue
            scores = np.array([cache.theta * h[t, b] @ h[i, b] for i in window])
            weights = np.exp(scores - scores.max())
            weights /= weights.sum()
            p_cache = sum(w for w, i in zip(weights, window) if targets[b, i] == targets[b, t])
            out[b, t] = np.log((1 - cache.lam) * p_model + cache.lam * p_cache)
    return out


@pytest.mark.parametrize("batch_size, num_steps", [(1, 4), (2, 3)])
def test_the_cache_matches_brute_force_numpy_across_the_windows_edge(batch_size, num_steps):
    ids = stream(2 * 25 + 1, seed=1)  # 25 steps a row: past the window of 6, many repeats
    cache = adaptive.Cache(window=6, lam=0.3, theta=0.7)
    got = adaptive.stream_log_probs(PARAMS, ids, batch_size, num_steps, cfg=CFG, cache=cache)
    want = numpy_cache_log_probs(ids, batch_size, cache)
    np.testing.assert_allclose(got, want[:, : got.shape[1]], rtol=1e-5, atol=1e-6)
    plain = adaptive.stream_log_probs(PARAMS, ids, batch_size, num_steps, cfg=CFG)
    assert not np.allclose(got, plain)  # the cache took part


def mean_token_loss(params, carry, inputs_BxT, targets_BxT):
    """The mean per-token cross-entropy, from the model's own cost (summed over time,
    averaged over the batch)."""
    cost, carry = model.cost_fn(params, CFG, carry, inputs_BxT, targets_BxT)
    return cost / inputs_BxT.shape[1], carry


@pytest.mark.parametrize("rms", [False, True])
def test_dynamic_evaluation_matches_a_loop_of_score_then_step(rms):
    ids, train_ids, num_steps = stream(4 * 6 + 1, seed=2), stream(200, seed=3), 4
    dynamic = adaptive.Dynamic(learning_rate=0.3, decay=0.05, rms=rms)
    stats = rms_of_training(train_ids) if rms else None
    got = adaptive.stream_log_probs(PARAMS, ids, 1, num_steps, cfg=CFG, dynamic=dynamic, rms=stats)

    params = jax.tree.map(np.asarray, PARAMS)
    r = jax.tree.map(np.asarray, stats) if rms else None
    mean_r = np.mean(np.concatenate([a.ravel() for a in jax.tree.leaves(r)])) if rms else None
    carry, want = model.zero_carry(CFG, 1), []
    for start in range(0, len(ids) - 1, num_steps):
        x, y = ids[None, start : start + num_steps], ids[None, start + 1 : start + num_steps + 1]
        logits, _ = model.forward(params, CFG, carry, x)
        want.extend(np.asarray(jax.nn.log_softmax(logits))[np.arange(x.shape[1]), 0, y[0]])
        (_, carry), grads = jax.value_and_grad(mean_token_loss, has_aux=True)(params, carry, x, y)
        if rms:
            params = jax.tree.map(
                lambda p, p0, g, rr: (
                    p
                    - 0.3 * np.asarray(g) / (rr + 1e-3)
                    + np.minimum(0.05 * rr / mean_r, 1.0) * (p0 - p)
                ),
                params,
                PARAMS,
                grads,
                r,
            )
        else:
            params = jax.tree.map(
                lambda p, p0, g: p - 0.3 * np.asarray(g) + 0.05 * (p0 - p), params, PARAMS, grads
            )
    np.testing.assert_allclose(got[0], want, rtol=1e-4, atol=1e-5)
    plain = adaptive.stream_log_probs(PARAMS, ids, 1, num_steps, cfg=CFG)
    assert not np.allclose(got, plain)  # it adapted


@pytest.mark.parametrize("batch_size, length", [(2, 2 * 13), (1, 23)])  # 2: rows; 1: a short end
def test_the_cache_and_dynamic_evaluation_together_match_a_hand_written_loop(batch_size, length):
    # Per segment: score with the current parameters, each word mixed in float64 with the
    # cache of that row's last W (h, word) pairs, across segment edges, and ranked in the
    # whole mixed distribution; then store the segment's pairs and take the SGD step.
    # With batch 1 the last segment is shorter.
    ids, num_steps = stream(length + 1, seed=6), 4
    cache = adaptive.Cache(window=5, lam=0.35, theta=0.8)
    dynamic = adaptive.Dynamic(learning_rate=0.4, decay=0.1, rms=False)
    got, got_ranks = adaptive.stream_scores(
        PARAMS, ids, batch_size, num_steps, cfg=CFG, cache=cache, dynamic=dynamic, ranks=True
    )
    without_ranks = adaptive.stream_log_probs(
        PARAMS, ids, batch_size, num_steps, cfg=CFG, cache=cache, dynamic=dynamic
    )
    np.testing.assert_array_equal(got, without_ranks)  # asking for ranks changes no score

    rows = data.batchify(ids, batch_size)
    ends = list(range(0, rows.shape[1] - 1, num_steps)) + [rows.shape[1] - 1]
    if batch_size > 1:  # TF's layout: whole segments only
        ends = list(range(0, (rows.shape[1] - 1) // num_steps * num_steps + 1, num_steps))
    hidden_states = jax.jit(functools.partial(model.hidden_states, cfg=CFG))
    logits_fn = jax.jit(lambda p, h_TxBxH: softmax.logits(p, CFG, h_TxBxH))
    gradient = jax.jit(jax.value_and_grad(mean_token_loss, has_aux=True))
    params, carry = PARAMS, model.zero_carry(CFG, batch_size)
    history = [[] for _ in range(batch_size)]  # per row: (h, target) of every scored word
    want, want_ranks = np.zeros((batch_size, ends[-1])), np.zeros((batch_size, ends[-1]), int)
    for start, end in zip(ends[:-1], ends[1:]):
        x, y = rows[:, start:end], rows[:, start + 1 : end + 1]
        outputs_TxBxH, _ = hidden_states(params, carry=carry, inputs_BxT=x)
        logits = np.asarray(logits_fn(params, outputs_TxBxH), np.float64)
        log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        h = np.asarray(outputs_TxBxH, np.float64)
        for b in range(batch_size):
            for t in range(end - start):
                p_model = np.exp(log_p[t, b, y[b, t]])
                p_V = np.exp(log_p[t, b])  # the whole distribution, for the target's rank
                window = history[b][-cache.window :]
                if window:
                    scores = np.array([cache.theta * h[t, b] @ key for key, _ in window])
                    weights = np.exp(scores - scores.max())
                    weights /= weights.sum()
                    p_cache = sum(w for w, (_, word) in zip(weights, window) if word == y[b, t])
                    p_model = (1 - cache.lam) * p_model + cache.lam * p_cache
                    p_cache_V = np.zeros(CFG.vocab_size)
                    for w, (_, word) in zip(weights, window):
                        p_cache_V[word] += w
                    p_V = (1 - cache.lam) * p_V + cache.lam * p_cache_V
                want[b, start + t] = np.log(p_model)
                want_ranks[b, start + t] = 1 + np.sum(p_V > p_V[y[b, t]])
                history[b].append((h[t, b], y[b, t]))
        (_, carry), grads = gradient(params, carry, x, y)
        params = jax.tree.map(lambda p, p0, g: p - 0.4 * g + 0.1 * (p0 - p), params, PARAMS, grads)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(got_ranks, want_ranks)
    assert len(np.unique(want_ranks)) > 2  # the ranks tell words apart
    moved = max(
        float(np.abs(p - p0).max()) for p, p0 in zip(*map(jax.tree.leaves, (params, PARAMS)))
    )
    assert moved > 0.05  # dynamic evaluation took part, beyond the tolerance


def test_gradient_rms_is_the_root_mean_square_of_the_training_gradients():
    ids = stream(2 * 14, seed=4)  # batch 2: rows of 14; 4 steps: 3 segments
    got = adaptive.gradient_rms(PARAMS, ids, 2, 4, cfg=CFG)
    rows = ids.reshape(2, 14)
    carry, squares = model.zero_carry(CFG, 2), []
    for start in (0, 4, 8):
        x, y = rows[:, start : start + 4], rows[:, start + 1 : start + 5]
        (_, carry), g = jax.value_and_grad(mean_token_loss, has_aux=True)(PARAMS, carry, x, y)
        squares.append(jax.tree.map(lambda a: np.asarray(a, np.float64) ** 2, g))
    want = jax.tree.map(lambda *s: np.sqrt(np.mean(s, axis=0)), *squares)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-7)


def test_no_word_is_used_before_it_is_scored():
    """Set word t to each word of the vocabulary in turn: the words before it must get the
    same probabilities every time, and the probabilities word t gets must sum to 1 — which
    they would not if word t reached the cache or a gradient step before it was scored."""
    ids, t = stream(61, seed=5), 27  # word 27 sits inside a segment of 4: words 25..28
    options = dict(
        cache=adaptive.Cache(window=8, lam=0.4, theta=1.0),
        dynamic=adaptive.Dynamic(learning_rate=0.5, decay=0.0, rms=False),
    )
    runs = []
    for word in range(CFG.vocab_size):
        changed = ids.copy()
        changed[t] = word
        runs.append(adaptive.stream_log_probs(PARAMS, changed, 1, 4, cfg=CFG, **options)[0])
    for run in runs:  # log p of word j sits at column j - 1
        np.testing.assert_array_equal(run[: t - 1], runs[0][: t - 1])
    assert sum(np.exp(run[t - 1]) for run in runs) == pytest.approx(1.0, rel=1e-5)
    assert not np.allclose(runs[0][t:], runs[1][t:])  # what follows word t does see it

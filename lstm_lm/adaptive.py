"""Evaluation that remembers the text it has scored: the continuous cache (Grave, Joulin &
Usunier 2017) and dynamic evaluation (Krause, Kahembwe, Murray & Renals 2018), alone or
together, on any trained model.

Both walk a stream as the plain evaluation does — [N, B, T] segments of B rows, the
recurrent carry threaded through — in one jitted `lax.scan` over the segments, and both
keep the protocol exact: a word is used (as a cache entry, or in a gradient step) only
after it has been scored. Each of the B rows keeps its own cache.

Cache. At step t of a row, with h_t the last layer's output, the cache holds the last W
pairs (h_i, y_i) of that row, y_i the word that followed h_i, all from steps before t:

    p_cache(w) = sum over i with y_i = w of softmax_i(theta * h_t . h_i)
    p(w)       = (1 - lambda) p_model(w) + lambda p_cache(w)

(the model alone while the cache is still empty). It is a ring buffer [W, B, H] carried
through the scan; only the target's probability is formed, never a [V] cache distribution,
except when each word's rank is asked for (`ranks`, for per-word scores): that needs the
whole mixture.

Dynamic evaluation. After a segment is scored, one gradient step on its mean per-token
cross-entropy, from where the parameters stand, with a decay back toward the trained
parameters theta_0:

    sgd: theta <- theta - lr * g + decay * (theta_0 - theta)
    rms: theta <- theta - lr * g / (rms + eps) + min(decay * rms / mean(rms), 1) * (theta_0 - theta)

where rms is the root mean square of the same gradient over the training data, at theta_0
(`gradient_rms`, as Krause et al. gather it). Their code normalises the decay by the sum
over tensors of each tensor's mean rms; here it is the mean over all parameters.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from lstm_lm import data, model, softmax


@dataclasses.dataclass(frozen=True)
class Cache:
    window: int  # W: how many past (hidden state, next word) pairs each row keeps
    lam: float  # lambda: the cache's weight in the mixture
    theta: float  # the scores' inverse temperature


@dataclasses.dataclass(frozen=True)
class Dynamic:
    learning_rate: float
    decay: float = 0.0  # pull back toward the trained parameters, per step
    rms: bool = True  # Krause et al.'s RMS-normalised step; False: plain SGD
    epsilon: float = 1e-3  # added to the rms before dividing


def empty_cache(cache: Cache, batch_size: int, hidden_size: int):
    """(keys_WxBxH, words_WxB, count): nothing stored yet."""
    return (
        jnp.zeros((cache.window, batch_size, hidden_size), jnp.float32),
        jnp.zeros((cache.window, batch_size), jnp.int32),
        jnp.zeros((), jnp.int32),
    )


def cache_weights(cache: Cache, state, h_BxH):
    """(stored_W, weights_WxB): which slots hold an entry, and each entry's weight
    softmax_i(theta * h . h_i) over the stored ones (0 for the empty ones)."""
    keys_WxBxH, _, count = state
    stored_W = jnp.arange(cache.window) < count
    scores_WxB = cache.theta * jnp.einsum("wbh,bh->wb", keys_WxBxH, h_BxH)
    scores_WxB = jnp.where(stored_W[:, None], scores_WxB, jnp.finfo(jnp.float32).min)
    return stored_W, jax.nn.softmax(scores_WxB, axis=0)


def cache_step(cache: Cache, state, h_BxH, model_log_probs_B, targets_B):
    """Score one step's targets with the mixture, then store (h, target): (state, log p)."""
    keys_WxBxH, words_WxB, count = state
    stored_W, weights_WxB = cache_weights(cache, state, h_BxH)
    hits_WxB = stored_W[:, None] & (words_WxB == targets_B)
    p_cache_B = jnp.sum(jnp.where(hits_WxB, weights_WxB, 0.0), axis=0)
    mixed_B = jnp.logaddexp(
        jnp.log1p(-cache.lam) + model_log_probs_B, jnp.log(cache.lam) + jnp.log(p_cache_B)
    )
    log_probs_B = jnp.where(count > 0, mixed_B, model_log_probs_B)
    slot = count % cache.window
    state = (keys_WxBxH.at[slot].set(h_BxH), words_WxB.at[slot].set(targets_B), count + 1)
    return state, log_probs_B


def cache_distribution(cache: Cache, state, h_BxH, logits_BxV):
    """The mixture's whole next-word distribution [B, V], before the step's entry is
    stored: what a word's rank is read from (scoring needs only the target's p)."""
    _, words_WxB, count = state
    stored_W, weights_WxB = cache_weights(cache, state, h_BxH)
    B, V = logits_BxV.shape
    p_cache_BxV = (
        jnp.zeros((B, V), jnp.float32)
        .at[jnp.arange(B), words_WxB]
        .add(jnp.where(stored_W[:, None], weights_WxB, 0.0))
    )
    p_model_BxV = jax.nn.softmax(logits_BxV)
    mixed_BxV = (1.0 - cache.lam) * p_model_BxV + cache.lam * p_cache_BxV
    return jnp.where(count > 0, mixed_BxV, p_model_BxV)


def rank_of(scores_BxV, targets_B):
    """[B] the targets' ranks, 1 = the most likely: one plus the number of words that
    score strictly higher (logits, probabilities: any order-keeping score)."""
    target_Bx1 = jnp.take_along_axis(scores_BxV, targets_B[:, None], -1)
    return 1 + jnp.sum(scores_BxV > target_Bx1, axis=-1)


def dynamic_update(dynamic: Dynamic, params, params0, grads, rms):
    """One step of dynamic evaluation (see the module docstring)."""
    if not dynamic.rms:
        return jax.tree.map(
            lambda p, p0, g: p - dynamic.learning_rate * g + dynamic.decay * (p0 - p),
            params,
            params0,
            grads,
        )
    mean_rms = sum(jnp.sum(r) for r in jax.tree.leaves(rms)) / sum(
        r.size for r in jax.tree.leaves(rms)
    )

    def update(p, p0, g, r):
        decay = jnp.minimum(dynamic.decay * r / mean_rms, 1.0)
        return p - dynamic.learning_rate * g / (r + dynamic.epsilon) + decay * (p0 - p)

    return jax.tree.map(update, params, params0, grads, rms)


def segment_scores(params, carry, inputs_BxT, targets_BxT, *, cfg):
    """(mean cross-entropy, (outputs_TxBxH, target log-probs [T, B], new carry))."""
    outputs_TxBxH, carry = model.hidden_states(params, cfg, carry, inputs_BxT)
    log_probs_TxB = softmax.target_log_probs(params, cfg, outputs_TxBxH, targets_BxT.T)
    return -jnp.mean(log_probs_TxB), (outputs_TxBxH, log_probs_TxB, carry)


@functools.partial(jax.jit, static_argnames=("cfg", "cache", "dynamic", "ranks"))
def stream_pass(
    params0, state, inputs_NxBxT, targets_NxBxT, rms, *, cfg, cache, dynamic, ranks=False
):
    """Walk N segments: (state, (target log-probs [N, T, B], their ranks [N, T, B] or
    None)). `state` is (params, carry, cache state or None); `params0` the trained
    parameters that dynamic evaluation decays toward; `rms` the gradient statistics (None
    unless dynamic.rms); `ranks`: also each target's rank in the distribution it was
    scored by (the mixture's, with the cache)."""

    def segment(state, batch):
        params, carry, cache_state = state
        scored_by = params
        if dynamic is None:
            _, (outputs_TxBxH, log_probs_TxB, carry) = segment_scores(
                params, carry, *batch, cfg=cfg
            )
        else:
            grad_fn = jax.grad(segment_scores, has_aux=True)
            grads, (outputs_TxBxH, log_probs_TxB, carry) = grad_fn(params, carry, *batch, cfg=cfg)
            params = dynamic_update(dynamic, params, params0, grads, rms)
        logits_TxBxV = softmax.logits(scored_by, cfg, outputs_TxBxH) if ranks else None
        ranks_TxB = None
        if cache is None and ranks:
            ranks_TxB = jax.vmap(rank_of)(logits_TxBxV, batch[1].T)
        if cache is not None:
            xs = (outputs_TxBxH, log_probs_TxB, batch[1].T, logits_TxBxV)
            cache_state, (log_probs_TxB, ranks_TxB) = jax.lax.scan(
                functools.partial(cached_step, cache), cache_state, xs
            )
        return (params, carry, cache_state), (log_probs_TxB, ranks_TxB)

    return jax.lax.scan(segment, state, (inputs_NxBxT, targets_NxBxT))


def cached_step(cache: Cache, state, step):
    """cache_step on one step's (h, model log p, targets, logits or None): (state, (log p,
    ranks in the mixture, or None without logits))."""
    h_BxH, model_log_probs_B, targets_B, logits_BxV = step
    ranks_B = None
    if logits_BxV is not None:
        ranks_B = rank_of(cache_distribution(cache, state, h_BxH, logits_BxV), targets_B)
    state, log_probs_B = cache_step(cache, state, h_BxH, model_log_probs_B, targets_B)
    return state, (log_probs_B, ranks_B)


def stream_scores(
    params, ids, batch_size, num_steps, *, cfg, cache=None, dynamic=None, rms=None, ranks=False
) -> tuple[np.ndarray, np.ndarray | None]:
    """(log p, rank or None) of every scored word of `ids`, each [B, L], for B rows of the
    stream laid out as TF's reader does, in segments of num_steps. With batch 1 every
    word after the first is scored (a shorter last segment takes the rest), as in TF's
    test protocol. Ranks (1 = the most likely word) only when `ranks` is set."""
    num_full = data.epoch_size(len(ids), batch_size, num_steps)
    segments = [data.epoch_batches(ids, batch_size, num_steps)] if num_full > 0 else []
    done = max(num_full, 0) * num_steps
    if batch_size == 1 and done < len(ids) - 1:
        rest = ids[done:]
        segments.append((rest[None, None, :-1], rest[None, None, 1:]))
    cache_state = None
    if cache is not None:
        cache_state = empty_cache(cache, batch_size, cfg.layer_sizes[-1])
    state = (params, model.zero_carry(cfg, batch_size), cache_state)
    log_probs, rank = [], []
    for inputs, targets in segments:
        state, (log_probs_NxTxB, ranks_NxTxB) = stream_pass(
            params, state, inputs, targets, rms, cfg=cfg, cache=cache, dynamic=dynamic, ranks=ranks
        )
        log_probs.append(rows(log_probs_NxTxB, batch_size))
        rank.append(rows(ranks_NxTxB, batch_size) if ranks else None)
    return np.concatenate(log_probs, axis=1), np.concatenate(rank, axis=1) if ranks else None


def rows(scores_NxTxB, batch_size: int) -> np.ndarray:
    """[B, N * T]: each row's scores in the order of its words."""
    return np.asarray(scores_NxTxB).transpose(2, 0, 1).reshape(batch_size, -1)


def stream_log_probs(
    params, ids, batch_size: int, num_steps: int, *, cfg, cache=None, dynamic=None, rms=None
) -> np.ndarray:
    """log p [B, L] of every scored word of `ids`: stream_scores without the ranks."""
    return stream_scores(
        params, ids, batch_size, num_steps, cfg=cfg, cache=cache, dynamic=dynamic, rms=rms
    )[0]


def stream_perplexity(log_probs: np.ndarray) -> float:
    """exp of the mean negative log-probability of `stream_log_probs`' words."""
    return float(np.exp(-np.mean(log_probs, dtype=np.float64)))


@functools.partial(jax.jit, static_argnames=("cfg",))
def _squared_gradient_sum(params, inputs_NxBxT, targets_NxBxT, *, cfg):
    def body(state, batch):
        carry, total = state
        grads, (_, _, carry) = jax.grad(segment_scores, has_aux=True)(
            params, carry, *batch, cfg=cfg
        )
        return (carry, jax.tree.map(lambda t, g: t + g * g, total, grads)), None

    carry = model.zero_carry(cfg, inputs_NxBxT.shape[1])
    zeros = jax.tree.map(jnp.zeros_like, params)
    (_, total), _ = jax.lax.scan(body, (carry, zeros), (inputs_NxBxT, targets_NxBxT))
    return total


def gradient_rms(params, train_ids, batch_size: int, num_steps: int, *, cfg, max_batches=0):
    """Root mean square over the training stream's segments of the gradient of the mean
    per-token cross-entropy at `params`, the carry threaded through (Krause et al.'s
    statistics); the first `max_batches` segments only, if that is set."""
    inputs_NxBxT, targets_NxBxT = data.epoch_batches(train_ids, batch_size, num_steps)
    if max_batches:
        inputs_NxBxT, targets_NxBxT = inputs_NxBxT[:max_batches], targets_NxBxT[:max_batches]
    total = _squared_gradient_sum(params, inputs_NxBxT, targets_NxBxT, cfg=cfg)
    return jax.tree.map(lambda t: jnp.sqrt(t / len(inputs_NxBxT)), total)

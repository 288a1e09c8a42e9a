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
through the scan; only the target's probability is formed, never a [V] cache distribution.

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

from lstm_lm import data, model


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


def cache_step(cache: Cache, state, h_BxH, model_log_probs_B, targets_B):
    """Score one step's targets with the mixture, then store (h, target): (state, log p)."""
    keys_WxBxH, words_WxB, count = state
    stored_W = jnp.arange(cache.window) < count
    scores_WxB = cache.theta * jnp.einsum("wbh,bh->wb", keys_WxBxH, h_BxH)
    scores_WxB = jnp.where(stored_W[:, None], scores_WxB, jnp.finfo(jnp.float32).min)
    weights_WxB = jax.nn.softmax(scores_WxB, axis=0)
    hits_WxB = stored_W[:, None] & (words_WxB == targets_B)
    p_cache_B = jnp.sum(jnp.where(hits_WxB, weights_WxB, 0.0), axis=0)
    mixed_B = jnp.logaddexp(
        jnp.log1p(-cache.lam) + model_log_probs_B, jnp.log(cache.lam) + jnp.log(p_cache_B)
    )
    log_probs_B = jnp.where(count > 0, mixed_B, model_log_probs_B)
    slot = count % cache.window
    state = (keys_WxBxH.at[slot].set(h_BxH), words_WxB.at[slot].set(targets_B), count + 1)
    return state, log_probs_B


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
    log_probs_TxB = model.target_log_probs(model.logits(params, outputs_TxBxH), targets_BxT)
    return -jnp.mean(log_probs_TxB), (outputs_TxBxH, log_probs_TxB, carry)


@functools.partial(jax.jit, static_argnames=("cfg", "cache", "dynamic"))
def stream_pass(params0, state, inputs_NxBxT, targets_NxBxT, rms, *, cfg, cache, dynamic):
    """Walk N segments: (state, target log-probs [N, T, B]). `state` is (params, carry,
    cache state or None); `params0` the trained parameters that dynamic evaluation decays
    toward; `rms` the gradient statistics (None unless dynamic.rms)."""

    def segment(state, batch):
        params, carry, cache_state = state
        if dynamic is None:
            _, (outputs_TxBxH, log_probs_TxB, carry) = segment_scores(
                params, carry, *batch, cfg=cfg
            )
        else:
            grad_fn = jax.grad(segment_scores, has_aux=True)
            grads, (outputs_TxBxH, log_probs_TxB, carry) = grad_fn(params, carry, *batch, cfg=cfg)
            params = dynamic_update(dynamic, params, params0, grads, rms)
        if cache is not None:
            step = functools.partial(cache_step, cache)
            xs = (outputs_TxBxH, log_probs_TxB, batch[1].T)
            cache_state, log_probs_TxB = jax.lax.scan(lambda s, x: step(s, *x), cache_state, xs)
        return (params, carry, cache_state), log_probs_TxB

    return jax.lax.scan(segment, state, (inputs_NxBxT, targets_NxBxT))


def stream_log_probs(
    params, ids, batch_size: int, num_steps: int, *, cfg, cache=None, dynamic=None, rms=None
) -> np.ndarray:
    """log p of every scored word of `ids`: [B, L] for B rows of the stream laid out as
    TF's reader does, in segments of num_steps. With batch 1 every word after the first is
    scored (a shorter last segment takes the rest), as in TF's test protocol."""
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
    pieces = []
    for inputs, targets in segments:
        state, log_probs_NxTxB = stream_pass(
            params, state, inputs, targets, rms, cfg=cfg, cache=cache, dynamic=dynamic
        )
        pieces.append(np.asarray(log_probs_NxTxB).transpose(2, 0, 1).reshape(batch_size, -1))
    return np.concatenate(pieces, axis=1)


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

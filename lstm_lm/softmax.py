"""The output layers: from the last layer's outputs h [T, B, H] (time-major, H = H_L) to
the next word's distribution over the V words. `model.softmax` names one of SOFTMAXES:

- "full": one softmax over all words, logits h @ w.T + b with w [V, H] (the embedding
  when tied).
- "adaptive": the adaptive softmax (Grave et al. 2017) with PyTorch's semantics
  (`nn.AdaptiveLogSoftmaxWithLoss`). The vocabulary, in order of frequency, is cut at
  `softmax_cutoffs` c_1 < ... < c_n into a head of the c_1 most frequent words and n
  clusters [c_i, c_{i+1}) (c_{n+1} = V). The head scores its words and one token per
  cluster; cluster i scores its own words from h projected to d_i = H // div**i (floor)
  dimensions, so p(w) = p_head(cluster of w) * p_cluster(w). Not tied: the clusters' word
  vectors are d_i wide, not E (tying them needs adaptive inputs, Baevski & Auli 2019).
- "mos": the mixture of K softmaxes (Yang et al. 2018) as zihangdai/mos's model.py: K
  latent contexts tanh(h @ W + b) [K, E], each after `dropout_latent` (locked), scored
  by one decoder [V, E] (the embedding when tied), mixed in probability space with the
  prior softmax(h @ W_prior) [K]. Their code adds 1e-8 to the mixture before the log;
  we mix in log space (logsumexp), the same mixture without a floor.

Parameters, under params["softmax"]:

    full      {"w": [V, H], "b": [V]}                       # tied: no "w"
    adaptive  {"head": {"w": [c_1 + n, H], "b": [c_1 + n]},  # "b" with softmax_head_bias
               "tails": [{"proj": [H, d_i], "w": [c_{i+1} - c_i, d_i]}, ...]}
    mos       {"prior": [H, K], "latent": {"w": [H, K * E], "b": [K * E]},
               "w": [V, E], "b": [V]}                       # tied: no "w"

Each layer is three functions (`OutputLayer`), which every user of the output goes
through: training and evaluation take `target_log_probs` (the adaptive softmax never
forms [T, B, V] there, and scores each cluster on its own rows only); sampling,
prediction, ranks and the cache take `logits`, scores whose softmax is the distribution
(the log-probabilities themselves, but for "full").
`mask` is the output layer's dropout mask (training only: MoS's latent keep mask
[B, K * E], see model.dropout_masks); the other layers have none. `temperature`
(evaluation only, lamb's eval_softmax_temperature) multiplies the logits before the
softmax, each component's in a mixture; the adaptive softmax has none.
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from lstm_lm import regularisers


class OutputLayer(NamedTuple):
    init: Callable | None  # (key, cfg) -> params["softmax"]; None: see model.init_params
    logits: Callable  # (params, cfg, h_TxBxH, mask=None) -> [T, B, V]
    # (params, cfg, h_TxBxH, targets_TxB, mask=None, temperature=None) -> [T, B]
    target_log_probs: Callable


def uniform(key, shape, bound):
    return jax.random.uniform(key, shape, jnp.float32, -bound, bound)


def linear_bound(cfg, fan_in: int) -> float:
    """The bound of a U(-b, b) draw: init_scale, or with init="awd" PyTorch's nn.Linear
    default 1 / sqrt(fan_in), as the PyTorch modules these layers follow."""
    return fan_in**-0.5 if cfg.init == "awd" else cfg.init_scale


def pick(log_probs_TxBxN: jax.Array, index_TxB: jax.Array) -> jax.Array:
    """[T, B]: each row's entry at its index."""
    return jnp.take_along_axis(log_probs_TxBxN, index_TxB[..., None], -1)[..., 0]


# ---- full -------------------------------------------------------------------------


def softmax_weight(params: dict) -> jax.Array:
    """[V, D]: the decoder's word vectors (D = H_L for the full softmax, E for the mixture
    of softmaxes), its own weight or the embedding when they are tied."""
    if "head" in params["softmax"]:
        raise ValueError(
            "the adaptive softmax has no one matrix of word vectors: its head and clusters "
            "score words in spaces of different widths. Use the input embedding "
            "(--which=input)."
        )
    return params["softmax"].get("w", params["embedding"])


def full_logits(params, cfg, h_TxBxH, mask=None):
    return h_TxBxH @ softmax_weight(params).T + params["softmax"]["b"]


def full_target_log_probs(params, cfg, h_TxBxH, targets_TxB, mask=None, temperature=None):
    logits_TxBxV = full_logits(params, cfg, h_TxBxH)
    if temperature is not None:
        logits_TxBxV = logits_TxBxV * temperature
    return pick(jax.nn.log_softmax(logits_TxBxV), targets_TxB)


# ---- adaptive ---------------------------------------------------------------------


def cluster_bounds(cfg) -> tuple[int, ...]:
    """(c_1, ..., c_n, V): where the head's words and each cluster's end."""
    return (*cfg.softmax_cutoffs, cfg.vocab_size)


def tail_sizes(cfg) -> list[int]:
    """d_i, the width of cluster i's projection (PyTorch's int(H // div ** i))."""
    H = cfg.layer_sizes[-1]
    return [int(H // cfg.softmax_div_value ** (i + 1)) for i in range(len(cfg.softmax_cutoffs))]


def adaptive_init(key, cfg):
    H, bounds = cfg.layer_sizes[-1], cluster_bounds(cfg)
    head_size = bounds[0] + len(bounds) - 1
    k_w, k_b, *tail_keys = jax.random.split(key, 2 + len(bounds) - 1)
    head = {"w": uniform(k_w, (head_size, H), linear_bound(cfg, H))}
    if cfg.softmax_head_bias:
        head["b"] = uniform(k_b, (head_size,), linear_bound(cfg, H))
    tails = []
    for i, (tail_key, d) in enumerate(zip(tail_keys, tail_sizes(cfg))):
        k_proj, k_out = jax.random.split(tail_key)
        size = bounds[i + 1] - bounds[i]
        tails.append(
            {
                "proj": uniform(k_proj, (H, d), linear_bound(cfg, H)),
                "w": uniform(k_out, (size, d), linear_bound(cfg, d)),
            }
        )
    return {"head": head, "tails": tails}


def head_log_probs(params, h_TxBxH):
    """[T, B, c_1 + n]: the head's log-probabilities of its words and cluster tokens."""
    head = params["softmax"]["head"]
    return jax.nn.log_softmax(h_TxBxH @ head["w"].T + head.get("b", 0.0))


def cluster_log_probs(tail, h_NxH):
    """[N, its size]: a cluster's log-probabilities of its words (h projected to d_i)."""
    return jax.nn.log_softmax((h_NxH @ tail["proj"]) @ tail["w"].T)


def adaptive_logits(params, cfg, h_TxBxH, mask=None):
    head_TxBxS = head_log_probs(params, h_TxBxH)
    shortlist = cfg.softmax_cutoffs[0]
    clusters = [
        head_TxBxS[..., shortlist + i, None] + cluster_log_probs(tail, h_TxBxH)
        for i, tail in enumerate(params["softmax"]["tails"])
    ]
    return jnp.concatenate([head_TxBxS[..., :shortlist], *clusters], axis=-1)


def row_capacities(num_rows: int) -> list[int]:
    """The row counts a cluster is scored at: N / 2^k for k = 6, ..., 0 (rounded up)."""
    return sorted({-(-num_rows // 2**k) for k in range(7)})


def in_cluster_log_probs(tail, h_NxH, index_N, member_N):
    """[N]: log p(word index_N | cluster) on the rows in the cluster (`member_N`), 0
    elsewhere. As PyTorch, only those rows are scored: they are gathered into the
    smallest of `row_capacities` that holds them (static shapes for XLA; `lax.switch`
    runs that one branch), so a rare cluster costs a fraction of the batch. Each branch
    is rematerialised in the backward pass: otherwise every branch's [capacity, size]
    residuals are allocated, and the gradient cost 3x as much (WikiText-103's shape)."""
    N = len(h_NxH)
    count = jnp.sum(member_N)

    def gathered(capacity):
        def score(h_NxH, index_N):
            rows_C = jnp.nonzero(member_N, size=capacity, fill_value=0)[0]
            log_probs_C = pick(cluster_log_probs(tail, h_NxH[rows_C]), index_N[rows_C])
            real_C = jnp.arange(capacity) < count
            return (
                jnp.zeros(N, log_probs_C.dtype).at[rows_C].add(jnp.where(real_C, log_probs_C, 0.0))
            )

        return jax.checkpoint(score)

    capacities = row_capacities(N)
    branch = jnp.searchsorted(jnp.array(capacities), count)
    return jax.lax.switch(branch, [gathered(c) for c in capacities], h_NxH, index_N)


def adaptive_target_log_probs(params, cfg, h_TxBxH, targets_TxB, mask=None, temperature=None):
    """log p(target) [T, B] = log p_head(target or its cluster's token) + log p(target |
    cluster); [T, B, V] is never formed, and each cluster scores only its rows."""
    if temperature is not None:
        raise ValueError("The adaptive softmax has no softmax temperature.")
    head_TxBxS = head_log_probs(params, h_TxBxH)
    bounds = cluster_bounds(cfg)
    shortlist = bounds[0]
    log_probs_TxB = pick(head_TxBxS, jnp.minimum(targets_TxB, shortlist - 1))
    T, B, H = h_TxBxH.shape
    h_NxH, targets_N = h_TxBxH.reshape(T * B, H), targets_TxB.reshape(T * B)
    for i, tail in enumerate(params["softmax"]["tails"]):
        low, high = bounds[i], bounds[i + 1]
        member_N = (targets_N >= low) & (targets_N < high)
        index_N = jnp.clip(targets_N - low, 0, high - low - 1)
        in_tail_TxB = in_cluster_log_probs(tail, h_NxH, index_N, member_N).reshape(T, B)
        log_probs = head_TxBxS[..., shortlist + i] + in_tail_TxB
        log_probs_TxB = jnp.where(member_N.reshape(T, B), log_probs, log_probs_TxB)
    return log_probs_TxB


# ---- mixture of softmaxes ---------------------------------------------------------


def mos_init(key, cfg):
    """The decoder U(-init_scale, init_scale), its bias as the full softmax's (zero with
    init="awd", as zihangdai/mos); the prior (no bias) and the latent layer as
    `linear_bound` says."""
    H, E, K, V = cfg.layer_sizes[-1], cfg.input_size, cfg.mos_experts, cfg.vocab_size
    k_prior, k_w, k_b, k_decoder, k_bias = jax.random.split(key, 5)
    bound = linear_bound(cfg, H)
    params = {
        "prior": uniform(k_prior, (H, K), bound),
        "latent": {"w": uniform(k_w, (H, K * E), bound), "b": uniform(k_b, (K * E,), bound)},
        "b": uniform(k_bias, (V,), 0.0 if cfg.init == "awd" else cfg.init_scale),
    }
    if not cfg.tie_embeddings:
        params["w"] = uniform(k_decoder, (V, E), cfg.init_scale)
    return params


def mos_logits(params, cfg, h_TxBxH, mask=None, temperature=None):
    """log p [T, B, V] of the mixture; `temperature` multiplies each component's logits."""
    mos = params["softmax"]
    T, B, _ = h_TxBxH.shape
    latent_TxBxKE = jnp.tanh(h_TxBxH @ mos["latent"]["w"] + mos["latent"]["b"])
    latent_TxBxKE = regularisers.apply_locked(mask, latent_TxBxKE, cfg.dropout_latent)
    latent_TxBxKxE = latent_TxBxKE.reshape(T, B, cfg.mos_experts, cfg.input_size)
    logits_TxBxKxV = latent_TxBxKxE @ softmax_weight(params).T + mos["b"]
    if temperature is not None:
        logits_TxBxKxV = logits_TxBxKxV * temperature
    expert_TxBxKxV = jax.nn.log_softmax(logits_TxBxKxV)
    prior_TxBxK = jax.nn.log_softmax(h_TxBxH @ mos["prior"])
    return jax.nn.logsumexp(prior_TxBxK[..., None] + expert_TxBxKxV, axis=-2)


def mos_target_log_probs(params, cfg, h_TxBxH, targets_TxB, mask=None, temperature=None):
    return pick(mos_logits(params, cfg, h_TxBxH, mask, temperature), targets_TxB)


SOFTMAXES = {
    "full": OutputLayer(None, full_logits, full_target_log_probs),
    "adaptive": OutputLayer(adaptive_init, adaptive_logits, adaptive_target_log_probs),
    "mos": OutputLayer(mos_init, mos_logits, mos_target_log_probs),
}


def logits(params: dict, cfg, h_TxBxH: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """[T, B, V]: scores whose softmax is the next word's distribution, by cfg.softmax."""
    return SOFTMAXES[cfg.softmax].logits(params, cfg, h_TxBxH, mask)


def target_log_probs(
    params: dict,
    cfg,
    h_TxBxH: jax.Array,
    targets_TxB: jax.Array,
    mask: jax.Array | None = None,
    temperature: jax.Array | None = None,
) -> jax.Array:
    """[T, B]: log p(target) at each step, by cfg.softmax."""
    layer = SOFTMAXES[cfg.softmax]
    return layer.target_log_probs(params, cfg, h_TxBxH, targets_TxB, mask, temperature)

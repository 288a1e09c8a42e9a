"""The dropout regularisers as pure functions: Zaremba et al.'s (a new mask at every step),
AWD-LSTM's (Merity et al. 2017) locked, embedding and weight dropout, and lamb's state
dropout (Melis et al.), all inverted dropout: the kept entries are scaled by 1 / keep.

Each is a `keep` mask (bool, True where an entry is kept), drawn by `keep_mask` from a
key, and the function that applies it: `apply_keep` (Zaremba's mask per entry and step;
weight drop on a matrix), `apply_locked` (one mask per sequence, or per step),
`apply_word_keep` (whole words of the embedding). `model.dropout_masks` draws every mask
of a training step, so that a test can hand the step masks of its own. A mask of None
(evaluation, or a rate of 0) leaves its input as it is. Rates are drop probabilities, but
`keep_prob`'s."""

import jax
import jax.numpy as jnp


def keep_mask(key: jax.Array | None, shape: tuple[int, ...], keep_prob: float) -> jax.Array | None:
    """[shape] bool, each True with probability keep_prob; None when `key` is None
    (evaluation) or nothing is dropped."""
    if key is None or keep_prob >= 1.0:
        return None
    return jax.random.bernoulli(key, keep_prob, shape)


def apply_keep(keep: jax.Array | None, x: jax.Array, keep_prob: float) -> jax.Array:
    """Inverted dropout with a given mask: x / keep_prob where `keep`, else 0."""
    if keep is None:
        return x
    return jnp.where(keep, x / keep_prob, 0.0)


def keep_scale(keep: jax.Array | None, rate: float, dtype=jnp.float32) -> jax.Array | None:
    """The mask `keep` as the factor it multiplies by: 1 / (1 - rate) where kept, else 0;
    None for None."""
    if keep is None:
        return None
    return apply_keep(keep, jnp.ones(keep.shape, dtype), 1.0 - rate)


def apply_locked(keep: jax.Array | None, x_TxBxH: jax.Array, rate: float) -> jax.Array:
    """`x` times the scaled mask `keep`: [B, H] for one mask per sequence, the same at every
    time step (variational dropout, Gal & Ghahramani 2016), or [T, B, H] for one per step."""
    if keep is None:
        return x_TxBxH
    return keep_scale(keep, rate, x_TxBxH.dtype) * x_TxBxH


def apply_word_keep(
    keep_V: jax.Array | None, embedding_VxE: jax.Array, inputs_BxT: jax.Array, rate: float
) -> jax.Array:
    """The embedded inputs [T, B, E], with the words of the vocabulary that `keep_V` drops
    zeroed and the rest scaled by 1 / (1 - rate): one mask over the vocabulary a batch."""
    x_TxBxE = embedding_VxE[inputs_BxT.T]
    if keep_V is None:
        return x_TxBxE
    scale_V = apply_keep(keep_V, jnp.ones(keep_V.shape, x_TxBxE.dtype), 1.0 - rate)
    return x_TxBxE * scale_V[inputs_BxT.T][..., None]

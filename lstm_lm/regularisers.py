"""The dropout regularisers as pure functions of a key: Zaremba et al.'s (a new mask at
every step), AWD-LSTM's (Merity et al. 2017) locked, embedding and weight dropout. Each
is the identity when its key is None (evaluation) or its rate is 0. Rates are drop
probabilities, but `keep_prob`'s."""

import jax
import jax.numpy as jnp


def dropout(key: jax.Array | None, x: jax.Array, keep_prob: float) -> jax.Array:
    """Inverted dropout; the identity when `key` is None (evaluation) or keep_prob == 1."""
    if key is None or keep_prob >= 1.0:
        return x
    mask = jax.random.bernoulli(key, keep_prob, x.shape)
    return jnp.where(mask, x / keep_prob, 0.0)


def locked_dropout(key: jax.Array | None, x_TxBxH: jax.Array, rate: float) -> jax.Array:
    """Variational dropout (Gal & Ghahramani 2016): one mask per sequence [B, H], the same
    at every time step; the identity when `key` is None or rate == 0."""
    if key is None or rate == 0.0:
        return x_TxBxH
    return dropout(key, jnp.ones(x_TxBxH.shape[1:], x_TxBxH.dtype), 1.0 - rate) * x_TxBxH


def embedding_dropout(
    key: jax.Array | None, embedding_VxE: jax.Array, inputs_BxT: jax.Array, rate: float
) -> jax.Array:
    """The embedded inputs [T, B, E] with whole words of the vocabulary dropped: each word is
    kept with probability 1 - rate for the batch, and then scaled by 1 / (1 - rate)."""
    x_TxBxE = embedding_VxE[inputs_BxT.T]
    if key is None or rate == 0.0:
        return x_TxBxE
    scale_V = dropout(key, jnp.ones(embedding_VxE.shape[:1], x_TxBxE.dtype), 1.0 - rate)
    return x_TxBxE * scale_V[inputs_BxT.T][..., None]


def weight_drop(key: jax.Array | None, w: jax.Array, rate: float) -> jax.Array:
    """DropConnect (Wan et al. 2013): `w` with each entry dropped with probability `rate`
    and the rest scaled by 1 / (1 - rate); one draw per call, so per batch."""
    if key is None or rate == 0.0:
        return w
    return dropout(key, w, 1.0 - rate)

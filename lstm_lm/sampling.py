"""Sampling text from the model: feed a prompt, then draw one word at a time.

The prompt runs through the model in one `forward` call; then a `lax.scan` takes each
drawn word back in as the next input, with the carry threaded through. Each draw is
greedy (argmax) or from softmax(logits / temperature), optionally restricted to the
`top_k` most likely words, and never one of the `banned` ids (`<unk>`, say).
"""

import functools

import jax
import jax.numpy as jnp

from lstm_lm import model


def next_word(
    logits_V: jax.Array,
    key: jax.Array,
    temperature: float,
    top_k: int,
    greedy: bool,
    banned: tuple[int, ...] = (),
) -> jax.Array:
    """One word id drawn from `logits_V`; never one of `banned` (the others' relative
    probabilities unchanged)."""
    if banned:
        logits_V = logits_V.at[jnp.array(banned)].set(-jnp.inf)
    if greedy:
        return jnp.argmax(logits_V)
    logits_V = logits_V / temperature
    if top_k:
        kth_largest = jax.lax.top_k(logits_V, top_k)[0][-1]
        logits_V = jnp.where(logits_V < kth_largest, -jnp.inf, logits_V)
    return jax.random.categorical(key, logits_V)


@functools.partial(jax.jit, static_argnames=("cfg", "num_words", "top_k", "greedy", "banned"))
def sample(
    params: dict,
    prompt_ids_P: jax.Array,
    key: jax.Array,
    temperature: float | jax.Array = 1.0,
    *,
    cfg: model.ModelConfig,
    num_words: int,
    top_k: int = 0,
    greedy: bool = False,
    banned: tuple[int, ...] = (),
) -> jax.Array:
    """`num_words` word ids [num_words] that follow the (non-empty) prompt, none of them
    in `banned`."""
    logits_PxBxV, carry = model.forward(
        params, cfg, model.zero_carry(cfg, 1), prompt_ids_P[None, :]
    )

    def step(carry_and_logits, key):
        carry, logits_V = carry_and_logits
        word = next_word(logits_V, key, temperature, top_k, greedy, banned)
        logits_1x1xV, carry = model.forward(params, cfg, carry, word.reshape(1, 1))
        return (carry, logits_1x1xV[0, 0]), word

    keys = jax.random.split(key, num_words)
    _, words_N = jax.lax.scan(step, (carry, logits_PxBxV[-1, 0]), keys)
    return words_N

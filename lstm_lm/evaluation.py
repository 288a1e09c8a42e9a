"""Evaluation: perplexity of parameters on an id stream, for training and inference alike.

The stream is laid out as TF's reader does ([N, B, T] batches of B contiguous rows), the
carry starts at zeros and is threaded through every batch, and one jitted `lax.scan`
walks the whole split. Perplexity is exp(total cost / total time steps), as TF's
`run_epoch`. At char and byte level (`config.data.level`) the numbers come with bits per
symbol too: bits per character (per byte), log2 of the perplexity, `<eos>` one symbol.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from lstm_lm import data, model, parallel
from lstm_lm.config import ConfigError

# Time steps per loop iteration of the forward pass (model.lstm_layer): all of a batch's
# steps up to this many, which keeps the compiled program small for long batches.
EVAL_UNROLL = 64


def eval_pass(
    params: dict,
    carry: model.Carry,
    inputs_NxBxT: jax.Array,
    targets_NxBxT: jax.Array,
    *,
    cfg: model.ModelConfig,
) -> tuple[jax.Array, model.Carry]:
    """(summed cost over all N batches, final carry), the carry threaded through."""

    def body(carry, batch):
        cost, carry = model.cost_fn(params, cfg, carry, *batch, unroll=EVAL_UNROLL)
        return carry, cost

    carry, costs_N = jax.lax.scan(body, carry, (inputs_NxBxT, targets_NxBxT))
    return jnp.sum(costs_N), carry


def make_eval_fn(cfg: model.ModelConfig):
    """`eval_pass` jitted for `cfg`; it follows its inputs' shardings."""
    return jax.jit(functools.partial(eval_pass, cfg=cfg))


def perplexity(cost_sum: float, num_steps: int) -> float:
    """exp(total cost / total time steps), as TF's run_epoch; `cost_sum` is a sum of TF's
    costs (each summed over its steps, averaged over the batch); inf past float range (a
    model that learns the wrong way, say), rather than an OverflowError."""
    try:
        return math.exp(cost_sum / num_steps)
    except OverflowError:
        return math.inf


def bits_per_symbol(perplexity: float) -> float:
    """Bits per character (per byte at byte level): log2 of the per-symbol perplexity,
    the mean cross-entropy in bits."""
    return math.log2(perplexity)


def with_bits(record: dict, data_config) -> dict:
    """At char or byte level, `record` with each `*perplexity` value followed by its
    `*bpc` (bits_per_symbol); at word level, `record` as it is."""
    if data_config.get("level", "word") == "word":
        return dict(record)
    out = {}
    for key, value in record.items():
        out[key] = value
        if key.endswith("perplexity"):
            out[key.removesuffix("perplexity") + "bpc"] = bits_per_symbol(value)
    return out


def bits_note(record: dict, key: str) -> str:
    """ " (1.2345 bpc)" for a log line when `record` (from with_bits) has bits per symbol
    under `key`, else ""."""
    return f" ({record[key]:.4f} bpc)" if key in record else ""


def check_split_fits(split, num_ids, batch_size, num_steps, batch_name, steps_name) -> None:
    """ConfigError unless `num_ids` ids give at least one batch of batch_size x num_steps;
    the names are the settings to lower."""
    if data.epoch_size(num_ids, batch_size, num_steps) <= 0:
        raise ConfigError(
            f"The {split} split has {num_ids} words, too few for {batch_name}={batch_size} "
            f"rows of {steps_name}={num_steps} steps (each row needs at least "
            f"{num_steps + 1} words). Lower {batch_name} or {steps_name}."
        )


def evaluate(eval_fn, params, ids: np.ndarray, batch_size: int, num_steps: int, *, cfg, mesh):
    """Perplexity of `params` on `ids` laid out as TF's reader does, from a zero carry;
    the rows are split across `mesh` when they divide by its size."""
    inputs_NxBxT, targets_NxBxT = data.epoch_batches(ids, batch_size, num_steps)
    carry = parallel.put_carry(model.zero_carry(cfg, batch_size), mesh)
    cost_sum, _ = eval_fn(
        params,
        carry,
        parallel.put_rows(inputs_NxBxT, mesh),
        parallel.put_rows(targets_NxBxT, mesh),
    )
    return perplexity(float(parallel.to_host(cost_sum)), len(inputs_NxBxT) * num_steps)

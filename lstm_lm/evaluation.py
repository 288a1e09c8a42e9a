"""Evaluation: perplexity of parameters on an id stream, for training and inference alike.

The stream is laid out as TF's reader does ([N, B, T] batches of B contiguous rows), the
carry starts at zeros and is threaded through every batch, and one jitted `lax.scan`
walks the whole split. Perplexity is exp(total cost / total time steps), as TF's
`run_epoch`. TF's layout leaves out each row's last (batch_len - 1) % T targets; with
`every_target` (eval.score_every_target) they are scored too, in one shorter batch after
the others, as awd-lstm-lm's and lamb's evaluations score every target of their rows.
`scored_targets` says how many targets a layout scores. At char and byte level
(`config.data.level`) the numbers come with bits per symbol too: bits per character (per
byte), log2 of the perplexity, `<eos>` one symbol.
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
    temperature: jax.Array | None = None,
    *,
    cfg: model.ModelConfig,
) -> tuple[jax.Array, model.Carry]:
    """(summed cost over all N batches, final carry), the carry threaded through; with
    `temperature` (a float32 scalar), the logits multiplied by it (see softmax)."""

    def body(carry, batch):
        cost, carry = model.cost_fn(
            params, cfg, carry, *batch, unroll=EVAL_UNROLL, temperature=temperature
        )
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


def scored_targets(num_ids: int, batch_size: int, num_steps: int, every_target: bool) -> int:
    """How many targets `evaluate` scores on a split of `num_ids` ids: B rows of
    batch_len = num_ids // B ids, each with batch_len - 1 targets, of which TF's layout
    scores the whole windows' only."""
    if every_target:
        return batch_size * (num_ids // batch_size - 1)
    return batch_size * data.epoch_size(num_ids, batch_size, num_steps) * num_steps


def evaluate(
    eval_fn,
    params,
    ids: np.ndarray,
    batch_size: int,
    num_steps: int,
    *,
    cfg,
    mesh,
    every_target: bool = False,
    temperature: float | None = None,
    max_batches: int | None = None,
):
    """Perplexity of `params` on `ids` laid out as TF's reader does, from a zero carry;
    with `every_target` the rows' tails too (see the module's docstring); with
    `temperature` the logits multiplied by it; with `max_batches` on the first that many
    batches only. The rows are split across `mesh` when they divide by its size."""
    inputs_NxBxT, targets_NxBxT = data.epoch_batches(ids, batch_size, num_steps)
    batches = [(inputs_NxBxT[:max_batches], targets_NxBxT[:max_batches])]
    tail = data.tail_batch(ids, batch_size, num_steps) if every_target else None
    if tail is not None and not max_batches:
        batches.append(tail)
    carry = parallel.put_carry(model.zero_carry(cfg, batch_size), mesh)
    extra = () if temperature is None else (jnp.float32(temperature),)
    cost_sum, steps = 0.0, 0
    for inputs, targets in batches:
        cost, carry = eval_fn(
            params,
            carry,
            parallel.put_rows(inputs, mesh),
            parallel.put_rows(targets, mesh),
            *extra,
        )
        cost_sum += float(parallel.to_host(cost))
        steps += inputs.shape[0] * inputs.shape[2]
    return perplexity(cost_sum, steps)


# lamb's search (evaluation.py, evaluate_all): temperatures from 1.06 down by 0.02 to the
# lowest, stopped after two tries without a better one, each on the first ~50,000 targets.
TEMPERATURE_TOP, TEMPERATURE_STEP, TEMPERATURE_TOKENS = 1.06, 0.02, 50_000


def tune_temperature(
    eval_fn, params, ids, batch_size: int, num_steps: int, lowest: float, *, cfg, mesh
) -> float:
    """lamb's softmax temperature (eval_softmax_temperature = -lowest): the one of
    1.06, 1.04, ..., down to `lowest` with the best perplexity on the first
    max(1, 50,000 // (B * T)) batches of `ids`, the search stopped after two tries that
    do not improve on the best."""
    max_batches = max(1, TEMPERATURE_TOKENS // (batch_size * num_steps))
    best, best_i, best_ppl = 1.0, -1, math.inf
    for i in range(50):
        temperature = round(TEMPERATURE_TOP - i * TEMPERATURE_STEP, 10)
        if temperature < lowest - 1e-4:
            break
        ppl = evaluate(
            eval_fn,
            params,
            ids,
            batch_size,
            num_steps,
            cfg=cfg,
            mesh=mesh,
            temperature=temperature,
            max_batches=max_batches,
        )
        if ppl < best_ppl:
            best, best_i, best_ppl = temperature, i, ppl
        if best_i + 1 < i:
            break
    return best

"""The training step: the objective a recipe differentiates, one update on one batch
(`train_step`), and N consecutive updates in one jitted call (`train_chunk`), the
recurrent carry threaded from batch to batch. The loop that calls them is in `train`.

The objective is TF's cost (the cross-entropy summed over a batch's time steps and
averaged over its rows), and on top of it, each off by default:

- AWD-LSTM (Merity et al. 2017, salesforce/awd-lstm-lm `main.py`): the cost averaged
  per token instead (`token_mean`), plus AR and TAR on the last layer's outputs;
- lamb (Melis et al., google-deepmind/lamb `lm.py`, `LM._build_loss`): TF's cost plus
  `l2_penalty` * sum(w^2) / 2 over every parameter, inside the objective, so that the
  clip acts on the gradient of both (AWD's weight decay is added after the clip:
  `optim.weight_decay`).

The update is `optim`'s chain (clip, weight decay, SGD/Adam/Adagrad, averaging) on the
objective's gradient.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import optax

from lstm_lm import model, optim, softmax


@dataclasses.dataclass(frozen=True)
class Objective:
    """What a step differentiates beyond TF's cost (the `optim` group); static."""

    token_mean: bool = False  # AWD: cross-entropy averaged over every token of the batch
    ar_alpha: float = 0.0  # AR's coefficient
    tar_beta: float = 0.0  # TAR's coefficient
    l2_penalty: float = 0.0  # lamb's: + l2_penalty * sum(w^2) / 2 over every parameter
    base_length: int = 0  # with lengths: the learning rate is scaled by length / base_length


def objective_of(config) -> Objective:
    """The config's Objective: its `optim` keys, and the lengths' base (`train.num_steps`)."""
    return Objective(
        token_mean=config.optim.token_mean_loss,
        ar_alpha=config.optim.ar_alpha,
        tar_beta=config.optim.tar_beta,
        l2_penalty=config.optim.l2_penalty,
        base_length=config.train.num_steps,
    )


def objective_fn(
    params, carry, inputs_BxT, targets_BxT, key, length, *, cfg, objective, masks=None
):
    """(objective, (cross_entropy, new carry)). `cross_entropy` is TF's cost (summed over
    the batch's real steps, averaged over its rows), which perplexity is computed from;
    the objective is it or its mean per token, plus AR, TAR and L2 when they are on. The
    dropout masks are drawn from `key` (model.dropout_masks), or are `masks` when given."""
    if masks is None:
        masks = model.dropout_masks(key, cfg, *inputs_BxT.shape)
    raw_TxBxH, dropped_TxBxH, carry = model.layer_outputs(
        params, cfg, carry, inputs_BxT, masks, length
    )
    num_steps = targets_BxT.shape[1]
    mask_T = model.step_mask(num_steps, length)
    log_probs_TxB = softmax.target_log_probs(
        params, cfg, dropped_TxBxH, targets_BxT.T, masks["latent"]
    )
    cross_entropy = model.sequence_cost(log_probs_TxB, mask_T)
    value = cross_entropy
    if objective.token_mean:
        value = cross_entropy / (num_steps if length is None else length)
    if objective.ar_alpha or objective.tar_beta:
        ar, tar = model.activation_penalties(raw_TxBxH, dropped_TxBxH, mask_T)
        value = value + objective.ar_alpha * ar + objective.tar_beta * tar
    if objective.l2_penalty:
        squares = sum(jnp.sum(w**2) for w in jax.tree.leaves(params))
        value = value + objective.l2_penalty * squares / 2
    return value, (cross_entropy, carry)


def train_step(
    state: optim.TrainState,
    carry: model.Carry,
    inputs_BxT: jax.Array,
    targets_BxT: jax.Array,
    length: jax.Array | None = None,
    *,
    cfg: model.ModelConfig,
    optimizer: optax.GradientTransformationExtraArgs,
    objective: Objective = Objective(),
    masks: dict | None = None,
) -> tuple[optim.TrainState, model.Carry, dict[str, jax.Array]]:
    """One SGD step on one batch: (new state, new carry, metrics). The metrics are the
    `cross_entropy` that perplexity is computed from, the `objective` that was
    differentiated, and the gradient's global norm before clipping. With `length` (an
    int32 scalar) the batch is padded after that many steps (see model.lstm_layer) and
    the learning rate is scaled by length / objective.base_length. The dropout masks are
    drawn from the state's key and step, or are `masks` (model.dropout_masks' layout)."""
    step_key = jax.random.fold_in(state.dropout_key, state.step)
    grad_fn = jax.value_and_grad(
        functools.partial(objective_fn, cfg=cfg, objective=objective, masks=masks), has_aux=True
    )
    (value, (cross_entropy, carry)), grads = grad_fn(
        state.params, carry, inputs_BxT, targets_BxT, step_key, length
    )
    extra = {}
    if length is not None:
        extra["length_scale"] = length / objective.base_length
        average = optim.average_state(state)
        if average is not None:  # torch's ASGD lags the length's scale (optim.scale_by_length)
            extra["averaged_steps"] = average.count
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params, **extra)
    params = optax.apply_updates(state.params, updates)
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
    metrics = dict(cross_entropy=cross_entropy, objective=value, grad_norm=optax.tree.norm(grads))
    return new_state, carry, metrics


def train_chunk(
    state: optim.TrainState,
    carry: model.Carry,
    inputs_NxBxT: jax.Array,
    targets_NxBxT: jax.Array,
    lengths_N: jax.Array | None = None,
    *,
    bucket: int = 0,
    **step_kwargs,
) -> tuple[optim.TrainState, model.Carry, dict[str, jax.Array], jax.Array]:
    """`train_step` over N consecutive batches: (state, carry, each metric per step [N],
    whether the final parameters are all finite).

    With `bucket` (random lengths, several batches a call) each batch is trained at its
    own bucket's length: the batches come padded to a common T, a multiple of `bucket`,
    and a `lax.switch` runs the step on the first ceil(length / bucket) * bucket steps,
    the same shapes, and so the same numbers, as a call of that one batch. A batch of
    length 0 fills a short call: it changes nothing and its metrics are zeros."""

    def body(state_and_carry, batch):
        state, carry, metrics = train_step(*state_and_carry, *batch, **step_kwargs)
        return (state, carry), metrics

    batches = (inputs_NxBxT, targets_NxBxT)
    if lengths_N is not None:
        batches = (*batches, lengths_N)
    if bucket:
        body = functools.partial(bucketed_body, body=body, bucket=bucket)
    (state, carry), metrics_N = jax.lax.scan(body, (state, carry), batches)
    return state, carry, metrics_N, jnp.isfinite(optax.tree.norm(state.params))


def bucketed_body(state_and_carry, batch, *, body, bucket: int):
    """`body` on `batch` = (inputs_BxT, targets_BxT, length) cut to its length's bucket,
    one `lax.switch` branch per multiple of `bucket` up to T; length 0: no step."""
    inputs_BxT, targets_BxT, length = batch
    num_buckets = inputs_BxT.shape[1] // bucket

    def at(steps):
        return lambda sc: body(sc, (inputs_BxT[:, :steps], targets_BxT[:, :steps], length))

    branches = [at((b + 1) * bucket) for b in range(num_buckets)]
    _, metrics_shape = jax.eval_shape(branches[0], state_and_carry)

    def skip(sc):
        return sc, jax.tree.map(lambda m: jnp.zeros(m.shape, m.dtype), metrics_shape)

    index = jnp.where(length > 0, (length + bucket - 1) // bucket - 1, num_buckets)
    return jax.lax.switch(index, [*branches, skip], state_and_carry)

"""The optimizer and the state it updates: TF's staircase schedule, gradient clipping by
the global norm, plain SGD (`optax.chain(clip_by_global_norm, sgd(schedule))`), Adam or
Adagrad, and the TrainState that a step takes and returns and a checkpoint holds.

AWD-LSTM's additions, each off by default: weight decay (added to the clipped gradient,
as torch.optim.SGD's `weight_decay`), the learning rate scaled per step by the batch's
length (variable BPTT), and averaged SGD (NT-ASGD): the running mean of the iterates
since averaging started, kept in the optimizer state so that a checkpoint holds it.
"""

from typing import NamedTuple

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from lstm_lm import model


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # global step, int32 scalar
    params: dict
    opt_state: optax.OptState
    dropout_key: jax.Array  # folded with `step` for each step's dropout masks


def lr_schedule(
    learning_rate: float,
    lr_decay: float,
    full_lr_epochs: int,
    steps_per_epoch: int,
    drop_epochs: tuple[int, ...] = (),
) -> optax.Schedule:
    """TF's staircase: epoch i (from 0) uses lr * lr_decay ** max(i + 1 - full_lr_epochs, 0),
    divided by 10 once more after each epoch of `drop_epochs` (AWD's --when, epochs
    counted from 1: drop_epochs=(3,) trains epochs 1-3 at lr and 4 on at lr / 10)."""

    def schedule(step):
        epoch = step // steps_per_epoch
        lr = learning_rate * lr_decay ** jnp.maximum(epoch + 1 - full_lr_epochs, 0)
        if drop_epochs:
            lr = lr * 0.1 ** jnp.sum(epoch >= jnp.asarray(drop_epochs))
        return lr

    return schedule


def scale_by_length() -> optax.GradientTransformationExtraArgs:
    """Multiplies the updates by the `length_scale` passed to `update` (a batch's length
    over the base length, AWD's variable BPTT); the identity when none is passed."""

    def update(updates, state, params=None, *, length_scale=None, **extra_args):
        if length_scale is None:
            return updates, state
        return jax.tree.map(lambda u: u * length_scale, updates), state

    return optax.GradientTransformationExtraArgs(lambda params: optax.EmptyState(), update)


class AdagradState(NamedTuple):
    sum_of_squares: optax.Params  # every gradient's square, summed since the start


def scale_by_adagrad(eps: float) -> optax.GradientTransformation:
    """Adagrad's scaling (Duchi et al. 2011) as torch.optim.Adagrad and Torch7's
    optim.adagrad (which Grave et al.'s adaptive-softmax code trains with) compute it: the
    sum of squares starts at 0 and eps is added to its root, g / (sqrt(sum g^2) + eps).
    optax.adagrad differs: its sum starts at 0.1 and eps goes under the root."""

    def init(params):
        return AdagradState(jax.tree.map(jnp.zeros_like, params))

    def update(updates, state, params=None):
        sums = jax.tree.map(lambda s, g: s + g * g, state.sum_of_squares, updates)
        updates = jax.tree.map(lambda g, s: g / (jnp.sqrt(s) + eps), updates, sums)
        return updates, AdagradState(sums)

    return optax.GradientTransformation(init, update)


class AverageState(NamedTuple):
    active: jax.Array  # bool scalar: averaging has started
    count: jax.Array  # int32 scalar: iterates averaged so far
    average: optax.Params  # their mean (the initial parameters while not active)


def average_iterates() -> optax.GradientTransformation:
    """Averaged SGD's average (Polyak & Juditsky 1992), as torch.optim.ASGD with t0 = 0 and
    lambd = 0 keeps it: once `active` (see `start_averaging`), the mean of the parameters
    after each update. The updates pass through unchanged."""

    def init(params):  # a copy: the step donates the state, so no buffer may be shared
        average = jax.tree.map(jnp.copy, params)
        return AverageState(jnp.zeros((), bool), jnp.zeros((), jnp.int32), average)

    def update(updates, state, params):
        count = state.count + state.active.astype(jnp.int32)

        def step_mean(average):
            new_params = optax.apply_updates(params, updates)
            weight = 1.0 / count.astype(jnp.float32)
            return jax.tree.map(lambda a, p: a + (p - a) * weight, average, new_params)

        # A branch, so that plain SGD before the switch does not pay for the mean.
        average = jax.lax.cond(state.active, step_mean, lambda a: a, state.average)
        return updates, AverageState(state.active, count, average)

    return optax.GradientTransformation(init, update)


def make_optimizer(
    max_grad_norm: float,
    schedule: optax.Schedule,
    weight_decay: float = 0.0,
    length_scaled: bool = False,
    averaging: bool = False,
    adam: dict | None = None,
    adagrad: dict | None = None,
) -> optax.GradientTransformationExtraArgs:
    """clip -> [+ weight_decay * params] -> [x length_scale] -> SGD -> [average], or with
    `adam` (its b1, b2, eps) clip -> [+ weight_decay * params] -> Adam -> [x length_scale]
    -> [average], or with `adagrad` (its eps) clip -> [+ weight_decay * params] -> Adagrad's
    scaling -> [x length_scale] -> SGD -> [average]: the length scales the learning rate
    in all three, which for a normalised step means after it. The optional parts are left
    out when off, so the state of the plain chain is unchanged.

    Adam is optax's (Kingma & Ba's bias-corrected form, eps added to sqrt(v_hat)); TF's
    AdamOptimizer, which lamb uses, adds eps before the bias correction of v instead.
    Weight decay with Adam is L2 on the gradient, as torch.optim.Adam's `weight_decay`
    and lamb's `l2_penalty`, not AdamW's decoupled decay."""
    parts = [optax.clip_by_global_norm(max_grad_norm)]
    if weight_decay:
        parts.append(optax.add_decayed_weights(weight_decay))
    if adam is not None:
        parts.append(optax.adam(schedule, **adam))
        parts += [scale_by_length()] if length_scaled else []
    else:
        parts += [scale_by_adagrad(**adagrad)] if adagrad is not None else []
        parts += [scale_by_length()] if length_scaled else []
        parts.append(optax.sgd(schedule))
    if averaging:
        parts.append(average_iterates())
    return optax.chain(*parts)


def average_state(state: TrainState) -> AverageState | None:
    """The averaging part of the optimizer state, when the optimizer averages."""
    last = state.opt_state[-1] if isinstance(state.opt_state, tuple) else None
    return last if isinstance(last, AverageState) else None


def is_averaging(state: TrainState) -> bool:
    average = average_state(state)
    return average is not None and bool(jax.device_get(average.active))


def start_averaging(state: TrainState) -> TrainState:
    """The state with averaging switched on: the mean starts at the next update."""
    average = average_state(state)
    if average is None:
        raise ValueError("This optimizer does not average; build it with averaging=True.")
    active = jax.device_put(jnp.ones((), bool), average.active.sharding)
    count = jax.device_put(jnp.zeros((), jnp.int32), average.count.sharding)
    opt_state = (*state.opt_state[:-1], AverageState(active, count, average.average))
    return state.replace(opt_state=opt_state)


def eval_params(state: TrainState) -> dict:
    """The parameters to evaluate, test and ship: the average once averaging has started
    and seen an update, else the current ones."""
    average = average_state(state)
    if average is not None and int(jax.device_get(average.count)) > 0:
        return average.average
    return state.params


def initial_state(seed: int, cfg: model.ModelConfig, optimizer) -> TrainState:
    init_key, dropout_key = jax.random.split(jax.random.PRNGKey(seed))
    params = model.init_params(init_key, cfg)
    return TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params), dropout_key)


def from_config(config: ml_collections.ConfigDict, steps_per_epoch: int):
    """(optimizer, schedule) of the config's `optim` group: SGD, Adam or Adagrad
    (`optim.name`); it averages when NT-ASGD is on (`optim.nonmono`) or the run fine-tunes
    (`train.finetune_from`), and scales by length with AWD's variable BPTT
    (`train.random_lengths`)."""
    optim = config.optim
    schedule = lr_schedule(
        optim.learning_rate,
        optim.lr_decay,
        optim.full_lr_epochs,
        steps_per_epoch,
        tuple(optim.lr_drop_epochs),
    )
    adam = dict(b1=optim.b1, b2=optim.b2, eps=optim.eps) if optim.name == "adam" else None
    adagrad = dict(eps=optim.eps) if optim.name == "adagrad" else None
    optimizer = make_optimizer(
        optim.max_grad_norm,
        schedule,
        weight_decay=optim.weight_decay,
        length_scaled=config.train.random_lengths,
        averaging=optim.nonmono > 0 or bool(config.train.finetune_from),
        adam=adam,
        adagrad=adagrad,
    )
    return optimizer, schedule

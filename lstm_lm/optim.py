"""The optimizer and the state it updates: TF's staircase schedule, gradient clipping by
the global norm, plain SGD (`optax.chain(clip_by_global_norm, sgd(schedule))`), Adam or
Adagrad, and the TrainState that a step takes and returns and a checkpoint holds.

AWD-LSTM's additions, each off by default: weight decay (added to the clipped gradient,
as torch.optim.SGD's `weight_decay`), the learning rate scaled per step by the batch's
length (variable BPTT), and averaged SGD (NT-ASGD): the running mean of the iterates
since averaging started, kept in the optimizer state so that a checkpoint holds it, in
torch.optim.ASGD's exact form on request. And TF's Adam, as lamb trains with it.
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


class LengthState(NamedTuple):
    previous: jax.Array  # float32 scalar: the previous update's length scale


def scale_by_length(torch_asgd: bool = False) -> optax.GradientTransformationExtraArgs:
    """Multiplies the updates by the `length_scale` passed to `update` (a batch's length
    over the base length, AWD's variable BPTT); the identity when none is passed.

    With `torch_asgd`, once averaging has taken a step (`averaged_steps` > 0) the scale
    is the previous update's: AWD's loop sets torch's learning rate to lr * seq_len / bptt
    before each step, but torch.optim.ASGD steps with the rate (`eta`) it took from the
    group at its previous step, so each averaged step but the first is scaled by the
    length of the batch before it."""

    def init(params):
        return LengthState(jnp.zeros((), jnp.float32)) if torch_asgd else optax.EmptyState()

    def update(updates, state, params=None, *, length_scale=None, averaged_steps=0, **extra):
        if length_scale is None:
            return updates, state
        scale = length_scale
        if torch_asgd:
            scale = jnp.where(averaged_steps > 0, state.previous, length_scale)
            state = LengthState(jnp.asarray(length_scale, jnp.float32))
        return jax.tree.map(lambda u: u * scale, updates), state

    return optax.GradientTransformationExtraArgs(init, update)


class TFAdamState(NamedTuple):
    count: jax.Array  # int32 scalar: updates so far
    mu: optax.Updates  # the gradient's running mean
    nu: optax.Updates  # its squares' running mean


def scale_by_tf_adam(b1: float, b2: float, eps: float) -> optax.GradientTransformation:
    """Adam's scaling as TF 1's tf.train.AdamOptimizer computes it (which lamb trains
    with): eps is added to sqrt(v) before the bias correction, not after,

        m / (1 - b1^t) * sqrt(1 - b2^t) / (sqrt(v) + eps),

    that is optax's m_hat / (sqrt(v_hat) + eps) with eps / sqrt(1 - b2^t) for eps. The
    learning rate is applied after it, as optax.adam does."""

    def init(params):
        zeros = [jax.tree.map(jnp.zeros_like, params) for _ in range(2)]
        return TFAdamState(jnp.zeros((), jnp.int32), *zeros)

    def update(updates, state, params=None):
        count = state.count + 1
        mu = jax.tree.map(lambda m, g: b1 * m + (1.0 - b1) * g, state.mu, updates)
        nu = jax.tree.map(lambda v, g: b2 * v + (1.0 - b2) * g * g, state.nu, updates)
        t = count.astype(jnp.float32)
        step_size = jnp.sqrt(1.0 - b2**t) / (1.0 - b1**t)
        updates = jax.tree.map(lambda m, v: step_size * m / (jnp.sqrt(v) + eps), mu, nu)
        return updates, TFAdamState(count, mu, nu)

    return optax.GradientTransformation(init, update)


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


def average_iterates(torch_form: bool = False) -> optax.GradientTransformation:
    """Averaged SGD's average (Polyak & Juditsky 1992): once `active` (see
    `start_averaging`), the mean of the parameters after each update. The updates pass
    through unchanged.

    With `torch_form`, the mean as torch.optim.ASGD (t0 = 0, lambd = 0; AWD-LSTM's and
    MoS's NT-ASGD) keeps it: its weight mu starts at 1 and becomes 1 / max(1, n - t0)
    after update n, so the second update copies its iterate as the first did, and after
    n >= 2 updates the mean is that of iterates 2..n: the first is left out."""

    def init(params):  # a copy: the step donates the state, so no buffer may be shared
        average = jax.tree.map(jnp.copy, params)
        return AverageState(jnp.zeros((), bool), jnp.zeros((), jnp.int32), average)

    def update(updates, state, params):
        count = state.count + state.active.astype(jnp.int32)

        def step_mean(average):
            new_params = optax.apply_updates(params, updates)
            n = count - 1 if torch_form else count
            weight = 1.0 / jnp.maximum(n, 1).astype(jnp.float32)
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
    torch_asgd: bool = False,
    adam: dict | None = None,
    adagrad: dict | None = None,
    tf_adam: bool = False,
) -> optax.GradientTransformationExtraArgs:
    """clip -> [+ weight_decay * params] -> [x length_scale] -> SGD -> [average], or with
    `adam` (its b1, b2, eps) clip -> [+ weight_decay * params] -> Adam -> [x length_scale]
    -> [average], or with `adagrad` (its eps) clip -> [+ weight_decay * params] -> Adagrad's
    scaling -> [x length_scale] -> SGD -> [average]: the length scales the learning rate
    in all three, which for a normalised step means after it. The optional parts are left
    out when off, so the state of the plain chain is unchanged.

    Adam is optax's (Kingma & Ba's bias-corrected form, eps added to sqrt(v_hat)), or with
    `tf_adam` TF's AdamOptimizer, which lamb uses (`scale_by_tf_adam`).
    Weight decay with Adam is L2 on the gradient after the clip, as torch.optim.Adam's
    `weight_decay`, not AdamW's decoupled decay (lamb's l2_penalty is in the objective,
    before the clip: step.Objective). `torch_asgd`: the length scale and the average as
    torch.optim.ASGD has them (scale_by_length, average_iterates)."""
    parts = [optax.clip_by_global_norm(max_grad_norm)]
    if weight_decay:
        parts.append(optax.add_decayed_weights(weight_decay))
    if adam is not None and tf_adam:
        parts += [scale_by_tf_adam(**adam), optax.scale_by_learning_rate(schedule)]
        parts += [scale_by_length()] if length_scaled else []
    elif adam is not None:
        parts.append(optax.adam(schedule, **adam))
        parts += [scale_by_length()] if length_scaled else []
    else:
        parts += [scale_by_adagrad(**adagrad)] if adagrad is not None else []
        parts += [scale_by_length(torch_asgd)] if length_scaled else []
        parts.append(optax.sgd(schedule))
    if averaging:
        parts.append(average_iterates(torch_asgd))
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
    (`optim.name`); it averages when NT-ASGD or lamb's trigger is on (`optim.nonmono`,
    `optim.average_after_best`, `optim.average_at_epoch`) or the run fine-tunes
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
        averaging=averages(config),
        torch_asgd=optim.torch_asgd,
        adam=adam,
        adagrad=adagrad,
        tf_adam=optim.tf_adam,
    )
    return optimizer, schedule


def averages(config: ml_collections.ConfigDict) -> bool:
    """Whether the run will average its iterates at some point: NT-ASGD, lamb's trigger,
    or fine-tuning."""
    optim = config.optim
    triggers = (optim.nonmono, optim.average_after_best, optim.average_at_epoch)
    return any(t > 0 for t in triggers) or bool(config.train.finetune_from)

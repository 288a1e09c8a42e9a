"""The optimizer and the state it updates: TF's staircase schedule, gradient clipping by
the global norm, plain SGD (`optax.chain(clip_by_global_norm, sgd(schedule))`), and the
TrainState that a step takes and returns and a checkpoint holds."""

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
    learning_rate: float, lr_decay: float, full_lr_epochs: int, steps_per_epoch: int
) -> optax.Schedule:
    """TF's staircase: epoch i (from 0) uses lr * lr_decay ** max(i + 1 - full_lr_epochs, 0)."""

    def schedule(step):
        epoch = step // steps_per_epoch
        return learning_rate * lr_decay ** jnp.maximum(epoch + 1 - full_lr_epochs, 0)

    return schedule


def make_optimizer(max_grad_norm: float, schedule: optax.Schedule) -> optax.GradientTransformation:
    return optax.chain(optax.clip_by_global_norm(max_grad_norm), optax.sgd(schedule))


def initial_state(seed: int, cfg: model.ModelConfig, optimizer) -> TrainState:
    init_key, dropout_key = jax.random.split(jax.random.PRNGKey(seed))
    params = model.init_params(init_key, cfg)
    return TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params), dropout_key)


def from_config(optim: ml_collections.ConfigDict, steps_per_epoch: int):
    """(optimizer, schedule) of the config's `optim` group."""
    schedule = lr_schedule(
        optim.learning_rate, optim.lr_decay, optim.full_lr_epochs, steps_per_epoch
    )
    return make_optimizer(optim.max_grad_norm, schedule), schedule

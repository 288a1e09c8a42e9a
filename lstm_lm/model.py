"""The Zaremba et al. (2014) LSTM language model as pure functions.

Parameters are a plain pytree:

    {"embedding": [V, H],
     "lstm": [{"w_x": [H, 4H], "w_h": [H, 4H], "b": [4H]}, ...],   # one per layer
     "softmax": {"w": [V, H], "b": [V]}}

`w_x` and `w_h` are the two halves of TF `BasicLSTMCell`'s kernel (which acts on
concat([x, h])), kept apart so the input half can be applied to all time steps in one
matmul outside the recurrence. The softmax weight is TF's `softmax_w` transposed: one row
per word, like the embedding. In that layout XLA's CPU backend runs a small-config training
step about 12% faster (experiments/benchmark/README.md); logits are `h @ w.T`. The
recurrent carry is a pair (c_LxBxH, h_LxBxH).
"""

import dataclasses

import jax
import jax.numpy as jnp

Carry = tuple[jax.Array, jax.Array]  # (c_LxBxH, h_LxBxH)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The model's shape and regularisation: static, hashable, free of ConfigDict."""

    vocab_size: int
    hidden_size: int
    num_layers: int
    init_scale: float
    keep_prob: float = 1.0
    forget_bias: float = 0.0


def init_params(key: jax.Array, cfg: ModelConfig) -> dict:
    """Every parameter uniform(-init_scale, init_scale), as in the paper and TF.

    The softmax weight is drawn in TF's [H, V] shape and stored transposed, so a seed
    gives the same model whichever layout it is stored in."""
    V, H = cfg.vocab_size, cfg.hidden_size
    shapes = {
        "embedding": (V, H),
        "lstm": [{"w_x": (H, 4 * H), "w_h": (H, 4 * H), "b": (4 * H,)}] * cfg.num_layers,
        "softmax": {"w": (H, V), "b": (V,)},
    }
    leaves, treedef = jax.tree.flatten(shapes, is_leaf=lambda s: isinstance(s, tuple))
    keys = jax.random.split(key, len(leaves))
    s = cfg.init_scale
    values = [jax.random.uniform(k, shape, jnp.float32, -s, s) for k, shape in zip(keys, leaves)]
    params = jax.tree.unflatten(treedef, values)
    params["softmax"]["w"] = params["softmax"]["w"].T
    return params


def zero_carry(cfg: ModelConfig, batch_size: int) -> Carry:
    """(c, h), each [num_layers, batch_size, hidden_size] zeros."""
    shape = (cfg.num_layers, batch_size, cfg.hidden_size)
    return jnp.zeros(shape, jnp.float32), jnp.zeros(shape, jnp.float32)


def lstm_cell(
    w_h: jax.Array, carry: tuple[jax.Array, jax.Array], xw_Bx4H: jax.Array, forget_bias: float
) -> tuple[jax.Array, jax.Array]:
    """One step of TF's BasicLSTMCell; `xw_Bx4H` is x @ w_x + b, already computed.

    Gates, in this order along the last axis: i (input), j (candidate), f (forget),
    o (output).
        c' = c * sigmoid(f + forget_bias) + sigmoid(i) * tanh(j)
        h' = tanh(c') * sigmoid(o)
    """
    c_BxH, h_BxH = carry
    gates_Bx4H = xw_Bx4H + h_BxH @ w_h
    i, j, f, o = jnp.split(gates_Bx4H, 4, axis=-1)
    c_BxH = c_BxH * jax.nn.sigmoid(f + forget_bias) + jax.nn.sigmoid(i) * jnp.tanh(j)
    h_BxH = jnp.tanh(c_BxH) * jax.nn.sigmoid(o)
    return c_BxH, h_BxH


def lstm_layer(
    layer: dict, carry: tuple[jax.Array, jax.Array], x_TxBxH: jax.Array, forget_bias: float
) -> tuple[tuple[jax.Array, jax.Array], jax.Array]:
    """Run one layer over time with `lax.scan`; returns (final (c, h), outputs_TxBxH)."""
    xw_TxBx4H = x_TxBxH @ layer["w_x"] + layer["b"]

    def step(carry, xw_Bx4H):
        carry = lstm_cell(layer["w_h"], carry, xw_Bx4H, forget_bias)
        return carry, carry[1]

    return jax.lax.scan(step, carry, xw_TxBx4H)


def dropout(key: jax.Array | None, x: jax.Array, keep_prob: float) -> jax.Array:
    """Inverted dropout; the identity when `key` is None (evaluation) or keep_prob == 1."""
    if key is None or keep_prob >= 1.0:
        return x
    mask = jax.random.bernoulli(key, keep_prob, x.shape)
    return jnp.where(mask, x / keep_prob, 0.0)


def forward(
    params: dict,
    cfg: ModelConfig,
    carry: Carry,
    inputs_BxT: jax.Array,
    dropout_key: jax.Array | None = None,
) -> tuple[jax.Array, Carry]:
    """Logits [T, B, V] (time-major) and the new carry.

    Dropout (Zaremba style) acts on the embedding output and on each layer's output,
    never on the recurrent connections, and only when `dropout_key` is given.
    """
    keys = [None] * (cfg.num_layers + 1)
    if dropout_key is not None:
        keys = list(jax.random.split(dropout_key, cfg.num_layers + 1))
    x_TxBxH = dropout(keys[0], params["embedding"][inputs_BxT.T], cfg.keep_prob)
    c_LxBxH, h_LxBxH = carry
    new_c, new_h = [], []
    for layer_idx, layer in enumerate(params["lstm"]):
        layer_carry = (c_LxBxH[layer_idx], h_LxBxH[layer_idx])
        (c_BxH, h_BxH), x_TxBxH = lstm_layer(layer, layer_carry, x_TxBxH, cfg.forget_bias)
        x_TxBxH = dropout(keys[layer_idx + 1], x_TxBxH, cfg.keep_prob)
        new_c.append(c_BxH)
        new_h.append(h_BxH)
    logits_TxBxV = x_TxBxH @ params["softmax"]["w"].T + params["softmax"]["b"]
    return logits_TxBxV, (jnp.stack(new_c), jnp.stack(new_h))


def sequence_cost(logits_TxBxV: jax.Array, targets_BxT: jax.Array) -> jax.Array:
    """TF's cost: cross-entropy summed over time steps, averaged over the batch."""
    log_probs_TxBxV = jax.nn.log_softmax(logits_TxBxV)
    target_log_probs_TxB = jnp.take_along_axis(log_probs_TxBxV, targets_BxT.T[..., None], -1)
    return -jnp.sum(target_log_probs_TxB) / targets_BxT.shape[0]


def cost_fn(
    params: dict,
    cfg: ModelConfig,
    carry: Carry,
    inputs_BxT: jax.Array,
    targets_BxT: jax.Array,
    dropout_key: jax.Array | None = None,
) -> tuple[jax.Array, Carry]:
    """(cost, new carry) for one batch; differentiable in `params`."""
    logits_TxBxV, carry = forward(params, cfg, carry, inputs_BxT, dropout_key)
    return sequence_cost(logits_TxBxV, targets_BxT), carry

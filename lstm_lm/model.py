"""The Zaremba et al. (2014) LSTM language model as pure functions.

Parameters are a plain pytree, for an embedding of size E and layers of sizes H_1..H_L
(each layer's input is the previous layer's output, the first's the embedding):

    {"embedding": [V, E],
     "lstm": [{"w_x": [I_l, 4H_l], "w_h": [H_l, 4H_l], "b": [4H_l]}, ...],  # I_1 = E
     "softmax": {"w": [V, H_L], "b": [V]}}   # tied: no "w", the embedding serves

`w_x` and `w_h` are the two halves of TF `BasicLSTMCell`'s kernel (which acts on
concat([x, h])), kept apart so the input half can be applied to all time steps in one
matmul outside the recurrence. The softmax weight is TF's `softmax_w` transposed: one row
per word, like the embedding. In that layout XLA's CPU backend runs a small-config training
step about 12% faster (experiments/benchmark/README.md); logits are `h @ w.T`. With
`tie_embeddings` (Press & Wolf 2017; Inan et al. 2017) the embedding is that weight: one
array, whose gradient sums both uses; it needs H_L == E.

The recurrent carry is a list with one (c_BxH, h_BxH) pair per layer.
"""

import dataclasses

import jax
import jax.numpy as jnp

Carry = list[tuple[jax.Array, jax.Array]]  # per layer: (c_BxH, h_BxH)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The model's shape and regularisation: static, hashable, free of ConfigDict.
    Its fields but `vocab_size` are the config's `model` group (lstm_lm/config.py)."""

    vocab_size: int
    hidden_size: int  # every layer's size, unless hidden_sizes gives one per layer
    num_layers: int
    init_scale: float
    hidden_sizes: tuple[int, ...] = ()
    embedding_size: int = 0  # 0 = the first layer's size
    tie_embeddings: bool = False
    keep_prob: float = 1.0
    forget_bias: float = 0.0

    def __post_init__(self):  # a list (from config.json, say) would not be hashable
        object.__setattr__(self, "hidden_sizes", tuple(self.hidden_sizes))

    @property
    def layer_sizes(self) -> tuple[int, ...]:
        return self.hidden_sizes or (self.hidden_size,) * self.num_layers

    @property
    def input_size(self) -> int:
        """E, the embedding's size."""
        return self.embedding_size or self.layer_sizes[0]


def init_params(key: jax.Array, cfg: ModelConfig) -> dict:
    """Every parameter uniform(-init_scale, init_scale), as in the paper and TF.

    The softmax weight is drawn in TF's [H, V] shape and stored transposed, so a seed
    gives the same model whichever layout it is stored in."""
    V, E, sizes = cfg.vocab_size, cfg.input_size, cfg.layer_sizes
    inputs = (E, *sizes[:-1])
    shapes = {
        "embedding": (V, E),
        "lstm": [
            {"w_x": (i, 4 * h), "w_h": (h, 4 * h), "b": (4 * h,)} for i, h in zip(inputs, sizes)
        ],
        "softmax": {"b": (V,)} if cfg.tie_embeddings else {"w": (sizes[-1], V), "b": (V,)},
    }
    leaves, treedef = jax.tree.flatten(shapes, is_leaf=lambda s: isinstance(s, tuple))
    keys = jax.random.split(key, len(leaves))
    s = cfg.init_scale
    values = [jax.random.uniform(k, shape, jnp.float32, -s, s) for k, shape in zip(keys, leaves)]
    params = jax.tree.unflatten(treedef, values)
    if not cfg.tie_embeddings:
        params["softmax"]["w"] = params["softmax"]["w"].T
    return params


def softmax_weight(params: dict) -> jax.Array:
    """[V, H_L]: the softmax's own weight, or the embedding when they are tied."""
    return params["softmax"].get("w", params["embedding"])


def zero_carry(cfg: ModelConfig, batch_size: int) -> Carry:
    """Per layer, (c, h) of zeros [batch_size, that layer's size]."""
    return [
        (jnp.zeros((batch_size, h), jnp.float32), jnp.zeros((batch_size, h), jnp.float32))
        for h in cfg.layer_sizes
    ]


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


def hidden_states(
    params: dict,
    cfg: ModelConfig,
    carry: Carry,
    inputs_BxT: jax.Array,
    dropout_key: jax.Array | None = None,
) -> tuple[jax.Array, Carry]:
    """The last layer's outputs [T, B, H_L] (time-major) and the new carry.

    Dropout (Zaremba style) acts on the embedding output and on each layer's output,
    never on the recurrent connections, and only when `dropout_key` is given.
    """
    keys = [None] * (cfg.num_layers + 1)
    if dropout_key is not None:
        keys = list(jax.random.split(dropout_key, cfg.num_layers + 1))
    x_TxBxH = dropout(keys[0], params["embedding"][inputs_BxT.T], cfg.keep_prob)
    new_carry = []
    for layer, layer_carry, key in zip(params["lstm"], carry, keys[1:]):
        layer_carry, x_TxBxH = lstm_layer(layer, layer_carry, x_TxBxH, cfg.forget_bias)
        x_TxBxH = dropout(key, x_TxBxH, cfg.keep_prob)
        new_carry.append(layer_carry)
    return x_TxBxH, new_carry


def logits(params: dict, outputs_TxBxH: jax.Array) -> jax.Array:
    """The softmax layer: logits [T, B, V] of the last layer's outputs."""
    return outputs_TxBxH @ softmax_weight(params).T + params["softmax"]["b"]


def forward(
    params: dict,
    cfg: ModelConfig,
    carry: Carry,
    inputs_BxT: jax.Array,
    dropout_key: jax.Array | None = None,
) -> tuple[jax.Array, Carry]:
    """Logits [T, B, V] (time-major) and the new carry."""
    outputs_TxBxH, carry = hidden_states(params, cfg, carry, inputs_BxT, dropout_key)
    return logits(params, outputs_TxBxH), carry


def target_log_probs(logits_TxBxV: jax.Array, targets_BxT: jax.Array) -> jax.Array:
    """log p(target) at each step, [T, B]."""
    log_probs_TxBxV = jax.nn.log_softmax(logits_TxBxV)
    return jnp.take_along_axis(log_probs_TxBxV, targets_BxT.T[..., None], -1)[..., 0]


def sequence_cost(logits_TxBxV: jax.Array, targets_BxT: jax.Array) -> jax.Array:
    """TF's cost: cross-entropy summed over time steps, averaged over the batch."""
    return -jnp.sum(target_log_probs(logits_TxBxV, targets_BxT)) / targets_BxT.shape[0]


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

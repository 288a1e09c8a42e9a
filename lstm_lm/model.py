"""The Zaremba et al. (2014) LSTM language model and AWD-LSTM's regularisers (Merity et
al. 2017) as pure functions.

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
import functools

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
    keep_prob: float = 1.0  # Zaremba: a new dropout mask at every step
    forget_bias: float = 0.0
    init: str = "uniform"  # "uniform" (Zaremba) or "awd"; see init_params
    dropout_input: float = 0.0  # AWD's dropouti: locked dropout on the embedding output
    dropout_hidden: float = 0.0  # AWD's dropouth: locked dropout between layers
    dropout_output: float = 0.0  # AWD's dropout: locked dropout on the last layer's output
    dropout_embedding: float = 0.0  # AWD's dropoute: whole words of the embedding
    weight_drop: float = 0.0  # AWD's wdrop: DropConnect on each w_h, one mask per batch

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
    """`init="uniform"`: every parameter U(-init_scale, init_scale), as in the paper and TF.
    `init="awd"`, as AWD-LSTM: the embedding (and an untied softmax weight)
    U(-init_scale, init_scale); a layer of size H has w_x, w_h ~ U(-1/sqrt(H), 1/sqrt(H))
    (PyTorch's nn.LSTM default) and b the sum of two such draws (PyTorch's b_ih + b_hh);
    the softmax bias is zero.

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
    if cfg.init == "awd":
        params = awd_init(jax.random.fold_in(key, 1), params)
    if not cfg.tie_embeddings:
        params["softmax"]["w"] = params["softmax"]["w"].T
    return params


def awd_init(key: jax.Array, params: dict) -> dict:
    """`params` with the LSTM weights and biases redrawn and the softmax bias zeroed, as
    AWD-LSTM initialises them (see init_params)."""
    lstm = []
    for layer, layer_key in zip(params["lstm"], jax.random.split(key, len(params["lstm"]))):
        bound = layer["w_h"].shape[0] ** -0.5
        k_x, k_h, k_b1, k_b2 = jax.random.split(layer_key, 4)
        draws = [
            jax.random.uniform(k, layer[name].shape, jnp.float32, -bound, bound)
            for k, name in [(k_x, "w_x"), (k_h, "w_h"), (k_b1, "b"), (k_b2, "b")]
        ]
        lstm.append({"w_x": draws[0], "w_h": draws[1], "b": draws[2] + draws[3]})
    softmax = {**params["softmax"], "b": jnp.zeros_like(params["softmax"]["b"])}
    return {**params, "lstm": lstm, "softmax": softmax}


def softmax_weight(params: dict) -> jax.Array:
    """[V, H_L]: the softmax's own weight, or the embedding when they are tied."""
    return params["softmax"].get("w", params["embedding"])


def zero_carry(cfg: ModelConfig, batch_size: int) -> Carry:
    """Per layer, (c, h) of zeros [batch_size, that layer's size]."""
    return [
        (jnp.zeros((batch_size, h), jnp.float32), jnp.zeros((batch_size, h), jnp.float32))
        for h in cfg.layer_sizes
    ]


def cell_activations(
    w_h: jax.Array, carry: tuple[jax.Array, jax.Array], xw_Bx4H: jax.Array, forget_bias: float
) -> tuple[tuple[jax.Array, jax.Array], jax.Array]:
    """One step of TF's BasicLSTMCell: ((c', h'), acts_Bx4H). `xw_Bx4H` is x @ w_x + b,
    already computed.

    Gates, in this order along the last axis: i (input), j (candidate), f (forget),
    o (output); `acts` holds them after their nonlinearities, for the backward pass:
        acts = [sigmoid(i), tanh(j), sigmoid(f + forget_bias), sigmoid(o)]
        c' = c * sigmoid(f + forget_bias) + sigmoid(i) * tanh(j)
        h' = tanh(c') * sigmoid(o)
    """
    c_BxH, h_BxH = carry
    gates_Bx4H = xw_Bx4H + h_BxH @ w_h
    i, j, f, o = jnp.split(gates_Bx4H, 4, axis=-1)
    i, j, f, o = jax.nn.sigmoid(i), jnp.tanh(j), jax.nn.sigmoid(f + forget_bias), jax.nn.sigmoid(o)
    c_BxH = c_BxH * f + i * j
    h_BxH = jnp.tanh(c_BxH) * o
    return (c_BxH, h_BxH), jnp.concatenate([i, j, f, o], axis=-1)


def lstm_cell(
    w_h: jax.Array, carry: tuple[jax.Array, jax.Array], xw_Bx4H: jax.Array, forget_bias: float
) -> tuple[jax.Array, jax.Array]:
    """One step of TF's BasicLSTMCell: (c', h'); see cell_activations."""
    return cell_activations(w_h, carry, xw_Bx4H, forget_bias)[0]


def _scan_cells(w_h, carry, xw_TxBx4H, real_T, forget_bias, unroll):
    """The recurrence's forward loop: ((final (c, h), h_TxBxH), what its backward needs:
    each step's activations and incoming (c, h)). Steps where `real_T` is False hold the
    carry (None: all steps are real)."""

    def step(carry, xw_and_real):
        xw_Bx4H, real = xw_and_real
        new_carry, acts_Bx4H = cell_activations(w_h, carry, xw_Bx4H, forget_bias)
        h_BxH = new_carry[1]
        if real is not None:
            new_carry = jax.tree.map(lambda n, o: jnp.where(real, n, o), new_carry, carry)
        return new_carry, (h_BxH, (acts_Bx4H, *carry))

    carry, (h_TxBxH, saved) = jax.lax.scan(step, carry, (xw_TxBx4H, real_T), unroll=unroll)
    return (carry, h_TxBxH), saved


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def recurrence(w_h, carry, xw_TxBx4H, real_T, forget_bias, unroll=1):
    """One layer's loop over time: (final (c, h), h_TxBxH), given xw = x @ w_x + b for
    every step. Steps where `real_T` [T] is False hold the carry (None: all are real).

    Its gradient is written out (below) rather than left to autodiff of the scan, which
    computes dL/dw_h step by step: a [H, B] @ [B, 4H] matmul and an add into an [H, 4H]
    sum at every step. Here the backward loop computes only the gates' gradients and
    dL/dh, and dL/dw_h is one [H, T*B] @ [T*B, 4H] matmul after it: a medium-sized
    training step ran 5-11% faster on CPU (experiments/benchmark/README.md)."""
    return _scan_cells(w_h, carry, xw_TxBx4H, real_T, forget_bias, unroll)[0]


def _recurrence_fwd(w_h, carry, xw_TxBx4H, real_T, forget_bias, unroll):
    outputs, saved = _scan_cells(w_h, carry, xw_TxBx4H, real_T, forget_bias, unroll)
    return outputs, (w_h, real_T, saved)


def _recurrence_bwd(forget_bias, unroll, residuals, cotangents):
    """Back through the steps, last to first, with the chain rule of cell_activations;
    at padding steps the carry's cotangent passes through unchanged."""
    w_h, real_T, (acts_TxBx4H, c_in_TxBxH, h_in_TxBxH) = residuals
    d_carry, dh_out_TxBxH = cotangents

    def step(d_carry, saved):
        acts_Bx4H, c_in_BxH, dh_out_BxH, real = saved
        dc, dh = d_carry
        held = (0.0, 0.0)
        if real is not None:  # the carry after a padding step is the carry before it
            held = (jnp.where(real, 0.0, dc), jnp.where(real, 0.0, dh))
            dc, dh = jnp.where(real, dc, 0.0), jnp.where(real, dh, 0.0)
        i, j, f, o = jnp.split(acts_Bx4H, 4, axis=-1)
        tanh_c = jnp.tanh(c_in_BxH * f + i * j)
        dh = dh + dh_out_BxH
        dc = dc + dh * o * (1.0 - tanh_c**2)
        d_gates_Bx4H = jnp.concatenate(
            [dc * j * i * (1.0 - i), dc * i * (1.0 - j**2), dc * c_in_BxH * f * (1.0 - f)]
            + [dh * tanh_c * o * (1.0 - o)],
            axis=-1,
        )
        d_carry = (dc * f + held[0], d_gates_Bx4H @ w_h.T + held[1])
        return d_carry, d_gates_Bx4H

    saved = (acts_TxBx4H, c_in_TxBxH, dh_out_TxBxH, real_T)
    d_carry, d_gates_TxBx4H = jax.lax.scan(step, d_carry, saved, reverse=True, unroll=unroll)
    H = h_in_TxBxH.shape[-1]
    d_w_h = h_in_TxBxH.reshape(-1, H).T @ d_gates_TxBx4H.reshape(-1, 4 * H)
    return d_w_h, d_carry, d_gates_TxBx4H, None


recurrence.defvjp(_recurrence_fwd, _recurrence_bwd)


def lstm_layer(
    layer: dict,
    carry: tuple[jax.Array, jax.Array],
    x_TxBxH: jax.Array,
    forget_bias: float,
    length: jax.Array | None = None,
    unroll: int | bool = 1,
) -> tuple[tuple[jax.Array, jax.Array], jax.Array]:
    """Run one layer over time; returns (final (c, h), outputs_TxBxH). The input
    projection of all T steps is one matmul; the loop (`recurrence`) holds the rest.

    With `length` (an int32 scalar, at most T) the steps from `length` on are padding:
    the carry is held there, so the final carry is the one after `length` steps, and their
    outputs are not to be used.

    `unroll`: time steps per loop iteration (`lax.scan`'s; True = all T). Evaluation
    unrolls: on CPU its forward pass ran 13-19% faster so (small and medium shapes).
    Training keeps 1: unrolled, it was no faster and compiled 4-9x slower
    (experiments/benchmark/README.md)."""
    xw_TxBx4H = x_TxBxH @ layer["w_x"] + layer["b"]
    real_T = step_mask(len(xw_TxBx4H), length)
    return recurrence(layer["w_h"], carry, xw_TxBx4H, real_T, forget_bias, unroll)


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


def layer_outputs(
    params: dict,
    cfg: ModelConfig,
    carry: Carry,
    inputs_BxT: jax.Array,
    dropout_key: jax.Array | None = None,
    length: jax.Array | None = None,
    unroll: int | bool = 1,
) -> tuple[jax.Array, jax.Array, Carry]:
    """(raw_TxBxH, dropped_TxBxH, new carry): the last layer's outputs (time-major) before
    and after its output dropout. Dropout acts only when `dropout_key` is given:

    - Zaremba's (`keep_prob`): a new mask at every step, on the embedding output and on
      each layer's output, never on the recurrent connections;
    - AWD's: `dropout_embedding` on whole words, locked masks (the same at every step)
      on the embedding output (`dropout_input`), between layers (`dropout_hidden`) and on
      the last layer's output (`dropout_output`), and `weight_drop` on each `w_h`.

    `length`, `unroll`: see lstm_layer.
    """
    L = cfg.num_layers
    site_keys, word_key, w_keys = [None] * (L + 1), None, [None] * L
    if dropout_key is not None:
        site_keys = list(jax.random.split(dropout_key, L + 1))
        word_key, *w_keys = jax.random.split(jax.random.fold_in(dropout_key, 1), L + 1)
    locked_rates = [cfg.dropout_input, *[cfg.dropout_hidden] * (L - 1), cfg.dropout_output]

    def drop(site, x_TxBxH):
        key = site_keys[site]
        x_TxBxH = dropout(key, x_TxBxH, cfg.keep_prob)
        key = None if key is None else jax.random.fold_in(key, 1)
        return locked_dropout(key, x_TxBxH, locked_rates[site])

    x_TxBxH = embedding_dropout(word_key, params["embedding"], inputs_BxT, cfg.dropout_embedding)
    x_TxBxH = drop(0, x_TxBxH)
    new_carry = []
    for i, (layer, layer_carry) in enumerate(zip(params["lstm"], carry)):
        layer = {**layer, "w_h": weight_drop(w_keys[i], layer["w_h"], cfg.weight_drop)}
        layer_carry, raw_TxBxH = lstm_layer(
            layer, layer_carry, x_TxBxH, cfg.forget_bias, length, unroll
        )
        x_TxBxH = drop(i + 1, raw_TxBxH)
        new_carry.append(layer_carry)
    return raw_TxBxH, x_TxBxH, new_carry


def hidden_states(
    params: dict,
    cfg: ModelConfig,
    carry: Carry,
    inputs_BxT: jax.Array,
    dropout_key: jax.Array | None = None,
    unroll: int | bool = 1,
) -> tuple[jax.Array, Carry]:
    """The last layer's outputs [T, B, H_L] (time-major, after dropout when `dropout_key`
    is given) and the new carry. `unroll`: see lstm_layer."""
    _, outputs_TxBxH, carry = layer_outputs(
        params, cfg, carry, inputs_BxT, dropout_key, unroll=unroll
    )
    return outputs_TxBxH, carry


def logits(params: dict, outputs_TxBxH: jax.Array) -> jax.Array:
    """The softmax layer: logits [T, B, V] of the last layer's outputs."""
    return outputs_TxBxH @ softmax_weight(params).T + params["softmax"]["b"]


def forward(
    params: dict,
    cfg: ModelConfig,
    carry: Carry,
    inputs_BxT: jax.Array,
    dropout_key: jax.Array | None = None,
    unroll: int | bool = 1,
) -> tuple[jax.Array, Carry]:
    """Logits [T, B, V] (time-major) and the new carry. `unroll`: see lstm_layer."""
    outputs_TxBxH, carry = hidden_states(params, cfg, carry, inputs_BxT, dropout_key, unroll)
    return logits(params, outputs_TxBxH), carry


def target_log_probs(logits_TxBxV: jax.Array, targets_BxT: jax.Array) -> jax.Array:
    """log p(target) at each step, [T, B]."""
    log_probs_TxBxV = jax.nn.log_softmax(logits_TxBxV)
    return jnp.take_along_axis(log_probs_TxBxV, targets_BxT.T[..., None], -1)[..., 0]


def sequence_cost(
    logits_TxBxV: jax.Array, targets_BxT: jax.Array, mask_T: jax.Array | None = None
) -> jax.Array:
    """TF's cost: cross-entropy summed over time steps (the real ones, `mask_T`, of a
    padded batch; None = all), averaged over the batch."""
    log_probs_TxB = target_log_probs(logits_TxBxV, targets_BxT)
    if mask_T is not None:
        log_probs_TxB = jnp.where(mask_T[:, None], log_probs_TxB, 0.0)
    return -jnp.sum(log_probs_TxB) / targets_BxT.shape[0]


def step_mask(num_steps: int, length: jax.Array | None) -> jax.Array | None:
    """[T] bool: which steps of a batch padded to `num_steps` are real (None: all)."""
    return None if length is None else jnp.arange(num_steps) < length


def activation_penalties(
    raw_TxBxH: jax.Array, dropped_TxBxH: jax.Array, mask_T: jax.Array | None = None
) -> tuple[jax.Array, jax.Array]:
    """(AR, TAR) of Merity et al. (2017), without their coefficients: the mean square of
    the dropped last-layer outputs, and of the change between consecutive raw ones; means
    over the real steps (`mask_T`, None = all) of the batch."""
    if mask_T is None:
        mask_T = jnp.ones(raw_TxBxH.shape[0], bool)
    B, H = raw_TxBxH.shape[1:]
    ar = jnp.sum(jnp.where(mask_T[:, None, None], dropped_TxBxH**2, 0.0))
    ar = ar / (jnp.sum(mask_T) * B * H)
    diff_T1xBxH = raw_TxBxH[1:] - raw_TxBxH[:-1]
    tar = jnp.sum(jnp.where(mask_T[1:, None, None], diff_T1xBxH**2, 0.0))
    tar = tar / (jnp.maximum(jnp.sum(mask_T[1:]), 1) * B * H)
    return ar, tar


def cost_fn(
    params: dict,
    cfg: ModelConfig,
    carry: Carry,
    inputs_BxT: jax.Array,
    targets_BxT: jax.Array,
    dropout_key: jax.Array | None = None,
    unroll: int | bool = 1,
) -> tuple[jax.Array, Carry]:
    """(cost, new carry) for one batch; differentiable in `params`. `unroll`: see
    lstm_layer."""
    logits_TxBxV, carry = forward(params, cfg, carry, inputs_BxT, dropout_key, unroll)
    return sequence_cost(logits_TxBxV, targets_BxT), carry

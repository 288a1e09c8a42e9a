"""The Zaremba et al. (2014) LSTM language model, AWD-LSTM's regularisers (Merity et
al. 2017) and the Mogrifier LSTM (Melis et al. 2020) as pure functions; the cells and
their loops over time are in `cells`.

Parameters are a plain pytree, for an embedding of size E and layers of sizes H_1..H_L
(each layer's input is the previous layer's output, the first's the embedding):

    {"embedding": [V, E],
     "lstm": [{"w_x": [I_l, 4H_l], "w_h": [H_l, 4H_l], "b": [4H_l]}, ...],  # I_1 = E
     "softmax": {"w": [V, H_L], "b": [V]}}   # tied: no "w", the embedding serves

(the full softmax's; the adaptive softmax and the mixture of softmaxes hold their own
parameters under "softmax", see `softmax`, which also computes every output layer).

`w_x` and `w_h` are the two halves of TF `BasicLSTMCell`'s kernel (which acts on
concat([x, h])), kept apart so the input half can be applied to all time steps in one
matmul outside the recurrence. The softmax weight is TF's `softmax_w` transposed: one row
per word, like the embedding. In that layout XLA's CPU backend runs a small-config training
step about 12% faster (experiments/benchmark/README.md); logits are `h @ w.T`. With
`tie_embeddings` (Press & Wolf 2017; Inan et al. 2017) the embedding is that weight: one
array, whose gradient sums both uses; it needs H_L == E. A Mogrifier layer (`cell =
"mogrifier"`, R >= 1 rounds) also holds its rounds' matrices under "mogrifier" (see cells).

The recurrent carry is a list with one (c_BxH, h_BxH) pair per layer.
"""

import dataclasses

import jax
import jax.numpy as jnp

from lstm_lm import cells, regularisers, softmax

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
    cell: str = "lstm"  # "lstm" or "mogrifier" (lstm_lm/cells.py)
    mogrifier_rounds: int = 0  # R: rounds of gating x and h before each step; 0 = the LSTM
    mogrifier_rank: int = 0  # k: each round's matrix as [., k] @ [k, .]; 0 = full matrices
    cap_input_gate: bool = False  # lamb's: the input gate capped at 1 - the forget gate
    softmax: str = "full"  # "full", "adaptive" or "mos" (lstm_lm/softmax.py)
    softmax_cutoffs: tuple[int, ...] = ()  # adaptive: c_1 < ... < c_n < V
    softmax_div_value: float = 4.0  # adaptive: cluster i is projected to H // div**i
    softmax_head_bias: bool = False  # adaptive: a bias in the head
    mos_experts: int = 0  # mos: K, the number of softmaxes mixed
    dropout_latent: float = 0.0  # mos: locked dropout on the K latent contexts

    def __post_init__(self):  # a list (from config.json, say) would not be hashable
        object.__setattr__(self, "hidden_sizes", tuple(self.hidden_sizes))
        object.__setattr__(self, "softmax_cutoffs", tuple(self.softmax_cutoffs))

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
    the softmax bias is zero. An adaptive softmax or a mixture of softmaxes draws its own
    parameters from a key of its own (`softmax`).

    The softmax weight is drawn in TF's [H, V] shape and stored transposed, so a seed
    gives the same model whichever layout it is stored in."""
    V, E, sizes = cfg.vocab_size, cfg.input_size, cfg.layer_sizes
    inputs = (E, *sizes[:-1])
    shapes = {
        "embedding": (V, E),
        "lstm": [
            {"w_x": (i, 4 * h), "w_h": (h, 4 * h), "b": (4 * h,)} for i, h in zip(inputs, sizes)
        ],
    }
    full = cfg.softmax == "full"
    if full:
        shapes["softmax"] = {"b": (V,)} if cfg.tie_embeddings else {"w": (sizes[-1], V), "b": (V,)}
    leaves, treedef = jax.tree.flatten(shapes, is_leaf=lambda s: isinstance(s, tuple))
    keys = jax.random.split(key, len(leaves))
    s = cfg.init_scale
    values = [jax.random.uniform(k, shape, jnp.float32, -s, s) for k, shape in zip(keys, leaves)]
    params = jax.tree.unflatten(treedef, values)
    if cfg.init == "awd":
        params = awd_init(jax.random.fold_in(key, 1), params)
    if cfg.cell == "mogrifier" and cfg.mogrifier_rounds:
        params = mogrifier_init(
            jax.random.fold_in(key, 2), params, cfg.mogrifier_rounds, cfg.mogrifier_rank
        )
    if full and not cfg.tie_embeddings:
        params["softmax"]["w"] = params["softmax"]["w"].T
    if not full:
        params["softmax"] = softmax.SOFTMAXES[cfg.softmax].init(jax.random.fold_in(key, 3), cfg)
    return params


def awd_init(key: jax.Array, params: dict) -> dict:
    """`params` with the LSTM weights and biases redrawn and the full softmax's bias zeroed
    (if it has one), as AWD-LSTM initialises them (see init_params)."""
    lstm = []
    for layer, layer_key in zip(params["lstm"], jax.random.split(key, len(params["lstm"]))):
        bound = layer["w_h"].shape[0] ** -0.5
        k_x, k_h, k_b1, k_b2 = jax.random.split(layer_key, 4)
        draws = [
            jax.random.uniform(k, layer[name].shape, jnp.float32, -bound, bound)
            for k, name in [(k_x, "w_x"), (k_h, "w_h"), (k_b1, "b"), (k_b2, "b")]
        ]
        lstm.append({"w_x": draws[0], "w_h": draws[1], "b": draws[2] + draws[3]})
    if "softmax" not in params:
        return {**params, "lstm": lstm}
    full = {**params["softmax"], "b": jnp.zeros_like(params["softmax"]["b"])}
    return {**params, "lstm": lstm, "softmax": full}


def mogrifier_init(key: jax.Array, params: dict, rounds: int, rank: int) -> dict:
    """`params` with each layer's Mogrifier rounds added (their layout: lstm_lm/cells.py),
    drawn from their own key so that the LSTM's weights are those of the plain model.

    As lamb: zero biases, and with a rank k each factor ~ N(0, s^2) truncated at 2s with
    s = (1 / (fan_in * k)) ** (1/4), so that their product has the variance 1 / fan_in of a
    matrix drawn directly. A full matrix is drawn at that variance (truncated normal,
    s = fan_in ** -1/2); lamb leaves it to the cell's default initializer."""

    def normal(k, shape, scale):
        return scale * jax.random.truncated_normal(k, -2.0, 2.0, shape, jnp.float32)

    lstm = []
    for layer, layer_key in zip(params["lstm"], jax.random.split(key, len(params["lstm"]))):
        in_size, H = layer["w_x"].shape[0], layer["w_h"].shape[0]
        layer_rounds = []
        for r, round_key in enumerate(jax.random.split(layer_key, rounds)):
            fan_in, fan_out = (H, in_size) if r % 2 == 0 else (in_size, H)  # 1: x by h
            k_u, k_v = jax.random.split(round_key)
            if rank:
                scale = (fan_in * rank) ** -0.25
                weights = {
                    "u": normal(k_u, (fan_in, rank), scale),
                    "v": normal(k_v, (rank, fan_out), scale),
                }
            else:
                weights = {"w": normal(k_u, (fan_in, fan_out), fan_in**-0.5)}
            layer_rounds.append({**weights, "b": jnp.zeros((fan_out,), jnp.float32)})
        lstm.append({**layer, "mogrifier": layer_rounds})
    return {**params, "lstm": lstm}


def parameter_count(params: dict) -> int:
    """The number of trainable numbers in `params` (a tied matrix counts once)."""
    return sum(leaf.size for leaf in jax.tree.leaves(params))


def zero_carry(cfg: ModelConfig, batch_size: int) -> Carry:
    """Per layer, (c, h) of zeros [batch_size, that layer's size]."""
    return [
        (jnp.zeros((batch_size, h), jnp.float32), jnp.zeros((batch_size, h), jnp.float32))
        for h in cfg.layer_sizes
    ]


def lstm_layer(
    layer: dict,
    carry: tuple[jax.Array, jax.Array],
    x_TxBxI: jax.Array,
    forget_bias: float,
    length: jax.Array | None = None,
    unroll: int | bool = 1,
    cap_input_gate: bool = False,
) -> tuple[tuple[jax.Array, jax.Array], jax.Array]:
    """Run one layer over time; returns (final (c, h), outputs_TxBxH). The plain LSTM
    takes the fast path: the input projection of all T steps is one matmul and the loop
    (`cells.recurrence`) has its gradient written out. A Mogrifier layer (one with
    "mogrifier" rounds) or the capped input gate runs `cells.cell_scan`.

    With `length` (an int32 scalar, at most T) the steps from `length` on are padding:
    the carry is held there, so the final carry is the one after `length` steps, and their
    outputs are not to be used.

    `unroll`: time steps per loop iteration (`lax.scan`'s; True = all T). Evaluation
    unrolls: on CPU its forward pass ran 13-19% faster so (small and medium shapes).
    Training keeps 1: unrolled, it was no faster and compiled 4-9x slower
    (experiments/benchmark/README.md)."""
    real_T = step_mask(len(x_TxBxI), length)
    if "mogrifier" in layer or cap_input_gate:
        return cells.cell_scan(layer, carry, x_TxBxI, real_T, forget_bias, cap_input_gate, unroll)
    xw_TxBx4H = x_TxBxI @ layer["w_x"] + layer["b"]
    return cells.recurrence(layer["w_h"], carry, xw_TxBx4H, real_T, forget_bias, unroll)


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
        x_TxBxH = regularisers.dropout(key, x_TxBxH, cfg.keep_prob)
        key = None if key is None else jax.random.fold_in(key, 1)
        return regularisers.locked_dropout(key, x_TxBxH, locked_rates[site])

    x_TxBxH = regularisers.embedding_dropout(
        word_key, params["embedding"], inputs_BxT, cfg.dropout_embedding
    )
    x_TxBxH = drop(0, x_TxBxH)
    new_carry = []
    for i, (layer, layer_carry) in enumerate(zip(params["lstm"], carry)):
        w_h = regularisers.weight_drop(w_keys[i], layer["w_h"], cfg.weight_drop)
        layer = {**layer, "w_h": w_h}
        layer_carry, raw_TxBxH = lstm_layer(
            layer, layer_carry, x_TxBxH, cfg.forget_bias, length, unroll, cfg.cap_input_gate
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


def output_key(dropout_key: jax.Array | None) -> jax.Array | None:
    """The output layer's dropout key (MoS's latent dropout), apart from layer_outputs'."""
    return None if dropout_key is None else jax.random.fold_in(dropout_key, 2)


def forward(
    params: dict,
    cfg: ModelConfig,
    carry: Carry,
    inputs_BxT: jax.Array,
    dropout_key: jax.Array | None = None,
    unroll: int | bool = 1,
) -> tuple[jax.Array, Carry]:
    """Logits [T, B, V] (time-major; see `softmax`) and the new carry. `unroll`: see
    lstm_layer."""
    outputs_TxBxH, carry = hidden_states(params, cfg, carry, inputs_BxT, dropout_key, unroll)
    return softmax.logits(params, cfg, outputs_TxBxH, output_key(dropout_key)), carry


def sequence_cost(log_probs_TxB: jax.Array, mask_T: jax.Array | None = None) -> jax.Array:
    """TF's cost from the targets' log-probabilities [T, B]: their negative summed over
    time steps (the real ones, `mask_T`, of a padded batch; None = all), averaged over the
    batch."""
    if mask_T is not None:
        log_probs_TxB = jnp.where(mask_T[:, None], log_probs_TxB, 0.0)
    return -jnp.sum(log_probs_TxB) / log_probs_TxB.shape[1]


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
    outputs_TxBxH, carry = hidden_states(params, cfg, carry, inputs_BxT, dropout_key, unroll)
    log_probs_TxB = softmax.target_log_probs(
        params, cfg, outputs_TxBxH, targets_BxT.T, output_key(dropout_key)
    )
    return sequence_cost(log_probs_TxB), carry

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
With `cell = "qrnn"` the layers under "lstm" are QRNN layers, {"w", "b"} (see qrnn).

The recurrent carry is a list with one (c_BxH, h_BxH) pair per layer.
"""

import dataclasses

import jax
import jax.numpy as jnp

from lstm_lm import cells, initializers, qrnn, regularisers, softmax

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
    forget_bias: float = 0.0  # TF: a constant added to the forget gate at every step
    trainable_forget_bias: bool = False  # lamb: forget_bias starts the trained bias instead
    hidden_bias: bool = False  # PyTorch's nn.LSTM: a second trained bias "b_h" (b_hh) beside b
    init: str = "uniform"  # "uniform" (Zaremba), "awd" or "lamb"; see init_params
    dropout_input: float = 0.0  # AWD's dropouti: locked dropout on the embedding output
    dropout_hidden: float = 0.0  # AWD's dropouth: locked dropout between layers
    dropout_output: float = 0.0  # AWD's dropout: locked dropout on the last layer's output
    dropout_embedding: float = 0.0  # AWD's dropoute: whole words of the embedding
    weight_drop: float = 0.0  # AWD's wdrop: DropConnect on each w_h, one mask per batch
    cell: str = "lstm"  # "lstm", "mogrifier" (lstm_lm/cells.py) or "qrnn" (lstm_lm/qrnn.py)
    mogrifier_rounds: int = 0  # R: rounds of gating x and h before each step; 0 = the LSTM
    mogrifier_rank: int = 0  # k: each round's matrix as [., k] @ [k, .]; 0 = full matrices
    cap_input_gate: bool = False  # lamb's: the input gate capped at 1 - the forget gate
    qrnn_windows: tuple[int, ...] = ()  # qrnn: each layer's window, 1 or 2; () = 2, 1, 1, ...
    qrnn_output_gate: bool = True  # qrnn: fo-pooling (h = O * c), else f-pooling (h = c)
    zoneout: float = 0.0  # qrnn: the forget gates' zoneout
    dropout_state: float = 0.0  # lamb's state_dropout: h before each step, one mask a batch
    dropout_per_step: bool = False  # lamb's: the three site dropouts draw a mask per step
    skip_connection: bool = False  # lamb's: the output is the sum of every layer's h
    drop_state_probability: float = 0.0  # lamb's: a row's carry reset to zeros before a step
    softmax: str = "full"  # "full", "adaptive" or "mos" (lstm_lm/softmax.py)
    softmax_cutoffs: tuple[int, ...] = ()  # adaptive: c_1 < ... < c_n < V
    softmax_div_value: float = 4.0  # adaptive: cluster i is projected to H // div**i
    softmax_head_bias: bool = False  # adaptive: a bias in the head
    mos_experts: int = 0  # mos: K, the number of softmaxes mixed
    dropout_latent: float = 0.0  # mos: locked dropout on the K latent contexts

    def __post_init__(self):  # a list (from config.json, say) would not be hashable
        object.__setattr__(self, "hidden_sizes", tuple(self.hidden_sizes))
        object.__setattr__(self, "softmax_cutoffs", tuple(self.softmax_cutoffs))
        object.__setattr__(self, "qrnn_windows", tuple(self.qrnn_windows))

    @property
    def layer_sizes(self) -> tuple[int, ...]:
        return self.hidden_sizes or (self.hidden_size,) * self.num_layers

    @property
    def input_size(self) -> int:
        """E, the embedding's size."""
        return self.embedding_size or self.layer_sizes[0]

    @property
    def windows(self) -> tuple[int, ...]:
        """The QRNN layers' windows: qrnn_windows, or awd-lstm-lm's 2 then 1s."""
        return self.qrnn_windows or (2,) + (1,) * (self.num_layers - 1)

    @property
    def layer_inputs(self) -> tuple[int, ...]:
        """I_l, each layer's input size: E, then the layer below's."""
        return (self.input_size, *self.layer_sizes[:-1])

    @property
    def constant_forget_bias(self) -> float:
        """What the cell adds to the forget gate at every step: forget_bias (TF), or 0 when
        forget_bias is the trained bias's initial value instead (lamb)."""
        return 0.0 if self.trainable_forget_bias else self.forget_bias


def init_params(key: jax.Array, cfg: ModelConfig) -> dict:
    """`init="uniform"`: every parameter U(-init_scale, init_scale), as in the paper and TF.
    `init="awd"`, as AWD-LSTM: the embedding (and an untied softmax weight)
    U(-init_scale, init_scale), the LSTM as PyTorch's nn.LSTM, the softmax bias zero
    (`initializers.awd_init`). `init="lamb"`: as lamb (`initializers.lamb_init`). With
    `trainable_forget_bias` each forget-gate bias is then shifted by forget_bias. An
    adaptive softmax or a mixture of softmaxes draws its own parameters from a key of its
    own (`softmax`).

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
    if cfg.hidden_bias:
        shapes["lstm"] = [{**layer, "b_h": layer["b"]} for layer in shapes["lstm"]]
    full = cfg.softmax == "full"
    if full:
        shapes["softmax"] = {"b": (V,)} if cfg.tie_embeddings else {"w": (sizes[-1], V), "b": (V,)}
    leaves, treedef = jax.tree.flatten(shapes, is_leaf=lambda s: isinstance(s, tuple))
    keys = jax.random.split(key, len(leaves))
    s = cfg.init_scale
    values = [jax.random.uniform(k, shape, jnp.float32, -s, s) for k, shape in zip(keys, leaves)]
    params = jax.tree.unflatten(treedef, values)
    if cfg.init == "awd":
        params = initializers.awd_init(jax.random.fold_in(key, 1), params)
    if cfg.cell == "mogrifier" and cfg.mogrifier_rounds:
        params = initializers.mogrifier_init(
            jax.random.fold_in(key, 2),
            params,
            cfg.mogrifier_rounds,
            cfg.mogrifier_rank,
            full_gain=1.3**0.5 if cfg.init == "lamb" else 1.0,
        )
    if cfg.cell == "qrnn":
        params["lstm"] = qrnn_init(jax.random.fold_in(key, 5), cfg)
    if full and not cfg.tie_embeddings:
        params["softmax"]["w"] = params["softmax"]["w"].T
    if not full:
        params["softmax"] = softmax.SOFTMAXES[cfg.softmax].init(jax.random.fold_in(key, 3), cfg)
    if cfg.init == "lamb":
        params = initializers.lamb_init(jax.random.fold_in(key, 4), params)
    if cfg.trainable_forget_bias:
        params["lstm"] = [shift_forget_bias(layer, cfg.forget_bias) for layer in params["lstm"]]
    return params


def qrnn_init(key: jax.Array, cfg: ModelConfig) -> list[dict]:
    """The QRNN's layers (under params["lstm"], the recurrent layers' key): U(-init_scale,
    init_scale), or with init="awd" torch.nn.Linear's U(+-1/sqrt(window * I))."""
    layers = []
    for layer_key, i, h, window in zip(
        jax.random.split(key, cfg.num_layers), cfg.layer_inputs, cfg.layer_sizes, cfg.windows
    ):
        bound = (window * i) ** -0.5 if cfg.init == "awd" else cfg.init_scale
        layers.append(qrnn.init_layer(layer_key, i, h, window, cfg.qrnn_output_gate, bound))
    return layers


def shift_forget_bias(layer: dict, forget_bias: float) -> dict:
    """`layer` with forget_bias added to its forget gates' bias (the third quarter of b:
    gates i, j, f, o)."""
    H = layer["w_h"].shape[0]
    return {**layer, "b": layer["b"].at[2 * H : 3 * H].add(forget_bias)}


def parameter_count(params: dict) -> int:
    """The number of trainable numbers in `params` (a tied matrix counts once)."""
    return sum(leaf.size for leaf in jax.tree.leaves(params))


def zero_carry(cfg: ModelConfig, batch_size: int) -> Carry:
    """Per layer, (c, h) of zeros [batch_size, that layer's size]; for the QRNN (c, x_prev),
    x_prev [batch_size, that layer's input size]."""
    seconds = cfg.layer_inputs if cfg.cell == "qrnn" else cfg.layer_sizes
    return [
        (jnp.zeros((batch_size, h), jnp.float32), jnp.zeros((batch_size, w), jnp.float32))
        for h, w in zip(cfg.layer_sizes, seconds)
    ]


def lstm_layer(
    layer: dict,
    carry: tuple[jax.Array, jax.Array],
    x_TxBxI: jax.Array,
    forget_bias: float,
    length: jax.Array | None = None,
    unroll: int | bool = 1,
    cap_input_gate: bool = False,
    h_scale_BxH: jax.Array | None = None,
) -> tuple[tuple[jax.Array, jax.Array], jax.Array]:
    """Run one layer over time; returns (final (c, h), outputs_TxBxH). The plain LSTM
    takes the fast path: the input projection of all T steps is one matmul and the loop
    (`cells.recurrence`) has its gradient written out. A Mogrifier layer (one with
    "mogrifier" rounds), the capped input gate or state dropout (`h_scale_BxH`, see
    cells.cell_step) runs `cells.cell_scan`.

    With `length` (an int32 scalar, at most T) the steps from `length` on are padding:
    the carry is held there, so the final carry is the one after `length` steps, and their
    outputs are not to be used.

    `unroll`: time steps per loop iteration (`lax.scan`'s; True = all T). Evaluation
    unrolls: on CPU its forward pass ran 13-19% faster so (small and medium shapes).
    Training keeps 1: unrolled, it was no faster and compiled 4-9x slower
    (experiments/benchmark/README.md)."""
    real_T = step_mask(len(x_TxBxI), length)
    if "mogrifier" in layer or cap_input_gate or h_scale_BxH is not None:
        return cells.cell_scan(
            layer, carry, x_TxBxI, real_T, forget_bias, cap_input_gate, unroll, h_scale_BxH
        )
    xw_TxBx4H = x_TxBxI @ layer["w_x"] + cells.gate_bias(layer)
    return cells.recurrence(layer["w_h"], carry, xw_TxBx4H, real_T, forget_bias, unroll)


def dropout_masks(
    dropout_key: jax.Array | None, cfg: ModelConfig, batch_size: int, num_steps: int
) -> dict:
    """Every dropout mask of one training step, drawn from `dropout_key` (keep masks, see
    `regularisers`), each None where its rate is 0 or the key is None (evaluation). With
    W_0 = E and W_l = H_l the widths of the L + 1 sites (the embedding's output, each
    layer's output):

        {"step":   [L + 1] x [T, B, W_s]  Zaremba's keep_prob, a new mask at every step,
         "locked": [L + 1] x [B, W_s]     AWD's dropout_input / dropout_hidden /
                                          dropout_output, one mask for every step
                                          ([T, B, W_s], one per step, with
                                          dropout_per_step: lamb's),
         "words":  [V]                    AWD's dropout_embedding, whole words,
         "w_h":    [L] x [H_l, 4H_l]      AWD's weight_drop on each recurrent matrix (the
                                          QRNN's: on its whole w, [window I_l, 3H_l]),
         "zoneout": [L] x [T, B, H_l]     the QRNN's zoneout on its forget gates,
         "state":  [L] x [B, H_l]         lamb's dropout_state on each layer's h,
         "carry":  [B]                    lamb's drop_state_probability: the rows whose
                                          carry (every layer's c and h) is kept,
         "latent": [B, K * E]             MoS's dropout_latent (softmax="mos"; [T, B, K * E]
                                          with dropout_per_step)}

    `layer_outputs` applies them (and the output layer the latent one); a test may hand
    it masks of its own instead."""
    L, T, B = cfg.num_layers, num_steps, batch_size
    widths = (cfg.input_size, *cfg.layer_sizes)
    rates = [cfg.dropout_input, *[cfg.dropout_hidden] * (L - 1), cfg.dropout_output]
    site_keys, word_key, w_keys, latent_key = [None] * (L + 1), None, [None] * L, None
    state_keys, carry_key, zoneout_keys = [None] * L, None, [None] * L
    if dropout_key is not None:
        site_keys = list(jax.random.split(dropout_key, L + 1))
        word_key, *w_keys = jax.random.split(jax.random.fold_in(dropout_key, 1), L + 1)
        latent_key = jax.random.fold_in(dropout_key, 2)
        state_keys = list(jax.random.split(jax.random.fold_in(dropout_key, 3), L))
        carry_key = jax.random.fold_in(dropout_key, 4)
        zoneout_keys = list(jax.random.split(jax.random.fold_in(dropout_key, 5), L))
    locked_keys = [None if k is None else jax.random.fold_in(k, 1) for k in site_keys]
    keep = regularisers.keep_mask
    per = (T, B) if cfg.dropout_per_step else (B,)
    sizes, latent_width = cfg.layer_sizes, cfg.mos_experts * cfg.input_size
    w_shapes = [(h, 4 * h) for h in sizes]
    if cfg.cell == "qrnn":
        gates = qrnn.gates(cfg.qrnn_output_gate)
        w_shapes = [(n * i, gates * h) for n, i, h in zip(cfg.windows, cfg.layer_inputs, sizes)]
    zoneout = cfg.zoneout if cfg.cell == "qrnn" else 0.0
    return {
        "step": [keep(k, (T, B, w), cfg.keep_prob) for k, w in zip(site_keys, widths)],
        "locked": [keep(k, (*per, w), 1.0 - r) for k, w, r in zip(locked_keys, widths, rates)],
        "words": keep(word_key, (cfg.vocab_size,), 1.0 - cfg.dropout_embedding),
        "w_h": [keep(k, shape, 1.0 - cfg.weight_drop) for k, shape in zip(w_keys, w_shapes)],
        "zoneout": [keep(k, (T, B, h), 1.0 - zoneout) for k, h in zip(zoneout_keys, sizes)],
        "state": [keep(k, (B, h), 1.0 - cfg.dropout_state) for k, h in zip(state_keys, sizes)],
        "carry": keep(carry_key, (B,), 1.0 - cfg.drop_state_probability),
        "latent": keep(latent_key, (*per, latent_width), 1.0 - cfg.dropout_latent),
    }


def layer_outputs(
    params: dict,
    cfg: ModelConfig,
    carry: Carry,
    inputs_BxT: jax.Array,
    masks: dict | None = None,
    length: jax.Array | None = None,
    unroll: int | bool = 1,
) -> tuple[jax.Array, jax.Array, Carry]:
    """(raw_TxBxH, dropped_TxBxH, new carry): the last layer's outputs (time-major) before
    and after its output dropout. Dropout acts only with `masks` (`dropout_masks`; None:
    evaluation), where they say:

    - Zaremba's (`keep_prob`): a new mask at every step, on the embedding output and on
      each layer's output, never on the recurrent connections;
    - AWD's: `dropout_embedding` on whole words, locked masks (the same at every step)
      on the embedding output (`dropout_input`), between layers (`dropout_hidden`) and on
      the last layer's output (`dropout_output`), and `weight_drop` on each `w_h`;
    - lamb's: the same three sites with a mask per step (`dropout_per_step`), and
      `dropout_state` on each layer's h before its step (see cells.cell_step).

    With `skip_connection` (lamb's SkipMultiRNNCell) the output is the sum of every
    layer's undropped outputs, and the output dropout acts on that sum. With
    `drop_state_probability` (lamb's) the rows of `masks["carry"]` not kept start from a
    zero carry.

    `length`, `unroll`: see lstm_layer.
    """
    L = cfg.num_layers
    if masks is None:
        masks = dropout_masks(None, cfg, *inputs_BxT.shape)
    locked_rates = [cfg.dropout_input, *[cfg.dropout_hidden] * (L - 1), cfg.dropout_output]
    if masks["carry"] is not None:
        carry = jax.tree.map(lambda a: jnp.where(masks["carry"][:, None], a, 0.0), carry)

    def drop(site, x_TxBxH):
        x_TxBxH = regularisers.apply_keep(masks["step"][site], x_TxBxH, cfg.keep_prob)
        return regularisers.apply_locked(masks["locked"][site], x_TxBxH, locked_rates[site])

    x_TxBxH = regularisers.apply_word_keep(
        masks["words"], params["embedding"], inputs_BxT, cfg.dropout_embedding
    )
    x_TxBxH = drop(0, x_TxBxH)
    new_carry, summed_TxBxH = [], 0.0
    for i, (layer, layer_carry) in enumerate(zip(params["lstm"], carry)):
        if cfg.cell == "qrnn":
            layer_carry, raw_TxBxH = qrnn_layer(layer, layer_carry, x_TxBxH, i, cfg, masks, length)
        else:
            w_h = regularisers.apply_keep(masks["w_h"][i], layer["w_h"], 1.0 - cfg.weight_drop)
            layer_carry, raw_TxBxH = lstm_layer(
                {**layer, "w_h": w_h},
                layer_carry,
                x_TxBxH,
                cfg.constant_forget_bias,
                length=length,
                unroll=unroll,
                cap_input_gate=cfg.cap_input_gate,
                h_scale_BxH=regularisers.keep_scale(masks["state"][i], cfg.dropout_state),
            )
        new_carry.append(layer_carry)
        if cfg.skip_connection:
            summed_TxBxH = summed_TxBxH + raw_TxBxH
            if i == L - 1:
                raw_TxBxH = summed_TxBxH
        x_TxBxH = drop(i + 1, raw_TxBxH)
    return raw_TxBxH, x_TxBxH, new_carry


def qrnn_layer(layer, carry, x_TxBxI, i: int, cfg: ModelConfig, masks: dict, length):
    """Layer i of the QRNN with its masks: weight drop on its whole w (AWD's WeightDrop
    on the QRNN's linear map), zoneout on its forget gates (see lstm_lm/qrnn.py)."""
    w = regularisers.apply_keep(masks["w_h"][i], layer["w"], 1.0 - cfg.weight_drop)
    return qrnn.layer(
        {**layer, "w": w},
        carry,
        x_TxBxI,
        cfg.windows[i],
        length=length,
        output_gate=cfg.qrnn_output_gate,
        zoneout=cfg.zoneout,
        zoneout_keep=masks["zoneout"][i],
    )


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
    masks = dropout_masks(dropout_key, cfg, *inputs_BxT.shape)
    _, outputs_TxBxH, carry = layer_outputs(params, cfg, carry, inputs_BxT, masks, unroll=unroll)
    return outputs_TxBxH, carry


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
    masks = dropout_masks(dropout_key, cfg, *inputs_BxT.shape)
    _, outputs_TxBxH, carry = layer_outputs(params, cfg, carry, inputs_BxT, masks, unroll=unroll)
    return softmax.logits(params, cfg, outputs_TxBxH, masks["latent"]), carry


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
    temperature: jax.Array | None = None,
) -> tuple[jax.Array, Carry]:
    """(cost, new carry) for one batch; differentiable in `params`. `unroll`: see
    lstm_layer; `temperature`: see softmax."""
    masks = dropout_masks(dropout_key, cfg, *inputs_BxT.shape)
    _, outputs_TxBxH, carry = layer_outputs(params, cfg, carry, inputs_BxT, masks, unroll=unroll)
    log_probs_TxB = softmax.target_log_probs(
        params, cfg, outputs_TxBxH, targets_BxT.T, masks["latent"], temperature
    )
    return sequence_cost(log_probs_TxB), carry

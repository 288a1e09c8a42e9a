"""One update of ours is the update of each paper's own code, step for step.

For a tiny shape of each family's config, three or four training steps of `step.train_step` (the
trainer's objective and optimizer, built from the config as `train` builds them) from
the same weights, with the same dropout masks (drawn here and handed in) and the
recurrent carry threaded from step to step, equal a float64 reference written here from
the paper's code: the loss, where each regulariser acts, the clip, the decay, the
optimizer and its learning rate. Each line of a reference names the file and function it
follows. The papers' code does not install today (lamb needs TF 1, awd-lstm-lm and mos an
old PyTorch), so it is rewritten, in jax.numpy at float64 so that its gradient is taken
by autodiff; its optimizers are numpy.
"""

import functools
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lstm_lm import config as config_lib
from lstm_lm import model, optim
from lstm_lm import step as step_lib

VOCAB, BATCH, STEPS, UPDATES = 13, 3, 5, 3


def tiny(name: str, hidden_sizes, embedding_size, **overrides):
    """configs/<name>.py at a tiny shape, with `overrides` ({"group.key": value})."""
    config = importlib.import_module(f"configs.{name}").get_config()
    config.model.update(
        num_layers=len(hidden_sizes), hidden_sizes=hidden_sizes, embedding_size=embedding_size
    )
    config.train.update(batch_size=BATCH, num_steps=STEPS)
    config.update_from_flattened_dict(overrides)
    config_lib.validate(config)
    return config


def draw_masks(rng, cfg: model.ModelConfig) -> dict:
    """Keep masks (True: kept) in model.dropout_masks' layout, drawn by numpy."""

    def keep(shape, keep_prob):
        return None if keep_prob >= 1.0 else jnp.asarray(rng.random(shape) < keep_prob)

    L, B, T = cfg.num_layers, BATCH, STEPS
    widths, sizes = (cfg.input_size, *cfg.layer_sizes), cfg.layer_sizes
    rates = [cfg.dropout_input, *[cfg.dropout_hidden] * (L - 1), cfg.dropout_output]
    per = (T, B) if cfg.dropout_per_step else (B,)
    return {
        "step": [keep((T, B, w), cfg.keep_prob) for w in widths],
        "locked": [keep((*per, w), 1 - r) for w, r in zip(widths, rates)],
        "words": keep((cfg.vocab_size,), 1 - cfg.dropout_embedding),
        "w_h": [keep((h, 4 * h), 1 - cfg.weight_drop) for h in sizes],
        "state": [keep((B, h), 1 - cfg.dropout_state) for h in sizes],
        "carry": keep((B,), 1 - cfg.drop_state_probability),
        "latent": keep((B, cfg.mos_experts * cfg.input_size), 1 - cfg.dropout_latent),
    }


def problem(config, updates=UPDATES, seed=0):
    """(cfg, initial params, [(inputs_BxT, targets_BxT, masks)] for each update)."""
    cfg = config_lib.model_config(config, VOCAB)
    params = model.init_params(jax.random.PRNGKey(seed), cfg)
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, VOCAB, (updates, BATCH, STEPS + 1))
    batches = [(t[:, :-1], t[:, 1:], draw_masks(rng, cfg)) for t in tokens]
    return cfg, params, batches


def ours(config, cfg, params, batches, lengths=None, switch_before=0):
    """Our parameters after each update, each update's metrics, and the weights the run
    would evaluate after the last: the trainer's objective and optimizer (one epoch a
    step, so a schedule's epochs are steps), batch k of `lengths[k]` real steps when
    given, averaging switched on before update `switch_before` (counted from 1) if > 0."""
    optimizer, _ = optim.from_config(config, steps_per_epoch=1)
    state = optim.TrainState(
        jnp.zeros((), jnp.int32), params, optimizer.init(params), jax.random.PRNGKey(0)
    )
    step = jax.jit(
        functools.partial(
            step_lib.train_step,
            cfg=cfg,
            optimizer=optimizer,
            objective=step_lib.objective_of(config),
        )
    )
    carry, after, metrics = model.zero_carry(cfg, BATCH), [], []
    for k, (inputs, targets, masks) in enumerate(batches, start=1):
        length = None if lengths is None else jnp.int32(lengths[k - 1])
        if k == switch_before:
            state = optim.start_averaging(state)
        state, carry, m = step(state, carry, inputs, targets, length, masks=masks)
        after.append(state.params)
        metrics.append(jax.tree.map(float, m))
    return after, metrics, optim.eval_params(state)


def reference(loss_fns, update, cfg, params, batches):
    """The reference's parameters after each update, each update's cross-entropy (TF's
    cost) and its optimizer's final state: `loss_fns[k](params, carry, inputs, targets,
    masks) -> (loss, (xe, carry))` (or one for every update) differentiated at float64,
    `update(params, grads, opt_state, t) -> (params, opt_state)` on the lists of leaves,
    the carry threaded from the training forward pass to the next."""
    if callable(loss_fns):
        loss_fns = [loss_fns] * len(batches)
    with jax.enable_x64(True):
        p = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
        carry = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), model.zero_carry(cfg, BATCH))
        after, xes, opt_state = [], [], None
        grad_fns = {}  # one compiled program per loss function
        for t, ((inputs, targets, masks), loss_fn) in enumerate(zip(batches, loss_fns), start=1):
            if loss_fn not in grad_fns:
                grad_fns[loss_fn] = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))
            (_, (xe, carry)), grads = grad_fns[loss_fn](p, carry, inputs, targets, masks)
            leaves, treedef = jax.tree.flatten(p)
            new, opt_state = update(
                [np.asarray(a) for a in leaves],
                [np.asarray(g) for g in jax.tree.leaves(grads)],
                opt_state,
                t,
            )
            p = jax.tree.unflatten(treedef, [jnp.asarray(a) for a in new])
            after.append(jax.tree.map(np.asarray, p))
            xes.append(float(xe))
    return after, xes, opt_state


def assert_same_updates(got_after, want_after, params, rtol, atol):
    """Each update's change of every parameter from the start, ours against the reference."""
    start = jax.tree.leaves(jax.tree.map(lambda a: np.asarray(a, np.float64), params))
    for k, (got, want) in enumerate(zip(got_after, want_after), start=1):
        for g, w, p0 in zip(jax.tree.leaves(got), jax.tree.leaves(want), start):
            np.testing.assert_allclose(
                np.asarray(g, np.float64) - p0, w - p0, rtol=rtol, atol=atol, err_msg=f"update {k}"
            )


def assert_matches_reference(
    config, cfg, params, batches, loss_fns, update, lengths=None, switch_before=0
):
    """Ours (`ours`) against the reference (`reference`): the clip acts at every update
    (so that where it acts is tested), and the cross-entropies and every parameter's
    changes agree. Returns (our weights to evaluate, the reference optimizer's state)."""
    got, metrics, evaluated = ours(config, cfg, params, batches, lengths, switch_before)
    want, xes, opt_state = reference(loss_fns, update, cfg, params, batches)
    assert all(m["grad_norm"] > config.optim.max_grad_norm for m in metrics)
    np.testing.assert_allclose([m["cross_entropy"] for m in metrics], xes, rtol=1e-5)
    assert_same_updates(got, want, params, rtol=1e-5, atol=1e-6)
    return evaluated, opt_state


def clip_by_global_norm(grads, max_norm):
    """TF's tf.clip_by_global_norm and torch's clip_grad_norm: g * max_norm / max(norm,
    max_norm), the norm over every gradient; (clipped, norm)."""
    norm = np.sqrt(sum(np.sum(g**2) for g in grads))
    return [g * max_norm / max(norm, max_norm) for g in grads], norm


def dropped(x, keep, rate):
    """Inverted dropout of `x` by a keep mask (broadcast), as TF's tf.nn.dropout and
    torch's F.dropout scale: kept entries / (1 - rate)."""
    return x if keep is None else jnp.where(keep, x / (1 - rate), 0.0)


def log_softmax_pick(logits_TxBxV, targets_BxT):
    """log p(target) [T, B]."""
    log_probs = jax.nn.log_softmax(logits_TxBxV, axis=-1)
    return jnp.take_along_axis(log_probs, targets_BxT.T[..., None], -1)[..., 0]


# ---- TF / Zaremba: tensorflow/models tutorials/rnn/ptb/ptb_word_lm.py ----------------


def tf_loss(p, carry, inputs_BxT, targets_BxT, masks, *, cfg):
    """PTBModel's cost on one batch (ptb_word_lm.py, PTBModel._build_rnn_graph_lstm and
    __init__), our layout: w_x, w_h the halves of BasicLSTMCell's kernel, gates i, j, f, o."""
    keep = cfg.keep_prob
    x_TxBxE = p["embedding"][inputs_BxT.T]  # tf.nn.embedding_lookup(embedding, input_data)
    x_TxBxE = dropped(x_TxBxE, masks["step"][0], 1 - keep)  # tf.nn.dropout(inputs, keep_prob)
    state, out = list(carry), x_TxBxE
    for li, layer in enumerate(p["lstm"]):
        hs = []
        for t in range(STEPS):
            c, h = state[li]
            # BasicLSTMCell.call: concat([inputs, h]) @ kernel + bias, split i, j, f, o
            gates = (
                jnp.concatenate([out[t], h], -1) @ jnp.concatenate([layer["w_x"], layer["w_h"]])
                + layer["b"]
            )
            i, j, f, o = jnp.split(gates, 4, -1)
            c = c * jax.nn.sigmoid(f + cfg.forget_bias) + jax.nn.sigmoid(i) * jnp.tanh(j)
            h = jnp.tanh(c) * jax.nn.sigmoid(o)
            state[li] = (c, h)
            hs.append(h)
        # DropoutWrapper(output_keep_prob=keep_prob): a new mask at every call (step)
        out = dropped(jnp.stack(hs), masks["step"][li + 1], 1 - keep)
    logits = out @ p["softmax"]["w"].T + p["softmax"]["b"]  # xw_plus_b(output, w, b)
    # sequence_loss(average_across_timesteps=False, average_across_batch=True), reduce_sum
    cost = -jnp.sum(jnp.mean(log_softmax_pick(logits, targets_BxT), axis=1))
    return cost, (cost, state)


def tf_sgd(lr_of_epoch, max_norm):
    """ptb_word_lm.py: clip_by_global_norm(tf.gradients(cost, tvars), max_grad_norm), then
    GradientDescentOptimizer(lr), lr = learning_rate * lr_decay ** max(i + 1 - max_epoch, 0)
    for epoch i (one step an epoch here)."""

    def update(params, grads, state, t):
        grads, _ = clip_by_global_norm(grads, max_norm)
        lr = lr_of_epoch(t - 1)
        return [w - lr * g for w, g in zip(params, grads)], state

    return update


@pytest.mark.parametrize("name", ["ptb_small", "ptb_medium"])
def test_a_zaremba_update_is_ptb_word_lms(name):
    """ptb_small and ptb_medium (with dropout): TF's cost, its dropout masks drawn at
    every step, the constant forget bias, the clip and the staircase of rates."""
    config = tiny(
        name,
        (6, 5),
        4,
        **{
            "model.forget_bias": 1.0,  # BasicLSTMCell's default; the tutorial passes 0
            "optim.max_grad_norm": 0.5,
            "optim.full_lr_epochs": 2,
            "optim.lr_decay": 0.5,
        },
    )
    cfg, params, batches = problem(config)
    o = config.optim
    assert_matches_reference(
        config,
        cfg,
        params,
        batches,
        functools.partial(tf_loss, cfg=cfg),
        tf_sgd(
            lambda i: o.learning_rate * o.lr_decay ** max(i + 1 - o.full_lr_epochs, 0),
            o.max_grad_norm,
        ),
    )


# ---- lamb / the Mogrifier: google-deepmind/lamb ----------------------------------------


def lamb_loss(p, carry, inputs_BxT, targets_BxT, masks, *, cfg, l2_penalty):
    """lamb's LM.loss on one batch (lm.py, LM.lm_1 and LM._build_loss; cell.py,
    make_lstm_column; tiled_lstm.py, TiledLSTMCell.__call__ and _do_feature_masking;
    skip_multi_rnn_cell.py, SkipMultiRNNCell.__call__), our layout: lamb's fused matrix
    W = concat([w_x, w_h]) with its tiles j, o, f, i at our columns i, j, f, o."""
    L = cfg.num_layers
    rates = [cfg.dropout_input, *[cfg.dropout_hidden] * (L - 1)]
    embedded_TxBxE = p["embedding"][inputs_BxT.T]  # lm.py: embedding_lookup
    # training.py, _make_train_feed: each row's whole state zeroed with drop_state_probability
    row_B1 = masks["carry"][:, None]
    state, outputs = [(c * row_B1, h * row_B1) for c, h in carry], []
    for t in range(STEPS):  # static_rnn over max_time_steps
        cur_inp, output = embedded_TxBxE[t], None
        for li, layer in enumerate(p["lstm"]):
            c, h = state[li]
            # cell.py: layer 0's input_transform is input dropout, the others' inter-layer
            # dropout; shared_mask_dropout=False: a new mask at every step
            x = dropped(cur_inp, masks["locked"][li][t], rates[li])
            # the state_transform: one mask per layer for every step of the batch
            y = dropped(h, masks["state"][li], cfg.dropout_state)
            for round_, rnd in enumerate(layer.get("mogrifier", [])):  # _do_feature_masking
                if round_ % 2 == 0:  # transforming_x
                    x = x * 2 * jax.nn.sigmoid((y @ rnd["u"]) @ rnd["v"] + rnd["b"])
                else:
                    y = y * 2 * jax.nn.sigmoid((x @ rnd["u"]) @ rnd["v"] + rnd["b"])
            W = jnp.concatenate([layer["w_x"], layer["w_h"]])
            i_pre, j_pre, f_pre, o_pre = jnp.split(
                jnp.concatenate([x, y], -1) @ W + layer["b"], 4, -1
            )
            f, j = jax.nn.sigmoid(f_pre), jnp.tanh(j_pre)  # no constant forget bias
            o, i = jax.nn.sigmoid(o_pre), jax.nn.sigmoid(i_pre)
            c = f * c + jnp.minimum(1 - f, i) * j  # cap_input_gate
            h = o * jnp.tanh(c)
            state[li] = (c, h)
            cur_inp = h  # SkipMultiRNNCell: the next layer's input is this layer's h
            output = h if output is None else output + h  # ... and the output their sum
        outputs.append(output)
    # lm.py: tf.nn.dropout(outputs_t_b_h, 1 - output_dropout), a new mask per element
    out_TxBxH = dropped(jnp.stack(outputs), masks["locked"][L], cfg.dropout_output)
    logits = out_TxBxH @ p["embedding"].T + p["softmax"]["b"]  # shared embeddings
    xe = jnp.mean(-jnp.sum(log_softmax_pick(logits, targets_BxT), axis=0))  # sum T, mean B
    l2 = sum(jnp.sum(v**2) / 2 for v in jax.tree.leaves(p))  # tf.nn.l2_loss, every variable
    return xe + l2_penalty * l2, (xe, state)


def tf_adam(lr, b2, eps, max_norm):
    """lm.py: clip_gradients_in_scope(grads of the whole loss, max_grad_norm), then
    utils.get_optimizer("rmsprop"): tf.train.AdamOptimizer(lr, beta1=0, beta2, epsilon),
    whose step is lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)."""

    def update(params, grads, v, t):
        grads, _ = clip_by_global_norm(grads, max_norm)
        v = [np.zeros_like(g) for g in grads] if v is None else v
        v = [b2 * v_ + (1 - b2) * g**2 for v_, g in zip(v, grads)]
        lr_t = lr * np.sqrt(1 - b2**t)  # beta1 = 0: m_t = g, 1 - b1^t = 1
        return [w - lr_t * g / (np.sqrt(v_) + eps) for w, g, v_ in zip(params, grads, v)], v

    return update


def test_a_mogrifier_update_is_lambs():
    """mogrifier_ptb: the summed cross-entropy plus L2 in the objective, clipped as one,
    TF's Adam with beta1 = 0, the trained forget bias, the capped input gate, per-step and
    state dropout masks, the skip connection. Adam's eps is raised so that its
    normalisation does not amplify float32 rounding of near-zero gradients (and TF's eps,
    added before the bias correction, then differs from optax's by far)."""
    config = tiny(
        "mogrifier_ptb",
        (6, 6),
        6,
        **{
            "model.mogrifier_rank": 2,
            "optim.max_grad_norm": 1.0,
            "optim.eps": 1e-3,
            "optim.l2_penalty": 0.05,  # large enough to move the step at this size
            "model.drop_state_probability": 0.3,  # so that some rows are reset
        },
    )
    cfg, params, batches = problem(config)
    o = config.optim
    assert_matches_reference(
        config,
        cfg,
        params,
        batches,
        functools.partial(lamb_loss, cfg=cfg, l2_penalty=o.l2_penalty),
        tf_adam(o.learning_rate, o.b2, o.eps, o.max_grad_norm),
    )


# ---- AWD-LSTM: salesforce/awd-lstm-lm; the mixture of softmaxes: zihangdai/mos ---------


def awd_loss(p, carry, inputs_BxT, targets_BxT, masks, *, cfg, length, alpha, beta):
    """AWD-LSTM's loss on one batch of `length` steps (model.py, RNNModel.forward;
    embed_regularize.py, embedded_dropout; locked_dropout.py, LockedDropout; weight_drop.py,
    WeightDrop; main.py, train), or with softmax="mos" the mixture of softmaxes' (mos'
    model.py, RNNModel.forward; main.py, train). Our layout: torch.nn.LSTM's weight_ih^T,
    weight_hh^T are w_x, w_h, its b_ih, b_hh are b, b_h, and its chunks i, f, g, o are our
    columns i, f, j, o."""
    L = cfg.num_layers
    inputs_BxT, targets_BxT = inputs_BxT[:, :length], targets_BxT[:, :length]
    # embedded_dropout: mask [V, 1] ~ bernoulli(1 - dropoute) / (1 - dropoute), times weight
    scale_V = dropped(jnp.ones(cfg.vocab_size), masks["words"], cfg.dropout_embedding)
    emb = (p["embedding"] * scale_V[:, None])[inputs_BxT.T]
    # LockedDropout: one mask [1, B, H] for every step
    raw_output = dropped(emb, masks["locked"][0], cfg.dropout_input)
    state, raw_outputs = list(carry), []
    for li, layer in enumerate(p["lstm"]):
        # WeightDrop: weight_hh_l0 = F.dropout(weight_hh_l0_raw), one mask per forward
        w_hh = dropped(layer["w_h"], masks["w_h"][li], cfg.weight_drop)
        c, h = state[li]
        hs = []
        for t in range(length):  # torch.nn.LSTM
            gates = raw_output[t] @ layer["w_x"] + layer["b"] + h @ w_hh + layer["b_h"]
            i, g, f, o = jnp.split(gates, 4, -1)
            c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
            h = jax.nn.sigmoid(o) * jnp.tanh(c)
            hs.append(h)
        state[li] = (c, h)
        raw_output = jnp.stack(hs)
        raw_outputs.append(raw_output)
        if li != L - 1:  # lockdrop(raw_output, dropouth)
            raw_output = dropped(raw_output, masks["locked"][li + 1], cfg.dropout_hidden)
    output = dropped(raw_output, masks["locked"][L], cfg.dropout_output)  # lockdrop(.., dropout)
    if cfg.softmax == "mos":  # mos' model.py
        mos = p["softmax"]
        latent = jnp.tanh(output @ mos["latent"]["w"] + mos["latent"]["b"])  # self.latent
        latent = dropped(latent, masks["latent"], cfg.dropout_latent)  # lockdrop(.., dropoutl)
        T, B = latent.shape[:2]
        logit = latent.reshape(T, B, cfg.mos_experts, -1) @ p["embedding"].T + mos["b"]
        prior = jax.nn.softmax(output @ mos["prior"], -1)  # self.prior: no bias
        prob = jnp.sum(jax.nn.softmax(logit, -1) * prior[..., None], axis=-2)
        log_prob = jnp.log(prob + 1e-8)  # torch.log(prob.add_(1e-8))
        picked = jnp.take_along_axis(log_prob, targets_BxT.T[..., None], -1)[..., 0]
    else:  # the tied decoder; SplitCrossEntropyLoss without splits: a full softmax
        picked = log_softmax_pick(output @ p["embedding"].T + p["softmax"]["b"], targets_BxT)
    raw_loss = -jnp.mean(picked)  # the mean over the batch's tokens
    loss = raw_loss + alpha * jnp.mean(output**2)  # AR on dropped_rnn_hs[-1]
    loss = loss + beta * jnp.mean((raw_outputs[-1][1:] - raw_outputs[-1][:-1]) ** 2)  # TAR
    return loss, (-jnp.sum(picked) / picked.shape[1], state)


def torch_sgd_then_asgd(lr, weight_decay, max_norm, length_scales, switch_before):
    """main.py: clip_grad_norm_(params, clip); the group's lr set to lr * seq_len / bptt
    before each step; torch.optim.SGD(weight_decay) until the switch, then
    torch.optim.ASGD(t0=0, lambd=0, weight_decay), whose step uses the rate `eta` it took
    from the group at its previous step, and whose average `ax` is copied at its first
    two steps (mu = 1) and is a running mean from the third (mu = 1 / (step - t0))."""

    def update(params, grads, asgd, t):
        grads, _ = clip_by_global_norm(grads, max_norm)
        grads = [g + weight_decay * w for g, w in zip(grads, params)]
        group_lr = lr * length_scales[t - 1]
        if t < switch_before:  # SGD
            return [w - group_lr * g for w, g in zip(params, grads)], asgd
        if asgd is None:  # ASGD's state, made at its first step
            asgd = {"step": 0, "eta": group_lr, "mu": 1.0, "ax": None}
        asgd["step"] += 1
        params = [w - asgd["eta"] * g for w, g in zip(params, grads)]
        if asgd["mu"] != 1:
            asgd["ax"] = [a + (w - a) * asgd["mu"] for a, w in zip(asgd["ax"], params)]
        else:
            asgd["ax"] = [w.copy() for w in params]
        asgd["eta"], asgd["mu"] = group_lr, 1 / max(1, asgd["step"])
        return params, asgd

    return update


@pytest.mark.parametrize("name", ["awd_lstm_ptb", "mos_ptb"])
def test_an_awd_update_is_awd_lstms_and_mos(name):
    """awd_lstm_ptb and mos_ptb: variable lengths scaling the rate, embedding, locked and
    weight dropout, AR and TAR on the token-mean loss, the clip, weight decay after it,
    torch's two LSTM biases, SGD switching to torch's ASGD before the third of four
    updates; the averaged weights after the last."""
    shapes = {
        "awd_lstm_ptb": ((6, 6, 4), 4, {}),
        "mos_ptb": ((6, 6, 5), 4, {"model.mos_experts": 3}),
    }
    hidden_sizes, embedding_size, extra = shapes[name]
    overrides = {"optim.weight_decay": 1e-3, "optim.max_grad_norm": 0.2, **extra}
    config = tiny(name, hidden_sizes, embedding_size, **overrides)
    lengths = (5, 3, 5, 3)  # two reference programs; the ASGD steps take 1 then 1, not 0.6
    cfg, params, batches = problem(config, updates=len(lengths))
    o = config.optim
    update = torch_sgd_then_asgd(
        o.learning_rate, o.weight_decay, o.max_grad_norm, [n / STEPS for n in lengths], 3
    )
    loss_fns = {
        n: functools.partial(awd_loss, cfg=cfg, length=n, alpha=o.ar_alpha, beta=o.tar_beta)
        for n in set(lengths)
    }
    averaged, asgd = assert_matches_reference(
        config,
        cfg,
        params,
        batches,
        [loss_fns[n] for n in lengths],
        update,
        lengths,
        switch_before=3,
    )
    ax = jax.tree.unflatten(jax.tree.structure(params), asgd["ax"])
    assert_same_updates([averaged], [ax], params, rtol=1e-5, atol=1e-6)

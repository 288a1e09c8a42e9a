"""Adam and the learning-rate drops against numpy written from their definitions; the
Mogrifier's and the optimizer's keys refused by name."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lstm_lm import config as config_lib
from lstm_lm import optim


def numpy_clipped_and_decayed(grads, params, max_norm, weight_decay):
    """The gradient (a list of arrays) in float64, clipped to `max_norm` by its global
    norm, plus weight_decay * params: what every optimizer below steps on."""
    grads = [np.asarray(g, np.float64) for g in grads]
    norm = np.sqrt(sum(np.sum(g**2) for g in grads))
    return [g * min(1.0, max_norm / norm) + weight_decay * p for g, p in zip(grads, params)]


def numpy_adam(grads_seq, params, lr, b1, b2, eps, max_norm, weight_decay):
    """Kingma & Ba's Algorithm 1 in float64, on numpy_clipped_and_decayed's gradient, one
    list of arrays per step."""
    params = [np.asarray(p, np.float64) for p in params]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    for t, grads in enumerate(grads_seq, start=1):
        grads = numpy_clipped_and_decayed(grads, params, max_norm, weight_decay)
        m = [b1 * m_ + (1 - b1) * g for m_, g in zip(m, grads)]
        v = [b2 * v_ + (1 - b2) * g**2 for v_, g in zip(v, grads)]
        m_hat = [m_ / (1 - b1**t) for m_ in m]
        v_hat = [v_ / (1 - b2**t) for v_ in v]
        params = [p - lr * mh / (np.sqrt(vh) + eps) for p, mh, vh in zip(params, m_hat, v_hat)]
    return params


def random_problem(seed, shapes, scales):
    """float32 parameters {"a", "b"} of `shapes` and one gradient per scale, N(0, 1) x scale."""
    rng = np.random.default_rng(seed)
    params = {k: rng.normal(size=shape).astype(np.float32) for k, shape in zip("ab", shapes)}
    grads_seq = [
        {k: rng.normal(size=shape).astype(np.float32) * s for k, shape in zip("ab", shapes)}
        for s in scales
    ]
    return params, grads_seq


def as_lists(params, grads_seq):
    """random_problem's parameters and gradients as the numpy references take them: a
    list [a, b] of the parameters, and one such list per step's gradient."""
    return [params["a"], params["b"]], [[g["a"], g["b"]] for g in grads_seq]


def apply_steps(opt, params, grads_seq, step_kwargs=None):
    """The parameters after one of opt's updates per gradient (step_kwargs[i]: update's
    extra arguments for step i)."""
    state, got = opt.init(params), params
    for i, grads in enumerate(grads_seq):
        updates, state = opt.update(grads, state, got, **(step_kwargs[i] if step_kwargs else {}))
        got = jax.tree.map(lambda p, u: p + u, got, updates)
    return got


def assert_matches(got, want, rtol, atol):
    np.testing.assert_allclose(got["a"], want[0], rtol=rtol, atol=atol)
    np.testing.assert_allclose(got["b"], want[1], rtol=rtol, atol=atol)


@pytest.mark.parametrize("b1", [0.0, 0.9])  # 0: lamb's "rmsprop"
@pytest.mark.parametrize("weight_decay", [0.0, 1e-2])
def test_adam_steps_match_numpy_adam(b1, weight_decay):
    # Gradients scaled by 3.0 and 2.0 are clipped.
    params, grads_seq = random_problem(0, [(3, 4), (5,)], (0.1, 3.0, 1.0, 0.01, 2.0))
    lr, b2, eps, max_norm = 0.01, 0.99, 1e-6, 4.0
    schedule = optim.lr_schedule(lr, 1.0, 1, steps_per_epoch=10)
    opt = optim.make_optimizer(
        max_norm, schedule, weight_decay=weight_decay, adam=dict(b1=b1, b2=b2, eps=eps)
    )
    got = apply_steps(opt, params, grads_seq)
    param_list, grad_lists = as_lists(params, grads_seq)
    want = numpy_adam(grad_lists, param_list, lr, b1, b2, eps, max_norm, weight_decay)
    assert_matches(got, want, rtol=1e-5, atol=1e-7)


def numpy_adagrad(grads_seq, params, lr, eps, max_norm, weight_decay, scales):
    """Torch7's optim.adagrad (and torch.optim.Adagrad) in float64 on
    numpy_clipped_and_decayed's gradient: v += g^2, p -= lr * scale * g / (sqrt(v) + eps),
    `scales[t]` the step's length scale."""
    params = [np.asarray(p, np.float64) for p in params]
    v = [np.zeros_like(p) for p in params]
    for grads, scale in zip(grads_seq, scales):
        grads = numpy_clipped_and_decayed(grads, params, max_norm, weight_decay)
        v = [v_ + g**2 for v_, g in zip(v, grads)]
        params = [p - lr * scale * g / (np.sqrt(v_) + eps) for p, g, v_ in zip(params, grads, v)]
    return params


@pytest.mark.parametrize("weight_decay, length_scaled", [(0.0, False), (1e-2, True)])
def test_adagrad_steps_match_torchs_adagrad_in_numpy(weight_decay, length_scaled):
    params, grads_seq = random_problem(1, [(3, 4), (5,)], (0.1, 3.0, 1.0, 0.01, 2.0))
    lr, eps, max_norm = 0.1, 1e-5, 4.0
    scales = [0.5, 1.0, 1.5, 0.8, 1.2] if length_scaled else [1.0] * 5
    opt = optim.make_optimizer(
        max_norm,
        lambda step: lr,
        weight_decay=weight_decay,
        length_scaled=length_scaled,
        adagrad=dict(eps=eps),
    )
    kwargs = [dict(length_scale=s) for s in scales] if length_scaled else None
    got = apply_steps(opt, params, grads_seq, kwargs)
    param_list, grad_lists = as_lists(params, grads_seq)
    want = numpy_adagrad(grad_lists, param_list, lr, eps, max_norm, weight_decay, scales)
    assert_matches(got, want, rtol=1e-5, atol=1e-7)


def test_the_config_builds_adagrad():
    config = config_lib.default_config()
    config.optim.update(name="adagrad", eps=1e-10, learning_rate=0.1)
    config_lib.validate(config)
    optimizer, _ = optim.from_config(config, steps_per_epoch=4)
    state = optimizer.init({"w": jnp.zeros(2)})
    assert any(isinstance(s, optim.AdagradState) for s in state)


def test_adam_with_lengths_scales_its_step_by_the_length():
    params = {"w": jnp.ones(3)}
    grads = {"w": jnp.array([0.5, -1.0, 2.0])}
    opt = optim.make_optimizer(
        10.0, lambda step: 0.1, length_scaled=True, adam=dict(b1=0.9, b2=0.999, eps=1e-8)
    )
    plain, _ = opt.update(grads, opt.init(params), params)
    scaled, _ = opt.update(grads, opt.init(params), params, length_scale=1.5)
    np.testing.assert_allclose(scaled["w"], 1.5 * plain["w"], rtol=1e-6)
    np.testing.assert_allclose(plain["w"], -0.1 * np.sign(grads["w"]), rtol=1e-5)  # step 1


def test_learning_rate_drops_by_ten_after_each_given_epoch():
    steps_per_epoch = 5
    schedule = optim.lr_schedule(2.0, 1.0, 1, steps_per_epoch=steps_per_epoch, drop_epochs=(2, 4))
    want = {1: 2.0, 2: 2.0, 3: 0.2, 4: 0.2, 5: 0.02, 6: 0.02}  # epochs counted from 1
    for epoch, lr in want.items():
        for step in ((epoch - 1) * steps_per_epoch, epoch * steps_per_epoch - 1):
            assert float(schedule(step)) == pytest.approx(lr, rel=1e-6)
    staircase = optim.lr_schedule(1.0, 0.5, 2, steps_per_epoch=1, drop_epochs=(1,))
    assert [float(staircase(e)) for e in range(3)] == pytest.approx([1.0, 0.1, 0.05])


def test_the_config_builds_adam_and_the_drops():
    config = config_lib.default_config()
    config.optim.update(name="adam", b1=0.0, learning_rate=1e-3, lr_decay=1.0)
    config.optim.lr_drop_epochs = (3,)
    optimizer, schedule = optim.from_config(config, steps_per_epoch=4)
    assert float(schedule(11)) == pytest.approx(1e-3) and float(schedule(12)) == pytest.approx(1e-4)
    state = optimizer.init({"w": jnp.zeros(2)})
    assert any(
        type(s).__name__ == "ScaleByAdamState"
        for s in jax.tree.leaves(state, is_leaf=lambda s: type(s).__name__ == "ScaleByAdamState")
    )


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("model.mogrifier_rounds", -1, r"config.model.mogrifier_rounds must be >= 0, got -1"),
        ("model.mogrifier_rank", -2, r"config.model.mogrifier_rank must be >= 0"),
        ("model.cell", "gru", r"config.model.cell must be one of lstm, mogrifier, qrnn, got 'gru'"),
        (
            "optim.name",
            "adadelta",
            r"config.optim.name must be one of sgd, adam, adagrad, got 'adadelta'",
        ),
        ("optim.b1", 1.0, r"config.optim.b1 is a decay rate in \[0, 1\)"),
        ("optim.b2", -0.5, r"config.optim.b2 must be >= 0"),
        ("optim.lr_drop_epochs", (5, 3), r"lr_drop_epochs=\(5, 3\) must be increasing"),
        ("optim.lr_drop_epochs", (2, 2), r"lr_drop_epochs=\(2, 2\) must be increasing"),
        ("optim.lr_drop_epochs", (0, 3), r"each must be an epoch number >= 1, got 0"),
        ("train.test_weights", "first", r"config.train.test_weights must be one of last, best"),
    ],
)
def test_bad_optimizer_and_cell_values_are_refused_by_name(key, value, message):
    config = config_lib.default_config()
    config.model.cell = "mogrifier" if key.startswith("model.mogrifier") else config.model.cell
    group, name = key.split(".")
    config[group][name] = value
    with pytest.raises(config_lib.ConfigError, match=message):
        config_lib.validate(config)


@pytest.mark.parametrize(
    "model_overrides, message",
    [
        (dict(mogrifier_rounds=5), r"mogrifier_rounds=5 is an option of the Mogrifier cell, but "),
        (dict(mogrifier_rank=4), r"mogrifier_rank=4 is an option of the Mogrifier cell"),
        (
            dict(cell="mogrifier", mogrifier_rounds=2, mogrifier_rank=7, hidden_sizes=(8, 6)),
            r"mogrifier_rank=7 is larger than the smallest matrix it factorises \(6 wide",
        ),
    ],
)
def test_mogrifier_options_that_cannot_apply_are_refused(model_overrides, message):
    config = config_lib.default_config()
    config.model.update(model_overrides)
    with pytest.raises(config_lib.ConfigError, match=message):
        config_lib.validate(config)


def numpy_awd_sgd(grads_seq, lengths, params, lr, base_length, max_norm, weight_decay):
    """AWD-LSTM's step in float64, as its main.py and torch.optim.SGD make it: the gradient
    clipped to `max_norm` (clip_grad_norm_, on the loss's gradient alone), the learning
    rate set to lr * length / base_length for the batch, then SGD's step with
    weight_decay: d_p = g + weight_decay * p, p <- p - lr * d_p."""
    params = [np.asarray(p, np.float64) for p in params]
    for grads, length in zip(grads_seq, lengths):
        d_p = numpy_clipped_and_decayed(grads, params, max_norm, weight_decay)
        params = [p - lr * length / base_length * d for p, d in zip(params, d_p)]
    return params


def test_sgd_with_weight_decay_and_lengths_is_awds_torch_step_clip_first():
    # Gradients scaled by 5.0 and 8.0 are clipped.
    params, grads_seq = random_problem(1, [(4, 3), (3,)], (0.05, 5.0, 0.5, 8.0))
    lengths, base, lr, max_norm = [70, 35, 74, 12], 70, 30.0, 0.25
    weight_decay = 0.012  # large, so that decaying before the clip would show
    schedule = optim.lr_schedule(lr, 1.0, 1, steps_per_epoch=10)
    opt = optim.make_optimizer(max_norm, schedule, weight_decay=weight_decay, length_scaled=True)
    scales = [dict(length_scale=jnp.float32(length / base)) for length in lengths]
    got = apply_steps(opt, params, grads_seq, scales)
    param_list, grad_lists = as_lists(params, grads_seq)
    want = numpy_awd_sgd(grad_lists, lengths, param_list, lr, base, max_norm, weight_decay)
    assert_matches(got, want, rtol=2e-5, atol=1e-6)

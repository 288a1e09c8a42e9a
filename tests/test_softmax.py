"""The output layers against float64 numpy written from their papers: the adaptive
softmax (Grave et al. 2017, PyTorch's nn.AdaptiveLogSoftmaxWithLoss) and the mixture of
softmaxes (Yang et al. 2018, zihangdai/mos); finite differences; the config's refusals;
each layer through training, evaluation, scoring, sampling, the cache and dynamic
evaluation."""

import dataclasses
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import TINY, run_main, write_corpus
from test_model import assert_gradients_match_finite_differences

from lstm_lm import adaptive, inference, model, softmax, symbols
from lstm_lm import config as config_lib

V, H, T, B = 12, 8, 3, 2


def as64(tree):
    return jax.tree.map(lambda a: np.asarray(a, np.float64), tree)


def np_log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def setup(seed=0, **overrides):
    """(cfg, params, h [T, B, H], targets [T, B]) for a 1-layer model of size H."""
    cfg = model.ModelConfig(vocab_size=V, hidden_size=H, num_layers=1, init_scale=0.3, **overrides)
    params = model.init_params(jax.random.PRNGKey(seed), cfg)
    h_TxBxH = jax.random.normal(jax.random.PRNGKey(seed + 1), (T, B, H))
    targets_TxB = jax.random.randint(jax.random.PRNGKey(seed + 2), (T, B), 0, V)
    return cfg, params, h_TxBxH, targets_TxB


def numpy_adaptive(params, cutoffs, h_NxH):
    """p [N, V] word by word: a head word has its head probability; a word of cluster i
    has p_head(cluster i's token) * p_cluster_i(word), the cluster scoring h projected
    through its two bias-free matrices."""
    p = as64(params["softmax"])
    head_logits = h_NxH @ p["head"]["w"].T + p["head"].get("b", 0.0)
    head = np.exp(np_log_softmax(head_logits))
    bounds = [*cutoffs, V]
    probs = np.zeros((len(h_NxH), V))
    for word in range(V):
        if word < cutoffs[0]:
            probs[:, word] = head[:, word]
            continue
        i = max(j for j in range(len(cutoffs)) if bounds[j] <= word)
        tail = p["tails"][i]
        scores = (h_NxH @ tail["proj"]) @ tail["w"].T
        in_cluster = np.exp(np_log_softmax(scores))[:, word - bounds[i]]
        probs[:, word] = head[:, cutoffs[0] + i] * in_cluster
    return probs


ADAPTIVE = [
    dict(softmax_cutoffs=(3,)),
    dict(softmax_cutoffs=(2, 5), softmax_head_bias=True),
    dict(softmax_cutoffs=(1, 4, 9), softmax_div_value=2.0),
]


@pytest.mark.parametrize("keys", ADAPTIVE)
def test_adaptive_softmax_matches_numpy_word_by_word_and_sums_to_one(keys):
    cfg, params, h_TxBxH, targets_TxB = setup(softmax="adaptive", **keys)
    want_NxV = numpy_adaptive(
        params, keys["softmax_cutoffs"], np.asarray(h_TxBxH, np.float64).reshape(-1, H)
    )
    log_probs = np.asarray(softmax.logits(params, cfg, h_TxBxH), np.float64).reshape(-1, V)
    np.testing.assert_allclose(np.exp(log_probs), want_NxV, rtol=2e-5, atol=1e-7)
    np.testing.assert_allclose(want_NxV.sum(-1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(np.exp(log_probs).sum(-1), 1.0, rtol=1e-5)
    # The training path never forms [T, B, V] and gives the same numbers at the targets.
    targets_N = np.asarray(targets_TxB).reshape(-1)
    got = np.asarray(softmax.target_log_probs(params, cfg, h_TxBxH, targets_TxB)).reshape(-1)
    want = np.log(want_NxV[np.arange(len(targets_N)), targets_N])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_adaptive_targets_in_every_cluster_and_at_every_boundary_are_scored_right():
    cfg, params, h_TxBxH, _ = setup(
        softmax="adaptive", softmax_cutoffs=(1, 4, 9), softmax_div_value=2.0
    )
    h_NxH = np.asarray(h_TxBxH, np.float64).reshape(-1, H)[:1].repeat(V, 0)
    want = np.log(np.diag(numpy_adaptive(params, (1, 4, 9), h_NxH)))  # word w in row w
    got = softmax.target_log_probs(
        params, cfg, jnp.asarray(h_NxH[None], jnp.float32), jnp.arange(V)[None]
    )
    np.testing.assert_allclose(np.asarray(got)[0], want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("in_tail", [0, 1, 2, 3, 4, 6])  # every row capacity of 6 rows
def test_each_cluster_scores_exactly_the_rows_whose_targets_it_holds(in_tail):
    cfg, params, h_TxBxH, _ = setup(softmax="adaptive", softmax_cutoffs=(3, 7))
    assert softmax.row_capacities(T * B) == [1, 2, 3, 6]
    rng = np.random.default_rng(in_tail)
    targets_N = rng.integers(0, 7, T * B)  # the head and the first cluster
    rows = rng.choice(T * B, in_tail, replace=False)
    targets_N[rows] = rng.integers(7, V, in_tail)  # these in the last cluster
    want = np.log(numpy_adaptive(params, (3, 7), np.asarray(h_TxBxH, np.float64).reshape(-1, H)))
    targets_TxB = jnp.asarray(targets_N.reshape(T, B))
    got = softmax.target_log_probs(params, cfg, h_TxBxH, targets_TxB)
    np.testing.assert_allclose(
        np.asarray(got).reshape(-1), want[np.arange(T * B), targets_N], rtol=1e-5, atol=1e-6
    )

    # Its gradient is the dense computation's (each cluster scored for every row).
    def dense(params):
        log_probs_TxBxV = softmax.logits(params, cfg, h_TxBxH)
        return jnp.sum(jnp.take_along_axis(log_probs_TxBxV, targets_TxB[..., None], -1))

    gathered = jax.grad(lambda p: jnp.sum(softmax.target_log_probs(p, cfg, h_TxBxH, targets_TxB)))
    for g, d in zip(jax.tree.leaves(gathered(params)), jax.tree.leaves(jax.grad(dense)(params))):
        np.testing.assert_allclose(g, d, rtol=1e-5, atol=1e-6)


def test_adaptive_parameters_have_pytorchs_shapes():
    cfg, params, *_ = setup(softmax="adaptive", softmax_cutoffs=(1, 4, 9), softmax_div_value=2.0)
    shapes = jax.tree.map(lambda a: a.shape, params["softmax"])
    assert shapes["head"] == {"w": (1 + 3, H)}  # the shortlist and one token per cluster
    # int(in_features // div_value ** (i + 1)): 4, 2, 1 wide; 3, 5 and 3 words.
    assert shapes["tails"] == [
        {"proj": (H, 4), "w": (3, 4)},
        {"proj": (H, 2), "w": (5, 2)},
        {"proj": (H, 1), "w": (3, 1)},
    ]
    assert "lstm" in params and set(params) == {"embedding", "lstm", "softmax"}


@pytest.mark.parametrize("name", ["adaptive", "mos"])
def test_the_training_cost_is_the_cross_entropy_of_the_whole_distribution(name):
    keys = ADAPTIVE[2] if name == "adaptive" else dict(mos_experts=3, embedding_size=5)
    cfg = model.ModelConfig(
        vocab_size=V, hidden_size=H, num_layers=2, init_scale=0.3, softmax=name, **keys
    )
    params = model.init_params(jax.random.PRNGKey(0), cfg)
    inputs_BxT = jax.random.randint(jax.random.PRNGKey(1), (B, T + 1), 0, V)
    carry = model.zero_carry(cfg, B)
    cost, _ = model.cost_fn(params, cfg, carry, inputs_BxT[:, :-1], inputs_BxT[:, 1:])
    log_probs_TxBxV, _ = model.forward(params, cfg, carry, inputs_BxT[:, :-1])
    p_TxBxV = np.exp(np.asarray(log_probs_TxBxV, np.float64))
    np.testing.assert_allclose(p_TxBxV.sum(-1), 1.0, rtol=1e-5)
    targets_TxB = np.asarray(inputs_BxT[:, 1:]).T
    at_targets = np.take_along_axis(p_TxBxV, targets_TxB[..., None], -1)[..., 0]
    np.testing.assert_allclose(float(cost), -np.log(at_targets).sum() / B, rtol=1e-5)


@pytest.mark.parametrize("name", ["adaptive", "mos"])
def test_output_layer_gradients_match_finite_differences(name):
    keys = ADAPTIVE[1] if name == "adaptive" else dict(mos_experts=2, embedding_size=5)
    cfg, params, h_TxBxH, targets_TxB = setup(softmax=name, **keys)
    with jax.enable_x64(True):
        params64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
        h64 = jnp.asarray(h_TxBxH, jnp.float64)

        @jax.jit
        def cost(p):
            return -jnp.sum(softmax.target_log_probs(p, cfg, h64, targets_TxB))

        assert_gradients_match_finite_differences(cost, params64, per_leaf=4)


def numpy_mos(params, h_NxH, K, E, mask_NxKE=None):
    """p [N, V] of zihangdai/mos's mixture: latent = tanh(h W + b) (times its dropout
    mask), K contexts of E, each a softmax through the decoder, weighted by the prior
    softmax(h W_prior) and summed in probability space."""
    p = as64(params)
    mos = p["softmax"]
    latent = np.tanh(h_NxH @ mos["latent"]["w"] + mos["latent"]["b"])
    if mask_NxKE is not None:
        latent = latent * mask_NxKE
    decoder = mos.get("w", p["embedding"])
    expert_probs = np.exp(np_log_softmax(latent.reshape(-1, K, E) @ decoder.T + mos["b"]))
    prior = np.exp(np_log_softmax(h_NxH @ mos["prior"]))
    return np.einsum("nk,nkv->nv", prior, expert_probs)


@pytest.mark.parametrize("tied", [False, True])
def test_mixture_of_softmaxes_matches_numpy_and_is_normalised(tied):
    K, E = 3, 5  # tied: the decoder is the embedding [V, E], E != H as MoS's 280 vs 620
    cfg, params, h_TxBxH, targets_TxB = setup(
        softmax="mos", mos_experts=K, embedding_size=E, tie_embeddings=tied, init="awd"
    )
    assert ("w" in params["softmax"]) is not tied
    shapes = jax.tree.map(lambda a: a.shape, params["softmax"])
    assert shapes["prior"] == (H, K) and shapes["latent"] == {"w": (H, K * E), "b": (K * E,)}
    assert not params["softmax"]["b"].any()  # init="awd": the decoder bias is zero, as mos
    h_NxH = np.asarray(h_TxBxH, np.float64).reshape(-1, H)
    want_NxV = numpy_mos(params, h_NxH, K, E)
    log_probs = np.asarray(softmax.logits(params, cfg, h_TxBxH), np.float64).reshape(-1, V)
    np.testing.assert_allclose(np.exp(log_probs), want_NxV, rtol=2e-5, atol=1e-7)
    np.testing.assert_allclose(np.exp(log_probs).sum(-1), 1.0, rtol=1e-5)
    got = softmax.target_log_probs(params, cfg, h_TxBxH, targets_TxB)
    np.testing.assert_allclose(
        np.asarray(got).reshape(-1),
        np.log(want_NxV[np.arange(T * B), np.asarray(targets_TxB).reshape(-1)]),
        rtol=1e-5,
    )


def test_one_expert_is_the_full_softmax_of_the_latent_context():
    cfg, params, h_TxBxH, _ = setup(softmax="mos", mos_experts=1, embedding_size=5)
    mos = params["softmax"]
    latent_TxBxE = jnp.tanh(h_TxBxH @ mos["latent"]["w"] + mos["latent"]["b"])
    full = {"embedding": params["embedding"], "softmax": {"w": mos["w"], "b": mos["b"]}}
    want = jax.nn.log_softmax(latent_TxBxE @ full["softmax"]["w"].T + full["softmax"]["b"])
    np.testing.assert_allclose(softmax.logits(params, cfg, h_TxBxH), want, rtol=1e-5, atol=1e-6)


def test_the_latent_dropout_mask_is_locked_over_time_and_drawn_only_in_training():
    K, E, rate = 2, 5, 0.5
    cfg, params, h_TxBxH, _ = setup(
        softmax="mos", mos_experts=K, embedding_size=E, dropout_latent=rate
    )
    key = jax.random.PRNGKey(7)
    keep_BxKE = model.dropout_masks(key, cfg, B, T)["latent"]
    assert keep_BxKE.shape == (B, K * E) and 0 < (~np.asarray(keep_BxKE)).mean() < 1
    mask_TxBxKE = np.broadcast_to(np.where(keep_BxKE, 1 / (1 - rate), 0.0), (T, B, K * E))
    h_NxH = np.asarray(h_TxBxH, np.float64).reshape(-1, H)
    want = numpy_mos(params, h_NxH, K, E, mask_TxBxKE.reshape(-1, K * E))
    got = np.exp(np.asarray(softmax.logits(params, cfg, h_TxBxH, keep_BxKE), np.float64))
    np.testing.assert_allclose(got.reshape(-1, V), want, rtol=2e-5, atol=1e-7)
    plain = numpy_mos(params, h_NxH, K, E)
    evaluated = np.exp(np.asarray(softmax.logits(params, cfg, h_TxBxH), np.float64))
    np.testing.assert_allclose(evaluated.reshape(-1, V), plain, rtol=2e-5, atol=1e-7)
    assert not np.allclose(want, plain)


def test_a_training_step_draws_the_latent_mask_from_its_dropout_key():
    cfg = model.ModelConfig(
        vocab_size=V, hidden_size=H, num_layers=1, init_scale=0.3, softmax="mos", mos_experts=2
    )
    params = model.init_params(jax.random.PRNGKey(0), cfg)
    inputs_BxT = jax.random.randint(jax.random.PRNGKey(1), (B, T + 1), 0, V)
    carry = model.zero_carry(cfg, B)

    def cost(cfg, key):
        return float(
            model.cost_fn(params, cfg, carry, inputs_BxT[:, :-1], inputs_BxT[:, 1:], key)[0]
        )

    dropped = dataclasses.replace(cfg, dropout_latent=0.5)
    plain = cost(cfg, None)
    assert cost(cfg, jax.random.PRNGKey(3)) == plain  # no dropout configured: no change
    assert cost(dropped, None) == plain  # evaluation: no mask
    assert cost(dropped, jax.random.PRNGKey(3)) != cost(dropped, jax.random.PRNGKey(4))


def test_the_adaptive_softmax_has_no_output_matrix_to_look_at():
    _, params, *_ = setup(softmax="adaptive", softmax_cutoffs=(3,))
    with pytest.raises(ValueError, match=r"no one matrix of word vectors.*--which=input"):
        softmax.softmax_weight(params)


def config_with(**model_keys):
    config = config_lib.default_config()
    config.model.update(model_keys)
    return config


@pytest.mark.parametrize(
    "keys, message",
    [
        (dict(softmax="hierarchical"), r"config.model.softmax must be one of full, adaptive, mos"),
        (dict(softmax="adaptive"), r"needs config.model.softmax_cutoffs"),
        (dict(softmax="adaptive", softmax_cutoffs=(500, 200)), r"must be increasing positive"),
        (dict(softmax="adaptive", softmax_cutoffs=(200, 200)), r"must be increasing positive"),
        (dict(softmax="adaptive", softmax_cutoffs=(0, 200)), r"must be increasing positive"),
        (dict(softmax="adaptive", softmax_cutoffs=(2.5,)), r"word counts such as"),
        (
            dict(softmax="adaptive", softmax_cutoffs=(50,), softmax_div_value=0.0),
            r"softmax_div_value must be > 0",
        ),
        (
            dict(softmax="adaptive", softmax_cutoffs=(5, 50), softmax_div_value=20.0),
            r"projections \[10, 0\] wide.*each must be >= 1",
        ),
        (
            dict(softmax="adaptive", softmax_cutoffs=(50,), tie_embeddings=True),
            r"softmax='adaptive' cannot be tied",
        ),
        (
            dict(softmax_cutoffs=(50,)),
            r"softmax_cutoffs=\(50,\) is an option of config.model.softmax='adaptive'",
        ),
        (
            dict(softmax_head_bias=True),
            r"softmax_head_bias=True is an option of config.model.softmax='adaptive'",
        ),
        (dict(softmax="mos"), r"config.model.mos_experts must be >= 1, got 0"),
        (
            dict(softmax="adaptive", softmax_cutoffs=(50,), mos_experts=3),
            r"mos_experts=3 is an option of config.model.softmax='mos'",
        ),
        (
            dict(dropout_latent=0.2),
            r"dropout_latent=0.2 is an option of config.model.softmax='mos'",
        ),
        (
            dict(softmax="mos", mos_experts=2, dropout_latent=1.0),
            r"config.model.dropout_latent is a drop probability",
        ),
    ],
)
def test_bad_output_layer_settings_are_refused_by_name(keys, message):
    with pytest.raises(config_lib.ConfigError, match=message):
        config_lib.validate(config_with(**keys))


def test_cutoffs_must_leave_every_cluster_a_word_of_the_vocabulary():
    config = config_with(softmax="adaptive", softmax_cutoffs=(2000, 10000))
    config_lib.validate(config)  # the vocabulary's size is known once the data is read
    with pytest.raises(config_lib.ConfigError, match=r"each be below the vocabulary's size 10000"):
        config_lib.model_config(config, 10000)
    assert config_lib.model_config(config, 10001).softmax_cutoffs == (2000, 10000)


def test_a_tied_mixture_needs_no_last_layer_of_the_embeddings_size():
    config = config_with(softmax="mos", mos_experts=3, tie_embeddings=True, embedding_size=50)
    config_lib.validate(config)  # the decoder reads the E-wide latent contexts
    with pytest.raises(config_lib.ConfigError, match="tie_embeddings needs the last layer"):
        config_lib.validate(config_with(tie_embeddings=True, embedding_size=50))


LAYERS = {
    "adaptive": [
        "--config.model.softmax=adaptive",
        "--config.model.softmax_cutoffs=(8,20)",
        "--config.model.softmax_div_value=2",
        "--config.model.hidden_size=8",  # the clusters 4 and 2 wide
    ],
    "mos": [
        "--config.model.softmax=mos",
        "--config.model.mos_experts=3",
        "--config.model.dropout_latent=0.1",
    ],
}


def unigram_perplexity(data_dir) -> float:
    """The test file's perplexity under the training file's word frequencies (<eos> one
    word a line), the floor of a model that learns no context."""
    counts = {}
    for word in symbols.read_words(data_dir / "ptb.train.txt"):
        counts[word] = counts.get(word, 0) + 1
    total = sum(counts.values())
    test = symbols.read_words(data_dir / "ptb.test.txt")
    return math.exp(-sum(math.log(counts[w] / total) for w in test) / len(test))


@pytest.mark.slow
@pytest.mark.parametrize("name", LAYERS)
def test_each_output_layer_trains_evaluates_scores_samples_and_adapts(name, tmp_path):
    """One ptb_tiny run through main.py, then its workdir read in this process as
    main.py's modes read it."""
    data_dir = write_corpus(tmp_path / "data")
    workdir = tmp_path / "run"
    args = [f"--workdir={workdir}", f"--config.data.data_dir={data_dir}", *TINY, *LAYERS[name]]
    proc = run_main(tmp_path, *args)
    assert proc.returncode == 0, proc.stderr
    results = json.loads((workdir / "results.json").read_text())
    # The corpus is words drawn at random: what there is to learn is their frequencies
    # (38.8 here), against 42 for a model that learned nothing (42 symbols, uniform).
    assert 1 < results["test_perplexity"] < 1.02 * unigram_perplexity(data_dir)

    run = inference.load_run(workdir)
    assert run.cfg.softmax == name
    evaluated = inference.evaluate_run(run, None, None)
    assert evaluated["valid_perplexity"] == pytest.approx(results["valid_perplexity"], rel=1e-6)
    assert evaluated["test_perplexity"] == pytest.approx(results["test_perplexity"], rel=1e-6)
    scored = inference.score_file(run, data_dir / "ptb.test.txt")
    assert scored["perplexity"] == pytest.approx(results["test_perplexity"], rel=1e-5)

    log_p_V = inference.next_word_log_probs(run.params, np.array([1, 2, 3]), cfg=run.cfg)
    assert float(jnp.exp(log_p_V).sum()) == pytest.approx(1.0, rel=1e-5)
    text = inference.sample_text(run, "w1 w2", 15, temperature=1.0, top_k=5, greedy=False, seed=0)
    assert text.split()[:2] == ["w1", "w2"] and set(text.split()) <= set(run.vocab)

    cache = adaptive.Cache(window=20, lam=0.2, theta=1.0)
    adapted = inference.evaluate_run(
        run, None, None, cache=cache, dynamic=adaptive.Dynamic(learning_rate=1e-3)
    )
    assert 1 < adapted["test_perplexity"] < 50
    # Nothing mixed in, nothing learned: the plain scores; ranks within the vocabulary.
    ids = np.arange(40) % len(run.vocab)
    idle = dict(
        cache=adaptive.Cache(20, lam=0.0, theta=1.0), dynamic=adaptive.Dynamic(0.0, rms=False)
    )
    plain = inference.score_ids(run, ids)
    assert inference.score_ids(run, ids, **idle) == pytest.approx(plain, rel=1e-5)
    _, ranks = inference.word_scores(run, ids, **idle, ranks=True)
    assert ranks.min() >= 1 and ranks.max() <= len(run.vocab)


def test_the_mos_config_sets_zihangdais_values_and_the_papers_parameter_count():
    from configs import mos_ptb

    config = mos_ptb.get_config()
    config_lib.validate(config)
    cfg = config_lib.model_config(config, 10_000)
    assert (cfg.mos_experts, cfg.dropout_latent, cfg.layer_sizes, cfg.input_size) == (
        15,
        0.29,
        (960, 960, 620),
        280,
    )
    assert cfg.tie_embeddings and config.train.test_weights == "best" and config.seed == 28
    shapes = jax.eval_shape(lambda: model.init_params(jax.random.PRNGKey(0), cfg))
    # Yang et al. (2018), Table 1: 22M (PyTorch's two LSTM biases add 10,160 more).
    assert model.parameter_count(shapes) == pytest.approx(22e6, rel=0.03)

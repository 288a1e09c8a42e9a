"""The config: every key with its default and meaning, its checks, and the model config.

A config file (`configs/*.py`) starts from `default_config()` and sets what differs;
`--config.GROUP.KEY=VALUE` overrides any key from the command line. The groups:

    data    which corpus, where it is, how its vocabulary is built
    model   the network's shape and regularisation: exactly `model.ModelConfig`'s fields
            but the vocabulary size, so `model_config` is `ModelConfig(**config.model, V)`
    optim   learning rate, its schedule, gradient clipping
    train   epochs, batch layout, jitted-call size, checkpoints, devices
    eval    the test pass's layout

The defaults are the Zaremba et al. (2014) small model on the Penn Treebank with TF's
`ptb_word_lm.py` settings; the comment after a key names the TF flag it replaces.
"""

import math
import re

import jax
import ml_collections

from lstm_lm import data, model, softmax


class ConfigError(ValueError):
    """A config value makes no sense, alone or for the data; the message names the key."""


def default_config() -> ml_collections.ConfigDict:
    """Every key the code reads, with its default."""
    config = ml_collections.ConfigDict()
    config.seed = 0  # parameters and dropout masks

    config.data = ml_collections.ConfigDict()
    config.data.name = "ptb"  # one of data.DATASETS, or "dir": train/valid/test files of yours
    config.data.data_dir = ""  # '' = $LSTM_LM_DATA_DIR/<dataset folder>, else ~/.cache/lstm_lm/...
    config.data.url = ""  # '' = the dataset's own mirrors, tried in order
    config.data.archive_sha256 = ""  # '' = the published one; another for an archive of yours
    config.data.train_file = ""  # '' = the dataset's own file names (dir: train.txt, ...)
    config.data.valid_file = ""
    config.data.test_file = ""
    config.data.min_count = 1  # training words seen fewer times become <unk>
    config.data.max_vocab_size = 0  # keep the most frequent words only (0 = all), <unk> included
    # What a symbol is: "word", "char" or "byte" (lstm_lm/symbols.py). A named corpus has its
    # own (ptb_char and text8 "char", enwik8 "byte"); "dir" is read at this level. At char
    # and byte level bits per symbol (bpc) are reported beside every perplexity.
    config.data.level = "word"

    config.model = ml_collections.ConfigDict()
    config.model.num_layers = 2  # TF: num_layers
    config.model.hidden_size = 200  # TF: hidden_size; every layer's, unless hidden_sizes is set
    config.model.hidden_sizes = ()  # one size per layer, e.g. (1150, 1150, 400); () = hidden_size
    config.model.embedding_size = 0  # 0 = the first layer's hidden size (TF: hidden_size)
    config.model.tie_embeddings = False  # the softmax weight is the embedding (one array)
    config.model.init_scale = 0.1  # TF: init_scale; every parameter ~ U(-s, s)
    config.model.keep_prob = 1.0  # TF: keep_prob; dropout on non-recurrent connections
    config.model.forget_bias = 0.0  # added to the forget gate, as BasicLSTMCell's
    config.model.trainable_forget_bias = False  # lamb: forget_bias starts the trained bias
    config.model.hidden_bias = False  # PyTorch's nn.LSTM (AWD, MoS): a second bias, b_hh
    # AWD-LSTM (Merity et al. 2017); the comment names its flag. Rates: drop probabilities.
    config.model.init = "uniform"  # "uniform": all U(+-init_scale); "awd", "lamb": see model
    config.model.dropout_input = 0.0  # dropouti: locked dropout on the embedding output
    config.model.dropout_hidden = 0.0  # dropouth: locked dropout between layers
    config.model.dropout_output = 0.0  # dropout: locked dropout on the last layer's output
    config.model.dropout_embedding = 0.0  # dropoute: whole words dropped from the embedding
    config.model.weight_drop = 0.0  # wdrop: DropConnect on each hidden-to-hidden matrix
    # The Mogrifier LSTM (Melis et al. 2020); the comment names lamb's flag.
    config.model.cell = "lstm"  # "lstm" or "mogrifier": see lstm_lm/cells.py
    config.model.mogrifier_rounds = 0  # feature_mask_rounds: R rounds of gating x and h
    config.model.mogrifier_rank = 0  # feature_mask_rank: rounds' matrices as rank-k products
    config.model.cap_input_gate = False  # cap_input_gate: c = f*c + min(1 - f, i)*j
    # The QRNN (Bradbury et al. 2017) as salesforce/pytorch-qrnn, awd-lstm-lm's fast model.
    config.model.qrnn_windows = ()  # window: each layer's, 1 or 2; () = awd's 2 then 1s
    config.model.qrnn_output_gate = True  # output_gate: h = O * c (fo-pooling)
    config.model.zoneout = 0.0  # zoneout: on the forget gates, in training
    config.model.dropout_state = 0.0  # state_dropout: on h before each step, a mask a batch
    config.model.dropout_per_step = False  # not shared_mask_dropout: the input, hidden and
    #                                        output dropouts draw a new mask at every step
    config.model.skip_connection = False  # lstm_skip_connection: the output sums every layer's h
    config.model.drop_state_probability = 0.0  # the same: a row's carry zeroed before a step
    # The output layer: see lstm_lm/softmax.py. Adaptive keys as PyTorch's
    # nn.AdaptiveLogSoftmaxWithLoss; MoS's as zihangdai/mos's flags.
    config.model.softmax = "full"  # "full", "adaptive" or "mos"
    config.model.softmax_cutoffs = ()  # adaptive: cutoffs, e.g. (20000, 60000); each < V
    config.model.softmax_div_value = 4.0  # adaptive: div_value; cluster i is H // div**i wide
    config.model.softmax_head_bias = False  # adaptive: head_bias
    config.model.mos_experts = 0  # mos: n_experts, K softmaxes mixed
    config.model.dropout_latent = 0.0  # mos: dropoutl, locked dropout on the latent contexts

    config.optim = ml_collections.ConfigDict()
    config.optim.learning_rate = 1.0  # TF: learning_rate
    config.optim.lr_decay = 0.5  # TF: lr_decay; a factor per epoch after full_lr_epochs
    config.optim.full_lr_epochs = 4  # TF: max_epoch; epochs at the full learning rate
    config.optim.max_grad_norm = 5.0  # TF: max_grad_norm; clip by the global norm
    # AWD-LSTM's objective and optimizer; the comment names its flag.
    config.optim.token_mean_loss = False  # cross-entropy averaged over all tokens, not TF's
    #                                       sum over time averaged over the batch
    config.optim.ar_alpha = 0.0  # alpha: AR, mean square of the dropped last-layer output
    config.optim.tar_beta = 0.0  # beta: TAR, mean square of its raw step-to-step change
    config.optim.weight_decay = 0.0  # wdecay: L2, added to the clipped gradient
    # lamb's (google-deepmind/lamb); the comment names its flag.
    config.optim.l2_penalty = 0.0  # l2_penalty: + l2 * sum(w^2)/2 in the objective, clipped
    config.optim.tf_adam = False  # TF's AdamOptimizer: eps added to sqrt(v) before correcting
    config.optim.average_after_best = 0  # trigger_averaging_turns: epochs after the best valid
    config.optim.average_at_epoch = 0  # trigger_averaging_at_the_latest: averaging from then
    config.optim.nonmono = 0  # nonmono: NT-ASGD's window; 0 = plain SGD throughout
    config.optim.torch_asgd = False  # torch.optim.ASGD's mean: the 2nd iterate replaces the 1st
    # Today's recipes (lamb's optimizer_type; AWD's --optimizer and --when).
    config.optim.name = "sgd"  # "sgd", "adam" (lamb's "rmsprop": b1 = 0) or "adagrad"
    config.optim.b1 = 0.9  # adam: decay of the gradient's running mean
    config.optim.b2 = 0.999  # adam: decay of its squares' running mean
    config.optim.eps = 1e-8  # adam: added to the root of the latter; adagrad: to the sum's root
    config.optim.lr_drop_epochs = ()  # --when: the learning rate / 10 after each of these

    config.train = ml_collections.ConfigDict()
    config.train.num_epochs = 13  # TF: max_max_epoch
    config.train.batch_size = 20  # TF: batch_size; also the valid pass's
    config.train.num_steps = 20  # TF: num_steps; unrolled steps, also the valid pass's
    config.train.max_batches_per_epoch = 0  # 0 = the whole training set each epoch
    config.train.steps_per_call = 50  # batches per jitted call; signals are seen between calls
    config.train.checkpoint_every_steps = 500  # 0 = only at the end of each epoch
    config.train.keep_checkpoints = 3  # the newest this many are kept
    config.train.num_devices = 0  # the batch's rows are split across this many; 0 = all
    config.train.random_lengths = False  # AWD's variable BPTT around num_steps (data.py)
    config.train.length_bucket = 5  # random lengths are padded up to a multiple of this
    config.train.finetune_from = ""  # a trained run's workdir: fine-tune its weights (AWD)
    config.train.test_weights = "last"  # test the "last" weights or the "best" on valid

    config.eval = ml_collections.ConfigDict()
    config.eval.valid_batch_size = 0  # 0 = train.batch_size; the valid pass's steps: num_steps
    config.eval.test_batch_size = 1  # TF's test protocol: one stream,
    config.eval.test_num_steps = 1  # one step at a time
    # TF's layout scores each row's whole windows only; AWD's and lamb's evaluations score
    # every target of the rows (the tail past the last window in one shorter batch).
    config.eval.score_every_target = False
    # lamb's eval_softmax_temperature=-x: at every validation, the softmax (inverse)
    # temperature from 1.06 down to x with the best perplexity on ~50,000 validation
    # targets multiplies the logits of that validation and of the test; 0 = off (1).
    config.eval.temperature_lowest = 0.0
    return config


POSITIVE = (
    "model.num_layers",
    "model.hidden_size",
    "model.init_scale",
    "optim.learning_rate",
    "optim.lr_decay",
    "optim.max_grad_norm",
    "train.num_epochs",
    "train.batch_size",
    "train.num_steps",
    "train.steps_per_call",
    "train.keep_checkpoints",
    "eval.test_batch_size",
    "eval.test_num_steps",
    "data.min_count",
    "train.length_bucket",
)
NON_NEGATIVE = (
    "model.embedding_size",
    "optim.full_lr_epochs",
    "train.max_batches_per_epoch",
    "train.checkpoint_every_steps",
    "train.num_devices",
    "data.max_vocab_size",
    "optim.ar_alpha",
    "optim.tar_beta",
    "optim.weight_decay",
    "optim.l2_penalty",
    "optim.nonmono",
    "optim.average_after_best",
    "optim.average_at_epoch",
    "eval.valid_batch_size",
    "model.mogrifier_rounds",
    "model.mogrifier_rank",
    "optim.eps",
)
RATES = (  # drop probabilities, in [0, 1)
    "model.dropout_input",
    "model.dropout_hidden",
    "model.dropout_output",
    "model.dropout_embedding",
    "model.weight_drop",
    "model.dropout_latent",
    "model.dropout_state",
    "model.drop_state_probability",
    "model.zoneout",
)
INITS = ("uniform", "awd", "lamb")
CELLS = ("lstm", "mogrifier", "qrnn")
SOFTMAXES = ("full", "adaptive", "mos")
OPTIMIZERS = ("sgd", "adam", "adagrad")
TEST_WEIGHTS = ("last", "best")


def get(config: ml_collections.ConfigDict, key: str):
    """config["group.key"]: the value at a dotted path."""
    for part in key.split("."):
        config = config[part]
    return config


def check_number(key: str, value, lowest: float, strict: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"config.{key} must be a number, got {value!r}.")
    if not math.isfinite(value):
        raise ConfigError(f"config.{key} must be finite, got {value!r}.")
    if value < lowest or (strict and value == lowest):
        raise ConfigError(
            f"config.{key} must be {'>' if strict else '>='} {lowest}, got {value!r}."
        )


def validate(config: ml_collections.ConfigDict) -> None:
    """Raise ConfigError naming the key and value of the first nonsensical setting."""
    for key in POSITIVE:
        check_number(key, get(config, key), 0, strict=True)
    for key in NON_NEGATIVE:
        check_number(key, get(config, key), 0, strict=False)
    if not 0.0 < config.model.keep_prob <= 1.0:
        raise ConfigError(
            f"config.model.keep_prob must be in (0, 1], got {config.model.keep_prob!r}."
        )
    for key in RATES:
        check_number(key, get(config, key), 0, strict=False)
        if get(config, key) >= 1.0:
            raise ConfigError(
                f"config.{key} is a drop probability in [0, 1), got {get(config, key)!r}."
            )
    for key, choices in [
        ("model.init", INITS),
        ("model.cell", CELLS),
        ("model.softmax", SOFTMAXES),
        ("optim.name", OPTIMIZERS),
        ("train.test_weights", TEST_WEIGHTS),
    ]:
        if get(config, key) not in choices:
            raise ConfigError(
                f"config.{key} must be one of {', '.join(choices)}, got {get(config, key)!r}."
            )
    for key in ("optim.b1", "optim.b2"):
        check_number(key, get(config, key), 0, strict=False)
        if get(config, key) >= 1.0:
            raise ConfigError(f"config.{key} is a decay rate in [0, 1), got {get(config, key)!r}.")
    validate_lr_drops(config.optim.lr_drop_epochs)
    if config.data.name not in (*data.DATASETS, "dir"):
        names = ", ".join(sorted([*data.DATASETS, "dir"]))
        raise ConfigError(f"config.data.name must be one of {names}, got {config.data.name!r}.")
    if config.data.name == "dir" and not config.data.data_dir:
        raise ConfigError(
            "config.data.name='dir' needs config.data.data_dir: the folder of your text."
        )
    validate_level(config.data)
    digest = config.data.archive_sha256
    if digest and (config.data.name == "dir" or not re.fullmatch(r"[0-9a-f]{64}", digest)):
        raise ConfigError(
            "config.data.archive_sha256 must be the 64 lowercase hex digits of the SHA-256 of "
            f"a dataset's archive (not of name 'dir', which downloads nothing), got {digest!r}."
        )
    validate_model(config.model)
    validate_recipes(config)
    validate_qrnn(config.model)
    validate_cell(config.model)
    validate_softmax(config.model)
    validate_devices(config.train)


def validate_level(data_config: ml_collections.ConfigDict) -> None:
    """data.level is a level, and a named corpus's own."""
    level = data_config.level
    if level not in data.LEVELS:
        raise ConfigError(
            f"config.data.level must be one of {', '.join(data.LEVELS)}, got {level!r}."
        )
    dataset = data.DATASETS.get(data_config.name)
    if dataset and dataset.level != level:
        same = sorted(n for n, d in data.DATASETS.items() if d.level == level)
        others = f"{', '.join(same)} or " if same else ""
        raise ConfigError(
            f"config.data.name={data_config.name!r} is a {dataset.level}-level corpus: set "
            f"--config.data.level={dataset.level}, or name a {level}-level one ({others}"
            f"'dir', your own text read at that level), got config.data.level={level!r}."
        )


def validate_model(model_config: ml_collections.ConfigDict) -> None:
    sizes = tuple(model_config.hidden_sizes)
    if sizes and len(sizes) != model_config.num_layers:
        raise ConfigError(
            f"config.model.hidden_sizes={sizes} has {len(sizes)} sizes for "
            f"config.model.num_layers={model_config.num_layers}: give one per layer."
        )
    for size in sizes:
        check_number("model.hidden_sizes", size, 0, strict=True)
    if model_config.tie_embeddings and model_config.softmax == "full":
        sizes = sizes or (model_config.hidden_size,) * model_config.num_layers
        embedding_size = model_config.embedding_size or sizes[0]
        if sizes[-1] != embedding_size:
            raise ConfigError(
                f"config.model.tie_embeddings needs the last layer's size ({sizes[-1]}) to "
                f"equal the embedding size ({embedding_size}): set config.model.hidden_sizes "
                "so that the last one equals config.model.embedding_size."
            )


def validate_recipes(config: ml_collections.ConfigDict) -> None:
    """The keys of the papers' own code where they can act: a skip connection over layers
    of one size, lamb's initialisation of tied output layers, lamb's temperature search
    for a full softmax or a mixture, TF's Adam with Adam, torch's ASGD with SGD."""
    m = config.model
    sizes = tuple(m.hidden_sizes) or (m.hidden_size,) * m.num_layers
    if m.skip_connection and len(set(sizes)) > 1:
        raise ConfigError(
            f"config.model.skip_connection sums the layers' outputs, which needs layers of one "
            f"size, got config.model.hidden_sizes={sizes}; make them equal or set "
            "config.model.skip_connection=False."
        )
    if m.init == "lamb" and (m.softmax == "adaptive" or not m.tie_embeddings):
        raise ConfigError(
            "config.model.init='lamb' draws lamb's tied output layers (a full softmax or a "
            f"mixture of softmaxes), got config.model.softmax={m.softmax!r}, "
            f"config.model.tie_embeddings={m.tie_embeddings}; set tie_embeddings=True, or "
            "another init."
        )
    lowest = config.eval.temperature_lowest
    check_number("eval.temperature_lowest", lowest, 0, strict=False)
    if lowest > 1.06 or (lowest and m.softmax == "adaptive"):
        raise ConfigError(
            f"config.eval.temperature_lowest={lowest!r}: lamb's search tries temperatures "
            "from 1.06 down to it, for a full softmax or a mixture; set it in (0, 1.06], or "
            "0 for none."
        )
    if config.optim.torch_asgd and config.optim.name != "sgd":
        raise ConfigError(
            f"config.optim.torch_asgd is torch.optim.ASGD's averaging of SGD, but "
            f"config.optim.name={config.optim.name!r}: set config.optim.name='sgd' or "
            "torch_asgd=False."
        )
    if config.optim.tf_adam and config.optim.name != "adam":
        raise ConfigError(
            f"config.optim.tf_adam is a form of Adam, but config.optim.name="
            f"{config.optim.name!r}: set config.optim.name='adam' or tf_adam=False."
        )


def validate_qrnn(m: ml_collections.ConfigDict) -> None:
    """The QRNN's keys: set only for its cell, a window per layer of 1 or 2; the LSTM's
    gate keys not set for it."""
    windows = tuple(m.qrnn_windows)
    own = {
        "qrnn_windows": windows,
        "zoneout": m.zoneout,
        "qrnn_output_gate": not m.qrnn_output_gate,
    }
    if m.cell != "qrnn":
        for key, value in own.items():
            if value:
                raise ConfigError(
                    f"config.model.{key}={m[key]!r} is an option of the QRNN, but "
                    f"config.model.cell={m.cell!r}: set config.model.cell='qrnn' or unset it."
                )
        return
    if windows and (len(windows) != m.num_layers or not set(windows) <= {1, 2}):
        raise ConfigError(
            f"config.model.qrnn_windows={windows}: give one window per layer "
            f"({m.num_layers}), each 1 or 2, or () for 2 on the first layer and 1 above."
        )
    lstm_only = {
        "cap_input_gate": m.cap_input_gate,
        "forget_bias": m.forget_bias,
        "trainable_forget_bias": m.trainable_forget_bias,
        "hidden_bias": m.hidden_bias,
        "dropout_state": m.dropout_state,
    }
    for key, value in lstm_only.items():
        if value:
            raise ConfigError(
                f"config.model.{key}={value!r} acts on the LSTM's gates; the QRNN "
                f"(config.model.cell='qrnn') has none of them: unset it."
            )
    if m.init == "lamb":
        raise ConfigError("config.model.init='lamb' draws LSTM layers; use 'uniform' or 'awd'.")


def validate_cell(model_config: ml_collections.ConfigDict) -> None:
    """The Mogrifier's keys: set only for its cell, with a rank that factorises."""
    for key in ("mogrifier_rounds", "mogrifier_rank"):
        value = model_config[key]
        if value and model_config.cell != "mogrifier":
            raise ConfigError(
                f"config.model.{key}={value} is an option of the Mogrifier cell, but "
                f"config.model.cell={model_config.cell!r}: set config.model.cell='mogrifier' "
                f"or config.model.{key}=0."
            )
    shape = model.ModelConfig(**model_config, vocab_size=1)  # its layer and input sizes
    sizes = shape.layer_sizes
    inputs = (shape.input_size, *sizes[:-1])
    smallest = min(min(i, h) for i, h in zip(inputs, sizes))
    if model_config.mogrifier_rounds and model_config.mogrifier_rank > smallest:
        raise ConfigError(
            f"config.model.mogrifier_rank={model_config.mogrifier_rank} is larger than the "
            f"smallest matrix it factorises ({smallest} wide: the layers' inputs {inputs} "
            f"and sizes {sizes}); use a rank of at most {smallest}, or 0 for full matrices."
        )


def validate_softmax(model_config: ml_collections.ConfigDict, vocab_size: int = 0) -> None:
    """The output layer's keys: each set only for its layer, with values it can use; with
    `vocab_size`, the cutoffs inside the vocabulary."""
    name = model_config.softmax
    for key, owner in [
        ("softmax_cutoffs", "adaptive"),
        ("softmax_head_bias", "adaptive"),
        ("mos_experts", "mos"),
        ("dropout_latent", "mos"),
    ]:
        if model_config[key] and name != owner:
            raise ConfigError(
                f"config.model.{key}={model_config[key]!r} is an option of "
                f"config.model.softmax={owner!r}, but config.model.softmax={name!r}: set the "
                f"one or unset the other."
            )
    if name == "mos":
        check_number("model.mos_experts", model_config.mos_experts, 1, strict=False)
    if name == "adaptive":
        validate_cutoffs(model_config, vocab_size)


def validate_cutoffs(model_config: ml_collections.ConfigDict, vocab_size: int) -> None:
    cutoffs = tuple(model_config.softmax_cutoffs)
    check_number("model.softmax_div_value", model_config.softmax_div_value, 0, strict=True)
    if model_config.tie_embeddings:
        raise ConfigError(
            "config.model.softmax='adaptive' cannot be tied: its clusters' word vectors are "
            "narrower than the embedding (that needs adaptive inputs). Set "
            "config.model.tie_embeddings=False."
        )
    if not cutoffs or any(isinstance(c, bool) or not isinstance(c, int) for c in cutoffs):
        raise ConfigError(
            f"config.model.softmax='adaptive' needs config.model.softmax_cutoffs, one or more "
            f"word counts such as (20000, 60000), got {cutoffs!r}."
        )
    if cutoffs[0] < 1 or list(cutoffs) != sorted(set(cutoffs)):
        raise ConfigError(
            f"config.model.softmax_cutoffs={cutoffs} must be increasing positive word counts."
        )
    if vocab_size and cutoffs[-1] >= vocab_size:
        raise ConfigError(
            f"config.model.softmax_cutoffs={cutoffs} must each be below the vocabulary's size "
            f"{vocab_size}, so that every cluster holds a word."
        )
    shape = model.ModelConfig(**model_config, vocab_size=max(vocab_size, cutoffs[-1] + 1))
    widths = softmax.tail_sizes(shape)
    if min(widths) < 1:
        raise ConfigError(
            f"config.model.softmax_div_value={model_config.softmax_div_value} leaves the "
            f"clusters' projections {widths} wide from the last layer's "
            f"{shape.layer_sizes[-1]}: each must be >= 1; use a smaller div_value or fewer "
            "cutoffs."
        )


def validate_lr_drops(epochs) -> None:
    epochs = tuple(epochs)
    for epoch in epochs:
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch <= 0:
            raise ConfigError(
                f"config.optim.lr_drop_epochs={epochs}: each must be an epoch number >= 1, "
                f"got {epoch!r}."
            )
    if list(epochs) != sorted(set(epochs)):
        raise ConfigError(
            f"config.optim.lr_drop_epochs={epochs} must be increasing, each epoch once."
        )


def validate_devices(train: ml_collections.ConfigDict) -> None:
    devices = jax.devices()
    if train.num_devices > len(devices):
        raise ConfigError(
            f"config.train.num_devices={train.num_devices}, but there are {len(devices)} "
            f"{devices[0].platform} devices; 0 uses all of them."
        )
    if jax.process_count() > 1 and train.num_devices not in (0, len(devices)):
        raise ConfigError(
            f"With {jax.process_count()} processes the mesh spans all {len(devices)} "
            "devices: set config.train.num_devices=0."
        )
    num_devices = train.num_devices or len(devices)
    if train.batch_size % num_devices:
        raise ConfigError(
            f"config.train.batch_size={train.batch_size} does not divide by the {num_devices} "
            "devices that share its rows; change batch_size or num_devices."
        )


def model_config(config: ml_collections.ConfigDict, vocab_size: int) -> model.ModelConfig:
    """The static model config: the `model` group and the vocabulary's size."""
    validate_softmax(config.model, vocab_size)
    return model.ModelConfig(**config.model, vocab_size=vocab_size)

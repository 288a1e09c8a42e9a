"""Zaremba et al. (2014) large model: 2x1500 LSTM, dropout 0.65, 55 epochs on the PTB.

    python main.py --config=configs/ptb_large.py

Published (valid / test perplexity): paper 82.2 / 78.4. Ours: not yet run in full; it
needs an accelerator (about 2.6 days on a 2-core CPU). A 100-step smoke run is in
experiments/ptb_medium_large_smoke/.
"""

from lstm_lm import config as config_lib


def get_config():
    config = config_lib.default_config()
    config.model.hidden_size = 1500  # TF: hidden_size
    config.model.init_scale = 0.04  # TF: init_scale
    config.model.keep_prob = 0.35  # TF: keep_prob
    config.optim.max_grad_norm = 10.0  # TF: max_grad_norm
    config.optim.full_lr_epochs = 14  # TF: max_epoch
    config.optim.lr_decay = 1 / 1.15  # TF: lr_decay
    config.train.num_steps = 35  # TF: num_steps
    config.train.num_epochs = 55  # TF: max_max_epoch
    return config

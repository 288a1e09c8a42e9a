"""Zaremba et al. (2014) medium model: 2x650 LSTM, dropout 0.5, 39 epochs on the PTB.

    python main.py --config=configs/ptb_medium.py

Published (valid / test perplexity): paper 86.2 / 82.7. Ours: not yet run in full; it
needs an accelerator (about 2,800 words/s on a 2-core CPU, some 11 hours). A 300-step
smoke run is in experiments/ptb_medium_large_smoke/.
"""

from lstm_lm import config as config_lib


def get_config():
    config = config_lib.default_config()
    config.model.hidden_size = 650  # TF: hidden_size
    config.model.init_scale = 0.05  # TF: init_scale
    config.model.keep_prob = 0.5  # TF: keep_prob
    config.optim.full_lr_epochs = 6  # TF: max_epoch
    config.optim.lr_decay = 0.8  # TF: lr_decay
    config.train.num_steps = 35  # TF: num_steps
    config.train.num_epochs = 39  # TF: max_max_epoch
    return config

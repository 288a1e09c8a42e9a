"""Zaremba et al. (2014) medium model: 2x650 LSTM, dropout 0.5, 39 epochs.

    python main.py --config=configs/ptb_medium.py

Published (valid / test perplexity): paper 86.2 / 82.7. Needs an accelerator for a
full run (about 2,800 words/s on a 2-core CPU).
"""

from lstm_lm import train


def get_config():
    config = train.base_config()
    config.init_scale = 0.05  # TF: init_scale
    config.learning_rate = 1.0  # TF: learning_rate
    config.max_grad_norm = 5.0  # TF: max_grad_norm
    config.num_layers = 2  # TF: num_layers
    config.num_steps = 35  # TF: num_steps
    config.hidden_size = 650  # TF: hidden_size
    config.full_lr_epochs = 6  # TF: max_epoch (epochs before the decay starts)
    config.num_epochs = 39  # TF: max_max_epoch
    config.keep_prob = 0.5  # TF: keep_prob
    config.lr_decay = 0.8  # TF: lr_decay
    config.batch_size = 20  # TF: batch_size
    return config

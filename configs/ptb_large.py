"""Zaremba et al. (2014) large model: 2x1500 LSTM, dropout 0.65, 55 epochs.

    python main.py --config=configs/ptb_large.py

Published (valid / test perplexity): paper 82.2 / 78.4. Needs an accelerator for a
full run.
"""

from lstm_lm import train


def get_config():
    config = train.base_config()
    config.init_scale = 0.04  # TF: init_scale
    config.learning_rate = 1.0  # TF: learning_rate
    config.max_grad_norm = 10.0  # TF: max_grad_norm
    config.num_layers = 2  # TF: num_layers
    config.num_steps = 35  # TF: num_steps
    config.hidden_size = 1500  # TF: hidden_size
    config.full_lr_epochs = 14  # TF: max_epoch (epochs before the decay starts)
    config.num_epochs = 55  # TF: max_max_epoch
    config.keep_prob = 0.35  # TF: keep_prob
    config.lr_decay = 1 / 1.15  # TF: lr_decay
    config.batch_size = 20  # TF: batch_size
    return config

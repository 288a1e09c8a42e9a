"""Zaremba et al. (2014) small model: 2x200 LSTM, no dropout, 13 epochs.

    python main.py --config=configs/ptb_small.py

Published (valid / test perplexity): paper 120.7 / 114.5; TF tutorial 121.39 / 115.91
(test with batch 1, steps 1, as here).
"""

from lstm_lm import train


def get_config():
    config = train.base_config()
    config.init_scale = 0.1  # TF: init_scale
    config.learning_rate = 1.0  # TF: learning_rate
    config.max_grad_norm = 5.0  # TF: max_grad_norm
    config.num_layers = 2  # TF: num_layers
    config.num_steps = 20  # TF: num_steps
    config.hidden_size = 200  # TF: hidden_size
    config.full_lr_epochs = 4  # TF: max_epoch (epochs before the decay starts)
    config.num_epochs = 13  # TF: max_max_epoch
    config.keep_prob = 1.0  # TF: keep_prob
    config.lr_decay = 0.5  # TF: lr_decay
    config.batch_size = 20  # TF: batch_size
    return config

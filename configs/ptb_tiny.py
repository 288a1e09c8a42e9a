"""TF tutorial's TestConfig sizes: 1x2 LSTM, one epoch; a smoke test that runs in seconds.

    python main.py --config=configs/ptb_tiny.py

Not a model to report: its perplexity stays in the hundreds (TF's test config too).
"""

from lstm_lm import config as config_lib


def get_config():
    config = config_lib.default_config()
    config.model.num_layers = 1  # TF: num_layers
    config.model.hidden_size = 2  # TF: hidden_size
    config.optim.max_grad_norm = 1.0  # TF: max_grad_norm
    config.optim.full_lr_epochs = 1  # TF: max_epoch
    config.train.num_steps = 2  # TF: num_steps
    config.train.num_epochs = 1  # TF: max_max_epoch
    return config

"""TF tutorial's TestConfig sizes: 1x2 LSTM, one epoch; a smoke test that runs in seconds.

    python main.py --config=configs/ptb_tiny.py

Not a model to report; its perplexity stays in the hundreds.
"""

from lstm_lm import train


def get_config():
    config = train.base_config()
    config.init_scale = 0.1  # TF: init_scale
    config.learning_rate = 1.0  # TF: learning_rate
    config.max_grad_norm = 1.0  # TF: max_grad_norm
    config.num_layers = 1  # TF: num_layers
    config.num_steps = 2  # TF: num_steps
    config.hidden_size = 2  # TF: hidden_size
    config.full_lr_epochs = 1  # TF: max_epoch (epochs before the decay starts)
    config.num_epochs = 1  # TF: max_max_epoch
    config.keep_prob = 1.0  # TF: keep_prob
    config.lr_decay = 0.5  # TF: lr_decay
    config.batch_size = 20  # TF: batch_size
    return config

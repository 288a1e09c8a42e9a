"""A CPU-sized character model on PTB-char: a 2x256 LSTM under a 128-wide embedding, no
dropout, Adam at 2e-3 with AWD's BPTT 150 and batch 128, the learning rate / 10 after
epochs 9 and 11, 12 epochs, the best-validation weights tested one stream at a time.

    python main.py --config=configs/lstm_ptb_char.py --workdir=runs/lstm_ptb_char

Ours: valid 1.505 / test 1.454 bits per character in 56 minutes on a 2-core CPU
(experiments/ptb_char/). For scale, AWD-LSTM's 3x1000 model
(configs/awd_lstm_ptb_char.py) reaches 1.175 test bpc in 500 GPU epochs.
"""

from lstm_lm import config as config_lib


def get_config():
    config = config_lib.default_config()
    config.data.name = "ptb_char"
    config.data.level = "char"
    config.model.num_layers = 2
    config.model.hidden_size = 256
    config.model.embedding_size = 128
    config.model.init = "awd"
    config.optim.name = "adam"
    config.optim.learning_rate = 2e-3
    config.optim.lr_decay = 1.0
    config.optim.lr_drop_epochs = (9, 11)
    config.optim.max_grad_norm = 0.25
    config.optim.token_mean_loss = True
    config.train.num_epochs = 12
    config.train.batch_size = 128
    config.train.num_steps = 150
    config.train.steps_per_call = 10
    config.train.test_weights = "best"
    config.eval.test_batch_size = 1
    config.eval.test_num_steps = 150
    return config

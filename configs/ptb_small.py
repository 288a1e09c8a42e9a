"""Zaremba et al. (2014) small model: 2x200 LSTM, no dropout, 13 epochs on the PTB.

    python main.py --config=configs/ptb_small.py

Published (valid / test perplexity): paper 120.7 / 114.5; TF tutorial 121.39 / 115.91
(test with batch 1, steps 1, as here). Ours: 118.87 / 114.51 in 49 minutes on a 2-core
CPU (experiments/ptb_small/). These are `lstm_lm.config`'s defaults.
"""

from lstm_lm import config as config_lib


def get_config():
    return config_lib.default_config()

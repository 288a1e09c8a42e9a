"""AWD-LSTM on enwik8 (Merity, Keskar & Socher 2018, "An Analysis of Neural Language
Modeling at Multiple Scales"): a 3-layer LSTM (1840, 1840, 400) under a tied 400-wide
embedding of the 205 byte symbols, Adam, BPTT 200, batch 128, the learning rate / 10
after epochs 25 and 35; the values of salesforce/awd-lstm-lm's README command for enwik8.
The rest, which both README commands share, comes from configs/awd_lstm_ptb_char.py.

    python main.py --config=configs/awd_lstm_enwik8.py --workdir=runs/awd_lstm_enwik8

Published: test 1.232 bits per byte (called bits per character there; 47M parameters).
Ours: not run: two days on a GPU in the paper; a 2-core CPU cannot train it.

From the README command (flag in the comments); what differs: as in
configs/awd_lstm_ptb_char.py (seed 1111, valid batch 10, test batch 1).
"""

from configs import awd_lstm_ptb_char


def get_config():
    config = awd_lstm_ptb_char.get_config()
    config.data.name = "enwik8"  # --data data/enwik8 (prep_enwik8.py's cut)
    config.data.level = "byte"
    config.model.hidden_sizes = (1840, 1840, 400)  # nhid 1840; the last is emsize (tied)
    config.model.embedding_size = 400  # emsize
    config.model.dropout_hidden = 0.1  # dropouth
    config.model.dropout_output = 0.4  # dropout
    config.model.weight_drop = 0.2  # wdrop
    config.optim.learning_rate = 1e-3  # lr
    config.optim.lr_drop_epochs = (25, 35)  # when
    config.train.num_epochs = 50  # epochs
    config.train.num_steps = 200  # bptt
    config.eval.test_num_steps = 200  # bptt
    return config

"""AWD-LSTM on character-level Penn Treebank (Merity, Keskar & Socher 2018, "An Analysis
of Neural Language Modeling at Multiple Scales"): a 3-layer LSTM (1000, 1000, 200) under
a tied 200-wide embedding, Adam, BPTT 150, batch 128, the learning rate / 10 after
epochs 300 and 400; the values of salesforce/awd-lstm-lm's README command for PTBC.

    python main.py --config=configs/awd_lstm_ptb_char.py --workdir=runs/awd_lstm_ptb_char

Published: test 1.175 bits per character (13.8M parameters). Ours: not run in full: the
500 epochs need an accelerator (a CPU-sized character model is configs/lstm_ptb_char.py).

From the README command (flag in the comments), with the exact-recipe keys of
configs/awd_lstm_ptb.py (torch.nn.LSTM's two biases, every target scored); what differs:
- its seed is main.py's default, 1111; its valid and test batches are main.py's fixed
  eval_batch_size 10 and test_batch_size 1; bptt 150 for both, as its evaluate uses.
- awd-lstm-lm's data.py adds an <eos> after the last line of a file even without a
  newline; ours counts newlines only (Mikolov's files end in one, so the same here).
"""

from lstm_lm import config as config_lib


def get_config():
    config = config_lib.default_config()
    config.seed = 1111  # main.py's default --seed
    config.data.name = "ptb_char"  # --data data/pennchar
    config.data.level = "char"
    config.model.num_layers = 3  # nlayers
    config.model.hidden_sizes = (1000, 1000, 200)  # nhid 1000; the last is emsize (tied)
    config.model.embedding_size = 200  # emsize
    config.model.tie_embeddings = True  # tied
    config.model.init = "awd"
    config.model.hidden_bias = True  # torch.nn.LSTM's b_ih and b_hh, each trained
    config.model.init_scale = 0.1
    config.model.dropout_input = 0.1  # dropouti
    config.model.dropout_hidden = 0.25  # dropouth
    config.model.dropout_output = 0.1  # dropout
    config.model.dropout_embedding = 0.0  # dropoute
    config.model.weight_drop = 0.5  # wdrop
    config.optim.name = "adam"  # optimizer adam (torch's betas and eps)
    config.optim.learning_rate = 2e-3  # lr
    config.optim.lr_decay = 1.0
    config.optim.lr_drop_epochs = (300, 400)  # when
    config.optim.max_grad_norm = 0.25  # clip
    config.optim.token_mean_loss = True
    config.optim.ar_alpha = 0.0  # alpha
    config.optim.tar_beta = 0.0  # beta
    config.optim.weight_decay = 1.2e-6  # wdecay
    config.train.num_epochs = 500  # epochs
    config.train.batch_size = 128  # batch_size
    config.train.num_steps = 150  # bptt
    config.train.random_lengths = True
    config.train.steps_per_call = 10  # each batch at its own bucket: K = 1's numbers, bitwise
    config.train.test_weights = "best"  # the best-validation weights are tested
    config.eval.valid_batch_size = 10  # eval_batch_size
    config.eval.test_batch_size = 1  # test_batch_size
    config.eval.test_num_steps = 150  # bptt
    config.eval.score_every_target = True  # every target of the rows, the tail too
    return config

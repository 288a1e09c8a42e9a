"""awd-lstm-lm's QRNN on the Penn Treebank (Merity, Keskar & Socher 2017; the QRNN of
Bradbury et al. 2017 as salesforce/pytorch-qrnn): 4 QRNN layers (1550, 1550, 1550, 400),
window 2 on the first and 1 above, output gates, under a tied 400-wide embedding, with
AWD-LSTM's recipe (configs/awd_lstm_ptb.py) and the values of the repository's README
command:

    python main.py --config=configs/awd_qrnn_ptb.py --workdir=runs/awd_qrnn_ptb
    # then fine-tuning (its finetune.py, seed 404, 300 epochs)
    python main.py --config=configs/awd_qrnn_ptb.py --workdir=runs/awd_qrnn_ptb_finetune \\
        --config.train.finetune_from=runs/awd_qrnn_ptb --config.seed=404 \\
        --config.train.num_epochs=300

Published (valid / test perplexity, the repository's README): 60.6 / 58.3; 59.1 / 56.7
after fine-tuning; 53.4 / 52.6 with the continuous cache pointer (ours:
--cache_window=500 --cache_lambda=0.1 --cache_theta=1.0 on evaluate). Ours: not run; it
waits for an accelerator (550 epochs).

Mapped from awd-lstm-lm's model.py (QRNNLayer(save_prev_x=True, zoneout=0, window=2 if
l == 0 else 1, output_gate=True), WeightDrop on each layer's whole linear weight, the
layer sizes nhid but the last, emsize) and its README command (flags in the comments);
the rest is configs/awd_lstm_ptb.py's (AWD's regularisers, NT-ASGD as torch's ASGD,
every target scored). What differs: the QRNN has no equivalent of the LSTM's
`hidden_bias` (one bias, torch.nn.Linear's); the step-equivalence test covers the LSTM
configs, the QRNN layer is tested against a numpy rewrite of pytorch-qrnn's
QRNNLayer.forward and CPUForgetMult (tests/test_qrnn.py).
"""

from configs import awd_lstm_ptb


def get_config():
    config = awd_lstm_ptb.get_config()
    config.seed = 9001  # seed
    config.model.cell = "qrnn"  # model QRNN
    config.model.num_layers = 4  # nlayers
    config.model.hidden_sizes = (1550, 1550, 1550, 400)  # nhid 1550; the last is emsize
    config.model.hidden_bias = False  # torch.nn.Linear: one bias
    config.model.weight_drop = 0.1  # wdrop
    config.model.dropout_hidden = 0.3  # dropouth
    config.model.dropout_input = 0.4  # dropouti
    config.optim.max_grad_norm = 0.2  # clip
    config.train.num_epochs = 550  # epochs
    return config

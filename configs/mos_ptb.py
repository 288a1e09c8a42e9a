"""The mixture of softmaxes (Yang, Dai, Salakhutdinov & Cohen 2018) on the Penn Treebank:
AWD-LSTM's recipe (configs/awd_lstm_ptb.py) with zihangdai/mos's PTB command: 3 layers
(960, 960, 620) under a tied 280-wide embedding, 15 softmaxes mixed, batch 12, lr 20,
dropouti 0.4, dropouth 0.225, dropoutl 0.29, seed 28, 1000 epochs.

    python main.py --config=configs/mos_ptb.py --workdir=runs/mos_ptb
    # then fine-tuning (its finetune.py, lr 25): averaged SGD from the averaged weights
    python main.py --config=configs/mos_ptb.py --workdir=runs/mos_ptb_finetune \
        --config.train.finetune_from=runs/mos_ptb --config.optim.learning_rate=25

Published (valid / test perplexity): paper 56.54 / 54.44 after fine-tuning, 48.33 / 47.69
with dynamic evaluation; the repository's README, with PyTorch 0.4 (mos PR #9), 58.34 /
56.18 before fine-tuning, 56.83 / 54.64 after, 49.03 / 48.43 with dynamic evaluation.
Ours: not yet run. It waits for an accelerator: its 15 softmaxes score 150,000 words per
token where AWD-LSTM's one scores 10,000.

Left as zihangdai/mos has them: AWD's dropout 0.4, dropoute 0.1, wdrop 0.5, clip 0.25, AR
2, TAR 1, weight decay 1.2e-6, nonmono 5, bptt 70 (+ at most 40), validation with batch
10, test with batch 1 on the best-validation weights, and the exact-recipe keys (two LSTM
biases, torch's ASGD, every target scored). One update is mos' (tests/test_recipe_steps.py,
against a float64 rewrite of its main.py `train` and model.py, 1e-8 floor included). Not
taken: its small_batch_size (gradient accumulation; the same gradient) and its 1e-8 floor
under the mixture (ours mixes in log space; the difference is below float32's rounding at
the test's shape).
"""

from configs import awd_lstm_ptb


def get_config():
    config = awd_lstm_ptb.get_config()
    config.seed = 28
    config.model.hidden_sizes = (960, 960, 620)  # nhid 960, nhidlast 620
    config.model.embedding_size = 280  # emsize
    config.model.softmax = "mos"
    config.model.mos_experts = 15  # n_experts
    config.model.dropout_latent = 0.29  # dropoutl
    config.model.dropout_input = 0.4  # dropouti
    config.model.dropout_hidden = 0.225  # dropouth
    config.optim.learning_rate = 20.0  # lr
    config.train.batch_size = 12  # batch_size
    config.train.num_epochs = 1000  # epochs
    return config

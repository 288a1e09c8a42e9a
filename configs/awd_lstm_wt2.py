"""AWD-LSTM (Merity, Keskar & Socher 2017) on WikiText-2: configs/awd_lstm_ptb.py with
the repository's WikiText-2 command (batch 80, 750 epochs, dropouti 0.65, dropouth 0.2,
seed 1882).

    python main.py --config=configs/awd_lstm_wt2.py --workdir=runs/awd_lstm_wt2
    python main.py --config=configs/awd_lstm_wt2.py --workdir=runs/awd_lstm_wt2_finetune \
        --config.train.finetune_from=runs/awd_lstm_wt2

The corpus is downloaded on first use (lstm_lm.data). Published (valid / test
perplexity): paper 68.6 / 65.8 (after fine-tuning); repository README 68.7 / 65.6 before
fine-tuning, 67.4 / 64.7 after. Ours: not yet run; like the PTB model it waits for an
accelerator (WikiText-2 is 2.1M training words, 2.3 times the PTB's, for 750 epochs).
"""

from configs import awd_lstm_ptb


def get_config():
    config = awd_lstm_ptb.get_config()
    config.seed = 1882
    config.data.name = "wikitext2"
    config.model.dropout_input = 0.65  # dropouti (the repository's default)
    config.model.dropout_hidden = 0.2  # dropouth
    config.train.batch_size = 80  # batch_size
    config.train.num_epochs = 750  # epochs
    return config

"""The Mogrifier LSTM on WikiText-2, with the tuned values of lamb's `experiment/
mogrifier/config/c51c838b33a5+_tune_wikitext-2_35m_lstm_mos2_fm_d2_arms/trial_747`: 6
rounds of rank 48, a tied embedding a fifth of the hidden size, 35.0M parameters.

    python main.py --config=configs/mogrifier_wt2.py --workdir=runs/mogrifier_wt2

Published (valid / test perplexity): 57.3 / 55.1; 40.2 / 38.6 with dynamic evaluation.
Ours: not run. Its reproduction needs an accelerator, and two things this codebase does
not have yet: lamb's 2-component mixture of softmaxes (mos_num_components=2), and the
skip connection that projects the layers' outputs down to the tied embedding's size.
Without that projection the last layer here is the embedding's size (381), the first
1910 wide, so that the parameter count is lamb's. The other differences are those of
configs/mogrifier_ptb.py.
"""

from configs import mogrifier_ptb


def get_config():
    config = mogrifier_ptb.get_config()
    config.data.name = "wikitext2"
    config.model.hidden_sizes = (1910, 381)  # num_params=35M; the last: the embedding's
    config.model.embedding_size = 381  # input_embedding_ratio=0.1993
    config.model.mogrifier_rounds = 6  # feature_mask_rounds
    config.model.mogrifier_rank = 48  # feature_mask_rank
    config.model.dropout_input = 0.547  # input_dropout
    config.model.dropout_hidden = 0.199  # inter_layer_dropout
    config.model.dropout_output = 0.348  # output_dropout
    config.optim.learning_rate = 0.00329  # learning_rate
    config.optim.weight_decay = 1.90e-4  # l2_penalty
    return config

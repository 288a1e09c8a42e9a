"""The Mogrifier LSTM (Melis, Kocisky & Blunsom, ICLR 2020) on the Penn Treebank, with
lamb's recipe and the tuned values of `experiment/mogrifier/config/786252db3825+_tune_ptb_
24m_lstm_fm_d2_arms/trial_483` (google-deepmind/lamb): 2 layers of 912 units under a tied
912-wide embedding, their outputs summed, 5 rounds of rank 84; 23,986,480 parameters
(lamb's count is 23,987,393: its vocabulary has an unused <UNK> beside PTB's <unk>).

    python main.py --config=configs/mogrifier_ptb.py --workdir=runs/mogrifier_ptb

Published (valid / test perplexity): 51.4 / 50.1; 44.9 / 44.8 with dynamic evaluation.
Ours: not run in full. A full reproduction needs an accelerator: lamb trains 1000 "turns"
of 200 batches of 64 x 70 (about 970 epochs); a 2-core CPU trains this model at ~1,030
words/s (the 2-epoch smoke run is in experiments/mogrifier/), about 10 days for that.

One update is lamb's, step for step (tests/test_recipe_steps.py, against a float64
rewrite of lamb's `lm.py`, `tiled_lstm.py`, `skip_multi_rnn_cell.py`, `utils.py`): the
cross-entropy summed over the 70 steps and averaged over the batch (`LM._build_loss`),
plus l2_penalty * sum(w^2) / 2 over every parameter inside the objective, one global-norm
clip at 10 of that whole gradient (`utils.clip_gradients_in_scope`), TF's Adam with
beta1 = 0 ("rmsprop", `utils.get_optimizer`) at a constant rate; the forget-gate bias is
trained from 1.0, the input gate capped at 1 - f; new input, inter-layer and output
dropout masks at every step (shared_mask_dropout=False) and one state-dropout mask per
layer and batch on h before the rounds; each row's carried state reset with probability
0.01 before a step (drop_state_probability, `training.py` `_make_train_feed`); the output
is the sum of both layers' h (lstm_skip_connection). lamb's initialisers
(`initializers.lamb_init`), and its averaging trigger: 50 epochs after the best
validation, or at epoch 800.

What still differs, with its expected effect:
- An epoch here is one pass over the training stream (207 batches of 64 x 70); lamb's turn
  is 200 batches of 64 stripes that read the corpus circularly from random line offsets,
  re-jittered by up to 100 lines each pass (`corpus.py`). Its epochs are not aligned with
  passes; ours are. Expected: none beyond seed noise.
- Evaluation: lamb tunes its softmax (inverse) temperature (1.06 down to 0.80) at every
  evaluation on 11 batches of 64 x 70 validation targets, ours (eval.temperature_lowest)
  on the first 21 batches of the validation layout, 33 x 70 (as many targets); both
  apply it to that validation and to the test. lamb validates 33 stripes of whole lines,
  each from <eos> and a zero state, scoring every target; ours 33 rows of the stream from
  a zero state, every target scored (eval.score_every_target) but the stream's last
  73,760 mod 33 = 5. Test at batch 1, as lamb's `test.sh` does.
- lamb's vocabulary has 10,001 entries (an unused <UNK>); ours 10,000.
"""

from lstm_lm import config as config_lib


def get_config():
    config = config_lib.default_config()
    config.model.num_layers = 2  # num_layers
    config.model.hidden_sizes = (912, 912)  # hidden_size from num_params=24M
    config.model.embedding_size = 912  # input_embedding_ratio=1.0
    config.model.tie_embeddings = True  # share_input_and_output_embeddings
    config.model.skip_connection = True  # lstm_skip_connection
    config.model.init = "lamb"  # cell_init_factor=1, embedding_init_factor=1
    config.model.cell = "mogrifier"
    config.model.mogrifier_rounds = 5  # feature_mask_rounds
    config.model.mogrifier_rank = 84  # feature_mask_rank
    config.model.cap_input_gate = True  # cap_input_gate
    config.model.forget_bias = 1.0  # forget_bias: the trained bias's initial mean
    config.model.trainable_forget_bias = True
    config.model.dropout_input = 0.7290787773167251  # input_dropout
    config.model.dropout_hidden = 0.2909822365241189  # inter_layer_dropout
    config.model.dropout_output = 0.7156690388448465  # output_dropout
    config.model.dropout_state = 0.38729439899832296  # state_dropout
    config.model.dropout_per_step = True  # shared_mask_dropout=False
    config.model.drop_state_probability = 0.01  # drop_state_probability
    config.optim.name = "adam"  # optimizer_type="rmsprop": Adam with beta1 = 0
    config.optim.tf_adam = True  # tf.train.AdamOptimizer
    config.optim.b1 = 0.0
    config.optim.b2 = 0.999  # rmsprop_beta2
    config.optim.eps = 1e-8  # rmsprop_epsilon
    config.optim.learning_rate = 0.002299987130225388  # learning_rate
    config.optim.lr_decay = 1.0  # constant: learning_rate_decay is not implemented in lamb
    config.optim.max_grad_norm = 10.0  # max_grad_norm
    config.optim.token_mean_loss = False  # summed over time, averaged over the batch
    config.optim.l2_penalty = 0.00025235335778471014  # l2_penalty
    config.optim.average_after_best = 50  # trigger_averaging_turns
    config.optim.average_at_epoch = 800  # trigger_averaging_at_the_latest
    config.train.num_epochs = 1000  # turns
    config.train.batch_size = 64  # batch_size
    config.train.num_steps = 70  # max_time_steps
    config.train.steps_per_call = 10
    config.train.test_weights = "best"
    config.eval.valid_batch_size = 33  # min(64, 3370 lines // 100)
    config.eval.test_batch_size = 1  # test.sh
    config.eval.test_num_steps = 70
    config.eval.score_every_target = True  # every target of the rows, the tail too
    config.eval.temperature_lowest = 0.8  # eval_softmax_temperature=-0.8
    return config

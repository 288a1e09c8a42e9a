"""The Mogrifier LSTM (Melis, Kocisky & Blunsom, ICLR 2020) on the Penn Treebank, with
the tuned values of lamb's `experiment/mogrifier/config/786252db3825+_tune_ptb_24m_lstm_
fm_d2_arms/trial_483` (google-deepmind/lamb): 2 layers of 912 units under a tied
912-wide embedding, 5 rounds of rank 84, 24.0M parameters (main.py logs the count).

    python main.py --config=configs/mogrifier_ptb.py --workdir=runs/mogrifier_ptb

Published (valid / test perplexity): 51.4 / 50.1; 44.9 / 44.8 with dynamic evaluation.
Ours: not run in full. A full reproduction needs an accelerator: lamb trains 1000 "turns"
of 200 batches of 64 x 70 (about 970 epochs); a 2-core CPU trains this model at ~1,030
words/s (the 2-epoch smoke run is in experiments/mogrifier/), about 10 days for that.

Mapped from lamb's flags (their names in the comments); what differs:
- lamb's input, output and inter-layer dropouts draw a new mask per step
  (shared_mask_dropout=False); here they are AWD's locked masks, one per sequence.
- lamb's state_dropout (0.387, on h before the recurrence), drop_state_probability (0.01,
  a state reset), lstm_skip_connection and the softmax temperature of its evaluation
  are not implemented; neither is trigger_averaging_at_the_latest (800 turns).
- Its turns of 200 steps are our epochs of 207 batches (PTB at 64 x 70), so
  trigger_averaging_turns=50 becomes optim.nonmono=50 (an NT-ASGD window in epochs).
- lamb's l2_penalty is our L2 weight decay, added to the gradient as is.
- Adam: optax's form; lamb's TF AdamOptimizer adds eps before bias-correcting v.
- Initialisation: AWD's (fan-in uniform); lamb's is a variance-scaling initializer.
"""

from lstm_lm import config as config_lib


def get_config():
    config = config_lib.default_config()
    config.model.num_layers = 2  # num_layers
    config.model.hidden_sizes = (912, 912)  # hidden_size from num_params=24M
    config.model.embedding_size = 912  # input_embedding_ratio=1.0
    config.model.tie_embeddings = True  # share_input_and_output_embeddings
    config.model.init = "awd"
    config.model.cell = "mogrifier"
    config.model.mogrifier_rounds = 5  # feature_mask_rounds
    config.model.mogrifier_rank = 84  # feature_mask_rank
    config.model.cap_input_gate = True  # cap_input_gate
    config.model.forget_bias = 1.0  # forget_bias
    config.model.dropout_input = 0.729  # input_dropout
    config.model.dropout_hidden = 0.291  # inter_layer_dropout
    config.model.dropout_output = 0.716  # output_dropout
    config.optim.name = "adam"  # optimizer_type="rmsprop": Adam with beta1 = 0
    config.optim.b1 = 0.0
    config.optim.b2 = 0.999  # rmsprop_beta2
    config.optim.eps = 1e-8  # rmsprop_epsilon
    config.optim.learning_rate = 0.0023  # learning_rate
    config.optim.lr_decay = 1.0  # learning_rate_decay
    config.optim.max_grad_norm = 10.0  # max_grad_norm
    config.optim.token_mean_loss = True
    config.optim.weight_decay = 2.52e-4  # l2_penalty
    config.optim.nonmono = 50  # trigger_averaging_turns, model_average="arithmetic"
    config.train.num_epochs = 1000  # turns
    config.train.batch_size = 64  # batch_size
    config.train.num_steps = 70  # max_time_steps
    config.train.steps_per_call = 10
    config.train.test_weights = "best"
    config.eval.valid_batch_size = 16
    config.eval.test_batch_size = 1
    config.eval.test_num_steps = 70
    return config

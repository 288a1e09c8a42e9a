#!/usr/bin/env bash
# The ablation of experiments/awd_lstm/README.md: each variant trained for about the same
# wall time (11-13 minutes on a 2-core CPU), one after another, nothing else running.
# Run from the repository root with LSTM_LM_DATA_DIR set; workdirs go under $1.
set -euo pipefail
out=${1:-workdirs/ablation}
run() {
  name=$1; shift
  /usr/bin/time -v python main.py --workdir="$out/$name" "$@" > "$out/$name.log" 2>&1
}
mkdir -p "$out"

# 1. PyTorch's word_language_model recipe: 2x200 tied, dropout 0.2 (Zaremba's places: the
#    embedding output and each layer's output, a new mask per step), lr 20, clip 0.25,
#    bptt 35, the loss averaged over tokens, PyTorch's initialisation (= AWD's). Its lr/4 on
#    a stalled validation does not come within this budget: a constant lr is the recipe.
run simple_2x200 --config=configs/ptb_small.py --config.train.num_epochs=5 \
  --config.model.tie_embeddings=True --config.model.init=awd --config.model.keep_prob=0.8 \
  --config.optim.learning_rate=20 --config.optim.lr_decay=1 --config.optim.max_grad_norm=0.25 \
  --config.optim.token_mean_loss=True --config.train.num_steps=35 \
  --config.eval.valid_batch_size=10 --config.eval.test_num_steps=35

# 2. 2x300 + AWD's locked and embedding dropout (no weight drop, AR/TAR, weight decay), lr 30.
run locked_2x300 --config=configs/ptb_small_regularized.py --config.train.num_epochs=3 \
  --config.model.weight_drop=0 --config.optim.ar_alpha=0 --config.optim.tar_beta=0 \
  --config.optim.weight_decay=0 --config.optim.nonmono=0

# 3. + weight drop, AR/TAR, weight decay: ptb_small_regularized itself, whose first three
#    epochs are those of the full run (NT-ASGD cannot switch before epoch 3):
#    python main.py --config=configs/ptb_small_regularized.py
# 4. + averaged SGD: the full run, then fine-tuning (experiments/awd_lstm/README.md).

"""The Mogrifier LSTM at the size and wall time of ptb_small_regularized: the same model,
regularisers and optimizer, with the cell swapped for a Mogrifier of 5 rounds of rank 40
(4.7M parameters against 4.5M) and lamb's capped input gate, the learning rate lowered
from 30 to 20, and the epochs cut to fit the same budget on a 2-core CPU (a step costs
about 1.4 times the LSTM's there). Without the cap, at lr 30, its gradient norm exploded
in epoch 2 (0.2 -> 1e17 within 300 steps) and training stopped (experiments/mogrifier/).
Two commands, as ptb_small_regularized's:

    python main.py --config=configs/ptb_small_mogrifier.py --workdir=runs/mog
    python main.py --config=configs/ptb_small_mogrifier.py --workdir=runs/mog_finetune \
        --config.train.finetune_from=runs/mog --config.train.num_epochs=2

Results: experiments/mogrifier/.
"""

from configs import ptb_small_regularized


def get_config():
    config = ptb_small_regularized.get_config()
    config.model.cell = "mogrifier"
    config.model.mogrifier_rounds = 5
    config.model.mogrifier_rank = 40
    config.model.cap_input_gate = True  # lamb's: with it off, lr 30 diverged in epoch 2
    config.optim.learning_rate = 20.0
    config.train.num_epochs = 8
    return config

"""The Flax cells, scanned by Flax's nn.RNN, against this package's layer on the same
parameters: the plain LSTM's fast path and the Mogrifier's loop."""

import flax.linen as nn
import jax
import numpy as np
import pytest

from lstm_lm import flax_cells, model

B, T, IN, H = 3, 7, 4, 6


def inputs_BxTxI(seed=0):
    return jax.random.normal(jax.random.PRNGKey(seed), (B, T, IN))


@pytest.mark.parametrize(
    "cell",
    [
        flax_cells.TFLSTMCell(H, forget_bias=1.0, init_scale=0.5),
        flax_cells.MogrifierCell(H, rounds=5, init_scale=0.5),
        flax_cells.MogrifierCell(H, rounds=4, rank=2, cap_input_gate=True, init_scale=0.5),
    ],
    ids=["lstm", "mogrifier", "mogrifier_rank_2_capped"],
)
def test_the_flax_cell_scanned_by_nn_rnn_equals_our_layer(cell):
    x_BxTxI = inputs_BxTxI()
    rnn = nn.RNN(cell, return_carry=True)
    variables = rnn.init(jax.random.PRNGKey(1), x_BxTxI)
    layer = variables["params"]["cell"]  # this package's layout
    want_keys = {"w_x", "w_h", "b"} | (
        {"mogrifier"} if "Mogrifier" in type(cell).__name__ else set()
    )
    assert set(layer) == want_keys
    assert layer["w_x"].shape == (IN, 4 * H) and layer["w_h"].shape == (H, 4 * H)
    (c, h), h_BxTxH = rnn.apply(variables, x_BxTxI)

    zeros = (np.zeros((B, H), np.float32), np.zeros((B, H), np.float32))
    (want_c, want_h), want_TxBxH = model.lstm_layer(
        layer,
        zeros,
        x_BxTxI.transpose(1, 0, 2),
        cell.forget_bias,
        cap_input_gate=getattr(cell, "cap_input_gate", False),
    )
    np.testing.assert_allclose(h_BxTxH, want_TxBxH.transpose(1, 0, 2), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(c, want_c, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(h, want_h, rtol=1e-6, atol=1e-6)
    assert np.abs(np.asarray(h_BxTxH)).max() > 0.05  # not all zeros

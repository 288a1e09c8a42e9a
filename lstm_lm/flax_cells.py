"""This package's cells as Flax (linen) cells, for a Flax model of one's own: `nn.RNN`
scans them like Flax's `LSTMCell`, over inputs [B, T, I] (batch-major, as `nn.RNN`
takes them), and their carry is (c [B, H], h [B, H]) as Flax's.

    import flax.linen as nn
    from lstm_lm import flax_cells

    rnn = nn.RNN(flax_cells.TFLSTMCell(features=200, forget_bias=0.0))
    variables = rnn.init(jax.random.PRNGKey(0), x_BxTxI)
    h_BxTxH = rnn.apply(variables, x_BxTxI)

The equations are those of `lstm_lm.cells` (the cells call `cells.lstm_cell` and
`cells.cell_step`; nothing is written twice), and the parameters are in this package's
layout (`lstm_lm.cells`' docstring): {"w_x": [I, 4H], "w_h": [H, 4H], "b": [4H]}, gates
i, j, f, o, plus "mogrifier" for the Mogrifier. So `variables["params"]["cell"]` of an
`nn.RNN` is a layer of `lstm_lm.model`'s params["lstm"], and the reverse.

These cells step one time step at a time: `model.lstm_layer`'s fast path (the input
matmul hoisted out of the loop, the written-out gradient) is for whole sequences, and
trains faster.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from lstm_lm import cells, initializers


def _uniform(scale: float):
    """A Flax initializer: U(-scale, scale), float32."""

    def init(key, shape):
        return jax.random.uniform(key, shape, jnp.float32, -scale, scale)

    return init


class _ZeroCarryCell(nn.RNNCellBase):
    """What nn.RNN asks of a cell besides its step: a zero carry (c, h), each
    [..., features] for inputs [..., I], and one feature axis. Its subclasses have the
    `features` field."""

    @nn.nowrap
    def initialize_carry(self, rng, input_shape):
        zeros = jnp.zeros((*input_shape[:-1], self.features), jnp.float32)
        return zeros, zeros

    @property
    def num_feature_axes(self) -> int:
        return 1


class TFLSTMCell(_ZeroCarryCell):
    """TF's BasicLSTMCell (the Zaremba et al. model's): c' = c sigmoid(f + forget_bias) +
    sigmoid(i) tanh(j), h' = tanh(c') sigmoid(o), every parameter drawn U(-init_scale,
    init_scale) as Zaremba et al. and TF's ptb_word_lm."""

    features: int  # H
    forget_bias: float = 0.0
    init_scale: float = 0.1

    @nn.compact
    def __call__(self, carry, x_BxI):
        H, uniform = self.features, _uniform(self.init_scale)
        w_x = self.param("w_x", uniform, (x_BxI.shape[-1], 4 * H))
        w_h = self.param("w_h", uniform, (H, 4 * H))
        b = self.param("b", uniform, (4 * H,))
        new_carry = cells.lstm_cell(w_h, carry, x_BxI @ w_x + b, self.forget_bias)
        return new_carry, new_carry[1]


class MogrifierCell(_ZeroCarryCell):
    """The Mogrifier LSTM (Melis et al. 2020): `rounds` rounds of gating x and h
    (`cells.mogrify`) before each LSTM step; `rank` k factorises each round's matrix (0:
    full). Initialised as `lstm_lm.model` does with init="uniform": the LSTM's
    parameters U(-init_scale, init_scale), the rounds as `initializers.mogrifier_init`."""

    features: int  # H
    rounds: int = 5
    rank: int = 0
    forget_bias: float = 0.0
    cap_input_gate: bool = False
    init_scale: float = 0.1

    @nn.compact
    def __call__(self, carry, x_BxI):
        H, in_size, uniform = self.features, x_BxI.shape[-1], _uniform(self.init_scale)
        layer = {
            "w_x": self.param("w_x", uniform, (in_size, 4 * H)),
            "w_h": self.param("w_h", uniform, (H, 4 * H)),
            "b": self.param("b", uniform, (4 * H,)),
            "mogrifier": self.param("mogrifier", self._init_rounds, in_size),
        }
        w_xh = jnp.concatenate([layer["w_x"], layer["w_h"]])
        new_carry = cells.cell_step(
            layer, w_xh, carry, x_BxI, self.forget_bias, self.cap_input_gate
        )
        return new_carry, new_carry[1]

    def _init_rounds(self, key, input_size: int) -> list[dict]:
        """The rounds' parameters, drawn by initializers.mogrifier_init for one layer."""
        H = self.features
        shapes = {"w_x": jnp.zeros((input_size, 4 * H)), "w_h": jnp.zeros((H, 4 * H))}
        params = initializers.mogrifier_init(key, {"lstm": [shapes]}, self.rounds, self.rank)
        return params["lstm"][0]["mogrifier"]

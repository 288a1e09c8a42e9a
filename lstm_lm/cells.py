"""The recurrent cells and their loops over time: TF's BasicLSTMCell with a written-out
gradient (the fast path), and the Mogrifier LSTM (Melis, Kocisky & Blunsom 2020).

A layer's parameters are a plain dict:

    {"w_x": [I, 4H], "w_h": [H, 4H], "b": [4H],          # the LSTM's, gates i, j, f, o
     "b_h": [4H],                                         # hidden_bias: PyTorch's b_hh
     "mogrifier": [{"w": [H, I], "b": [I]},               # round 1: x from h
                   {"w": [I, H], "b": [H]}, ...]}         # round 2: h from x; and so on

"mogrifier" is there only for the Mogrifier (R >= 1 rounds); a round's matrix is "w", or
with a rank k its two factors "u" [., k] and "v" [k, .]. Every function takes the
previous carry (c_BxH, h_BxH) and returns the new one.

The plain LSTM's loop, `recurrence`, applies x @ w_x + b to all steps in one matmul
before it and has its gradient written out. The Mogrifier's input at step t depends on
h_{t-1}, so its loop, `cell_scan`, computes all of its gates inside, as one matmul of
concat([x, h]), and is left to autodiff; so is the LSTM with the capped input gate.
"""

import functools

import jax
import jax.numpy as jnp


def lstm_update(
    c_BxH: jax.Array, gates_Bx4H: jax.Array, forget_bias: float, cap_input_gate: bool = False
) -> tuple[tuple[jax.Array, jax.Array], tuple[jax.Array, ...]]:
    """The LSTM's state update from its gate pre-activations: ((c', h'), (i, j, f, o)
    after their nonlinearities).

    Gates, in this order along the last axis: i (input), j (candidate), f (forget),
    o (output):
        c' = c * sigmoid(f + forget_bias) + sigmoid(i) * tanh(j)
        h' = tanh(c') * sigmoid(o)
    With `cap_input_gate` (lamb's `cap_input_gate`, Melis et al.) the input gate is capped
    at one minus the forget gate, which keeps |c| <= 1 when it starts so:
        c' = c * f + min(1 - f, i) * j
    """
    i, j, f, o = jnp.split(gates_Bx4H, 4, axis=-1)
    i, j, f, o = jax.nn.sigmoid(i), jnp.tanh(j), jax.nn.sigmoid(f + forget_bias), jax.nn.sigmoid(o)
    c_BxH = c_BxH * f + (jnp.minimum(1.0 - f, i) if cap_input_gate else i) * j
    h_BxH = jnp.tanh(c_BxH) * o
    return (c_BxH, h_BxH), (i, j, f, o)


def cell_activations(
    w_h: jax.Array, carry: tuple[jax.Array, jax.Array], xw_Bx4H: jax.Array, forget_bias: float
) -> tuple[tuple[jax.Array, jax.Array], jax.Array]:
    """One step of TF's BasicLSTMCell (lstm_update without the cap): ((c', h'),
    acts_Bx4H). `xw_Bx4H` is x @ w_x + b, already computed; `acts` holds the gates after
    their nonlinearities, [i, j, f, o], for the backward pass."""
    c_BxH, h_BxH = carry
    new_carry, gates = lstm_update(c_BxH, xw_Bx4H + h_BxH @ w_h, forget_bias)
    return new_carry, jnp.concatenate(gates, axis=-1)


def lstm_cell(
    w_h: jax.Array, carry: tuple[jax.Array, jax.Array], xw_Bx4H: jax.Array, forget_bias: float
) -> tuple[jax.Array, jax.Array]:
    """One step of TF's BasicLSTMCell: (c', h'); see cell_activations."""
    return cell_activations(w_h, carry, xw_Bx4H, forget_bias)[0]


def _scan_cells(w_h, carry, xw_TxBx4H, real_T, forget_bias, unroll):
    """The recurrence's forward loop: ((final (c, h), h_TxBxH), what its backward needs:
    each step's activations and incoming (c, h)). Steps where `real_T` is False hold the
    carry (None: all steps are real)."""

    def step(carry, xw_and_real):
        xw_Bx4H, real = xw_and_real
        new_carry, acts_Bx4H = cell_activations(w_h, carry, xw_Bx4H, forget_bias)
        h_BxH = new_carry[1]
        if real is not None:
            new_carry = jax.tree.map(lambda n, o: jnp.where(real, n, o), new_carry, carry)
        return new_carry, (h_BxH, (acts_Bx4H, *carry))

    carry, (h_TxBxH, saved) = jax.lax.scan(step, carry, (xw_TxBx4H, real_T), unroll=unroll)
    return (carry, h_TxBxH), saved


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def recurrence(w_h, carry, xw_TxBx4H, real_T, forget_bias, unroll=1):
    """One layer's loop over time: (final (c, h), h_TxBxH), given xw = x @ w_x + b for
    every step. Steps where `real_T` [T] is False hold the carry (None: all are real).

    Its gradient is written out (below) rather than left to autodiff of the scan, which
    computes dL/dw_h step by step: a [H, B] @ [B, 4H] matmul and an add into an [H, 4H]
    sum at every step. Here the backward loop computes only the gates' gradients and
    dL/dh, and dL/dw_h is one [H, T*B] @ [T*B, 4H] matmul after it: a medium-sized
    training step ran 5-11% faster on CPU (experiments/benchmark/README.md)."""
    return _scan_cells(w_h, carry, xw_TxBx4H, real_T, forget_bias, unroll)[0]


def _recurrence_fwd(w_h, carry, xw_TxBx4H, real_T, forget_bias, unroll):
    outputs, saved = _scan_cells(w_h, carry, xw_TxBx4H, real_T, forget_bias, unroll)
    return outputs, (w_h, real_T, saved)


def _recurrence_bwd(forget_bias, unroll, residuals, cotangents):
    """Back through the steps, last to first, with the chain rule of cell_activations;
    at padding steps the carry's cotangent passes through unchanged."""
    w_h, real_T, (acts_TxBx4H, c_in_TxBxH, h_in_TxBxH) = residuals
    d_carry, dh_out_TxBxH = cotangents

    def step(d_carry, saved):
        acts_Bx4H, c_in_BxH, dh_out_BxH, real = saved
        dc, dh = d_carry
        held = (0.0, 0.0)
        if real is not None:  # the carry after a padding step is the carry before it
            held = (jnp.where(real, 0.0, dc), jnp.where(real, 0.0, dh))
            dc, dh = jnp.where(real, dc, 0.0), jnp.where(real, dh, 0.0)
        i, j, f, o = jnp.split(acts_Bx4H, 4, axis=-1)
        tanh_c = jnp.tanh(c_in_BxH * f + i * j)
        dh = dh + dh_out_BxH
        dc = dc + dh * o * (1.0 - tanh_c**2)
        d_gates_Bx4H = jnp.concatenate(
            [dc * j * i * (1.0 - i), dc * i * (1.0 - j**2), dc * c_in_BxH * f * (1.0 - f)]
            + [dh * tanh_c * o * (1.0 - o)],
            axis=-1,
        )
        d_carry = (dc * f + held[0], d_gates_Bx4H @ w_h.T + held[1])
        return d_carry, d_gates_Bx4H

    saved = (acts_TxBx4H, c_in_TxBxH, dh_out_TxBxH, real_T)
    d_carry, d_gates_TxBx4H = jax.lax.scan(step, d_carry, saved, reverse=True, unroll=unroll)
    H = h_in_TxBxH.shape[-1]
    d_w_h = h_in_TxBxH.reshape(-1, H).T @ d_gates_TxBx4H.reshape(-1, 4 * H)
    return d_w_h, d_carry, d_gates_TxBx4H, None


recurrence.defvjp(_recurrence_fwd, _recurrence_bwd)


def gate_bias(layer: dict) -> jax.Array:
    """The gates' bias [4H]: b, plus b_h where the layer has PyTorch's second bias."""
    return layer["b"] + layer["b_h"] if "b_h" in layer else layer["b"]


def project(round_params: dict, a_BxN: jax.Array) -> jax.Array:
    """a @ w + b of one Mogrifier round, with w full ("w") or factorised ("u" @ "v")."""
    if "w" in round_params:
        return a_BxN @ round_params["w"] + round_params["b"]
    return (a_BxN @ round_params["u"]) @ round_params["v"] + round_params["b"]


def mogrify(rounds: list[dict], x_BxI: jax.Array, h_BxH: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The Mogrifier's mutual gating of the step's input x and the previous output h, as
    lamb's `TiledLSTMCell._do_feature_masking`: rounds 1, 3, 5, ... gate x by h, rounds
    2, 4, ... gate h by the latest x:
        x <- 2 sigmoid(Q_r h + b_r) * x        h <- 2 sigmoid(R_r x + b_r) * h

    Where the regularisers act, as lamb: the dropout on the layer's input (applied by
    model.layer_outputs) and the state dropout on h (cell_step) come before the rounds;
    the cell state c is never gated. AWD's weight drop, if on, masks w_h, which acts on
    the mogrified h."""
    for r, round_params in enumerate(rounds):
        if r % 2 == 0:
            x_BxI = 2.0 * jax.nn.sigmoid(project(round_params, h_BxH)) * x_BxI
        else:
            h_BxH = 2.0 * jax.nn.sigmoid(project(round_params, x_BxI)) * h_BxH
    return x_BxI, h_BxH


def cell_step(
    layer: dict,
    w_xh: jax.Array,
    carry: tuple[jax.Array, jax.Array],
    x_BxI: jax.Array,
    forget_bias: float,
    cap_input_gate: bool = False,
    h_scale_BxH: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """One step of the layer's cell, whichever it is: (c', h'). With `layer["mogrifier"]`
    the Mogrifier LSTM (the LSTM step on the mogrified x and h; the cell state c is not
    gated), else the LSTM; `cap_input_gate`: see lstm_update. `w_xh` [I + H, 4H] is
    concat([w_x, w_h]): the gates are one matmul of concat([x, h]), which ran 5% faster
    than two on CPU (experiments/mogrifier/). `h_scale_BxH` is lamb's state dropout (a
    scaled keep mask): the rounds and the gates see h times it, the carry keeps h."""
    c_BxH, h_BxH = carry
    if h_scale_BxH is not None:
        h_BxH = h_BxH * h_scale_BxH
    x_BxI, h_BxH = mogrify(layer.get("mogrifier", []), x_BxI, h_BxH)
    gates_Bx4H = jnp.concatenate([x_BxI, h_BxH], axis=-1) @ w_xh + gate_bias(layer)
    return lstm_update(c_BxH, gates_Bx4H, forget_bias, cap_input_gate)[0]


def cell_scan(
    layer, carry, x_TxBxI, real_T, forget_bias, cap_input_gate=False, unroll=1, h_scale_BxH=None
):
    """`cell_step` over time, differentiated by autodiff: (final (c, h), h_TxBxH). Steps
    where `real_T` [T] is False hold the carry (None: all are real). `h_scale_BxH`: the
    state dropout of every step (see cell_step)."""
    w_xh = jnp.concatenate([layer["w_x"], layer["w_h"]])

    def step(carry, x_and_real):
        x_BxI, real = x_and_real
        new_carry = cell_step(layer, w_xh, carry, x_BxI, forget_bias, cap_input_gate, h_scale_BxH)
        h_BxH = new_carry[1]
        if real is not None:
            new_carry = jax.tree.map(lambda n, o: jnp.where(real, n, o), new_carry, carry)
        return new_carry, h_BxH

    return jax.lax.scan(step, carry, (x_TxBxI, real_T), unroll=unroll)

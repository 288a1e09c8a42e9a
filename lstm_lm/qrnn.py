"""The quasi-recurrent network (Bradbury, Merity, Xiong & Socher 2017) as
salesforce/pytorch-qrnn computes it (`torchqrnn/qrnn.py` QRNNLayer, `forget_mult.py`),
the layer awd-lstm-lm's QRNN models stack (`model.cell = "qrnn"`).

A layer's parameters:

    {"w": [window * I, 3H], "b": [3H]}      # Z, F, O; window 2: rows of x_t, then x_{t-1}
                                            # (2H: Z, F without the output gate)

For all T steps at once, from the layer's input x [T, B, I] (window 2: each step's input
beside the previous one, the carried x_{-1} before the first):

    Z, F, O = split([x_t, x_{t-1}] @ w + b)      Z = tanh, F = sigmoid, O = sigmoid
    c_t = F_t * Z_t + (1 - F_t) * c_{t-1}        ("fo-pooling", `forget_mult`)
    h_t = O_t * c_t                              (without the output gate: h_t = c_t)

pytorch-qrnn's kernel weighs the new value by F and the old state by 1 - F (the paper
writes it the other way round); this follows the code. The only recurrence is
elementwise, a linear one: `forget_mult` runs it as a `lax.scan` or, in O(log T) depth,
as a `lax.associative_scan`. The carry of a layer is (c_BxH, x_prev_BxI): the state and
the last input of the previous batch (pytorch-qrnn's `save_prev_x`), so that a stream
read in batches is the stream read whole. Zoneout (off in awd-lstm-lm's configs) drops
F elementwise in training and scales it by 1 - zoneout in evaluation, as pytorch-qrnn.
"""

import jax
import jax.numpy as jnp


def gates(output_gate: bool) -> int:
    """How many gate blocks the linear map computes: Z, F (and O)."""
    return 3 if output_gate else 2


def init_layer(
    key: jax.Array, input_size: int, size: int, window: int, output_gate: bool, bound: float
) -> dict:
    """A layer's parameters ~ U(-bound, bound) (torch.nn.Linear's default: bound =
    1 / sqrt(window * input_size))."""
    k_w, k_b = jax.random.split(key)
    width = gates(output_gate) * size
    return {
        "w": jax.random.uniform(k_w, (window * input_size, width), jnp.float32, -bound, bound),
        "b": jax.random.uniform(k_b, (width,), jnp.float32, -bound, bound),
    }


def forget_mult(
    f_TxBxH: jax.Array, z_TxBxH: jax.Array, c_BxH: jax.Array, associative: bool = False
) -> jax.Array:
    """c [T, B, H] with c_t = f_t * z_t + (1 - f_t) * c_{t-1} from c_{-1} = `c_BxH`: a
    sequential `lax.scan`, or `lax.associative_scan` over the pairs (a, b) = (1 - f, f z),
    which compose as (a1, b1) then (a2, b2) = (a1 a2, a2 b1 + b2)."""
    a_TxBxH, b_TxBxH = 1.0 - f_TxBxH, f_TxBxH * z_TxBxH
    if associative:

        def compose(first, second):
            a1, b1 = first
            a2, b2 = second
            return a1 * a2, a2 * b1 + b2

        a_TxBxH, b_TxBxH = jax.lax.associative_scan(compose, (a_TxBxH, b_TxBxH))
        return a_TxBxH * c_BxH + b_TxBxH

    def step(c_BxH, a_and_b):
        a_BxH, b_BxH = a_and_b
        c_BxH = a_BxH * c_BxH + b_BxH
        return c_BxH, c_BxH

    return jax.lax.scan(step, c_BxH, (a_TxBxH, b_TxBxH))[1]


def layer(
    params: dict,
    carry: tuple[jax.Array, jax.Array],
    x_TxBxI: jax.Array,
    window: int,
    length: jax.Array | None = None,
    output_gate: bool = True,
    zoneout: float = 0.0,
    zoneout_keep: jax.Array | None = None,
    associative: bool = False,
) -> tuple[tuple[jax.Array, jax.Array], jax.Array]:
    """One QRNN layer over time: ((c after the last real step, the last real input),
    h_TxBxH). With `length` (an int32 scalar) the steps from `length` on are padding:
    there F is 0, so c is held, and the carried input is step length - 1's. Zoneout:
    `zoneout_keep` [T, B, H] (training) multiplies F, else F is scaled by 1 - zoneout."""
    c_BxH, x_prev_BxI = carry
    source_TxBxK = x_TxBxI
    if window == 2:
        previous_TxBxI = jnp.concatenate([x_prev_BxI[None], x_TxBxI[:-1]])
        source_TxBxK = jnp.concatenate([x_TxBxI, previous_TxBxI], axis=-1)
    z_TxBxH, f_TxBxH, *o_TxBxH = jnp.split(
        source_TxBxK @ params["w"] + params["b"], gates(output_gate), axis=-1
    )
    z_TxBxH, f_TxBxH = jnp.tanh(z_TxBxH), jax.nn.sigmoid(f_TxBxH)
    if zoneout_keep is not None:
        f_TxBxH = f_TxBxH * zoneout_keep
    elif zoneout:
        f_TxBxH = f_TxBxH * (1.0 - zoneout)
    T = len(x_TxBxI)
    if length is not None:
        f_TxBxH = jnp.where((jnp.arange(T) < length)[:, None, None], f_TxBxH, 0.0)
    c_TxBxH = forget_mult(f_TxBxH, z_TxBxH, c_BxH, associative)
    h_TxBxH = jax.nn.sigmoid(o_TxBxH[0]) * c_TxBxH if output_gate else c_TxBxH
    last = T - 1 if length is None else length - 1
    return (c_TxBxH[-1], jnp.take(x_TxBxI, last, axis=0)), h_TxBxH

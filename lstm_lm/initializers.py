"""How each recipe draws the parameters, beyond `model.init_params`' default (every
parameter U(-init_scale, init_scale), as Zaremba et al. and TF's ptb_word_lm.py): each
function takes the parameters drawn so and returns them with the recipe's redrawn.

- `awd_init`: AWD-LSTM's (PyTorch's nn.LSTM defaults);
- `mogrifier_init`: the Mogrifier's rounds, as lamb (google-deepmind/lamb) draws them;
- `lamb_init`: lamb's LSTM and embedding (`cell.py`, `lm.py`, `utils.py`).
"""

import math

import jax
import jax.numpy as jnp

# The standard deviation of N(0, 1) cut at +-2 (TF's truncated_normal redraws beyond):
# TF's variance_scaling_initializer divides by it so that the draw has the variance asked.
TRUNCATED_STDDEV = 0.87962566103423978


def truncated_normal(key: jax.Array, shape: tuple[int, ...], stddev: float) -> jax.Array:
    """TF's tf.truncated_normal(shape, 0, stddev): N(0, stddev^2), redrawn beyond 2 stddev."""
    return stddev * jax.random.truncated_normal(key, -2.0, 2.0, shape, jnp.float32)


def awd_init(key: jax.Array, params: dict) -> dict:
    """`params` with the LSTM weights and biases redrawn and the full softmax's bias zeroed
    (if it has one), as AWD-LSTM initialises them: a layer of size H has w_x, w_h ~
    U(-1/sqrt(H), 1/sqrt(H)) (PyTorch's nn.LSTM default) and PyTorch's two biases b_ih and
    b_hh each such a draw: b and b_h where the layer has both (hidden_bias), else b their
    sum."""
    lstm = []
    for layer, layer_key in zip(params["lstm"], jax.random.split(key, len(params["lstm"]))):
        bound = layer["w_h"].shape[0] ** -0.5
        k_x, k_h, k_b1, k_b2 = jax.random.split(layer_key, 4)
        draws = [
            jax.random.uniform(k, layer[name].shape, jnp.float32, -bound, bound)
            for k, name in [(k_x, "w_x"), (k_h, "w_h"), (k_b1, "b"), (k_b2, "b")]
        ]
        if "b_h" in layer:
            biases = {"b": draws[2], "b_h": draws[3]}
        else:
            biases = {"b": draws[2] + draws[3]}
        lstm.append({"w_x": draws[0], "w_h": draws[1], **biases})
    if "softmax" not in params:
        return {**params, "lstm": lstm}
    full = {**params["softmax"], "b": jnp.zeros_like(params["softmax"]["b"])}
    return {**params, "lstm": lstm, "softmax": full}


def mogrifier_init(
    key: jax.Array, params: dict, rounds: int, rank: int, full_gain: float = 1.0
) -> dict:
    """`params` with each layer's Mogrifier rounds added (their layout: lstm_lm/cells.py),
    drawn from their own key so that the LSTM's weights are those of the plain model.

    As lamb (`utils.low_rank_factorization`): zero biases, and with a rank k each factor
    ~ N(0, s^2) truncated at 2s with s = (1 / (fan_in * k)) ** (1/4), so that their
    product has the variance 1 / fan_in of a matrix drawn directly. A full matrix is
    drawn truncated normal with s = full_gain * fan_in ** -1/2; lamb draws it with its
    cell's initializer, s = sqrt(1.3 / fan_in) (full_gain = sqrt(1.3), init="lamb")."""
    normal = truncated_normal

    lstm = []
    for layer, layer_key in zip(params["lstm"], jax.random.split(key, len(params["lstm"]))):
        in_size, H = layer["w_x"].shape[0], layer["w_h"].shape[0]
        layer_rounds = []
        for r, round_key in enumerate(jax.random.split(layer_key, rounds)):
            fan_in, fan_out = (H, in_size) if r % 2 == 0 else (in_size, H)  # 1: x by h
            k_u, k_v = jax.random.split(round_key)
            if rank:
                scale = (fan_in * rank) ** -0.25
                weights = {
                    "u": normal(k_u, (fan_in, rank), scale),
                    "v": normal(k_v, (rank, fan_out), scale),
                }
            else:
                weights = {"w": normal(k_u, (fan_in, fan_out), full_gain * fan_in**-0.5)}
            layer_rounds.append({**weights, "b": jnp.zeros((fan_out,), jnp.float32)})
        lstm.append({**layer, "mogrifier": layer_rounds})
    return {**params, "lstm": lstm}


def lamb_init(key: jax.Array, params: dict) -> dict:
    """`params` (tied; a full softmax or a mixture of softmaxes) with the embedding, the
    LSTM and the output layer redrawn as lamb draws them:

    - the embedding [V, E] by TF's variance_scaling_initializer(1.0, "fan_out",
      truncated_normal) (`lm.py`, the "im" scope): stddev sqrt(1 / E) / 0.8796;
    - each layer's w_x [I, 4H] and w_h [H, 4H] by lamb's own variance_scaling_initializer
      ("fan_in", truncated_normal; `utils.py`, `cell.py`'s cell_initializer), each tile
      with its own fan-in: stddev sqrt(1.3 / I) and sqrt(1.3 / H);
    - every gate's bias by the same, fan-in H: stddev sqrt(1.3 / H), not zero (lamb's
      forget-gate bias has mean forget_bias: with trainable_forget_bias,
      `model.init_params` adds it);
    - the softmax bias zero (`lm.py`, "om/bias");
    - a mixture's prior [H, K] and latent projection [H, K * E] by TF's
      variance_scaling_initializer(1.0, "fan_in", truncated_normal) (the "om" scope's,
      `utils.mixture_of_softmaxes`): stddev sqrt(1 / H) / 0.8796; the projection's bias
      zero.

    lamb's draw is truncated at 2 stddev and lamb's 1.3 makes up for the truncation
    only roughly (the variance is ~1.006 / n); TF's divides by 0.8796 exactly."""
    V, E = params["embedding"].shape
    k_embedding, k_out, *layer_keys = jax.random.split(key, 2 + len(params["lstm"]))
    embedding = truncated_normal(k_embedding, (V, E), math.sqrt(1.0 / E) / TRUNCATED_STDDEV)
    lstm = []
    for layer, layer_key in zip(params["lstm"], layer_keys):
        (fan_x, H4), H = layer["w_x"].shape, layer["w_h"].shape[0]
        k_x, k_h, k_b = jax.random.split(layer_key, 3)
        lstm.append(
            {
                **layer,
                "w_x": truncated_normal(k_x, (fan_x, H4), math.sqrt(1.3 / fan_x)),
                "w_h": truncated_normal(k_h, (H, H4), math.sqrt(1.3 / H)),
                "b": truncated_normal(k_b, (H4,), math.sqrt(1.3 / H)),
            }
        )
    out = {**params["softmax"], "b": jnp.zeros_like(params["softmax"]["b"])}
    if "prior" in out:  # the mixture of softmaxes
        (H, K), KE = out["prior"].shape, out["latent"]["b"].shape[0]
        stddev = math.sqrt(1.0 / H) / TRUNCATED_STDDEV
        k_prior, k_latent = jax.random.split(k_out)
        out["prior"] = truncated_normal(k_prior, (H, K), stddev)
        out["latent"] = {
            "w": truncated_normal(k_latent, (H, KE), stddev),
            "b": jnp.zeros((KE,), jnp.float32),
        }
    return {**params, "embedding": embedding, "lstm": lstm, "softmax": out}

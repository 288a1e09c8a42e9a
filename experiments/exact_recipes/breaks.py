"""Each step-equivalence test of tests/test_recipe_steps.py against deliberate breaks of
its recipe: a config key set the other way, or one line of ours changed (patched here,
in this process only). Every break must fail its test; prints one line per break.

    python experiments/exact_recipes/breaks.py

Run from the repository's root (it imports the tests).
"""

import contextlib
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import test_recipe_steps as steps  # noqa: E402

from lstm_lm import cells, model, optim, softmax  # noqa: E402

TESTS = {
    "zaremba": lambda: steps.test_a_zaremba_update_is_ptb_word_lms("ptb_medium"),
    "lamb": steps.test_a_mogrifier_update_is_lambs,
    "awd": lambda: steps.test_an_awd_update_is_awd_lstms_and_mos("awd_lstm_ptb"),
    "mos": lambda: steps.test_an_awd_update_is_awd_lstms_and_mos("mos_ptb"),
}


@contextlib.contextmanager
def overrides(extra: dict):
    """The tests' configs with `extra` on top of their own overrides."""
    tiny = steps.tiny
    steps.tiny = lambda name, sizes, width, **o: tiny(name, sizes, width, **{**o, **extra})
    try:
        yield
    finally:
        steps.tiny = tiny


@contextlib.contextmanager
def patched(module, name, value):
    real = getattr(module, name)
    setattr(module, name, value(real))
    try:
        yield
    finally:
        setattr(module, name, real)


def without_carry_resets(real):
    def layer_outputs(params, cfg, carry, inputs, masks=None, *args, **kwargs):
        masks = None if masks is None else {**masks, "carry": None}
        return real(params, cfg, carry, inputs, masks, *args, **kwargs)

    return layer_outputs


def without_latent_mask(real):
    def target_log_probs(params, cfg, h, targets, mask=None, temperature=None):
        return real(params, cfg, h, targets, None, temperature)

    return target_log_probs


BREAKS = [
    ("lamb", "the loss averaged per token", overrides({"optim.token_mean_loss": True})),
    (
        "lamb",
        "weight decay after the clip instead of L2 in the objective",
        overrides({"optim.l2_penalty": 0.0, "optim.weight_decay": 0.05}),
    ),
    ("lamb", "a constant forget bias", overrides({"model.trainable_forget_bias": False})),
    ("lamb", "optax's Adam for TF's", overrides({"optim.tf_adam": False})),
    ("lamb", "no skip connection", overrides({"model.skip_connection": False})),
    ("lamb", "the carry resets ignored", patched(model, "layer_outputs", without_carry_resets)),
    ("zaremba", "the loss averaged per token", overrides({"optim.token_mean_loss": True})),
    ("zaremba", "a trained forget bias", overrides({"model.trainable_forget_bias": True})),
    ("zaremba", "weight decay after the clip", overrides({"optim.weight_decay": 0.01})),
    ("awd", "optax's average (no torch_asgd)", overrides({"optim.torch_asgd": False})),
    ("awd", "TF's summed loss", overrides({"optim.token_mean_loss": False})),
    ("awd", "no length scaling", overrides({"train.random_lengths": False})),
    (
        "awd",
        "ASGD's lag of the length scale removed",
        patched(optim, "scale_by_length", lambda real: lambda torch_asgd=False: real(False)),
    ),
    (
        "awd",
        "the second bias left out of the gates",
        patched(cells, "gate_bias", lambda real: lambda layer: layer["b"]),
    ),
    ("mos", "optax's average (no torch_asgd)", overrides({"optim.torch_asgd": False})),
    ("mos", "TF's summed loss", overrides({"optim.token_mean_loss": False})),
    (
        "mos",
        "the latent mask not passed to the output layer",
        patched(softmax, "target_log_probs", without_latent_mask),
    ),
]


def main():
    failures = 0
    for test, what, breaking in BREAKS:
        with breaking:
            try:
                TESTS[test]()
                verdict = "NOT CAUGHT"
                failures += 1
            except AssertionError:
                verdict = "fails, as it should"
        print(f"{test:8s} {what:60s} {verdict}", flush=True)
    passed = []
    for test, run in TESTS.items():
        run()
        passed.append(test)
    print(f"unbroken: {', '.join(passed)} pass")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()

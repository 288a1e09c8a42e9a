"""Data parallel on 4 simulated CPU devices: the same numbers as on 1, and checkpoints that
move between device counts. The runs happen in a subprocess, since XLA_FLAGS must be set
before JAX starts."""

import json
import os
import socket
import subprocess
import sys

import pytest
from helpers import REPO, main_command, write_corpus

pytestmark = pytest.mark.slow  # runs in subprocesses

# A small 2-layer model of uneven sizes with dropout, AWD's weight drop, locked dropout
# between the layers and random lengths; checkpoints every 10 steps, all kept.
OVERRIDES = {
    "model.num_layers": 2,
    "model.hidden_sizes": (8, 6),
    "model.keep_prob": 0.5,
    "model.weight_drop": 0.3,
    "model.dropout_hidden": 0.2,
    "train.random_lengths": True,
    "train.length_bucket": 16,  # lengths of 5 to 13 here: one padded length, two at most
    "optim.max_grad_norm": 5.0,
    "optim.full_lr_epochs": 1,
    "train.num_steps": 3,
    "train.batch_size": 8,
    "train.num_epochs": 2,
    "train.steps_per_call": 4,
    "train.checkpoint_every_steps": 10,
    "train.keep_checkpoints": 50,
}

SCRIPT = r"""
import json, pathlib, shutil, sys
import jax
import numpy as np
from lstm_lm import config as config_lib, parallel, train

tmp, overrides = pathlib.Path(sys.argv[1]), json.loads(sys.argv[2])
# A resume compiles what its run compiled: take it from the persistent cache.
jax.config.update("jax_compilation_cache_dir", str(tmp / "jax_cache"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)

def run(name, num_devices, **more):
    config = config_lib.default_config()
    overrides["model.hidden_sizes"] = tuple(overrides["model.hidden_sizes"])
    config.update_from_flattened_dict(dict(overrides, **more))
    config.data.data_dir, config.train.num_devices = str(tmp / "data"), num_devices
    results = train.train_and_evaluate(config, tmp / name)
    metrics = (tmp / name / "metrics.jsonl").read_text().splitlines()
    return dict(results, epochs=[json.loads(line) for line in metrics])

def rewind(name, step):
    # What a run stopped right after its last checkpoint up to `step` leaves behind.
    for path in (tmp / name / "checkpoints").iterdir():
        if int(path.name) > step:
            shutil.rmtree(path)
    (tmp / name / "results.json").unlink()

# What the trainer hands its jitted call: each device's share of the batch and the carry.
create_training, shares = train.create_training, []

def spied_create_training(*args, **kwargs):
    state, schedule, train_fn, eval_fn = create_training(*args, **kwargs)

    def spy(state, carry, inputs, targets, *rest):
        rows = lambda a: a.sharding.shard_shape(a.shape)[a.ndim - 2 if a.ndim == 3 else 0]
        shares.append([rows(inputs), rows(targets), *[rows(c) for c in jax.tree.leaves(carry)]])
        return train_fn(state, carry, inputs, targets, *rest)

    return state, schedule, spy, eval_fn

train.create_training = spied_create_training
rows = parallel.put_rows(np.zeros((2, 8, 3), np.int32), parallel.make_mesh(4))
out = {"devices": len(jax.devices())}
out["rows_per_device"] = [shard.data.shape[1] for shard in rows.addressable_shards]
out["one"], out["four"] = run("one", 1), run("four", 4)
out["trainer_rows"] = shares[-1]
# The other output layers, one short epoch each.
short = {"train.num_epochs": 1, "train.max_batches_per_epoch": 4, "train.random_lengths": False}
mos = {"model.softmax": "mos", "model.mos_experts": 2, "model.dropout_latent": 0.2, **short}
adaptive = {"model.softmax": "adaptive", "model.softmax_cutoffs": (8, 20), **short}
adaptive["model.softmax_div_value"] = 2.0
for name, more in [("mos", mos), ("adaptive", adaptive)]:
    out[f"{name}_one"] = run(f"{name}_one", 1, **more)
    out[f"{name}_four"] = run(f"{name}_four", 4, **more)
# Fine-tuning averages every iterate (AWD's ASGD) from the trained weights.
tune = {
    "train.finetune_from": str(tmp / "one"),
    "train.num_epochs": 1,
    "train.max_batches_per_epoch": 24,
}
out["tune_one"], out["tune_four"] = run("tune_one", 1, **tune), run("tune_four", 4, **tune)
rewind("four", 40)
out["four_then_one"] = run("four", 1)
rewind("one", 40)
out["one_then_four"] = run("one", 4)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("parallel") / "data")


@pytest.fixture(scope="module")
def runs(data_dir):
    tmp = data_dir.parent
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp), json.dumps(OVERRIDES)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.splitlines()[-1])
    assert out["devices"] == 4 and out["rows_per_device"] == [2, 2, 2, 2]
    return out


def assert_same_run(got: dict, want: dict) -> None:
    """Equal to float tolerance: the batch's sums are reduced in another order."""
    for key in ("train_perplexity", "valid_perplexity", "test_perplexity"):
        assert got[key] == pytest.approx(want[key], rel=1e-5), key
    assert got["step"] == want["step"]
    for got_epoch, want_epoch in zip(got["epochs"], want["epochs"], strict=True):
        for key in ("train_perplexity", "valid_perplexity"):
            assert got_epoch[key] == pytest.approx(want_epoch[key], rel=1e-5), key


def test_four_devices_give_the_numbers_of_one(runs):
    assert_same_run(runs["four"], runs["one"])
    # The trainer's own batches and carry were split by rows, 2 of 8 to each device.
    assert runs["trainer_rows"] == [2] * len(runs["trainer_rows"])


@pytest.mark.parametrize("layer", ["mos", "adaptive"])
def test_four_devices_give_the_numbers_of_one_with_the_other_output_layers(runs, layer):
    assert runs[f"{layer}_one"]["valid_perplexity"] != runs["one"]["valid_perplexity"]
    assert_same_run(runs[f"{layer}_four"], runs[f"{layer}_one"])


def test_four_devices_average_the_iterates_as_one(runs):
    assert runs["tune_one"]["valid_perplexity"] != runs["one"]["valid_perplexity"]
    assert_same_run(runs["tune_four"], runs["tune_one"])


def test_a_checkpoint_from_four_devices_resumes_on_one_and_back(runs):
    assert_same_run(runs["four_then_one"], runs["one"])
    assert_same_run(runs["one_then_four"], runs["one"])


def test_two_processes_of_two_devices_train_like_one_device(runs, data_dir, tmp_path):
    """jax.distributed on CPU (gloo collectives): a 4-device mesh across 2 processes."""
    overrides = dict(OVERRIDES, **{"data.data_dir": data_dir})  # on ptb_tiny, as SCRIPT's runs
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = [f"--config.{k}={v}" for k, v in overrides.items()]
    args += [f"--workdir={tmp_path / 'run'}", f"--coordinator_address=127.0.0.1:{port}"]
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    logs = [tmp_path / f"process{i}.log" for i in range(2)]
    procs = [
        subprocess.Popen(
            main_command(tmp_path, *args, "--num_processes=2", f"--process_id={i}"),
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=logs[i].open("w"),
        )
        for i in range(2)
    ]
    returncodes = [p.wait(timeout=600) for p in procs]
    stderrs = [log.read_text() for log in logs]
    assert returncodes == [0, 0], stderrs
    assert "process 1 of 2" in stderrs[1] and "devices sharing the batch rows: 4" in stderrs[0]
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    for key in ("train_perplexity", "valid_perplexity", "test_perplexity"):
        assert results[key] == pytest.approx(runs["one"][key], rel=1e-5), key

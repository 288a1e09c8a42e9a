"""One trainer per workdir: a second one on it stops at once naming the holder, the first
is not disturbed, and a holder killed with SIGKILL leaves no stale lock."""

import json
import re
import signal
import subprocess

import pytest
from helpers import main_command, run_main
from test_runs import real_ptb_dir

pytestmark = pytest.mark.slow


def start_training(tmp_path, workdir, args):
    """A trainer in the background, returned once its first epoch is under way."""
    proc = subprocess.Popen(
        main_command(tmp_path, f"--workdir={workdir}", *args),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    for line in proc.stderr:
        if re.search(r"epoch 1 +\d+% perplexity", line):
            return proc
    raise AssertionError(f"the trainer ended before training: {proc.wait()}")


def test_a_second_trainer_on_a_workdir_stops_and_the_first_is_undisturbed(tmp_path):
    args = [f"--config.data.data_dir={real_ptb_dir()}", "--config.train.max_batches_per_epoch=3000"]
    alone = run_main(tmp_path, f"--workdir={tmp_path / 'alone'}", *args)
    assert alone.returncode == 0, alone.stderr

    workdir = tmp_path / "shared"
    first = start_training(tmp_path, workdir, args)
    second = run_main(tmp_path, f"--workdir={workdir}", *args)
    assert second.returncode == 1, second.stderr
    assert f"{workdir} is being trained by host " in second.stderr
    assert f"PID {first.pid}, since " in second.stderr and "another --workdir" in second.stderr
    first.stderr.read()
    assert first.wait(timeout=300) == 0
    want = json.loads((tmp_path / "alone" / "results.json").read_text())
    got = json.loads((workdir / "results.json").read_text())
    for key in ("train_perplexity", "valid_perplexity", "test_perplexity", "step"):
        assert got[key] == want[key], key

    # A holder killed with SIGKILL: the kernel dropped its lock, the next start trains.
    killed = start_training(tmp_path, tmp_path / "killed", args)
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=60)
    assert (tmp_path / "killed" / "lock").exists()  # the file stays; its lock does not
    after = run_main(tmp_path, f"--workdir={tmp_path / 'killed'}", *args)
    assert after.returncode == 0, after.stderr

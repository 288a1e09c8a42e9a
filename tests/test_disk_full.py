"""A full disk is an error, not a lost run: a checkpoint, metrics.jsonl or results.json that
cannot be written stops training with one line naming the file and the cause, the files
before it whole, and a rerun resumes to the results of a run that never failed.

The checkpoint's failure is orbax's as a full disk gives it (tests/full_disk/); the other
files' is the kernel's own ENOSPC, from /dev/full, where the file's temporary name points.
"""

import json
import os

import pytest
from helpers import REPO, TINY, copy_run, run_main

from lstm_lm import checkpoints

FULL_DISK_SHIM = REPO / "tests" / "full_disk"  # its sitecustomize.py fails orbax's saves
CAUSE = "No space left on device (errno 28)"
# What orbax raised when a tmpfs filled up during a save (the tensorstore spec cut off).
ORBAX_ENOSPC = (
    'RESOURCE_EXHAUSTED: Error writing "0.0/0.0" in OCDBT database at local file '
    '"/mnt/run/checkpoints/12.orbax-checkpoint-tmp/carry.orbax-checkpoint-tmp/ocdbt.process_0/'
    '": Error writing local file "/mnt/run/checkpoints/12.orbax-checkpoint-tmp/carry.orbax-'
    'checkpoint-tmp/ocdbt.process_0/manifest.ocdbt": Failed writing: "/mnt/run/checkpoints/'
    '12.orbax-checkpoint-tmp/carry.orbax-checkpoint-tmp/ocdbt.process_0/manifest.ocdbt.__lock"'
    ": Failed to write 205 bytes to file 16: No space left on device [os_error_code='28']"
)


def test_the_cause_is_read_from_oserror_and_from_orbaxs_message():
    assert checkpoints.os_cause(ValueError(ORBAX_ENOSPC)) == CAUSE
    assert checkpoints.os_cause(OSError(30, "Read-only file system")) == (
        "Read-only file system (errno 30)"
    )
    try:
        try:
            raise OSError(5, "Input/output error")
        except OSError as e:
            raise RuntimeError("wrapped") from e
    except RuntimeError as e:
        assert checkpoints.os_cause(e) == "Input/output error (errno 5)"
    assert checkpoints.os_cause(ValueError("a shape mismatch")) is None
    with pytest.raises(ValueError, match="a shape mismatch"):  # not a disk's: unchanged
        with checkpoints.writing(REPO / "x"):
            raise ValueError("a shape mismatch")


def test_write_text_on_a_full_disk_keeps_the_old_file(tmp_path):
    path = tmp_path / "results.json"
    path.write_text("old\n")
    os.symlink("/dev/full", tmp_path / "results.json.tmp")
    with pytest.raises(checkpoints.WriteFailed) as failed:
        checkpoints.write_text(path, "new\n")
    assert str(failed.value) == f"Could not write {path}: {CAUSE}."
    assert path.read_text() == "old\n"
    assert not os.path.lexists(tmp_path / "results.json.tmp")


def last_line(proc) -> str:
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return proc.stderr.strip().splitlines()[-1]


def resume_note(step: int) -> str:
    return (
        f"The latest checkpoint, step {step}, is whole: make room (or make it writable), "
        "then rerun the same command to resume from it."
    )


def read_results(workdir) -> dict:
    results = json.loads((workdir / "results.json").read_text())
    return {k: results[k] for k in ("train_perplexity", "valid_perplexity", "test_perplexity")}


def read_epochs(workdir) -> list[tuple]:
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return [
        (r["epoch"], r["train_perplexity"], r["valid_perplexity"]) for r in map(json.loads, lines)
    ]


@pytest.mark.slow
def test_a_checkpoint_save_on_a_full_disk_stops_and_a_rerun_ends_bitwise(trained, tmp_path):
    data_tmp, workdir = trained[0], tmp_path / "run"
    args = [f"--workdir={workdir}", f"--config.data.data_dir={data_tmp / 'data'}", *TINY]
    # Saves come at steps 12, 20, ... (every 10 steps, at the end of a 4-batch call).
    env = dict(os.environ, PYTHONPATH=str(FULL_DISK_SHIM), FULL_DISK_FROM_STEP="20")
    failed = run_main(data_tmp, *args, env=env)
    checkpoint = workdir / "checkpoints" / "20"
    assert last_line(failed) == f"Error: Could not write {checkpoint}: {CAUSE}. {resume_note(12)}"
    assert checkpoints.latest_step(workdir) == 12
    assert not (workdir / "results.json").exists()

    rerun = run_main(data_tmp, *args)
    assert rerun.returncode == 0, rerun.stderr
    assert "Resuming from the checkpoint at step 12" in rerun.stderr
    assert read_results(workdir) == read_results(trained[1])
    assert read_epochs(workdir) == read_epochs(trained[1])


@pytest.mark.slow
def test_metrics_and_results_on_a_full_disk_stop_and_keep_what_was_there(trained, tmp_path):
    workdir = copy_run(trained, tmp_path)
    metrics = (workdir / "metrics.jsonl").read_text()
    (workdir / "results.json").unlink()
    args = [f"--workdir={workdir}", f"--config.data.data_dir={trained[0] / 'data'}", *TINY]
    step = checkpoints.latest_step(workdir)

    os.symlink("/dev/full", workdir / "metrics.jsonl.tmp")  # its rewrite at the start fails
    failed = run_main(trained[0], *args)
    path = workdir / "metrics.jsonl"
    assert last_line(failed) == f"Error: Could not write {path}: {CAUSE}. {resume_note(step)}"
    assert (workdir / "metrics.jsonl").read_text() == metrics

    os.symlink("/dev/full", workdir / "results.json.tmp")  # the test pass runs, then this
    failed = run_main(trained[0], *args)
    path = workdir / "results.json"
    assert last_line(failed) == f"Error: Could not write {path}: {CAUSE}. {resume_note(step)}"
    assert not (workdir / "results.json").exists()

    rerun = run_main(trained[0], *args)
    assert rerun.returncode == 0, rerun.stderr
    assert read_results(workdir) == read_results(trained[1])
    assert (workdir / "metrics.jsonl").read_text() == metrics

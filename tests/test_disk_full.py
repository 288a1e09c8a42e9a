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


def test_the_learning_curve_on_a_full_disk_is_a_write_failure_naming_it(tmp_path):
    from lstm_lm import reporting

    path = tmp_path / "learning_curve.png"
    os.symlink("/dev/full", path)  # savefig writes the file in place
    history = [dict(epoch=1, train_perplexity=9.0, valid_perplexity=8.0)]
    with pytest.raises(checkpoints.WriteFailed) as failed:
        reporting.plot_learning_curve(history, path)
    assert str(failed.value) == f"Could not write {path}: {CAUSE}."


def test_best_weights_on_a_full_disk_fail_naming_them_and_keep_the_earlier_best(
    tmp_path, monkeypatch
):
    import numpy as np
    import orbax.checkpoint as ocp

    params = {"w": np.ones((2, 3), np.float32)}
    with checkpoints.best_manager(tmp_path) as mngr:
        checkpoints.save_best(mngr, params, {"epoch": 1, "valid_perplexity": 9.0})
    real_save = ocp.CheckpointManager.save

    def full_disk_save(self, step, *args, **kwargs):  # as orbax fails on a full tmpfs
        raise ValueError(ORBAX_ENOSPC)

    monkeypatch.setattr(ocp.CheckpointManager, "save", full_disk_save)
    with checkpoints.best_manager(tmp_path) as mngr:
        with pytest.raises(checkpoints.WriteFailed) as failed:
            checkpoints.save_best(mngr, {"w": 2 * params["w"]}, {"epoch": 3})
    best = (tmp_path / "best").resolve()
    assert str(failed.value) == f"Could not write {best / '3'}: {CAUSE}."
    monkeypatch.setattr(ocp.CheckpointManager, "save", real_save)
    with checkpoints.best_manager(tmp_path) as mngr:
        kept, record = checkpoints.restore_best(mngr, params)
    assert record["epoch"] == 1 and np.array_equal(kept["w"], params["w"])


def test_tensorboard_events_on_a_full_disk_stop_the_epoch_end_naming_them(tmp_path):
    """The event file is open from the start: its writes are made to fail where
    tensorboardX's record writer holds the file (a private attribute: the test skips if
    a tensorboardX release moves it)."""
    import errno

    from lstm_lm import reporting

    reporter = reporting.Reporter(tmp_path, [], 0)
    try:
        records = reporter.writer._get_file_writer().event_writer._ev_writer
        record_writer = records._py_recordio_writer
        file = record_writer._writer
    except AttributeError:
        reporter.close()
        pytest.skip("tensorboardX keeps its event file elsewhere in this release")

    class FullFile:
        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def flush(self):
            raise OSError(errno.ENOSPC, "No space left on device")

    record_writer._writer = FullFile()
    record = dict(epoch=1, train_perplexity=9.0, valid_perplexity=8.0, seconds=1.0)
    try:
        with pytest.raises(checkpoints.WriteFailed) as failed:
            reporter.epoch_end([record], step=10)
    finally:
        record_writer._writer = file  # room again: the events close cleanly
        reporter.close()
    assert str(failed.value) == f"Could not write {tmp_path / 'tensorboard'}: {CAUSE}."

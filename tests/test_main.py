"""main.py's own logic: the resume command it prints."""

import importlib.util
import shlex

import pytest
from helpers import REPO

spec = importlib.util.spec_from_file_location("lstm_lm_main", REPO / "main.py")
main = importlib.util.module_from_spec(spec)
spec.loader.exec_module(main)


@pytest.mark.parametrize(
    "spelling",
    [["--workdir=old"], ["--workdir", "old"], ["-workdir=old"], ["-workdir", "old"]],
)
def test_the_resume_command_replaces_the_workdir_in_any_spelling(spelling, monkeypatch):
    argv = ["main.py", "--config=c.py", *spelling, "--config.train.num_epochs=2"]
    monkeypatch.setattr("sys.argv", argv)
    command = shlex.split(main.resume_command("runs/a b"))
    want = [
        "python",
        "main.py",
        "--config=c.py",
        "--config.train.num_epochs=2",
        "--workdir=runs/a b",
    ]
    assert command == want


def test_the_resume_command_keeps_flags_that_only_start_like_workdir(monkeypatch):
    monkeypatch.setattr("sys.argv", ["main.py", "--workdirs_note=x", "--workdir", "old"])
    assert shlex.split(main.resume_command("new")) == [
        "python",
        "main.py",
        "--workdirs_note=x",
        "--workdir=new",
    ]

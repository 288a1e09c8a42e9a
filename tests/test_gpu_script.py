"""The GPU window's script runs end to end with --smoke (tiny shapes, on the CPU here)."""

import json
import os
import subprocess
import sys

import pytest
from helpers import REPO, write_corpus

pytestmark = pytest.mark.slow  # a subprocess that trains


def test_the_gpu_script_smoke_run_benchmarks_and_trains(tmp_path):
    write_corpus(tmp_path / "data" / "ptb")
    env = os.environ | {"LSTM_LM_DATA_DIR": str(tmp_path / "data")}
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(REPO / "experiments" / "gpu" / "run.py"), "--smoke", f"--out={out}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    info = json.loads((out / "benchmark.json").read_text())
    tiny = info["benchmark"]["tiny"]
    assert tiny["ours_train"] > 0 and tiny["ours_eval"] > 0
    assert info["mogrifier"]["mogrifier"] > 0 and info["mogrifier"]["lstm"] > 0
    assert info["softmax"]["tiny"]["adaptive"]["words_per_sec"] > 0
    assert info["ptb_medium"]["test_perplexity"] > 1  # the run finished and tested
    assert (out / "ptb_medium" / "results.json").exists()
    assert "| tiny |" in (out / "summary.md").read_text()
    assert "Adaptive softmax (tiny)" in (out / "summary.md").read_text()

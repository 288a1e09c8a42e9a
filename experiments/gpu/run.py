"""One command for a short GPU window: lstm_lm against PyTorch's cuDNN nn.LSTM on the
small, medium and large shapes; the newer models (the Mogrifier cell against the LSTM,
ptb_small_mogrifier against ptb_small_regularized; the adaptive softmax against the full
one at WikiText-103's vocabulary); then a full ptb_medium run (39 epochs) when the
measured speed says it ends within the time left.

    pip install -e ".[bench]"          # PyTorch, the peer; without it only ours is timed
    LSTM_LM_DATA_DIR=/path/to/datasets python experiments/gpu/run.py --out=gpu_results
    python experiments/gpu/run.py --smoke --out=/tmp/gpu_smoke   # CPU, seconds: its test

`--budget_s` (default 600) is the whole window. The benchmark comes first (alternating
timed windows, medians, as experiments/benchmark.py); the medium run starts only if its
estimate (39 epochs at the measured training speed, plus a tenth for evaluation) fits in
what is left, and is stopped with SIGTERM at the deadline otherwise; it checkpoints, so
the printed command resumes it in the next window. Writes OUT/benchmark.json,
OUT/summary.md and, when it ran, OUT/ptb_medium/ (a workdir) and OUT/ptb_medium.log.
"""

import argparse
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

START = time.monotonic()
REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "experiments"))
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # leave PyTorch GPU memory

import benchmark  # noqa: E402
import jax  # noqa: E402
import mogrifier_ab  # noqa: E402
import softmax_scale  # noqa: E402

TRAIN_WORDS = 929_589  # PTB's training split, words + <eos>
MEDIUM_EPOCHS = 39


def peers() -> list[str]:
    return ["ours", "torch"] if benchmark.torch_version() else ["ours"]


def device_line() -> str:
    line = f"JAX {jax.__version__} on {jax.devices()}"
    try:
        import torch

        gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA"
        line += f"; PyTorch {torch.__version__} ({gpu})"
    except ImportError:
        line += "; PyTorch not installed"
    return line


def medium_run(out: pathlib.Path, deadline: float, smoke: bool) -> dict:
    """Train ptb_medium (smoke: ptb_tiny, a few batches) in OUT/ptb_medium until done or
    the deadline; returns its results, or where it stopped."""
    workdir = out / "ptb_medium"
    config = "ptb_tiny" if smoke else "ptb_medium"
    cmd = [sys.executable, str(REPO / "main.py"), f"--config={REPO / 'configs' / config}.py"]
    cmd += [f"--workdir={workdir}"]
    if smoke:
        cmd += ["--config.train.max_batches_per_epoch=5", "--config.eval.test_num_steps=5"]
    with open(out / "ptb_medium.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        try:
            proc.wait(timeout=max(deadline - time.monotonic(), 1))
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGTERM)  # it saves a checkpoint, then exits
            proc.wait()
    results = workdir / "results.json"
    if results.exists():
        return json.loads(results.read_text())
    return {"stopped": "at the deadline; rerun to resume", "command": " ".join(cmd)}


def summary(info: dict) -> str:
    lines = [f"# GPU window: {info['devices']}", "", f"budget {info['budget_s']} s", ""]
    lines += [
        "| shape | train w/s ours | torch | ours/torch | eval w/s ours | torch | ours/torch |"
    ]
    lines += ["| --- | --- | --- | --- | --- | --- | --- |"]
    for shape, r in info["benchmark"].items():
        cells = [shape]
        for mode in ("train", "eval"):
            ours, theirs = r[f"ours_{mode}"], r.get(f"torch_{mode}")
            ratio = f"{ours / theirs:.2f}x" if theirs else "-"
            cells += [f"{ours:,.0f}", f"{theirs:,.0f}" if theirs else "-", ratio]
        lines.append("| " + " | ".join(cells) + " |")
    ms = info["mogrifier"]
    lines += ["", f"Mogrifier: {ms['mogrifier']:.1f} ms/batch against the LSTM's {ms['lstm']:.1f}"]
    for shape, layers in info["softmax"].items():
        full, adaptive = layers["full"], layers["adaptive"]
        lines.append(
            f"Adaptive softmax ({shape}): {adaptive['words_per_sec']:,.0f} words/s against the "
            f"full softmax's {full['words_per_sec']:,.0f}: {adaptive['ratio_to_full']:.2f}x"
        )
    lines += ["", f"ptb_medium: {json.dumps(info['ptb_medium'])}", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, type=pathlib.Path)
    parser.add_argument("--budget_s", type=float, default=600.0)
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on any device")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    deadline = START + args.budget_s - 15  # room to write the results
    shapes = ["tiny"] if args.smoke else ["small", "medium", "large"]
    windows = 1 if args.smoke else 3
    info = {"devices": device_line(), "budget_s": args.budget_s, "benchmark": {}}
    print(info["devices"], flush=True)
    for shape in shapes:
        batches = {"tiny": 2, "small": 40, "medium": 16, "large": 8}[shape]
        info["benchmark"][shape] = benchmark.throughput(shape, windows, batches, peers())
        print(shape, json.dumps(info["benchmark"][shape]), flush=True)
    rounds, batches = (1, 1) if args.smoke else (3, 10)
    info["mogrifier"] = mogrifier_ab.time_variants(["lstm", "mogrifier"], rounds, batches)
    print("mogrifier", json.dumps(info["mogrifier"]), flush=True)
    softmax_shape = "tiny" if args.smoke else "wt103"
    info["softmax"] = {
        softmax_shape: softmax_scale.measure(softmax_shape, ["full", "adaptive"], windows)
    }
    print("softmax", json.dumps(info["softmax"]), flush=True)
    measured = info["benchmark"]["tiny" if args.smoke else "medium"]["ours_train"]
    estimate = 1.1 * MEDIUM_EPOCHS * TRAIN_WORDS / measured
    info["ptb_medium_estimate_s"] = estimate
    if args.smoke or time.monotonic() + estimate < deadline:
        info["ptb_medium"] = medium_run(args.out, deadline, args.smoke)
    else:
        left = deadline - time.monotonic()
        info["ptb_medium"] = {"skipped": f"needs ~{estimate:.0f} s, {left:.0f} s left"}
    (args.out / "benchmark.json").write_text(json.dumps(info, indent=2) + "\n")
    (args.out / "summary.md").write_text(summary(info))
    print(summary(info))


if __name__ == "__main__":
    main()

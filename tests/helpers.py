"""Helpers the tests share: a small synthetic corpus, running main.py, a tarball or zip
archive of a corpus, and a tiny config."""

import io
import os
import pathlib
import shutil
import subprocess
import sys
import tarfile
import zipfile

import numpy as np

from lstm_lm import config as config_lib

REPO = pathlib.Path(__file__).resolve().parents[1]


def write_corpus(directory: pathlib.Path) -> pathlib.Path:
    """PTB-format files over 40 words and <unk>, in `directory`; returns it."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(40)] + ["<unk>"]
    for name, lines in (("ptb.train.txt", 400), ("ptb.valid.txt", 60), ("ptb.test.txt", 60)):
        text = "".join(" " + " ".join(rng.choice(words, 8)) + " \n" for _ in range(lines))
        (directory / name).write_text(text)
    return directory


# main.py's arguments for the short ptb_tiny run of conftest's `trained` fixture.
TINY = [
    "--config.train.num_epochs=2",
    "--config.train.steps_per_call=4",
    "--config.train.checkpoint_every_steps=10",
]


def copy_run(trained, tmp_path: pathlib.Path) -> pathlib.Path:
    """A copy of the `trained` fixture's workdir, at tmp_path/run."""
    shutil.copytree(trained[1], tmp_path / "run")
    return tmp_path / "run"


def main_command(
    tmp_path: pathlib.Path, *args: str, config: str = "ptb_tiny", cache_dir=None
) -> list[str]:
    """main.py with a config (None: no --config) and a compilation cache: `cache_dir`,
    else the session's (conftest.py), else one under tmp_path."""
    config_args = [f"--config={REPO / 'configs' / config}.py"] if config else []
    cache_dir = cache_dir or os.environ.get("LSTM_LM_TEST_JAX_CACHE") or tmp_path / "jax_cache"
    return [
        sys.executable,
        str(REPO / "main.py"),
        *config_args,
        f"--jax_cache_dir={cache_dir}",
        *args,
    ]


def run_main(
    tmp_path: pathlib.Path, *args: str, config: str = "ptb_tiny", env=None, cache_dir=None
):
    return subprocess.run(
        main_command(tmp_path, *args, config=config, cache_dir=cache_dir),
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def make_tarball(files: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, text in files.items():
            payload = text.encode()
            info = tarfile.TarInfo(f"./simple-examples/data/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


def make_zip(files: dict[str, str | bytes], folder: str) -> bytes:
    """A .zip holding `folder/<name>` for each file, as WikiText's archives do (`<name>`
    at its root when `folder` is "", as enwik8's)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, text in files.items():
            zf.writestr(f"{folder}/{name}" if folder else name, text)
    return buf.getvalue()


def tiny_config(data_dir: pathlib.Path, **model_overrides):
    """A 1x2 model on `data_dir`'s PTB-named files, 1 epoch, 2 steps per batch."""
    config = config_lib.default_config()
    config.data.data_dir = str(data_dir)
    config.model.update({"num_layers": 1, "hidden_size": 2} | model_overrides)
    config.optim.full_lr_epochs = 1
    config.train.update(num_steps=2, num_epochs=1, steps_per_call=2, checkpoint_every_steps=2)
    return config

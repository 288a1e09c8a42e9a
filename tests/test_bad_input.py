"""Bad input gets one clear line on stderr and exit status 1 (absl usage errors: 1 too),
never a traceback from deep inside."""

import hashlib
import json
import os
import pathlib

import pytest
from helpers import REPO, make_tarball, make_zip, run_main, write_corpus

from lstm_lm import config as config_lib
from lstm_lm import data, inference

pytestmark = pytest.mark.slow  # each case runs main.py in a subprocess
DENIED_PATHS_SHIM = REPO / "tests" / "denied_paths"  # its sitecustomize.py denies reads


def assert_clear_error(proc, *fragments: str) -> None:
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in proc.stderr


def train_with(tmp_path, data_dir, *args, env=None):
    return run_main(
        tmp_path,
        f"--workdir={tmp_path / 'run'}",
        f"--config.data.data_dir={data_dir}",
        *args,
        env=env,
    )


def test_missing_data_file(tmp_path):
    data_dir = write_corpus(tmp_path / "data")
    (data_dir / "ptb.valid.txt").unlink()
    proc = train_with(tmp_path, data_dir)
    assert_clear_error(
        proc, f"{data_dir} lacks ptb.valid.txt but has the other files of the corpus"
    )


def test_empty_data_file(tmp_path):
    data_dir = write_corpus(tmp_path / "data")
    (data_dir / "ptb.test.txt").write_text("\n\n")
    proc = train_with(tmp_path, data_dir)
    assert_clear_error(proc, f"{data_dir / 'ptb.test.txt'} holds no words")


def train_denied(tmp_path, data_dir, denied: pathlib.Path):
    """train_with, in a process to which `denied` reads as permission denied."""
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(DENIED_PATHS_SHIM), os.environ.get("PYTHONPATH", "")]),
        DENIED_PATHS=str(denied),
    )
    return train_with(tmp_path, data_dir, env=env)


def test_an_unreadable_data_file(tmp_path):
    data_dir = write_corpus(tmp_path / "data")
    valid = data_dir / "ptb.valid.txt"
    proc = train_denied(tmp_path, data_dir, valid)
    assert_clear_error(proc, f"Cannot read {valid}", "Permission denied")


def test_an_unreadable_data_directory(tmp_path):
    data_dir = write_corpus(tmp_path / "data")
    proc = train_denied(tmp_path, data_dir, data_dir)
    assert_clear_error(proc, f"No permission to read the data directory {data_dir}")


def test_download_with_a_wrong_checksum(tmp_path, serve):
    not_ptb = {name: " some other text\n" for name in data.PTB_FILES}
    url = serve(make_tarball(not_ptb))
    proc = train_with(tmp_path, tmp_path / "empty", f"--config.data.url={url}")
    assert_clear_error(proc, "ptb.train.txt from", "has SHA-256", "To place the files by hand")
    assert list((tmp_path / "empty").iterdir()) == []


def test_a_wikitext_archive_that_is_not_the_published_one(tmp_path, serve):
    files = {name: " a b\n" for name in data.WIKITEXT_FILES}
    archive = make_zip(files, "wikitext-2")
    url = serve(archive, name="wikitext-2-v1.zip")
    proc = train_with(
        tmp_path, tmp_path / "empty", "--config.data.name=wikitext2", f"--config.data.url={url}"
    )
    digest = hashlib.sha256(archive).hexdigest()
    published = "92675f1d63015c1c8b51f1656a52d5bdbc33aafa60cc47a218a66e7ee817488c"
    assert_clear_error(
        proc, f"wikitext-2-v1.zip from {url} has SHA-256 {digest}, expected {published}"
    )
    assert list((tmp_path / "empty").iterdir()) == []


@pytest.mark.parametrize(
    "override, message",
    [
        ("--config.train.batch_size=0", "config.train.batch_size must be > 0, got 0"),
        ("--config.model.keep_prob=1.5", "config.model.keep_prob must be in (0, 1], got 1.5"),
        ("--config.optim.learning_rate=inf", "config.optim.learning_rate must be finite, got inf"),
        ("--config.train.steps_per_call=0", "config.train.steps_per_call must be > 0, got 0"),
        ("--config.train.num_steps=1000", "The train split has 3600 words, too few for"),
        ("--config.eval.test_num_steps=5000", "config.eval.test_num_steps=5000 steps"),
        ("--config.data.archive_sha256=ABC", "config.data.archive_sha256 must be the 64"),
    ],
)
def test_nonsensical_config_value(tmp_path, override, message):
    proc = train_with(tmp_path, write_corpus(tmp_path / "data"), override)
    assert_clear_error(proc, message)


def test_unknown_config_key(tmp_path):
    proc = train_with(tmp_path, write_corpus(tmp_path / "data"), "--config.train.batchsize=3")
    assert_clear_error(proc, "the config has no such key", 'Did you mean "batch_size"')


def test_a_key_of_the_old_flat_config_is_told_its_group(tmp_path):
    proc = train_with(tmp_path, write_corpus(tmp_path / "data"), "--config.hidden_size=3")
    assert_clear_error(proc, "no such key", "grouped now: --config.model.hidden_size")


def test_workdir_that_is_a_file(tmp_path):
    (tmp_path / "run").write_text("")
    proc = train_with(tmp_path, write_corpus(tmp_path / "data"))
    assert_clear_error(proc, f"--workdir={tmp_path / 'run'} is not a directory")


def test_modes_without_a_run(tmp_path):
    proc = run_main(tmp_path, "--mode=sample", config=None)
    assert_clear_error(proc, "--mode=sample needs --workdir of a trained run")
    proc = run_main(tmp_path, "--mode=evaluate", f"--workdir={tmp_path}", config=None)
    assert_clear_error(proc, f"{tmp_path / 'config.json'} is missing")


def test_a_workdir_of_the_flat_config_is_refused_with_what_to_do(tmp_path):
    old = tmp_path / "old_run"
    old.mkdir()
    (old / "config.json").write_text(json.dumps({"hidden_size": 200, "num_layers": 2}))
    (old / "vocab.txt").write_text("<eos>\nthe\n")
    evaluate = run_main(tmp_path, "--mode=evaluate", f"--workdir={old}", config=None)
    data_dir = write_corpus(tmp_path / "data")
    resume = run_main(tmp_path, f"--workdir={old}", f"--config.data.data_dir={data_dir}")
    for proc in (evaluate, resume):
        assert_clear_error(proc, "is a flat config of lstm_lm 0.1", "Train in a new workdir")


def test_the_inspection_modes_refuse_bad_input_in_one_line(trained, tmp_path):
    _, workdir, _ = trained
    run = inference.load_run(workdir)
    V = run.cfg.vocab_size
    with pytest.raises(config_lib.ConfigError, match=f"--num_words={V + 1}: the vocabulary has"):
        inference.look_at_embeddings(run, "input", V + 1, [], tmp_path / "out")
    with pytest.raises(config_lib.ConfigError, match="--neighbours: zebra not in the vocabulary"):
        inference.look_at_embeddings(run, "input", 10, ["w1", "zebra"], None)
    (tmp_path / "empty.txt").write_text("\n  \n")
    with pytest.raises(data.DataError, match="has no prompts: write one per line"):
        inference.read_prompts(tmp_path / "empty.txt")
    with pytest.raises(data.DataError, match="Could not read the prompt file"):
        inference.read_prompts(tmp_path / "missing.txt")
    with pytest.raises(config_lib.ConfigError, match="must end in .tsv or .jsonl"):
        inference.score_file(run, tmp_path / "empty.txt", per_word=tmp_path / "rows.csv")
    # Through main.py: a usage error, a flag of another mode, and a user error, one line each.
    embed = ["--mode=embeddings", f"--workdir={workdir}"]
    assert_clear_error(run_main(tmp_path, *embed, config=None), "needs --out=DIR")
    proc = run_main(tmp_path, *embed, "--out=x", "--per_word=rows.tsv", config=None)
    assert_clear_error(proc, "--per_word: for --mode=score only")
    proc = run_main(tmp_path, f"--workdir={tmp_path / 'new'}", "--step=3")  # training
    assert_clear_error(proc, "--step: for --mode=evaluate or score or predict or sample or")
    proc = run_main(tmp_path, *embed, "--neighbours=zebra", config=None)
    assert_clear_error(proc, "Error: --neighbours: zebra not in the vocabulary")
    last_line = proc.stderr.strip().splitlines()[-1]  # the error, on one line, last
    assert last_line.startswith("Error: --neighbours: zebra not in the vocabulary")
    assert proc.stdout == ""

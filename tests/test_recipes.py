"""Whole runs of today's recipes: the Mogrifier with Adam, averaging and a learning-rate
drop resumed mid-epoch, bitwise; the best-validation weights tested, kept apart from the
rolling checkpoints and through a resume."""

import json
import pathlib

import jax
import pytest
from helpers import REPO
from test_runs import awd_tiny_config, progress_at, read_jsonl, rewind, write_drifting_corpus

from lstm_lm import checkpoints, evaluation, inference, parallel, provenance, train

pytestmark = [
    pytest.mark.slow,
    # orbax's restore can leave one of its read coroutines un-awaited (see test_runs.py)
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
    pytest.mark.filterwarnings("ignore:coroutine .* was never awaited:RuntimeWarning"),
]


def mogrifier_adam_config(data_dir: pathlib.Path):
    config = awd_tiny_config(data_dir)
    config.model.update(cell="mogrifier", mogrifier_rounds=3, mogrifier_rank=2)
    config.model.cap_input_gate = True
    config.optim.update(name="adam", b1=0.0, learning_rate=0.1, max_grad_norm=10.0)
    config.optim.lr_drop_epochs = (3,)
    config.train.update(test_weights="best", random_lengths=False)  # one compiled step
    config.eval.temperature_lowest = 0.8  # lamb's softmax temperature, tuned every epoch
    return config


def checkpoint_steps(workdir: pathlib.Path) -> list[int]:
    return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir())


def rewind_to(workdir: pathlib.Path, step: int) -> None:
    """As `rewind`, and the best weights of epochs not finished at `step` go too: the
    workdir as a run stopped right after that checkpoint leaves it."""
    rewind(workdir, step)
    finished = progress_at(workdir, step)["epoch"] - 1
    with checkpoints.best_manager(workdir) as mngr:
        for epoch in [e for e in mngr.all_steps() if e > finished]:
            mngr.delete(epoch)


def test_a_mogrifier_adam_run_with_averaging_and_a_drop_resumes_bitwise(tmp_path):
    config = mogrifier_adam_config(write_drifting_corpus(tmp_path / "data"))
    workdir = tmp_path / "run"
    straight = train.train_and_evaluate(config, workdir)
    history = read_jsonl(workdir / "metrics.jsonl")
    assert [r["lr"] for r in history] == pytest.approx([0.1] * 3 + [0.01] * 2)
    assert any(r["averaged"] for r in history)  # NT-ASGD's average over Adam's iterates
    assert all(0.8 <= r["temperature"] <= 1.06 for r in history)
    assert straight["softmax_temperature"] == history[straight["test_epoch"] - 1]["temperature"]
    run = inference.load_run(workdir)  # the best weights, which evaluate at their temperature
    assert run.temperature == straight["softmax_temperature"]
    evaluated = inference.evaluate_run(run, None, None)
    assert evaluated["test_perplexity"] == pytest.approx(straight["test_perplexity"], rel=1e-6)
    mid_epoch = [
        step
        for step in checkpoint_steps(workdir)
        if progress_at(workdir, step)["batch"] and progress_at(workdir, step)["epoch"] >= 4
    ]
    rewind_to(workdir, mid_epoch[0])  # after the drop, averaging under way
    resumed = train.train_and_evaluate(config, workdir)
    for key in ("train_perplexity", "valid_perplexity", "test_perplexity", "step", "test_epoch"):
        assert resumed[key] == straight[key], key
    for got, want in zip(read_jsonl(workdir / "metrics.jsonl"), history):
        assert got["valid_perplexity"] == want["valid_perplexity"]
    # run.json: one record for the run and one for its resume, each naming its code
    records = json.loads((workdir / "run.json").read_text())["records"]
    assert len(records) == 2
    commit = provenance.git(REPO, "rev-parse", "HEAD") or "unknown"
    assert [r["commit"] for r in records] == [commit, commit]
    assert records[1]["versions"]["jax"] == jax.__version__
    assert records[1]["devices"]["platform"] == "cpu" and records[1]["cpu"]


def evaluate_checkpoint(workdir: pathlib.Path, step: int, config) -> float:
    """Test perplexity of the weights a checkpoint's run would test at that step, at the
    softmax temperature tuned for them."""
    run = inference.load_run(workdir, step)  # a named step: that checkpoint's weights
    corpus = train.load_data(config)[1]
    return evaluation.evaluate(
        evaluation.make_eval_fn(run.cfg),
        run.params,
        corpus.test,
        config.eval.test_batch_size,
        config.eval.test_num_steps,
        cfg=run.cfg,
        mesh=parallel.make_mesh(1),
        temperature=run.temperature,
    )


def test_best_weights_are_tested_and_survive_rolling_checkpoints_and_a_resume(tmp_path):
    """On the drifting corpus, at this learning rate, validation gets worse after the
    first epoch: the tested weights are the best epoch's, not the last's."""
    config = mogrifier_adam_config(write_drifting_corpus(tmp_path / "data"))
    config.optim.update(nonmono=0, lr_drop_epochs=())  # the weights of each epoch's end
    config.eval.temperature_lowest = 0.0  # each epoch's weights at their plain softmax
    config.train.num_epochs = 3
    workdir = tmp_path / "run"
    results = train.train_and_evaluate(config, workdir)
    history = read_jsonl(workdir / "metrics.jsonl")
    valid = [r["valid_perplexity"] for r in history]
    best = 1 + valid.index(min(valid))
    assert best < len(history)  # validation got worse after the best epoch
    assert (results["test_weights"], results["test_epoch"]) == ("best", best)
    assert results["valid_perplexity"] == min(valid)
    # The tested perplexity is that of the checkpoint at the end of the best epoch.
    end_of = {
        progress_at(workdir, s)["epoch"] - 1: s
        for s in checkpoint_steps(workdir)
        if progress_at(workdir, s)["batch"] == 0
    }
    want = evaluate_checkpoint(workdir, end_of[best], config)
    assert results["test_perplexity"] == pytest.approx(want, rel=1e-6)
    last = evaluate_checkpoint(workdir, end_of[len(history)], config)
    assert abs(last - want) > 1e-3 * want

    # Rolling checkpoints: with one kept, the best epoch's is gone; best/ is not.
    kept_one = config.copy_and_resolve_references()
    kept_one.train.keep_checkpoints = 1
    rolled = tmp_path / "rolled"
    train.train_and_evaluate(kept_one, rolled)
    assert len(checkpoint_steps(rolled)) == 1
    rolled_results = json.loads((rolled / "results.json").read_text())
    assert rolled_results["test_perplexity"] == results["test_perplexity"]
    assert rolled_results["test_epoch"] == best
    # evaluate/score/sample load the weights the run tests.
    run = inference.load_run(rolled)
    assert inference.evaluate_run(run, None, None)["test_perplexity"] == pytest.approx(
        results["test_perplexity"], rel=1e-6
    )

    # A resume from after the best epoch keeps them and tests them.
    after_best = [
        s for s in checkpoint_steps(workdir) if progress_at(workdir, s)["epoch"] > best + 1
    ]
    rewind_to(workdir, after_best[0])
    resumed = train.train_and_evaluate(config, workdir)
    assert resumed["test_epoch"] == best
    assert resumed["test_perplexity"] == results["test_perplexity"]

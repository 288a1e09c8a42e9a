"""Character- and byte-level corpora: reading, the published counts, downloads, and bits per
character wherever perplexity is reported."""

import csv
import dataclasses
import importlib
import json
import math
import pathlib

import jax
import numpy as np
import pytest
from helpers import make_tarball, make_zip, run_main

from lstm_lm import config as config_lib
from lstm_lm import data, fetch, inference, model, reporting, symbols

EOS = "<eos>"


def test_characters_are_read_one_by_one_the_space_included_and_newlines_as_eos(tmp_path):
    path = tmp_path / "text.txt"
    path.write_bytes("ab a\nb\u00e9\r\nc".encode())  # "\r\n" is one newline, as in text mode
    expected = ["a", "b", " ", "a", EOS, "b", "\u00e9", EOS, "c"]
    assert symbols.read_symbols(path, "chars") == expected
    counts = symbols.count_symbols(path, "chars")
    assert counts == {"a": 2, "b": 2, " ": 1, EOS: 2, "\u00e9": 1, "c": 1}
    vocab = data.build_vocab(counts)  # by count, then by symbol: " " < "<eos>" < "a"
    assert list(vocab) == [EOS, "a", "b", " ", "c", "\u00e9"]
    ids = symbols.file_ids(path, vocab, "chars")
    np.testing.assert_array_equal(ids, [vocab[s] for s in expected])


def test_bytes_are_read_one_by_one_and_named_readably(tmp_path):
    path = tmp_path / "text.txt"
    path.write_bytes(b"\xc3\xa9\n\x01A \r")
    expected = ["<c3>", "<a9>", EOS, "<01>", "A", " ", "<0d>"]
    assert symbols.read_symbols(path, "bytes") == expected
    assert symbols.count_symbols(path, "bytes") == dict.fromkeys(expected, 1)
    assert symbols.text_symbols("\u00e9 A", "bytes") == ["<c3>", "<a9>", " ", "A"]


@pytest.mark.parametrize("tokens", ["chars", "bytes"])
def test_joining_the_symbols_gives_back_the_text(tmp_path, tokens):
    text = "the caf\u00e9 <is> open\n\nat 9 \u2014 come\n"
    path = tmp_path / "text.txt"
    path.write_text(text)
    assert symbols.join_symbols(symbols.read_symbols(path, tokens), tokens) == text
    assert symbols.join_symbols(symbols.text_symbols(text, tokens), tokens) == text


def mikolov_char_file(word_file: pathlib.Path, char_file: pathlib.Path) -> None:
    """Mikolov's PTB-char rewrite of a PTB file, as his README describes it ("the same data,
    rewritten as sequences of characters, with spaces rewritten as '_'"): a line's words
    joined by `_`, every character then separated by a space ("<unk>" spelled out)."""
    with open(word_file) as src, open(char_file, "w") as dst:
        for line in src:
            dst.write(" ".join("_".join(line.split())) + "\n")


@pytest.fixture(scope="module")
def ptb_char_dir(tmp_path_factory):
    ptb_dir = data.data_root() / "ptb"  # the real PTB, as tests/test_data.py reads it
    if not (ptb_dir / "ptb.train.txt").is_file():
        pytest.skip(f"set ${data.DATA_DIR_ENV} to a folder holding ptb/ptb.train.txt")
    folder = tmp_path_factory.mktemp("ptb_char")
    for split in ("train", "valid", "test"):
        mikolov_char_file(ptb_dir / f"ptb.{split}.txt", folder / f"ptb.char.{split}.txt")
    return folder


def test_ptb_char_from_the_ptb_has_the_published_counts_and_50_symbols(ptb_char_dir):
    config = config_lib.default_config()
    config.data.update(name="ptb_char", level="char", data_dir=str(ptb_char_dir))
    config_lib.validate(config)
    corpus = data.load(config.data)
    counts = [len(corpus.train), len(corpus.valid), len(corpus.test)]
    # Merity et al. (2018), Table 1: 5.01M / 393k / 442k characters.
    assert counts == [5_017_482, 393_042, 442_423]
    assert counts == list(data.DATASETS["ptb_char"].num_tokens.values())
    assert len(corpus.vocab) == 50 and {"_", "<", ">", "N", EOS} <= set(corpus.vocab)
    id_to_symbol = list(corpus.vocab)
    first = "".join(id_to_symbol[i] for i in corpus.valid[:22])
    assert first == "consumers_may_want_to_"  # ptb.valid.txt: " consumers may want to ..."


def test_ptb_char_downloads_checked_by_its_published_counts(ptb_char_dir, tmp_path, serve):
    files = {p.name: p.read_text() for p in sorted(ptb_char_dir.iterdir())}
    url = serve(make_tarball(files))
    fetch.download(data.DATASETS["ptb_char"], tmp_path / "ptb_char", (url,))
    assert {p.name: p.read_text() for p in (tmp_path / "ptb_char").iterdir()} == files

    short = dict(files, **{"ptb.char.valid.txt": files["ptb.char.valid.txt"][2:]})  # "c "
    url = serve(make_tarball(short))
    with pytest.raises(data.DataError, match="ptb.char.valid.txt from .* has 393041 tokens"):
        fetch.download(data.DATASETS["ptb_char"], tmp_path / "again", (url,))
    assert not (tmp_path / "again").exists() or not any((tmp_path / "again").iterdir())


@pytest.mark.parametrize("name", ["enwik8", "text8"])
def test_a_one_file_corpus_is_checked_by_size_and_cut_as_prep_enwik8(
    name, tmp_path, serve, monkeypatch
):
    # Each byte's symbol, by hand: enwik8's are bytes, text8's characters (ASCII alone).
    names = {97: "a", 98: "b", 32: " ", 10: EOS, 0xC3: "<c3>", 0xA9: "<a9>"}
    if name == "text8":
        names = {97: "a", 98: "b", 99: "c", 32: " "}
    payload = bytes(np.random.default_rng(0).choice(list(names), 100).tolist())
    small = dataclasses.replace(data.DATASETS[name], split_sizes=(60, 20, 20))
    monkeypatch.setitem(data.DATASETS, name, small)
    url = serve(make_zip({name: payload}, ""), name=f"{name}.zip")
    config = config_lib.default_config()
    level = "byte" if name == "enwik8" else "char"
    config.data.update(name=name, level=level, data_dir=str(tmp_path / name), url=url)
    config_lib.validate(config)
    corpus = data.load(config.data)
    placed = [(tmp_path / name / f).read_bytes() for f in small.files]
    assert placed == [payload[:60], payload[60:80], payload[80:]]  # prep_enwik8.py's cut
    id_to_symbol = list(corpus.vocab)
    got = [id_to_symbol[i] for i in np.concatenate([corpus.train, corpus.valid, corpus.test])]
    assert got == [names[b] for b in payload]

    url = serve(make_zip({name: payload[:99]}, ""), name=f"{name}.zip")
    with pytest.raises(data.DataError, match=f"{name} from .* has 99 bytes, expected 100"):
        fetch.download(small, tmp_path / "again", (url,))
    assert not any((tmp_path / "again").iterdir())


@pytest.mark.parametrize(
    "updates, message",
    [
        (dict(level="chars"), "config.data.level must be one of word, char, byte, got 'chars'"),
        (
            dict(name="ptb", level="char"),
            "name='ptb' is a word-level corpus: set --config.data.level=word",
        ),
        (
            dict(name="ptb_char"),
            "name='ptb_char' is a char-level corpus: set --config.data.level=char",
        ),
        (dict(name="enwik8", level="char"), "name='enwik8' is a byte-level corpus"),
    ],
)
def test_a_level_that_is_not_the_corpus_own_is_refused_by_name(updates, message):
    config = config_lib.default_config()
    config.data.update(updates)
    with pytest.raises(config_lib.ConfigError, match=message):
        config_lib.validate(config)


ALPHABET = 'abcde f\t"\u00e9'


def write_char_corpus(directory: pathlib.Path) -> pathlib.Path:
    """train/valid/test.txt of short lines over 10 characters, the space, a tab and a
    double quote included."""
    directory.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, lines in (("train.txt", 300), ("valid.txt", 40), ("test.txt", 40)):
        text = "".join("".join(rng.choice(list(ALPHABET), 12)) + "\n" for _ in range(lines))
        (directory / name).write_text(text)
    return directory


def test_a_char_corpus_trains_through_main_and_reports_bits_per_character(tmp_path):
    data_dir = write_char_corpus(tmp_path / "data")
    workdir = tmp_path / "run"
    proc = run_main(
        tmp_path,
        f"--workdir={workdir}",
        "--config.data.name=dir",
        "--config.data.level=char",
        f"--config.data.data_dir={data_dir}",
        "--config.model.hidden_size=8",
        "--config.train.num_epochs=2",
        "--config.train.steps_per_call=4",
        "--config.train.num_steps=5",
    )
    assert proc.returncode == 0, proc.stderr
    # bpc = log2(perplexity) everywhere: results.json, metrics.jsonl, the log, TensorBoard.
    results = json.loads((workdir / "results.json").read_text())
    for split in ("train", "valid", "test"):
        ppl = results[f"{split}_perplexity"]
        assert results[f"{split}_bpc"] == pytest.approx(math.log(ppl) / math.log(2), rel=1e-12)
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    for record in records:
        assert record["valid_bpc"] == pytest.approx(math.log2(record["valid_perplexity"]))
        assert record["train_bpc"] == pytest.approx(math.log2(record["train_perplexity"]))
    # The learning curve plots bits per symbol on a linear scale here, perplexity at words.
    label, log_scale, series = reporting.curve_series(records)
    assert (label, log_scale) == ("bits per symbol", False) and (
        workdir / "learning_curve.png"
    ).exists()
    assert series == {split: [r[f"{split}_bpc"] for r in records] for split in ("train", "valid")}
    words = [{k: v for k, v in r.items() if not k.endswith("_bpc")} for r in records]
    assert reporting.curve_series(words)[:2] == ("perplexity", True)
    assert f"({results['test_bpc']:.4f} bpc)" in proc.stderr
    events = b"".join(p.read_bytes() for p in (workdir / "tensorboard").iterdir())
    assert b"valid/bpc" in events and b"test/bpc" in events and b"train/bpc" in events

    # score: one symbol per character and per newline; bpc from its own per-symbol scores.
    run = inference.load_run(workdir)
    test_file = data_dir / "test.txt"
    rows_path = tmp_path / "rows.jsonl"
    scored = inference.score_file(run, test_file, per_word=rows_path)
    assert scored["words"] == len(test_file.read_text())
    rows = [json.loads(line) for line in rows_path.read_text().splitlines()]
    # The .tsv holds the same rows, a tab or a quote as a symbol quoted for CSV readers.
    inference.score_file(run, test_file, per_word=tmp_path / "rows.tsv")
    with open(tmp_path / "rows.tsv", newline="") as f:
        header, *tsv = csv.reader(f, delimiter="\t")
    assert {"\t", '"'} <= {row[1] for row in tsv}
    as_text = [{k: str(v) for k, v in row.items()} for row in rows]
    assert [dict(zip(header, row)) for row in tsv] == as_text
    hand_bpc = -sum(r["log_prob"] for r in rows) / len(rows) / math.log(2)
    assert scored["bpc"] == pytest.approx(hand_bpc, rel=1e-6)
    assert scored["bpc"] == pytest.approx(results["test_bpc"], rel=1e-5)  # batch 1, step 1
    evaluated = inference.evaluate_run(run, None, None)
    assert evaluated["test_bpc"] == pytest.approx(results["test_bpc"], rel=1e-6)

    text = inference.sample_text(run, "ab", 30, temperature=1.0, top_k=0, greedy=False, seed=0)
    assert text.startswith("ab") and len(text) == 32 and set(text) <= set(ALPHABET + "\n")


@pytest.mark.parametrize(
    "name, vocab_size, published",
    [("awd_lstm_ptb_char", 50, 13.8e6), ("awd_lstm_enwik8", 205, 47e6), ("lstm_ptb_char", 50, 0)],
)
def test_the_char_configs_validate_and_have_the_papers_parameter_counts(
    name, vocab_size, published
):
    config = importlib.import_module(f"configs.{name}").get_config()
    config_lib.validate(config)
    assert data.DATASETS[config.data.name].level == config.data.level
    cfg = config_lib.model_config(config, vocab_size)
    shapes = jax.eval_shape(lambda: model.init_params(jax.random.PRNGKey(0), cfg))
    if published:  # Merity et al. (2018), Tables 3 and 4
        assert model.parameter_count(shapes) == pytest.approx(published, rel=0.01)

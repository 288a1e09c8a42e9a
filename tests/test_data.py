"""The reader against TF's own test vector and reader, real PTB and WikiText-2 counts,
vocabulary options, and downloads from a local server."""

import dataclasses
import hashlib
import pathlib
import re
import socket

import numpy as np
import pytest
from helpers import make_tarball, make_zip

from lstm_lm import config as config_lib
from lstm_lm import data, fetch, symbols


def test_ptb_iterator_matches_tf_reader_test_vector():
    raw = [4, 3, 2, 1, 0, 5, 6, 1, 1, 1, 1, 0, 3, 4, 1]
    batches = list(data.ptb_iterator(raw, batch_size=3, num_steps=2))
    assert len(batches) == 2
    (x0, y0), (x1, y1) = batches
    np.testing.assert_array_equal(x0, [[4, 3], [5, 6], [1, 0]])
    np.testing.assert_array_equal(y0, [[3, 2], [6, 1], [0, 3]])
    np.testing.assert_array_equal(x1, [[2, 1], [1, 1], [3, 4]])
    np.testing.assert_array_equal(y1, [[1, 0], [1, 1], [4, 1]])
    assert x0.dtype == y0.dtype == np.int32


def test_ptb_iterator_refuses_too_little_data():
    with pytest.raises(ValueError, match="Decrease batch_size or num_steps"):
        list(data.ptb_iterator(list(range(10)), batch_size=5, num_steps=2))


def test_vocabulary_orders_by_count_then_word_and_newlines_are_eos(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text(" b a c\n a b\n z a\n")
    words = symbols.read_words(path)
    assert words == ["b", "a", "c", "<eos>", "a", "b", "<eos>", "z", "a", "<eos>"]
    vocab = data.build_vocab(words)
    assert vocab == {"<eos>": 0, "a": 1, "b": 2, "c": 3, "z": 4}


def test_unknown_words_become_unk_or_raise_when_there_is_none():
    vocab = {"<unk>": 0, "a": 1}
    np.testing.assert_array_equal(symbols.words_to_ids(["a", "zzz", "a"], vocab), [1, 0, 1])
    with pytest.raises(data.DataError, match="zzz"):
        symbols.words_to_ids(["a", "zzz"], {"a": 0})


def real_data_dir(folder: str, file: str) -> pathlib.Path:
    data_dir = data.data_root() / folder
    if not (data_dir / file).is_file():
        pytest.skip(f"set ${data.DATA_DIR_ENV} to a folder holding {folder}/{file}")
    return data_dir


def test_real_ptb_has_the_published_counts():
    train, valid, test, vocab = data.ptb_raw_data(real_data_dir("ptb", "ptb.train.txt"))
    assert (len(train), len(valid), len(test)) == (929_589, 73_760, 82_430)
    assert len(vocab) == 10_000
    assert vocab["the"] == 0 and vocab["<eos>"] == 2 and "<unk>" in vocab


def test_real_wikitext2_valid_and_test_have_the_published_counts():
    data_dir = real_data_dir("wikitext-2", "wiki.valid.tokens")
    wikitext2 = data.DATASETS["wikitext2"]
    for name in ("wiki.valid.tokens", "wiki.test.tokens"):
        counts = symbols.count_words(data_dir / name)
        assert sum(counts.values()) == wikitext2.num_tokens[name]
        assert counts["<unk>"] > 0  # WikiText maps its rare words to <unk> itself


def test_reading_a_line_at_a_time_equals_tf_reader_on_the_whole_file(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text(" the cat\n\n sat  on\tthe mat \n and no newline at the end")
    tf_words = path.read_text().replace("\n", " <eos> ").split()  # TF's _read_words
    assert symbols.read_words(path) == tf_words
    vocab = data.build_vocab(tf_words)
    np.testing.assert_array_equal(symbols.file_ids(path, vocab), [vocab[w] for w in tf_words])


def test_min_count_and_max_vocab_size_map_the_rarer_words_to_unk():
    words = "a a a a b b b c c d e".split()
    # Counted by hand: a 4, b 3, c 2, then <unk> for what is cut, by its summed count.
    assert data.build_vocab(words, min_count=2) == {"a": 0, "b": 1, "<unk>": 2, "c": 3}
    assert data.build_vocab(words, max_size=3) == {"<unk>": 0, "a": 1, "b": 2}  # c d e: 4
    # c d e: <unk> 4, tied with a; ties go by the word, and "<" sorts before "a".
    assert data.build_vocab(words, min_count=3, max_size=10) == {"<unk>": 0, "a": 1, "b": 2}
    assert data.build_vocab(words) == {"a": 0, "b": 1, "c": 2, "d": 3, "e": 4}
    # A closed vocabulary has <unk> even when nothing is cut, for the words of valid/test.
    assert data.build_vocab("a a b b".split(), min_count=2) == {"a": 0, "b": 1, "<unk>": 2}
    with_unk = "a a <unk> b".split()  # the text's own <unk>: 1, and b's 1 joins it
    assert data.build_vocab(with_unk, max_size=2) == {"<unk>": 0, "a": 1}


def write_dir_corpus(directory: pathlib.Path) -> pathlib.Path:
    """A corpus of one's own: no <unk>, and valid/test words the training text lacks."""
    directory.mkdir()
    (directory / "train.txt").write_text("the cat sat\nthe dog sat\na cat ran\n")
    (directory / "valid.txt").write_text("the bird sat\n")
    (directory / "test.txt").write_text("a cat flew\n")
    return directory


def dir_config(directory: pathlib.Path, **overrides):
    config = config_lib.default_config()
    config.data.update(dict(name="dir", data_dir=str(directory), **overrides))
    return config


def test_a_corpus_without_unk_says_which_option_makes_it_usable(tmp_path):
    directory = write_dir_corpus(tmp_path / "mine")
    with pytest.raises(data.DataError, match=r"valid.txt .*bird.*--config.data.min_count=2"):
        data.load(dir_config(directory).data)
    corpus = data.load(dir_config(directory, min_count=2).data)
    # the 2, sat 2, cat 2, <eos> 3; seen once: dog, a, ran -> <unk> 3.
    assert corpus.vocab == {"<eos>": 0, "<unk>": 1, "cat": 2, "sat": 3, "the": 4}
    v = corpus.vocab
    np.testing.assert_array_equal(corpus.valid, [v["the"], v["<unk>"], v["sat"], v["<eos>"]])
    np.testing.assert_array_equal(corpus.test, [v["<unk>"], v["cat"], v["<unk>"], v["<eos>"]])


def test_a_corpus_dir_names_its_files_and_the_options_for_other_names(tmp_path):
    directory = write_dir_corpus(tmp_path / "mine")
    (directory / "valid.txt").rename(directory / "dev.txt")
    with pytest.raises(data.DataError, match=r"lacks valid.txt.*config.data.train_file"):
        data.load(dir_config(directory, min_count=2).data)
    corpus = data.load(dir_config(directory, min_count=2, valid_file="dev.txt").data)
    assert len(corpus.valid) == 4


# --- download, against a server on 127.0.0.1 -------------------------------------------

FAKE_PTB = {
    "ptb.train.txt": " the cat sat\n on the <unk> mat\n",
    "ptb.valid.txt": " the cat\n",
    "ptb.test.txt": " a dog\n",
}
FAKE_SHA256 = {k: hashlib.sha256(v.encode()).hexdigest() for k, v in FAKE_PTB.items()}
FAKE_DATASET = dataclasses.replace(data.DATASETS["ptb"], num_tokens={}, sha256=FAKE_SHA256)


def download(data_dir, *urls, dataset=FAKE_DATASET, **kwargs):
    fetch.download(dataset, data_dir, urls, **kwargs)


def test_download_places_verified_files_and_nothing_else(tmp_path, serve):
    url = serve(make_tarball(FAKE_PTB))
    download(tmp_path / "ptb", url)
    assert sorted(p.name for p in (tmp_path / "ptb").iterdir()) == sorted(FAKE_PTB)
    for name, text in FAKE_PTB.items():
        assert (tmp_path / "ptb" / name).read_text() == text


def test_ptb_raw_data_downloads_when_files_are_missing(tmp_path, serve, monkeypatch):
    url = serve(make_tarball(FAKE_PTB))
    monkeypatch.setitem(data.DATASETS, "ptb", FAKE_DATASET)
    train, valid, test, vocab = data.ptb_raw_data(tmp_path / "cache", url=url)
    assert len(train) == 9 and len(vocab) == 7
    # "a" and "dog" are not in the training text: they become <unk>.
    np.testing.assert_array_equal(test, [vocab["<unk>"], vocab["<unk>"], vocab["<eos>"]])


def assert_left_empty(directory: pathlib.Path):
    assert not directory.exists() or list(directory.iterdir()) == []


def test_wrong_checksum_is_a_clear_error_and_leaves_nothing(tmp_path, serve):
    tampered = dict(FAKE_PTB, **{"ptb.valid.txt": " the dog\n"})
    url = serve(make_tarball(tampered))
    with pytest.raises(data.DataError, match=r"ptb.valid.txt .* SHA-256 .* by hand"):
        download(tmp_path / "ptb", url)
    assert_left_empty(tmp_path / "ptb")


def test_truncated_download_is_a_clear_error_and_leaves_nothing(tmp_path, serve):
    body = make_tarball(FAKE_PTB)
    url = serve(body[: len(body) // 2], claimed_length=len(body))
    with pytest.raises(data.DataError, match="by hand") as error:
        download(tmp_path / "ptb", url)
    # the short read named, with the bytes it got and those it still expected
    assert re.search(
        r"Could not download .*IncompleteRead\(\d+ bytes read, \d+ more", str(error.value)
    )
    assert_left_empty(tmp_path / "ptb")


def test_corrupt_archive_is_a_clear_error_and_leaves_nothing(tmp_path, serve):
    body = make_tarball(FAKE_PTB)
    url = serve(body[: len(body) // 2])  # a short file that claims to be whole
    with pytest.raises(data.DataError, match="unreadable.*by hand"):
        download(tmp_path / "ptb", url)
    assert_left_empty(tmp_path / "ptb")


def test_archive_without_ptb_files_is_a_clear_error(tmp_path, serve):
    url = serve(make_tarball({"ptb.train.txt": FAKE_PTB["ptb.train.txt"]}))
    with pytest.raises(data.DataError, match="lacks data/ptb.valid.txt.*by hand"):
        download(tmp_path / "ptb", url)
    assert_left_empty(tmp_path / "ptb")


def test_no_network_is_a_clear_error_and_leaves_nothing(tmp_path):
    with socket.socket() as s:  # a port on 127.0.0.1 with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/simple-examples.tgz"
    with pytest.raises(data.DataError, match="Could not download.*by hand"):
        download(tmp_path / "ptb", url, timeout=5)
    assert_left_empty(tmp_path / "ptb")


def test_the_mirrors_are_tried_in_order_until_one_works(tmp_path, serve):
    with socket.socket() as s:  # nobody listens there
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/simple-examples.tgz"
    tampered = serve(make_tarball(dict(FAKE_PTB, **{"ptb.test.txt": " a cat\n"})))
    good = serve(make_tarball(FAKE_PTB))
    download(tmp_path / "ptb", dead, tampered, good)
    assert (tmp_path / "ptb" / "ptb.test.txt").read_text() == FAKE_PTB["ptb.test.txt"]
    with pytest.raises(data.DataError) as error:
        download(tmp_path / "again", dead, tampered)
    assert "Could not download" in str(error.value) and "SHA-256" in str(error.value)
    assert_left_empty(tmp_path / "again")


def test_a_zip_archive_is_read_and_checked_by_token_count(tmp_path, serve):
    files = {
        "wiki.train.tokens": " a b\n\n c\n",
        "wiki.valid.tokens": " a\n",
        "wiki.test.tokens": " b\n",
    }
    wiki = data.Dataset(
        "wiki", data.WIKITEXT_FILES, (), "wikitext-2", dict(zip(data.WIKITEXT_FILES, (6, 2, 2)))
    )
    url = serve(make_zip(files, "wikitext-2"), name="wikitext-2-v1.zip")
    download(tmp_path / "wiki", url, dataset=wiki)
    assert {p.name: p.read_text() for p in (tmp_path / "wiki").iterdir()} == files
    miscounted = dataclasses.replace(
        wiki, num_tokens=dict(wiki.num_tokens, **{"wiki.test.tokens": 3})
    )
    with pytest.raises(data.DataError, match="wiki.test.tokens from .* has 2 tokens, expected 3"):
        download(tmp_path / "again", url, dataset=miscounted)
    assert_left_empty(tmp_path / "again")


def test_the_archive_is_checked_by_its_sha256_before_it_is_opened(tmp_path, serve):
    archive = make_tarball(FAKE_PTB)
    url = serve(archive)
    published = dataclasses.replace(
        FAKE_DATASET, sha256={}, archive_sha256=hashlib.sha256(archive).hexdigest()
    )
    download(tmp_path / "ptb", url, dataset=published)
    assert sorted(p.name for p in (tmp_path / "ptb").iterdir()) == sorted(FAKE_PTB)

    other = make_tarball(dict(FAKE_PTB, **{"ptb.test.txt": " a cat\n"}))
    url = serve(other)
    with pytest.raises(data.DataError) as error:
        download(tmp_path / "again", url, dataset=published)
    assert (
        f"simple-examples.tgz from {url} has SHA-256 {hashlib.sha256(other).hexdigest()}, "
        f"expected {published.archive_sha256}: the download is corrupt or another file."
    ) in str(error.value)
    assert_left_empty(tmp_path / "again")


def test_a_large_corpus_keeps_its_ids_and_a_changed_file_is_read_anew(tmp_path, monkeypatch):
    directory = write_dir_corpus(tmp_path / "mine")
    monkeypatch.setattr(data, "CACHE_MIN_BYTES", 0)  # every corpus counts as large
    first = data.load(dir_config(directory, min_count=2).data)
    assert len(list((directory / ".lstm_lm_ids").glob("*.npz"))) == 1

    def no_reading(path, tokens):
        raise AssertionError(f"{path} was read although its ids are kept")

    with monkeypatch.context() as m:
        m.setattr(symbols, "count_symbols", no_reading)
        again = data.load(dir_config(directory, min_count=2).data)
    assert again.vocab == first.vocab
    for split in ("train", "valid", "test"):
        np.testing.assert_array_equal(getattr(again, split), getattr(first, split))

    (directory / "test.txt").write_text("the cat sat\n")
    changed = data.load(dir_config(directory, min_count=2).data)
    v = changed.vocab
    np.testing.assert_array_equal(changed.test, [v["the"], v["cat"], v["sat"], v["<eos>"]])
    assert len(list((directory / ".lstm_lm_ids").glob("*.npz"))) == 2

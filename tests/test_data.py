"""The reader against TF's own test vector, real PTB counts, and a local download server."""

import hashlib
import os
import pathlib
import socket

import numpy as np
import pytest
from conftest import make_tarball

from lstm_lm import data


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
    words = data.read_words(path)
    assert words == ["b", "a", "c", "<eos>", "a", "b", "<eos>", "z", "a", "<eos>"]
    vocab = data.build_vocab(words)
    assert vocab == {"<eos>": 0, "a": 1, "b": 2, "c": 3, "z": 4}


def test_unknown_words_become_unk_or_raise_when_there_is_none():
    vocab = {"<unk>": 0, "a": 1}
    np.testing.assert_array_equal(data.words_to_ids(["a", "zzz", "a"], vocab), [1, 0, 1])
    with pytest.raises(data.DataError, match="zzz"):
        data.words_to_ids(["a", "zzz"], {"a": 0})


def test_real_ptb_has_the_published_counts():
    data_dir = os.environ.get(data.DATA_DIR_ENV)
    if not data_dir or not (pathlib.Path(data_dir) / "ptb.train.txt").exists():
        pytest.skip(f"set ${data.DATA_DIR_ENV} to a directory with the PTB files")
    train, valid, test, vocab = data.ptb_raw_data(data_dir)
    assert (len(train), len(valid), len(test)) == (929_589, 73_760, 82_430)
    assert len(vocab) == 10_000
    assert vocab["the"] == 0 and vocab["<eos>"] == 2 and "<unk>" in vocab


# --- download, against a server on 127.0.0.1 -------------------------------------------

FAKE_PTB = {
    "ptb.train.txt": " the cat sat\n on the <unk> mat\n",
    "ptb.valid.txt": " the cat\n",
    "ptb.test.txt": " a dog\n",
}
FAKE_SHA256 = {k: hashlib.sha256(v.encode()).hexdigest() for k, v in FAKE_PTB.items()}


def test_download_places_verified_files_and_nothing_else(tmp_path, serve):
    url = serve(make_tarball(FAKE_PTB))
    data.download_ptb(tmp_path / "ptb", url=url, sha256=FAKE_SHA256)
    assert sorted(p.name for p in (tmp_path / "ptb").iterdir()) == sorted(FAKE_PTB)
    for name, text in FAKE_PTB.items():
        assert (tmp_path / "ptb" / name).read_text() == text


def test_ptb_raw_data_downloads_when_files_are_missing(tmp_path, serve, monkeypatch):
    url = serve(make_tarball(FAKE_PTB))
    monkeypatch.setattr(data, "PTB_SHA256", FAKE_SHA256)
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
        data.download_ptb(tmp_path / "ptb", url=url, sha256=FAKE_SHA256)
    assert_left_empty(tmp_path / "ptb")


def test_truncated_download_is_a_clear_error_and_leaves_nothing(tmp_path, serve):
    body = make_tarball(FAKE_PTB)
    url = serve(body[: len(body) // 2], claimed_length=len(body))
    with pytest.raises(data.DataError, match="by hand") as error:
        data.download_ptb(tmp_path / "ptb", url=url, sha256=FAKE_SHA256)
    assert "truncated" in str(error.value) or "Could not download" in str(error.value)
    assert_left_empty(tmp_path / "ptb")


def test_corrupt_archive_is_a_clear_error_and_leaves_nothing(tmp_path, serve):
    body = make_tarball(FAKE_PTB)
    url = serve(body[: len(body) // 2])  # a short file that claims to be whole
    with pytest.raises(data.DataError, match="unreadable.*by hand"):
        data.download_ptb(tmp_path / "ptb", url=url, sha256=FAKE_SHA256)
    assert_left_empty(tmp_path / "ptb")


def test_archive_without_ptb_files_is_a_clear_error(tmp_path, serve):
    url = serve(make_tarball({"ptb.train.txt": FAKE_PTB["ptb.train.txt"]}))
    with pytest.raises(data.DataError, match="lacks data/ptb.valid.txt"):
        data.download_ptb(tmp_path / "ptb", url=url, sha256=FAKE_SHA256)
    assert_left_empty(tmp_path / "ptb")


def test_no_network_is_a_clear_error_and_leaves_nothing(tmp_path):
    with socket.socket() as s:  # a port on 127.0.0.1 with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/simple-examples.tgz"
    with pytest.raises(data.DataError, match="Could not download.*by hand"):
        data.download_ptb(tmp_path / "ptb", url=url, sha256=FAKE_SHA256, timeout=5)
    assert_left_empty(tmp_path / "ptb")

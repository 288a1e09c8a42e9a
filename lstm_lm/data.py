"""Penn Treebank corpus, vocabulary and batches, with the semantics of TF's `reader.py`.

- Words are split on whitespace and every newline becomes `<eos>`.
- The vocabulary comes from the training file alone; ids are ordered by descending
  count, ties broken by the word itself.
- A word of the valid/test text that is not in the vocabulary becomes `<unk>` when the
  vocabulary has it (PTB's does); otherwise it is an error that names the words, rather
  than TF's silent dropping of them.
- `ptb_iterator` lays the id stream out as `batch_size` contiguous rows and walks them
  `num_steps` columns at a time, exactly as TF's reader did.

When the data directory holds none of the three files, `ptb_raw_data` downloads Mikolov's
`simple-examples.tgz`, extracts them and checks their SHA-256.
"""

import collections
import hashlib
import http.client
import os
import pathlib
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator, Mapping

import numpy as np

PTB_URL = "http://www.fit.vutbr.cz/~imikolov/rnnlm/simple-examples.tgz"
PTB_FILES = ("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt")
PTB_SHA256 = {
    "ptb.train.txt": "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf",
    "ptb.valid.txt": "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2",
    "ptb.test.txt": "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0",
}
DATA_DIR_ENV = "LSTM_LM_DATA_DIR"
EOS = "<eos>"
UNK = "<unk>"


class DataError(Exception):
    """The corpus could not be found, fetched or read; the message says what to do."""


def default_data_dir() -> pathlib.Path:
    """$LSTM_LM_DATA_DIR if set, else ~/.cache/lstm_lm/ptb."""
    if os.environ.get(DATA_DIR_ENV):
        return pathlib.Path(os.environ[DATA_DIR_ENV])
    return pathlib.Path.home() / ".cache" / "lstm_lm" / "ptb"


def read_words(path: os.PathLike) -> list[str]:
    """The file's words in order, with `<eos>` for every newline; DataError if unreadable."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().replace("\n", f" {EOS} ").split()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"Cannot read {path}: {e}") from e


def build_vocab(words: list[str]) -> dict[str, int]:
    """Word -> id, ids by descending count, then by word (TF's `_build_vocab`)."""
    counts = collections.Counter(words)
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return {word: i for i, (word, _) in enumerate(ordered)}


def words_to_ids(words: list[str], vocab: Mapping[str, int]) -> np.ndarray:
    """int32 ids; unknown words become `<unk>`, or raise if the vocabulary has none."""
    unk = vocab.get(UNK)
    unknown = [w for w in words if w not in vocab]
    if unknown and unk is None:
        examples = ", ".join(sorted(set(unknown))[:5])
        raise DataError(
            f"{len(unknown)} words are not in the vocabulary (e.g. {examples}) and the "
            f"vocabulary has no {UNK} token to map them to. Add {UNK} to the training text "
            "or restrict the text to the training vocabulary."
        )
    return np.array([vocab.get(w, unk) for w in words], dtype=np.int32)


def ptb_raw_data(
    data_dir: os.PathLike | None = None, url: str = PTB_URL
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, int]]:
    """(train_ids, valid_ids, test_ids, vocabulary) from `data_dir`.

    `data_dir` defaults to `default_data_dir()`. If it holds none of the three PTB files
    they are downloaded into it first from `url` (see `download_ptb`); if it holds only
    some, that is an error, so that no file of the user's is replaced.
    """
    data_dir = pathlib.Path(data_dir) if data_dir else default_data_dir()
    if data_dir.is_dir() and not os.access(data_dir, os.R_OK | os.X_OK):
        raise DataError(f"No permission to read the data directory {data_dir}.")
    paths = [data_dir / name for name in PTB_FILES]
    missing = [p.name for p in paths if not p.is_file()]
    if len(missing) == len(PTB_FILES):
        download_ptb(data_dir, url)
    elif missing:
        raise DataError(
            f"{data_dir} lacks {', '.join(missing)} but has the other PTB files. Place "
            "all three there, or remove them all to have them downloaded."
        )
    train_words, valid_words, test_words = (read_words(p) for p in paths)
    for path, words in zip(paths, (train_words, valid_words, test_words)):
        if not set(words) - {EOS}:
            raise DataError(f"{path} holds no words; replace it with the PTB file.")
    vocab = build_vocab(train_words)
    ids = [words_to_ids(w, vocab) for w in (train_words, valid_words, test_words)]
    return ids[0], ids[1], ids[2], vocab


def batchify(raw_ids: np.ndarray, batch_size: int) -> np.ndarray:
    """[batch_size, batch_len]: the stream cut to batch_size * batch_len, one row each."""
    raw_ids = np.asarray(raw_ids, dtype=np.int32)
    batch_len = len(raw_ids) // batch_size
    return raw_ids[: batch_size * batch_len].reshape(batch_size, batch_len)


def epoch_size(num_ids: int, batch_size: int, num_steps: int) -> int:
    """Batches in one pass over `num_ids` ids: (batch_len - 1) // num_steps."""
    return (num_ids // batch_size - 1) // num_steps


def epoch_batches(
    raw_ids: np.ndarray, batch_size: int, num_steps: int
) -> tuple[np.ndarray, np.ndarray]:
    """All of an epoch's batches at once: (x, y), each [epoch_size, batch_size, num_steps].

    Batch i is x = data[:, i*T:(i+1)*T] and y the same shifted by one, as in TF.
    """
    n = epoch_size(len(raw_ids), batch_size, num_steps)
    if n <= 0:
        raise ValueError(
            f"{len(raw_ids)} ids are too few for batch_size={batch_size}, "
            f"num_steps={num_steps}: epoch_size is {n}. Decrease batch_size or num_steps."
        )
    data_BxL = batchify(raw_ids, batch_size)
    span = n * num_steps
    x_BxNxT = data_BxL[:, :span].reshape(batch_size, n, num_steps)
    y_BxNxT = data_BxL[:, 1 : span + 1].reshape(batch_size, n, num_steps)
    return x_BxNxT.transpose(1, 0, 2), y_BxNxT.transpose(1, 0, 2)


def ptb_iterator(
    raw_ids: np.ndarray, batch_size: int, num_steps: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yields (x, y) int32 arrays of shape [batch_size, num_steps], as TF's reader."""
    x_NxBxT, y_NxBxT = epoch_batches(raw_ids, batch_size, num_steps)
    yield from zip(x_NxBxT, y_NxBxT)


def download_ptb(
    data_dir: os.PathLike,
    url: str = PTB_URL,
    sha256: Mapping[str, str] | None = None,
    timeout: float = 60.0,
) -> None:
    """Fetch `url` (a tarball holding .../data/ptb.*.txt) and place the PTB files in data_dir.

    Each file is checked against `sha256` (default: the PTB's) before it is moved into
    place; on any failure nothing is left behind but the files that were already there.
    """
    data_dir = pathlib.Path(data_dir)
    sha256 = sha256 or PTB_SHA256
    by_hand = (
        f"To place the files by hand, download {PTB_URL}, extract "
        f"simple-examples/data/{{{','.join(PTB_FILES)}}} into {data_dir}, "
        f"or point --config.data_dir (or ${DATA_DIR_ENV}) at a directory holding them."
    )
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        scratch = pathlib.Path(tempfile.mkdtemp(prefix=".download-", dir=data_dir))
    except OSError as e:
        raise DataError(f"Cannot write to data directory {data_dir}: {e}. {by_hand}") from e
    try:
        tarball = scratch / "simple-examples.tgz"
        _fetch(url, tarball, timeout, by_hand)
        extracted = _extract_ptb(tarball, scratch, by_hand)
        for name, path in extracted.items():
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            if digest != sha256[name]:
                raise DataError(
                    f"{name} from {url} has SHA-256 {digest}, expected {sha256[name]}: "
                    f"the download is corrupt or not the PTB. {by_hand}"
                )
        for name, path in extracted.items():
            os.replace(path, data_dir / name)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _fetch(url: str, dest: pathlib.Path, timeout: float, by_hand: str) -> None:
    """Stream `url` to `dest`; a short read or a network failure is a DataError."""
    print(f"Downloading the Penn Treebank from {url} ...", flush=True)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(dest, "wb") as f:
            expected = response.headers.get("Content-Length")
            shutil.copyfileobj(response, f)
            got = f.tell()
    except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
        raise DataError(f"Could not download {url}: {e}. {by_hand}") from e
    if expected is not None and got != int(expected):
        raise DataError(
            f"Download of {url} was truncated: got {got} of {expected} bytes. {by_hand}"
        )


def _extract_ptb(
    tarball: pathlib.Path, dest: pathlib.Path, by_hand: str
) -> dict[str, pathlib.Path]:
    """Extract the members ending in data/ptb.*.txt; name -> extracted path."""
    extracted = {}
    try:
        with tarfile.open(tarball, "r:gz") as tar:
            for member in tar:
                name = pathlib.PurePosixPath(member.name)
                if member.isfile() and name.parent.name == "data" and name.name in PTB_FILES:
                    with tar.extractfile(member) as src, open(dest / name.name, "wb") as dst:
                        shutil.copyfileobj(src, dst)
                    extracted[name.name] = dest / name.name
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise DataError(f"The downloaded archive is unreadable ({e}). {by_hand}") from e
    missing = [name for name in PTB_FILES if name not in extracted]
    if missing:
        raise DataError(f"The downloaded archive lacks data/{', data/'.join(missing)}. {by_hand}")
    return extracted

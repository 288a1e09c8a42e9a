"""Corpora, vocabulary and batches, with the semantics of TF's PTB `reader.py`.

- A corpus is three files of whitespace-tokenized text (train, valid, test). Words are
  split on whitespace and every newline becomes `<eos>`: the convention that gives the
  published token counts of the PTB and of WikiText (Merity et al. 2016).
- The vocabulary comes from the training file alone; ids are ordered by descending
  count, ties broken by the word itself. `min_count` and `max_vocab_size` close the
  vocabulary: the rarer training words become `<unk>`, which is then always in it.
- A word of the valid/test text outside the vocabulary becomes `<unk>` when the
  vocabulary has it (PTB's and WikiText's do); otherwise it is an error that names the
  words and the option to set, rather than TF's silent dropping of them.
- `ptb_iterator` lays the id stream out as `batch_size` contiguous rows and walks them
  `num_steps` columns at a time, exactly as TF's reader did.

`load` reads a corpus by name: one of `DATASETS`, whose files are downloaded (from a
list of mirrors, tried in order) and checked when its folder holds none of them, or
"dir", a folder of your own. Files are read a line at a time, so a corpus of WikiText-103's
size (539 MB) loads in bounded memory, and the ids of so large a corpus are kept beside it
for the next time (`read_corpus`).
"""

import array
import collections
import dataclasses
import hashlib
import os
import pathlib
import shutil
import tarfile
import tempfile
import urllib.parse
import zipfile
import zlib
from collections.abc import Iterator, Mapping

import numpy as np
import pooch
import requests
from absl import logging

DATA_DIR_ENV = "LSTM_LM_DATA_DIR"  # the folder that holds one folder per dataset
EOS = "<eos>"
UNK = "<unk>"
# The WikiText host refuses a client's default User-Agent.
USER_AGENT = "Mozilla/5.0 (compatible; lstm_lm)"
pooch.get_logger().setLevel("WARNING")  # not its "use this hash" note: ours are checked


class DataError(Exception):
    """The corpus could not be found, fetched or read; the message says what to do."""


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A corpus that can be fetched: its archive's mirrors and what the files must hold."""

    folder: str  # its folder under the data root
    files: tuple[str, str, str]  # train, valid, test
    urls: tuple[str, ...]  # mirrors of one archive (.tgz or .zip), tried in order
    archive_folder: str  # the folder in the archive that holds the files
    num_tokens: Mapping[str, int]  # published sizes: words plus one <eos> per line
    sha256: Mapping[str, str] = dataclasses.field(default_factory=dict)  # files', where known
    archive_sha256: str = ""  # the archive's, where published


PTB_URL = "http://www.fit.vutbr.cz/~imikolov/rnnlm/simple-examples.tgz"
PTB_FILES = ("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt")
WIKITEXT_FILES = ("wiki.train.tokens", "wiki.valid.tokens", "wiki.test.tokens")
WIKITEXT_HOSTS = (
    "https://wikitext.smerity.com",
    "https://s3.amazonaws.com/research.metamind.io/wikitext",
)
DATASETS = {
    "ptb": Dataset(
        "ptb",
        PTB_FILES,
        (PTB_URL,),
        "data",
        dict(zip(PTB_FILES, (929_589, 73_760, 82_430))),
        {
            "ptb.train.txt": "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf",
            "ptb.valid.txt": "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2",
            "ptb.test.txt": "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0",
        },
    ),
    # The WikiText archives' SHA-256 (and sizes: 4,475,746 and 190,229,076 bytes) are
    # those Hugging Face's `datasets` publishes for them (datasets/wikitext/
    # dataset_infos.json, "download_checksums"). torchtext publishes their MD5 too
    # (torchtext/datasets/wikitext2.py, wikitext103.py: 542ccefacc6c27f945fb54453812b3cd,
    # 9ddaacaf6af0710eda8c456decff7832). The files' own SHA-256 were taken from files that
    # passed the token counts.
    "wikitext2": Dataset(
        "wikitext-2",
        WIKITEXT_FILES,
        tuple(f"{host}/wikitext-2-v1.zip" for host in WIKITEXT_HOSTS),
        "wikitext-2",
        dict(zip(WIKITEXT_FILES, (2_088_628, 217_646, 245_569))),
        {
            "wiki.valid.tokens": "f0737ed31fc1329026e95cb8b98e19c2a182c39c240ab909dc31abf2f8af58e8",
            "wiki.test.tokens": "d790b833ef8cf03a90db7bf1271b7520b83c45ce07ba3c1a9699df81e239eca0",
        },
        "92675f1d63015c1c8b51f1656a52d5bdbc33aafa60cc47a218a66e7ee817488c",
    ),
    "wikitext103": Dataset(
        "wikitext-103",
        WIKITEXT_FILES,
        tuple(f"{host}/wikitext-103-v1.zip" for host in WIKITEXT_HOSTS),
        "wikitext-103",
        dict(zip(WIKITEXT_FILES, (103_227_021, 217_646, 245_569))),
        {},
        "242ba0f20b329cfdf1ccc61e9e9e5b59becf189db7f7a81cd2a0e2fc31539590",
    ),
}
DIR_FILES = ("train.txt", "valid.txt", "test.txt")  # name "dir": a folder of your own
CACHE_MIN_BYTES = 100 * 2**20  # a corpus this large keeps its ids beside it (read_corpus)


@dataclasses.dataclass(frozen=True)
class Corpus:
    train: np.ndarray  # int32 ids of each split
    valid: np.ndarray
    test: np.ndarray
    vocab: dict[str, int]  # word -> id, in id order


def data_root() -> pathlib.Path:
    """$LSTM_LM_DATA_DIR if set, else ~/.cache/lstm_lm: one folder per dataset below it."""
    if os.environ.get(DATA_DIR_ENV):
        return pathlib.Path(os.environ[DATA_DIR_ENV])
    return pathlib.Path.home() / ".cache" / "lstm_lm"


def load(data_config) -> Corpus:
    """The corpus that `config.data` names (see lstm_lm/config.py for its keys)."""
    dataset = DATASETS.get(data_config.name)  # None: "dir"
    own_files = dataset.files if dataset else DIR_FILES
    overrides = (data_config.train_file, data_config.valid_file, data_config.test_file)
    files = tuple(mine or own for mine, own in zip(overrides, own_files))
    if data_config.data_dir:
        data_dir = pathlib.Path(data_config.data_dir)
    else:
        data_dir = data_root() / dataset.folder
    urls = dataset.urls if dataset else ()
    if data_config.url:
        urls = (data_config.url,)
    if dataset and data_config.archive_sha256:  # an archive of one's own making
        dataset = dataclasses.replace(dataset, archive_sha256=data_config.archive_sha256)
    paths = find_files(data_dir, files, dataset, urls)
    return read_corpus(paths, data_config.min_count, data_config.max_vocab_size)


def ptb_raw_data(
    data_dir: os.PathLike | None = None, url: str = PTB_URL
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, int]]:
    """TF's `ptb_raw_data`: (train_ids, valid_ids, test_ids, vocabulary) from `data_dir`
    (default: the data root's `ptb/`), downloaded from `url` first if it has none of the
    three files."""
    ptb = DATASETS["ptb"]
    data_dir = pathlib.Path(data_dir) if data_dir else data_root() / ptb.folder
    corpus = read_corpus(find_files(data_dir, ptb.files, ptb, (url,)))
    return corpus.train, corpus.valid, corpus.test, corpus.vocab


def find_files(
    data_dir: pathlib.Path, files: tuple[str, ...], dataset: Dataset | None, urls: tuple[str, ...]
) -> list[pathlib.Path]:
    """The paths of `files` in `data_dir`, downloaded there first when it holds none of
    them and `dataset` can be fetched; if it holds only some, that is an error, so that
    no file of the user's is replaced."""
    if data_dir.is_dir() and not os.access(data_dir, os.R_OK | os.X_OK):
        raise DataError(f"No permission to read the data directory {data_dir}.")
    paths = [data_dir / name for name in files]
    missing = [p.name for p in paths if not p.is_file()]
    if len(missing) == len(files) and dataset is not None:
        download(dataset, data_dir, urls)
    elif missing and dataset is None:
        raise DataError(
            f"{data_dir} lacks {', '.join(missing)}. config.data.name='dir' reads "
            f"{', '.join(files)} there (config.data.train_file etc. name others)."
        )
    elif missing:
        raise DataError(
            f"{data_dir} lacks {', '.join(missing)} but has the other files of the corpus. "
            "Place all three there, or remove them all to have them downloaded."
        )
    return paths


def line_words(line: str) -> list[str]:
    """One line's words, with `<eos>` when the line ends with a newline."""
    words = line.split()
    if line.endswith("\n"):
        words.append(EOS)
    return words


def read_lines(path: os.PathLike) -> Iterator[str]:
    """The file's lines; DataError if it cannot be read."""
    try:
        with open(path, encoding="utf-8") as f:
            yield from f
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"Cannot read {path}: {e}") from e


def read_words(path: os.PathLike) -> list[str]:
    """The file's words in order, with `<eos>` for every newline (for small files)."""
    return [word for line in read_lines(path) for word in line_words(line)]


def count_words(path: os.PathLike) -> collections.Counter:
    """How often each word occurs in the file, `<eos>` included, a line at a time."""
    counts = collections.Counter()
    for line in read_lines(path):
        counts.update(line_words(line))
    return counts


def build_vocab(
    counts: Mapping[str, int] | list[str], min_count: int = 1, max_size: int = 0
) -> dict[str, int]:
    """Word -> id, ids by descending count, then by word (TF's `_build_vocab`), from
    word counts (or a list of words).

    With `min_count` > 1 or `max_size` > 0 the vocabulary is closed: words seen fewer
    than `min_count` times, and all but the `max_size` most frequent, are left out and
    counted as `<unk>`, which is always in it (`max_size` includes it), so that any word
    outside the vocabulary has an id."""
    counts = collections.Counter(counts) if isinstance(counts, list) else dict(counts)
    ordered = sorted(counts, key=lambda w: (-counts[w], w))
    kept = [w for w in ordered if counts[w] >= min_count][: max_size or None]
    if min_count > 1 or max_size:
        if UNK not in kept:
            kept = kept[: max_size - 1] if max_size and len(kept) == max_size else kept
            kept.append(UNK)
        left_out = set(ordered) - set(kept)
        counts[UNK] = counts.get(UNK, 0) + sum(counts[w] for w in left_out)
        kept.sort(key=lambda w: (-counts[w], w))
    return {word: i for i, word in enumerate(kept)}


def file_ids(path: os.PathLike, vocab: Mapping[str, int]) -> np.ndarray:
    """The file's words as int32 ids, a line at a time; words outside the vocabulary
    become `<unk>`, or raise if the vocabulary has none."""
    unk = vocab.get(UNK, -1)
    ids = array.array("i")
    for line in read_lines(path):
        ids.extend([vocab.get(w, unk) for w in line_words(line)])
    ids_N = np.frombuffer(ids, dtype=np.int32)
    if not np.any(ids_N != vocab.get(EOS, -1)):
        raise DataError(f"{path} holds no words; replace it with a text file.")
    if np.any(ids_N < 0):
        words = (w for line in read_lines(path) for w in line_words(line))
        raise unknown_words_error(collections.Counter(w for w in words if w not in vocab), path)
    return ids_N


def unknown_words_error(unknown: Mapping[str, int], where) -> DataError:
    examples = ", ".join(sorted(unknown)[:5])
    return DataError(
        f"{sum(unknown.values())} words of {where} are not in the vocabulary (e.g. "
        f"{examples}) and it has no {UNK} to map them to. Set --config.data.min_count=2 "
        f"(training words seen once become {UNK}, and so do unseen words), or "
        f"--config.data.max_vocab_size, or add {UNK} to the training text."
    )


def words_to_ids(words: list[str], vocab: Mapping[str, int]) -> np.ndarray:
    """int32 ids; unknown words become `<unk>`, or raise if the vocabulary has none."""
    unk = vocab.get(UNK)
    if unk is None:
        unknown = collections.Counter(w for w in words if w not in vocab)
        if unknown:
            raise unknown_words_error(unknown, "the text")
    return np.array([vocab.get(w, unk) for w in words], dtype=np.int32)


def read_corpus(paths: list[pathlib.Path], min_count: int = 1, max_vocab_size: int = 0) -> Corpus:
    """The three files as ids over the training file's vocabulary. Reading text costs
    about half a microsecond a word, a minute for WikiText-103, so the ids of a corpus of
    CACHE_MIN_BYTES or more are also kept beside it (`ids_cache_path`) and read from there
    the next time."""
    cache = None
    if sum(p.stat().st_size for p in paths) >= CACHE_MIN_BYTES:
        cache = ids_cache_path(paths, min_count, max_vocab_size)
        if corpus := load_ids(cache):
            return corpus
    vocab = build_vocab(count_words(paths[0]), min_count, max_vocab_size)
    corpus = Corpus(*(file_ids(p, vocab) for p in paths), vocab)
    if cache is not None:
        save_ids(cache, corpus)
    return corpus


def ids_cache_path(paths: list[pathlib.Path], min_count: int, max_vocab_size: int) -> pathlib.Path:
    """<folder>/.lstm_lm_ids/<key>.npz, the key a hash of the files' contents and the
    vocabulary options: a changed file or option is a new key."""
    digest = hashlib.sha256(f"ids v1, min_count {min_count}, max {max_vocab_size}".encode())
    for path in paths:
        with open(path, "rb") as f:
            while block := f.read(1 << 24):
                digest.update(block)
    return paths[0].parent / ".lstm_lm_ids" / f"{digest.hexdigest()[:32]}.npz"


def load_ids(cache: pathlib.Path) -> Corpus | None:
    """The corpus kept in `cache`, or None when there is none or it cannot be read."""
    try:
        with np.load(cache) as saved:
            vocab = bytes(saved["vocab"]).decode("utf-8").split("\n")
            ids = saved["train"], saved["valid"], saved["test"]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return None
    logging.info("Read the corpus's ids from %s.", cache)
    return Corpus(*ids, {word: i for i, word in enumerate(vocab)})


def save_ids(cache: pathlib.Path, corpus: Corpus) -> None:
    """Write the cache atomically; a folder that cannot be written only means no cache."""
    vocab_bytes = "\n".join(corpus.vocab).encode("utf-8")
    arrays = dict(train=corpus.train, valid=corpus.valid, test=corpus.test)
    tmp = None
    try:
        cache.parent.mkdir(exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache.parent, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            np.savez(f, vocab=np.frombuffer(vocab_bytes, np.uint8), **arrays)
        os.replace(tmp, cache)
    except OSError as e:
        if tmp:
            pathlib.Path(tmp).unlink(missing_ok=True)
        logging.info("Not keeping the corpus's ids in %s: %s", cache, e)


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


# AWD-LSTM's variable BPTT (its main.py): the base length with probability 1 - SHORT,
# else half of it; a window's length ~ N(that, STD), at least MIN, at most base + EXTRA.
SHORT, STD, MIN_LENGTH, EXTRA = 0.05, 5.0, 5, 40


def random_lengths(rng: np.random.Generator, batch_len: int, base: int) -> np.ndarray:
    """[N] lengths of consecutive windows that walk rows of `batch_len` ids as AWD-LSTM's
    training loop does; the last is cut to what is left."""
    lengths, start = [], 0
    while start < batch_len - 2:
        mean = base if rng.random() < 1 - SHORT else base / 2
        length = max(MIN_LENGTH, int(rng.normal(mean, STD)))
        length = min(length, base + EXTRA, batch_len - 1 - start)
        lengths.append(length)
        start += length
    return np.array(lengths, np.int32)


def window_batches(
    data_BxL: np.ndarray, starts_K: np.ndarray, lengths_K: np.ndarray, pad_to: int
) -> tuple[np.ndarray, np.ndarray]:
    """(x, y), each [K, B, pad_to]: window k is x = data[:, s:s+n] and y the same shifted
    by one (s, n = starts_K[k], lengths_K[k]), zero-padded after n."""
    K, B = len(starts_K), len(data_BxL)
    x_KxBxT, y_KxBxT = np.zeros((2, K, B, pad_to), np.int32)
    for k, (s, n) in enumerate(zip(starts_K, lengths_K)):
        x_KxBxT[k, :, :n] = data_BxL[:, s : s + n]
        y_KxBxT[k, :, :n] = data_BxL[:, s + 1 : s + 1 + n]
    return x_KxBxT, y_KxBxT


def ptb_iterator(
    raw_ids: np.ndarray, batch_size: int, num_steps: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yields (x, y) int32 arrays of shape [batch_size, num_steps], as TF's reader."""
    x_NxBxT, y_NxBxT = epoch_batches(raw_ids, batch_size, num_steps)
    yield from zip(x_NxBxT, y_NxBxT)


def download(dataset: Dataset, data_dir: pathlib.Path, urls: tuple[str, ...], timeout=60.0):
    """Fetch the dataset's archive from the first of `urls` that works and place its
    three files in data_dir. Each file is checked (SHA-256 where known, else its token
    count) before it is moved into place; on any failure nothing is left behind but
    the files that were already there."""
    by_hand = (
        f"To place the files by hand, download {(dataset.urls or urls)[0]}, extract "
        f"{dataset.archive_folder}/{{{','.join(dataset.files)}}} into {data_dir}, or point "
        f"--config.data.data_dir (or ${DATA_DIR_ENV}, the folder of the dataset folders) "
        "at a folder holding them."
    )
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        scratch = pathlib.Path(tempfile.mkdtemp(prefix=".download-", dir=data_dir))
    except OSError as e:
        raise DataError(f"Cannot write to data directory {data_dir}: {e}. {by_hand}") from e
    failures = []
    try:
        for i, url in enumerate(urls):
            try:
                extracted = fetch_and_check(dataset, url, scratch / str(i), timeout)
            except DataError as e:
                failures.append(str(e))
                continue
            for name, path in extracted.items():
                os.replace(path, data_dir / name)
            return
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    raise DataError(" ".join([*failures, by_hand]))


def fetch_and_check(dataset: Dataset, url: str, scratch: pathlib.Path, timeout: float):
    """The dataset's files from the archive at `url`, extracted into `scratch` and
    checked: name -> path."""
    scratch.mkdir()
    archive = scratch / (pathlib.PurePosixPath(urllib.parse.urlparse(url).path).name or "archive")
    _fetch(url, archive, timeout)
    if dataset.archive_sha256:
        _check_sha256(archive, dataset.archive_sha256, url, "file")
    extracted = _extract(archive, scratch / "extracted", dataset)
    for name, path in extracted.items():
        if name in dataset.sha256:
            _check_sha256(path, dataset.sha256[name], url, "corpus")
        elif name in dataset.num_tokens:
            num_tokens = sum(count_words(path).values())
            if num_tokens != dataset.num_tokens[name]:
                raise DataError(
                    f"{name} from {url} has {num_tokens} tokens, expected "
                    f"{dataset.num_tokens[name]}: the download is corrupt or another corpus."
                )
    return extracted


def _check_sha256(path: pathlib.Path, expected: str, url: str, kind: str) -> None:
    """DataError naming both hashes unless the file at `path` (from `url`) has SHA-256
    `expected`; `kind` is what it might be instead ("file", "corpus")."""
    digest = pooch.file_hash(str(path), alg="sha256")  # read in chunks, not whole
    if digest != expected:
        raise DataError(
            f"{path.name} from {url} has SHA-256 {digest}, expected {expected}: the download "
            f"is corrupt or another {kind}."
        )


def _fetch(url: str, dest: pathlib.Path, timeout: float) -> None:
    """Download `url` to `dest` with pooch: into a temporary file renamed when complete,
    with a progress bar; a short read or a network failure is a DataError."""
    print(f"Downloading {url} ...", flush=True)
    downloader = pooch.HTTPDownloader(
        progressbar=True, headers={"User-Agent": USER_AGENT}, timeout=timeout
    )
    try:  # the hashes are checked by the caller, whose message names the file and the source
        pooch.retrieve(url, None, fname=dest.name, path=dest.parent, downloader=downloader)
    except (requests.RequestException, OSError, ValueError) as e:
        raise DataError(f"Could not download {url}: {e}.") from e


def _extract(archive: pathlib.Path, dest: pathlib.Path, dataset: Dataset):
    """Extract the members <archive_folder>/<file> of a .tgz or .zip: name -> path."""
    dest.mkdir()
    wanted = {f"{dataset.archive_folder}/{name}": name for name in dataset.files}
    extracted = {}
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                members = [(m.filename, m) for m in zf.infolist() if not m.is_dir()]
                for member_name, member in members:
                    if name := _wanted(member_name, wanted):
                        with zf.open(member) as src, open(dest / name, "wb") as dst:
                            shutil.copyfileobj(src, dst)
                        extracted[name] = dest / name
        else:
            with tarfile.open(archive, "r:gz") as tar:
                for member in tar:
                    if member.isfile() and (name := _wanted(member.name, wanted)):
                        with tar.extractfile(member) as src, open(dest / name, "wb") as dst:
                            shutil.copyfileobj(src, dst)
                        extracted[name] = dest / name
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, zlib.error) as e:
        raise DataError(f"The archive from the download is unreadable ({e}).") from e
    missing = [f for f, name in wanted.items() if name not in extracted]
    if missing:
        raise DataError(f"The downloaded archive lacks {', '.join(missing)}.")
    return extracted


def _wanted(member_name: str, wanted: Mapping[str, str]) -> str | None:
    """The file name if the member is <archive_folder>/<file>, at any depth."""
    parts = pathlib.PurePosixPath(member_name).parts
    return wanted.get("/".join(parts[-2:]))

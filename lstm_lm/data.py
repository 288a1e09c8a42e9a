"""Corpora, vocabulary and batches, with the semantics of TF's PTB `reader.py`.

- A corpus is three files of text (train, valid, test), cut into symbols at its level
  (`config.data.level`): words, characters or bytes (lstm_lm/symbols.py); every newline
  is `<eos>`, the convention that gives the published counts of the PTB and of WikiText
  (Merity et al. 2016).
- The vocabulary comes from the training file alone; ids are ordered by descending
  count, ties broken by the symbol itself. `min_count` and `max_vocab_size` close the
  vocabulary: the rarer training symbols become `<unk>`, which is then always in it.
- A symbol of the valid/test text outside the vocabulary becomes `<unk>` when the
  vocabulary has it (PTB's and WikiText's do); otherwise it is an error that names the
  symbols and the option to set, rather than TF's silent dropping of them.
- `ptb_iterator` lays the id stream out as `batch_size` contiguous rows and walks them
  `num_steps` columns at a time, exactly as TF's reader did.

`load` reads a corpus by name: one of `DATASETS`, whose files are downloaded (lstm_lm/
fetch.py) and checked when its folder holds none of them, or "dir", a folder of your own.
Words are read a line at a time, so a corpus of WikiText-103's size (539 MB) loads in
bounded memory, and the ids of so large a corpus are kept beside it for the next time
(`read_corpus`).
"""

import collections
import dataclasses
import hashlib
import os
import pathlib
import tempfile
import zipfile
from collections.abc import Iterator, Mapping

import numpy as np
from absl import logging

from lstm_lm import fetch, symbols
from lstm_lm.fetch import DATA_DIR_ENV as DATA_DIR_ENV
from lstm_lm.fetch import Dataset
from lstm_lm.symbols import EOS as EOS
from lstm_lm.symbols import UNK as UNK
from lstm_lm.symbols import DataError as DataError

LEVELS = tuple(symbols.LEVEL_TOKENS)  # config.data.level: "word", "char" or "byte"
PTB_URL = "http://www.fit.vutbr.cz/~imikolov/rnnlm/simple-examples.tgz"
PTB_FILES = ("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt")
WIKITEXT_FILES = ("wiki.train.tokens", "wiki.valid.tokens", "wiki.test.tokens")
PTB_CHAR_FILES = ("ptb.char.train.txt", "ptb.char.valid.txt", "ptb.char.test.txt")
ENWIK8_FILES = ("enwik8.train.raw", "enwik8.valid.raw", "enwik8.test.raw")
TEXT8_FILES = ("text8.train.txt", "text8.valid.txt", "text8.test.txt")
MAHONEY_SPLIT = (90_000_000, 5_000_000, 5_000_000)  # enwik8's and text8's bytes per split
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
    # Character level. PTB-char is Mikolov's rewrite of the PTB in the same archive: one
    # character per space-separated token, `_` between words, a sentence a line. Its
    # counts, one <eos> per line included (Merity et al. 2018: 5.01M / 393k / 442k); no
    # SHA-256 is published.
    "ptb_char": Dataset(
        "ptb_char",
        PTB_CHAR_FILES,
        (PTB_URL,),
        "data",
        dict(zip(PTB_CHAR_FILES, (5_017_482, 393_042, 442_423))),
        level="char",
        tokens="words",
    ),
    # enwik8 (the Hutter Prize): the first 10^8 bytes of a 2006 English Wikipedia dump, cut
    # 90M / 5M / 5M as awd-lstm-lm's prep_enwik8.py, bytes the symbols (205 with <eos>).
    # text8: Mahoney's cleaned 10^8 characters of the same (a-z and the space, one line),
    # cut the same way. Checked by the size of the file in the archive.
    "enwik8": Dataset(
        "enwik8",
        ENWIK8_FILES,
        ("http://mattmahoney.net/dc/enwik8.zip",),
        "",
        {},
        level="byte",
        tokens="bytes",
        source="enwik8",
        split_sizes=MAHONEY_SPLIT,
    ),
    "text8": Dataset(
        "text8",
        TEXT8_FILES,
        ("http://mattmahoney.net/dc/text8.zip",),
        "",
        {},
        level="char",
        tokens="chars",
        source="text8",
        split_sizes=MAHONEY_SPLIT,
    ),
}
DIR_FILES = ("train.txt", "valid.txt", "test.txt")  # name "dir": a folder of your own
CACHE_MIN_BYTES = 100 * 2**20  # a corpus this large keeps its ids beside it (read_corpus)


@dataclasses.dataclass(frozen=True)
class Corpus:
    train: np.ndarray  # int32 ids of each split
    valid: np.ndarray
    test: np.ndarray
    vocab: dict[str, int]  # symbol -> id, in id order


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
    return read_corpus(
        paths, data_config.min_count, data_config.max_vocab_size, tokens_of(data_config)
    )


def tokens_of(data_config) -> str:
    """How the corpus's files cut into symbols (symbols.TOKENS): the dataset's own way, or
    for "dir" the way of `data.level`."""
    if data_config.name in DATASETS:
        return DATASETS[data_config.name].tokens
    return symbols.LEVEL_TOKENS[data_config.get("level", "word")]


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
        fetch.download(dataset, data_dir, urls)
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


def read_corpus(
    paths: list[pathlib.Path], min_count: int = 1, max_vocab_size: int = 0, tokens: str = "words"
) -> Corpus:
    """The three files as ids over the training file's vocabulary, cut into symbols as
    `tokens` says. Reading words costs about half a microsecond each, a minute for
    WikiText-103, so the ids of a corpus of CACHE_MIN_BYTES or more are also kept beside
    it (`ids_cache_path`) and read from there the next time."""
    cache = None
    if sum(p.stat().st_size for p in paths) >= CACHE_MIN_BYTES:
        cache = ids_cache_path(paths, min_count, max_vocab_size, tokens)
        if corpus := load_ids(cache):
            return corpus
    vocab = build_vocab(symbols.count_symbols(paths[0], tokens), min_count, max_vocab_size)
    corpus = Corpus(*(symbols.file_ids(p, vocab, tokens) for p in paths), vocab)
    if cache is not None:
        save_ids(cache, corpus)
    return corpus


def ids_cache_path(
    paths: list[pathlib.Path], min_count: int, max_vocab_size: int, tokens: str = "words"
) -> pathlib.Path:
    """<folder>/.lstm_lm_ids/<key>.npz, the key a hash of the files' contents, the
    vocabulary options and the cut: a changed file or option is a new key."""
    key = f"ids v1, min_count {min_count}, max {max_vocab_size}"
    digest = hashlib.sha256((key if tokens == "words" else f"{key}, {tokens}").encode())
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


def tail_batch(
    raw_ids: np.ndarray, batch_size: int, num_steps: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """The rows' targets that epoch_batches leaves out: (x, y), each [1, batch_size, r],
    the r = (batch_len - 1) % num_steps steps after the last whole window; None if r = 0."""
    data_BxL = batchify(raw_ids, batch_size)
    start = epoch_size(len(raw_ids), batch_size, num_steps) * num_steps
    r = data_BxL.shape[1] - 1 - start
    if r <= 0:
        return None
    return data_BxL[None, :, start : start + r], data_BxL[None, :, start + 1 : start + 1 + r]


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
        length = min(length, longest_random_length(base), batch_len - 1 - start)
        lengths.append(length)
        start += length
    return np.array(lengths, np.int32)


def longest_random_length(base: int) -> int:
    """The longest window `random_lengths` draws around `base`."""
    return base + EXTRA


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

"""How a file of text becomes symbols, the units a model predicts (`config.data.level`).

Three ways to cut text (`TOKENS`):
- "words": split on whitespace, and every newline becomes `<eos>`: the convention that
  gives the published token counts of the PTB and of WikiText. Read a line at a time.
- "chars": every character is a symbol, the space included, and every newline becomes
  `<eos>`, so a character model predicts the line ends too and they count as symbols in
  its bits per character (awd-lstm-lm counts them the same way). The file is read as
  UTF-8 with universal newlines ("\\r\\n" is one newline), whole, into numpy.
- "bytes": every byte is a symbol, the newline byte `<eos>`; a printable ASCII byte is
  named by itself, any other by its hex value (`<e2>`), so that `vocab.txt` and sampled
  text stay readable. Read whole, into numpy.

A word-level corpus cuts as words; so does Mikolov's PTB-char, whose files already separate
their characters by spaces (`_` is the space between words), and which counts as
characters: data.DATASETS gives each corpus's level and cut.
"""

import array
import collections
import os
from collections.abc import Iterator, Mapping

import numpy as np

EOS = "<eos>"
UNK = "<unk>"
LEVEL_TOKENS = {"word": "words", "char": "chars", "byte": "bytes"}  # a folder of your own
TOKENS = tuple(LEVEL_TOKENS.values())
NEWLINE = 10  # the newline's code point and byte value


class DataError(Exception):
    """The corpus could not be found, fetched or read; the message says what to do."""


def read_lines(path: os.PathLike) -> Iterator[str]:
    """The file's lines; DataError if it cannot be read."""
    try:
        with open(path, encoding="utf-8") as f:
            yield from f
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"Cannot read {path}: {e}") from e


def line_words(line: str) -> list[str]:
    """One line's words, with `<eos>` when the line ends with a newline."""
    words = line.split()
    if line.endswith("\n"):
        words.append(EOS)
    return words


def read_words(path: os.PathLike) -> list[str]:
    """The file's words in order, with `<eos>` for every newline (for small files)."""
    return [word for line in read_lines(path) for word in line_words(line)]


def count_words(path: os.PathLike) -> collections.Counter:
    """How often each word occurs in the file, `<eos>` included, a line at a time."""
    counts = collections.Counter()
    for line in read_lines(path):
        counts.update(line_words(line))
    return counts


def read_codes(path: os.PathLike, tokens: str) -> np.ndarray:
    """[N] the file's code points ("chars") or byte values ("bytes"), newline = 10."""
    try:
        if tokens == "bytes":
            with open(path, "rb") as f:
                return np.frombuffer(f.read(), np.uint8).astype(np.int32)
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"Cannot read {path}: {e}") from e
    return np.frombuffer(text.encode("utf-32-le"), np.uint32).astype(np.int32)


def code_name(code: int, tokens: str) -> str:
    """The symbol of a code point or byte: `<eos>` for the newline."""
    if code == NEWLINE:
        return EOS
    if tokens == "chars" or 32 <= code < 127:
        return chr(code)
    return f"<{code:02x}>"


def count_symbols(path: os.PathLike, tokens: str) -> Mapping[str, int]:
    """How often each symbol occurs in the file, `<eos>` included."""
    if tokens == "words":
        return count_words(path)
    codes, counts = np.unique(read_codes(path, tokens), return_counts=True)
    return {code_name(c, tokens): int(n) for c, n in zip(codes.tolist(), counts.tolist())}


def file_ids(path: os.PathLike, vocab: Mapping[str, int], tokens: str = "words") -> np.ndarray:
    """The file's symbols as int32 ids; symbols outside the vocabulary become `<unk>`, or
    raise if the vocabulary has none."""
    if tokens == "words":
        unk = vocab.get(UNK, -1)
        ids = array.array("i")
        for line in read_lines(path):
            ids.extend([vocab.get(w, unk) for w in line_words(line)])
        ids_N = np.frombuffer(ids, dtype=np.int32)
    else:
        codes, inverse = np.unique(read_codes(path, tokens), return_inverse=True)
        names = [code_name(c, tokens) for c in codes.tolist()]
        table = np.array([vocab.get(n, vocab.get(UNK, -1)) for n in names], np.int32)
        ids_N = table[inverse.reshape(-1)] if len(codes) else np.zeros(0, np.int32)
    noun = "words" if tokens == "words" else "symbols"
    if not np.any(ids_N != vocab.get(EOS, -1)):
        raise DataError(f"{path} holds no {noun}; replace it with a text file.")
    if np.any(ids_N < 0):
        unknown = collections.Counter(w for w in read_symbols(path, tokens) if w not in vocab)
        raise unknown_words_error(unknown, path, noun)
    return ids_N


def read_symbols(path: os.PathLike, tokens: str) -> list[str]:
    """The file's symbols in order (for files small enough to hold as a list)."""
    if tokens == "words":
        return read_words(path)
    return [code_name(c, tokens) for c in read_codes(path, tokens).tolist()]


def text_symbols(text: str, tokens: str) -> list[str]:
    """The symbols of a string (a prompt): its words, characters or UTF-8 bytes."""
    if tokens == "words":
        return text.split()
    codes = text.encode("utf-8") if tokens == "bytes" else map(ord, text)
    return [code_name(c, tokens) for c in codes]


def join_symbols(symbols: list[str], tokens: str) -> str:
    """Text from symbols: words joined by spaces; characters and bytes joined as they are,
    `<eos>` a newline (bytes decoded as UTF-8, a broken sequence shown as U+FFFD)."""
    if tokens == "words":
        return " ".join(symbols)
    if tokens == "chars":
        return "".join("\n" if s == EOS else s for s in symbols)
    raw = bytes(
        NEWLINE if s == EOS else ord(s) if len(s) == 1 else int(s[1:-1], 16)
        for s in symbols
        if s != UNK
    )
    return raw.decode("utf-8", errors="replace")


def unknown_words_error(unknown: Mapping[str, int], where, noun: str = "words") -> DataError:
    examples = ", ".join(w if noun == "words" else repr(w) for w in sorted(unknown)[:5])
    return DataError(
        f"{sum(unknown.values())} {noun} of {where} are not in the vocabulary (e.g. "
        f"{examples}) and it has no {UNK} to map them to. Set --config.data.min_count=2 "
        f"(training {noun} seen once become {UNK}, and so do unseen {noun}), or "
        f"--config.data.max_vocab_size, or add {UNK} to the training text."
    )


def words_to_ids(words: list[str], vocab: Mapping[str, int]) -> np.ndarray:
    """int32 ids of symbols; unknown ones become `<unk>`, or raise if there is none."""
    unk = vocab.get(UNK)
    if unk is None:
        unknown = collections.Counter(w for w in words if w not in vocab)
        if unknown:
            raise unknown_words_error(unknown, "the text")
    return np.array([vocab.get(w, unk) for w in words], dtype=np.int32)

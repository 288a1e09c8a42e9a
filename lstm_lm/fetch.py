"""Fetching a corpus: its archive from a list of mirrors, checked, its files put in place.

Downloads go through pooch (a temporary file renamed when complete, a progress bar). The
archive is checked by its SHA-256 where one is published, each file by its SHA-256 or
else by its published symbol count; a corpus that is one file in its archive (enwik8,
text8) is checked by that file's published size and cut into train/valid/test at
`Dataset.split_sizes`. On any failure nothing is left behind but the files that were
already there.
"""

import dataclasses
import os
import pathlib
import shutil
import tarfile
import tempfile
import urllib.parse
import zipfile
import zlib
from collections.abc import Mapping

import pooch
import requests

from lstm_lm import symbols
from lstm_lm.symbols import DataError

DATA_DIR_ENV = "LSTM_LM_DATA_DIR"  # the folder that holds one folder per dataset
# The WikiText host refuses a client's default User-Agent.
USER_AGENT = "Mozilla/5.0 (compatible; lstm_lm)"
pooch.get_logger().setLevel("WARNING")  # not its "use this hash" note: ours are checked


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A corpus that can be fetched: its archive's mirrors and what the files must hold."""

    folder: str  # its folder under the data root
    files: tuple[str, str, str]  # train, valid, test
    urls: tuple[str, ...]  # mirrors of one archive (.tgz or .zip), tried in order
    archive_folder: str  # the folder in the archive that holds the files
    num_tokens: Mapping[str, int]  # published sizes: symbols, one <eos> per line included
    sha256: Mapping[str, str] = dataclasses.field(default_factory=dict)  # files', where known
    archive_sha256: str = ""  # the archive's, where published
    level: str = "word"  # what a symbol is: "word", "char" or "byte" (config.data.level)
    tokens: str = "words"  # how its files cut into symbols: one of symbols.TOKENS
    source: str = ""  # a corpus that is one file of the archive: its name there, cut
    split_sizes: tuple[int, ...] = ()  # into train, valid, test of these many bytes


def download(dataset: Dataset, data_dir: pathlib.Path, urls: tuple[str, ...], timeout=60.0):
    """Fetch the dataset's archive from the first of `urls` that works and place its
    three files in data_dir. Each file is checked (SHA-256 where known, else its token
    count) before it is moved into place; on any failure nothing is left behind but
    the files that were already there."""
    if dataset.source:
        what = f"cut its {dataset.source} at {dataset.split_sizes} bytes into {dataset.files} in"
    else:
        what = f"extract {dataset.archive_folder}/{{{','.join(dataset.files)}}} into"
    by_hand = (
        f"To place the files by hand, download {(dataset.urls or urls)[0]}, {what} "
        f"{data_dir}, or point "
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
    if dataset.source:
        extracted = _extract_and_cut(archive, scratch / "extracted", dataset, url)
    else:
        extracted = _extract(archive, scratch / "extracted", dataset)
    for name, path in extracted.items():
        if name in dataset.sha256:
            _check_sha256(path, dataset.sha256[name], url, "corpus")
        elif name in dataset.num_tokens:
            num_tokens = sum(symbols.count_symbols(path, dataset.tokens).values())
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
    folder = f"{dataset.archive_folder}/" if dataset.archive_folder else ""
    wanted = {f"{folder}{name}": name for name in dataset.files}
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
    """The file name if the member is <archive_folder>/<file> (or <file> when no folder
    is wanted), at any depth."""
    parts = pathlib.PurePosixPath(member_name).parts
    return wanted.get("/".join(parts[-2:])) or wanted.get(parts[-1])


def _extract_and_cut(archive: pathlib.Path, dest: pathlib.Path, dataset: Dataset, url: str):
    """The archive's one file `dataset.source`, checked by its size and cut into the
    three files at `dataset.split_sizes` (as awd-lstm-lm's prep_enwik8.py): name -> path."""
    source = dataclasses.replace(dataset, files=(dataset.source,), archive_folder="")
    path = _extract(archive, dest, source)[dataset.source]
    size, expected = path.stat().st_size, sum(dataset.split_sizes)
    if size != expected:
        raise DataError(
            f"{dataset.source} from {url} has {size} bytes, expected {expected}: the download "
            "is corrupt or another corpus."
        )
    cut = {}
    with open(path, "rb") as src:
        for name, part_size in zip(dataset.files, dataset.split_sizes):
            with open(dest / name, "wb") as dst:
                dst.write(src.read(part_size))
            cut[name] = dest / name
    path.unlink()
    return cut

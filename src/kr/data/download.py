"""Finding a MedMNIST file: --data-dir / KR_DATA_DIR, then the user cache, then the network.

Downloads go to a temporary file that is checked against the official MD5 before it is
renamed into the cache, so an interrupted or corrupted download is never mistaken for data.
"""

from __future__ import annotations

import hashlib
import logging
import os
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from kr.artifacts import atomic_path
from kr.data.registry import DataFile, DatasetInfo
from kr.errors import DataError

log = logging.getLogger(__name__)


def data_dir_from_env(data_dir: str | Path | None) -> Path | None:
    """The folder the user pointed at: the argument first, then $KR_DATA_DIR."""
    if data_dir:
        return Path(data_dir).expanduser()
    env = os.environ.get("KR_DATA_DIR")
    return Path(env).expanduser() if env else None


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "kr" / "medmnist"


def md5sum(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def check_md5(path: Path, expected: str) -> None:
    actual = md5sum(path)
    if actual != expected:
        raise DataError(f"MD5 mismatch for {path}: got {actual}, expected {expected} (MedMNIST v3); "
                        f"the file is corrupt or from another release: delete it and fetch it again, "
                        f"or pass its path instead of the dataset name to load it unchecked")


def locate(info: DatasetInfo, size: int = 28, data_dir: str | Path | None = None) -> Path | None:
    """The local copy of a dataset file, searched in the data dir then the cache; None if absent."""
    file = info.file(size)
    for folder in (data_dir_from_env(data_dir), cache_dir()):
        if folder is not None and (folder / file.filename).is_file():
            return folder / file.filename
    return None


def resolve(info: DatasetInfo, size: int = 28, data_dir: str | Path | None = None,
            download: bool = True) -> Path:
    """A verified local path to the dataset file, downloading it into the cache if needed."""
    file = info.file(size)
    path = locate(info, size, data_dir)
    if path is None:
        if not download:
            raise DataError(_missing_message(file, data_dir))
        path = fetch(file, cache_dir(), data_dir)
    check_md5(path, file.md5)
    return path


def fetch(file: DataFile, folder: Path, data_dir: str | Path | None = None) -> Path:
    """Download `file` into `folder`, verifying its MD5; raises DataError when offline."""
    target = folder / file.filename
    log.info("downloading %s to %s", file.url, target)
    try:
        with atomic_path(target) as tmp:
            _download(file.url, tmp, file.filename)
            check_md5(tmp, file.md5)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DataError(f"cannot download {file.url} ({reason}). "
                        + _missing_message(file, data_dir)) from None
    return target


def _download(url: str, dest: Path, name: str) -> None:
    with urllib.request.urlopen(url, timeout=60) as response, open(dest, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=name, disable=None) as bar:
            while block := response.read(1 << 20):
                out.write(block)
                bar.update(len(block))


def _missing_message(file: DataFile, data_dir: str | Path | None) -> str:
    where = data_dir_from_env(data_dir) or cache_dir()
    return (f"{file.filename} not found: put it (MD5 {file.md5}, from {file.url}) into {where}, "
            f"or point --data-dir / KR_DATA_DIR at the folder that holds it")

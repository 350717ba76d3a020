"""Resolution order, download, MD5 verification and the offline message, without a network:
the download URL is pointed at a local file:// URL."""

from pathlib import Path

import pytest

from kr.data import download, get_info
from kr.data.download import cache_dir, md5sum, resolve
from kr.data.registry import DataFile
from kr.errors import DataError
from tests.conftest import make_arrays, write_npz


@pytest.fixture
def served(tmp_path, monkeypatch):
    """A fake 'breastmnist' whose official URL and MD5 point at a local file."""
    source = write_npz(tmp_path / "served.npz", make_arrays())
    info = get_info("breastmnist")
    fake = DataFile("breastmnist.npz", source.as_uri(), md5sum(source))
    monkeypatch.setattr(type(info), "file", lambda self, size=28: fake)
    return info, source


def _leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.glob(".*tmp")] if folder.exists() else []


def test_cache_dir_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_dir() == tmp_path / "kr" / "medmnist"


def test_download_into_cache_then_reuse(served, monkeypatch):
    info, source = served
    monkeypatch.delenv("KR_DATA_DIR", raising=False)
    path = resolve(info)
    assert path == cache_dir() / "breastmnist.npz" and path.read_bytes() == source.read_bytes()
    source.unlink()  # a second resolve must not need the network
    assert resolve(info) == path


def test_data_dir_wins_over_cache(served, tmp_path, monkeypatch):
    info, source = served
    monkeypatch.delenv("KR_DATA_DIR", raising=False)
    resolve(info)  # now in the cache
    local = tmp_path / "local"
    local.mkdir()
    (local / "breastmnist.npz").write_bytes(source.read_bytes())
    assert resolve(info, data_dir=local) == local / "breastmnist.npz"
    monkeypatch.setenv("KR_DATA_DIR", str(local))
    assert resolve(info) == local / "breastmnist.npz"


def test_corrupt_download_is_rejected_and_leaves_nothing(served, tmp_path, monkeypatch):
    info, source = served
    monkeypatch.delenv("KR_DATA_DIR", raising=False)
    bad = DataFile("breastmnist.npz", source.as_uri(), "0" * 32)
    monkeypatch.setattr(type(info), "file", lambda self, size=28: bad)
    with pytest.raises(DataError, match="MD5 mismatch"):
        resolve(info)
    assert not (cache_dir() / "breastmnist.npz").exists() and not _leftovers(cache_dir())


def test_offline_error_says_which_file_to_put_where(served, tmp_path, monkeypatch):
    info, source = served
    monkeypatch.delenv("KR_DATA_DIR", raising=False)
    source.unlink()  # the "server" is gone: as good as offline
    with pytest.raises(DataError, match=r"cannot download .*breastmnist.npz not found: put it "
                                        r"\(MD5 [0-9a-f]{32}, from .*\) into .*kr/medmnist"):
        resolve(info)
    assert not _leftovers(cache_dir())
    with pytest.raises(DataError, match="breastmnist.npz not found: put it .* into " + str(tmp_path)):
        resolve(info, data_dir=tmp_path, download=False)


def test_download_progress_writes_whole_file(tmp_path):
    src = tmp_path / "blob.bin"
    src.write_bytes(b"x" * (3 << 20))
    dest = tmp_path / "out.bin"
    download._download(src.as_uri(), dest, "blob")
    assert dest.read_bytes() == src.read_bytes()

import numpy as np
import pytest
import torch

from kr.data import load_dataset
from kr.errors import DataError
from tests.conftest import make_arrays, write_npz


def test_digits_is_offline_deterministic_and_stratified():
    a, b = load_dataset("digits"), load_dataset("digits")
    assert (len(a.train), len(a.val), len(a.test)) == (1257, 180, 360)
    assert torch.equal(a.train.images, b.train.images) and a.fingerprint == b.fingerprint
    assert a.train.images.shape[1:] == (1, 28, 28)
    assert a.train.images.min() >= -1 and a.train.images.max() <= 1
    counts = np.array(a.class_counts("test"))
    assert counts.min() >= 35 and counts.max() <= 37  # stratified: ~36 of each digit
    assert not a.hflip  # a flipped digit is another symbol


def test_user_npz_grayscale_and_rgb(tmp_path):
    gray = load_dataset(str(write_npz(tmp_path / "gray.npz", make_arrays())))
    assert gray.train.images.shape == (12, 1, 28, 28) and gray.name == "gray"
    assert gray.train.images.dtype == torch.float32
    assert gray.train.images.min() >= -1 and gray.train.images.max() <= 1
    assert gray.train.labels.shape == (12,) and gray.task == "binary-class"
    rgb = load_dataset(str(write_npz(tmp_path / "rgb.npz", make_arrays(channels=3, classes=4))))
    assert rgb.channels == 3 and rgb.train.images.shape == (12, 3, 28, 28)
    assert rgb.task == "multi-class" and rgb.n_classes == 4


def test_pixel_mapping_is_exact(tmp_path):
    arrays = make_arrays()
    arrays["train_images"][0, 0, :3] = [0, 255, 128]
    d = load_dataset(str(write_npz(tmp_path / "px.npz", arrays)))
    assert d.train.images[0, 0, 0, :3].tolist() == pytest.approx([-1.0, 1.0, 128 / 127.5 - 1], abs=1e-6)


def test_rgb_channel_order_is_preserved(tmp_path):
    arrays = make_arrays(channels=3)
    arrays["train_images"][0] = 0
    arrays["train_images"][0, :, :, 2] = 255  # pure blue, stored N×H×W×C
    d = load_dataset(str(write_npz(tmp_path / "blue.npz", arrays)))
    assert d.train.images[0, 2].eq(1).all() and d.train.images[0, :2].eq(-1).all()


def test_multilabel_npz(tmp_path):
    arrays = make_arrays()
    for s in ("train", "val", "test"):
        n = len(arrays[f"{s}_images"])
        arrays[f"{s}_labels"] = (np.arange(n * 3).reshape(n, 3) % 2).astype(np.uint8)
    d = load_dataset(str(write_npz(tmp_path / "ml.npz", arrays)))
    assert d.multi_label and d.train.labels.shape == (12, 3) and d.n_classes == 3


def test_label_names_key(tmp_path):
    arrays = make_arrays(classes=3)
    arrays["label_names"] = np.array(["a", "b", "c"])
    assert load_dataset(str(write_npz(tmp_path / "n.npz", arrays))).label_names == ("a", "b", "c")


def _bad(arrays, **change):
    arrays = dict(arrays)
    for key, value in change.items():
        if value is None:
            arrays.pop(key)
        else:
            arrays[key] = value
    return arrays


GOOD = make_arrays()


@pytest.mark.parametrize("arrays, message", [
    (_bad(GOOD, val_labels=None), "lacks the keys val_labels"),
    (_bad(GOOD, test_labels=GOOD["test_labels"][:3]), "test has 6 images but 3 labels"),
    (_bad(GOOD, train_images=np.zeros((12, 28), np.uint8)), "train_images has shape"),
    (_bad(GOOD, train_images=GOOD["train_images"].astype(np.int32)), "dtype int32"),
    (_bad(GOOD, train_images=GOOD["train_images"] * 2.0), r"floats must be in \[0, 1\]"),
    (_bad(GOOD, train_images=np.full((12, 28, 28), np.nan)), "NaN or infinite"),
    (_bad(GOOD, val_labels=np.full((6, 1), -1, np.int64)), "labels must be ≥ 0"),
    (_bad(GOOD, test_labels=np.full((6, 1), 10 ** 9, np.int64)),
     r"test_labels goes up to 1000000000, but train_labels has 2 classes.*absent from train: \[2, 3"),
    (_bad(GOOD, train_labels=(np.arange(12) % 3 * 2)[:, None]),
     r"train_labels goes up to 4.*absent from train: \[1, 3\]"),
    (_bad(GOOD, **{f"{s}_images": np.zeros((n, 28, 32), np.uint8) for s, n in
                   (("train", 12), ("val", 6), ("test", 6))}), "28×32; kr needs square images"),
    (_bad(GOOD, **{f"{s}_images": np.zeros((n, 48, 48), np.uint8) for s, n in
                   (("train", 12), ("val", 6), ("test", 6))}), r"7·2\^k or 4·2\^k.*e.g. to 56×56"),
    (_bad(GOOD, train_labels=GOOD["train_labels"].astype(np.float32)), "train_labels has shape"),
    (_bad(GOOD, val_images=np.zeros((0, 28, 28), np.uint8), val_labels=np.zeros((0, 1), np.uint8)),
     "the val split is empty"),
    (_bad(GOOD, test_images=np.zeros((6, 32, 32), np.uint8)), "different image shapes"),
])
def test_bad_user_npz_is_a_clear_error(tmp_path, arrays, message):
    path = write_npz(tmp_path / "bad.npz", arrays)
    with pytest.raises(DataError, match=message):
        load_dataset(str(path))


def test_labels_beyond_label_names(tmp_path):
    arrays = make_arrays(classes=3)
    arrays["label_names"] = np.array(["a", "b"])
    with pytest.raises(DataError, match="label_names has 2 entries"):
        load_dataset(str(write_npz(tmp_path / "n.npz", arrays)))


def test_truncated_and_corrupt_files(tmp_path):
    good = write_npz(tmp_path / "good.npz", make_arrays())
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(DataError, match="truncated or corrupt"):
        load_dataset(str(truncated))
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip file at all")  # e.g. a text file renamed
    with pytest.raises(DataError, match="is not an .npz file"):
        load_dataset(str(junk))
    single = tmp_path / "single.npz"  # an .npy renamed
    np.save(tmp_path / "single.npy", np.zeros((3, 28, 28), np.uint8))
    (tmp_path / "single.npy").rename(single)
    with pytest.raises(DataError, match="single .npy array, not an .npz archive"):
        load_dataset(str(single))
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, **make_arrays(), label_names=np.array([{"a": 1}, {"b": 2}], dtype=object))
    with pytest.raises(DataError, match="Python objects"):
        load_dataset(str(pickled))


def test_missing_path(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_dataset(str(tmp_path / "nope.npz"))


def test_registry_file_is_md5_checked(tmp_path):
    write_npz(tmp_path / "breastmnist.npz", make_arrays())  # right name, wrong content
    with pytest.raises(DataError, match="MD5 mismatch.*expected 750601b1f35ba3300ea97c75c52ff8f6"):
        load_dataset("breastmnist", data_dir=tmp_path)


@pytest.mark.parametrize("name, splits, counts", [
    ("breastmnist", (546, 78, 156), [147, 399]),
    ("pneumoniamnist", (4708, 524, 624), [1214, 3494]),
])
def test_real_medmnist_files(medmnist_dir, name, splits, counts):
    d = load_dataset(name, data_dir=medmnist_dir)
    assert (len(d.train), len(d.val), len(d.test)) == splits
    assert d.class_counts("train") == counts
    assert d.channels == 1 and d.size == 28 and d.task == "binary-class"
    assert d.fingerprint.startswith("md5:")


def test_data_dir_from_environment(medmnist_dir, monkeypatch):
    monkeypatch.setenv("KR_DATA_DIR", str(medmnist_dir))
    assert load_dataset("breastmnist").source == str(medmnist_dir / "breastmnist.npz")

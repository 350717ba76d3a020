import re

import pytest

from kr.data import MEDMNIST, get_info
from kr.data.registry import SIZES, TASKS
from kr.errors import DataError

TWO_D = ["pathmnist", "chestmnist", "dermamnist", "octmnist", "pneumoniamnist", "retinamnist",
         "breastmnist", "bloodmnist", "tissuemnist", "organamnist", "organcmnist", "organsmnist"]


def test_every_2d_medmnist_dataset_is_registered():
    assert sorted(MEDMNIST) == sorted(TWO_D)


@pytest.mark.parametrize("name", TWO_D)
def test_entries_are_complete_and_well_formed(name):
    info = get_info(name)
    assert info.task in TASKS
    assert info.channels in (1, 3)
    assert info.n_classes >= 2 and all(info.labels)
    assert set(info.n_samples) == {"train", "val", "test"} and min(info.n_samples.values()) > 0
    assert info.sizes == SIZES
    for size in SIZES:
        f = info.file(size)
        assert re.fullmatch(r"[0-9a-f]{32}", f.md5)
        assert f.filename == (f"{name}.npz" if size == 28 else f"{name}_{size}.npz")
        assert f.url.startswith("https://zenodo.org/records/10519652/files/" + f.filename)
    md5s = [info.file(s).md5 for s in SIZES]
    assert len(set(md5s)) == len(md5s)


def test_known_facts():
    breast = get_info("breastmnist")
    assert breast.n_samples == {"train": 546, "val": 78, "test": 156}
    assert breast.file(28).md5 == "750601b1f35ba3300ea97c75c52ff8f6"
    assert breast.labels == ("malignant", "normal, benign") and breast.task == "binary-class"
    assert get_info("pneumoniamnist").file(28).md5 == "28209eda62fecd6e6a2d98b1501bb15f"
    assert get_info("chestmnist").multi_label and get_info("chestmnist").n_classes == 14
    assert get_info("pathmnist").channels == 3 and get_info("bloodmnist").channels == 3
    assert get_info("dermamnist").license == "CC BY-NC 4.0"


def test_flip_policy_protects_laterality():
    # Organ labels name left/right organs and chest X-rays have the heart on the left.
    for name in ("organamnist", "organcmnist", "organsmnist", "chestmnist", "pneumoniamnist"):
        assert not get_info(name).hflip
    assert get_info("breastmnist").hflip and get_info("pathmnist").hflip


def test_unknown_name_and_size():
    with pytest.raises(DataError, match="unknown dataset 'cifar10'.*digits"):
        get_info("cifar10")
    assert get_info("BreastMNIST").name == "breastmnist"
    with pytest.raises(DataError, match="no 32px file"):
        get_info("breastmnist").file(32)

"""Folders of images as a dataset: a folder written from known arrays reads back as them, its
frozen .npz shares its fingerprint, and every bad folder is one clear line with nothing written."""

import numpy as np
import pytest
from PIL import Image

from kr.data import load_dataset
from kr.data.folder import FRACTIONS, import_folder
from kr.errors import DataError
from tests.test_cli import _one_clean_error, kr

NAMES = ("zero", "one", "two")


def write_folder(root, arrays: dict, names=NAMES, splits=("train", "val", "test"), fmt="png"):
    """One image file per array row, named by its index (zero-padded: files are read sorted)."""
    for s in splits:
        for i, (x, y) in enumerate(zip(arrays[f"{s}_images"], arrays[f"{s}_labels"][:, 0])):
            folder = root / s / names[y] if len(splits) == 3 else root / names[y]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(x).save(folder / f"{i:05d}.{fmt}")
    return root


def in_class_order(images, labels):
    """The rows as a folder reads them back: class by class, in file (= index) order."""
    return np.concatenate([images[labels[:, 0] == c] for c in np.unique(labels)])


def _digits_arrays(per_split=40):
    d = load_dataset("digits")
    out = {}
    for s in ("train", "val", "test"):
        split = d.split(s)
        keep = split.labels < 3
        x = ((split.images[keep][:per_split, 0] + 1) * 127.5).round().byte().numpy()
        out[f"{s}_images"], out[f"{s}_labels"] = x, split.labels[keep][:per_split, None].numpy()
    return out


def test_a_folder_reads_back_exactly_at_28_px_and_its_npz_shares_the_fingerprint(tmp_path):
    arrays = _digits_arrays()
    root = write_folder(tmp_path / "digits3", arrays)
    data = load_dataset(str(root))
    assert data.label_names == tuple(sorted(NAMES)) and data.channels == 1 and data.size == 28
    got, record = import_folder(root, 28)
    order = [NAMES.index(n) for n in sorted(NAMES)]  # label 0 is the first class name in sorted order
    for s in ("train", "val", "test"):
        relabel = np.array([order.index(y) for y in arrays[f"{s}_labels"][:, 0]])[:, None]
        assert (got[f"{s}_images"] == in_class_order(arrays[f"{s}_images"], relabel)).all()
        assert (got[f"{s}_labels"] == np.sort(relabel, axis=0)).all()
    assert record["mode"] == "grayscale" and record["layout"] == "train/val/test folders"
    proc = kr("data", "import", str(root), "--out", str(tmp_path / "d.npz"))
    assert proc.returncode == 0, proc.stderr
    assert load_dataset(str(tmp_path / "d.npz")).fingerprint == data.fingerprint == record["fingerprint"]


def test_breastmnist_round_trips(medmnist_dir, tmp_path):
    with np.load(medmnist_dir / "breastmnist.npz") as f:
        arrays = {k: f[k][:60] for k in f.files}
    root = write_folder(tmp_path / "breast", arrays, names=("malignant", "normal"))
    got, _ = import_folder(root, 28)
    for s in ("train", "val", "test"):
        assert (got[f"{s}_images"] == in_class_order(arrays[f"{s}_images"], arrays[f"{s}_labels"])).all()


def test_64_px_shapes_label_order_and_determinism(tmp_path):
    arrays = _digits_arrays(20)
    root = write_folder(tmp_path / "d", arrays, fmt="jpg")
    a, ra = import_folder(root, 64)
    b, rb = import_folder(root, 64)
    assert a["train_images"].shape == (20, 64, 64) and ra["fingerprint"] == rb["fingerprint"]
    assert all((a[k] == b[k]).all() for k in a)
    assert list(a["label_names"]) == sorted(NAMES)
    assert (np.diff(a["train_labels"][:, 0]) >= 0).all()  # class by class


def test_class_folders_alone_are_split_per_class_with_a_recorded_seed(tmp_path):
    rng = np.random.default_rng(0)
    for name, n in (("cyst", 30), ("mass", 11), ("normal", 3)):
        (tmp_path / "us" / name).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(tmp_path / "us" / name / f"{i}.png")
    arrays, record = import_folder(tmp_path / "us", 32)
    counts = record["counts"]
    assert counts["train"] == {"cyst": 21, "mass": 8, "normal": 1}
    assert counts["val"] == {"cyst": 3, "mass": 1, "normal": 1} and counts["test"] == {"cyst": 6, "mass": 2, "normal": 1}
    assert "seed 0" in record["layout"] and f"{int(100 * FRACTIONS[0])}/" in record["layout"]
    assert arrays["train_images"].shape == (30, 32, 32, 3) and record["mode"] == "RGB"
    assert import_folder(tmp_path / "us", 32)[1]["fingerprint"] == record["fingerprint"]


def _bad(tmp_path, case):
    root = tmp_path / "bad"
    img = lambda p, mode="L": (p.parent.mkdir(parents=True, exist_ok=True),  # noqa: E731
                               Image.new(mode, (30, 30), 128).save(p))
    for s in ("train", "val", "test"):
        for c in ("a", "b"):
            img(root / s / c / "0.png")
    if case == "empty class":
        for p in (root / "val" / "b").iterdir():
            p.unlink()
    elif case == "class only in test":
        img(root / "test" / "c" / "0.png")
    elif case == "truncated image":
        (root / "train" / "a" / "1.png").write_bytes((root / "train" / "a" / "0.png").read_bytes()[:40])
    elif case == "not an image":
        (root / "train" / "a" / "notes.txt").write_text("scanner settings")
    elif case == "mixed modes":
        img(root / "train" / "b" / "1.png", "RGB")
    elif case == "too few to split":
        import shutil
        shutil.rmtree(root)
        for c, n in (("a", 5), ("b", 2)):
            for i in range(n):
                img(root / c / f"{i}.png")
    elif case == "no val folder":
        import shutil
        shutil.rmtree(root / "val")
    return root


@pytest.mark.parametrize("case, message", [
    ("empty class", "holds no images"),
    ("class only in test", "appears in test/ but not in train/"),
    ("truncated image", "damaged, truncated or not an image"),
    ("not an image", "notes.txt is not an image kr reads"),
    ("mixed modes", "mixes grayscale images"),
    ("too few to split", "b/ has 2 images; a class needs at least 3"),
    ("no val folder", "but no val/"),
])
def test_a_bad_folder_is_one_line_and_writes_nothing(tmp_path, case, message):
    root = _bad(tmp_path, case)
    with pytest.raises(DataError, match=message.replace("/", ".").replace("(", ".")):
        import_folder(root, 28)
    out = tmp_path / "out"
    out.mkdir()
    line = _one_clean_error(kr("data", "import", str(root), "--out", str(out / "x.npz")))
    assert message in line
    assert not any(out.iterdir())  # nothing half-written


def test_a_run_reads_a_folder_and_refuses_an_unbuildable_side(tmp_path):
    root = write_folder(tmp_path / "d", _digits_arrays(10))
    line = _one_clean_error(kr("run", "--dataset", str(root), "--set", "data.size=30", "--dry-run"))
    assert "data.size" in line and "30 is not one of" in line


@pytest.mark.slow  # end to end: a whole tiny run at 64 px
def test_a_tiny_run_at_64_px_from_a_folder_through_every_stage(tmp_path):
    from kr import pipeline
    from kr.config import load_config

    root = write_folder(tmp_path / "d", _digits_arrays(24))
    config = load_config("tiny", data={"dataset": str(root), "size": 64}, overrides=["dpsgd.epsilons=4"])
    results = pipeline.run(config, out=tmp_path / "run", device="cpu")
    assert set(results["methods"]) == {"real", "kr", "synthetic", "regen", "soft", "dpsgd-eps4"}
    assert all("test" in m for m in results["methods"].values())
    assert results["memorisation"]["samples"] >= 1 and (tmp_path / "run/report/report.html").is_file()
    from kr.models import load_classifier
    import torch
    student = load_classifier(tmp_path / "run/methods/kr")
    assert student(torch.zeros(2, 1, 64, 64)).shape == (2, 3)


def test_predict_reads_a_folder_of_new_images(tmp_path):
    """A flat folder (no labels) or class folders named as the model's classes (accuracy); each
    CSV row names its file."""
    import csv

    from kr.models import build_model, save_classifier
    from kr.release import predict

    model = build_model("convnet", 1, 3, width=4, seed=0)
    save_classifier(model, tmp_path / "m", "convnet", 1, 3, extra={"label_names": list(NAMES), "image_size": 28},
                    width=4)
    arrays = _digits_arrays(6)
    labelled = write_folder(tmp_path / "new", arrays, names=NAMES, splits=("test",))
    summary = predict(tmp_path / "m", labelled, tmp_path / "p.csv", "cpu")
    assert summary["all"]["n"] == 6 and "acc" in summary["all"]
    rows = list(csv.DictReader(open(tmp_path / "p.csv")))
    assert rows[0]["file"].split("/")[0] in NAMES and rows[0]["label"] in NAMES
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.fromarray(np.zeros((50, 40), np.uint8)).save(flat / "scan.jpg")
    assert predict(tmp_path / "m", flat, tmp_path / "q.csv", "cpu") == {"all": {"n": 1}}
    (tmp_path / "new" / "tumour").mkdir()
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "new" / "tumour" / "x.png")
    with pytest.raises(DataError, match="tumour/ is not one of the model's classes"):
        predict(tmp_path / "m", labelled, tmp_path / "r.csv", "cpu")

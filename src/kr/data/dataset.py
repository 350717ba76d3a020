"""Loading and validating image datasets: MedMNIST files, sklearn digits, and user .npz files.

Every source ends as an `ImageDataset`: float images in [-1, 1] shaped N×C×H×W and integer
labels, per split.  Bad files fail here with one message that names the problem and the fix,
before any run directory is created.
"""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from kr.data.download import resolve
from kr.data.registry import DatasetInfo, get_info
from kr.errors import DataError

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Split:
    images: torch.Tensor  # float32, N×C×H×W, in [-1, 1]
    labels: torch.Tensor  # int64, (N,) or (N, L) for multi-label

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class ImageDataset:
    name: str
    task: str
    label_names: tuple[str, ...]
    hflip: bool          # whether a horizontal flip keeps the label (used by augmentation)
    source: str          # file path, or a description for built-in data
    fingerprint: str     # content hash: part of every stage's cache key
    train: Split
    val: Split
    test: Split

    @property
    def n_classes(self) -> int:
        return len(self.label_names)

    @property
    def channels(self) -> int:
        return self.train.images.shape[1]

    @property
    def size(self) -> int:
        return self.train.images.shape[-1]

    @property
    def multi_label(self) -> bool:
        return self.task.startswith("multi-label")

    def split(self, name: str) -> Split:
        return getattr(self, name)

    def class_counts(self, split: str) -> list[int]:
        labels = self.split(split).labels
        if self.multi_label:
            return labels.sum(0).tolist()
        return torch.bincount(labels, minlength=self.n_classes).tolist()


def load_dataset(name: str, data_dir: str | Path | None = None, size: int = 28,
                 download: bool = True) -> ImageDataset:
    """A dataset by registry name (`digits`, `breastmnist`, …) or by path to a MedMNIST-style .npz."""
    if name.lower() == "digits":
        return load_digits(size)
    path = Path(name).expanduser()
    if name.endswith(".npz") or path.is_file():
        if not path.is_file():
            raise DataError(f"no such file: {path}")
        return load_npz(path, info=None, fingerprint=_sha256(path))
    info = get_info(name)
    file = resolve(info, size, data_dir, download=download)
    return load_npz(file, info=info, fingerprint=f"md5:{info.file(size).md5}")


def load_npz(path: Path, info: DatasetInfo | None, fingerprint: str) -> ImageDataset:
    arrays = _read_npz(path)
    missing = [f"{s}_{k}" for s in SPLITS for k in ("images", "labels") if f"{s}_{k}" not in arrays]
    if missing:
        raise DataError(f"{path} lacks the keys {', '.join(missing)}; a MedMNIST-style .npz needs "
                        f"train/val/test _images and _labels")
    splits = {s: _split(path, s, arrays[f"{s}_images"], arrays[f"{s}_labels"]) for s in SPLITS}
    shapes = {s: tuple(splits[s][0].shape[1:]) for s in SPLITS}
    if len(set(shapes.values())) != 1:
        raise DataError(f"{path}: splits have different image shapes {shapes}; all must match")
    label_dims = {s: splits[s][1].shape[1:] for s in SPLITS}
    if len(set(label_dims.values())) != 1:
        raise DataError(f"{path}: splits have different label shapes {label_dims}; all must match")

    multi_label = splits["train"][1].ndim == 2
    if info is not None:
        task, names, hflip, name = info.task, info.labels, info.hflip, info.name
        channels = shapes["train"][0]
        if channels != info.channels:
            raise DataError(f"{path}: {channels} channels, but {info.name} has {info.channels}")
        if multi_label != info.multi_label:
            raise DataError(f"{path}: label shape {label_dims['train']} does not fit {info.name}'s "
                            f"task ({info.task})")
    else:
        name, hflip = path.stem, False  # unknown content: never assume a flip keeps the label
        if multi_label:
            names = tuple(str(i) for i in range(splits["train"][1].shape[1]))
            task = "multi-label, binary-class"
        else:
            n = int(max(int(splits[s][1].max()) for s in SPLITS)) + 1
            names = _user_label_names(arrays, n, path)
            task = "binary-class" if len(names) == 2 else "multi-class"

    n_classes = len(names)
    for s in SPLITS:
        labels = splits[s][1]
        if multi_label:
            if labels.shape[1] != n_classes or not np.isin(labels, (0, 1)).all():
                raise DataError(f"{path}: {s}_labels must be 0/1 with {n_classes} columns")
        elif labels.min() < 0 or labels.max() >= n_classes:
            raise DataError(f"{path}: {s}_labels has values outside [0, {n_classes}) "
                            f"(min {labels.min()}, max {labels.max()})")
    out = {s: Split(*_to_tensor(*splits[s])) for s in SPLITS}
    return ImageDataset(name, task, tuple(names), hflip, str(path), fingerprint, **out)


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as exc:
        raise DataError(f"cannot read {path}: the file is truncated or corrupt ({exc}); "
                        f"delete it and fetch it again") from None


def _image_array(images: np.ndarray, where: str) -> np.ndarray:
    """N×H×W or N×H×W×C (MedMNIST's layout), uint8 or floats in [0, 1] → N×C×H×W uint8."""
    if len(images) == 0:
        raise DataError(f"{where} is empty; it needs at least one image")
    if images.ndim == 3:
        images = images[:, None]                      # N×H×W → N×1×H×W
    elif images.ndim == 4 and images.shape[-1] in (1, 3):
        images = images.transpose(0, 3, 1, 2)         # MedMNIST stores RGB as N×H×W×C
    else:
        raise DataError(f"{where} has shape {images.shape}; expected N×H×W "
                        f"(grayscale) or N×H×W×3 (RGB)")
    if images.dtype == np.uint8:
        return images
    if np.issubdtype(images.dtype, np.floating) and images.min() >= 0 and images.max() <= 1:
        return np.round(images * 255).astype(np.uint8)
    raise DataError(f"{where} has dtype {images.dtype}; expected uint8 in "
                    f"[0, 255] (or floats in [0, 1])")


def images_to_tensor(images: np.ndarray, where: str) -> torch.Tensor:
    """Images as a model takes them (the scaling every kr model was trained with)."""
    return _to_tensor(_image_array(images, where), np.zeros(0, np.int64))[0]


def _split(path: Path, split: str, images: np.ndarray, labels: np.ndarray):
    if len(images) == 0:
        raise DataError(f"{path}: the {split} split is empty; every split needs at least one image")
    images = _image_array(images, f"{path}: {split}_images")
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim not in (1, 2) or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{path}: {split}_labels has shape {labels.shape} and dtype {labels.dtype}; "
                        f"expected integers shaped (N,), (N, 1), or (N, L) for multi-label")
    if len(labels) != len(images):
        raise DataError(f"{path}: {split} has {len(images)} images but {len(labels)} labels")
    return images, labels.astype(np.int64)


def _user_label_names(arrays: dict[str, np.ndarray], n: int, path: Path) -> tuple[str, ...]:
    if "label_names" not in arrays:
        return tuple(str(i) for i in range(max(n, 2)))
    names = tuple(str(x) for x in arrays["label_names"].tolist())
    if len(names) < n:
        raise DataError(f"{path}: labels go up to {n - 1} but label_names has {len(names)} entries")
    return names


def _to_tensor(images: np.ndarray, labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.from_numpy(np.ascontiguousarray(images)).float().div_(127.5).sub_(1.0)
    return x, torch.from_numpy(labels)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return f"sha256:{h.hexdigest()}"


def load_digits(size: int = 28) -> ImageDataset:
    """scikit-learn's bundled 8×8 digits, upsampled, with a fixed stratified 70/10/20 split.

    The split uses a constant random_state, not the run seed: like MedMNIST's official
    splits it is part of the dataset's definition, identical for every run and machine.
    """
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    d = sk_digits()
    x = torch.from_numpy(d.images).float()[:, None] / 16.0          # N×1×8×8 in [0, 1]
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    images = (x.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    labels = d.target.astype(np.int64)
    idx = np.arange(len(labels))
    train, rest = train_test_split(idx, test_size=0.3, stratify=labels, random_state=0)
    val, test = train_test_split(rest, test_size=2 / 3, stratify=labels[rest], random_state=0)
    out = {s: Split(*_to_tensor(images[i], labels[i])) for s, i in
           (("train", train), ("val", val), ("test", test))}
    fp = hashlib.sha256(images.tobytes() + labels.tobytes()).hexdigest()
    return ImageDataset("digits", "multi-class", tuple(str(i) for i in range(10)), False,
                        "scikit-learn load_digits (bundled)", f"sha256:{fp}", **out)

"""Loading and validating image datasets: MedMNIST files, sklearn digits, user .npz files and
folders of images (kr.data.folder).

Every source ends as an `ImageDataset`: float images in [-1, 1] shaped N×C×H×W and integer
labels, per split.  Bad files fail here with one message that names the problem and the fix,
before any run directory is created.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from kr.data.download import resolve
from kr.data.registry import DatasetInfo, get_info
from kr.errors import DataError

SPLITS = ("train", "val", "test")
# square sides the generators can build: 7·2^k or 4·2^k, the up-sampling ladders of the cGAN
SIDES = tuple(sorted(b * 2 ** k for b in (4, 7) for k in range(2, 7)))


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
    """A dataset by registry name (`digits`, `breastmnist`, …), by path to a MedMNIST-style .npz,
    or by path to a folder of images (resized to `size`)."""
    if name.lower() == "digits":
        return load_digits(size)
    path = Path(name).expanduser()
    if path.is_dir():
        from kr.data.folder import import_folder

        arrays, record = import_folder(path, size)
        return load_arrays(arrays, path, None, record["fingerprint"], name=path.name,
                           source=f"{path} (image folder: {record['mode']}, {record['layout']})")
    if name.endswith(".npz") or path.is_file():
        if not path.is_file():
            raise DataError(f"no such file: {path}")
        return load_npz(path, info=None, fingerprint=_sha256(path))
    info = get_info(name)
    file = resolve(info, size, data_dir, download=download)
    return load_npz(file, info=info, fingerprint=f"md5:{info.file(size).md5}")


def load_npz(path: Path, info: DatasetInfo | None, fingerprint: str) -> ImageDataset:
    arrays = read_npz(path)
    if "kr_import" in arrays and info is None:
        # frozen from an image folder by `kr data import`: its content fingerprint, checked, so a
        # run from the .npz lands on the stage keys of a run from the folder
        from kr.data.folder import fingerprint as content

        try:
            recorded = json.loads(str(arrays["kr_import"]))["fingerprint"]
        except (ValueError, KeyError, TypeError):
            raise DataError(f"{path}: its kr_import record is damaged; import the folder again") from None
        if content(arrays) != recorded:
            raise DataError(f"{path}: its arrays no longer match the fingerprint `kr data import` recorded; "
                            f"import the folder again")
        fingerprint = recorded
    return load_arrays(arrays, path, info, fingerprint)


def load_arrays(arrays: dict[str, np.ndarray], path: Path, info: DatasetInfo | None, fingerprint: str,
                name: str | None = None, source: str | None = None) -> ImageDataset:
    """A validated ImageDataset from MedMNIST-style arrays (`path` names them in errors)."""
    missing = [f"{s}_{k}" for s in SPLITS for k in ("images", "labels") if f"{s}_{k}" not in arrays]
    if missing:
        raise DataError(f"{path} lacks the keys {', '.join(missing)}; a MedMNIST-style .npz needs "
                        f"train/val/test _images and _labels")
    splits = {s: _split(path, s, arrays[f"{s}_images"], arrays[f"{s}_labels"]) for s in SPLITS}
    shapes = {s: tuple(splits[s][0].shape[1:]) for s in SPLITS}
    if len(set(shapes.values())) != 1:
        raise DataError(f"{path}: splits have different image shapes {shapes}; all must match")
    _check_geometry(path, *shapes["train"][1:])
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
        name, hflip = name or path.stem, False  # unknown content: never assume a flip keeps the label
        if multi_label:
            names = tuple(str(i) for i in range(splits["train"][1].shape[1]))
            task = "multi-label, binary-class"
        else:
            n = _class_count(path, {s: splits[s][1] for s in SPLITS})
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
    return ImageDataset(name, task, tuple(names), hflip, source or str(path), fingerprint, **out)


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of an .npz, or one DataError that says what the file is instead.  Each
    member's header is read before its data: an array is never larger than the archive says
    its member is, so a forged header cannot make kr allocate at will."""
    try:
        with open(path, "rb") as f:
            head = f.read(6)
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    if head.startswith(b"\x93NUMPY"):
        raise DataError(f"{path} is a single .npy array, not an .npz archive of named arrays; "
                        f"save the splits with numpy.savez(…)")
    if not head.startswith(b"PK"):
        raise DataError(f"{path} is not an .npz file (a NumPy zip archive of named arrays)")
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                _check_member(path, archive, info)
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except DataError:
        raise
    except ValueError as exc:
        if "pickle" in str(exc):
            raise DataError(f"{path} holds Python objects (pickled arrays), which kr never loads; "
                            f"store plain numeric arrays") from None
        raise DataError(f"cannot read {path}: the file is truncated or corrupt ({exc}); "
                        f"delete it and fetch it again") from None
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, KeyError, RuntimeError) as exc:
        raise DataError(f"cannot read {path}: the file is truncated or corrupt ({exc}); "
                        f"delete it and fetch it again") from None


def _check_member(path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> None:
    if not info.filename.endswith(".npy"):
        return
    with archive.open(info) as f:
        try:
            major, _ = np.lib.format.read_magic(f)
            read = (np.lib.format.read_array_header_1_0 if major == 1
                    else np.lib.format.read_array_header_2_0)  # 2.0 and 3.0 share the layout
            shape, _, dtype = read(f)
        except (ValueError, EOFError, SyntaxError, TypeError) as exc:
            raise DataError(f"cannot read {path}: member {info.filename} has a bad header ({exc})") from None
    if dtype.hasobject:
        raise DataError(f"{path} holds Python objects (pickled arrays), which kr never loads; "
                        f"store plain numeric arrays")
    if int(np.prod(shape, dtype=np.float64)) * dtype.itemsize > info.file_size:
        raise DataError(f"cannot read {path}: member {info.filename} declares {shape} {dtype}, "
                        f"more than it holds; the file is corrupt")


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
    if 0 in images.shape:
        raise DataError(f"{where} has an empty dimension (shape {images.shape}); images need "
                        f"at least one pixel")
    if images.dtype == np.uint8:
        return images
    if np.issubdtype(images.dtype, np.floating):
        if not np.isfinite(images).all():
            raise DataError(f"{where} contains NaN or infinite values; every pixel must be a "
                            f"number in [0, 1] (floats) or [0, 255] (uint8)")
        if images.min() >= 0 and images.max() <= 1:
            return np.round(images * 255).astype(np.uint8)
        raise DataError(f"{where} has float values in [{images.min():g}, {images.max():g}]; "
                        f"floats must be in [0, 1] (or store uint8 in [0, 255])")
    raise DataError(f"{where} has dtype {images.dtype}; expected uint8 in "
                    f"[0, 255] (or floats in [0, 1])")


def images_to_tensor(images: np.ndarray, where: str) -> torch.Tensor:
    """Images as a model takes them (the scaling every kr model was trained with)."""
    return _to_tensor(_image_array(images, where), np.zeros(0, np.int64))[0]


def _split(path: Path, split: str, images: np.ndarray, labels: np.ndarray):
    for key, a in ((f"{split}_images", images), (f"{split}_labels", labels)):
        if a.ndim == 0:
            raise DataError(f"{path}: {key} is a single value, not an array of one entry per image")
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


def _check_geometry(path: Path, height: int, width: int) -> None:
    """Square images whose side the generators can build: 7·2^k or 4·2^k (28, 32, 56, 64, …,
    224), the up-sampling ladders of the cGAN (the diffusion UNet takes them too)."""
    if height != width:
        raise DataError(f"{path}: images are {height}×{width}; kr needs square images (crop or "
                        f"pad them, e.g. to {max(height, width)}×{max(height, width)})")
    if height not in SIDES:
        near = min(SIDES, key=lambda v: abs(v - height))
        raise DataError(f"{path}: images are {height}×{height}; kr's generators need a side of "
                        f"7·2^k or 4·2^k ({', '.join(map(str, SIDES))}): resize them, e.g. to "
                        f"{near}×{near}")


MAX_CLASSES = 1000  # more classes than images per class, or than any medical benchmark has


def _class_count(path: Path, labels: dict[str, np.ndarray]) -> int:
    """Classes are 0 … K−1, each present in the train split: checked on the labels before
    anything is sized by them, so one stray label (say 10⁹) is an error, not a 10⁹-class task."""
    low = min(int(v.min()) for v in labels.values())
    if low < 0:
        raise DataError(f"{path}: labels must be ≥ 0, found {low}")
    present = np.unique(labels["train"])
    top = max(int(v.max()) for v in labels.values())
    if len(present) > MAX_CLASSES:
        raise DataError(f"{path}: train_labels has {len(present)} classes; kr supports at most "
                        f"{MAX_CLASSES}")
    if top >= len(present):
        where = next(s for s, v in labels.items() if int(v.max()) == top)
        absent = sorted(set(range(min(top + 1, len(present) + 5))) - set(present.tolist()))
        raise DataError(f"{path}: {where}_labels goes up to {top}, but train_labels has "
                        f"{len(present)} classes; labels must be 0 … K−1 with every class in the "
                        f"train split (absent from train: {absent[:5]}{' …' if len(absent) > 5 else ''})")
    return len(present)


def _user_label_names(arrays: dict[str, np.ndarray], n: int, path: Path) -> tuple[str, ...]:
    if n < 2:
        raise DataError(f"{path}: train_labels has a single class; a classifier needs at least two")
    if "label_names" not in arrays:
        return tuple(str(i) for i in range(n))
    names = arrays["label_names"]
    if names.ndim != 1 or names.dtype.kind not in "USiuf":
        raise DataError(f"{path}: label_names must be a 1-D array of names, one per class; it is "
                        f"shaped {names.shape} with dtype {names.dtype}")
    names = tuple(str(x) for x in names.tolist())
    if len(names) != n:
        raise DataError(f"{path}: label_names has {len(names)} entries but the labels have {n} "
                        f"classes (0 … {n - 1}); give one name per class")
    if len(set(names)) != n or any(not x.strip() or len(x) > 200 for x in names):
        raise DataError(f"{path}: label_names must be distinct, non-empty names of at most 200 "
                        f"characters")
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

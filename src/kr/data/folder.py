"""Folders of images as a dataset: the layout of torchvision's ImageFolder, Keras'
image_dataset_from_directory and Hugging Face's imagefolder.

    FOLDER/train/<class>/*.png   FOLDER/val/<class>/*   FOLDER/test/<class>/*    (given splits)
    FOLDER/<class>/*.png                                                          (split here)

PNG, JPEG, BMP and TIFF files (Pillow).  Class names are the folder names, in sorted order
(label 0 is the first).  Where only class folders exist, each class is split 70/10/20 into
train/val/test by a seeded shuffle (SPLIT_SEED, recorded), like the bundled digits: the split
is part of the dataset's definition, the same for every run and machine.  All images must be
grayscale or all colour: the mode is chosen from the data and stated.  Each image is resized so
its shorter side is `size` (Pillow's Lanczos filter, which antialiases), then centre-cropped to
a square — torchvision's Resize + CenterCrop.

What `import_folder` returns is exactly what a run reads, and `kr data import` freezes it as a
MedMNIST-style .npz with an `import` record and a content fingerprint, so a run can be repeated
without the folder and lands on the same stage keys.  A bad folder fails with one line that
names the file or folder and the fix, before anything is written.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from kr.errors import DataError

SPLITS = ("train", "val", "test")
SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
IGNORED = (".DS_Store", "Thumbs.db", "desktop.ini")  # what file browsers leave behind
FRACTIONS = (0.7, 0.1, 0.2)
SPLIT_SEED = 0
RESIZE = "shorter side to the size with Pillow's Lanczos filter (antialiased), then a centre crop"
GRAY, RGB = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"), ("RGB", "RGBA", "P", "CMYK", "YCbCr")


def is_image_folder(path: Path) -> bool:
    return Path(path).is_dir()


def _files(folder: Path) -> list[Path]:
    """A class folder's images, sorted; another kind of file is an error (dotfiles and the
    files file browsers leave behind are skipped)."""
    out = []
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or p.name in IGNORED:
            continue
        if p.is_dir():
            raise DataError(f"{p} is a folder inside the class folder {folder.name}/: put a class's images "
                            f"directly in its folder (one level of class folders)")
        if p.suffix.lower() not in SUFFIXES:
            raise DataError(f"{p} is not an image kr reads ({', '.join(SUFFIXES)}): move it out of the "
                            f"dataset folder")
        out.append(p)
    if not out:
        raise DataError(f"{folder} holds no images: every class folder needs at least one, or remove "
                        f"the empty folder")
    return out


def _classes(folder: Path) -> dict[str, list[Path]]:
    dirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    loose = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
             and p.name not in IGNORED]
    if loose:
        raise DataError(f"{loose[0]} lies beside the class folders of {folder}: every image goes into "
                        f"its class's folder ({folder}/<class>/{loose[0].name})")
    if not dirs:
        raise DataError(f"{folder} has no class folders: put each class's images in {folder}/<class>/")
    return {d.name: _files(d) for d in dirs}


def layout(root: Path) -> tuple[str, dict[str, dict[str, list[Path]]]]:
    """("given", {split: {class: files}}) for train/val/test folders, else ("split", {"all": …})."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root} is not a folder of images")
    named = {p.name for p in root.iterdir() if p.is_dir()}
    if named & set(SPLITS):
        missing = [s for s in SPLITS if s not in named]
        if missing:
            raise DataError(f"{root} has {', '.join(sorted(named & set(SPLITS)))}/ but no {', '.join(missing)}/: "
                            f"give all three split folders, or put the class folders directly in {root} "
                            f"to have kr split them {'/'.join(f'{int(100 * f)}' for f in FRACTIONS)}")
        splits = {s: _classes(root / s) for s in SPLITS}
        train = set(splits["train"])
        for s in ("val", "test"):
            extra = sorted(set(splits[s]) - train)
            if extra:
                raise DataError(f"class {extra[0]!r} appears in {s}/ but not in train/: every class needs "
                                f"training images (add {root}/train/{extra[0]}/ or remove it from {s}/)")
        return "given", splits
    return "split", {"all": _classes(root)}


def _split_files(classes: dict[str, list[Path]], root: Path) -> dict[str, dict[str, list[Path]]]:
    """Each class shuffled with SPLIT_SEED and cut 70/10/20, at least one image per split."""
    rng = np.random.default_rng(SPLIT_SEED)
    out = {s: {} for s in SPLITS}
    for name, files in classes.items():
        n = len(files)
        if n < 3:
            raise DataError(f"{root}/{name}/ has {n} image{'s' * (n != 1)}; a class needs at least 3 to be "
                            f"split into train, val and test (or give train/val/test folders)")
        order = [files[i] for i in rng.permutation(n)]
        n_val = max(1, round(FRACTIONS[1] * n))
        n_test = max(1, round(FRACTIONS[2] * n))
        n_train = n - n_val - n_test
        if n_train < 1:
            n_train, n_test = 1, n - 1 - n_val
        out["train"][name] = order[:n_train]
        out["val"][name] = order[n_train:n_train + n_val]
        out["test"][name] = order[n_train + n_val:]
    return out


def _read(path: Path, size: int):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            if mode in GRAY:
                im = im.convert("L") if mode in ("1", "L", "LA") else _gray16(im)
            elif mode in RGB:
                im = im.convert("RGB")
            else:
                raise DataError(f"{path}: image mode {mode} is neither grayscale nor colour; save it as "
                                f"8-bit grayscale or RGB")
            w, h = im.size
            scale = size / min(w, h)
            im = im.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.Resampling.LANCZOS)
            w, h = im.size
            left, top = (w - size) // 2, (h - size) // 2
            return np.asarray(im.crop((left, top, left + size, top + size))), mode
    except DataError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"cannot read {path} as an image ({exc}): it is damaged, truncated or not an "
                        f"image; replace or remove it") from None


def _gray16(im):
    """16-bit or float grayscale (DICOM exports, microscopy) → 8 bits by its own min–max."""
    a = np.asarray(im, dtype=np.float64)
    lo, hi = float(a.min()), float(a.max())
    from PIL import Image
    return Image.fromarray(np.zeros(a.shape, np.uint8) if hi <= lo else
                           np.round((a - lo) / (hi - lo) * 255).astype(np.uint8), "L")


def import_folder(root: str | Path, size: int = 28) -> tuple[dict[str, np.ndarray], dict]:
    """The folder as MedMNIST-style arrays ({split}_images N×H×W[×3] uint8, {split}_labels N×1,
    label_names) and the record of how they were made."""
    root = Path(root)
    kind, found = layout(root)
    splits = found if kind == "given" else _split_files(found["all"], root)
    names = sorted(splits["train"])
    arrays, modes, counts = {}, {}, {}
    for s in SPLITS:
        images, labels = [], []
        for c, name in enumerate(names):
            for path in splits[s].get(name, []):
                pixels, mode = _read(path, size)
                modes.setdefault("RGB" if pixels.ndim == 3 else "grayscale", path)
                images.append(pixels)
                labels.append(c)
        if len(modes) > 1:
            raise DataError(f"{root} mixes grayscale images ({modes['grayscale']}) and colour images "
                            f"({modes['RGB']}): convert them all to one mode (grayscale for X-ray, CT, MRI, "
                            f"ultrasound)")
        counts[s] = {name: len(splits[s].get(name, [])) for name in names}
        arrays[f"{s}_images"] = np.stack(images)
        arrays[f"{s}_labels"] = np.asarray(labels, dtype=np.uint8 if len(names) < 256 else np.int64)[:, None]
    arrays["label_names"] = np.asarray(names)
    record = {"source": str(root.resolve()), "layout": "train/val/test folders" if kind == "given" else
              f"class folders split {'/'.join(f'{int(100 * f)}' for f in FRACTIONS)} per class with seed {SPLIT_SEED}",
              "mode": next(iter(modes)), "size": size, "resize": RESIZE, "classes": names, "counts": counts,
              "fingerprint": fingerprint(arrays)}
    return arrays, record


def fingerprint(arrays: dict[str, np.ndarray]) -> str:
    """The content of a dataset's arrays, whatever file or folder holds them: a folder and the
    .npz `kr data import` froze from it share it, and so their runs share stage keys."""
    h = hashlib.sha256()
    for key in (*(f"{s}_{k}" for s in SPLITS for k in ("images", "labels")), "label_names"):
        a = np.ascontiguousarray(arrays[key])
        h.update(json.dumps([key, a.dtype.str, a.shape]).encode())
        h.update(a.tobytes())
    return f"content:{h.hexdigest()}"


def images_for_model(root: str | Path, size: int, names: list[str]) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """New images for a trained model (`kr predict FOLDER`): a flat folder of images (no labels),
    or class folders named as the model's classes (labels, for accuracy).  Resized as training
    resized them.  Returns (images, labels or None, file paths relative to the folder)."""
    root = Path(root)
    dirs = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    if dirs:
        classes = _classes(root)
        unknown = sorted(set(classes) - set(names))
        if unknown:
            raise DataError(f"{root}/{unknown[0]}/ is not one of the model's classes ({', '.join(map(repr, names))}): "
                            f"name class folders as the model's classes, or give a flat folder of images")
        files = [(f, names.index(c)) for c in names if c in classes for f in classes[c]]
    else:
        files = [(f, None) for f in _files(root)]
    read = [_read(f, size) for f, _ in files]
    kinds = {"RGB" if px.ndim == 3 else "grayscale": f for (px, _), (f, _) in zip(read, files)}
    if len(kinds) > 1:
        raise DataError(f"{root} mixes grayscale images ({kinds['grayscale']}) and colour images "
                        f"({kinds['RGB']}): convert them all to the model's mode")
    labels = None if dirs == [] else np.array([y for _, y in files])
    return np.stack([px for px, _ in read]), labels, [str(f.relative_to(root)) for f, _ in files]

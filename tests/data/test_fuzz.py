"""Malformed .npz files, drawn at random: the loader returns a valid dataset or raises one
KRError with a one-line message; never another exception, never an unbounded allocation."""

import tracemalloc
import zipfile

import numpy as np
import pytest
import torch

from kr.data import load_dataset
from kr.errors import KRError
from tests.conftest import make_arrays

KEYS = [f"{s}_{k}" for s in ("train", "val", "test") for k in ("images", "labels")] + ["label_names"]
DTYPES = [np.uint8, np.int8, np.int32, np.int64, np.float16, np.float32, np.float64, np.bool_,
          np.complex64, "U3", "S2"]


def _array(rng: np.random.Generator) -> np.ndarray:
    shape = tuple(int(d) for d in rng.choice([0, 1, 2, 3, 6, 28, 32], size=rng.integers(0, 5)))
    dtype = DTYPES[rng.integers(len(DTYPES))]
    if np.dtype(dtype).kind in "US":
        return np.full(shape, "ab", dtype=dtype)
    values = rng.choice([0, 1, 2, 255, -1, 10 ** 9, np.nan, np.inf, 0.5], size=shape)
    with np.errstate(invalid="ignore", over="ignore"):
        return values.astype(dtype) if np.dtype(dtype).kind == "f" else \
            np.nan_to_num(values, nan=3, posinf=7).astype(dtype)


def _mutate(rng: np.random.Generator) -> dict[str, np.ndarray]:
    arrays = make_arrays(n=(12, 6, 6), classes=int(rng.integers(1, 4)))
    for _ in range(rng.integers(1, 4)):
        key = KEYS[rng.integers(len(KEYS))] if rng.random() < 0.9 else f"extra{rng.integers(9)}"
        action = rng.integers(4)
        if action == 0:
            arrays.pop(key, None)
        elif action == 1:
            arrays[key] = _array(rng)
        elif action == 2 and key in arrays and arrays[key].size:  # one wild value
            a = arrays[key].astype(np.int64) if arrays[key].dtype.kind in "iub" else arrays[key].copy()
            with np.errstate(over="ignore"):
                a.flat[rng.integers(a.size)] = rng.choice([-5, 2, 10 ** 9, 2 ** 40])
            arrays[key] = a
        else:
            arrays[key] = arrays.get(key, _array(rng))[..., None]  # an extra axis
    return arrays


def _write(path, arrays, rng) -> None:
    np.savez_compressed(path, **arrays) if rng.random() < 0.5 else np.savez(path, **arrays)
    data = path.read_bytes()
    if rng.random() < 0.15:  # truncated, or bytes flipped
        cut = int(rng.integers(1, len(data)))
        data = data[:cut] if rng.random() < 0.5 else \
            data[:cut] + bytes([data[cut] ^ 0xFF]) + data[cut + 1:]
        path.write_bytes(data)


@pytest.mark.parametrize("seed", range(4))
def test_malformed_npz_files_fail_cleanly_or_load(tmp_path, seed):
    rng = np.random.default_rng(seed)
    outcomes = {"loaded": 0, "refused": 0}
    for i in range(60):
        path = tmp_path / f"case{i}.npz"
        _write(path, _mutate(rng), rng)
        tracemalloc.start()
        try:
            d = load_dataset(str(path))
        except KRError as exc:
            message = str(exc)
            assert message and "\n" not in message and len(message) < 600, message
            outcomes["refused"] += 1
        else:  # a dataset that loads is a valid one
            assert d.train.images.dtype == torch.float32 and d.train.images.dim() == 4
            assert len(d.train) == len(d.train.labels) and d.n_classes >= 2
            assert d.train.images.abs().max() <= 1
            outcomes["loaded"] += 1
        finally:
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
        assert peak < 64 * 2 ** 20, f"case {i}: {peak / 2 ** 20:.0f} MiB for a {path.stat().st_size}-byte file"
    assert outcomes["refused"] > 10  # the fuzzer does reach the checks


def test_a_forged_header_cannot_make_the_loader_allocate(tmp_path):
    """An array header that claims 10¹² elements in a member a few bytes long is refused
    before any memory is taken for it."""
    path = tmp_path / "forged.npz"
    np.savez(path, **make_arrays())
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    members["train_images.npy"] = members["train_images.npy"].replace(b"(12, 28, 28)", b"(12000000, 28, 2800)")
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    tracemalloc.start()
    try:
        with pytest.raises(KRError, match="declares .* more than it holds"):
            load_dataset(str(path))
        assert tracemalloc.get_traced_memory()[1] < 64 * 2 ** 20
    finally:
        tracemalloc.stop()

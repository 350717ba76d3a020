"""Artifacts on disk: atomic writes, JSON, and models as safetensors + config.json.

Every write goes to a temporary file in the same folder and is renamed into place, so a
crash or Ctrl-C never leaves a half-written artifact that a rerun would trust.
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch
from safetensors.torch import load_file, save_file

from kr.errors import KRError


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; artifacts are ordinary files
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def write_npz(path: str | Path, **arrays: Any) -> None:
    """Arrays in one .npz (scores, memberships): loadable with allow_pickle=False."""
    import numpy as np

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **{k: np.asarray(v) for k, v in arrays.items()})


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def versions() -> dict[str, str]:
    """Package versions stamped into every model config and manifest."""
    import platform

    import numpy

    import kr

    return {
        "kr": kr.__version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
    }


def save_model(model: torch.nn.Module, folder: str | Path, config: dict[str, Any],
               filename: str = "model.safetensors") -> None:
    """Weights as safetensors plus a config.json from which `load_model` rebuilds the module."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(folder / filename) as tmp:
        save_file(state, str(tmp))
    write_json(folder / "config.json", {**config, "versions": versions()})


def load_state(folder: str | Path, filename: str = "model.safetensors") -> dict[str, torch.Tensor]:
    path = Path(folder) / filename
    if not path.is_file():
        raise KRError(f"no model weights at {path}; train the model first or point to its folder")
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise KRError(f"cannot read model weights {path} ({exc}); delete it and retrain") from None


def read_model_config(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise KRError(f"no config.json in {folder}; it is not a saved kr model folder")
    try:
        config = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise KRError(f"{path} is not valid JSON ({exc}); the model folder is damaged") from None
    if not isinstance(config, dict):
        raise KRError(f"{path} is not a kr model config (a JSON object); the model folder is damaged")
    return config


def weight_shapes(folder: str | Path, filename: str = "model.safetensors") -> dict[str, tuple[int, ...]]:
    """Each tensor's shape from the safetensors header, without reading the weights."""
    from safetensors import safe_open

    path = Path(folder) / filename
    if not path.is_file():
        raise KRError(f"no model weights at {path}; train the model first or point to its folder")
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise KRError(f"cannot read model weights {path} ({exc}); delete it and retrain") from None

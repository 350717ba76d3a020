"""Classifier registry: architecture names map to factories taking (in_channels, num_classes)."""

from __future__ import annotations

from functools import partial
from typing import Callable

from torch import nn

from kr.artifacts import load_state, read_model_config, save_model, weight_shapes
from kr.errors import ConfigError, KRError
from kr.models.convnet import ConvNet
from kr.models.resnet import ResNet
from kr.models.scatternet import HEADS, ScatterNet, head_shapes

ARCHS: dict[str, Callable[..., nn.Module]] = {
    "resnet8": partial(ResNet, 8),
    "resnet14": partial(ResNet, 14),
    "resnet20": partial(ResNet, 20),
    "resnet32": partial(ResNet, 32),
    "convnet": ConvNet,
    "scatternet": ScatterNet,
}


def build_model(arch: str, in_channels: int, num_classes: int, **kwargs) -> nn.Module:
    if arch not in ARCHS:
        raise ConfigError(f"unknown classifier arch {arch!r}; choose one of {', '.join(ARCHS)}")
    return ARCHS[arch](in_channels=in_channels, num_classes=num_classes, **kwargs)


def save_classifier(model: nn.Module, folder, arch: str, in_channels: int, num_classes: int,
                    extra: dict | None = None, **kwargs) -> None:
    """Weights plus the constructor arguments that rebuild them (nanoGPT stores model args alike)."""
    config = {"kind": "classifier", "arch": arch, "in_channels": in_channels,
              "num_classes": num_classes, "kwargs": kwargs, **(extra or {})}
    save_model(model, folder, config)


# What a saved classifier may ask to be built with: a folder may come from anywhere (`kr
# predict`), so its config is checked against these bounds and against its weights' shapes
# before anything is allocated.
LIMITS = {"in_channels": (1, 4), "num_classes": (1, 1000), "width": (1, 256)}
SCATTER_LIMITS = {"image_size": (8, 256), "J": (1, 4)}
KWARGS = {"scatternet": {"image_size", "J", "head", "width"}}


def load_classifier(folder) -> nn.Module:
    """Rebuild a classifier from its folder alone, in eval mode."""
    cfg = read_model_config(folder)
    arch, channels, classes, kwargs = _checked(cfg, folder)
    model = build_model(arch, channels, classes, **kwargs)
    model.load_state_dict(load_state(folder))
    return model.eval()


def _checked(cfg: dict, folder) -> tuple[str, int, int, dict]:
    def bad(why: str) -> KRError:
        return KRError(f"{folder}/config.json: {why}; it is not a kr classifier folder, or it is damaged")

    if cfg.get("kind", "classifier") != "classifier" or cfg.get("arch") not in ARCHS:
        raise bad(f"arch {cfg.get('arch')!r} is not one of {', '.join(ARCHS)}")
    kwargs = cfg.get("kwargs", {})
    allowed = KWARGS.get(cfg["arch"], {"width", "norm", "dropout"})
    if not isinstance(kwargs, dict) or set(kwargs) - allowed:
        raise bad(f"unexpected constructor arguments {kwargs!r}")
    values = {"in_channels": cfg.get("in_channels"), "num_classes": cfg.get("num_classes"),
              "width": kwargs.get("width", 16)}
    limits = dict(LIMITS)
    if cfg["arch"] == "scatternet":
        values.update(image_size=kwargs.get("image_size", 28), J=kwargs.get("J", 2),
                      width=kwargs.get("width", 32))  # ScatterNet's own defaults
        limits.update(SCATTER_LIMITS)
    for key, (low, high) in limits.items():
        v = values[key]
        if not isinstance(v, int) or isinstance(v, bool) or not low <= v <= high:
            raise bad(f"{key} = {v!r} is not an integer in [{low}, {high}]")
    if cfg["arch"] == "scatternet":
        return cfg["arch"], values["in_channels"], values["num_classes"], _scatter_checked(
            kwargs, values, weight_shapes(folder), bad, folder)
    if kwargs.get("norm", "batch") not in ("batch", "group"):
        raise bad(f"norm {kwargs.get('norm')!r} is not batch or group")
    dropout = kwargs.get("dropout", 0.0)
    if not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise bad(f"dropout {dropout!r} is not in [0, 1)")
    shapes = weight_shapes(folder)
    w, c, k = values["width"], values["in_channels"], values["num_classes"]
    _match(folder, shapes, {"stem.0.weight": (w, c, 3, 3), "fc.weight": (k, 4 * w)})
    return cfg["arch"], c, k, kwargs


def _scatter_checked(kwargs: dict, values: dict, shapes: dict, bad, folder) -> dict:
    head = kwargs.get("head", "linear")
    if head not in HEADS:
        raise bad(f"head {head!r} is not one of {', '.join(HEADS)}")
    _match(folder, shapes, head_shapes(values["in_channels"], values["num_classes"], values["image_size"],
                                       values["J"], head, values["width"]))
    return kwargs


def _match(folder, shapes: dict, expected: dict) -> None:
    for name, shape in expected.items():
        if shapes.get(name) != shape:
            raise KRError(f"{folder}: config.json describes {name} as {shape}, the weights hold "
                          f"{shapes.get(name)}; the folder's config and weights do not belong together")


__all__ = ["ARCHS", "build_model", "load_classifier", "save_classifier"]

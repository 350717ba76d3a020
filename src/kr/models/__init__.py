"""Classifier registry: architecture names map to how to build one (in_channels, num_classes,
its keywords) and what a saved folder of it may say."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable

import torch
from torch import nn

from kr.artifacts import load_state, read_model_config, save_model, weight_shapes
from kr.errors import ConfigError, KRError
from kr.models.convnet import ConvNet
from kr.models.ensemble import AVERAGES, Ensemble
from kr.models.resnet import ResNet
from kr.models.scatternet import HEADS, ScatterNet, head_shapes
from kr.seeding import derive_seed


@dataclass(frozen=True)
class Arch:
    """A classifier architecture: how to build it, and what a saved folder of it may say.  A
    folder may come from anywhere (`kr predict`), so its config is checked against these
    before anything is allocated: known keywords, their bounds, and the weight shapes they
    imply (`shapes(in_channels, num_classes, **kwargs)`)."""
    build: Callable[..., nn.Module]
    shapes: Callable[..., dict[str, tuple[int, ...]]]
    kwargs: dict[str, Any]                                       # its keywords and defaults
    ranges: dict[str, tuple[type, float, float]] = field(default_factory=dict)  # int: [lo, hi]; float: [lo, hi)
    choices: dict[str, tuple[str, ...]] = field(default_factory=dict)


def _cnn_shapes(in_channels: int, num_classes: int, width: int = 16, **_) -> dict[str, tuple[int, ...]]:
    """The ResNets' and the ConvNet's stem and classifier: fixed by channels, classes, width."""
    return {"stem.0.weight": (width, in_channels, 3, 3), "fc.weight": (num_classes, 4 * width)}


def _cnn(build: Callable[..., nn.Module]) -> Arch:
    return Arch(build, _cnn_shapes, {"width": 16, "norm": "batch", "dropout": 0.0},
                {"width": (int, 1, 256), "dropout": (float, 0.0, 1.0)}, {"norm": ("batch", "group")})


ARCHS: dict[str, Arch] = {
    "resnet8": _cnn(partial(ResNet, 8)),
    "resnet14": _cnn(partial(ResNet, 14)),
    "resnet20": _cnn(partial(ResNet, 20)),
    "resnet32": _cnn(partial(ResNet, 32)),
    "convnet": _cnn(ConvNet),
    "scatternet": Arch(ScatterNet, head_shapes, {"image_size": 28, "J": 2, "head": "linear", "width": 32},
                       {"image_size": (int, 8, 256), "J": (int, 1, 4), "width": (int, 1, 256)},
                       {"head": HEADS}),
}


def build_model(arch: str, in_channels: int, num_classes: int, seed: int | None = None,
                **kwargs) -> nn.Module:
    """A fresh classifier; with `seed`, its weights drawn from derive_seed(seed, "init") and
    the global RNG left as it was (same seed, same weights, whatever ran before)."""
    if arch not in ARCHS:
        raise ConfigError(f"unknown classifier arch {arch!r}; choose one of {', '.join(ARCHS)}")
    if seed is None:
        return ARCHS[arch].build(in_channels=in_channels, num_classes=num_classes, **kwargs)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "init"))
        return ARCHS[arch].build(in_channels=in_channels, num_classes=num_classes, **kwargs)


def save_classifier(model: nn.Module, folder, arch: str, in_channels: int, num_classes: int,
                    extra: dict | None = None, **kwargs) -> None:
    """Weights plus the constructor arguments that rebuild them (nanoGPT stores model args alike)."""
    config = {"kind": "classifier", "arch": arch, "in_channels": in_channels,
              "num_classes": num_classes, "kwargs": kwargs, **(extra or {})}
    if isinstance(model, Ensemble):  # members of one architecture, each with its own weights
        config.update(members=len(model.members), average=model.average)
    save_model(model, folder, config)


LIMITS = {"in_channels": (1, 4), "num_classes": (1, 1000)}  # every architecture's
MAX_MEMBERS = 32  # an ensemble's (kr.models.ensemble)


def load_classifier(folder) -> nn.Module:
    """Rebuild a classifier from its folder alone, in eval mode."""
    cfg = read_model_config(folder)
    arch, channels, classes, kwargs = _checked(cfg, folder)
    if "members" in cfg:
        model = Ensemble([build_model(arch, channels, classes, **kwargs) for _ in range(cfg["members"])],
                         cfg["average"])
    else:
        model = build_model(arch, channels, classes, **kwargs)
    model.load_state_dict(load_state(folder))
    return model.eval()


def _checked(cfg: dict, folder) -> tuple[str, int, int, dict]:
    def bad(why: str) -> KRError:
        return KRError(f"{folder}/config.json: {why}; it is not a kr classifier folder, or it is damaged")

    if cfg.get("kind", "classifier") != "classifier" or cfg.get("arch") not in ARCHS:
        raise bad(f"arch {cfg.get('arch')!r} is not one of {', '.join(ARCHS)}")
    arch = ARCHS[cfg["arch"]]
    kwargs = cfg.get("kwargs", {})
    if not isinstance(kwargs, dict) or set(kwargs) - set(arch.kwargs):
        raise bad(f"unexpected constructor arguments {kwargs!r}")
    values = {**arch.kwargs, **kwargs}
    for key, (low, high) in LIMITS.items():
        v = cfg.get(key)
        if not isinstance(v, int) or isinstance(v, bool) or not low <= v <= high:
            raise bad(f"{key} = {v!r} is not an integer in [{low}, {high}]")
    for key, (kind, low, high) in arch.ranges.items():
        v = values[key]
        if kind is int and (not isinstance(v, int) or isinstance(v, bool) or not low <= v <= high):
            raise bad(f"{key} = {v!r} is not an integer in [{low}, {high}]")
        if kind is float and (not isinstance(v, (int, float)) or isinstance(v, bool) or not low <= v < high):
            raise bad(f"{key} {v!r} is not in [{low:g}, {high:g})")
    for key, allowed in arch.choices.items():
        if values[key] not in allowed:
            raise bad(f"{key} {values[key]!r} is not {' or '.join(allowed)}")
    expected = arch.shapes(cfg["in_channels"], cfg["num_classes"], **values)
    if "members" in cfg:
        members = cfg["members"]
        if not isinstance(members, int) or isinstance(members, bool) or not 1 <= members <= MAX_MEMBERS:
            raise bad(f"members = {members!r} is not an integer in [1, {MAX_MEMBERS}]")
        if cfg.get("average") not in AVERAGES:
            raise bad(f"average {cfg.get('average')!r} is not {' or '.join(AVERAGES)}")
        expected = {f"members.{i}.{name}": shape for i in range(members) for name, shape in expected.items()}
    _match(folder, weight_shapes(folder), expected)
    return cfg["arch"], cfg["in_channels"], cfg["num_classes"], kwargs


def _match(folder, shapes: dict, expected: dict) -> None:
    for name, shape in expected.items():
        if shapes.get(name) != shape:
            raise KRError(f"{folder}: config.json describes {name} as {shape}, the weights hold "
                          f"{shapes.get(name)}; the folder's config and weights do not belong together")


__all__ = ["ARCHS", "Arch", "Ensemble", "build_model", "load_classifier", "save_classifier"]

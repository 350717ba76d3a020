"""Classifier registry: architecture names map to factories taking (in_channels, num_classes)."""

from __future__ import annotations

from functools import partial
from typing import Callable

from torch import nn

from kr.artifacts import load_state, read_model_config, save_model
from kr.errors import ConfigError
from kr.models.resnet import ResNet

ARCHS: dict[str, Callable[..., nn.Module]] = {
    "resnet8": partial(ResNet, 8),
    "resnet14": partial(ResNet, 14),
    "resnet20": partial(ResNet, 20),
    "resnet32": partial(ResNet, 32),
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


def load_classifier(folder) -> nn.Module:
    """Rebuild a classifier from its folder alone, in eval mode."""
    cfg = read_model_config(folder)
    model = build_model(cfg["arch"], cfg["in_channels"], cfg["num_classes"], **cfg["kwargs"])
    model.load_state_dict(load_state(folder))
    return model.eval()


__all__ = ["ARCHS", "build_model", "load_classifier", "save_classifier"]

"""Small, learnable stand-ins for the method's parts: a dataset of class-coded squares and a
"generator" that draws from the same distribution, so a student can learn in seconds."""

from __future__ import annotations

import torch
from torch import nn

from kr.config import load_config
from kr.data import ImageDataset, Split
from kr.generators.base import ConditionalGenerator


def squares(labels: torch.Tensor, noise: torch.Tensor, size: int = 28) -> torch.Tensor:
    """Class c is a bright square in corner c, plus noise."""
    x = torch.full((len(labels), 1, size, size), -1.0)
    for i, c in enumerate(labels.tolist()):
        x[i, :, 4 * c:4 * c + 10, 4 * c:4 * c + 10] = 1.0
    return (x + noise).clamp(-1, 1)


def toy_split(n: int, classes: int = 3, seed: int = 0) -> Split:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    return Split(squares(labels, 0.4 * torch.randn(n, 1, 28, 28, generator=g)), labels)


def toy_dataset(n=(60, 30, 30), classes: int = 3) -> ImageDataset:
    train, val, test = (toy_split(k, classes, seed) for seed, k in enumerate(n))
    return ImageDataset("toy", "multi-class", tuple(f"c{i}" for i in range(classes)), False,
                        "toy", "toy-v1", train, val, test)


class ToyGenerator(ConditionalGenerator):
    """Samples the toy distribution exactly; `sigma` scales the noise like a latent σ would."""

    kind = "gan"
    knobs = ("sigma",)

    def build(self) -> nn.Module:
        return nn.Linear(1, 1)

    def make_optimizers(self):
        return {}

    def train_step(self, real, g):
        return {}

    def sample_batch(self, labels, noise, sigma=None):
        return squares(labels.cpu(), 0.4 * (sigma or 1.0) * noise(1, 28, 28).cpu())


def toy_generator(classes: int = 3) -> ToyGenerator:
    return ToyGenerator(load_config("tiny").generator, 1, 28, classes)

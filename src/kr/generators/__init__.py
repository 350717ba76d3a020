"""Class-conditional generators (step 2 of KR): a registry of backends behind one interface."""

from __future__ import annotations

from pathlib import Path

from kr.config import GeneratorConfig
from kr.generators.base import (
    ConditionalGenerator,
    GeneratorFailed,
    generator_from_folder,
)
from kr.generators.diffusion import FlowDiffusion
from kr.generators.gan import GAN

GENERATORS: dict[str, type[ConditionalGenerator]] = {"gan": GAN, "diffusion": FlowDiffusion}


def build_generator(config: GeneratorConfig, channels: int, size: int, n_classes: int,
                    seed: int = 0) -> ConditionalGenerator:
    """A freshly initialised generator of `config.kind`; the same seed gives the same weights."""
    return GENERATORS[config.kind](config, channels, size, n_classes, seed)


def load_generator(folder: str | Path) -> ConditionalGenerator:
    """Rebuild a saved generator (a checkpoint folder) with its EMA weights, ready to sample."""
    return generator_from_folder(folder, GENERATORS)


__all__ = ["GENERATORS", "ConditionalGenerator", "GeneratorFailed", "build_generator",
           "load_generator"]

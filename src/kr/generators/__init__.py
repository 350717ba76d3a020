"""Class-conditional generators (step 2 of KR): a registry of backends behind one interface.

A backend is one module: a `ConditionalGenerator` subclass that names its config section
(`Config`, a frozen dataclass: `generator.<kind>` in the config), its sampling `knobs`, the
knob tuning searches (`tuned_knob`, grid `select.<knob>`) and its GKD strategy; and one line
in BACKENDS below.  The config, `kr generator --kind`, `kr sample`'s knob options and
`load_generator` all read this registry.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kr.artifacts import read_model_config
from kr.errors import KRError, check
from kr.generators.base import ConditionalGenerator, GeneratorFailed
from kr.generators.diffusion import FlowDiffusion
from kr.generators.gan import GAN
from kr.schema import from_dict

BACKENDS: dict[str, type[ConditionalGenerator]] = {"gan": GAN, "diffusion": FlowDiffusion}


@dataclass(frozen=True)
class GeneratorSettings:
    """Step 2 of KR: a class-conditional generator trained on the real train split.

    Training length is counted in thousands of real images shown (kimg), as StyleGAN and EDM
    do, so a budget means the same compute on BreastMNIST (546 images) and PneumoniaMNIST
    (4,708); checkpoints, the candidates of checkpoint optimisation, are kept every
    `checkpoint_kimg`.  Each backend of kr.generators.BACKENDS adds its own section
    (`generator.gan`, `generator.diffusion`), declared in its module as its `Config`.
    """

    # The cGAN by default: it samples a whole epoch's set in a fraction of that epoch's
    # training, so GKD regenerates every epoch as the paper does (benchmarks/SPEED.md).
    # Diffusion samples 30–90× slower on CPU and runs GKD from a pool (`distill.strategy=auto`).
    kind: str = "gan"
    kimg: float = 120.0           # the lean cGAN trains ≈ 540 real images/s on 2 cores: ≈ 220 s
    checkpoint_kimg: float = 60.0
    batch_size: int = 64
    ema_decay: float = 0.999
    grid_per_class: int = 10      # columns of the per-checkpoint sample grid
    eval_per_class: int = 100     # samples per class for the quality signals of each checkpoint

    def __post_init__(self):
        check(self.kind in BACKENDS, "kind", f"{self.kind!r} unknown; use {' or '.join(BACKENDS)}")
        check(self.kimg > 0, "kimg", "must be > 0")
        check(0 < self.checkpoint_kimg <= self.kimg, "checkpoint_kimg", "must be in (0, kimg]")
        check(self.batch_size >= 2, "batch_size", "must be ≥ 2")
        check(0 <= self.ema_decay < 1, "ema_decay", "must be in [0, 1)")
        check(self.grid_per_class >= 1, "grid_per_class", "must be ≥ 1")
        check(self.eval_per_class >= 2, "eval_per_class", "must be ≥ 2")

    # What defines a trained generator (its stage key, its saved config.json): the settings all
    # backends share, then its own backend's section; eval_per_class sizes the quality stage.
    TRAINING = ("kind", "kimg", "checkpoint_kimg", "batch_size", "ema_decay", "grid_per_class")

    def section(self) -> Any:
        """The config section of this run's backend (None for a backend without one)."""
        return getattr(self, self.kind, None)

    def training_fields(self) -> tuple[str, ...]:
        return (*self.TRAINING, *((self.kind,) if self.section() is not None else ()))

    def training_dict(self) -> dict[str, Any]:
        section = self.section()
        return {**{k: getattr(self, k) for k in self.TRAINING},
                **({self.kind: dataclasses.asdict(section)} if section is not None else {})}

    def uses_teacher(self) -> bool:
        """Whether training reads the teacher (teacher guidance, kr.generators.guide)."""
        return bool(getattr(self.section(), "uses_teacher", lambda: False)())


def _generator_config() -> type:
    """GeneratorConfig: the shared settings and one section per registered backend."""
    sections = [(k, b.Config, field(default_factory=b.Config)) for k, b in BACKENDS.items()
                if getattr(b, "Config", None) is not None]
    cls = dataclasses.make_dataclass("GeneratorConfig", sections, bases=(GeneratorSettings,), frozen=True)
    cls.__module__, cls.__doc__ = __name__, GeneratorSettings.__doc__
    return cls


GeneratorConfig = _generator_config()


def sampling_knobs() -> dict[str, tuple[type, str]]:
    """Every registered backend's sampling knobs, name → (type, help naming the backends that
    take it): `kr sample`'s options."""
    out: dict[str, tuple[type, str, list[str]]] = {}
    for kind, backend in BACKENDS.items():
        for knob, (tp, text) in backend.knobs.items():
            out.setdefault(knob, (tp, text, []))[2].append(kind)
    return {k: (tp, f"{text} [{', '.join(kinds)}]") for k, (tp, text, kinds) in out.items()}


def build_generator(config: GeneratorConfig, channels: int, size: int, n_classes: int,
                    seed: int = 0) -> ConditionalGenerator:
    """A freshly initialised generator of `config.kind`; the same seed gives the same weights."""
    return BACKENDS[config.kind](config, channels, size, n_classes, seed)


def load_generator(folder: str | Path) -> ConditionalGenerator:
    """Rebuild a saved generator (a checkpoint folder) with its EMA weights, ready to sample."""
    meta = read_model_config(folder)
    if meta.get("kind") != "generator":
        raise KRError(f"{folder} does not hold a saved generator")
    if meta["backend"] not in BACKENDS:
        raise KRError(f"{folder} holds a {meta['backend']!r} generator, a backend this kr does not "
                      f"have ({', '.join(BACKENDS)})")
    config = from_dict(GeneratorConfig, meta["config"], "generator.")
    gen = BACKENDS[meta["backend"]](config, meta["channels"], meta["size"], meta["n_classes"])
    gen.load_weights(folder)
    return gen


__all__ = ["BACKENDS", "ConditionalGenerator", "GeneratorConfig", "GeneratorFailed", "build_generator",
           "load_generator", "sampling_knobs"]

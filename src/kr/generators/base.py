"""One interface for every class-conditional generator (step 2 of KR).

    gen = build_generator(config.generator, channels, size, n_classes)
    gen.fit(train_split, hflip, folder, seed)          # checkpoints every checkpoint_kimg
    images = gen.sample(labels, seed, sigma=1.2)      # [-1, 1], N×C×H×W, deterministic
    gen.save(folder); load_generator(folder)           # safetensors + config.json, EMA separate

A backend supplies its networks, one training step and one sampling call; this class owns
the loop: per-step seeds derived from (seed, step) so a resume is exact, atomic training
state for resuming, EMA weights, checkpoints, and the guard rails (non-finite loss,
collapsed samples) that stop training while keeping the last good checkpoint.
"""

from __future__ import annotations

import copy
import logging
import math
from abc import ABC, abstractmethod
from functools import partial
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from tqdm import tqdm

from kr.artifacts import (
    atomic_path,
    load_state,
    read_model_config,
    save_model,
    write_json,
)
from kr.augment import random_hflip
from kr.data import Split
from kr.errors import KRError
from kr.seeding import derive_seed, make_generator

log = logging.getLogger(__name__)


class GeneratorFailed(KRError):
    """Training diverged or collapsed; the message names the last good checkpoint."""


class ConditionalGenerator(ABC):
    kind: str = ""
    Config: type | None = None         # its config section, generator.<kind> (a frozen dataclass)
    knobs: dict[str, tuple[type, str]] = {}  # sampling knobs it accepts: type, help (kr sample)
    tuned_knob: str = ""               # the knob tuning searches, over the grid `select.<knob>`
    strategy: str = "every-epoch"      # how GKD draws from it under distill.strategy=auto
    reals_per_step: int = 1            # real batches one training step consumes (kimg accounting)

    def __init__(self, config: Any, channels: int, size: int, n_classes: int,
                 seed: int = 0):
        # config: a kr.generators.GeneratorConfig (built from this registry, so not imported here)
        self.config, self.channels, self.size, self.n_classes = config, channels, size, n_classes
        with torch.random.fork_rng(devices=[]):  # initialise from `seed`, not the global RNG
            torch.manual_seed(derive_seed(seed, "init"))
            self.model = self.build()             # the trained network (generator or denoiser)
        self.ema = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.kimg = 0.0
        self.guide: Any = None                    # set by `fit` for teacher-guided backends

    # --- what a backend provides -------------------------------------------------------
    @abstractmethod
    def build(self) -> nn.Module:
        """The network that is trained and whose EMA copy samples."""

    @abstractmethod
    def make_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Named optimizers, kept as `self.opts` during fit; their state is saved for resuming."""

    @abstractmethod
    def train_step(self, real: Callable[[], tuple[torch.Tensor, torch.Tensor]],
                   g: torch.Generator) -> dict[str, float]:
        """One generator update; `real()` draws a fresh real batch. Returns named losses."""

    @abstractmethod
    def sample_batch(self, labels: torch.Tensor, noise: Callable[..., torch.Tensor],
                     **knobs) -> torch.Tensor:
        """Images in [-1, 1] for `labels` from the EMA network; `noise(*shape)` gives the
        standard-normal draws, shaped (len(labels), *shape), that make a sample what it is."""

    def extra_state(self) -> dict[str, nn.Module]:
        """Networks besides `model` that training needs to resume (e.g. the discriminator)."""
        return {}

    def before_save(self) -> None:
        """Hook to refresh EMA buffers (e.g. BatchNorm statistics) before a checkpoint."""

    @property
    def uses_teacher(self) -> bool:
        """Whether training needs the frozen teacher (kr.generators.guide)."""
        return False

    def make_guide(self, teacher: nn.Module | None) -> Any:
        """What `train_step` consults of the teacher (as `self.guide`) when `uses_teacher`."""
        return None

    # --- sampling ------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, labels: torch.Tensor | list[int], seed: int | torch.Generator,
               batch_size: int = 128, **knobs: Any) -> torch.Tensor:
        """Deterministic: the same labels and seed give the same images, whatever batch_size
        (rounded to a multiple of 64; the default is kr.train.EVAL_BATCH, written out because
        kr.train imports kr.config, which imports this package)."""
        unknown = set(knobs) - set(self.knobs)
        if unknown:
            raise KRError(f"{self.kind} generator has no knob {sorted(unknown)}; "
                          f"its knobs are {', '.join(self.knobs)}")
        labels = torch.as_tensor(labels, dtype=torch.long)
        if len(labels) and (labels.min() < 0 or labels.max() >= self.n_classes):
            raise KRError(f"class labels must be in [0, {self.n_classes}), got {labels.tolist()[:8]}")
        base = seed.initial_seed() if isinstance(seed, torch.Generator) else int(seed)
        device = next(self.ema.parameters()).device
        batch_size = max(64, batch_size // 64 * 64)
        self.ema.eval()
        out = []
        for start in range(0, len(labels), batch_size):
            chunk = labels[start:start + batch_size].to(device)
            out.append(self.sample_batch(chunk, partial(_noise, base, start, len(chunk), device),
                                         **knobs).cpu())
        images = torch.cat(out) if out else torch.empty(0, self.channels, self.size, self.size)
        return images.clamp_(-1, 1)

    # --- persistence ---------------------------------------------------------------------
    def save(self, folder: str | Path) -> None:
        self.before_save()
        meta = {"kind": "generator", "backend": self.kind, "channels": self.channels,
                "size": self.size, "n_classes": self.n_classes, "kimg": self.kimg,
                "config": self.config.training_dict()}
        save_model(self.model, folder, meta, filename="model.safetensors")
        save_model(self.ema, folder, meta, filename="ema.safetensors")

    def load_weights(self, folder: str | Path) -> None:
        self.model.load_state_dict(load_state(folder, "model.safetensors"))
        self.ema.load_state_dict(load_state(folder, "ema.safetensors"))
        self.ema.eval()
        self.kimg = float(read_model_config(folder).get("kimg", 0.0))

    def to(self, device: torch.device) -> "ConditionalGenerator":
        for net in (self.model, self.ema, *self.extra_state().values()):
            net.to(device)
        return self

    # --- training ------------------------------------------------------------------------
    @torch.no_grad()
    def update_ema(self, step: int) -> None:
        # Warm-up: an EMA of decay 0.999 remembers ~1,000 steps, so on a short CPU budget it
        # would still be mostly the random initialisation; (1 + t)/(10 + t) caps it early on.
        d = min(self.config.ema_decay, (1 + step) / (10 + step))
        for e, p in zip(self.ema.parameters(), self.model.parameters()):
            e.lerp_(p, 1 - d)
        for e, b in zip(self.ema.buffers(), self.model.buffers()):
            e.copy_(b)

    def fit(self, train: Split, hflip: bool, folder: str | Path, seed: int,
            on_checkpoint: Callable[[Path, "ConditionalGenerator"], dict] | None = None,
            on_log: Callable[[dict], None] | None = None,
            teacher: nn.Module | None = None) -> list[dict]:
        """Train on the real split; save a checkpoint every `checkpoint_kimg`. Resumable.
        `teacher`: the frozen teacher, for backends that train with its guidance."""
        self.guide = self.make_guide(teacher) if self.uses_teacher else None
        try:
            return self._fit(train, hflip, Path(folder), seed, on_checkpoint, on_log)
        finally:
            if self.guide is not None and hasattr(self.guide, "close"):
                self.guide.close()
            self.guide = None

    def _fit(self, train, hflip, folder, seed, on_checkpoint, on_log) -> list[dict]:
        cfg = self.config
        device = next(self.model.parameters()).device
        x, y = train.images.to(device), train.labels.to(device)
        opts = self.opts = self.make_optimizers()
        bs = cfg.batch_size
        per_step = bs * self.reals_per_step  # real images shown per step
        # Whole checkpoint intervals, so the last checkpoint is a full interval after the one before.
        every = max(1, round(cfg.checkpoint_kimg * 1000 / per_step))
        total = every * max(1, round(cfg.kimg / cfg.checkpoint_kimg))
        state_path = folder / "state.pt"
        step, checkpoints = 0, []
        if state_path.is_file():
            state = torch.load(state_path, map_location=device, weights_only=True)
            self.model.load_state_dict(state["model"])
            self.ema.load_state_dict(state["ema"])
            for name, net in self.extra_state().items():
                net.load_state_dict(state["extra"][name])
            for name, opt in opts.items():
                opt.load_state_dict(state["optimizers"][name])
            step, checkpoints = state["step"], list(state["checkpoints"])
            log.info("generator: resuming at step %d of %d", step, total)

        for step in tqdm(range(step, total), initial=step, total=total, desc=f"{self.kind}",
                         unit="step", disable=None, leave=False):
            g = make_generator(derive_seed(seed, "step", step), device=device)

            def real(g=g):
                idx = torch.randperm(len(x), generator=g, device=device)[:bs]
                xb = random_hflip(x[idx], g) if hflip else x[idx]
                return xb, y[idx]

            self.model.train()
            losses = self.train_step(real, g)
            bad = {k: v for k, v in losses.items() if not math.isfinite(v)}
            if bad:
                raise GeneratorFailed(f"{self.kind} generator diverged at step {step} "
                                      f"({bad}); {_last_good(checkpoints)}; lower the learning "
                                      f"rate or rerun from that checkpoint")
            self.update_ema(step)
            self.kimg = (step + 1) * per_step / 1000
            if on_log is not None and (step % 50 == 0 or step + 1 == total):
                on_log({"step": step, "kimg": round(self.kimg, 3), **losses})
            if (step + 1) % every == 0:
                checkpoints.append(self._checkpoint(folder, step, seed, on_checkpoint, checkpoints))
                with atomic_path(state_path) as tmp:
                    torch.save({"model": self.model.state_dict(), "ema": self.ema.state_dict(),
                                "extra": {k: n.state_dict() for k, n in self.extra_state().items()},
                                "optimizers": {k: o.state_dict() for k, o in opts.items()},
                                "step": step + 1, "checkpoints": checkpoints}, tmp)
        return checkpoints

    def _checkpoint(self, folder: Path, step: int, seed: int, on_checkpoint, previous) -> dict:
        name = f"kimg-{self.kimg:09.3f}".replace(".", "_")
        ckpt = folder / "checkpoints" / name
        self.before_save()
        probe = self.sample(torch.arange(64) % self.n_classes, derive_seed(seed, "probe"))
        spread = probe.std(0).mean().item()
        if not math.isfinite(spread) or spread < 1e-3:
            raise GeneratorFailed(f"{self.kind} generator collapsed at {self.kimg:.1f} kimg "
                                  f"(sample spread {spread:.2e}); {_last_good(previous)}")
        self.save(ckpt)
        info = {"name": name, "kimg": round(self.kimg, 3), "step": step + 1,
                "sample_spread": round(spread, 4)}
        if on_checkpoint is not None:
            info.update(on_checkpoint(ckpt, self))
        write_json(ckpt / "info.json", info)
        log.info("generator checkpoint %s: %s", name,
                 ", ".join(f"{k} {v}" for k, v in info.items() if k not in ("name", "step")))
        return info


def _noise(seed: int, start: int, n: int, device, *shape: int) -> torch.Tensor:
    """Noise for images start … start+n−1, drawn in blocks of 64 seeded by (seed, block), so
    the batch size never changes which noise an image gets."""
    parts = []
    for s in range(start, start + n, 64):
        g = make_generator(derive_seed(seed, "sample", s // 64), device=device)
        parts.append(torch.randn(min(64, start + n - s), *shape, generator=g, device=device))
    return torch.cat(parts)


def _last_good(checkpoints: list[dict]) -> str:
    if not checkpoints:
        return "no checkpoint was saved before it"
    return f"the last good checkpoint, {checkpoints[-1]['name']}, is kept"

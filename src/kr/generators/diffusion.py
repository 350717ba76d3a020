"""Class-conditional flow matching (rectified flow) on diffusers' UNet2DModel.

Training (Lipman et al. 2023; Liu et al. 2023): x_t = (1 − t)·x₀ + t·ε with t ~ U(0, 1), and
the network regresses the velocity ε − x₀.  Labels are dropped to a null class with
probability `label_dropout`, so one network is both conditional and unconditional and
sampling can use classifier-free guidance (Ho & Salimans 2022):
v = v_∅ + w·(v_y − v_∅).  Sampling integrates the ODE from t = 1 to 0 with diffusers'
FlowMatchEulerDiscreteScheduler in `steps` Euler steps.

The UNet has no self-attention by default: on CPU attention dominates the step time
(benchmarks/generators.md has the measurement) and at 28 px it buys little.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from kr.errors import check
from kr.generators.base import ConditionalGenerator


@dataclass(frozen=True)
class DiffusionConfig:
    """Class-conditional flow-matching model (rectified flow) on diffusers' UNet2DModel."""

    width: int = 16               # UNet channels at full resolution; levels use w, 2w, 4w
    layers_per_block: int = 1
    attention: bool = False       # self-attention in the UNet mid block (lowest resolution)
    lr: float = 1e-3
    label_dropout: float = 0.1    # classifier-free guidance trains an unconditional model too
    steps: int = 8                # sampler steps (Euler, diffusers' FlowMatchEulerDiscreteScheduler)
    guidance: float = 2.0         # classifier-free guidance scale; 1 = plain conditional

    def __post_init__(self):
        check(self.width >= 8 and self.width % 8 == 0, "width", "must be a multiple of 8")
        check(self.layers_per_block >= 1, "layers_per_block", "must be ≥ 1")
        check(self.lr > 0, "lr", "must be > 0")
        check(0 <= self.label_dropout < 1, "label_dropout", "must be in [0, 1)")
        check(self.steps >= 1, "steps", "must be ≥ 1")
        check(self.guidance >= 0, "guidance", "must be ≥ 0")


class FlowDiffusion(ConditionalGenerator):
    kind = "diffusion"
    Config = DiffusionConfig  # its section, generator.diffusion
    knobs = {"guidance": (float, "Diffusion guidance scale."), "steps": (int, "Diffusion sampler steps.")}
    tuned_knob = "guidance"   # classifier-free guidance scale
    strategy = "pool"         # CPU sampling costs 7–20 student epochs a set (benchmarks/SPEED.md)

    def build(self) -> nn.Module:
        from diffusers import (
            UNet2DModel,  # imported here: diffusers takes seconds to import
        )

        c = self.config.diffusion
        levels = 3 if self.size % 4 == 0 else 2
        down = ["DownBlock2D"] * levels
        up = ["UpBlock2D"] * levels
        return UNet2DModel(
            sample_size=self.size, in_channels=self.channels, out_channels=self.channels,
            block_out_channels=tuple(c.width * 2 ** i for i in range(levels)),
            down_block_types=tuple(down), up_block_types=tuple(up),
            layers_per_block=c.layers_per_block, norm_num_groups=8,
            add_attention=c.attention,  # diffusers puts attention in the mid block by default
            num_class_embeds=self.n_classes + 1,  # the last index is the null class
        )

    def make_optimizers(self):
        return {"model": torch.optim.AdamW(self.model.parameters(), self.config.diffusion.lr,
                                           weight_decay=0.0)}

    def velocity(self, net: nn.Module, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor):
        # diffusers' time embedding expects timesteps on the 0–1000 scale.
        return net(x, t * 1000, class_labels=y).sample

    def train_step(self, real, g):
        c = self.config.diffusion
        x0, y = real()
        n, device = len(x0), x0.device
        drop = torch.rand(n, generator=g, device=g.device).to(device) < c.label_dropout
        y = torch.where(drop, torch.full_like(y, self.n_classes), y)
        t = torch.rand(n, generator=g, device=g.device).to(device)
        eps = torch.randn(x0.shape, generator=g, device=g.device).to(device)
        tt = t[:, None, None, None]
        loss = F.mse_loss(self.velocity(self.model, (1 - tt) * x0 + tt * eps, t, y), eps - x0)
        opt = self.opts["model"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {"loss": loss.item()}

    def sample_batch(self, labels, noise, guidance: float | None = None, steps: int | None = None):
        c = self.config.diffusion
        w = c.guidance if guidance is None else float(guidance)
        steps = c.steps if steps is None else int(steps)
        n, device = len(labels), labels.device
        x = noise(self.channels, self.size, self.size)
        scheduler = self._scheduler(steps, device)
        null = torch.full_like(labels, self.n_classes)
        for t in scheduler.timesteps:
            tb = (t / 1000).expand(n).to(device)
            if w == 1:
                v = self.velocity(self.ema, x, tb, labels)
            else:  # one batched call for the conditional and the unconditional velocity
                both = self.velocity(self.ema, torch.cat([x, x]), torch.cat([tb, tb]),
                                     torch.cat([labels, null]))
                v_cond, v_null = both.chunk(2)
                v = v_null + w * (v_cond - v_null)
            x = scheduler.step(v, t, x, return_dict=False)[0]
        return x

    def _scheduler(self, steps: int, device):
        """One scheduler per sampler length, reset per batch (constructing one costs more
        than a small batch's Euler updates)."""
        from diffusers import FlowMatchEulerDiscreteScheduler

        cache = self.__dict__.setdefault("_schedulers", {})
        if steps not in cache:
            cache[steps] = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0)
        scheduler = cache[steps]
        scheduler.set_timesteps(steps, device=device)  # also resets its step index
        return scheduler

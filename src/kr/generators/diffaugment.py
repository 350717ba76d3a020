"""DiffAugment (Zhao et al., NeurIPS 2020): differentiable augmentation of both real and fake
images before the discriminator, so it cannot memorise a small training set.

Policies follow the paper's: colour (brightness ±0.5, saturation ×[0, 2], contrast ×[0.5, 1.5]),
translation by up to 1/8 of the side (zero-filled), and cutout of a square half the side.
Every random draw takes the explicit generator.
"""

from __future__ import annotations

import torch


def _u(n: int, g: torch.Generator, device) -> torch.Tensor:
    return torch.rand(n, 1, 1, 1, generator=g, device=g.device).to(device)


def color(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    n = x.shape[0]
    x = x + (_u(n, g, x.device) - 0.5)
    mean = x.mean(1, keepdim=True)
    x = (x - mean) * (_u(n, g, x.device) * 2) + mean
    mean = x.mean((1, 2, 3), keepdim=True)
    return (x - mean) * (_u(n, g, x.device) + 0.5) + mean


def translation(x: torch.Tensor, g: torch.Generator, ratio: float = 0.125) -> torch.Tensor:
    n, _, h, w = x.shape
    sy, sx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-sy, sy + 1, (n, 1, 1), generator=g, device=g.device).to(x.device)
    dx = torch.randint(-sx, sx + 1, (n, 1, 1), generator=g, device=g.device).to(x.device)
    rows = (torch.arange(h, device=x.device)[None, :, None] + dy + 1).clamp(0, h + 1)
    cols = (torch.arange(w, device=x.device)[None, None, :] + dx + 1).clamp(0, w + 1)
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))  # the zero border fills what shifts in
    idx = torch.arange(n, device=x.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[idx, rows, cols].permute(0, 3, 1, 2)


def shift(x: torch.Tensor, g: torch.Generator, ratio: float = 0.125) -> torch.Tensor:
    """Translation whose uncovered border repeats the image's edge pixels instead of a zero
    (mid-grey in [-1, 1]) fill: on dark-background images a grey strip is a cue no real image
    has, which a generator can learn to draw."""
    n, _, h, w = x.shape
    sy, sx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-sy, sy + 1, (n, 1, 1), generator=g, device=g.device).to(x.device)
    dx = torch.randint(-sx, sx + 1, (n, 1, 1), generator=g, device=g.device).to(x.device)
    rows = (torch.arange(h, device=x.device)[None, :, None] + dy).clamp(0, h - 1)
    cols = (torch.arange(w, device=x.device)[None, None, :] + dx).clamp(0, w - 1)
    idx = torch.arange(n, device=x.device)[:, None, None]
    return x.permute(0, 2, 3, 1)[idx, rows, cols].permute(0, 3, 1, 2)


def cutout(x: torch.Tensor, g: torch.Generator, ratio: float = 0.5) -> torch.Tensor:
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = torch.randint(0, h + (1 - ch % 2), (n, 1, 1), generator=g, device=g.device).to(x.device)
    cx = torch.randint(0, w + (1 - cw % 2), (n, 1, 1), generator=g, device=g.device).to(x.device)
    ys = torch.arange(h, device=x.device)[None, :, None]
    xs = torch.arange(w, device=x.device)[None, None, :]
    inside = ((ys - cy).abs() < ch / 2) & ((xs - cx).abs() < cw / 2)
    return x * (~inside)[:, None].to(x.dtype)


POLICIES = {"color": color, "translation": translation, "shift": shift, "cutout": cutout}


def diff_augment(x: torch.Tensor, policy: str, g: torch.Generator) -> torch.Tensor:
    for name in filter(None, policy.split(",")):
        x = POLICIES[name](x, g)
    return x

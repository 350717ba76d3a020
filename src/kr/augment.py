"""Batched, seeded image augmentation: random crop with reflect padding and horizontal flip.

Works on whole batches with an explicit torch.Generator, so the same seed gives the same
augmented batch (and a resumed epoch replays exactly).  The GKD student augments every
synthetic batch with this too, before the teacher labels it.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def random_crop(x: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Pad each side by `padding` (reflect), then cut a random H×W window per image."""
    if padding <= 0:
        return x
    n, _, h, w = x.shape
    padded = F.pad(x, (padding,) * 4, mode="reflect")
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=generator.device)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=generator.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device)[None]).to(x.device)   # n×h
    cols = (dx[:, None] + torch.arange(w, device=x.device)[None]).to(x.device)   # n×w
    idx = torch.arange(n, device=x.device)[:, None, None]
    # Advanced indexing picks padded[i, :, rows[i], cols[i]] for every image at once.
    out = padded.permute(0, 2, 3, 1)[idx, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()


def random_hflip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    flip = torch.rand(x.shape[0], generator=generator, device=generator.device) < 0.5
    flip = flip.to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def augment(x: torch.Tensor, generator: torch.Generator, padding: int, hflip: bool) -> torch.Tensor:
    x = random_crop(x, padding, generator)
    return random_hflip(x, generator) if hflip else x

"""What an attacker observes: a model's logits on an image and on the augmentations it was
trained with (black-box queries).

Queries are the training augmentations (LiRA Sec. VI-A; its code queries 2 mirrors × 9 shifts):
the image, its horizontal flip only where the model trained with flips, and the shifts of its
random crops — a fixed 3 × 3 set of offsets {−p, 0, p}² for crop padding p.  A query the model
never trained on (a flip of a chest X-ray) carries less membership signal and, averaged in,
weakens the attack.  Every model is queried in eval() mode: querying in train mode (BatchNorm
on batch statistics, dropout on) was a real bug in a published LiRA reproduction.  The raw
logits are what the audit saves; every attack signal is a pure function of them.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from kr.train import EVAL_BATCH

Query = tuple[int, int, bool]  # (dy, dx, flip): a crop offset from the centre, then the mirror


def queries(padding: int, flip: bool) -> tuple[Query, ...]:
    """The queries of a model trained with random crops after `padding`-pixel reflect padding
    and (if `flip`) random horizontal flips; the image itself first."""
    shifts = (0, -padding, padding) if padding > 0 else (0,)
    return tuple((dy, dx, f) for f in ((False, True) if flip else (False,)) for dy in shifts for dx in shifts)


def names(qs: tuple[Query, ...]) -> list[str]:
    """Readable names for the audit's record: image, flip, shift(-4,0), flip+shift(4,4)."""
    def one(dy, dx, f):
        parts = (["flip"] if f else []) + ([f"shift({dy},{dx})"] if dy or dx else [])
        return "+".join(parts) or "image"
    return [one(*q) for q in qs]


def augmented(x: torch.Tensor, q: Query) -> torch.Tensor:
    """The crop at offset (dy, dx) of the reflect-padded batch (what kr.augment.random_crop
    cuts), mirrored if asked."""
    dy, dx, f = q
    pad = max(abs(dy), abs(dx))
    if pad:
        h, w = x.shape[-2:]
        x = F.pad(x, (pad,) * 4, mode="reflect")[..., pad + dy:pad + dy + h, pad + dx:pad + dx + w]
    return torch.flip(x, dims=[-1]) if f else x


@torch.no_grad()
def query(model: torch.nn.Module, images: torch.Tensor, qs: tuple[Query, ...] = ((0, 0, False),),
          batch_size: int = EVAL_BATCH) -> np.ndarray:
    """Logits N × len(qs) × C, in eval mode; the model's mode is restored afterwards."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = []
    try:
        for i in range(0, len(images), batch_size):
            x = images[i:i + batch_size].to(device)
            out.append(torch.stack([model(augmented(x, q)) for q in qs], 1).float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(out).numpy()


def _true_logit_and_rest(logits: np.ndarray, labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    z = torch.as_tensor(logits, dtype=torch.float64)
    y = torch.as_tensor(labels, dtype=torch.long).view(-1, *([1] * (z.dim() - 2)))
    y = y.expand(*z.shape[:-1]).unsqueeze(-1)
    true = z.gather(-1, y).squeeze(-1)
    rest = torch.logsumexp(z.scatter(-1, y, float("-inf")), -1)
    return true, rest


def logit_confidence(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """φ = log p_y − log Σ_{y'≠y} p_{y'} (LiRA's logit scaling, Eq. 4), computed from the logits
    as z_y − logsumexp_{y'≠y} z_{y'} so that confident predictions do not round to ±inf."""
    true, rest = _true_logit_and_rest(logits, labels)
    return (true - rest).numpy()


def probability(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """p_y, the softmax probability of the true class."""
    z = torch.as_tensor(logits, dtype=torch.float64)
    true, _ = _true_logit_and_rest(logits, labels)
    return torch.exp(true - torch.logsumexp(z, -1)).numpy()


def loss(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Cross-entropy of the true class, −log p_y."""
    z = torch.as_tensor(logits, dtype=torch.float64)
    true, _ = _true_logit_and_rest(logits, labels)
    return (torch.logsumexp(z, -1) - true).numpy()


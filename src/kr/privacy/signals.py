"""What an attacker observes: a model's logits on an image and on its flip (black-box queries).

Every model is queried in eval() mode: querying in train mode (BatchNorm on batch statistics,
dropout on) was a real bug in a published LiRA reproduction and changes the signals.  The raw
logits are what the audit saves; every attack signal is a pure function of them.
"""

from __future__ import annotations

import numpy as np
import torch

QUERIES = ("image", "flip")  # augmentation queries (LiRA Sec. VI-A): the original and its mirror


@torch.no_grad()
def query(model: torch.nn.Module, images: torch.Tensor, batch_size: int = 512) -> np.ndarray:
    """Logits N × len(QUERIES) × C, in eval mode; the model's mode is restored afterwards."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = []
    try:
        for i in range(0, len(images), batch_size):
            x = images[i:i + batch_size].to(device)
            out.append(torch.stack([model(x), model(torch.flip(x, dims=[-1]))], 1).float().cpu())
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


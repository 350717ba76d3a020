"""An ensemble of classifiers that averages their class probabilities.

Averaging the softmax outputs of a few independently seeded networks is the cheapest reliable
gain in accuracy and calibration on a small training set (Lakshminarayanan et al. 2017, "Deep
Ensembles"), and it is what a teacher offers GKD: its soft labels are the average's.  The
forward pass returns the log of the averaged probabilities, so every caller that applies a
softmax (evaluation, distillation at a temperature, filtering, the audits) sees the average
itself; for a multi-label task the members' sigmoids are averaged and the logit returned.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

AVERAGES = ("softmax", "sigmoid")


class Ensemble(nn.Module):
    def __init__(self, members: list[nn.Module], average: str = "softmax"):
        super().__init__()
        if average not in AVERAGES:
            raise ValueError(f"average must be one of {AVERAGES}, not {average!r}")
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)
        self.average = average
        self.feature_dim = sum(m.feature_dim for m in members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.average == "softmax":
            p = torch.stack([F.softmax(m(x), 1) for m in self.members]).mean(0)
            return p.clamp_min(torch.finfo(p.dtype).tiny).log()
        p = torch.stack([torch.sigmoid(m(x)) for m in self.members]).mean(0)
        return torch.logit(p, eps=1e-7)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Every member's penultimate features side by side."""
        return torch.cat([m.features(x) for m in self.members], 1)

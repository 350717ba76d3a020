"""Signals: logit-scaled confidence, probability and loss from logits; eval-mode queries."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kr.privacy import signals


def test_signals_match_their_definitions():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(50, 2, 4)) * 3
    labels = rng.integers(0, 4, 50)
    p = torch.softmax(torch.as_tensor(logits), -1).numpy()
    p_y = p[np.arange(50), :, labels]
    assert np.allclose(signals.probability(logits, labels), p_y)
    assert np.allclose(signals.logit_confidence(logits, labels), np.log(p_y) - np.log(1 - p_y))
    ce = F.cross_entropy(torch.as_tensor(logits[:, 0]), torch.as_tensor(labels), reduction="none")
    assert np.allclose(signals.loss(logits, labels)[:, 0], ce.numpy())


def test_logit_confidence_stays_finite_when_confident():
    logits = np.array([[[60.0, -60.0]]])  # p_y rounds to 1 in float64: log(1 - p_y) would be -inf
    assert signals.logit_confidence(logits, np.array([0]))[0, 0] == pytest.approx(120.0)


class _TrainModeCanary(nn.Module):
    """Outputs differ in train and eval mode, like BatchNorm or dropout would."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        value = 1.0 if self.training else 0.0
        return torch.stack([x.flatten(1).mean(1) * 0 + value, x[..., 0].flatten(1).mean(1)], 1)


def test_query_uses_eval_mode_and_restores_it():
    model = _TrainModeCanary().train()
    x = torch.zeros(3, 1, 2, 2)
    x[..., 0] = 1.0  # left column bright: the flip moves it to the right
    out = signals.query(model, x)
    assert out.shape == (3, 2, 2)
    assert (out[:, :, 0] == 0).all()          # eval-mode output
    assert np.allclose(out[:, 0, 1], 1.0) and np.allclose(out[:, 1, 1], 0.0)  # flip is a flip
    assert model.training                       # mode restored

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
    out = signals.query(model, x, signals.queries(0, True))
    assert out.shape == (3, 2, 2)
    assert (out[:, :, 0] == 0).all()          # eval-mode output
    assert np.allclose(out[:, 0, 1], 1.0) and np.allclose(out[:, 1, 1], 0.0)  # flip is a flip
    assert model.training                       # mode restored


def test_queries_are_the_training_augmentations():
    assert signals.queries(0, False) == ((0, 0, False),)
    no_flip = signals.queries(4, False)
    assert len(no_flip) == 9 and no_flip[0] == (0, 0, False) and not any(f for _, _, f in no_flip)
    both = signals.queries(4, True)
    assert len(both) == 18 and {(dy, dx) for dy, dx, _ in both} == {(a, b) for a in (-4, 0, 4) for b in (-4, 0, 4)}
    assert signals.names(both)[:2] == ["image", "shift(0,-4)"] and "flip+shift(4,4)" in signals.names(both)


def test_a_shift_query_is_a_random_crop_window():
    """Each shift is one of the windows kr.augment.random_crop cuts from the reflect-padded image."""
    from kr.augment import random_crop

    x = torch.randn(1, 1, 8, 8)
    g = torch.Generator().manual_seed(0)
    crops = {random_crop(x, 2, g).numpy().tobytes() for _ in range(400)}
    for q in signals.queries(2, False):
        assert signals.augmented(x, q).numpy().tobytes() in crops
    assert torch.equal(signals.augmented(x, (0, 0, True)), x.flip(-1))


class _Spy(nn.Module):
    """Records every batch it is asked about."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.seen = []

    def forward(self, x):
        self.seen.append(x.clone())
        return torch.zeros(len(x), 2)


def test_a_model_trained_without_flips_is_never_queried_on_a_flip():
    x = torch.arange(16.0).view(1, 1, 4, 4)  # no mirror symmetry
    spy = _Spy()
    signals.query(spy, x, signals.queries(1, False))
    assert len(spy.seen) == 9
    flips = {signals.augmented(x, (dy, dx, True)).numpy().tobytes() for dy in (-1, 0, 1) for dx in (-1, 0, 1)}
    assert not any(s.numpy().tobytes() in flips for s in spy.seen)

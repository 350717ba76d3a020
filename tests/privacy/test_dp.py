"""The DP-SGD baseline: it trains, learns, spends the ε it was given, and is reproducible."""

import sys

import pytest
import torch

from kr.config import load_config
from kr.errors import KRError
from kr.models import load_classifier
from kr.privacy.dp import train_dpsgd
from tests.toys import toy_dataset


def _config(*overrides):
    return load_config("tiny", overrides=["dpsgd.batch_size=16", *overrides])


def test_tiny_epsilon_trains_and_reports_its_epsilon(tmp_path):
    out = train_dpsgd(toy_dataset(), _config("dpsgd.epochs=2"), 0.5, tmp_path, torch.device("cpu"))
    assert 0 < out["epsilon"] <= 0.5 * 1.01 and out["epsilon_target"] == 0.5
    assert out["delta"] == pytest.approx(1 / 60) and out["noise_multiplier"] > 1
    model = load_classifier(tmp_path)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert any(isinstance(m, torch.nn.GroupNorm) for m in model.modules())


def test_more_budget_less_noise_and_a_learning_signal(tmp_path):
    data = toy_dataset((90, 30, 30))
    # ~36 noisy steps: clipped gradients are small, so the step size is large (De et al. 2022).
    # No crop: a 4-pixel shift moves a toy square into the next class's corner.
    config = load_config("tiny", overrides=["dpsgd.batch_size=30", "dpsgd.epochs=12", "dpsgd.lr=1.0",
                                            "dpsgd.accountant=rdp", "teacher.train.crop_padding=0"])
    loose = train_dpsgd(data, config, 50.0, tmp_path / "a", torch.device("cpu"))
    tight = train_dpsgd(data, config, 0.5, tmp_path / "b", torch.device("cpu"))
    assert loose["noise_multiplier"] < tight["noise_multiplier"]
    assert loose["val"]["auc"] > 0.9 and loose["val"]["acc"] > 0.6  # three classes: chance is 1/3
    assert tight["val"]["auc"] < loose["val"]["auc"]  # privacy costs utility


def test_same_seed_same_model(tmp_path):
    data, config = toy_dataset(), _config("dpsgd.epochs=1")
    for name in ("a", "b"):
        train_dpsgd(data, config, 2.0, tmp_path / name, torch.device("cpu"))
    a, b = (load_classifier(tmp_path / n).state_dict() for n in ("a", "b"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_without_opacus_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "opacus", None)
    with pytest.raises(KRError, match="pip install opacus"):
        train_dpsgd(toy_dataset(), _config(), 1.0, tmp_path, torch.device("cpu"))

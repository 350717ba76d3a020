"""The DP-SGD baseline: it trains, learns, spends no more than the ε it was given (checked
against the exact Gaussian-mechanism curve), samples batches as the accountant assumes, keeps its
feature extractor fixed, and is reproducible."""

import math
import sys

import pytest
import torch
from scipy.stats import norm

from kr.config import load_config
from kr.errors import KRError
from kr.models import load_classifier
from kr.models.scatternet import ScatterNet
from kr.dpsgd import train_dpsgd
from tests.toys import toy_dataset


def _config(*overrides):
    return load_config("tiny", overrides=["dpsgd.batch_size=16", *overrides])


def _gaussian_epsilon(mu: float, delta: float) -> float:
    """The exact ε of a μ-GDP mechanism at δ (Balle & Wang 2018, Thm 8; Dong et al. 2022,
    Cor. 2.13): δ(ε) = Φ(-ε/μ + μ/2) - e^ε Φ(-ε/μ - μ/2), solved for ε by bisection."""
    def delta_at(eps):
        return norm.cdf(-eps / mu + mu / 2) - math.exp(eps) * norm.cdf(-eps / mu - mu / 2)
    lo, hi = 0.0, 100.0
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if delta_at(mid) > delta else (lo, mid)
    return hi


def test_gaussian_epsilon_known_answer():
    # μ = 1 at δ = 1e-5 is ε ≈ 4.36 (Dong, Roth & Su 2022, Figure 2's 1-GDP curve)
    assert _gaussian_epsilon(1.0, 1e-5) == pytest.approx(4.36, abs=0.02)


@pytest.mark.parametrize("target,accountant", [(0.5, "prv"), (2.0, "prv"), (8.0, "prv"), (2.0, "rdp")])
def test_full_batch_epsilon_never_exceeds_the_target(tmp_path, target, accountant):
    """With every sample in every step (q = 1), T steps at noise σ are exactly one Gaussian
    mechanism with μ = √T / σ, so the ε spent has a closed form to check the accountant by."""
    data = toy_dataset()
    config = _config("dpsgd.batch_size=60", "dpsgd.epochs=6", f"dpsgd.accountant={accountant}")
    out = train_dpsgd(data, config, target, tmp_path, torch.device("cpu"))
    assert out["sample_rate"] == 1.0 and out["steps"] == 6
    exact = _gaussian_epsilon(math.sqrt(out["steps"]) / out["noise_multiplier"], out["delta"])
    assert exact <= target * 1.001  # the guarantee holds for the noise actually used
    if accountant == "prv":  # numerically tight; RDP is a looser upper bound (more noise)
        assert exact >= 0.9 * target
    assert out["epsilon"] <= target * 1.01 and out["epsilon"] >= exact * 0.99


def test_batches_are_poisson_sampled(tmp_path):
    """Fixed-size batches would see all 60 images every epoch; Poisson sampling (Opacus' rate:
    one over the 4 batches of 16) draws each image independently, so the images seen per epoch
    vary around 60."""
    out = train_dpsgd(toy_dataset(), _config("dpsgd.epochs=8"), 4.0, tmp_path, torch.device("cpu"))
    history = load_metrics(tmp_path)["history"]
    seen = [r["seen"] for r in history]
    assert out["sample_rate"] == 0.25 and out["poisson_sampling"]
    assert len(set(seen)) > 1 and all(20 <= s <= 100 for s in seen)


def load_metrics(folder):
    import json
    return json.loads((folder / "metrics.json").read_text())


def test_the_feature_extractor_has_no_trainable_state(tmp_path):
    data = toy_dataset()
    net = ScatterNet(1, 3)
    assert not list(net.scattering.parameters()) and not list(net.norm.parameters())
    assert all(k.startswith("head.") for k in net.state_dict())  # the filters are rebuilt, not saved
    train_dpsgd(data, _config("dpsgd.epochs=3", "dpsgd.lr=8"), 8.0, tmp_path, torch.device("cpu"))
    trained = load_classifier(tmp_path)
    x = data.test.images[:8]
    assert torch.equal(trained.scatter(x), ScatterNet(1, 3).scatter(x))  # training moved only the head
    assert not torch.equal(trained.head[1].weight, net.head[1].weight)


@pytest.mark.parametrize("model", ["scatter-linear", "scatter-cnn"])
def test_beats_chance_on_a_tiny_separable_set(tmp_path, model):
    data = toy_dataset((90, 30, 30))
    config = _config(f"dpsgd.model={model}", "dpsgd.batch_size=45", "dpsgd.epochs=15")
    out = train_dpsgd(data, config, 2.0, tmp_path, torch.device("cpu"))
    assert out["epsilon"] <= 2.0 * 1.01
    assert out["val"]["acc"] > 0.6 and out["val"]["auc"] > 0.8  # three classes: chance is 1/3


def test_more_budget_less_noise_and_a_learning_signal_end_to_end(tmp_path):
    data = toy_dataset((90, 30, 30))
    # ~36 noisy steps: clipped gradients are small, so the step size is large (De et al. 2022).
    # No crop: a 4-pixel shift moves a toy square into the next class's corner.
    config = load_config("tiny", overrides=["dpsgd.model=cnn", "dpsgd.batch_size=30", "dpsgd.epochs=12",
                                            "dpsgd.lr=1.0", "dpsgd.max_grad_norm=1.0",
                                            "dpsgd.accountant=rdp", "teacher.train.crop_padding=0"])
    loose = train_dpsgd(data, config, 50.0, tmp_path / "a", torch.device("cpu"))
    tight = train_dpsgd(data, config, 0.5, tmp_path / "b", torch.device("cpu"))
    assert loose["noise_multiplier"] < tight["noise_multiplier"]
    assert loose["val"]["auc"] > 0.9 and loose["val"]["acc"] > 0.6
    assert tight["val"]["auc"] < loose["val"]["auc"]  # privacy costs utility
    model = load_classifier(tmp_path / "a")
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert any(isinstance(m, torch.nn.GroupNorm) for m in model.modules())


@pytest.mark.parametrize("model", ["scatter-linear", "cnn"])
def test_same_seed_same_model(tmp_path, model):
    data, config = toy_dataset(), _config("dpsgd.epochs=1", f"dpsgd.model={model}")
    for name in ("a", "b"):
        train_dpsgd(data, config, 2.0, tmp_path / name, torch.device("cpu"))
    a, b = (load_classifier(tmp_path / n).state_dict() for n in ("a", "b"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_without_opacus_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "opacus", None)
    with pytest.raises(KRError, match="pip install opacus"):
        train_dpsgd(toy_dataset(), _config(), 1.0, tmp_path, torch.device("cpu"))


def test_released_noise_is_secret_and_never_saved(tmp_path, monkeypatch):
    """The default (dpsgd.noise=secret) seeds noise and sampling from the OS's CSPRNG: two
    trainings from one config differ, and neither seed, nor the seeds the run's seed would
    derive, is written anywhere in the model's folder."""
    import secrets

    from kr.seeding import derive_seed

    drawn = []
    real = secrets.randbits
    monkeypatch.setattr(secrets, "randbits", lambda k: drawn.append(real(k)) or drawn[-1])
    data, config = toy_dataset(), _config("dpsgd.epochs=2", "dpsgd.noise=secret")
    outs = [train_dpsgd(data, config, 2.0, tmp_path / n, torch.device("cpu")) for n in ("a", "b")]
    a, b = (load_classifier(tmp_path / n).state_dict() for n in ("a", "b"))
    assert not all(torch.equal(a[k], b[k]) for k in a)
    assert len(drawn) == 4 and outs[0]["guarantee_holds"] and outs[0]["noise"] == "secret"
    seed = derive_seed(config.seed, "dpsgd", 2.0)
    replayable = [derive_seed(seed, "noise"), derive_seed(seed, "sampling")]
    text = "".join(p.read_bytes().decode("latin-1") for p in (tmp_path / "a").rglob("*") if p.is_file())
    for value in [*drawn, *replayable]:
        assert str(value) not in text


def test_seeded_noise_says_its_epsilon_does_not_hold(tmp_path, caplog):
    import json

    out = train_dpsgd(toy_dataset(), _config("dpsgd.epochs=1", "dpsgd.noise=seeded"), 2.0, tmp_path,
                      torch.device("cpu"))
    assert out["noise"] == "seeded" and out["guarantee_holds"] is False
    saved = json.loads((tmp_path / "config.json").read_text())["dp"]
    assert saved["guarantee_holds"] is False
    assert "does not hold" in caplog.text


def test_delta_is_well_below_one_over_n():
    from kr.dpsgd import dp_delta

    assert dp_delta(0.0, 546) == 1e-5                       # BreastMNIST: 1/(10·546) = 1.8e-4
    assert dp_delta(0.0, 1_000_000) == pytest.approx(1e-7)  # large N: 1/(10·N)
    assert dp_delta(1e-6, 546) == 1e-6
    with pytest.raises(KRError, match="below 1/N"):
        dp_delta(1 / 546, 546)


def test_an_empty_poisson_batch_is_still_a_noisy_step(tmp_path):
    """At q = 1/60 about a third of the batches are empty; each is a step the accountant counts
    (noise alone), never skipped: skipping releases "no update", which depends on the data."""
    out = train_dpsgd(toy_dataset(), _config("dpsgd.batch_size=1", "dpsgd.epochs=2"), 2.0, tmp_path,
                      torch.device("cpu"))
    assert out["steps"] == 120 and out["epsilon"] <= 2.0 * 1.01
    assert all(math.isfinite(r["loss"]) for r in load_metrics(tmp_path)["history"])


def test_a_diverging_loss_stops_with_a_clear_error(tmp_path):
    data = toy_dataset((90, 30, 30))
    config = _config("dpsgd.model=cnn", "dpsgd.epochs=3", "dpsgd.lr=1e30", "dpsgd.momentum=0.0")
    with pytest.raises(KRError, match=r"dpsgd-eps50: loss became .* lower the learning rate"):
        train_dpsgd(data, config, 50.0, tmp_path, torch.device("cpu"))
    assert not (tmp_path / "model.safetensors").exists()


def test_an_interrupted_run_resumes_with_fresh_secrets_and_the_whole_accounting(tmp_path, monkeypatch, caplog):
    """DP-SGD trains through the shared best-epoch loop: killed after an epoch, a rerun resumes
    from its state file, which holds weights, optimizer and the accountant's history but no
    generator state; the resumed epochs draw noise and batches from fresh secrets, and the ε
    spent counts every step, before and after the interruption."""
    import secrets

    drawn = []
    real = secrets.randbits
    monkeypatch.setattr(secrets, "randbits", lambda k: drawn.append(real(k)) or drawn[-1])
    data, config = toy_dataset(), _config("dpsgd.epochs=3", "dpsgd.noise=secret")
    (tmp_path / "whole").mkdir()
    whole = train_dpsgd(data, config, 2.0, tmp_path / "whole", torch.device("cpu"))

    class Killed(Exception):
        pass

    def kill_after_first(record):
        if record["epoch"] == 1:  # before epoch 1's state is saved: epoch 0's stands
            raise Killed

    (tmp_path / "cut").mkdir()
    with pytest.raises(Killed):
        train_dpsgd(data, config, 2.0, tmp_path / "cut", torch.device("cpu"), on_epoch=kill_after_first)
    state = torch.load(tmp_path / "cut" / "state.pt", weights_only=True)
    assert state["epoch"] == 0 and set(state) == {"model", "optimizer", "epoch", "best_model", "best_epoch",
                                                  "best_val", "history", "extra"}
    assert "generator" not in str(state["optimizer"].keys()) and set(state["extra"]) == {"accountant"}
    before = len(drawn)
    caplog.set_level("INFO", logger="kr")
    resumed = train_dpsgd(data, config, 2.0, tmp_path / "cut", torch.device("cpu"))
    assert "resuming after epoch 0" in caplog.text
    assert len(drawn) == before + 4  # the run's two seeds, then fresh ones for the resumed epochs
    assert resumed["steps"] == whole["steps"] and resumed["epsilon"] == pytest.approx(whole["epsilon"])
    assert len(load_metrics(tmp_path / "cut")["history"]) == 3
    assert not (tmp_path / "cut" / "state.pt").exists()

"""Sanity checks of the audit (../shared/AUDIT.md): a positive control that must be caught, and
two negative controls that must find nothing — run through the audit's own experiment code."""

import numpy as np
import pytest
import torch
from torch import nn

from kr.config import load_config
from kr.privacy import references, scoring, signals

N, SIDE = 160, 6


def memorising_model(x: torch.Tensor, y: torch.Tensor, seed: int) -> nn.Module:
    """An MLP fitted to noise with random labels: it can only memorise, so it overfits."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(SIDE * SIDE, 256), nn.ReLU(), nn.Linear(256, 2))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(300):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    assert (model(x).argmax(1) == y).float().mean() == 1.0  # the control really overfits
    return model


@pytest.fixture(scope="module")
def experiment():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, 1, SIDE, SIDE, generator=g)
    y = torch.randint(0, 2, (N,), generator=g)
    matrix = references.complementary_halves(y.numpy(), 8, seed=0)
    logits = np.stack([signals.query(memorising_model(x[m], y[m], seed=i), x)
                       for i, m in enumerate(torch.as_tensor(matrix))])
    return x, y.numpy(), matrix, logits


def summary(scored, members):
    config = load_config("tiny", overrides=["audit.bootstrap=300"])
    return scoring.summarise(scored[0], members, {}, config)


def test_overfit_classifier_is_caught(experiment):
    _, labels, matrix, logits = experiment
    result = summary(scoring.procedure_scores(logits, labels, matrix), matrix)
    for attack in scoring.FREE_ATTACKS.keys() | scoring.REFERENCE_ATTACKS.keys():
        assert result[attack]["auc_ci"][0] > 0.6, (attack, result[attack]["auc_ci"])
    # the strongest attacks see it plainly (offline LiRA is weaker here: a model that memorises
    # random labels has a wide out-distribution; measured 0.71)
    for attack in ("loss", "lira-online-fixed"):
        assert result[attack]["auc"] > 0.8, (attack, result[attack]["auc"])
    assert result["loss"]["advantage"] > 0.5  # thresholds fitted on the other runs still work


def test_model_that_never_saw_the_members_scores_chance(experiment):
    x, labels, matrix, logits = experiment
    g = torch.Generator().manual_seed(1)
    other_x = torch.randn(80, 1, SIDE, SIDE, generator=g)
    other_y = torch.randint(0, 2, (80,), generator=g)
    outsider = signals.query(memorising_model(other_x, other_y, seed=99), x)
    claimed = np.random.default_rng(0).random(N) < 0.5  # "members" it never trained on
    proc, _ = scoring.procedure_scores(logits, labels, matrix)
    result = summary(scoring.shipped_scores(outsider, logits, labels, matrix, proc), claimed)
    for attack in ("loss", "lira-offline-fixed", "rmia-offline"):
        lo, hi = result[attack]["auc_ci"]
        assert lo < 0.5 < hi, (attack, result[attack]["auc"], lo, hi)


def test_shuffled_membership_scores_chance(experiment):
    _, labels, matrix, logits = experiment
    proc = scoring.procedure_scores(logits, labels, matrix)
    shuffled = np.random.default_rng(0).permuted(matrix, axis=1)
    result = summary(proc, shuffled)
    for attack in ("loss", "lira-online", "rmia-online"):
        lo, hi = result[attack]["auc_ci"]
        assert lo < 0.5 < hi, (attack, result[attack]["auc"], lo, hi)


def test_rmia_offline_a_is_chosen_on_the_paired_run(experiment):
    """ML Privacy Meter's rule: a from the grid, one per target, chosen by the attack's AUC on
    the target's partner; never the target's own membership."""
    _, labels, matrix, logits = experiment
    _, info = scoring.procedure_scores(logits, labels, matrix)
    assert len(info["rmia_offline_a"]) == len(matrix)
    assert set(info["rmia_offline_a"]) <= set(scoring.attacks.RMIA_A_GRID)
    # target 0's a is the one its partner (run 1), attacked with target 0's references, prefers
    sig = np.stack([signals.probability(z, labels) for z in logits])
    refs, refs_in = np.delete(sig, [0, 1], 0), np.delete(matrix, [0, 1], 0)
    assert scoring.tune_rmia_a(sig[1], refs, refs_in, matrix[1]) == info["rmia_offline_a"][0]


def test_per_image_attacks_need_two_references_each_side(experiment):
    """At 4 runs (one in, one out reference per image once the partner is left out) the
    per-image-variance attacks do not exist: they are left out, saying why."""
    _, labels, matrix, logits = experiment
    scored, info = scoring.procedure_scores(logits[:4], labels, matrix[:4])
    assert set(info["skipped"]) == {"lira-online", "lira-offline"}
    assert "≥ 2 in" in info["skipped"]["lira-online"] and "1 and 1" in info["skipped"]["lira-online"]
    assert set(scored) == {"loss", "lira-online-fixed", "lira-offline-fixed", "rmia-online", "rmia-offline"}
    scored, info = scoring.procedure_scores(logits, labels, matrix)  # 8 runs: 3 in, 3 out
    assert not info["skipped"] and set(scored) == {"loss", *scoring.REFERENCE_ATTACKS}
    with pytest.raises(ValueError, match="≥ 2 references"):
        sig = np.stack([signals.logit_confidence(z, labels) for z in logits[:2]])
        scoring.attacks.lira(sig[0], sig[:2], matrix[:2], online=True, fixed_variance=False)

"""Membership-inference attacks as pure scoring functions: signals in, one score per point out
(higher = "member").  No I/O, no models: the audit feeds them saved signals, the tests feed
them synthetic signals with known answers.

Shapes: a target's signal is N × Q (points × queries: the training augmentations,
kr.privacy.signals); reference signals are R × N × Q with a boolean R × N matrix saying which
reference trained on which point.

The reference-free signals — LOSS, the true class's confidence, its logit — are monotone
transforms of one another for a fixed label, so they rank points alike and give one ROC: the
audit reports one of them, `loss`.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import norm

RMIA_GAMMA = 1.0
# RMIA offline's a (Eq. 11) is tuned per target on its paired reference run, as ML Privacy
# Meter does (kr.privacy.scoring.tune_rmia_a), over this grid
RMIA_A_GRID = tuple(round(0.1 * i, 1) for i in range(11))


def loss_attack(loss: np.ndarray) -> np.ndarray:
    """Yeom et al. 2018: members have lower loss.  First query (the image itself) only."""
    return -np.asarray(loss)[:, 0]


def confidence_attack(probability: np.ndarray) -> np.ndarray:
    """The true class's softmax probability (Salem et al. 2019)."""
    return np.asarray(probability)[:, 0]


def logit_confidence_attack(phi: np.ndarray) -> np.ndarray:
    """The logit-scaled confidence, reference-free: LiRA's signal without its calibration."""
    return np.asarray(phi)[:, 0]


def _gaussians(refs: np.ndarray, mask: np.ndarray, fixed_variance: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per-point, per-query mean and std of the reference signals selected by `mask` (R × N).

    Fixed variance pools the within-point residuals of every point (LiRA Sec. VI-B: better
    with few references).  A per-point variance needs ≥ 2 references of every point: with
    fewer it does not exist, and falling back to the pooled one would report the fixed-variance
    attack under another name, so it is refused.  A point with no references at all gets the
    mean over all points (its score carries no per-point calibration, which only weakens the
    attack)."""
    w = mask[..., None].astype(float)
    n = w.sum(0)
    mean_all = (refs * w).sum((0, 1)) / max(w.sum(), 1)
    mu = np.where(n > 0, (refs * w).sum(0) / np.maximum(n, 1), mean_all)
    resid = ((refs - mu) ** 2 * w).sum(0)
    dof = np.maximum(n - 1, 0)
    pooled = resid.sum(0) / dof.sum(0) if dof.sum() > 0 else refs[mask].var(0)
    pooled = np.maximum(pooled, 1e-8)
    if fixed_variance:
        return mu, np.broadcast_to(np.sqrt(pooled), mu.shape)
    if (n < 2).any():
        raise ValueError(f"a per-point variance needs ≥ 2 references of every point; some have "
                         f"{int(n.min())}: use the fixed-variance attack or more reference runs")
    return mu, np.sqrt(np.maximum(resid / dof, 1e-8))


def lira(target: np.ndarray, refs: np.ndarray, refs_in: np.ndarray, online: bool = False,
         fixed_variance: bool = True) -> np.ndarray:
    """LiRA (Carlini et al. 2022) on logit-scaled confidences.

    Online: log N(φ; μ_in, σ_in) − log N(φ; μ_out, σ_out) (Alg. 1).  Offline: the one-sided
    test against the out-distribution alone, log Φ((φ − μ_out)/σ_out) (Sec. VI-C).  Scores are
    averaged over the queries (Sec. VI-A)."""
    target, refs, refs_in = np.asarray(target, float), np.asarray(refs, float), np.asarray(refs_in, bool)
    mu_out, sd_out = _gaussians(refs, ~refs_in, fixed_variance)
    if online:
        mu_in, sd_in = _gaussians(refs, refs_in, fixed_variance)
        score = norm.logpdf(target, mu_in, sd_in) - norm.logpdf(target, mu_out, sd_out)
    else:
        score = norm.logcdf(target, mu_out, sd_out)
    return score.mean(-1)


def rmia(target: np.ndarray, refs: np.ndarray, refs_in: np.ndarray, online: bool = False,
         a: float = 0.3, gamma: float = RMIA_GAMMA) -> np.ndarray:
    """RMIA (Zarifzadeh et al. 2024) on true-class probabilities, the pool as population.

    Score(x) = Pr_z[ (p(x|θ)/p(x)) / (p(z|θ)/p(z)) > γ ] over population points z ≠ x, with
    p(x) the mean over references (online: all; offline: out-references only, linearly
    corrected, p(x) ≈ ½((1+a)·p_out(x) + (1−a)), Eq. 11).  Queries are averaged first."""
    pt = np.asarray(target, float).mean(-1)
    pr = np.asarray(refs, float).mean(-1)
    refs_in = np.asarray(refs_in, bool)
    if online:
        px = pr.mean(0)
    else:
        out = (~refs_in).astype(float)
        p_out = np.where(out.sum(0) > 0, (pr * out).sum(0) / np.maximum(out.sum(0), 1), pr.mean())
        px = 0.5 * ((1 + a) * p_out + (1 - a))
    ratio = pt / np.maximum(px, 1e-30)
    ranked = np.sort(ratio)
    # number of z with ratio_z < ratio_x / γ; x itself never counts (ratio_x/ratio_x = 1 ≯ γ ≥ 1)
    if gamma < 1:
        raise ValueError(f"gamma must be ≥ 1, got {gamma}")
    below = np.searchsorted(ranked, ratio / gamma, side="left")
    return below / (len(ratio) - 1)

"""The one-run canary audit's statistics (Steinke, Nasr & Jagielski, NeurIPS 2023, "Privacy
Auditing with One (1) Training Run"): from canary scores and their secret inclusion bits to an
empirical lower bound on ε that sets any model beside DP-SGD's formal ε.

m canaries are each included in training independently with probability ½.  An auditor
guesses "in" for the k₊ highest scores and "out" for the k₋ lowest and abstains on the rest:
r = k₊ + k₋ guesses, v of them right.  An (ε, δ)-DP procedure makes v behave no better than
r coin flips of bias q = e^ε / (1 + e^ε), up to a δ term (their Theorem 3.1 / Prop. 5.2):

    β = P[Binom(r, q) ≥ v],  α = max_{i=1..v} P[v − i ≤ Binom(r, q) < v] / i,
    p(ε) = min(1, β + 2·m·δ·α)

and ε_lb is the largest ε with p(ε) below the level (5 %).  All r guesses right gives the
ceiling: the most any audit with r guesses can show, whatever the model leaks (r = 100 of
m = 100, δ = 1e-5: ε ≈ 3.49 at level 0.05, 3.05 at the 0.01 each guess count of the grid is
held to).  The guess counts are a fixed grid, Bonferroni-corrected for taking its best
(docs/audit-reference.md).  Pure functions: no models, no files.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import binom

from kr.privacy import metrics

# r as a fraction of m (k₊ = k₋ = r/2): few confident guesses suit a leaky model, many guesses a
# model whose signal is weak but broad; the best of the five is taken at level 0.05 / 5.
GUESS_FRACTIONS = (0.1, 0.2, 0.4, 0.6, 1.0)
LEVEL = 0.05


def p_value(epsilon: float, m: int, r: int, v: int, delta: float) -> float:
    """p(ε) of v right guesses out of r on m canaries, for an (ε, δ)-DP procedure."""
    if not 0 <= v <= r <= m:
        raise ValueError(f"need 0 ≤ v ≤ r ≤ m, got v={v}, r={r}, m={m}")
    q = 1.0 / (1.0 + np.exp(-epsilon))
    beta = binom.sf(v - 1, r, q)
    if v == 0 or delta == 0:
        return float(min(1.0, beta))
    # P[v − i ≤ B < v] for i = 1..v, each over i
    below = np.cumsum(binom.pmf(v - np.arange(1, v + 1), r, q))
    alpha = float(np.max(below / np.arange(1, v + 1)))
    return float(min(1.0, beta + 2 * m * delta * alpha))


def epsilon_lower_bound(m: int, r: int, v: int, delta: float, level: float = LEVEL) -> float:
    """The largest ε whose p(ε) is below `level` (0 where even ε = 0 is not rejected)."""
    if r == 0 or p_value(0.0, m, r, v, delta) >= level:
        return 0.0
    lo, hi = 0.0, 1.0
    while p_value(hi, m, r, v, delta) < level:
        lo, hi = hi, hi * 2
        if hi > 1e3:
            return lo
    for _ in range(50):  # p(ε) grows with ε: bisect to ~1e-12
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if p_value(mid, m, r, v, delta) < level else (lo, mid)
    return lo


def ceiling(m: int, r: int, delta: float, level: float = LEVEL) -> float:
    """ε_lb when all r guesses are right: no audit with r guesses can show more."""
    return epsilon_lower_bound(m, r, r, delta, level)


def guesses(scores: np.ndarray, bits: np.ndarray, r: int, seed: int = 0) -> int:
    """Right guesses among the r/2 highest ("in") and r/2 lowest ("out") scores.  Ties are
    broken at random (a fixed seed), so a constant scorer guesses by coin flip."""
    scores, bits = np.asarray(scores, float), np.asarray(bits, bool)
    tie = np.random.default_rng(seed).random(len(scores))
    order = np.lexsort((tie, scores))  # ascending by score, ties at random
    k_in, k_out = r // 2, r - r // 2
    return int(bits[order[len(order) - k_in:]].sum() + (~bits[order[:k_out]]).sum()) if r else 0


def audit(scores: np.ndarray, bits: np.ndarray, delta: float, level: float = LEVEL,
          fractions: tuple[float, ...] = GUESS_FRACTIONS, seed: int = 0) -> dict:
    """ε_lb over the guess grid (Bonferroni: each at level / len(grid)), the guesses behind
    it, the ceilings, and the canary AUC."""
    scores, bits = np.asarray(scores, float), np.asarray(bits, bool)
    m = len(scores)
    alpha = level / len(fractions)
    rows = []
    for f in fractions:
        r = max(2, int(round(f * m)))
        r -= r % 2
        v = guesses(scores, bits, r, seed)
        rows.append({"r": r, "v": v, "eps_lb": epsilon_lower_bound(m, r, v, delta, alpha),
                     "ceiling": ceiling(m, r, delta, alpha)})
    # the strongest bound; where none is above 0, the guesses whose ceiling is the highest (the
    # most this audit could have shown)
    best = max(rows, key=lambda row: (row["eps_lb"], row["ceiling"]))
    return {"m": m, "included": int(bits.sum()), "delta": delta, "level": level,
            "bonferroni": len(fractions), "eps_lb": best["eps_lb"], "r": best["r"], "v": best["v"],
            "ceiling_at_r": best["ceiling"], "ceiling": max(row["ceiling"] for row in rows),
            "grid": rows,
            "auc": metrics.auc(scores, bits) if 0 < bits.sum() < m else None}


def auc_interval(scores: np.ndarray, bits: np.ndarray, resamples: int = 1000, seed: int = 0) -> list[float] | None:
    """95 % interval of the canary AUC, the canaries resampled (their bits with them)."""
    scores, bits = np.asarray(scores, float), np.asarray(bits, bool)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(resamples):
        i = rng.integers(0, len(bits), len(bits))
        if 0 < bits[i].sum() < len(i):
            draws.append(metrics._auc(scores[i], bits[i]))
    return [float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))] if draws else None


def dp_control(row: dict, epsilon: float, level: float = LEVEL) -> dict:
    """The check "ε_lb ≤ ε" of a DP-SGD model, and whether it could have failed: only where the
    audit's ceiling (all guesses right) exceeds ε can a broken training or accounting show up.
    A correct model fails it with probability ≤ `level` (a false alarm)."""
    can_fail = row["ceiling"] > epsilon
    return {"epsilon": epsilon, "can_fail": bool(can_fail), "passes": bool(row["eps_lb"] <= epsilon),
            "false_alarm": level,
            "reading": (("passes" if row["eps_lb"] <= epsilon else "FAILS") if can_fail else
                        f"cannot fail: the ceiling {row['ceiling']:.2f} ≤ ε = {epsilon:.2f}")}

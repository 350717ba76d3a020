"""The one-run canary audit's statistics (Steinke, Nasr & Jagielski 2023) against values computed
independently from the formula, its ceilings, and the two scorers with known answers."""

import math

import numpy as np
import pytest

from kr.privacy import canary


def _p_value_by_hand(eps, m, r, v, delta):
    """The formula of ../shared/AUDIT.md term by term, with exact binomial sums."""
    q = math.exp(eps) / (1 + math.exp(eps))
    pmf = [math.comb(r, j) * q ** j * (1 - q) ** (r - j) for j in range(r + 1)]
    beta = sum(pmf[v:])
    alpha = max((sum(pmf[v - i:v]) / i for i in range(1, v + 1)), default=0.0)
    return min(1.0, beta + 2 * m * delta * alpha)


def _eps_by_scan(m, r, v, delta, level=0.05, step=1e-4):
    """The largest ε on a fine grid with p(ε) < level (p grows with ε)."""
    eps = 0.0
    if _p_value_by_hand(0.0, m, r, v, delta) >= level:
        return 0.0
    lo, hi = 0.0, 20.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _p_value_by_hand(mid, m, r, v, delta) < level else (lo, mid)
    eps = lo
    assert _p_value_by_hand(eps - step, m, r, v, delta) < level <= _p_value_by_hand(eps + step, m, r, v, delta)
    return eps


@pytest.mark.parametrize("m,r,v,delta", [(100, 100, 100, 0.0), (1000, 1000, 1000, 0.0), (200, 80, 70, 1e-5),
                                         (156, 62, 50, 1e-3), (500, 100, 60, 1e-5), (50, 20, 20, 0.01)])
def test_epsilon_lower_bound_matches_the_formula(m, r, v, delta):
    assert canary.p_value(1.3, m, r, v, delta) == pytest.approx(_p_value_by_hand(1.3, m, r, v, delta), rel=1e-9)
    assert canary.epsilon_lower_bound(m, r, v, delta) == pytest.approx(_eps_by_scan(m, r, v, delta), abs=1e-6)


def test_ceilings_of_small_audits():
    # ../shared/AUDIT.md: with r = 100 the most any audit can show is ε ≈ 3.5, with r = 1,000 ≈ 5.8
    assert canary.ceiling(100, 100, 0.0) == pytest.approx(3.49, abs=0.01)
    assert canary.ceiling(1000, 1000, 0.0) == pytest.approx(5.81, abs=0.01)
    assert canary.ceiling(1000, 1000, 1e-5) < canary.ceiling(1000, 1000, 0.0)  # δ only lowers it
    assert canary.epsilon_lower_bound(100, 100, 50, 0.0) == 0.0  # coin flips prove nothing


def test_a_scorer_that_knows_the_bits_reaches_the_ceiling_and_a_constant_one_proves_nothing():
    bits = np.random.default_rng(0).random(156) < 0.5
    oracle = canary.audit(bits.astype(float), bits, 1e-5)
    assert oracle["auc"] == 1.0 and oracle["v"] == oracle["r"]  # every guess right …
    assert oracle["eps_lb"] == pytest.approx(oracle["ceiling_at_r"])  # … is the ceiling for r
    balanced = np.random.default_rng(0).permutation(np.arange(156) < 78)  # r = m is reachable
    oracle = canary.audit(balanced.astype(float), balanced, 1e-5)
    assert oracle["v"] == oracle["r"] == 156 and oracle["eps_lb"] == pytest.approx(oracle["ceiling"])
    assert oracle["eps_lb"] > 2.5
    constant = canary.audit(np.zeros(156), bits, 1e-5)
    assert constant["eps_lb"] == 0.0 and constant["auc"] == 0.5


def test_guesses_take_the_top_and_bottom_scores():
    scores = np.array([0.9, 0.8, 0.1, 0.2, 0.5, 0.6])
    bits = np.array([True, False, False, True, True, False])
    # "in" for 0.9, 0.8 (one right), "out" for 0.1, 0.2 (one right)
    assert canary.guesses(scores, bits, 4) == 2
    assert canary.guesses(scores, bits, 0) == 0


def test_bonferroni_makes_the_grid_pay_for_its_choice():
    bits = np.random.default_rng(1).random(400) < 0.5
    scores = bits + np.random.default_rng(2).normal(0, 0.8, 400)
    corrected = canary.audit(scores, bits, 1e-5)
    one_r = canary.audit(scores, bits, 1e-5, fractions=(corrected["r"] / 400,))
    assert one_r["r"] == corrected["r"] and one_r["eps_lb"] > corrected["eps_lb"]

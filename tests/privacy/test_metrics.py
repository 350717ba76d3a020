"""Attack metrics on hand-built ROC cases with known answers."""

import numpy as np
import pytest

from kr.privacy import metrics


def test_perfect_and_reversed_separation():
    members = np.array([1, 1, 1, 0, 0, 0], bool)
    assert metrics.auc(np.array([6, 5, 4, 3, 2, 1.0]), members) == 1.0
    assert metrics.auc(np.array([1, 2, 3, 4, 5, 6.0]), members) == 0.0


def test_auc_known_value_and_ties():
    # members 3, 1 vs non-members 2, 0: pairs won 3>2, 3>0, 1>0, lost 1<2 → 3/4
    assert metrics.auc(np.array([3, 1, 2, 0.0]), np.array([1, 1, 0, 0], bool)) == 0.75
    # all scores tied: no information, AUC exactly 1/2
    assert metrics.auc(np.zeros(10), np.arange(10) < 5) == 0.5


def test_tpr_at_fpr_known_answer_and_resolvability():
    # 1,000 non-members at 0..999, members: 5 above every non-member, 995 below all of them
    non = np.arange(1000.0)
    mem = np.concatenate([np.full(5, 2000.0), np.full(995, -1.0)])
    scores, members = np.concatenate([mem, non]), np.arange(2000) < 1000
    assert metrics.tpr_at_fpr(scores, members, 0.001) == pytest.approx(0.005)
    # at 1 % FPR the 10 highest non-members may pass, members below them do not gain
    assert metrics.tpr_at_fpr(scores, members, 0.01) == pytest.approx(0.005)
    # with only 500 non-members a 0.1 % FPR is below one point: not resolvable
    assert metrics.tpr_at_fpr(scores[:1500], members[:1500], 0.001) is None
    s = metrics.summary(scores[:1500], members[:1500])
    assert s["tpr_at_0.1%fpr"] is None and s["tpr_at_1%fpr"] == pytest.approx(0.005)


def test_threshold_balanced_accuracy_and_advantage():
    scores = np.array([0.9, 0.8, 0.7, 0.3, 0.2, 0.75])
    members = np.array([1, 1, 1, 0, 0, 0], bool)
    thr = metrics.best_threshold(scores, members)
    assert 0.75 < thr <= 0.9 or thr <= 0.7  # either side of the stray non-member is optimal
    guesses = scores >= 0.7
    # TPR 1, TNR 2/3 → balanced accuracy 5/6, advantage 2/3
    s = metrics.summary(scores, members, guesses)
    assert s["balanced_accuracy"] == pytest.approx(5 / 6)
    assert s["advantage"] == pytest.approx(2 / 3)


def test_bootstrap_interval_covers_the_estimate_and_narrows_with_data():
    rng = np.random.default_rng(0)
    def sample(n):
        members = np.arange(n) < n // 2
        return rng.normal(size=n) + 0.8 * members, members
    small, big = sample(200), sample(4000)
    r_small = metrics.report(*small, resamples=300, seed=1)
    r_big = metrics.report(*big, resamples=300, seed=1)
    for r in (r_small, r_big):
        lo, hi = r["auc_ci"]
        assert lo < r["auc"] < hi
    assert (r_big["auc_ci"][1] - r_big["auc_ci"][0]) < (r_small["auc_ci"][1] - r_small["auc_ci"][0]) / 2
    # the true AUC of N(0.8, 1) vs N(0, 1) is Φ(0.8/√2) ≈ 0.714
    assert r_big["auc_ci"][0] < 0.714 < r_big["auc_ci"][1]


def test_pooled_targets_count_distinct_images():
    rng = np.random.default_rng(0)
    members = np.tile(np.arange(300) < 150, (4, 1))
    scores = rng.normal(size=(4, 300))
    r = metrics.report(scores, members, resamples=200)
    assert r["points"] == 300 and r["targets"] == 4 and r["non_members"] == 600
    # 600 pooled non-member scores but only 150 distinct images: 1 % FPR resolvable, 0.1 % not
    assert r["tpr_at_0.1%fpr"] is None and r["tpr_at_1%fpr"] is not None
    assert len(r["auc_per_target"]) == 4
    assert r["auc_per_target_mean"] == pytest.approx(np.mean(r["auc_per_target"]))


def test_intervals_count_the_training_runs_as_a_source_of_chance():
    """Runs that leak by different amounts (a per-run effect) must widen the interval: a
    bootstrap over the images alone would give the same width with or without them."""
    rng = np.random.default_rng(0)
    targets, n = 8, 400

    def world(run_spread):
        effect = 0.5 + run_spread * rng.normal(size=(targets, 1))
        members = np.stack([rng.permutation(n) < n // 2 for _ in range(targets)])
        return rng.normal(size=(targets, n)) + effect * members, members

    width = {}
    for spread in (0.0, 0.6):
        r = metrics.report(*world(spread), resamples=400, seed=2)
        width[spread] = r["auc_ci"][1] - r["auc_ci"][0]
        assert r["auc_ci"][0] < r["auc"] < r["auc_ci"][1]
    assert width[0.6] > 1.8 * width[0.0]


def test_roc_is_sklearns_full_curve():
    from sklearn.metrics import roc_auc_score, roc_curve

    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(2, 200))
        scores = np.round(rng.normal(size=n), int(rng.integers(0, 3)))  # ties too
        members = rng.random(n) < 0.5
        if members.all() or not members.any():
            continue
        f, t = metrics.roc(scores, members)
        f2, t2, _ = roc_curve(members, scores, drop_intermediate=False)
        assert np.allclose(f, f2) and np.allclose(t, t2)
        assert np.trapezoid(t, f) == pytest.approx(roc_auc_score(members, scores))
    with pytest.raises(ValueError, match="finite"):
        metrics.roc(np.array([0.0, np.nan]), np.array([True, False]))


def test_paired_difference_by_hand():
    from kr.privacy.metrics import paired_difference

    members = np.array([1, 1, 0, 0], bool)
    a, b = np.array([4.0, 3.0, 2.0, 1.0]), np.array([1.0, 3.0, 2.0, 4.0])
    # AUC(a) = 1; AUC(b): of the 4 member/non-member pairs only (3 > 2) is ordered right = 0.25
    d = paired_difference(a, b, members, resamples=300, seed=0)
    assert d["difference"] == pytest.approx(0.75)
    assert d["ci"][0] <= 0.75 <= d["ci"][1]
    # a perfect and a reversed scorer differ by exactly 1 on every resample
    rev = paired_difference(a, -a, members, resamples=300, seed=0)
    assert rev["ci"] == [1.0, 1.0] and rev["distinguishable"]
    same = paired_difference(b, b, members, resamples=300, seed=0)
    assert same["ci"] == [0.0, 0.0] and not same["distinguishable"]
    back = paired_difference(b, a, members, resamples=300, seed=0)  # antisymmetric, draw for draw
    assert back["difference"] == -d["difference"] and back["ci"] == [-d["ci"][1], -d["ci"][0]]
    # every member on one side (all canaries included: a secret draw of probability 2^(1-M)):
    # no AUC, so nothing to compare, said as such rather than an error
    none = paired_difference(a, b, np.ones(4, bool), resamples=50, seed=0)
    assert none == {"difference": None, "ci": None, "distinguishable": False, "resamples": 0}


def test_experiment_1_resamples_complementary_pairs_whole():
    from kr.privacy.metrics import _resample

    rng = np.random.default_rng(0)
    for _ in range(50):
        rows, cols = _resample(rng, 8, 30)
        rows = rows.ravel()
        assert len(rows) == 8 and (rows[0::2] % 2 == 0).all() and (rows[1::2] == rows[0::2] + 1).all()
        assert cols.shape == (1, 30)
    with pytest.raises(ValueError, match="pairs"):
        _resample(rng, 3, 30)

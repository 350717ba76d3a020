"""Attack metrics as pure functions of (scores, membership): higher score = "member".

TPR at a fixed low FPR is the figure that matters for privacy (Carlini et al. 2022, Sec. 3):
an attack that is confident about a few patients is a leak even when its AUC is near 0.5.
A TPR at FPR f is only resolvable with at least 1/f non-members; below that it is None.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

FPRS = (0.001, 0.01)


def fpr_key(fpr: float) -> str:
    return f"tpr_at_{100 * fpr:g}%fpr"


def roc(scores: np.ndarray, members: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """FPR and TPR at every distinct threshold, from (0, 0) to (1, 1).

    Written out rather than sklearn's roc_curve: the bootstrap calls it ~20,000 times per audit,
    where sklearn's argument validation took most of `kr audit`'s own time.  Unlike roc_curve's
    default it keeps collinear points, so a TPR at a low FPR is never read off a dropped one."""
    s, m = np.ravel(scores).astype(float), np.ravel(members).astype(bool)
    if not np.isfinite(s).all():
        raise ValueError("membership scores must be finite")
    order = np.argsort(-s, kind="stable")
    s, m = s[order], m[order]
    ends = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1] if len(s) else np.zeros(0, int)
    tps = np.cumsum(m)[ends]
    fps = ends + 1 - tps
    pos, neg = max(int(m.sum()), 1), max(len(m) - int(m.sum()), 1)
    return np.r_[0.0, fps / neg], np.r_[0.0, tps / pos]


def auc(scores: np.ndarray, members: np.ndarray) -> float:
    return float(roc_auc_score(np.ravel(members).astype(bool), np.ravel(scores).astype(float)))


def tpr_at_fpr(scores: np.ndarray, members: np.ndarray, fpr: float) -> float | None:
    """The highest TPR among thresholds whose FPR is at most `fpr` (None if not resolvable)."""
    members = np.asarray(members, bool)
    if (~members).sum() * fpr < 1:
        return None
    f, t = roc(scores, members)
    return float(t[f <= fpr + 1e-12].max())


def best_threshold(scores: np.ndarray, members: np.ndarray) -> float:
    """The threshold that maximises balanced accuracy: fit it on *other* runs only, never on
    the points it will judge (docs/audit-reference.md, "thresholds fitted on the evaluation points")."""
    members = np.asarray(members, bool)
    f, t, thresholds = roc_curve(members, np.asarray(scores, float))
    return float(thresholds[np.argmax(t - f)])


def balanced_accuracy(guesses: np.ndarray, members: np.ndarray) -> float:
    """Mean of TPR and TNR of yes/no membership guesses."""
    members, guess = np.asarray(members, bool), np.asarray(guesses, bool)
    return float((guess[members].mean() + (~guess[~members]).mean()) / 2)


def summary(scores: np.ndarray, members: np.ndarray, guesses: np.ndarray | None = None) -> dict:
    """AUC, TPR at the FPRS, and for guesses made with a threshold fitted elsewhere balanced
    accuracy and the attacker's advantage (TPR − FPR = 2·balanced accuracy − 1, Yeom et al.)."""
    members = np.asarray(members, bool)
    f, t = roc(scores, members)  # one ROC for every figure: the bootstrap calls this 1000×
    n_out = (~members).sum()
    out = {"auc": float(np.trapezoid(t, f)),
           **{fpr_key(x): float(t[f <= x + 1e-12].max()) if n_out * x >= 1 else None for x in FPRS}}
    if guesses is not None:
        bacc = balanced_accuracy(guesses, members)
        out.update({"balanced_accuracy": bacc, "advantage": 2 * bacc - 1})
    return out


def bootstrap(scores: np.ndarray, members: np.ndarray, guesses: np.ndarray | None = None,
              resamples: int = 1000, seed: int = 0) -> dict:
    """95 % percentile intervals of `summary`'s figures.

    1-D scores (one target model): the images are resampled with replacement.  2-D scores
    (targets × images, experiment 1's runs each the target in turn): targets and images are
    resampled together — a two-way bootstrap over the rows and the columns — because both the
    training runs and the images are sources of chance (docs/audit-reference.md); resampling the
    images alone treats the runs as fixed and gives intervals that are too narrow."""
    s, m = np.atleast_2d(np.asarray(scores, float)), np.atleast_2d(np.asarray(members, bool))
    g = None if guesses is None else np.atleast_2d(np.asarray(guesses, bool))
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {}
    for _ in range(resamples):
        pick = _resample(rng, *s.shape)
        mm = m[pick].ravel()
        if mm.all() or not mm.any():
            continue
        for k, v in summary(s[pick].ravel(), mm, None if g is None else g[pick].ravel()).items():
            if v is not None:
                draws.setdefault(k, []).append(v)
    return {f"{k}_ci": [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))]
            for k, v in draws.items()}


def _resample(rng: np.random.Generator, targets: int, images: int):
    """One bootstrap draw of (rows, columns).  Several targets (experiment 1) are complementary
    pairs of runs, rows 2k and 2k+1 (kr.privacy.references): a pair is drawn whole, since its two
    runs split the same images and are not independent; the images are drawn alongside."""
    if targets > 1:
        if targets % 2:
            raise ValueError(f"experiment 1's targets come in complementary pairs, got {targets} rows")
        pairs = rng.integers(0, targets // 2, targets // 2)
        rows = np.stack([2 * pairs, 2 * pairs + 1], 1).ravel()
    else:
        rows = np.zeros(1, int)
    return np.ix_(rows, rng.integers(0, images, images))


def _auc(scores: np.ndarray, members: np.ndarray) -> float:
    """`auc` through `roc`, without scikit-learn's checks: the bootstraps call it ~10⁴ times."""
    f, t = roc(scores, members)
    return float(np.trapezoid(t, f))


def paired_difference(scores_a: np.ndarray, scores_b: np.ndarray, members: np.ndarray,
                      resamples: int = 1000, seed: int = 0) -> dict:
    """AUC(A) − AUC(B) of two models scored on the same runs and images, with its 95 % interval
    from one bootstrap that draws the same runs (pairs) and images for both: the interval of
    the difference itself, which two separate intervals cannot give.  `distinguishable` is
    whether the interval excludes zero: the only case in which a page may say A leaks more."""
    a, b = np.atleast_2d(np.asarray(scores_a, float)), np.atleast_2d(np.asarray(scores_b, float))
    m = np.atleast_2d(np.asarray(members, bool))
    if a.shape != b.shape or a.shape != m.shape:
        raise ValueError(f"paired scores need one shape, got {a.shape}, {b.shape} and members {m.shape}")
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(resamples):
        pick = _resample(rng, *a.shape)
        mm = m[pick].ravel()
        if mm.all() or not mm.any():
            continue
        diffs.append(_auc(a[pick].ravel(), mm) - _auc(b[pick].ravel(), mm))
    if not diffs:  # every member on one side (e.g. all canaries included): no AUC, nothing to compare
        return {"difference": None, "ci": None, "distinguishable": False, "resamples": 0}
    ci = [float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5))]
    return {"difference": _auc(a.ravel(), m.ravel()) - _auc(b.ravel(), m.ravel()), "ci": ci,
            "distinguishable": bool(ci[0] > 0 or ci[1] < 0), "resamples": len(diffs)}


def report(scores: np.ndarray, members: np.ndarray, guesses: np.ndarray | None = None,
           resamples: int = 1000, seed: int = 0) -> dict:
    """`summary` of the pooled scores plus its bootstrap intervals and the counts behind them;
    for 2-D scores (targets × images) also each target's AUC and their spread."""
    s, m = np.asarray(scores, float), np.asarray(members, bool)
    out = summary(s.ravel(), m.ravel(), None if guesses is None else np.ravel(guesses))
    out.update(bootstrap(s, m, guesses, resamples, seed))
    m2 = np.atleast_2d(m)
    out.update({"members": int(m.sum()), "non_members": int((~m).sum()), "points": m2.shape[1],
                "targets": m2.shape[0]})
    if s.ndim == 2:
        per = [auc(s[t], m[t]) for t in range(len(s))]
        out.update({"auc_per_target": per, "auc_per_target_mean": float(np.mean(per)),
                    "auc_per_target_sd": float(np.std(per, ddof=1)) if len(per) > 1 else 0.0})
    # Pooled scores repeat each image: resolvability counts distinct non-member images.
    distinct_out = int((~m2).any(0).sum())
    for f in FPRS:
        if distinct_out * f < 1:
            out[fpr_key(f)] = None
            out.pop(fpr_key(f) + "_ci", None)
    return out

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
    the points it will judge (../shared/AUDIT.md, "thresholds fitted on the evaluation points")."""
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
              groups: np.ndarray | None = None, resamples: int = 1000, seed: int = 0) -> dict:
    """95 % percentile intervals of `summary`'s figures, resampling points with replacement.

    `groups` names the underlying point of each score: when one image is scored by several
    targets (experiment 1's pooled scores) its scores are resampled together, since they are
    not independent evidence."""
    scores, members = np.asarray(scores, float), np.asarray(members, bool)
    guesses = None if guesses is None else np.asarray(guesses, bool)
    groups = np.arange(len(scores)) if groups is None else np.asarray(groups)
    ids, inverse = np.unique(groups, return_inverse=True)
    rows = [np.flatnonzero(inverse == i) for i in range(len(ids))]
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {}
    for _ in range(resamples):
        pick = np.concatenate([rows[i] for i in rng.integers(0, len(ids), len(ids))])
        if members[pick].all() or not members[pick].any():
            continue
        g = None if guesses is None else guesses[pick]
        for k, v in summary(scores[pick], members[pick], g).items():
            if v is not None:
                draws.setdefault(k, []).append(v)
    return {f"{k}_ci": [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))]
            for k, v in draws.items()}


def report(scores: np.ndarray, members: np.ndarray, guesses: np.ndarray | None = None,
           groups: np.ndarray | None = None, resamples: int = 1000, seed: int = 0) -> dict:
    """`summary` plus its bootstrap intervals and the counts behind them."""
    scores, members = np.ravel(scores), np.ravel(np.asarray(members, bool))
    guesses = None if guesses is None else np.ravel(guesses)
    groups = None if groups is None else np.ravel(groups)
    n_groups = len(np.unique(groups)) if groups is not None else len(members)
    out = summary(scores, members, guesses)
    out.update(bootstrap(scores, members, guesses, groups, resamples, seed))
    out.update({"members": int(members.sum()), "non_members": int((~members).sum()),
                "points": n_groups})
    # Pooled scores repeat each image: resolvability counts distinct non-member images.
    distinct_out = len(np.unique(groups[~members])) if groups is not None else int((~members).sum())
    for f in FPRS:
        if distinct_out * f < 1:
            out[fpr_key(f)] = None
            out.pop(fpr_key(f) + "_ci", None)
    return out

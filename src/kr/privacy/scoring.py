"""Membership-inference scoring: the attacks, experiment 1 and 2's scores, their summaries.

Pure functions of logits and memberships (../shared/AUDIT.md).  `kr run`'s audit stage
(kr.shipped_audit) scores its own models with the reference-free attacks; `kr audit`
(kr.audit) replays the procedure for the reference-based ones and scores with the same
functions.
"""

from __future__ import annotations

import numpy as np

from kr.config import Config
from kr.privacy import attacks, metrics, signals
from kr.seeding import derive_seed

# Reference-free attacks: functions of the target's logits alone.
FREE_ATTACKS = {
    "loss": lambda z, y: attacks.loss_attack(signals.loss(z, y)),
    "confidence": lambda z, y: attacks.confidence_attack(signals.probability(z, y)),
    "logit-confidence": lambda z, y: attacks.logit_confidence_attack(signals.logit_confidence(z, y)),
}
# Reference-based attacks: (signal, attack) with the target's and the references' signals.
REFERENCE_ATTACKS = {
    "lira-online": (signals.logit_confidence, lambda t, r, i: attacks.lira(t, r, i, True, False)),
    "lira-online-fixed": (signals.logit_confidence, lambda t, r, i: attacks.lira(t, r, i, True, True)),
    "lira-offline": (signals.logit_confidence, lambda t, r, i: attacks.lira(t, r, i, False, False)),
    "lira-offline-fixed": (signals.logit_confidence, lambda t, r, i: attacks.lira(t, r, i, False, True)),
    "rmia-online": (signals.probability, lambda t, r, i: attacks.rmia(t, r, i, online=True)),
    "rmia-offline": (signals.probability, lambda t, r, i: attacks.rmia(t, r, i, online=False)),
}
# Experiment 2's references trained on other data sizes and never on the target's own split in
# complementary fashion: only the offline attacks apply (../shared/AUDIT.md).
SHIPPED_REFERENCE_ATTACKS = ("lira-offline", "lira-offline-fixed", "rmia-offline")


def procedure_scores(logits: np.ndarray, labels: np.ndarray, matrix: np.ndarray) -> dict:
    """Experiment 1: each run in turn is the target; its references are the runs of the *other*
    pairs.  Its own partner is left out: the partner's membership is the exact complement of
    the target's, so with few references it makes the in/out reference sets depend on the
    target's membership (a 4-run tiny audit measured online-LiRA AUC 0.09 with the partner
    included).  Without it every point is in exactly half of the target's references.

    Returns {attack: (scores, guesses)}, each runs × points.  A guess uses the threshold that
    maximises balanced accuracy on the *other* runs' scores and memberships."""
    runs = len(matrix)
    out = {}
    for name, fn in FREE_ATTACKS.items():
        out[name] = np.stack([fn(logits[t], labels) for t in range(runs)])
    for name, (signal, fn) in REFERENCE_ATTACKS.items():
        sig = np.stack([signal(logits[r], labels) for r in range(runs)])
        out[name] = np.stack([fn(sig[t], np.delete(sig, [t, t ^ 1], 0), np.delete(matrix, [t, t ^ 1], 0))
                              for t in range(runs)])
    guesses = {}
    for name, scores in out.items():
        guesses[name] = np.stack([scores[t] >= metrics.best_threshold(
            np.delete(scores, t, 0).ravel(), np.delete(matrix, t, 0).ravel()) for t in range(runs)])
    return {name: (out[name], guesses[name]) for name in out}


def shipped_scores(shipped: np.ndarray, refs: np.ndarray | None, labels: np.ndarray,
                   matrix: np.ndarray | None, procedure: dict | None) -> dict:
    """Experiment 2: the shipped model, its own members against the official test split.

    Reference-based attacks (offline) use the procedure runs; guesses use thresholds fitted
    on experiment 1's pooled scores (never on the shipped model's own membership)."""
    out = {name: fn(shipped, labels) for name, fn in FREE_ATTACKS.items()}
    if refs is not None:
        for name in SHIPPED_REFERENCE_ATTACKS:
            signal, fn = REFERENCE_ATTACKS[name]
            sig = np.stack([signal(r, labels) for r in refs])
            out[name] = fn(signal(shipped, labels), sig, matrix)
    result = {}
    for name, scores in out.items():
        guesses = None
        if procedure is not None:
            ref_scores = procedure[name][0]
            guesses = scores >= metrics.best_threshold(ref_scores.ravel(), matrix.ravel())
        result[name] = (scores, guesses)
    return result


def summarise(scores: dict, members: np.ndarray, references: dict[str, int], config: Config,
              groups: np.ndarray | None = None) -> dict:
    """{attack: metrics.report(...) + the number of reference runs it used}."""
    out = {}
    for name, (s, g) in scores.items():
        out[name] = {**metrics.report(s, members, g, groups, config.audit.bootstrap,
                                      derive_seed(config.seed, "audit-bootstrap")),
                     "references": references.get(name, 0)}
        if s.ndim == 2:
            out[name]["auc_per_target"] = [metrics.auc(s[t], members[t]) for t in range(len(s))]
    return out


def compare_to_real(audit: dict) -> None:
    """How much of the teacher's leakage survives: AUC below `real` under the same attack."""
    if "real" not in audit:
        return
    for target, by_attack in audit.items():
        for name, row in by_attack.items():
            if name in audit["real"]:
                row["auc_below_real"] = audit["real"][name]["auc"] - row["auc"]

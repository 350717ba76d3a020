"""Membership-inference scoring: the attacks, experiment 1 and 2's scores, their summaries.

Pure functions of logits and memberships (docs/audit-reference.md).  `kr run`'s audit stage
(kr.shipped_audit) scores its own models with the reference-free attack; `kr audit`
(kr.audit) replays the procedure for the reference-based ones and scores with the same
functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

import numpy as np

from kr.config import Config
from kr.methods import METHODS
from kr.privacy import attacks, metrics, signals
from kr.seeding import derive_seed

# The reference-free attack: a function of the target's logits alone.  LOSS, the confidence and
# the logit-scaled confidence rank points alike for a fixed label (kr.privacy.attacks): one row.
FREE_ATTACKS = {
    "loss": lambda z, y: attacks.loss_attack(signals.loss(z, y)),
}


@dataclass(frozen=True)
class ReferenceAttack:
    signal: Callable[[np.ndarray, np.ndarray], np.ndarray]  # (logits, labels) → N × Q
    score: Callable[..., np.ndarray]                        # (target, refs, refs_in) → N
    min_in: int   # references per image that trained on it …
    min_out: int  # … and that did not: a per-image Gaussian needs 2 of a side it fits
    tuned_a: bool = False  # RMIA offline: `a` chosen on the paired reference run


REFERENCE_ATTACKS = {
    "lira-online": ReferenceAttack(signals.logit_confidence, partial(attacks.lira, online=True,
                                                                     fixed_variance=False), 2, 2),
    "lira-online-fixed": ReferenceAttack(signals.logit_confidence, partial(attacks.lira, online=True), 1, 1),
    "lira-offline": ReferenceAttack(signals.logit_confidence, partial(attacks.lira, fixed_variance=False), 0, 2),
    "lira-offline-fixed": ReferenceAttack(signals.logit_confidence, attacks.lira, 0, 1),
    "rmia-online": ReferenceAttack(signals.probability, partial(attacks.rmia, online=True), 1, 1),
    "rmia-offline": ReferenceAttack(signals.probability, attacks.rmia, 0, 1, tuned_a=True),
}
# Experiment 2's references trained on other data sizes and never on the target's own split in
# complementary fashion: only the offline attacks apply (docs/audit-reference.md).
SHIPPED_REFERENCE_ATTACKS = ("lira-offline", "lira-offline-fixed", "rmia-offline")


def supported(names, refs_in: np.ndarray) -> tuple[list[str], dict[str, str]]:
    """Which attacks these references support, and why the others are left out: with 2R runs
    and the target's partner left out each image has R − 1 "in" and R − 1 "out" references;
    at 4 runs that is one of each, where a per-image variance does not exist."""
    n_in, n_out = int(refs_in.sum(0).min()), int((~refs_in).sum(0).min())
    ok, skipped = [], {}
    for name in names:
        a = REFERENCE_ATTACKS[name]
        if n_in >= a.min_in and n_out >= a.min_out:
            ok.append(name)
        else:
            skipped[name] = (f"needs ≥ {a.min_in} in and ≥ {a.min_out} out references per image, these have "
                             f"{n_in} and {n_out}: train more reference runs (audit.references ≥ 8 for a claim)")
    return ok, skipped


def tune_rmia_a(pseudo: np.ndarray, refs: np.ndarray, refs_in: np.ndarray, members: np.ndarray) -> float:
    """RMIA offline's a, as ML Privacy Meter chooses it: the grid value whose attack, run on a
    reference model whose membership the auditor knows (the target's paired run) with the
    target's own references, has the highest AUC.  The target's scores are never read; its
    membership is the complement of the pair's, so one of 11 values is chosen with it, as in
    ML Privacy Meter."""
    aucs = [metrics.auc(attacks.rmia(pseudo, refs, refs_in, online=False, a=a), members)
            for a in attacks.RMIA_A_GRID]
    return float(attacks.RMIA_A_GRID[int(np.argmax(aucs))])


def procedure_scores(logits: np.ndarray, labels: np.ndarray, matrix: np.ndarray,
                     rmia_a: float | None = None) -> tuple[dict, dict]:
    """Experiment 1: each run in turn is the target; its references are the runs of the *other*
    pairs.  Its own partner is left out: the partner's membership is the exact complement of
    the target's, so with few references it makes the in/out reference sets depend on the
    target's membership (a 4-run tiny audit measured online-LiRA AUC 0.09 with the partner
    included).  Without it every point is in exactly half of the target's references.

    Returns ({attack: (scores, guesses)}, each runs × points; info: the attacks these
    references cannot support and why, RMIA offline's a per target; `rmia_a` fixes it instead,
    as kr did before, for comparison).  A guess uses the threshold that maximises balanced
    accuracy on the *other* runs' scores and memberships."""
    runs = len(matrix)
    out = {name: np.stack([fn(logits[t], labels) for t in range(runs)]) for name, fn in FREE_ATTACKS.items()}
    names, skipped = supported(REFERENCE_ATTACKS, np.delete(matrix, [0, 1], 0))
    chosen_a = []
    for name in names:
        attack = REFERENCE_ATTACKS[name]
        sig = np.stack([attack.signal(logits[r], labels) for r in range(runs)])
        rows = []
        for t in range(runs):
            refs, refs_in = np.delete(sig, [t, t ^ 1], 0), np.delete(matrix, [t, t ^ 1], 0)
            kw = {}
            if attack.tuned_a:
                kw["a"] = rmia_a if rmia_a is not None else tune_rmia_a(sig[t ^ 1], refs, refs_in, matrix[t ^ 1])
                chosen_a.append(kw["a"])
            rows.append(attack.score(sig[t], refs, refs_in, **kw))
        out[name] = np.stack(rows)
    scored = {}
    for name, scores in out.items():
        guesses = np.stack([scores[t] >= metrics.best_threshold(
            np.delete(scores, t, 0).ravel(), np.delete(matrix, t, 0).ravel()) for t in range(runs)])
        scored[name] = (scores, guesses)
    return scored, {"skipped": skipped, "rmia_offline_a": chosen_a}


def shipped_scores(shipped: np.ndarray, refs: np.ndarray | None, labels: np.ndarray,
                   matrix: np.ndarray | None, procedure: dict | None) -> tuple[dict, dict]:
    """Experiment 2: the shipped model, its own members against the official test split.

    Reference-based attacks (offline) use the procedure runs, RMIA's a tuned on the first of
    them with the runs of the other pairs; guesses use thresholds fitted on experiment 1's
    pooled scores (never on the shipped model's own membership)."""
    out = {name: fn(shipped, labels) for name, fn in FREE_ATTACKS.items()}
    info: dict = {"skipped": {}}
    if refs is not None:
        names, info["skipped"] = supported(SHIPPED_REFERENCE_ATTACKS, matrix)
        for name in names:
            attack = REFERENCE_ATTACKS[name]
            sig = np.stack([attack.signal(r, labels) for r in refs])
            kw = {}
            if attack.tuned_a:
                kw["a"] = info["rmia_offline_a"] = tune_rmia_a(sig[0], sig[2:], matrix[2:], matrix[0])
            out[name] = attack.score(attack.signal(shipped, labels), sig, matrix, **kw)
    result = {}
    for name, scores in out.items():
        guesses = None
        if procedure is not None and name in procedure:
            guesses = scores >= metrics.best_threshold(procedure[name][0].ravel(), matrix.ravel())
        result[name] = (scores, guesses)
    return result, info


def summarise(scores: dict, members: np.ndarray, references: dict[str, int], config: Config) -> dict:
    """{attack: metrics.report(...) + the number of reference runs it used}; for experiment 1
    (scores targets × images) the intervals resample runs and images, and each target's AUC
    is given beside the pooled one."""
    return {name: {**metrics.report(s, members, g, config.audit.bootstrap,
                                    derive_seed(config.seed, "audit-bootstrap")),
                   "references": references.get(name, 0)}
            for name, (s, g) in scores.items()}


# The comparisons a page states in words: the student against the teacher it distils; every
# model that learnt from the teacher's labels (and the teacher itself, the control that shows the
# audit can see leakage at all) against the hard-label students, which never saw one; KR against
# the DP-SGD models.
COMPARISONS = (("kr", "real"),)


def comparison_pairs(models) -> list[tuple[str, str]]:
    """COMPARISONS among these models, the teacher-label pairs, then KR against each DP-SGD model."""
    models = list(models)
    pairs = [(a, b) for a, b in COMPARISONS if a in models and b in models]
    hard = [m for m in models if _student(m) and not METHODS[m].options["soft"]]
    taught = [m for m in models if m == "real" or (_student(m) and METHODS[m].options["soft"])]
    pairs += [(a, h) for a in taught for h in hard if (a, h) not in pairs]
    return pairs + [("kr", m) for m in models if "kr" in models and m.startswith("dpsgd-eps")]


def _student(model: str) -> bool:
    return model in METHODS and METHODS[model].stages == "student"


def _boot(config: Config, what: str) -> dict:
    return {"resamples": config.audit.bootstrap, "seed": derive_seed(config.seed, "audit-paired", what)}


def compare_to_real(audit: dict, scores: dict | None = None, members: np.ndarray | None = None,
                    config: Config | None = None) -> None:
    """How much of the teacher's leakage survives: AUC below `real` under the same attack; with
    the scores ({model: {attack: scores}}), its paired interval over the same runs and images."""
    if "real" not in audit:
        return
    for target, by_attack in audit.items():
        for name, row in by_attack.items():
            if name in audit["real"]:
                row["auc_below_real"] = audit["real"][name]["auc"] - row["auc"]
                if scores is not None and target != "real":
                    d = metrics.paired_difference(scores["real"][name], scores[target][name], members,
                                                  **_boot(config, f"real-{target}-{name}"))
                    row["auc_below_real_ci"], row["auc_below_real_distinguishable"] = d["ci"], d["distinguishable"]


def comparisons(audit: dict, scores: dict, members: np.ndarray, config: Config) -> list[dict]:
    """Each worded comparison (comparison_pairs) under the attack strongest against its first
    model: AUC(A) − AUC(B), paired over the same runs (pairs) and images."""
    out = []
    for a, b in comparison_pairs(audit):
        attack = max((n for n in audit[a] if n in audit[b]), key=lambda n: audit[a][n]["auc"])
        out.append({"a": a, "b": b, "attack": attack,
                    **metrics.paired_difference(scores[a][attack], scores[b][attack], members,
                                                **_boot(config, f"{a}-{b}-{attack}"))})
    return out

"""ACC and AUC exactly as MedMNIST's evaluator defines them (medmnist/evaluator.py).

- binary: AUC of the positive-class probability; ACC thresholds that probability at 0.5.
- multi-class (and ordinal regression): AUC is the one-vs-rest macro mean over classes of
  the softmax scores; ACC is the argmax accuracy.
- multi-label: per-label AUC and per-label 0.5-threshold accuracy, each averaged over labels.
Scores are probabilities (softmax, or sigmoid for multi-label), never logits.
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import roc_auc_score


def _auc(y: np.ndarray, s: np.ndarray) -> float:
    # A class absent from a (tiny) split has no ROC; skip it rather than crash, like
    # MedMNIST would on a full split where it never happens.
    if y.min() == y.max():
        return math.nan
    return float(roc_auc_score(y, s))


def auc(task: str, labels: np.ndarray, scores: np.ndarray) -> float:
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    if task.startswith("multi-label"):
        per = [_auc(labels[:, i], scores[:, i]) for i in range(labels.shape[1])]
    elif task == "binary-class":
        per = [_auc(labels, scores[:, -1])]
    else:
        per = [_auc((labels == i).astype(int), scores[:, i]) for i in range(scores.shape[1])]
    per = [p for p in per if not math.isnan(p)]
    return float(np.mean(per)) if per else math.nan


def predict_labels(task: str, scores: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """The decision ACC scores: per-label 0/1 (multi-label), the positive class above the
    threshold (binary), else the argmax."""
    scores = np.asarray(scores, dtype=np.float64)
    if task.startswith("multi-label"):
        return (scores > threshold).astype(np.int64)
    if task == "binary-class":
        return (scores[:, -1] > threshold).astype(np.int64)
    return scores.argmax(1)


def acc(task: str, labels: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> float:
    labels, pred = np.asarray(labels), predict_labels(task, scores, threshold)
    if task.startswith("multi-label"):  # the mean over labels of each label's accuracy
        return float(np.mean([(labels[:, i] == pred[:, i]).mean() for i in range(labels.shape[1])]))
    return float((labels == pred).mean())


def evaluate(task: str, labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    return {"acc": acc(task, labels, scores), "auc": auc(task, labels, scores)}

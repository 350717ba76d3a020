"""Step 6 of Knowledge Recycling: the Classification Accuracy Score (CAS).

The only place the test split is read.  It runs once every choice has been made on the
validation split (epochs, checkpoint, knobs, filtering), and scores each method's saved model
on the real test split with MedMNIST's ACC and AUC.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from kr.data import ImageDataset
from kr.models import load_classifier
from kr.train import score

log = logging.getLogger(__name__)


def evaluate_models(data: ImageDataset, models: dict[str, Path], device: torch.device) -> dict:
    """{method: {"val": {acc, auc}, "test": {acc, auc}}} for every saved classifier folder."""
    out = {}
    for method, folder in models.items():
        model = load_classifier(folder).to(device)
        out[method] = {"val": score(model, data.val, data.task),
                       "test": score(model, data.test, data.task)}
        log.info("%s: test acc %.4f auc %.4f", method, out[method]["test"]["acc"],
                 out[method]["test"]["auc"])
    return out


def cas_gap_pp(methods: dict) -> float | None:
    """KR's test accuracy minus the real-trained teacher's, in percentage points (paper Table 2)."""
    if "kr" not in methods or "real" not in methods:
        return None
    return round(100 * (methods["kr"]["test"]["acc"] - methods["real"]["test"]["acc"]), 2)

"""benchmarks/labels.py: canary AUC differences paired over canaries and averaged over seeds."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def labels():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("labels", ROOT / "benchmarks" / "labels.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.RESAMPLES = 300
    return module


def _rows(seeds=3, m=80, leak=2.0):
    rows = []
    for s in range(seeds):
        rng = np.random.default_rng(s)
        bits = rng.random(m) < 0.5
        scores = {"kr": (rng.normal(size=m) + leak * bits).tolist(), "regen": rng.normal(size=m).tolist()}
        rows.append({"bits": bits.tolist(), "kind": [0] * m, "scores": scores,
                     "test": {"kr": {"acc": 0.9}, "regen": {"acc": 0.8}}})
    return rows


def test_a_model_against_itself_differs_by_exactly_zero(labels):
    d, ci = labels.paired_over_seeds(_rows(), "kr", "kr")
    assert d == 0 and ci == [0.0, 0.0]


def test_a_leaking_model_is_distinguishable_and_a_blind_one_is_not(labels):
    d, (lo, hi) = labels.paired_over_seeds(_rows(leak=2.0), "kr", "regen")
    assert d > 0.3 and lo > 0
    auc, (alo, ahi) = labels.auc_over_seeds(_rows(leak=2.0), "kr")
    assert alo < auc < ahi and auc > 0.8
    _, (lo, hi) = labels.paired_over_seeds(_rows(leak=0.0), "kr", "regen")
    assert lo < 0 < hi
    # the Mann–Whitney AUC counts ties half: a constant score is 0.5
    assert labels._auc(np.zeros(6), np.array([1, 0, 1, 0, 1, 0], bool)) == pytest.approx(0.5)


def test_a_student_identical_to_another_is_drawn_once_and_said(labels, monkeypatch, tmp_path):
    import kr.report.figures as figures

    seen = {}
    monkeypatch.setattr(figures, "canary_frontier",
                        lambda points, path, subtitle: seen.update(points=points, subtitle=subtitle) or path)
    rows = _rows(seeds=2)
    for r in rows:  # a one-network teacher: kr-one's labels, and so its scores, are kr's
        r["scores"]["kr-one"] = list(r["scores"]["kr"])
        r["test"]["kr-one"] = r["test"]["kr"]
        r["seed"] = len(seen) + rows.index(r)
    labels.figure(rows, tmp_path / "f.png")
    assert [p["method"] for p in seen["points"]] == ["kr", "regen"]
    assert seen["subtitle"] == "mean over seeds 0, 1 (kr-one = kr)"

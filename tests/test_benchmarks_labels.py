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


def _table_rows(seeds=2, m=40):
    """Rows as benchmarks/table.py stores them: one per dataset × seed × method."""
    out = []
    for s, run in enumerate(_rows(seeds=seeds, m=m)):
        for method in ("regen", "real", "kr"):  # stored by name, not in a run's order
            scores = run["scores"].get(method, run["scores"]["kr"])
            out.append({"dataset": "digits", "seed": s, "method": method, "test_acc": 0.9, "test_auc": 0.95,
                        "cpu": "cpu", "commit": f"c{s}, d0", "canary_scores": scores, "canary_bits": run["bits"]})
    out.append({"dataset": "digits", "seed": 0, "method": "dpsgd-eps8", "test_acc": 0.8, "test_auc": 0.9,
                "cpu": "cpu", "commit": "c0", "canary_scores": None, "canary_bits": None})
    return out


def test_the_table_rows_are_the_one_store_of_a_runs_canary_scores(labels):
    runs = labels.runs_of(_table_rows())
    assert [(r["dataset"], r["seed"]) for r in runs] == [("digits", 0), ("digits", 1)]
    assert list(runs[0]["test"]) == ["real", "kr", "regen", "dpsgd-eps8"]  # a run's order
    assert set(runs[0]["scores"]) == {"real", "kr", "regen"} and runs[0]["commits"] == {"c0", "d0"}
    text = labels.table_text(runs)
    assert "| digits | kr | 0,1 |" in text and text.endswith("commits c0, c1, d0.")
    bad = _table_rows()
    bad[0]["canary_bits"] = [not b for b in bad[0]["canary_bits"]]
    with pytest.raises(ValueError, match="canaries are not the run's"):
        labels.runs_of(bad)

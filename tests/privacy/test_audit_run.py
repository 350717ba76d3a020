"""`kr audit` end to end on a tiny run: reference runs replay the pipeline on pool halves, every
artifact is written, results.json gains the audit, and a rerun trains nothing again."""

import json

import numpy as np
import pytest

from kr import audit, pipeline
from kr.config import load_config
from kr.errors import KRError
from kr.privacy import scoring
from tests.conftest import make_arrays, write_npz

pytestmark = pytest.mark.slow  # end to end: tiny runs and their audit


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("audit")
    small = str(write_npz(tmp / "small.npz", make_arrays(n=(40, 20, 20))))
    run = tmp / "run"
    config = load_config("tiny", data={"dataset": small}, overrides=["baselines=synthetic"])
    shipped = pipeline.run(config, out=run, device="cpu")
    results = audit.audit(run, ["audit.targets=real,kr"], device="cpu")
    return run, config, shipped, results


def test_run_has_reference_free_audit_and_memorisation(audited):
    run, _, shipped, _ = audited
    assert set(shipped["audit_shipped"]) == {"real", "kr", "synthetic"}
    assert set(shipped["audit_shipped"]["kr"]) == set(scoring.FREE_ATTACKS)
    assert shipped["memorisation"]["samples"] >= 1 and "pixel" in shipped["memorisation"]
    assert (run / "audit/shipped/closest_pairs.png").is_file()


def test_audit_results_follow_the_schema(audited):
    run, _, _, results = audited
    for target in ("real", "kr"):
        for attack in (*scoring.FREE_ATTACKS, *scoring.REFERENCE_ATTACKS):
            row = results["audit"][target][attack]
            assert {"auc", "auc_ci", "tpr_at_0.1%fpr", "tpr_at_1%fpr", "references"} <= set(row)
            assert 0 <= row["auc"] <= 1 and row["auc_ci"][0] <= row["auc_ci"][1]
            assert row["tpr_at_0.1%fpr"] is None  # 60 pool images: not resolvable
            assert row["references"] == (2 if attack in scoring.REFERENCE_ATTACKS else 0)
            assert len(row["auc_per_target"]) == 4
        assert set(results["audit_shipped"][target]) == {*scoring.FREE_ATTACKS, *scoring.SHIPPED_REFERENCE_ATTACKS}
        assert results["audit"][target]["loss"]["points"] == 60
    # a model outside audit.targets keeps `kr run`'s reference-free figures, and no more
    assert "synthetic" not in results["audit"]
    assert set(results["audit_shipped"]["synthetic"]) == set(scoring.FREE_ATTACKS)
    assert results["audit"]["kr"]["loss"]["auc_below_real"] == pytest.approx(
        results["audit"]["real"]["loss"]["auc"] - results["audit"]["kr"]["loss"]["auc"])
    assert json.loads((run / "results.json").read_text())["audit"] == json.loads(json.dumps(results["audit"]))


def test_artifacts_let_every_figure_be_recomputed(audited):
    run, _, _, results = audited
    folder = run / "audit"
    with np.load(folder / "membership.npz") as m:
        assert m["runs"].tolist() == ["shipped", "r0", "r1", "r2", "r3"]
        matrix = m["membership"]
        assert matrix.shape == (5, 60) and (matrix[0] == (np.arange(60) < 40)).all()
        assert (matrix[1:].sum(0) == 2).all()
    with np.load(folder / "signals.npz") as s, np.load(folder / "scores.npz") as sc:
        assert s["r2/kr"].shape == (60, 2, 2) and s["shipped/real"].shape == (60, 2, 2)
        scores = sc["procedure/kr/lira-offline-fixed"]
        from kr.privacy import metrics
        assert metrics.auc(scores, matrix[1:]) == pytest.approx(
            results["audit"]["kr"]["lira-offline-fixed"]["auc"])
    for name in ("procedure-real.png", "procedure-kr.png", "shipped-kr.png"):
        assert (folder / "roc" / name).stat().st_size > 10_000
    ref = json.loads((folder / "references/r1/results.json").read_text())
    assert ref["preset"] == "tiny" and set(ref["methods"]) == {"real", "kr"}
    manifest = json.loads((folder / "references/r1/manifest.json").read_text())
    assert manifest["dataset"]["splits"]["train"] == int(matrix[2].sum())


def test_rerun_trains_nothing_and_kr_run_keeps_the_audit(audited, caplog):
    run, config, _, results = audited
    caplog.set_level("INFO", logger="kr")
    again = audit.audit(run, ["audit.targets=real,kr"], device="cpu")
    assert again["audit"] == json.loads(json.dumps(results["audit"]))
    trained = [r.message for r in caplog.records if r.message.startswith(("teacher: best", "student "))]
    assert not trained, trained
    rerun = pipeline.run(config, out=run, device="cpu")
    assert rerun["audit"]["kr"]["rmia-online"]["auc"] == results["audit"]["kr"]["rmia-online"]["auc"]
    assert rerun["audit_shipped"] == json.loads(json.dumps(results["audit_shipped"]))


def test_bad_requests_are_clear_errors(audited, tmp_path):
    run, _, _, _ = audited
    with pytest.raises(KRError, match="out of range"):
        audit.audit(run, ["audit.targets=real"], device="cpu", only=(7,))
    with pytest.raises(KRError, match="not in this run"):
        audit.audit(run, ["audit.targets=regen"], device="cpu", only=(0,))
    with pytest.raises(KRError, match="kr run"):
        audit.audit(tmp_path, device="cpu")


def test_cli_prints_both_experiments(audited):
    from tests.test_cli import kr

    run, _, _, _ = audited
    proc = kr("audit", str(run), "--set", "audit.targets=real,kr", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    for text in ("experiment 1 — the procedure: 4 runs", "experiment 2 — the shipped model",
                 "lira-offline-fixed", "rmia-online", "not resolvable", "memorisation (", "report: "):
        assert text in proc.stdout, text
    assert "teacher: best" not in proc.stderr  # every reference run was cached

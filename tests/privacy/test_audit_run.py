"""`kr audit` end to end on a tiny run: its opt-in stages join the run's graph, reference runs
replay the pipeline on pool halves, every artifact is written, results.json gains the audit
from its one writer, and a rerun trains nothing again."""

import dataclasses
import json

import numpy as np
import pytest

from kr import audit, pipeline
from kr.pipeline import audit as kr_audit
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
    results = kr_audit(run, ["audit.targets=real,kr"], device="cpu")
    return run, config, shipped, results


def test_run_has_reference_free_audit_and_memorisation(audited):
    run, _, shipped, _ = audited
    assert set(shipped["audit_shipped"]) == {"real", "kr", "synthetic"}
    assert set(shipped["audit_shipped"]["kr"]) == set(scoring.FREE_ATTACKS)
    assert shipped["memorisation"]["samples"] >= 1 and "pixel" in shipped["memorisation"]
    assert (run / "audit/shipped/closest_pairs.png").is_file()


# 4 runs: one "in" and one "out" reference per image, where per-image variances do not exist
AT_FOUR = {"lira-online-fixed", "lira-offline-fixed", "rmia-online", "rmia-offline"}


def test_audit_results_follow_the_schema(audited):
    run, _, _, results = audited
    for target in ("real", "kr"):
        assert set(results["audit"][target]) == {*scoring.FREE_ATTACKS, *AT_FOUR}
        for attack, row in results["audit"][target].items():
            assert {"auc", "auc_ci", "tpr_at_0.1%fpr", "tpr_at_1%fpr", "references"} <= set(row)
            assert 0 <= row["auc"] <= 1 and row["auc_ci"][0] <= row["auc_ci"][1]
            assert row["tpr_at_0.1%fpr"] is None  # 60 pool images: not resolvable
            assert row["references"] == (2 if attack in scoring.REFERENCE_ATTACKS else 0)
            assert len(row["auc_per_target"]) == 4 and row["targets"] == 4
            assert min(row["auc_per_target"]) <= row["auc_per_target_mean"] <= max(row["auc_per_target"])
        assert set(results["audit_shipped"][target]) == {*scoring.FREE_ATTACKS, *scoring.SHIPPED_REFERENCE_ATTACKS}
        assert results["audit"][target]["loss"]["points"] == 60
    skipped = results["audit_meta"]["attacks_skipped"]["procedure"]
    assert set(skipped) == {"lira-online", "lira-offline"} and "1 and 1" in skipped["lira-online"]
    assert len(results["audit_meta"]["rmia"]["a"]["kr"]["procedure"]) == 4
    # a model outside audit.targets keeps `kr run`'s reference-free figures, and no more
    assert "synthetic" not in results["audit"]
    assert set(results["audit_shipped"]["synthetic"]) == set(scoring.FREE_ATTACKS)
    assert results["audit"]["kr"]["loss"]["auc_below_real"] == pytest.approx(
        results["audit"]["real"]["loss"]["auc"] - results["audit"]["kr"]["loss"]["auc"])
    assert json.loads((run / "results.json").read_text())["audit"] == json.loads(json.dumps(results["audit"]))


def test_artifacts_let_every_figure_be_recomputed(audited):
    run, _, _, results = audited
    folder = run / "audit" / "attacks"
    with np.load(folder / "membership.npz") as m:
        assert m["runs"].tolist() == ["shipped", "r0", "r1", "r2", "r3"]
        matrix = m["membership"]
        assert matrix.shape == (5, 60) and (matrix[0] == (np.arange(60) < 40)).all()
        assert (matrix[1:].sum(0) == 2).all()
    with np.load(folder / "signals.npz") as s, np.load(folder / "scores.npz") as sc:
        # an .npz dataset never trains with flips; the tiny preset crops with 4-pixel padding: 9 shifts
        assert s["r2/kr"].shape == (60, 9, 2) and s["shipped/real"].shape == (60, 9, 2)
        scores = sc["procedure/kr/lira-offline-fixed"]
        from kr.privacy import metrics
        assert metrics.auc(scores, matrix[1:]) == pytest.approx(
            results["audit"]["kr"]["lira-offline-fixed"]["auc"])
    for name in ("procedure-real.png", "procedure-kr.png", "shipped-kr.png"):
        assert (folder / "roc" / name).stat().st_size > 10_000
    ref = json.loads((run / "audit/references/r1/run/results.json").read_text())
    assert ref["preset"] == "tiny" and set(ref["methods"]) == {"real", "kr"}
    manifest = json.loads((run / "audit/references/r1/run/manifest.json").read_text())
    assert manifest["dataset"]["splits"]["train"] == int(matrix[2].sum())


def test_rerun_trains_nothing_and_kr_run_keeps_the_audit(audited, caplog):
    run, config, _, results = audited
    caplog.set_level("INFO", logger="kr")
    again = kr_audit(run, ["audit.targets=real,kr"], device="cpu")
    assert again["audit"] == json.loads(json.dumps(results["audit"]))
    trained = [r.message for r in caplog.records if r.message.startswith(("teacher: best", "student "))]
    assert not trained, trained
    # `kr run` reads the audit back (its record is current: it read today's models) …
    rerun = pipeline.run(config, out=run, device="cpu")
    assert rerun["audit"]["kr"]["rmia-online"]["auc"] == results["audit"]["kr"]["rmia-online"]["auc"]
    assert rerun["audit_shipped"] == json.loads(json.dumps(results["audit_shipped"]))


def test_other_targets_reuse_the_reference_runs_stages(audited, tmp_path, caplog):
    """A reference run is a run directory of its own: asking for other targets reruns its stage,
    whose run trains only what it lacks (here nothing: the teacher is cached)."""
    import shutil

    run, _, _, _ = audited
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    caplog.set_level("INFO", logger="kr")
    fewer = kr_audit(copy, ["audit.targets=real"], device="cpu")
    assert set(fewer["audit"]) == {"real"}
    trained = [r.message for r in caplog.records if r.message.startswith(("teacher: best", "student "))]
    assert not trained, trained
    assert (copy / "audit/references/r0/run/methods/kr/model.safetensors").is_file()  # kept


def test_a_retrained_model_drops_the_audit_of_its_predecessor(audited, tmp_path):
    """No staleness check of its own: the attack's record names the contents of the models it
    read, so a run whose models changed since reads it back no more."""
    import shutil

    run, config, _, _ = audited
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    train = dataclasses.replace(config.teacher.train, lr=config.teacher.train.lr * 2)
    changed = pipeline.run(dataclasses.replace(config, teacher=dataclasses.replace(config.teacher, train=train)),
                           out=copy, device="cpu", stages=("teacher", "kr"))
    assert "audit" not in changed and "audit_meta" not in changed
    assert (copy / "audit/attacks/audit.json").is_file()  # kept, but not read: it audited other models


def test_bad_requests_are_clear_errors(audited, tmp_path):
    run, _, _, _ = audited
    with pytest.raises(KRError, match="not in this run"):
        kr_audit(run, ["audit.targets=regen"], device="cpu")
    with pytest.raises(KRError, match="kr run"):
        kr_audit(tmp_path, device="cpu")
    with pytest.raises(KRError, match="at least 2 canaries"):
        kr_audit(run, device="cpu", canaries=1)


def test_cli_prints_both_experiments(audited):
    from tests.test_cli import kr

    run, _, _, _ = audited
    proc = kr("audit", str(run), "--set", "audit.targets=real,kr", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    for text in ("experiment 1 — the procedure: 4 runs", "experiment 2 — the shipped model",
                 "lira-offline-fixed", "rmia-online", "not resolvable", "memorisation (", "report: ",
                 "left out: lira-online (needs ≥ 2 in"):
        assert text in proc.stdout, text
    assert "teacher: best" not in proc.stderr  # every reference run was cached


def test_queries_are_what_each_model_trained_on(audited):
    """The recorded queries: no flip for data that never trains with flips, the crop shifts of
    the models that trained with crops, the image alone for the ScatterNet DP model."""
    from kr.audit import model_queries

    run, config, _, results = audited
    queries = results["audit_meta"]["queries"]
    assert queries["real"] == queries["kr"] and len(queries["real"]) == 9
    assert queries["real"][0] == "image" and not any("flip" in q for q in queries["real"])
    data = audit.load_run(run)[1]
    assert model_queries(config, data, ("dpsgd-eps8",)) == {"dpsgd-eps8": ((0, 0, False),)}
    flipped = dataclasses.replace(data, hflip=True)
    assert len(model_queries(config, flipped, ("real",))["real"]) == 18


def test_audit_waits_for_or_refuses_a_kr_run_holding_the_lock(audited):
    """One writer of results.json: while `kr run` holds the run's lock, `kr audit` refuses (or,
    with wait, queues) before it writes anything, and results.json stays whole."""
    import threading
    import time

    from kr.rundir import RunLock

    run, _, _, _ = audited
    before = (run / "results.json").read_bytes()
    lock = RunLock(run)
    try:
        with pytest.raises(KRError, match="in use by another kr process"):
            kr_audit(run, ["audit.targets=real,kr"], device="cpu")
        assert (run / "results.json").read_bytes() == before
        done = {}
        worker = threading.Thread(target=lambda: done.update(r=kr_audit(
            run, ["audit.targets=real,kr"], device="cpu", wait=True)))
        worker.start()
        time.sleep(2)
        assert worker.is_alive() and not done  # queued behind the lock
    finally:
        lock.release()
    worker.join(600)
    assert done["r"]["audit"] and json.loads((run / "results.json").read_text())["audit"]


def test_a_model_changed_after_training_is_refused_or_retrained(audited, tmp_path, caplog):
    """A reference run is a cached pipeline: its changed model is retrained.  The shipped run's
    models are the user's: a changed one is refused by the audit (which trains none of the run's
    stages) and by `kr export`."""
    import shutil

    from kr.release import export

    run, _, _, _ = audited
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    teacher = copy / "teacher/model.safetensors"
    teacher.write_bytes(teacher.read_bytes()[:-8] + bytes(8))
    with pytest.raises(KRError, match="run/teacher/model.safetensors no longer matches"):
        kr_audit(copy, ["audit.targets=real,kr"], device="cpu")
    with pytest.raises(KRError, match="run/teacher/model.safetensors no longer matches"):
        export(copy, tmp_path / "release", "real")
    assert not (tmp_path / "release").exists()
    shutil.copy2(run / "teacher/model.safetensors", teacher)
    weights = copy / "audit/references/r1/run/methods/kr/model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + bytes(8))
    caplog.set_level("INFO", logger="kr")
    kr_audit(copy, ["audit.targets=real,kr"], device="cpu")
    assert "model.safetensors changed since the stage recorded it" in caplog.text
    assert [r for r in caplog.records if r.message.startswith("student kr")]  # retrained


def test_canary_audit_end_to_end(audited):
    """`kr audit --canaries`: canaries from the test split, bits saved, one run on train plus the
    included ones, every audited model bounded beside its ceiling; kr run keeps the result."""
    run, config, _, _ = audited
    # calibrated by the shipped run and experiment 1's reference runs (already trained: cached)
    settings = ["audit.targets=real,kr", "audit.canary_calibration=references"]
    results = kr_audit(run, settings, device="cpu", canaries=10)
    plant = run / "audit/canaries/plant"
    with np.load(plant / "canaries.npz") as c:
        bits, kind, index, label = c["bits"], c["kind"], c["index"], c["label"]
    assert len(bits) == 10 and kind.sum() == 2 and len(set(index)) == 10  # 25 % duplicated
    test_labels = audit.load_run(run)[1].test.labels.numpy()[index]
    assert ((label != test_labels) == (kind == 0)).all()  # the main type carries a wrong label
    manifest = json.loads((run / "audit/canaries/run/run/manifest.json").read_text())
    assert manifest["dataset"]["splits"] == {
        "train": 40 + int((bits & (kind == 0)).sum()) + 4 * int((bits & (kind == 1)).sum()),
        "val": 20, "test": 10}
    # the secrets are in the plant's folder only: no stage record or result carries them
    for record in (plant / "stage.json", run / "audit/canaries/score/stage.json", run / "results.json"):
        assert "bits" not in record.read_text()
    for model in ("real", "kr"):
        row = results["canary"][model]
        for k in ("mislabelled", "duplicated"):
            assert 0 <= row[k]["eps_lb"] <= row[k]["ceiling_at_r"] <= row[k]["ceiling"]
            assert row[k]["m"] == (8 if k == "mislabelled" else 2)
    assert results["canary_meta"]["queries"]["real"][0] == "image"
    # each canary calibrated only by the runs that never saw its image: the shipped run always,
    # and about half of experiment 1's four
    assert results["canary_meta"]["calibration_runs"] == [".", *(f"audit/references/r{i}/run" for i in range(4))]
    assert 1 <= results["canary_meta"]["calibration_out_per_canary"]["min"] <= 5
    assert results["canary"]["real"]["mislabelled"]["auc_ci"] is None or \
        len(results["canary"]["real"]["mislabelled"]["auc_ci"]) == 2
    assert [(c["a"], c["b"]) for c in results["canary_meta"]["comparisons"]] == [("kr", "real")]
    rerun = pipeline.run(config, out=run, device="cpu")  # read back: its record is current
    assert rerun["canary"] == json.loads(json.dumps(results["canary"]))
    assert rerun["audit"] == json.loads(json.dumps(results["audit"]))  # both audits, one writer
    from tests.test_cli import kr

    args = ["--set", "audit.targets=real,kr", "--set", "audit.canary_calibration=references", "--device", "cpu"]
    proc = kr("audit", str(run), "--canaries", "10", *args)
    assert proc.returncode == 0, proc.stderr
    assert "canary audit (one run, 10 canaries" in proc.stdout and "mislabelled (8)" in proc.stdout
    assert "teacher: best" not in proc.stderr  # the canary run was cached, and its bits reused
    with np.load(plant / "canaries.npz") as c:
        assert (c["bits"] == bits).all()
    assert "Canary audit (one run" in (run / "report" / "report.md").read_text()
    # the rule was fixed with the bits: any other is refused, in one line, until fresh ones are planted
    for change, what in ((["--canaries", "10", "--set", "audit.canary_stress=0.5"], "audit.canary_stress"),
                         (["--canaries", "12"], "audit.canaries"),
                         (["--canaries", "10", "--set", "audit.canary_calibration=shipped"], "calibration")):
        proc = kr("audit", str(run), *change, *args[:2], *args[-2:])
        assert proc.returncode != 0 and f"{what}" in proc.stderr and "--replant" in proc.stderr, proc.stderr
        last = proc.stderr.strip().splitlines()[-1]
        assert "Traceback" not in proc.stderr and last.startswith("kr: error:") and what in last, proc.stderr
    import kr.canaries as canaries
    import kr.stages

    original = canaries.scorer_version
    canaries.scorer_version = lambda: "a scorer edited after the results were seen"
    try:
        with pytest.raises(KRError, match=r"scorer.*--replant"):
            kr_audit(run, settings, device="cpu", canaries=10)
    finally:
        canaries.scorer_version = original
    assert kr.stages.canaries is canaries
    fresh = kr_audit(run, settings, device="cpu", canaries=12, replant=True)
    with np.load(plant / "canaries.npz") as c:
        assert len(c["bits"]) == 12 and c["rule_hash"] != results["canary_meta"]["rule_hash"]
    assert fresh["canary_meta"]["canaries"] == 12

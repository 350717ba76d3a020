"""`kr export` → `kr predict`: the released folder alone reproduces the student's test
figures, carries a model card with the audit, and bad requests are clear errors."""

import csv
import json

import numpy as np
import pytest
from click.testing import CliRunner

from kr.cli import cli
from kr.errors import KRError
from kr.release import export, predict


@pytest.fixture
def released(finished_run, tmp_path):
    run, results, small = finished_run
    return export(run, tmp_path / "release"), results, small


def test_export_then_predict_reproduces_the_test_figures(released, tmp_path):
    folder, results, small = released
    assert sorted(p.name for p in folder.iterdir()) == ["MODEL_CARD.md", "config.json", "model.safetensors"]
    summary = predict(folder, small, tmp_path / "p.csv", "cpu")
    assert set(summary) == {"train", "val", "test"}
    for split in ("val", "test"):
        assert summary[split]["acc"] == pytest.approx(results["methods"]["kr"][split]["acc"], abs=1e-9)
        assert summary[split]["auc"] == pytest.approx(results["methods"]["kr"][split]["auc"], abs=1e-9)
    rows = list(csv.DictReader(open(tmp_path / "p.csv")))
    assert len(rows) == 80 and {"split", "index", "prediction", "label"} <= set(rows[0])
    probs = np.array([[float(r[k]) for k in r if k.startswith("p_")] for r in rows])
    assert np.allclose(probs.sum(1), 1, atol=1e-5)
    test = [r for r in rows if r["split"] == "test"]
    acc = np.mean([r["prediction"] == r["label"] for r in test])
    assert acc == pytest.approx(results["methods"]["kr"]["test"]["acc"])


def test_model_card_and_config_carry_the_audit(released):
    folder, results, _ = released
    card = (folder / "MODEL_CARD.md").read_text()
    for section in ("Intended use", "Data it never saw", "Performance", "Membership inference audit",
                    "Limitations"):
        assert f"## {section}" in card
    assert f"{results['methods']['kr']['test']['acc']:.4f}" in card
    assert f"{results['methods']['real']['test']['acc']:.4f}" in card
    for attack, r in results["audit_shipped"]["kr"].items():
        assert f"| {attack} | {r['references']} | {r['auc']:.3f}" in card
    release = json.loads((folder / "config.json").read_text())["release"]
    assert release["method"] == "kr" and release["input"]["size"] == 28 and release["audit"]


def test_predict_on_bare_images_without_labels(released, tmp_path):
    folder, _, _ = released
    np.save(tmp_path / "x.npy", np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8))
    assert predict(folder, tmp_path / "x.npy", tmp_path / "x.csv", "cpu") == {"all": {"n": 5}}
    rows = list(csv.DictReader(open(tmp_path / "x.csv")))
    assert len(rows) == 5 and "label" not in rows[0]


def test_bad_requests_are_clear_errors(finished_run, released, tmp_path):
    run, _, _ = finished_run
    folder, _, _ = released
    with pytest.raises(KRError, match="no evaluated model 'regen'"):
        export(run, tmp_path / "x", method="regen")
    with pytest.raises(KRError, match="not empty"):
        export(run, folder)
    np.save(tmp_path / "rgb.npy", np.zeros((2, 28, 28, 3), np.uint8))
    with pytest.raises(KRError, match="the model takes 1×28×28"):
        predict(folder, tmp_path / "rgb.npy", tmp_path / "o.csv", "cpu")
    np.savez(tmp_path / "other.npz", pixels=np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(KRError, match="neither"):
        predict(folder, tmp_path / "other.npz", tmp_path / "o.csv", "cpu")


def test_cli_export_predict(finished_run, tmp_path):
    run, results, small = finished_run
    r = CliRunner().invoke(cli, ["export", str(run), "--out", str(tmp_path / "rel"), "--method", "dpsgd-eps4"])
    assert r.exit_code == 0, r.output
    assert "DP-SGD" in (tmp_path / "rel" / "MODEL_CARD.md").read_text()
    r = CliRunner().invoke(cli, ["predict", str(tmp_path / "rel"), str(small), "--out", str(tmp_path / "p.csv"),
                                 "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert f"acc {results['methods']['dpsgd-eps4']['test']['acc']:.4f}" in r.output.splitlines()[2]


def test_onnx_export_when_available(finished_run, tmp_path):
    onnx = pytest.importorskip("onnx")
    run, _, _ = finished_run
    model = onnx.load(str(export(run, tmp_path / "o", onnx=True) / "model.onnx"))
    onnx.checker.check_model(model)
    assert [i.name for i in model.graph.input] == ["images"] and model.graph.output[0].name == "logits"

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
    # the tiny preset trains DP-SGD with seeded noise: its ε does not hold, so it is never released
    r = CliRunner().invoke(cli, ["export", str(run), "--out", str(tmp_path / "rel"), "--method", "dpsgd-eps4"])
    assert r.exit_code != 0 and "its ε does not hold" in str(r.exception) and not (tmp_path / "rel").exists()
    r = CliRunner().invoke(cli, ["export", str(run), "--out", str(tmp_path / "rel"), "--method", "synthetic"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(cli, ["predict", str(tmp_path / "rel"), str(small), "--out", str(tmp_path / "p.csv"),
                                 "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert f"acc {results['methods']['synthetic']['test']['acc']:.4f}" in r.output.splitlines()[2]


def test_predict_verifies_a_runs_own_model_folder(finished_run, tmp_path):
    import shutil

    run, results, small = finished_run
    stage = tmp_path / "kr"
    shutil.copytree(run / "methods" / "kr", stage)
    assert predict(stage, small, tmp_path / "p.csv", "cpu")["test"]["acc"] == pytest.approx(
        results["methods"]["kr"]["test"]["acc"])
    weights = stage / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + bytes(4))
    with pytest.raises(KRError, match="no longer matches what its stage recorded"):
        predict(stage, small, tmp_path / "p.csv", "cpu")
    record = json.loads((stage / "stage.json").read_text())
    record.pop("files")  # a record without hashes proves nothing
    (stage / "stage.json").write_text(json.dumps(record))
    with pytest.raises(KRError, match="records no content hashes"):
        predict(stage, small, tmp_path / "p.csv", "cpu")


def test_onnx_export_computes_what_the_pytorch_model_computes(finished_run, tmp_path):
    """The exported graph, run by onnxruntime on the run's real test images (and a batch size it
    was not traced with), gives PyTorch's logits to 1e-4 and the same predictions."""
    onnx = pytest.importorskip("onnx", reason="the onnx extra is not installed (pip install '.[onnx]')")
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install onnxruntime)")
    import torch

    from kr.data import load_dataset
    from kr.models import load_classifier

    run, _, small = finished_run
    folder = export(run, tmp_path / "o", onnx=True)
    model = onnx.load(str(folder / "model.onnx"))
    onnx.checker.check_model(model)
    assert [i.name for i in model.graph.input] == ["images"] and model.graph.output[0].name == "logits"
    images = load_dataset(str(small)).test.images[:7]
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(["logits"], {"images": images.numpy()})[0]
    with torch.no_grad():
        want = load_classifier(folder)(images).numpy()
    assert got.shape == want.shape == (7, 2)
    assert np.allclose(got, want, atol=1e-4, rtol=1e-4), np.abs(got - want).max()
    assert (got.argmax(1) == want.argmax(1)).all()


def test_predict_refuses_labels_it_cannot_score(released, tmp_path):
    folder, _, _ = released
    images = np.zeros((4, 28, 28), np.uint8)
    cases = [(np.array([0, 1, 5, 0]), r"labels must be in \[0, 1\].*found 0 … 5"),
             (np.array([0, 1, 0]), r"labels are shaped \(3,\), expected \(4,\)"),
             (np.array([0.0, 1.5, 0.0, 1.0]), "non-integer values")]
    for labels, message in cases:
        np.savez(tmp_path / "l.npz", images=images, labels=labels)
        with pytest.raises(KRError, match=message):
            predict(folder, tmp_path / "l.npz", tmp_path / "o.csv", "cpu")
    np.savez(tmp_path / "w.npz", images=images, labels=np.array([0.0, 1.0, 1.0, 0.0]))
    assert predict(folder, tmp_path / "w.npz", tmp_path / "o.csv", "cpu")["all"]["n"] == 4
    good = tmp_path / "good.npz"
    np.savez(good, images=images)
    (tmp_path / "truncated.npz").write_bytes(good.read_bytes()[:200])
    with pytest.raises(KRError, match="truncated or corrupt"):
        predict(folder, tmp_path / "truncated.npz", tmp_path / "o.csv", "cpu")


def _copy(folder, to):
    import shutil

    shutil.copytree(folder, to)
    return to


@pytest.mark.parametrize("change, message", [
    ({"num_classes": 10 ** 9}, r"num_classes = 1000000000 is not an integer in \[1, 1000\]"),
    ({"kwargs": {"width": 10 ** 6}}, r"width = 1000000 is not an integer in \[1, 256\]"),
    ({"kwargs": {"width": 16, "norm": "batch", "dropout": 0.0}}, "config and weights do not belong"),
    ({"arch": "__import__('os')"}, "is not one of resnet8"),
    ({"kwargs": {"evil": 1}}, "unexpected constructor arguments"),
])
def test_an_untrusted_model_folder_is_checked_before_anything_is_built(released, tmp_path, change, message):
    folder = _copy(released[0], tmp_path / "m")
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, **change}))
    with pytest.raises(KRError, match="config.json does not match the hash its release recorded"):
        predict(folder, released[2], tmp_path / "o.csv", "cpu")
    cfg.pop("release")  # a bare folder saved from Python: no record, the config itself is checked
    (folder / "config.json").write_text(json.dumps({**cfg, **change}))
    with pytest.raises(KRError, match=message):
        predict(folder, released[2], tmp_path / "o.csv", "cpu")


def test_a_malformed_config_json_is_a_clear_error(released, tmp_path):
    folder = _copy(released[0], tmp_path / "m")
    (folder / "config.json").write_text("{not json")
    with pytest.raises(KRError, match="not valid JSON"):
        predict(folder, released[2], tmp_path / "o.csv", "cpu")
    (folder / "config.json").write_text("[1, 2]")
    with pytest.raises(KRError, match="not a kr model config"):
        predict(folder, released[2], tmp_path / "o.csv", "cpu")


@pytest.mark.slow  # end to end: a whole tiny run
def test_names_from_user_data_are_escaped_for_each_format(tmp_path):
    """Label names and file names reach CSV, HTML and Markdown: each gets them literally."""
    from kr import pipeline
    from kr.config import load_config
    from tests.conftest import make_arrays, write_npz

    arrays = make_arrays(n=(40, 20, 20))
    arrays["label_names"] = np.array(["=HYPERLINK(\"http://x\")", "<img src=x onerror=alert(1)>"])
    data = write_npz(tmp_path / "a<b>.npz", arrays)
    config = load_config("tiny", data={"dataset": str(data)}, overrides=["baselines="])
    pipeline.run(config, out=tmp_path / "run", device="cpu")
    html = (tmp_path / "run" / "report" / "report.html").read_text()
    md = (tmp_path / "run" / "report" / "report.md").read_text()
    md = "".join(md.split("```")[::2])  # code blocks show their text literally
    assert "<img src=x" not in html and "a<b>" not in html and "a&lt;b&gt;" in html
    assert "<img src=x" not in md and "a<b>" not in md and "a&lt;b&gt;" in md
    folder = export(tmp_path / "run", tmp_path / "rel")
    card = (folder / "MODEL_CARD.md").read_text()
    assert "<img src=x" not in card and "a<b>" not in card
    predict(folder, data, tmp_path / "p.csv", "cpu")
    cells = [c for row in csv.reader(open(tmp_path / "p.csv")) for c in row]
    assert "'=HYPERLINK(\"http://x\")" in cells and not any(c.startswith("=") for c in cells)


@pytest.mark.slow  # end to end: a whole tiny run
def test_a_model_records_the_image_size_it_was_trained_on(tmp_path):
    from kr import pipeline
    from kr.config import load_config
    from tests.conftest import make_arrays, write_npz

    data = write_npz(tmp_path / "big.npz", make_arrays(n=(40, 20, 20), size=32))
    config = load_config("tiny", data={"dataset": str(data)}, overrides=["baselines="])
    pipeline.run(config, out=tmp_path / "run", device="cpu")
    folder = export(tmp_path / "run", tmp_path / "rel")
    assert json.loads((folder / "config.json").read_text())["release"]["input"]["size"] == 32
    assert predict(folder, data, tmp_path / "p.csv", "cpu")["test"]["n"] == 20


def test_predict_refuses_weights_changed_after_release(released, tmp_path):
    folder, _, small = released
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + bytes(4))
    with pytest.raises(KRError, match="does not match the hash its release recorded"):
        predict(folder, small, tmp_path / "p.csv", "cpu")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["release"].pop("weights_sha256")  # a release that records no hash proves nothing
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(KRError, match="records no hash of its weights"):
        predict(folder, small, tmp_path / "p.csv", "cpu")


def test_the_card_claims_a_dp_guarantee_only_for_secret_noise():
    from kr.release import _dp_text

    secret = _dp_text({"dp": {"epsilon": 8.0, "delta": 1e-5, "guarantee_holds": True, "noise": "secret"}})
    seeded = _dp_text({"dp": {"epsilon": 8.0, "delta": 1e-5, "guarantee_holds": False, "noise": "seeded"}})
    older = _dp_text({"dp": {"epsilon": 8.0, "delta": 1.8e-3}})  # a model from before the noise was recorded
    assert "formal (ε, δ) = (8.00, 1.0e-05)" in secret and "never stored" in secret
    assert "DOES NOT HOLD" in seeded and "formal" not in seeded
    assert "NOT ESTABLISHED" in older and "secret randomness" not in older


def test_a_secret_noise_dp_model_is_released_with_what_its_guarantee_leaves_out(tmp_path):
    from kr import pipeline
    from kr.config import load_config
    from tests.conftest import make_arrays, write_npz

    data = write_npz(tmp_path / "s.npz", make_arrays(n=(40, 20, 20)))
    config = load_config("tiny", data={"dataset": str(data)},
                         overrides=["baselines=dpsgd", "dpsgd.epsilons=4", "dpsgd.noise=secret"])
    pipeline.run(config, out=tmp_path / "run", device="cpu")
    card = (export(tmp_path / "run", tmp_path / "rel", method="dpsgd-eps4") / "MODEL_CARD.md").read_text()
    assert "formal (ε, δ) = (" in card and "never stored" in card
    for limit in ("several DP models", "voids the guarantee for them jointly", "validation images",
                  "treated as public", "not from a cryptographic generator", "δ adds up"):
        assert limit in card, limit


def test_the_card_shows_the_teacher_control_beside_the_bound_and_flags_a_failed_one(released):
    from kr.release import model_card

    folder, _, _ = released
    release = json.loads((folder / "config.json").read_text())["release"]
    bound = {"m": 100, "auc": 0.61, "auc_ci": [0.5, 0.7], "eps_lb": 0.0, "ceiling_at_r": 3.0}
    meta = {"canaries": 120, "delta": 1e-5}
    card = model_card({**release, "canary": {"mislabelled": bound}, "canary_meta": meta,
                       "teacher_canary": {"mislabelled": {**bound, "auc": 0.9, "eps_lb": 1.4}}})
    assert "| teacher (control) | mislabelled (100) | 0.900 [0.500, 0.700] | 1.40 | 3.00 |" in card
    assert "property of the training procedure" in card and "FAILED" not in card
    failed = model_card({**release, "canary": {"mislabelled": bound}, "canary_meta": meta,
                         "teacher_canary": {"mislabelled": bound}})
    assert "The control FAILED here" in failed


def test_a_kr_dp_card_says_what_its_labellers_epsilon_covers_and_what_it_does_not(released):
    from kr.release import model_card

    folder, _, _ = released
    release = json.loads((folder / "config.json").read_text())["release"]
    assert "NO formal guarantee" not in model_card(release)  # kr: no labeller recorded
    holds = model_card({**release, "method": "kr-dp", "labeller": {"model": "dpsgd-eps8", "epsilon": 7.99,
                                                                   "delta": 1e-5, "guarantee_holds": True}})
    assert "dpsgd-eps8" in holds and "ε = 7.99" in holds and "covered by that ε" in holds
    assert "The synthetic images are not" in holds and "NO formal guarantee" in holds
    seeded = model_card({**release, "method": "kr-dp", "labeller": {"model": "dpsgd-eps8", "epsilon": 7.99,
                                                                    "guarantee_holds": False}})
    assert "does NOT hold" in seeded and "covered by" not in seeded

"""The method registry (kr.methods): every method's stages, model folder and description, and
a new method registered in one place runs through the pipeline with no other edit."""

from pathlib import Path

import pytest

from kr import methods, pipeline
from kr.config import Config, load_config
from kr.graph import Stage
from kr.methods import METHODS, Method


def test_dp_models_are_named_by_their_epsilon():
    assert methods.dp_name(0.5) == "dpsgd-eps0.5" and methods.dp_name(8.0) == "dpsgd-eps8"
    assert methods.is_dp(methods.dp_name(1.0)) and not methods.is_dp("kr")
    assert methods.stage(methods.dp_name(8.0)) == "dpsgd"
    assert methods.stage_folder(methods.dp_name(8.0)) == "methods/dpsgd-eps8"


def test_every_method_maps_to_a_pipeline_stage_and_a_folder():
    names = pipeline.stage_names(load_config("cpu", overrides=["baselines=synthetic,regen,soft,dpsgd"]))
    for m in ("real", "kr", "synthetic", "regen", "soft", methods.dp_name(1.0)):
        assert methods.stage(m) in names
    assert methods.baselines() == ("synthetic", "regen", "soft", "kr-t1", "kr-t4", "kr-top1", "kr-one", "kr-dp",
                                   "dpsgd")
    assert Config().baselines == "synthetic,dpsgd" == methods.default_baselines()
    assert methods.folder(Path("run"), "real") == Path("run/teacher")
    assert methods.folder(Path("run"), "soft") == Path("run/methods/soft")


def test_only_the_teacher_and_dp_sgd_saw_real_images():
    assert [m for m in ("real", "kr", "synthetic", "regen", "soft", "dpsgd-eps8")
            if methods.saw_real_images(m)] == ["real", "dpsgd-eps8"]


def test_descriptions_name_dp_budget_and_students():
    assert "ε = 7.99" in methods.describe("dpsgd-eps8", {"epsilon": 7.991, "delta": 0.0018})
    assert methods.describe("dpsgd-eps8", {"epsilon": 8, "delta": 0.001, "model": "scatter-linear"}) \
        .startswith("DP-SGD scatter-linear, real images, ε = 8.00")
    assert methods.describe("kr", {}) == "GKD: regenerated + teacher labels"
    assert methods.describe("unknown", {}) == ""


# --- a new method is one registry entry --------------------------------------------------

def _majority_stages(config, method):
    return [Stage(f"methods/{method.name}", ("teacher",), ("seed",), _majority,
                  model=method.name, group=method.name)]


def _majority(ctx, inputs, folder, **params):
    """A toy method: the teacher's folder shipped again, under another name."""
    import shutil

    for f in inputs["teacher"].path.glob("*.safetensors"):
        shutil.copy(f, folder / f.name)
    shutil.copy(inputs["teacher"].path / "config.json", folder / "config.json")
    return {"best_epoch": -1, "copied": True}


@pytest.mark.slow  # end to end: a whole tiny run
def test_a_method_registered_alone_runs_through_the_pipeline(tmp_path, monkeypatch):
    monkeypatch.setitem(METHODS, "copy", Method("copy", "the teacher, copied", _majority_stages,
                                                fields=("best_epoch", "copied"), default=False))
    config = load_config("tiny", overrides=["baselines=copy", "teacher.train.epochs=1"])
    results = pipeline.run(config, out=tmp_path / "run", device="cpu", stages=("teacher", "copy", "audit"))
    assert results["methods"]["copy"]["copied"] is True
    assert results["methods"]["copy"]["test"] == results["methods"]["real"]["test"]  # same weights
    assert "copy" in results["audit_shipped"]
    assert methods.describe("copy", {}) == "the teacher, copied"
    with pytest.raises(Exception, match="baselines"):
        load_config("tiny", overrides=["baselines=nothing"])

"""The method registry: every method's stage, model folder and description, DP-SGD included."""

from pathlib import Path

from kr import methods
from kr.config import BASELINES
from kr.pipeline import STAGES


def test_dp_names_round_trip_through_the_registry():
    assert methods.dp_name(0.5) == "dpsgd-eps0.5" and methods.dp_name(8.0) == "dpsgd-eps8"
    assert methods.is_dp(methods.dp_name(1.0)) and not methods.is_dp("kr")
    assert methods.stage(methods.dp_name(8.0)) == "dpsgd"
    assert methods.stage_folder(methods.dp_name(8.0)) == "methods/dpsgd-eps8"


def test_every_method_maps_to_a_pipeline_stage_and_a_folder():
    for m in ("real", *methods.STUDENTS, methods.dp_name(1.0)):
        assert methods.stage(m) in STAGES
    assert set(BASELINES) | {"kr"} == set(methods.STUDENTS) | {"dpsgd"}
    assert methods.folder(Path("run"), "real") == Path("run/teacher")
    assert methods.folder(Path("run"), "soft") == Path("run/methods/soft")


def test_only_the_teacher_and_dp_sgd_saw_real_images():
    assert [m for m in ("real", *methods.STUDENTS, "dpsgd-eps8") if methods.saw_real_images(m)] == \
        ["real", "dpsgd-eps8"]


def test_descriptions_name_dp_budget_and_students():
    assert "ε = 7.99" in methods.describe("dpsgd-eps8", {"epsilon": 7.991, "delta": 0.0018})
    assert methods.describe("dpsgd-eps8", {"epsilon": 8, "delta": 0.001, "model": "scatter-linear"}) \
        .startswith("DP-SGD scatter-linear, real images, ε = 8.00")
    assert methods.describe("kr", {}) == "GKD: regenerated + teacher labels"
    assert methods.describe("unknown", {}) == ""

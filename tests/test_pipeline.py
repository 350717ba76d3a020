import json

import pytest

from kr import pipeline
from kr.config import load_config
from kr.rundir import stage_key


def test_stage_key_is_order_independent_and_sensitive():
    assert stage_key({"a": 1, "b": {"c": 2}}) == stage_key({"b": {"c": 2}, "a": 1})
    assert stage_key({"a": 1}) != stage_key({"a": 2})


@pytest.fixture
def small(tmp_path):
    """A 2-class MedMNIST-style file small enough for many end-to-end runs."""
    from tests.conftest import make_arrays, write_npz

    return str(write_npz(tmp_path / "small.npz", make_arrays(n=(40, 20, 20))))


def _key(out, stage):
    return json.loads((out / stage / "stage.json").read_text())["key"]


@pytest.mark.slow  # end to end: a whole tiny run
def test_rerun_reuses_and_config_change_reruns_only_downstream(tmp_path, caplog, small):
    caplog.set_level("INFO", logger="kr")
    out = tmp_path / "run"
    guided = ["generator.gan.teacher_ce=0.5", "generator.gan.teacher_bn=0.05"]
    config = load_config("tiny", overrides=guided, data={"dataset": small})
    first = pipeline.run(config, out=out, device="cpu")
    keys = {s: _key(out, s) for s in ("teacher", "generator", "quality", "selection", "tuning")}

    caplog.clear()
    second = pipeline.run(config, out=out, device="cpu")
    for stage in ("teacher", "judge", "generator", "quality", "selection", "tuning", "methods/kr",
                  "methods/synthetic", "methods/regen", "methods/soft", "evaluate"):
        assert f"{stage}: cached" in caplog.text, stage
    assert second["methods"] == first["methods"] and second["tuning"] == first["tuning"]  # cached

    # A tuning grid changes tuning and the students, not the checkpoint choice before it.
    caplog.clear()
    pipeline.run(load_config("tiny", overrides=[*guided, "select.threshold=0.0"], data={"dataset": small}),
                 out=out, device="cpu")
    for stage in ("teacher", "generator", "quality", "selection"):
        assert f"{stage}: cached" in caplog.text, stage
        assert _key(out, stage) == keys[stage]
    assert "tuning: cached" not in caplog.text and "methods/kr: cached" not in caplog.text

    # A new teacher redoes everything that reads it, the teacher-guided generator included.
    caplog.clear()
    changed = load_config("tiny", overrides=[*guided, "teacher.train.epochs=1"], data={"dataset": small})
    third = pipeline.run(changed, out=out, device="cpu", stages=("teacher", "generator", "quality"))
    assert "teacher: cached" not in caplog.text and "quality: cached" not in caplog.text
    assert "generator: cached" not in caplog.text and _key(out, "generator") != keys["generator"]
    assert third["methods"]["real"]["best_epoch"] == 0


@pytest.mark.slow  # end to end: a whole tiny run
def test_a_new_teacher_keeps_an_unguided_generator(tmp_path, caplog, small):
    caplog.set_level("INFO", logger="kr")
    stages, out = ("teacher", "generator", "quality"), tmp_path / "run"
    for unguided in (["generator.kind=diffusion"],
                     ["generator.gan.teacher_ce=0", "generator.gan.teacher_bn=0"]):
        pipeline.run(load_config("tiny", overrides=unguided, data={"dataset": small}),
                     out=out, device="cpu", stages=stages)
        key = _key(out, "generator")
        caplog.clear()
        pipeline.run(load_config("tiny", overrides=[*unguided, "teacher.train.epochs=1"],
                                 data={"dataset": small}), out=out, device="cpu", stages=stages)
        assert "teacher: cached" not in caplog.text and "quality: cached" not in caplog.text
        assert "generator: cached" in caplog.text and _key(out, "generator") == key


@pytest.mark.slow  # end to end: a whole tiny run
def test_generator_alone_trains_the_teacher_that_guides_it(tmp_path, small):
    out = tmp_path / "run"
    guided = ["generator.gan.teacher_ce=0.5", "generator.gan.teacher_bn=0.05"]
    pipeline.run(load_config("tiny", overrides=guided, data={"dataset": small}), out=out, device="cpu",
                 stages=("generator",))
    assert (out / "teacher" / "model.safetensors").is_file()
    assert (out / "generator" / "stage.json").is_file()
    # Unguided (the default), the generator needs no teacher, and the judge only judges.
    pipeline.run(load_config("tiny", data={"dataset": small}), out=tmp_path / "plain", device="cpu",
                 stages=("generator",))
    assert not (tmp_path / "plain" / "teacher").exists() and not (tmp_path / "plain" / "judge").exists()


def _untimed(x):
    """Results without wall-clock times, which differ between identical runs."""
    if isinstance(x, dict):
        return {k: _untimed(v) for k, v in x.items() if k != "seconds"}
    return [_untimed(v) for v in x] if isinstance(x, list) else x


@pytest.mark.slow  # end to end: a whole tiny run
def test_same_seed_twice_gives_identical_results(tmp_path, small):
    config = load_config("tiny", data={"dataset": small})
    a = pipeline.run(config, out=tmp_path / "a", device="cpu")
    b = pipeline.run(config, out=tmp_path / "b", device="cpu")
    for part in ("methods", "selection", "tuning", "cas_gap_pp"):
        assert _untimed(a[part]) == _untimed(b[part]), part
    assert a["generator"]["quality"] == b["generator"]["quality"]
    last = a["generator"]["checkpoints"][-1]["name"]
    for f in (f"generator/checkpoints/{last}/ema.safetensors", "methods/kr/model.safetensors"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()


class _Guard:
    """Stands in for the test split: its size may be read, its images and labels may not,
    until the final evaluation opens it."""

    def __init__(self, split):
        self._split, self.open, self.reads = split, False, 0

    def __len__(self):
        return len(self._split)

    def __getattr__(self, name):
        if not self.__dict__["open"]:
            raise AssertionError(f"test split read ({name}) before the final evaluation")
        self.__dict__["reads"] += 1
        return getattr(self._split, name)


@pytest.mark.slow  # end to end: a whole tiny run
def test_test_split_is_read_only_by_the_final_evaluation(tmp_path, monkeypatch, small):
    import dataclasses

    from kr import stages

    guard = {}
    real_prepare, real_evaluate = pipeline.prepare, stages.evaluate_models

    def prepare(config, data_dir):
        data = real_prepare(config, data_dir)
        guard["g"] = _Guard(data.test)
        return dataclasses.replace(data, test=guard["g"])

    def evaluate(data, models, device):
        guard["g"].open = True
        try:
            return real_evaluate(data, models, device)
        finally:
            guard["g"].open = False

    real_privacy = stages._audit_shipped

    def privacy(*args, **kw):  # the audit stage runs after evaluation: it may read test too
        guard["g"].open = True
        try:
            return real_privacy(*args, **kw)
        finally:
            guard["g"].open = False

    monkeypatch.setattr(pipeline, "prepare", prepare)
    monkeypatch.setattr(stages, "evaluate_models", evaluate)
    monkeypatch.setattr(stages, "_audit_shipped", privacy)
    results = pipeline.run(load_config("tiny", data={"dataset": small}), out=tmp_path / "r", device="cpu")
    assert guard["g"].reads > 0
    assert set(results["methods"]) == {"real", "kr", "synthetic", "regen", "soft", "dpsgd-eps8", "dpsgd-eps1"}
    for m in results["methods"].values():
        assert set(m["test"]) == {"acc", "auc"}
    gap = 100 * (results["methods"]["kr"]["test"]["acc"] - results["methods"]["real"]["test"]["acc"])
    assert results["cas_gap_pp"] == pytest.approx(gap, abs=0.01)


@pytest.mark.slow  # end to end: a whole tiny run
def test_baselines_are_configurable_kr_and_real_always_run(tmp_path, small):
    config = load_config("tiny", overrides=["baselines=synthetic", "generator.kind=diffusion"],
                         data={"dataset": small})
    results = pipeline.run(config, out=tmp_path / "r", device="cpu")
    assert set(results["methods"]) == {"real", "kr", "synthetic"}
    assert results["methods"]["synthetic"]["mode"] == "fixed"
    assert not results["methods"]["synthetic"]["soft_labels"]
    assert results["methods"]["kr"]["mode"] == "pool"  # diffusion, strategy auto
    assert results["selection"]["split"] == "val" and results["tuning"]["split"] == "val"
    names = [c["name"] for c in results["selection"]["candidates"]]
    assert results["selection"]["selected"] in names and len(names) == 2
    assert len(results["tuning"]["trials"]) == 3  # guidance 1, 2; threshold 0.3 at the best
    # guidance 2 without filtering is what selection already trained on this checkpoint: reused
    reused = [t for t in results["tuning"]["trials"] if t.get("reused")]
    chosen = next(c for c in results["selection"]["candidates"] if c["name"] == results["selection"]["selected"])
    assert len(reused) == 1 and reused[0]["knobs"] == {"guidance": 2.0} and reused[0]["val"] == chosen["val"]


def test_default_run_name_is_deterministic():
    config = load_config("tiny", seed=3, data={"dataset": "/data/my_set.npz"})
    assert pipeline.default_run_name(config) == "my_set-tiny-s3"


@pytest.mark.slow  # end to end: a whole tiny run
def test_multilabel_warning(tmp_path, caplog):
    import numpy as np

    from tests.conftest import make_arrays, write_npz

    arrays = make_arrays()
    for s in ("train", "val", "test"):
        n = len(arrays[f"{s}_images"])
        arrays[f"{s}_labels"] = (np.arange(n * 3).reshape(n, 3) % 2).astype(np.uint8)
    path = write_npz(tmp_path / "ml.npz", arrays)
    caplog.set_level("WARNING", logger="kr")
    config = load_config("tiny", overrides=["teacher.train.epochs=1"], data={"dataset": str(path)})
    results = pipeline.run(config, out=tmp_path / "run", device="cpu", stages=("teacher",))
    assert "multi-label" in caplog.text and "do not yet" in caplog.text
    # the teacher's test figures are MedMNIST's multi-label ACC/AUC of its own predictions
    import torch
    from sklearn.metrics import roc_auc_score

    from kr.data import load_dataset
    from kr.models import load_classifier

    data = load_dataset(str(path))
    probs = torch.sigmoid(load_classifier(tmp_path / "run" / "teacher")(data.test.images)).detach().numpy()
    y = data.test.labels.numpy()
    auc = np.mean([roc_auc_score(y[:, j], probs[:, j]) for j in range(3)])
    acc = ((probs > 0.5) == y).mean()
    assert results["methods"]["real"]["test"]["auc"] == pytest.approx(auc, abs=1e-6)
    assert results["methods"]["real"]["test"]["acc"] == pytest.approx(acc, abs=1e-6)
    from kr.errors import KRError

    with pytest.raises(KRError, match="multi-label datasets are not supported yet"):
        pipeline.run(config, out=tmp_path / "run", device="cpu")


@pytest.mark.parametrize("device", ["cuda"])
def test_cuda_without_gpu_is_a_clear_error(device, tmp_path):
    import torch

    from kr.errors import KRError

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(KRError, match="no CUDA GPU"):
        pipeline.run(load_config("tiny"), out=tmp_path / "r", device=device)
    assert not (tmp_path / "r").exists()

import json

import pytest

from kr import pipeline
from kr.config import load_config
from kr.rundir import stage_key


def test_stage_key_is_order_independent_and_sensitive():
    assert stage_key({"a": 1, "b": {"c": 2}}) == stage_key({"b": {"c": 2}, "a": 1})
    assert stage_key({"a": 1}) != stage_key({"a": 2})


def test_rerun_reuses_and_config_change_reruns(tmp_path, caplog):
    caplog.set_level("INFO", logger="kr")
    out = tmp_path / "run"
    config = load_config("tiny", overrides=["teacher.train.epochs=1"])
    first = pipeline.run(config, out=out, device="cpu")
    gen_key = json.loads((out / "generator/stage.json").read_text())["key"]
    key = json.loads((out / "teacher/stage.json").read_text())["key"]

    caplog.clear()
    second = pipeline.run(config, out=out, device="cpu")
    for stage in ("teacher", "generator", "quality"):
        assert f"{stage}: cached" in caplog.text
    assert second["methods"] == first["methods"]

    caplog.clear()
    changed = load_config("tiny", overrides=["teacher.train.epochs=2"])
    third = pipeline.run(changed, out=out, device="cpu")
    assert "teacher: cached" not in caplog.text
    assert json.loads((out / "teacher/stage.json").read_text())["key"] != key
    # the generator does not depend on the teacher: kept; its quality, judged by the teacher, is redone
    assert "generator: cached" in caplog.text and "quality: cached" not in caplog.text
    assert json.loads((out / "generator/stage.json").read_text())["key"] == gen_key
    assert third["methods"]["real"]["best_epoch"] in (0, 1)
    history = json.loads((out / "teacher/metrics.json").read_text())["history"]
    assert len(history) == 2


def test_same_seed_twice_gives_identical_metrics(tmp_path):
    config = load_config("tiny", overrides=["teacher.train.epochs=1"])
    a = pipeline.run(config, out=tmp_path / "a", device="cpu")
    b = pipeline.run(config, out=tmp_path / "b", device="cpu")
    assert a["methods"] == b["methods"]
    assert a["generator"]["quality"] == b["generator"]["quality"]
    last = a["generator"]["checkpoints"][-1]["name"]
    ema = f"generator/checkpoints/{last}/ema.safetensors"
    assert (tmp_path / "a" / ema).read_bytes() == (tmp_path / "b" / ema).read_bytes()


def test_default_run_name_is_deterministic():
    config = load_config("tiny", seed=3, data={"dataset": "/data/my_set.npz"})
    assert pipeline.default_run_name(config) == "my_set-tiny-s3"


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
    assert 0 <= results["methods"]["real"]["test"]["auc"] <= 1
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

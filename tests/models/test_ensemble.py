import json

import pytest
import torch
from torch.nn import functional as F

from kr.config import load_config
from kr.errors import ConfigError, KRError
from kr.models import Ensemble, build_model, load_classifier, save_classifier
from kr.teacher import train_teacher
from tests.toys import toy_dataset


def _members(n: int, classes: int = 3):
    return [build_model("resnet8", 1, classes, seed=i, width=4).eval() for i in range(n)]


def test_softmax_of_the_output_is_the_members_average():
    members = _members(3)
    x = torch.randn(5, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = torch.stack([F.softmax(m(x), 1) for m in members]).mean(0)
        got = F.softmax(Ensemble(members)(x), 1)
        # at any temperature the distillation target is a sharpened/flattened average
        assert torch.allclose(got, expected, atol=1e-6)
        one = Ensemble(members[:1])
        assert torch.allclose(F.softmax(one(x), 1), F.softmax(members[0](x), 1), atol=1e-6)
    assert Ensemble(members).features(x).shape == (5, 3 * members[0].feature_dim)


def test_multi_label_averages_sigmoids():
    members = _members(2, classes=4)
    x = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = torch.stack([torch.sigmoid(m(x)) for m in members]).mean(0)
        assert torch.allclose(torch.sigmoid(Ensemble(members, "sigmoid")(x)), expected, atol=1e-5)


def test_saved_ensemble_loads_and_a_mismatch_is_refused(tmp_path):
    ens = Ensemble(_members(2))
    save_classifier(ens, tmp_path / "e", "resnet8", 1, 3, width=4)
    loaded = load_classifier(tmp_path / "e")
    x = torch.randn(2, 1, 28, 28)
    assert isinstance(loaded, Ensemble) and len(loaded.members) == 2
    with torch.no_grad():
        assert torch.equal(loaded(x), ens(x))
    cfg = json.loads((tmp_path / "e" / "config.json").read_text())
    (tmp_path / "e" / "config.json").write_text(json.dumps({**cfg, "members": 3}))
    with pytest.raises(KRError, match="members.2"):
        load_classifier(tmp_path / "e")
    (tmp_path / "e" / "config.json").write_text(json.dumps({**cfg, "average": "median"}))
    with pytest.raises(KRError, match="average"):
        load_classifier(tmp_path / "e")


def test_members_out_of_range_is_a_config_error():
    with pytest.raises(ConfigError, match="members"):
        load_config("tiny", overrides=["teacher.members=-1"])
    with pytest.raises(ConfigError, match="members"):
        load_config("tiny", overrides=["teacher.members=33"])
    with pytest.raises(ConfigError, match="scatter-cnn"):  # DP-SGD's "teacher architecture" model
        load_config("tiny", overrides=["teacher.model.arch=scatternet", "dpsgd.model=cnn"])


def test_teacher_ensemble_extends_the_single_teacher(tmp_path):
    """Member 0 is the single teacher, byte for byte; the others differ; the ensemble's
    validation metrics are its own, and a finished member is not trained again."""
    data = toy_dataset()
    single = load_config("tiny", overrides=["teacher.train.epochs=3"])
    ensemble = load_config("tiny", overrides=["teacher.train.epochs=3", "teacher.members=2"])
    train_teacher(data, single, tmp_path / "one", torch.device("cpu"))
    out = train_teacher(data, ensemble, tmp_path / "two", torch.device("cpu"))
    one = load_classifier(tmp_path / "one")
    two = load_classifier(tmp_path / "two")
    state0 = {k: v for k, v in two.members[0].state_dict().items()}
    assert all(torch.equal(state0[k], v) for k, v in one.state_dict().items())
    assert not torch.equal(two.members[1].stem[0].weight, two.members[0].stem[0].weight)
    assert [m["seed"] for m in out["members"]][0] != out["members"][1]["seed"]
    assert 0 <= out["val"]["acc"] <= 1
    # resumes: a finished member's files are reused, not retrained
    stamp = (tmp_path / "two" / "members" / "1" / "model.safetensors").stat().st_mtime_ns
    train_teacher(data, ensemble, tmp_path / "two", torch.device("cpu"))
    assert (tmp_path / "two" / "members" / "1" / "model.safetensors").stat().st_mtime_ns == stamp


def test_scatternet_teacher_trains_without_noise(tmp_path):
    """teacher.model.arch=scatternet: DP-SGD's model (fixed scattering, trained head) as a
    non-private teacher; it learns the toy task, saves and loads as one."""
    data = toy_dataset()
    config = load_config("tiny", overrides=["teacher.model.arch=scatternet", "teacher.model.head=cnn",
                                            "teacher.model.width=8", "teacher.train.epochs=4",
                                            "teacher.train.lr=0.05"])
    out = train_teacher(data, config, tmp_path / "t", torch.device("cpu"))
    model = load_classifier(tmp_path / "t")
    assert type(model).__name__ == "ScatterNet" and model.head_kind == "cnn"
    assert out["val"]["acc"] > 0.6  # 3 classes: chance is 1/3


def test_auto_members_is_an_ensemble_of_three_on_small_data_fixed_for_the_run(tmp_path):
    """teacher.members=0 (the default): 3 below SMALL_TRAIN real train images, else 1; the run
    resolves it once from its data, so config.yaml and an audit's replays on pool halves (which
    may be smaller) read the run's count, not their own."""
    from kr import pipeline
    from kr.config import SMALL_TRAIN, Config
    from kr.rundir import read_config_tree
    from tests.conftest import make_arrays, write_npz

    t = Config().teacher
    assert t.members == 0 and t.members_for(SMALL_TRAIN - 1) == 3 and t.members_for(SMALL_TRAIN) == 1
    assert load_config("cpu", overrides=["teacher.members=2"]).teacher.members_for(10) == 2
    resolved = Config().resolved(546)
    assert resolved.teacher.members == 3 and resolved.resolved(10_000) == resolved  # fixed once
    small = write_npz(tmp_path / "s.npz", make_arrays(n=(40, 20, 20)))
    config = load_config("tiny", data={"dataset": str(small)}, overrides=["teacher.members=0"])
    pipeline.run(config, out=tmp_path / "run", device="cpu", stages=("teacher",))
    assert read_config_tree(tmp_path / "run")["teacher"]["members"] == 3
    assert len(load_classifier(tmp_path / "run" / "teacher").members) == 3

"""The stages layer (kr.stages): one writer of results.json, and a new audit added in one place."""

import ast
import dataclasses
from pathlib import Path

import pytest
import torch

from kr import pipeline, stages
from kr.config import load_config
from kr.graph import Stage
from kr.methods import stage_folder
from kr.rundir import load_verified


def test_results_json_has_one_writer():
    """Only the graph's final step writes results.json; every other stage publishes its part."""
    src = Path(stages.__file__).parent
    writers = []
    for path in src.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value == "results.json":
                writers.append(path.relative_to(src).as_posix())
    readers = {"rundir.py", "audit.py", "report/document.py", "release.py", "cli.py"}
    assert [w for w in writers if w not in readers] == ["stages.py"], writers
    text = (src / "stages.py").read_text()
    assert text.count('write_json(folder / "results.json"') == 1


@pytest.fixture
def small(tmp_path):
    from tests.conftest import make_arrays, write_npz

    return str(write_npz(tmp_path / "small.npz", make_arrays(n=(40, 20, 20))))


def _toy_audit(config, targets, graph):
    """A toy audit: one opt-in stage that reads every target and publishes its parameter counts."""
    return [Stage("audit/toy", tuple(stage_folder(m) for m in targets), ("seed",), _count,
                  params={"methods": list(targets)}, opt_in=True, trains=False, publishes=_publish_toy)]


def _count(ctx, inputs, folder, methods):
    return {m: sum(p.numel() for p in load_verified(inputs[stage_folder(m)].path).parameters()) for m in methods}


def _publish_toy(results, done):
    results["toy"] = done.outputs


@pytest.mark.slow  # a tiny teacher, trained once
def test_a_toy_audit_added_in_one_place_runs_as_a_stage_of_the_run(tmp_path, monkeypatch, small):
    monkeypatch.setattr(stages, "AUDITS", [*stages.AUDITS, _toy_audit])
    config = load_config("tiny", data={"dataset": small}, overrides=["baselines=", "teacher.train.epochs=1",
                                                                         "audit.targets=real"])
    run = tmp_path / "run"
    plain = pipeline.run(config, out=run, device="cpu", stages=("teacher",))
    assert "toy" not in plain  # opt-in: a request that does not name it never runs it
    audited = pipeline.run(config, out=run, device="cpu", stages=("teacher",), audits=("audit/toy",))
    assert set(audited["toy"]) == {"real"} and audited["toy"]["real"] > 1000
    assert (run / "audit/toy/stage.json").is_file()  # keyed, hashed, recorded like any stage
    # a later request reads it back while it audited today's teacher …
    again = pipeline.run(config, out=run, device="cpu", stages=("teacher",))
    assert again["toy"] == audited["toy"]
    # … and drops it once the teacher is retrained: no staleness check of its own
    train = dataclasses.replace(config.teacher.train, lr=config.teacher.train.lr * 2)
    retrained = dataclasses.replace(config, teacher=dataclasses.replace(config.teacher, train=train))
    assert "toy" not in pipeline.run(retrained, out=run, device="cpu", stages=("teacher",))


def test_kr_dp_is_declared_after_the_dp_sgd_model_that_labels_it():
    """kr-dp pulls in DP-SGD even when `dpsgd` is not listed, reads the largest target ε's
    model, and is declared after it (the graph runs in declaration order)."""
    graph = stages.stage_graph(load_config("tiny", overrides=["baselines=kr-dp", "dpsgd.epsilons=1,4"]))
    names = list(graph)
    assert "methods/dpsgd-eps4" in graph["methods/kr-dp"].needs
    assert "methods/dpsgd-eps1" not in graph["methods/kr-dp"].needs
    assert names.index("methods/dpsgd-eps4") < names.index("methods/kr-dp")
    plain = stages.stage_graph(load_config("tiny", overrides=["baselines=synthetic"]))
    assert not any(n.startswith("methods/dpsgd") for n in plain)


@pytest.mark.slow  # a whole tiny run
def test_kr_dp_and_kr_one_are_labelled_by_their_own_network(tmp_path, monkeypatch, small):
    """kr-dp: the DP-SGD model labels and nothing is filtered; kr-one: an ensemble teacher's
    first member labels, on KR's images (the ensemble filters, at the tuned threshold)."""
    seen = {}
    real = stages.train_student

    def spy(data, config, gen, teacher, method, knobs, threshold, *args, **kwargs):
        labeller = kwargs.get("labeller") or teacher
        seen[method] = ({k: v.clone() for k, v in labeller.state_dict().items()}, threshold, kwargs.get("tag"))
        return real(data, config, gen, teacher, method, knobs, threshold, *args, **kwargs)

    monkeypatch.setattr(stages, "train_student", spy)
    config = load_config("tiny", data={"dataset": small},
                         overrides=["baselines=kr-dp,kr-one", "dpsgd.epsilons=4", "select.threshold=0.3",
                                    "teacher.members=2"])
    results = pipeline.run(config, out=tmp_path / "run", device="cpu")
    assert {"kr-dp", "dpsgd-eps4"} <= set(results["methods"])
    dp = load_verified(tmp_path / "run" / stage_folder("dpsgd-eps4")).state_dict()
    teacher = load_verified(tmp_path / "run" / "teacher").state_dict()
    weights, threshold, _ = seen["kr-dp"]
    assert weights.keys() == dp.keys() and all(torch.equal(weights[k], dp[k]) for k in dp)
    assert weights.keys() != teacher.keys() or not all(torch.equal(weights[k], teacher[k]) for k in teacher)
    assert threshold == 0.0 and seen["kr"][1] == results["tuning"]["threshold"] == 0.3
    one, threshold, tag = seen["kr-one"]
    member = {k.removeprefix("members.0."): v for k, v in teacher.items() if k.startswith("members.0.")}
    assert one.keys() == member.keys() and all(torch.equal(one[k], member[k]) for k in member)
    assert (threshold, tag) == seen["kr"][1:]  # KR's images
    entry = results["methods"]["kr-dp"]
    assert entry["labeller"]["model"] == "dpsgd-eps4"
    assert entry["labeller"]["epsilon"] == pytest.approx(results["methods"]["dpsgd-eps4"]["epsilon"])
    assert "test" in entry

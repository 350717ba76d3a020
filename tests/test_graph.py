"""The declared stage graph (kr.graph, kr.pipeline.stage_graph): keys cover what stages read."""

import ast
import dataclasses
import threading
from pathlib import Path

import pytest

from kr import graph, pipeline
from kr.errors import KRError
from kr.config import load_config
from kr.rundir import stage_key


def _leaves(tree, prefix=""):
    for k, v in tree.items():
        path = f"{prefix}{k}"
        if isinstance(v, dict):
            yield from _leaves(v, path + ".")
        else:
            yield path


def _changed(tree, path):
    tree = __import__("copy").deepcopy(tree)
    node, parts = tree, path.split(".")
    for p in parts[:-1]:
        node = node[p]
    v = node[parts[-1]]
    node[parts[-1]] = (not v) if isinstance(v, bool) else v + 1 if isinstance(v, (int, float)) else f"{v}x"
    return tree


def _upstream(stages, name):
    seen, todo = set(), [name]
    while todo:
        n = todo.pop()
        if n not in seen:
            seen.add(n)
            todo.extend(graph.inputs_of(stages[n], stages))
    return seen


def _covered(stages, name, path):
    return any(path == r or path.startswith(r + ".") for n in _upstream(stages, name) for r in stages[n].reads)


@pytest.mark.parametrize("kind", ["gan", "diffusion"])
def test_every_config_field_changes_exactly_the_keys_of_stages_that_read_it(kind):
    config = load_config("tiny", generator={"kind": kind}, overrides=["baselines=dpsgd", "dpsgd.epsilons=8"])
    stages = pipeline.stage_graph(config)
    order = graph.request(stages)
    assert "methods/dpsgd-eps8" in order and "audit/shipped" in order
    tree, base = config.to_dict(), {"kr": "x", "data": "d"}
    before = {n: stage_key(k) for n, k in graph.keys(stages, order, tree, base).items()}
    for path in _leaves(tree):
        after = {n: stage_key(k) for n, k in graph.keys(stages, order, _changed(tree, path), base).items()}
        for name in before:
            assert (after[name] != before[name]) == _covered(stages, name, path), (path, name)
    # the two defects of the hand-written keys: DP-SGD reads the teacher's crop and selection
    # metric; a generator reads its own backend's section only
    for path in ("teacher.train.crop_padding", "teacher.train.select_metric"):
        assert _covered(stages, "methods/dpsgd-eps8", path)
    other = "diffusion" if kind == "gan" else "gan"
    assert not _covered(stages, "generator", f"generator.{other}.lr" if other == "diffusion" else "generator.gan.lr_g")
    assert not _covered(stages, "teacher", "distill.temperature")


class _Recorder:
    """Config whose every dataclass records the dotted paths of the leaves a stage reads."""

    def __init__(self):
        self.stage = threading.local()
        self.reads: dict[str, set[str]] = {}
        self.classes: dict[tuple[type, str], type] = {}

    def wrap(self, obj, path=""):
        if not dataclasses.is_dataclass(obj):
            return obj
        cls = self._class(type(obj), path)
        new = object.__new__(cls)
        for f in dataclasses.fields(obj):
            object.__setattr__(new, f.name, self.wrap(object.__getattribute__(obj, f.name),
                                                      f"{path}{f.name}."))
        return new

    def _class(self, base, path):
        key = (base, path)
        if key not in self.classes:
            recorder, names = self, {f.name for f in dataclasses.fields(base)}

            def getattribute(self, name):
                value = object.__getattribute__(self, name)
                stage = getattr(recorder.stage, "name", None)
                if stage and name in names and not dataclasses.is_dataclass(value) \
                        and not getattr(recorder.stage, "init", False):
                    recorder.reads.setdefault(stage, set()).add(path + name)
                return value

            def init(self, *args, **kwargs):  # validation in __post_init__ is not a read
                recorder.stage.init = True
                try:
                    base.__init__(self, *args, **kwargs)
                finally:
                    recorder.stage.init = False
            self.classes[key] = type(base.__name__, (base,), {"__getattribute__": getattribute,
                                                              "__init__": init})
        return self.classes[key]


@pytest.mark.slow  # end to end: a whole tiny run
def test_stages_read_only_config_their_keys_cover(tmp_path, monkeypatch):
    """Run the tiny pipeline with a config that records every leaf each stage reads: each must
    be in the slice the stage declares, or in a slice of a stage it needs (whose key its key
    includes)."""
    recorder = _Recorder()
    real_graph = pipeline.stage_graph
    declared = {}

    def traced(stage):
        def fn(ctx, inputs, folder, **params):
            recorder.stage.name = stage.name
            try:
                return stage.fn(ctx, inputs, folder, **params)
            finally:
                recorder.stage.name = None
        declared[stage.name] = stage
        return dataclasses.replace(stage, fn=fn)

    monkeypatch.setattr(pipeline, "stage_graph", lambda c: {n: traced(s) for n, s in real_graph(c).items()})
    config = recorder.wrap(load_config("tiny", overrides=["dpsgd.epsilons=8"]))
    pipeline.run(config, out=tmp_path / "run", device="cpu")
    assert set(recorder.reads) >= {"teacher", "generator", "selection", "tuning", "methods/kr",
                                   "methods/dpsgd-eps8"}
    for name, paths in recorder.reads.items():
        if not declared[name].cached:  # results and report: rerun every time, no key to cover
            continue
        missed = sorted(p for p in paths if not _covered(declared, name, p))
        assert not missed, f"{name} reads {missed} but its key does not cover them"


@pytest.mark.slow  # end to end: a whole tiny run
def test_any_stage_can_be_asked_for_alone(tmp_path):
    config = load_config("tiny", overrides=["baselines=", "teacher.train.epochs=1",
                                            "generator.kimg=0.25", "generator.checkpoint_kimg=0.25"])
    for stage in ("quality", "tuning"):
        results = pipeline.run(config, out=tmp_path / stage, device="cpu", stages=(stage,))
        assert stage in (results["generator"] if stage == "quality" else results)
        assert not (tmp_path / stage / "methods").exists()


def _imports(root: Path) -> dict[str, set[str]]:
    """kr module → the kr modules it imports, function-local imports included."""
    modules = {".".join(p.relative_to(root.parent).with_suffix("").parts).removesuffix(".__init__"): p
               for p in root.rglob("*.py")}
    out = {}
    for name, path in modules.items():
        deps = set()
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                mod = node.module or ""
                if node.level:
                    mod = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([mod] if mod else []))
                # `from pkg import submodule` depends on the submodule; `from mod import name` on mod
                subs = {f"{mod}.{a.name}" for a in node.names} & modules.keys()
                deps |= subs if len(subs) == len(node.names) else subs | {mod}
        out[name] = {d for d in deps if d in modules and d != name}
    return out


def test_the_package_import_graph_has_no_cycle():
    deps = _imports(Path(pipeline.__file__).parent)
    state: dict[str, int] = {}

    def visit(m, trail):
        if state.get(m) == 1:
            raise AssertionError("import cycle: " + " → ".join(trail[trail.index(m):] + [m]))
        if state.get(m) != 2:
            state[m] = 1
            for d in sorted(deps[m]):
                visit(d, trail + [m])
            state[m] = 2
    for m in sorted(deps):
        visit(m, [])


def test_one_rule_decides_what_a_request_runs():
    stages = pipeline.stage_graph(load_config("tiny", overrides=["dpsgd.epsilons=8,1"]))
    everything = graph.request(stages)
    assert everything == [n for n, s in stages.items() if not s.opt_in] and everything[-2:] == ["results", "report"]
    # the audits are opt-in: asked for by name, with what they need
    attacks = graph.request(stages, ["audit/attacks"])
    assert {"audit/references/r0", "audit/references/r3", "teacher", "methods/kr", "evaluate"} <= set(attacks)
    assert not any(n.startswith("audit/canaries") for n in attacks)
    assert graph.request(stages, ["canaries"])[-4:] == ["audit/canaries/plant", "audit/canaries/run",
                                                       "audit/canaries/score", "results"]
    dp = graph.request(stages, ["dpsgd"])  # a group: both ε models, then what summarises them
    assert dp == ["methods/dpsgd-eps8", "methods/dpsgd-eps1", "evaluate", "results"]
    kr = graph.request(stages, ["kr"])
    assert kr == ["teacher", "generator", "selection", "tuning", "methods/kr", "evaluate", "results"]
    assert graph.inputs_of(stages["evaluate"], kr) == ("teacher", "methods/kr")  # only what ran
    teacher = graph.request(stages, ["teacher"])
    assert teacher == ["teacher", "evaluate", "results"]
    assert "audit/shipped" in graph.request(stages, ["kr", "audit"])
    with pytest.raises(KRError, match=r"unknown stage\(s\) \['students'\]"):
        graph.request(stages, ["students"])
    keyed = graph.keys(stages, kr, load_config("tiny").to_dict(), {})
    assert "results" not in keyed and set(keyed["evaluate"]["needs"]) == {"teacher", "methods/kr"}


def test_walk_hands_each_task_its_stage_function_and_only_its_inputs(tmp_path):
    from kr.graph import Done, Stage, call, walk
    from kr.rundir import RunDir
    from tests.toys import toy_dataset

    seen = {}

    def make(name):
        def fn(ctx, inputs, folder, **params):
            seen[name] = {n: (d.outputs, d.path.name) for n, d in inputs.items()}
            return {"name": name, **params}
        return fn

    stages = {s.name: s for s in (
        Stage("a", (), (), make("a")), Stage("b", (), (), make("b"), params={"p": 1}),
        Stage("c", ("a",), (), make("c"), uses=("b",)),
        Stage("summary", (), (), make("summary"), uses=("a", "b", "c"), cached=False))}

    class Recording:
        def __init__(self):
            self.waves = []

        def run(self, calls):
            self.waves.append([(fn, args[0]) for (fn, args), _ in calls])
            return [(fn(*args), 0.0, 1) for (fn, args), _ in calls]

    executor = Recording()
    order = graph.request(stages, ["c"])
    assert order == ["a", "c"]  # b is only used, never pulled in
    run_dir = RunDir(tmp_path / "run", load_config("tiny"), toy_dataset())
    try:
        done = walk(stages, order, graph.keys(stages, order, {}, {}), run_dir, executor, None)
        assert seen["c"] == {"a": ({"name": "a"}, "a")} and "summary" not in seen
        assert [[fn for fn, _ in wave] for wave in executor.waves] == [[call], [call]]
        assert [[s for _, s in wave] for wave in executor.waves] == [[stages["a"].fn], [stages["c"].fn]]
        order = graph.request(stages, None)
        done = walk(stages, order, graph.keys(stages, order, {}, {}), run_dir, executor, None)
        assert set(seen["summary"]) == {"a", "b", "c"} and done["summary"].outputs["name"] == "summary"
        # a was cached; b ran, then c again (its key has b's now)
        assert [[s for _, s in wave] for wave in executor.waves[2:]] == [[stages["b"].fn], [stages["c"].fn]]
        assert isinstance(done["a"], Done) and done["b"].outputs == {"name": "b", "p": 1}
    finally:
        run_dir.close()


def test_an_output_altered_after_it_was_recorded_is_detected_and_recomputed(tmp_path, caplog):
    """DVC's rule: stage.json records each file's content hash; a file changed since is
    recomputed on the next run, and so is every stage that read the stage's old contents."""
    from kr.graph import Stage, walk
    from kr.executors import InProcess
    from kr.rundir import RunDir, verify
    from tests.toys import toy_dataset

    calls = {"a": 0, "b": 0}

    def a(ctx, inputs, folder):
        calls["a"] += 1
        (folder / "weights.bin").write_bytes(b"trained %d" % calls["a"])  # each training differs
        return {}

    def b(ctx, inputs, folder):
        calls["b"] += 1
        (folder / "out.txt").write_text("read " + (inputs["a"].path / "weights.bin").read_text())
        return {}

    stages = {s.name: s for s in (Stage("a", (), (), a), Stage("b", ("a",), (), b))}
    order = graph.request(stages, None)

    def run():
        run_dir = RunDir(tmp_path / "run", load_config("tiny"), toy_dataset())
        try:
            walk(stages, order, graph.keys(stages, order, {}, {}), run_dir, InProcess(), None)
        finally:
            run_dir.close()

    run()
    run()
    assert calls == {"a": 1, "b": 1}  # both cached the second time
    verify(tmp_path / "run" / "a")
    (tmp_path / "run" / "a" / "weights.bin").write_bytes(b"tampered")
    with pytest.raises(KRError, match="a/weights.bin no longer matches"):
        verify(tmp_path / "run" / "a")
    caplog.set_level("INFO", logger="kr")
    run()
    assert "weights.bin changed since the stage recorded it" in caplog.text
    assert calls == {"a": 2, "b": 2}  # a retrained, and b, which read its old weights
    assert (tmp_path / "run" / "b" / "out.txt").read_text() == "read trained 2"
    verify(tmp_path / "run" / "a")
    (tmp_path / "run" / "b" / "out.txt").unlink()  # a missing output is a changed one
    run()
    assert calls == {"a": 2, "b": 3}

"""A declared stage graph: what each stage needs, which config it reads, and its cache key.

A stage's key hashes the config slice it declares (`reads`, dotted paths into the resolved
config), its parameters, the data and kr version, and the keys of the stages it needs.  So a
setting changes exactly the keys of the stages that read it and of those downstream: a key can
neither miss a setting (tests/test_graph.py records what every stage really reads) nor change
for a setting its stage never reads.  The pipeline (kr.pipeline) declares the stages in the
method's order; `walk` runs any subset of them, with what they need, on an executor
(kr.executors): stages whose inputs are done run side by side.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from kr.errors import KRError
from kr.rundir import RunDir, stage_key


@dataclass(frozen=True)
class Stage:
    name: str                      # its folder in the run directory, e.g. "methods/kr"
    needs: tuple[str, ...]         # stages whose outputs it reads
    reads: tuple[str, ...]         # dotted config paths it reads ("teacher", "select.epochs")
    fn: Callable[..., dict]        # fn(ctx, inputs: {need: outputs}, folder, **params) → JSON
    params: dict[str, Any] = field(default_factory=dict)  # e.g. {"method": "kr"}: part of the key
    trains: bool = True            # trains a network (an executor may give it a GPU)


def config_value(tree: dict, path: str) -> Any:
    node = tree
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(f"stage reads unknown config path {path!r}")
        node = node[part]
    return node


def keys(stages: dict[str, Stage], tree: dict, base: dict[str, Any]) -> dict[str, dict]:
    """Each stage's key inputs (what stage.json records); `stage_key` hashes them."""
    out: dict[str, dict] = {}
    for name, s in stages.items():  # declared in dependency order
        out[name] = {**base, "config": {p: config_value(tree, p) for p in s.reads}, **s.params,
                     "needs": {n: stage_key(out[n]) for n in s.needs}}
    return out


def closure(stages: dict[str, Stage], wanted: list[str]) -> list[str]:
    """The wanted stages and everything they need, in declaration (dependency) order."""
    unknown = [w for w in wanted if w not in stages]
    if unknown:
        raise KRError(f"unknown stage(s) {unknown}; this run has {list(stages)}")
    need: set[str] = set()
    todo = list(wanted)
    while todo:
        name = todo.pop()
        if name not in need:
            need.add(name)
            todo.extend(stages[name].needs)
    return [n for n in stages if n in need]


def walk(stages: dict[str, Stage], order: list[str], key_inputs: dict[str, dict], run_dir: RunDir,
         executor, task: Callable[[str, dict, Path], Any]) -> dict[str, dict]:
    """Run `order` (a closure), cached stages first, then in waves of stages whose needs are
    done; `task(name, inputs, folder)` builds the executor's call for one stage."""
    outputs: dict[str, dict] = {}
    pending = []
    for name in order:
        cached = run_dir.cached(name, key_inputs[name])
        if cached is not None:
            outputs[name] = cached
        else:
            pending.append(name)
    while pending:
        ready = [n for n in pending if all(d in outputs for d in stages[n].needs)]
        if not ready:  # cannot happen for a closure in dependency order
            raise KRError(f"stages {pending} wait on each other")
        calls = []
        for name in ready:
            folder = run_dir.begin(name, key_inputs[name])
            calls.append((task(name, {d: outputs[d] for d in stages[name].needs}, folder),
                          stages[name]))
        for name, (out, seconds, threads) in zip(ready, executor.run(calls)):
            run_dir.finish(name, key_inputs[name], out, seconds, threads)
            outputs[name] = out
        pending = [n for n in pending if n not in ready]
    return outputs

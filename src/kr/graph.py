"""A declared stage graph: what each stage needs, which config it reads, and its cache key.

A stage's key hashes the config slice it declares (`reads`, dotted paths into the resolved
config), its parameters, the data and kr version, and the keys of the stages it reads.  So a
setting changes exactly the keys of the stages that read it and of those downstream: a key can
neither miss a setting (tests/test_graph.py records what every stage really reads) nor change
for a setting its stage never reads.

The graph is the only route for data: a stage gets, for each stage it reads, a `Done` (its
JSON outputs, its folder, its key, its seconds) and nothing else of the run directory.  It
reads two kinds of stage: `needs`, pulled into any request that asks for it, and `uses`, read
when the same request runs them and never pulled in (the evaluation of whichever models a
request trained).  `summary` stages (the evaluation, results.json) join any request that
runs one of their `uses`; `cached=False` stages (results.json, the report) run every time,
after the others, in the run directory itself.

`opt_in` stages (the audits: reference runs, attacks, canaries) run only when a request names
them.  A request that does not name one still reads it back when its record is current: its
files match their hashes and every stage it read has the contents it read then (the audit of
exactly today's models).  So `kr run` keeps an audit of the models it has and drops one of
models since retrained, with no staleness check of its own.  What a stage adds to results.json
it declares (`publishes`); the uncached `results` stage folds those parts, its one writer.
A `keep` stage (the canaries' secret bits) is never replaced silently: a changed key is
refused, naming what changed, unless the request renews it (`renew`).

kr.stages declares the stages in the method's order; `request` picks a
subset and what it needs; `walk` runs it on an executor (kr.executors), in waves of stages
whose inputs are done (graphlib's topological walk), each task carrying its stage's function.
"""

from __future__ import annotations

import graphlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

from kr.errors import KRError
from kr.rundir import RunDir, stage_key, verify


@dataclass(frozen=True)
class Done:
    """A finished stage, as the stages that read it see it."""
    outputs: dict
    path: Path
    key: str = ""
    seconds: float | None = None
    model: str | None = None       # the model it ships (Stage.model)
    content: str = ""              # the hash of its files' hashes (RunDir.finish)
    publishes: Callable[[dict, "Done"], None] | None = None  # Stage.publishes


@dataclass(frozen=True)
class Stage:
    name: str                      # its folder in the run directory, e.g. "methods/kr"
    needs: tuple[str, ...]         # stages whose outputs it reads (pulled into a request)
    reads: tuple[str, ...]         # dotted config paths it reads ("teacher", "select.epochs")
    fn: Callable[..., dict]        # fn(ctx, inputs: {stage: Done}, folder, **params) → JSON
    params: dict[str, Any] = field(default_factory=dict)  # e.g. {"method": "kr"}: part of the key
    trains: bool = True            # trains a network (an executor may give it a GPU)
    uses: tuple[str, ...] = ()     # stages it reads when the request runs them (never pulled in)
    group: str | None = None       # another name a request may ask it by ("dpsgd", "audit")
    summary: bool = False          # joins any request that runs one of its `uses`
    cached: bool = True            # False: runs every time, in the run directory itself
    model: str | None = None       # the model it trains and ships, as results.json names it
    opt_in: bool = False           # runs only when a request names it (the audits)
    publishes: Callable[[dict, Done], None] | None = None  # puts its part into results.json
    keep: str | None = None        # never replaced silently (secret bits): a changed key is refused,
                                   # and this sentence says how to renew it
    nested: bool = False           # its folder holds a run that caches its own stages: kept on a rerun


def config_value(tree: dict, path: str) -> Any:
    node = tree
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(f"stage reads unknown config path {path!r}")
        node = node[part]
    return node


def inputs_of(stage: Stage, order: Iterable[str]) -> tuple[str, ...]:
    """What a stage reads in this request: its needs, and those of its uses that run."""
    ran = set(order)
    return (*stage.needs, *(u for u in stage.uses if u in ran))


def request(stages: dict[str, Stage], wanted: Iterable[str] | None = None) -> list[str]:
    """The stages a request runs, in declaration (dependency) order: those asked for by name
    or group (every stage but the opt-in ones when `wanted` is None), what they need, and the
    summaries of what runs."""
    if wanted is None:
        asked = [n for n, s in stages.items() if not s.opt_in]
    else:
        wanted = set(wanted)
        known = set(stages) | {s.group for s in stages.values() if s.group}
        unknown = sorted(wanted - known)
        if unknown:
            raise KRError(f"unknown stage(s) {unknown}; this run has {sorted(known)}")
        asked = [n for n, s in stages.items() if n in wanted or s.group in wanted]
    need: set[str] = set()
    todo = list(asked)
    while todo:
        name = todo.pop()
        if name not in need:
            need.add(name)
            todo.extend(stages[name].needs)
            todo.extend(n for n, s in stages.items() if s.summary and name in s.uses)
    return [n for n in stages if n in need]


def keys(stages: dict[str, Stage], order: list[str], tree: dict, base: dict[str, Any]) -> dict[str, dict]:
    """Each cached stage's key inputs (what stage.json records); `stage_key` hashes them."""
    out: dict[str, dict] = {}
    for name in order:  # declared in dependency order
        s = stages[name]
        if s.cached:
            out[name] = {**base, "config": {p: config_value(tree, p) for p in s.reads}, **s.params,
                         "needs": {n: stage_key(out[n]) for n in inputs_of(s, order) if n in out}}
    return out


def call(fn: Callable[..., dict], ctx: Any, inputs: dict[str, Done], folder: str, params: dict) -> dict:
    """One stage, where an executor runs it (this process, a worker, a Ray node), with the
    thread count its run fixes (`ctx.threads`), whatever the executor gave the task: the same
    seed then gives the same numbers on every executor."""
    threads = getattr(ctx, "threads", None)
    if threads:
        torch.set_num_threads(threads)  # stays for the task's timing record; kr.pipeline.run restores it
    return fn(ctx, inputs, Path(folder), **params)


def walk(stages: dict[str, Stage], order: list[str], key_inputs: dict[str, dict], run_dir: RunDir,
         executor, ctx: Any, renew: Iterable[str] = (), frozen: Iterable[str] = ()) -> dict[str, Done]:
    """Run `order` (a request): cached stages are read back, the others run in waves of stages
    whose inputs are done, each wave side by side on `executor`; then the opt-in stages the
    request left out are read back where their record is current; uncached stages last, here.
    `renew`: stages to run anew even if cached (a `keep` stage is only replaced so); `frozen`:
    stages that must be read back, never run (an audit of a finished run trains none of its models)."""
    done: dict[str, Done] = {}
    cached = [n for n in order if stages[n].cached]  # uncached stages read these, never the reverse
    renew, frozen = set(renew), set(frozen)

    def upstream(name: str) -> dict[str, str]:
        """The contents of the stages it reads, as they are now (a recomputed one redoes it)."""
        return {d: done[d].content for d in inputs_of(stages[name], cached)}

    def finished(name: str, record: dict, path: Path) -> Done:
        s = stages[name]
        return Done(record["outputs"], path, record["key"], record.get("seconds"), s.model, record["content"],
                    s.publishes)

    sorter = graphlib.TopologicalSorter({n: inputs_of(stages[n], cached) for n in cached})
    sorter.prepare()
    while sorter.is_active():
        fresh = []
        for name in sorter.get_ready():
            record = None if name in renew else run_dir.cached(name, key_inputs[name], upstream(name))
            if record is not None:
                done[name] = finished(name, record, run_dir.path / name)
                sorter.done(name)
            else:
                if name in frozen:
                    verify(run_dir.path / name, "stage")  # names the changed file, if one is
                    raise KRError(f"{run_dir.path / name} is not finished, or its inputs changed since it was: "
                                  f"rerun `kr run` on the run first")
                if stages[name].keep and name not in renew:
                    _refuse_to_replace(run_dir, stages[name], key_inputs[name], upstream(name))
                fresh.append(name)
        calls = []
        for name in fresh:
            folder = run_dir.begin(name, key_inputs[name], stages[name].nested)
            inputs = {d: done[d] for d in inputs_of(stages[name], order)}
            calls.append(((call, (stages[name].fn, ctx, inputs, str(folder), stages[name].params)),
                          stages[name]))
        for name, (out, seconds, threads) in zip(fresh, executor.run(calls) if calls else ()):
            content = run_dir.finish(name, key_inputs[name], out, seconds, threads, upstream(name))
            done[name] = Done(out, run_dir.path / name, stage_key(key_inputs[name]), seconds, stages[name].model,
                              content, stages[name].publishes)
            sorter.done(name)
    for name, s in stages.items():  # in declaration order: an audit after the runs it reads
        if s.opt_in and name not in done:
            record = run_dir.current(name, {d: x.content for d, x in done.items()})
            if record is not None:
                done[name] = finished(name, record, run_dir.path / name)
    ran = [*order, *(n for n in done if n not in order)]  # and the opt-in stages read back
    for name in order:
        s = stages[name]
        if not s.cached:
            done[name] = Done(s.fn(ctx, {d: done[d] for d in inputs_of(s, ran)}, run_dir.path, **s.params),
                              run_dir.path, publishes=s.publishes)
    return done


def _refuse_to_replace(run_dir: RunDir, stage: Stage, inputs: dict, upstream: dict[str, str]) -> None:
    """A `keep` stage that finished under other inputs: say what changed, never replace it."""
    name = stage.name
    record = run_dir.record(name)
    if record is None:
        return
    was = record.get("inputs", {})

    def differ(a: dict, b: dict) -> list[str]:
        return [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]

    changed = [k for k in differ(was, inputs) if k not in ("config", "needs")]
    changed += differ(was.get("config", {}), inputs.get("config", {}))
    changed += differ(was.get("needs", {}), inputs.get("needs", {}))
    changed += [n for n, c in upstream.items() if record.get("upstream", {}).get(n, c) != c and n not in changed]
    raise KRError(f"{run_dir.path / name} was made under other inputs ({', '.join(changed) or 'its files'} "
                  f"changed) and is kept, not replaced: {stage.keep}")

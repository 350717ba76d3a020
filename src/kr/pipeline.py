"""`kr run`: the Knowledge Recycling method, step by step, with each stage cached.

    prepare   load and validate the dataset, resolve the config, open the run directory
    teacher   step 1: a classifier on the real train split, selected on validation
    generator step 2: a class-conditional generator, checkpointed every checkpoint_kimg
    judge     a second classifier on the real train split (another architecture and seed), read
              by nothing but quality: the judge no generator was trained against
    quality   every checkpoint judged on the validation split by the teacher, the judge, and a
              classifier trained on its samples alone
    selection step 3: the checkpoint whose synthetic data trains the best short student (val)
    tuning    step 4: the generator's knob and the sample-filtering threshold (val)
    kr        step 5: the GKD student, on regenerated, teacher-labelled synthetic images
    synthetic, regen, soft   the baselines of step 6, each one KR ingredient short
    dpsgd     the DP-SGD baseline on the real images, one model per target ε (kr.dpsgd)
    evaluate  step 6: every method's test ACC/AUC, read once, after every choice is made
    audit     step 6, privacy: reference-free attacks on the shipped models (members = train,
              non-members = test) and the memorisation check of the synthetic data; the
              reference-based attacks need reference runs: `kr audit RUN` (kr.audit)
    results   results.json, from the outputs of every stage that ran
    report    RUN/report/report.html and report.md (kr.report)

Each stage is declared once, in `stage_graph` (kr.graph), and reads only its declared inputs
and config slice.  It is cached under a key that hashes that slice and the keys of the stages
it reads, so a rerun resumes, and a changed setting reruns only its stage and those
downstream.  The methods of step 5–6 come from their registry (kr.methods).
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Iterable

import torch

from kr import __version__
from kr.artifacts import write_json
from kr.config import Config
from kr.data import ImageDataset, load_dataset
from kr.evaluation import cas_gap_pp, evaluate_models
from kr.executors import InProcess, make_executor
from kr.generation import grid_labels, grid_seed, judge_checkpoints, selected_checkpoint, train_generator
from kr.generators import load_generator
from kr.quality import save_class_rows, save_grid
from kr.graph import Done, Stage, keys, request, walk
from kr.methods import METHODS, method_of
from kr.report import write_report
from kr.rundir import RunDir, append_metrics, evaluated_key
from kr.selection import optimise_checkpoint, tune
from kr.shipped_audit import audit_stage, recorded_audit, recorded_canaries
from kr.teacher import train_judge, train_teacher
from kr.train import resolve_device

log = logging.getLogger(__name__)


def default_run_name(config: Config) -> str:
    """Deterministic, so rerunning the same command finds (and resumes) the same folder."""
    return f"{Path(config.data.dataset).stem}-{config.preset}-s{config.seed}"


def prepare(config: Config, data_dir: str | None) -> ImageDataset:
    data = load_dataset(config.data.dataset, data_dir=data_dir, size=config.data.size)
    if data.multi_label:
        log.warning("%s is multi-label: the teacher supports it, the class-conditional "
                    "generator and distillation stages do not yet", data.name)
    return data


@dataclass(frozen=True)
class Context:
    """What every stage gets besides its inputs; picklable, so a worker process rebuilds it."""
    data: ImageDataset
    config: Config
    device: str
    run: Path                      # the run directory: stage logs go to its metrics.jsonl
    fanout: dict | None = None     # the executor's spec: selection and tuning spread candidates on it
    prepare_s: float = 0.0         # seconds spent loading the data (results.json's timings)

    @contextmanager
    def executor(self):
        executor = make_executor(**self.fanout) if self.fanout else InProcess()
        try:
            yield executor
        finally:
            executor.close()

    def log_to(self, stage: str) -> Callable[[dict], None]:
        return partial(append_metrics, self.run, stage)


def stage_graph(config: Config) -> dict[str, Stage]:
    """The method as a graph, in its order: each stage, what it reads, the config it reads."""
    guided = ("teacher",) if config.generator.uses_teacher() else ()
    common = ("seed", "data.size")
    graph = [
        # Step 1: the teacher, trained on the real train split and selected on validation.
        Stage("teacher", (), (*common, "teacher"), _teacher, model="real"),
        # Step 2: the class-conditional generator, with a checkpoint every checkpoint_kimg;
        # only its own backend's section (editing gan.* keeps a diffusion generator).
        Stage("generator", guided, (*common, *(f"generator.{k}" for k in config.generator.training_fields())),
              _generator),
        # Each checkpoint judged on the validation split: by the teacher, and by judges that no
        # generator was trained against (the independent classifier; a classifier trained on
        # the samples alone).
        Stage("judge", (), (*common, "judge.model", "judge.train"), _judge),
        Stage("quality", ("teacher", "judge", "generator"),
              ("generator.eval_per_class", "judge.cas_epochs", "judge.cas_size_factor", "judge.cas_max_kimg",
               "judge.model", "judge.train"), _quality),
        # Step 3: checkpoint optimisation, by the validation accuracy of a short GKD student.
        Stage("selection", ("teacher", "generator"),
              ("distill", "select.epochs", "select.max_kimg", "select.metric"),
              _selection),
        # Step 4: tuning the generator's knob and Dynamic Sample Filtering on validation.
        Stage("tuning", ("teacher", "generator", "selection"), ("select",), _tuning),
    ]
    # Step 5, GKD, and the comparisons of step 6: each method's own stages (kr.methods).
    wanted = config.methods_to_run()
    for method in METHODS.values():
        if method.stages is not None and (method.always or method.name in wanted):
            graph += method.stage_builder()(config, method)
    models = tuple(s.name for s in graph if s.model)
    graph += [
        # Step 6: the test split, read once, for the models this request trained.
        Stage("evaluate", (), (), _evaluate, uses=models, summary=True, trains=False),
        # … and their privacy: reference-free attacks on the shipped models, and whether the
        # selected generator copies train images (kr.shipped_audit).
        Stage("audit/shipped", ("evaluate",), ("audit.bootstrap", "audit.memorisation_samples", "distill.prior"),
              audit_stage, params={"outputs": 3}, uses=(*models, "generator", "selection", "tuning"),
              group="audit", trains=False),
    ]
    done = tuple(s.name for s in graph)
    graph += [Stage("results", (), (), _results, uses=done, summary=True, cached=False, trains=False),
              Stage("report", ("results",), (), _report, uses=("generator", "selection"), cached=False,
                    trains=False)]
    return {s.name: s for s in graph}


def stage_names(config: Config | None = None) -> tuple[str, ...]:
    """What `run(stages=…)` may ask for: every stage's name and group."""
    graph = stage_graph(config or Config())
    return tuple(dict.fromkeys(n for s in graph.values() for n in (s.name, s.group) if n))


def _teacher(ctx: Context, inputs: dict[str, Done], folder: Path) -> dict:
    return train_teacher(ctx.data, ctx.config, folder, ctx.device, on_epoch=ctx.log_to("teacher"))


def _generator(ctx: Context, inputs: dict[str, Done], folder: Path) -> dict:
    teacher = inputs["teacher"].path if "teacher" in inputs else None
    return train_generator(ctx.data, ctx.config, folder, ctx.device, on_log=ctx.log_to("generator"),
                           teacher_dir=teacher)


def _judge(ctx: Context, inputs: dict[str, Done], folder: Path) -> dict:
    return train_judge(ctx.data, ctx.config, folder, ctx.device, on_epoch=ctx.log_to("judge"))


def _quality(ctx: Context, inputs: dict[str, Done], folder: Path) -> dict:
    generator = inputs["generator"]
    return judge_checkpoints(ctx.data, ctx.config, generator.path, generator.outputs["checkpoints"],
                             inputs["teacher"].path, inputs["judge"].path, ctx.device, folder)


def _selection(ctx: Context, inputs: dict[str, Done], folder: Path) -> dict:
    generator = inputs["generator"]
    with ctx.executor() as executor:
        return optimise_checkpoint(ctx.data, ctx.config, generator.path, generator.outputs["checkpoints"],
                                   inputs["teacher"].path, ctx.device, folder, executor=executor)


def _tuning(ctx: Context, inputs: dict[str, Done], folder: Path) -> dict:
    selection, generator = inputs["selection"].outputs, inputs["generator"]
    chosen = next(c for c in selection["candidates"] if c["name"] == selection["selected"])
    with ctx.executor() as executor:
        return tune(ctx.data, ctx.config, selected_checkpoint(inputs),
                    generator.outputs["kind"], inputs["teacher"].path, ctx.device,
                    selected=chosen, folder=folder, executor=executor)


def _evaluate(ctx: Context, inputs: dict[str, Done], folder: Path) -> dict:
    return evaluate_models(ctx.data, {d.model: d.path for d in inputs.values() if d.model}, ctx.device)


def run(config: Config, out: str | Path | None = None, data_dir: str | None = None,
        device: str = "auto", stages: Iterable[str] | None = None,
        data: ImageDataset | None = None, wait: bool = False, executor=None) -> dict:
    """Run the requested stages (names or groups, kr.graph.request; None: all of them) and
    what they need (dataset validated before anything is written) and return results.json's
    contents.  `data` replaces the configured dataset: the audit's reference runs pass a pool
    subset.  `wait`: queue behind another kr process using the run directory instead of
    stopping.  `executor` (kr.executors): where independent stages run."""
    dev = str(resolve_device(device))
    start = time.perf_counter()
    data = data if data is not None else prepare(config, data_dir)
    prepare_s = round(time.perf_counter() - start, 2)
    graph = stage_graph(config)
    order = request(graph, stages)
    run_dir = RunDir(out or Path("runs") / default_run_name(config), config, data, wait=wait)
    executor = executor or InProcess()
    try:
        key_inputs = keys(graph, order, config.to_dict(), {"kr": __version__, "data": data.fingerprint})
        ctx = Context(data, config, dev, run_dir.path, executor.spec(), prepare_s)
        done = walk(graph, order, key_inputs, run_dir, executor, ctx)
        results = done["results"].outputs
        if done.get("report") and "report" in done["report"].outputs:
            results["report"] = done["report"].outputs["report"]
        return results
    finally:
        executor.close()
        run_dir.close()


def _results(ctx: Context, inputs: dict[str, Done], folder: Path) -> dict:
    """results.json, from the outputs of the stages that ran (each method's fields from its
    registry entry, kr.methods)."""
    data, config = ctx.data, ctx.config
    outputs = {n: d.outputs for n, d in inputs.items()}
    results: dict = {"dataset": data.name, "preset": config.preset, "seed": config.seed,
                     "task": data.task, "methods": {}}
    if "generator" in outputs:
        gen = outputs["generator"]
        results["generator"] = {"kind": gen["kind"], "checkpoints": gen["checkpoints"]}
        if "quality" in outputs:
            results["generator"]["quality"] = outputs["quality"]
    for name in ("selection", "tuning"):
        if name in outputs:
            results[name] = outputs[name]
    for d in inputs.values():
        if d.model:  # older runs lack some fields (a DP model's `model`)
            results["methods"][d.model] = {k: d.outputs[k] for k in method_of(d.model).fields if k in d.outputs}
    if "evaluate" in outputs:
        for m, s in outputs["evaluate"].items():
            results["methods"][m].update(s)
        results["cas_gap_pp"] = cas_gap_pp(results["methods"])
    if "audit/shipped" in outputs:
        privacy = outputs["audit/shipped"]
        results["audit_shipped"] = privacy["attacks"]
        if "memorisation" in privacy:
            results["memorisation"] = privacy["memorisation"]
        evaluated = evaluated_key(folder)
        results.update(recorded_audit(folder, evaluated, results["audit_shipped"]))
        results.update(recorded_canaries(folder, evaluated))
    results["timings_s"] = {"prepare": ctx.prepare_s,
                            **{n: d.seconds for n, d in inputs.items() if d.seconds is not None}}
    results["run_dir"] = str(folder)
    write_json(folder / "results.json", results)
    return results


def _report(ctx: Context, inputs: dict[str, Done], folder: Path) -> dict:
    """Last: the page a team reads (kr.report), rebuilt from the run directory alone."""
    if not inputs["results"].outputs["methods"]:  # nothing trained, nothing to report
        return {}
    _class_rows(ctx.data, ctx.config, inputs, folder / "report" / "classes.png")
    return {"report": str(write_report([folder]))}


def _class_rows(data: ImageDataset, config: Config, inputs: dict[str, Done], path: Path) -> None:
    """Per class, the first train images beside synthetic samples of the selected checkpoint
    (the grid's labels and seed, so they are grid.png's images); the real train images alone
    when no generator was trained.  Drawn here, as the report does not keep the data; redrawn
    each time, since a rerun may select another checkpoint."""
    k = min(config.generator.grid_per_class, *data.class_counts("train"))
    if k < 1:  # a class without train images (possible in multi-label data): no grid
        return
    labels = data.train.labels if data.train.labels.dim() == 1 else data.train.labels.argmax(1)
    real = torch.cat([data.train.images[(labels == c).nonzero().flatten()[:k]] for c in range(data.n_classes)])
    path.parent.mkdir(parents=True, exist_ok=True)
    generator, selection = inputs.get("generator"), inputs.get("selection")
    if generator is None or selection is None:
        save_grid(real, data.n_classes, path.with_name("real_grid.png"))
        return
    fake = load_generator(selected_checkpoint(inputs)).sample(grid_labels(data.n_classes, config.generator.grid_per_class),
                                       grid_seed(config))
    fake = fake.view(data.n_classes, -1, *fake.shape[1:])[:, :k].reshape(-1, *fake.shape[1:])
    save_class_rows(real, fake, list(data.label_names), path,
                    f"synthetic ({generator.outputs['kind']}, checkpoint {selection.outputs['selected']})")

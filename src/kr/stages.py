"""The method as a stage graph (kr.graph): every stage of a run, what it reads, and what it adds
to results.json.  Each adapter here is a few lines that hand a stage its inputs; the work is
in the module named after the step.

    teacher   step 1: a classifier on the real train split, selected on validation (kr.teacher)
    generator step 2: a class-conditional generator, checkpointed every checkpoint_kimg
    judge     a second classifier on the real train split (another architecture and seed), read
              by nothing but quality: the judge no generator was trained against
    quality   every checkpoint judged on the validation split by the teacher, the judge, and a
              classifier trained on its samples alone (kr.generation)
    selection step 3: the checkpoint whose synthetic data trains the best short student (val)
    tuning    step 4: the generator's knob and the sample-filtering threshold (val)
    methods/… step 5, the GKD student (kr.distill), and the comparisons of step 6: the baselines
              one KR ingredient short, DP-SGD per target ε (kr.dpsgd); one stage per model,
              declared by its method's kind (kr.methods)
    evaluate  step 6: every method's test ACC/AUC, read once, after every choice is made
    audit/shipped   step 6, privacy: reference-free attacks on the shipped models and the
              memorisation check of the synthetic data (kr.shipped_audit)
    the audits, opt-in (`kr audit`; AUDITS below):
      audit/references/r<i>  experiment 1's reference runs: the whole procedure replayed on a
              pool half, through the `replay` the pipeline hands in (kr.privacy.references)
      audit/attacks          LOSS, LiRA and RMIA on every target, both experiments (kr.audit)
      audit/canaries/plant, /run, /score   the one-run canary audit (kr.canaries)
    results   results.json, folded from what each stage publishes (its one writer)
    report    RUN/report/report.html and report.md (kr.report)

A new audit is a module and one line in AUDITS: a function of (config, targets, the graph so far)
declaring its opt-in stages, each saying what it publishes.
"""

from __future__ import annotations

import dataclasses
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Callable

import torch

from kr import audit, canaries, dpsgd
from kr.artifacts import write_json
from kr.config import Config
from kr.data import ImageDataset
from kr.distill import train_student
from kr.evaluation import cas_gap_pp, evaluate_models
from kr.executors import InProcess, make_executor
from kr.generation import grid_labels, grid_seed, judge_checkpoints, selected_checkpoint, train_generator
from kr.generators import load_generator
from kr.graph import Done, Stage, request
from kr.methods import METHODS, Method, dp_name, labeller, method_of, stage_folder
from kr.models import load_classifier
from kr.models.ensemble import Ensemble
from kr.privacy.references import membership, reference_config, subset
from kr.privacy.results import canary_fields, results_fields
from kr.quality import save_class_rows, save_grid
from kr.report import write_report
from kr.rundir import append_metrics
from kr.selection import optimise_checkpoint, tune
from kr.shipped_audit import run_memorisation, shipped_audit
from kr.teacher import train_judge, train_teacher


@dataclasses.dataclass(frozen=True)
class Context:
    """What every stage gets besides its inputs; picklable, so a worker process rebuilds it."""
    data: ImageDataset
    config: Config
    device: str
    run: Path                      # the run directory: stage logs go to its metrics.jsonl
    fanout: dict | None = None     # the executor's spec: selection and tuning spread candidates on it
    prepare_s: float = 0.0         # seconds spent loading the data (results.json's timings)
    # the pipeline's `run`, handed in: an audit replays the whole procedure through it (no stage
    # imports the pipeline)
    replay: Callable[..., dict] | None = None

    @property
    def threads(self) -> int:
        """PyTorch threads of every stage and of every candidate it spreads (config.threads)."""
        return self.config.threads

    @contextmanager
    def executor(self):
        """Where a stage spreads its candidates: the run's executor, each task at `threads`."""
        executor = make_executor(**self.fanout, task_threads=self.threads) if self.fanout else InProcess()
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
              _generator, publishes=_publish_generator),
        # Each checkpoint judged on the validation split: by the teacher, and by judges that no
        # generator was trained against (the independent classifier; a classifier trained on
        # the samples alone).
        Stage("judge", (), (*common, "judge.model", "judge.train"), _judge),
        Stage("quality", ("teacher", "judge", "generator"),
              ("generator.eval_per_class", "judge.cas_epochs", "judge.cas_size_factor", "judge.cas_max_kimg",
               "judge.model", "judge.train"), _quality, publishes=_publish_quality),
        # Step 3: checkpoint optimisation, by the validation accuracy of a short GKD student.
        Stage("selection", ("teacher", "generator"),
              ("distill", "select.epochs", "select.max_kimg", "select.metric"),
              _selection, publishes=partial(_publish_field, "selection")),
        # Step 4: tuning the generator's knob and Dynamic Sample Filtering on validation.
        Stage("tuning", ("teacher", "generator", "selection"), ("select",), _tuning,
              publishes=partial(_publish_field, "tuning")),
    ]
    # Step 5, GKD, and the comparisons of step 6: each method's own stages.
    wanted = config.methods_to_run()
    if any(labeller(m) == "dpsgd" for m in wanted):  # kr-dp's labels come from the DP-SGD model
        wanted += ("dpsgd",)
    # declared in dependency order: kr-dp after the DP-SGD model that labels its images
    for method in sorted(METHODS.values(), key=lambda m: labeller(m.name) == "dpsgd"):
        if method.stages is not None and (method.always or method.name in wanted):
            graph += method_stages(config, method)
    models = {s.name: s.model for s in graph if s.model}
    graph += [
        # Step 6: the test split, read once, for the models this request trained.
        Stage("evaluate", (), (), _evaluate, uses=tuple(models), summary=True, trains=False,
              publishes=_publish_evaluation),
        # … and their privacy: reference-free attacks on the shipped models, and whether the
        # selected generator copies train images (kr.shipped_audit).
        Stage("audit/shipped", ("evaluate",), ("audit.bootstrap", "audit.memorisation_samples", "distill.prior"),
              _audit_shipped, params={"outputs": 3}, uses=(*models, "generator", "selection", "tuning"),
              group="audit", trains=False, publishes=_publish_shipped_audit),
    ]
    # The audits, opt-in: `kr audit` asks for them; any request reads back a current one.
    targets = _targets(config, tuple(models.values()))
    for declare in AUDITS:
        graph += declare(config, targets, {s.name: s for s in graph})
    done = tuple(s.name for s in graph)
    graph += [Stage("results", (), (), _results, uses=done, summary=True, cached=False, trains=False),
              Stage("report", ("results",), (), _report, uses=("generator", "selection"), cached=False,
                    trains=False)]
    return {s.name: s for s in graph}


def stage_names(config: Config | None = None) -> tuple[str, ...]:
    """What `run(stages=…)` may ask for: every stage's name and group."""
    graph = stage_graph(config or Config())
    return tuple(dict.fromkeys(n for s in graph.values() for n in (s.name, s.group) if n))


# --- steps 1–4 ------------------------------------------------------------------------------

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


# --- step 5 and the methods of step 6 ----------------------------------------------------------

def method_stages(config: Config, method: Method) -> list[Stage]:
    """The stages training a method's model(s): by its kind (kr.methods), or its own builder."""
    build = method.stages if callable(method.stages) else METHOD_STAGES[method.stages]
    return build(config, method)


def _student_stages(config: Config, method: Method) -> list[Stage]:
    """A student of kr.distill (kr and the baselines): one stage, after tuning; kr-dp's also
    after the DP-SGD model that labels its images."""
    after = ("teacher", "generator", "selection", "tuning")
    if labeller(method.name) == "dpsgd":
        after += (stage_folder(dp_labeller(config)),)
    return [Stage(stage_folder(method.name), after, (), _student, params={"method": method.name},
                  model=method.name, group=method.name)]


def dp_labeller(config: Config) -> str:
    """The DP-SGD model that labels kr-dp's images: the largest target ε, the most accurate."""
    return dp_name(max(config.dpsgd.epsilon_list()))


def _student(ctx: Context, inputs: dict[str, Done], folder: Path, method: str) -> dict:
    """Step 5 (and the baselines of step 6): the selected checkpoint with the tuned knobs."""
    tuning = inputs["tuning"].outputs
    generator = load_generator(selected_checkpoint(inputs)).to(ctx.device)
    if labeller(method) == "dpsgd":
        # kr-dp: the DP-SGD model labels every image and no sample is filtered, so the real
        # images reach the labels only through DP-SGD (its ε holds for them by post-processing);
        # the generator, and the checkpoint and knob the teacher's students chose, are not private
        dp = inputs[stage_folder(dp_labeller(ctx.config))]
        out = train_student(ctx.data, ctx.config, generator, load_classifier(dp.path).to(ctx.device), method,
                            tuning["knobs"], 0.0, folder, on_epoch=ctx.log_to(stage_folder(method)))
        return {**out, "labeller": {"model": dp.model, **{k: dp.outputs.get(k) for k in
                                                          ("epsilon", "delta", "guarantee_holds")}}}
    teacher = load_classifier(inputs["teacher"].path).to(ctx.device)
    # kr-one: the labels of one network, the images of KR (an ensemble teacher still filters)
    one = teacher.members[0] if labeller(method) == "one" and isinstance(teacher, Ensemble) else None
    return train_student(ctx.data, ctx.config, generator, teacher, method, tuning["knobs"],
                         tuning["threshold"], folder, on_epoch=ctx.log_to(stage_folder(method)),
                         tag=inputs["tuning"].key, labeller=one)  # students of one tuning share synthetic sets


def _dpsgd_stages(config: Config, method: Method) -> list[Stage]:
    """The `dpsgd` method: one stage, and one model, per target ε (adding an ε keeps the others)."""
    return [Stage(stage_folder(dp_name(eps)), (), dpsgd.READS, _dpsgd, params={"epsilon": eps},
                  model=dp_name(eps), group=method.name)
            for eps in config.dpsgd.epsilon_list()]


def _dpsgd(ctx: Context, inputs: dict[str, Done], folder: Path, epsilon: float) -> dict:
    return dpsgd.train_dpsgd(ctx.data, ctx.config, epsilon, folder, ctx.device,
                             on_epoch=ctx.log_to(stage_folder(dp_name(epsilon))))


# A method's `stages` (kr.methods) names one of these kinds.
METHOD_STAGES: dict[str, Callable[[Config, Method], list[Stage]]] = {
    "student": _student_stages, "dpsgd": _dpsgd_stages}


# --- step 6 -------------------------------------------------------------------------------

def _evaluate(ctx: Context, inputs: dict[str, Done], folder: Path) -> dict:
    return evaluate_models(ctx.data, {d.model: d.path for d in inputs.values() if d.model}, ctx.device)


def _audit_shipped(ctx: Context, inputs: dict[str, Done], folder: Path, outputs: int = 3) -> dict:
    """Every model the request trained; the memorisation check where it selected and tuned a
    generator.  (`outputs` names what the stage writes: older stages lack scores.npz and ROC
    curves (2), or the copy search over every member (3).)"""
    models = {d.model: d.path for d in inputs.values() if d.model}
    out = {"attacks": shipped_audit(ctx.data, ctx.config, models, ctx.device, folder)}
    if "tuning" in inputs and "real" in models:
        out["memorisation"] = run_memorisation(
            ctx.data, ctx.config.audit.memorisation_samples, ctx.config.seed, selected_checkpoint(inputs),
            models["real"], inputs["tuning"].outputs, ctx.config.distill.prior, folder, ctx.device)
    return out


# --- the audits (opt-in) -------------------------------------------------------------------------

def _targets(config: Config, models: tuple[str, ...]) -> tuple[str, ...]:
    """The models the audits attack: audit.targets among the run's, else all of them (kr audit
    refuses a target the run lacks before it starts: kr.audit.targets)."""
    wanted = [m.strip() for m in config.audit.targets.split(",") if m.strip() in models]
    return tuple(dict.fromkeys(wanted)) or models


def replay_reads(graph: dict[str, Stage], targets: tuple[str, ...]) -> tuple[str, ...]:
    """The config a replay of the procedure for `targets` reads: what its stages read."""
    names = request(graph, audit.reference_stages(targets))
    return tuple(dict.fromkeys(r for n in names for r in graph[n].reads))


def _reference_audit(config: Config, targets: tuple[str, ...], graph: dict[str, Stage]) -> list[Stage]:
    """Experiment 1's reference runs, then the attacks on every target (kr audit RUN)."""
    reads = replay_reads(graph, targets)
    refs = [Stage(f"audit/references/r{i}", (), reads, _reference_run, params={"index": i, "methods": list(targets)},
                  opt_in=True, group="references", nested=True) for i in range(config.audit.references)]
    models = tuple(stage_folder(m) for m in targets)
    return [*refs, Stage("audit/attacks", (*(r.name for r in refs), *models), ("seed", "audit.bootstrap"),
                         _attacks, params={"methods": list(targets)}, opt_in=True, trains=False,
                         publishes=_publish_attacks)]


def _reference_run(ctx: Context, inputs: dict[str, Done], folder: Path, index: int, methods: list[str]) -> dict:
    """One reference run: the whole procedure on pool half `index`, in folder/run."""
    matrix = membership(ctx.config, ctx.data)
    config = audit.replay_config(reference_config(ctx.config, index), tuple(methods))
    ctx.replay(config, out=folder / "run", device=ctx.device, stages=audit.reference_stages(tuple(methods)),
               data=subset(ctx.data, matrix[index], index))
    return {"members": int(matrix[index].sum()), "seed": config.seed}


def _attacks(ctx: Context, inputs: dict[str, Done], folder: Path, methods: list[str]) -> dict:
    refs = {n.rsplit("/", 1)[1]: d.path / "run" for n, d in inputs.items() if n.startswith("audit/references/")}
    return audit.attack(folder, ctx.config, ctx.data, tuple(methods), ctx.run, refs, ctx.device)


def _canary_audit(config: Config, targets: tuple[str, ...], graph: dict[str, Stage]) -> list[Stage]:
    """The one-run canary audit (kr audit RUN --canaries M): plant, one run, score."""
    models = tuple(stage_folder(m) for m in targets)
    calibration = tuple(n for n in graph if n.startswith("audit/references/")) \
        if config.audit.canary_calibration == "references" else ()
    reads = ("audit.canaries", "audit.canary_stress", "audit.canary_copies", "audit.canary_calibration",
             "audit.canary_source")
    return [
        Stage("audit/canaries/plant", (*models, *calibration), reads, _plant,
              params={"methods": list(targets), "scorer": canaries.scorer_version()}, opt_in=True,
              group="canaries", trains=False,
              keep="canaries are never scored under another rule than the one they were planted under; plant "
                   "fresh ones with `kr audit RUN --canaries M --replant` (fresh bits, one fresh canary run)"),
        Stage("audit/canaries/run", ("audit/canaries/plant",), replay_reads(graph, targets), _canary_run,
              params={"methods": list(targets)}, opt_in=True, group="canaries", nested=True),
        Stage("audit/canaries/score", ("audit/canaries/plant", "audit/canaries/run", *models, *calibration),
              ("seed", "audit.bootstrap", "dpsgd.delta"), _score, params={"methods": list(targets)},
              opt_in=True, group="canaries", trains=False, publishes=_publish_canaries),
    ]


def _plant(ctx: Context, inputs: dict[str, Done], folder: Path, methods: list[str], scorer: str) -> dict:
    return canaries.plant_stage(folder, ctx.config, ctx.data, tuple(methods), _calibration(ctx, inputs, methods))


def _calibration(ctx: Context, inputs: dict[str, Done], methods: list[str]) -> dict[str, tuple[Path, dict]]:
    """The runs without canaries that calibrate the scores: the shipped run ('.') and any
    reference runs the stage reads, each as (its folder, {model: content hash})."""
    runs = {".": (ctx.run, {m: inputs[stage_folder(m)].content for m in methods})}
    for name, d in inputs.items():
        if name.startswith("audit/references/"):
            runs[f"{name}/run"] = (d.path / "run", {m: d.content for m in methods})
    return runs


def _canary_run(ctx: Context, inputs: dict[str, Done], folder: Path, methods: list[str]) -> dict:
    """The whole procedure once, with the fresh secret seed, on train ∪ the included canaries."""
    config, data = canaries.canary_run_inputs(inputs["audit/canaries/plant"].path, ctx.config, ctx.data,
                                              tuple(methods))
    trained = ctx.replay(config, out=folder / "run", device=ctx.device,
                         stages=audit.reference_stages(tuple(methods)), data=data)
    keep = ("epsilon", "guarantee_holds", "test")
    return {"train": len(data.train),
            "methods": {m: {k: v for k, v in e.items() if k in keep} for m, e in trained["methods"].items()}}


def _score(ctx: Context, inputs: dict[str, Done], folder: Path, methods: list[str]) -> dict:
    return canaries.score(folder, ctx.config, ctx.data, tuple(methods), inputs["audit/canaries/plant"].path,
                          inputs["audit/canaries/run"], _calibration(ctx, inputs, methods), ctx.device)


# Every audit: a function of (config, targets, the graph so far) declaring its opt-in stages.
AUDITS: list[Callable[[Config, tuple[str, ...], dict[str, Stage]], list[Stage]]] = [_reference_audit, _canary_audit]


# --- results.json: each stage's part, folded by the one writer ------------------------------

def _publish_model(results: dict, done: Done) -> None:
    """A stage that ships a model publishes its method's fields (kr.methods) unless it says otherwise."""
    results["methods"][done.model] = {k: done.outputs[k] for k in method_of(done.model).fields if k in done.outputs}


def _publish_generator(results: dict, done: Done) -> None:
    results["generator"] = {"kind": done.outputs["kind"], "checkpoints": done.outputs["checkpoints"]}


def _publish_quality(results: dict, done: Done) -> None:
    results.setdefault("generator", {})["quality"] = done.outputs


def _publish_field(field: str, results: dict, done: Done) -> None:
    results[field] = done.outputs


def _publish_evaluation(results: dict, done: Done) -> None:
    for m, s in done.outputs.items():
        results["methods"][m].update(s)
    results["cas_gap_pp"] = cas_gap_pp(results["methods"])


def _publish_shipped_audit(results: dict, done: Done) -> None:
    results["audit_shipped"] = done.outputs["attacks"]
    if "memorisation" in done.outputs:
        results["memorisation"] = done.outputs["memorisation"]


def _publish_attacks(results: dict, done: Done) -> None:
    results.update(results_fields(done.outputs, results.get("audit_shipped", {})))


def _publish_canaries(results: dict, done: Done) -> None:
    results.update(canary_fields(done.outputs))


def _results(ctx: Context, inputs: dict[str, Done], folder: Path) -> dict:
    """results.json, its one writer: each stage that ran (or whose record is current) adds the
    part it publishes, in the graph's order."""
    data, config = ctx.data, ctx.config
    results: dict = {"dataset": data.name, "preset": config.preset, "seed": config.seed,
                     "task": data.task, "methods": {}}
    for d in inputs.values():
        publish = d.publishes or (_publish_model if d.model else None)  # a model stage: its method's fields
        if publish is not None:
            publish(results, d)
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
    fake = load_generator(selected_checkpoint(inputs)).sample(
        grid_labels(data.n_classes, config.generator.grid_per_class), grid_seed(config))
    fake = fake.view(data.n_classes, -1, *fake.shape[1:])[:, :k].reshape(-1, *fake.shape[1:])
    save_class_rows(real, fake, list(data.label_names), path,
                    f"synthetic ({generator.outputs['kind']}, checkpoint {selection.outputs['selected']})")

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
    dpsgd     the DP-SGD baseline on the real images, one model per target ε (kr.privacy.dp)
    evaluate  step 6: every method's test ACC/AUC, read once, after every choice is made
    audit     step 6, privacy: reference-free attacks on the shipped models (members = train,
              non-members = test) and the memorisation check of the synthetic data; the
              reference-based attacks need reference runs: `kr audit RUN` (kr.privacy.audit)
    report    results.json, then RUN/report/report.html and report.md (kr.report)

Each stage is cached under a key that hashes its config and the keys of the stages it reads,
so a rerun resumes, and a changed setting reruns only its stage and those downstream.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass, fields
from functools import partial
from pathlib import Path
from typing import Callable

import torch

from kr import __version__
from kr.artifacts import write_json
from kr.config import Config, DPConfig
from kr.data import ImageDataset, load_dataset
from kr.distill import train_student
from kr.evaluation import cas_gap_pp, evaluate_models
from kr.executors import InProcess, make_executor
from kr.generation import grid_labels, grid_seed, judge_checkpoints, train_generator
from kr.generators import load_generator
from kr.generators.quality import save_class_rows, save_grid
from kr.graph import Stage, closure, keys, walk
from kr.methods import DP_PREFIX, STUDENTS, dp_name, is_dp, stage_folder
from kr.models import load_classifier
from kr.privacy.dp import train_dpsgd
from kr.privacy.results import recorded_audit
from kr.privacy.scoring import shipped_audit
from kr.report import write_report
from kr.rundir import RunDir, append_metrics, evaluated_key
from kr.selection import optimise_checkpoint, tune
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


STAGES = ("teacher", "judge", "generator", "quality", "selection", "tuning", "kr", "synthetic", "regen",
          "soft", "dpsgd", "audit", "report")  # what `run(stages=…)` may ask for


@dataclass(frozen=True)
class Context:
    """What every stage gets besides its inputs; picklable, so a worker process rebuilds it."""
    data: ImageDataset
    config: Config
    device: str
    run: Path
    fanout: tuple | None = None  # the executor's spec: selection and tuning spread candidates on it

    @contextmanager
    def executor(self):
        executor = make_executor(*self.fanout) if self.fanout else InProcess()
        try:
            yield executor
        finally:
            executor.close()

    def log_to(self, stage: str) -> Callable[[dict], None]:
        return partial(append_metrics, self.run, stage)


def stage_graph(config: Config) -> dict[str, Stage]:
    """The method as a graph, in its order: each stage, what it needs, the config it reads."""
    guided = ("teacher",) if config.generator.uses_teacher() else ()
    common = ("seed", "data.size")
    graph = [
        # Step 1: the teacher, trained on the real train split and selected on validation.
        Stage("teacher", (), (*common, "teacher"), _teacher),
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
    # Step 5: GKD, and the baselines of step 6 that each lack one of its ingredients.
    graph += [Stage(stage_folder(m), ("teacher", "generator", "selection", "tuning"), (),
                    _student, params={"method": m})
              for m in STUDENTS if m == "kr" or m in config.methods_to_run()]
    # The standard alternative: DP-SGD on the real images, one model per target ε.
    if "dpsgd" in config.methods_to_run():
        graph += [Stage(stage_folder(dp_name(eps)), (), (*common, *DP_READS), _dpsgd,
                        params={"epsilon": eps}) for eps in config.dpsgd.epsilon_list()]
    return {s.name: s for s in graph}


# DP-SGD selects its epoch by the teacher's metric (and, with dpsgd.model=cnn, trains the
# teacher's architecture with its crop); each model's ε is its own parameter, so adding an ε to
# the list keeps the others.
DP_READS = ("teacher.model", "teacher.train.crop_padding", "teacher.train.select_metric",
            *(f"dpsgd.{f.name}" for f in fields(DPConfig) if f.name != "epsilons"))


def _after(models: list[str], audit: bool, kr: bool) -> list[Stage]:
    """Step 6: the test split, read once for what validation chose, then the shipped models'
    privacy (reference-free attacks, and whether the generator copies train images)."""
    out = [Stage("evaluate", tuple(models), (), _evaluate, trains=False)]
    if audit:
        needs = ("evaluate", *models, *(("selection", "tuning") if kr else ()))
        # "outputs" names what the stage writes: older stages lack scores.npz and ROC curves
        out.append(Stage("audit/shipped", needs, ("audit.bootstrap", "audit.memorisation_samples",
                                                   "distill.prior"), _audit_shipped,
                         params={"outputs": 2}, trains=False))
    return out


def _teacher(ctx: Context, inputs: dict, folder: Path) -> dict:
    return train_teacher(ctx.data, ctx.config, folder, ctx.device, on_epoch=ctx.log_to("teacher"))


def _generator(ctx: Context, inputs: dict, folder: Path) -> dict:
    return train_generator(ctx.data, ctx.config, folder, ctx.device, on_log=ctx.log_to("generator"),
                           teacher_dir=ctx.run / "teacher")


def _judge(ctx: Context, inputs: dict, folder: Path) -> dict:
    return train_judge(ctx.data, ctx.config, folder, ctx.device, on_epoch=ctx.log_to("judge"))


def _quality(ctx: Context, inputs: dict, folder: Path) -> dict:
    return judge_checkpoints(ctx.data, ctx.config, ctx.run / "generator", ctx.run / "teacher",
                             ctx.run / "judge", ctx.device)


def _selection(ctx: Context, inputs: dict, folder: Path) -> dict:
    with ctx.executor() as executor:
        return optimise_checkpoint(ctx.data, ctx.config, ctx.run / "generator", ctx.run / "teacher",
                                   ctx.device, folder, executor=executor)


def _checkpoint(ctx: Context, selection: dict) -> Path:
    return ctx.run / "generator" / "checkpoints" / selection["selected"]


def _tuning(ctx: Context, inputs: dict, folder: Path) -> dict:
    selection = inputs["selection"]
    chosen = next(c for c in selection["candidates"] if c["name"] == selection["selected"])
    with ctx.executor() as executor:
        return tune(ctx.data, ctx.config, _checkpoint(ctx, selection), ctx.run / "teacher", ctx.device,
                    selected=chosen, folder=folder, executor=executor)


def _student(ctx: Context, inputs: dict, folder: Path, method: str) -> dict:
    tuning = inputs["tuning"]
    return train_student(ctx.data, ctx.config, load_generator(_checkpoint(ctx, inputs["selection"])).to(ctx.device),
                         load_classifier(ctx.run / "teacher").to(ctx.device), method, tuning["knobs"],
                         tuning["threshold"], folder, on_epoch=ctx.log_to(stage_folder(method)),
                         tag=(ctx.run / "tuning" / "key").read_text())  # students of one tuning share sets


def _dpsgd(ctx: Context, inputs: dict, folder: Path, epsilon: float) -> dict:
    return train_dpsgd(ctx.data, ctx.config, epsilon, folder, ctx.device,
                       on_epoch=ctx.log_to(stage_folder(dp_name(epsilon))))


def _models(ctx: Context, names) -> dict[str, Path]:
    return {("real" if n == "teacher" else n.split("/", 1)[1]): ctx.run / n
            for n in names if n == "teacher" or n.startswith("methods/")}


def _evaluate(ctx: Context, inputs: dict, folder: Path) -> dict:
    return evaluate_models(ctx.data, _models(ctx, inputs), ctx.device)


def _audit_shipped(ctx: Context, inputs: dict, folder: Path, outputs: int = 2) -> dict:
    models = _models(ctx, inputs)
    kr = (_checkpoint(ctx, inputs["selection"]), inputs["tuning"]) if "kr" in models else None
    return _privacy(ctx.data, ctx.config, models, folder, ctx.device, kr)


def _stage_task(ctx: Context, name: str, inputs: dict, folder: str) -> dict:
    """One stage, where an executor runs it (this process, a worker, a Ray node)."""
    graph = stage_graph(ctx.config)
    graph.update({s.name: s for s in _after(list(inputs), True, "selection" in inputs)})
    return graph[name].fn(ctx, inputs, Path(folder), **graph[name].params)


def run(config: Config, out: str | Path | None = None, data_dir: str | None = None,
        device: str = "auto", stages: tuple[str, ...] = STAGES,
        data: ImageDataset | None = None, wait: bool = False, executor=None) -> dict:
    """Run the requested stages and what they need (dataset validated before anything is
    written) and return results.  `data` replaces the configured dataset: the audit's
    reference runs pass a pool subset.  `wait`: queue behind another kr process using the run
    directory instead of stopping.  `executor` (kr.executors): where independent stages run."""
    wanted = stages
    dev = str(resolve_device(device))
    start = time.perf_counter()
    data = data if data is not None else prepare(config, data_dir)
    timings = {"prepare": round(time.perf_counter() - start, 2)}
    graph = stage_graph(config)
    asked = [n for n in graph if n in wanted or n.split("/", 1)[-1] in wanted
             or n.startswith(f"methods/{DP_PREFIX}") and "dpsgd" in wanted]
    order = closure(graph, asked)
    models = [n for n in order if n == "teacher" or n.startswith("methods/")]
    if models:
        closing = _after(models, "audit" in wanted, stage_folder("kr") in order)
        graph.update({s.name: s for s in closing})
        order += [s.name for s in closing]
    run_dir = RunDir(out or Path("runs") / default_run_name(config), config, data, wait=wait)
    executor = executor or InProcess()
    try:
        base = {"kr": __version__, "data": data.fingerprint}
        key_inputs = keys(graph, config.to_dict(), base)
        ctx = Context(data, config, dev, run_dir.path, executor.spec())
        outputs = walk(graph, order, key_inputs, run_dir, executor,
                       lambda name, inputs, folder: (_stage_task, (ctx, name, inputs, str(folder))))
        results = _results(config, data, outputs, run_dir.path)
        stage_times = run_dir.manifest().get("stages", {})
        timings.update({name: stage_times[name]["seconds"] for name in order if name in stage_times})
        results["timings_s"] = timings
        results["run_dir"] = str(run_dir.path)
        write_json(run_dir.path / "results.json", results)
        # Last: the page a team reads (kr.report), rebuilt from the run directory alone.
        if "report" in wanted and models:
            _class_rows(data, config, outputs.get("selection"), run_dir.path / "report" / "classes.png")
            results["report"] = str(write_report([run_dir.path]))
        return results
    finally:
        executor.close()
        run_dir.close()


def _results(config: Config, data: ImageDataset, outputs: dict[str, dict], run: Path) -> dict:
    """results.json from the stages' outputs."""
    results: dict = {"dataset": data.name, "preset": config.preset, "seed": config.seed,
                     "task": data.task, "methods": {}}
    if "teacher" in outputs:
        results["methods"]["real"] = {"best_epoch": outputs["teacher"]["best_epoch"]}
    if "generator" in outputs:
        gen = outputs["generator"]
        results["generator"] = {"kind": gen["kind"], "checkpoints": gen["checkpoints"]}
        if "quality" in outputs:
            results["generator"]["quality"] = outputs["quality"]
    for name in ("selection", "tuning"):
        if name in outputs:
            results[name] = outputs[name]
    for name, out in outputs.items():
        if not name.startswith("methods/"):
            continue
        method = name.split("/", 1)[1]
        fields = ("best_epoch", "epsilon", "epsilon_target", "delta", "noise_multiplier", "accountant",
                  "model") if is_dp(method) \
            else ("best_epoch", "mode", "soft_labels", "knobs", "threshold", "images_generated")
        results["methods"][method] = {k: out[k] for k in fields if k in out}  # older runs lack model
    if "evaluate" in outputs:
        for m, s in outputs["evaluate"].items():
            results["methods"][m].update(s)
        results["cas_gap_pp"] = cas_gap_pp(results["methods"])
    if "audit/shipped" in outputs:
        privacy = outputs["audit/shipped"]
        results["audit_shipped"] = privacy["attacks"]
        if "memorisation" in privacy:
            results["memorisation"] = privacy["memorisation"]
        evaluated = evaluated_key(run)
        results.update(recorded_audit(run, evaluated, results["audit_shipped"]))
    return results


def _privacy(data: ImageDataset, config: Config, models: dict[str, Path], folder: Path, dev,
             student_data: tuple[Path, dict] | None) -> dict:
    from kr.privacy.memorisation import run_memorisation

    out = {"attacks": shipped_audit(data, config, models, dev, folder)}
    if student_data is not None:  # what the KR student trained on: checkpoint and tuned knobs
        checkpoint, tuning = student_data
        out["memorisation"] = run_memorisation(
            data, config.audit.memorisation_samples, config.seed, checkpoint,
            Path(models["real"]), tuning, config.distill.prior, folder, dev)
    return out


def _class_rows(data: ImageDataset, config: Config, selection: dict | None, path: Path) -> None:
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
    if selection is None:
        save_grid(real, data.n_classes, path.with_name("real_grid.png"))
        return
    ckpt = path.parent.parent / "generator" / "checkpoints" / selection["selected"]
    fake = load_generator(ckpt).sample(grid_labels(data.n_classes, config.generator.grid_per_class),
                                       grid_seed(config))
    fake = fake.view(data.n_classes, -1, *fake.shape[1:])[:, :k].reshape(-1, *fake.shape[1:])
    save_class_rows(real, fake, data.n_classes, path)

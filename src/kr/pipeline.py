"""`kr run`: the Knowledge Recycling method, step by step, with each stage cached.

    prepare   load and validate the dataset, resolve the config, open the run directory
    teacher   step 1: a classifier on the real train split, selected on validation
    generator step 2: a class-conditional generator, checkpointed every checkpoint_kimg
    quality   every checkpoint judged by the teacher on the validation split
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
from pathlib import Path

import torch

from kr import __version__
from kr.artifacts import write_json
from kr.config import Config
from kr.data import ImageDataset, load_dataset
from kr.distill import train_student
from kr.evaluation import cas_gap_pp, evaluate_models
from kr.generation import judge_checkpoints, train_generator
from kr.generators import load_generator
from kr.models import load_classifier
from kr.generators.quality import save_grid
from kr.methods import STUDENTS, dp_name, folder as model_folder, stage_folder
from kr.privacy.audit import recorded_audit
from kr.privacy.dp import train_dpsgd
from kr.report import write_report
from kr.selection import optimise_checkpoint, tune
from kr.rundir import RunDir, stage_key
from kr.teacher import train_teacher
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


STAGES = ("teacher", "generator", "quality", "selection", "tuning", "kr", "synthetic", "regen",
          "soft", "dpsgd", "audit", "report")


def run(config: Config, out: str | Path | None = None, data_dir: str | None = None,
        device: str = "auto", stages: tuple[str, ...] = STAGES,
        data: ImageDataset | None = None, wait: bool = False) -> dict:
    """Run the requested stages (dataset validated before anything is written) and return results.

    `kr` needs the stages before it; asking for it alone runs them (from cache when done).
    `data` replaces the configured dataset: the audit's reference runs pass a pool subset.
    `wait`: queue behind another kr process using the run directory instead of stopping."""
    dev = resolve_device(device)
    start = time.perf_counter()
    data = data if data is not None else prepare(config, data_dir)
    timings = {"prepare": round(time.perf_counter() - start, 2)}
    chosen = config.methods_to_run()
    wanted = [s for s in stages if s not in (*STUDENTS, "dpsgd") or s == "kr" or s in chosen]
    if any(s in STUDENTS for s in wanted):  # students need the whole chain before them
        wanted = [s for s in STAGES if s in {"teacher", "generator", "selection", "tuning", *wanted}]
    if "generator" in wanted and config.generator.uses_teacher() and "teacher" not in wanted:
        wanted.insert(0, "teacher")  # teacher guidance trains the generator with the teacher
    run_dir = RunDir(out or Path("runs") / default_run_name(config), config, data, wait=wait)
    tree = config.to_dict()
    try:
        base = {"kr": __version__, "data": data.fingerprint, "size": config.data.size,
                "seed": config.seed}
        keys = {"teacher": {**base, "teacher": tree["teacher"]}}
        keys["generator"] = {**base, "generator": tree["generator"]}
        if config.generator.uses_teacher():  # teacher guidance: a new teacher, a new generator
            keys["generator"]["teacher"] = keys["teacher"]
        keys["quality"] = {"teacher": keys["teacher"], "generator": keys["generator"]}
        # Short students depend on the teacher, the generator, and the distillation settings;
        # the grids of the tuning stage do not change which checkpoint is selected.
        keys["selection"] = {**keys["quality"], "distill": tree["distill"],
                             **{k: tree["select"][k] for k in ("epochs", "max_kimg", "metric")}}
        keys["tuning"] = {"selection": keys["selection"], "select": tree["select"]}
        for m in STUDENTS:
            keys[m] = {"tuning": keys["tuning"], "method": m}
        results: dict = {"dataset": data.name, "preset": config.preset, "seed": config.seed,
                         "task": data.task, "methods": {}}
        log_to = lambda stage: (lambda record: run_dir.log_metrics(stage, record))  # noqa: E731
        models: dict[str, Path] = {}

        # Step 1: the teacher, trained on the real train split and selected on validation.
        if "teacher" in wanted:
            teacher = run_dir.stage("teacher", keys["teacher"], lambda folder: train_teacher(
                data, config, folder, dev, on_epoch=log_to("teacher")))
            models["real"] = model_folder(run_dir.path, "real")
            results["methods"]["real"] = {"best_epoch": teacher["best_epoch"]}
        # Step 2: the class-conditional generator, with a checkpoint every checkpoint_kimg.
        if "generator" in wanted:
            gen = run_dir.stage("generator", keys["generator"], lambda folder: train_generator(
                data, config, folder, dev, on_log=log_to("generator"),
                teacher_dir=run_dir.path / "teacher"))
            results["generator"] = {"kind": gen["kind"], "checkpoints": gen["checkpoints"]}
        # Each checkpoint judged by the teacher on the validation split.
        if "quality" in wanted:
            q = run_dir.stage("quality", keys["quality"], lambda folder: judge_checkpoints(
                data, config, run_dir.path / "generator", run_dir.path / "teacher", dev))
            results["generator"]["quality"] = q
        # Step 3: checkpoint optimisation, by the validation accuracy of a short GKD student.
        if "selection" in wanted:
            selection = run_dir.stage("selection", keys["selection"], lambda folder: optimise_checkpoint(
                data, config, run_dir.path / "generator", run_dir.path / "teacher", dev, folder))
            results["selection"] = selection
            checkpoint = run_dir.path / "generator" / "checkpoints" / selection["selected"]
        # Step 4: tuning the generator's knob and Dynamic Sample Filtering on validation.
        if "tuning" in wanted:
            chosen = next(c for c in selection["candidates"] if c["name"] == selection["selected"])
            tuning = run_dir.stage("tuning", keys["tuning"], lambda folder: tune(
                data, config, checkpoint, run_dir.path / "teacher", dev, selected=chosen, folder=folder))
            results["tuning"] = tuning
        # Step 5: GKD, and the baselines of step 6 that each lack one of its ingredients.
        for method in (m for m in STUDENTS if m in wanted):
            name = stage_folder(method)
            student = run_dir.stage(name, keys[method], lambda folder, method=method: train_student(
                data, config, load_generator(checkpoint).to(dev),
                load_classifier(run_dir.path / "teacher").to(dev), method, tuning["knobs"],
                tuning["threshold"], folder, on_epoch=log_to(name),
                tag=stage_key(keys["tuning"])))
            models[method] = model_folder(run_dir.path, method)
            results["methods"][method] = {k: student[k] for k in (
                "best_epoch", "mode", "soft_labels", "knobs", "threshold", "images_generated")}
        # The standard alternative: DP-SGD on the real images, at each target ε.
        if "dpsgd" in wanted:
            dp_settings = {k: v for k, v in tree["dpsgd"].items() if k != "epsilons"}
            for eps in config.dpsgd.epsilon_list():
                name = dp_name(eps)
                keys[name] = {**base, "teacher": tree["teacher"]["model"], "dpsgd": dp_settings, "epsilon": eps}
                dp = run_dir.stage(stage_folder(name), keys[name], lambda folder, eps=eps, name=name: train_dpsgd(
                    data, config, eps, folder, dev, on_epoch=log_to(stage_folder(name))))
                models[name] = model_folder(run_dir.path, name)
                results["methods"][name] = {k: dp[k] for k in (
                    "best_epoch", "epsilon", "epsilon_target", "delta", "noise_multiplier")}
        # Step 6: the test split, read once, for what validation chose.
        if models:
            scores = run_dir.stage("evaluate", {m: stage_key(keys["teacher" if m == "real" else m])
                                                for m in models},
                                   lambda folder: evaluate_models(data, models, dev))
            for m, s in scores.items():
                results["methods"][m].update(s)
            results["cas_gap_pp"] = cas_gap_pp(results["methods"])
        # Step 6, privacy: what the shipped models leak without reference runs, and whether the
        # generator copies train images.  `kr audit` adds the reference-based attacks.
        if models and "audit" in wanted:
            evaluated = run_dir.manifest()["stages"]["evaluate"]["key"]
            settings = {k: tree["audit"][k] for k in ("bootstrap", "memorisation_samples")}
            # "outputs" names what the stage writes: older stages lack scores.npz and ROC curves
            privacy = run_dir.stage("audit/shipped", {"evaluate": evaluated, **settings, "outputs": 2},
                                    lambda folder: _privacy(
                data, config, models, folder, dev, (checkpoint, tuning) if "kr" in models else None))
            results["audit_shipped"] = privacy["attacks"]
            if "memorisation" in privacy:
                results["memorisation"] = privacy["memorisation"]
            results.update(recorded_audit(run_dir.path, evaluated, results["audit_shipped"]))
        stage_times = run_dir.manifest().get("stages", {})
        ran = [s for s in ("teacher", "generator", "quality", "selection", "tuning") if s in wanted]
        ran += [stage_folder(m) for m in models if m != "real"]
        ran += ["evaluate"] + (["audit/shipped"] if "audit" in wanted else [])
        timings.update({name: stage_times[name]["seconds"] for name in ran if name in stage_times})
        results["timings_s"] = timings
        results["run_dir"] = str(run_dir.path)
        write_json(run_dir.path / "results.json", results)
        # Last: the page a team reads (kr.report), rebuilt from the run directory alone.
        if "report" in wanted and models:
            _real_grid(data, config, run_dir.path / "report" / "real_grid.png")
            results["report"] = str(write_report([run_dir.path]))
        return results
    finally:
        run_dir.close()


def _privacy(data: ImageDataset, config: Config, models: dict[str, Path], folder: Path, dev,
             student_data: tuple[Path, dict] | None) -> dict:
    from kr.privacy.audit import shipped_audit
    from kr.privacy.memorisation import run_memorisation

    out = {"attacks": shipped_audit(data, config, models, dev, folder)}
    if student_data is not None:  # what the KR student trained on: checkpoint and tuned knobs
        checkpoint, tuning = student_data
        out["memorisation"] = run_memorisation(
            data, config.audit.memorisation_samples, config.seed, checkpoint,
            Path(models["real"]), tuning, config.distill.prior, folder, dev)
    return out


def _real_grid(data: ImageDataset, config: Config, path: Path) -> None:
    """The first train images of each class, beside the synthetic grid (the report does not
    keep the data, so it is drawn here, once)."""
    if path.is_file():
        return
    k = min(config.generator.grid_per_class, *data.class_counts("train"))
    if k < 1:  # a class without train images (possible in multi-label data): no grid
        return
    labels = data.train.labels if data.train.labels.dim() == 1 else data.train.labels.argmax(1)
    rows = [data.train.images[(labels == c).nonzero().flatten()[:k]] for c in range(data.n_classes)]
    path.parent.mkdir(parents=True, exist_ok=True)
    save_grid(torch.cat(rows), data.n_classes, path)


"""`kr run`: the Knowledge Recycling method, step by step, with each stage cached.

    prepare   load and validate the dataset, resolve the config, open the run directory
    teacher   step 1: a classifier on the real train split, selected on validation
    generator step 2: a class-conditional generator, checkpointed every checkpoint_kimg
    quality   every checkpoint judged by the teacher on the validation split
    (checkpoint optimisation, tuning, distillation and the audit are added as their
     stages land; see the README's roadmap)
    results   results.json and the summary table
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from kr import __version__
from kr.artifacts import write_json
from kr.config import Config
from kr.data import ImageDataset, load_dataset
from kr.generation import judge_checkpoints, train_generator
from kr.rundir import RunDir
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


STAGES = ("teacher", "generator", "quality")


def run(config: Config, out: str | Path | None = None, data_dir: str | None = None,
        device: str = "auto", stages: tuple[str, ...] = STAGES) -> dict:
    """Run the requested stages (dataset validated before anything is written) and return results."""
    dev = resolve_device(device)
    start = time.perf_counter()
    data = prepare(config, data_dir)
    timings = {"prepare": round(time.perf_counter() - start, 2)}
    run_dir = RunDir(out or Path("runs") / default_run_name(config), config, data)
    tree = config.to_dict()
    try:
        base = {"kr": __version__, "data": data.fingerprint, "size": config.data.size,
                "seed": config.seed}
        keys = {"teacher": {**base, "teacher": tree["teacher"]},
                "generator": {**base, "generator": tree["generator"]}}
        keys["quality"] = {"teacher": keys["teacher"], "generator": keys["generator"]}
        results: dict = {"dataset": data.name, "preset": config.preset, "seed": config.seed,
                         "task": data.task, "methods": {}}
        log_to = lambda stage: (lambda record: run_dir.log_metrics(stage, record))  # noqa: E731

        # Step 1: the teacher, trained on the real train split and selected on validation.
        if "teacher" in stages:
            teacher = run_dir.stage("teacher", keys["teacher"], lambda folder: train_teacher(
                data, config, folder, dev, on_epoch=log_to("teacher")))
            results["methods"]["real"] = {"val": teacher["val"], "test": teacher["test"],
                                          "best_epoch": teacher["best_epoch"]}
        # Step 2: the class-conditional generator, with a checkpoint every checkpoint_kimg.
        if "generator" in stages:
            gen = run_dir.stage("generator", keys["generator"], lambda folder: train_generator(
                data, config, folder, dev, on_log=log_to("generator")))
            results["generator"] = {"kind": gen["kind"], "checkpoints": gen["checkpoints"]}
        # Each checkpoint judged by the teacher on the validation split.
        if "quality" in stages:
            q = run_dir.stage("quality", keys["quality"], lambda folder: judge_checkpoints(
                data, config, run_dir.path / "generator", run_dir.path / "teacher", dev))
            results["generator"]["quality"] = q
        stage_times = run_dir.manifest().get("stages", {})
        timings.update({name: stage_times[name]["seconds"] for name in stages if name in stage_times})
        results["timings_s"] = timings
        results["run_dir"] = str(run_dir.path)
        write_json(run_dir.path / "results.json", results)
        return results
    finally:
        run_dir.close()

"""`kr run`: the Knowledge Recycling method, step by step, with each stage cached.

    prepare   load and validate the dataset, resolve the config, open the run directory
    teacher   step 1: a classifier on the real train split, selected on validation
    (generator, checkpoint optimisation, tuning, distillation and the audit are added as
     their stages land; see the README's roadmap)
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


def run(config: Config, out: str | Path | None = None, data_dir: str | None = None,
        device: str = "auto", stages: tuple[str, ...] = ("teacher",)) -> dict:
    """Run the requested stages (dataset validated before anything is written) and return results."""
    dev = resolve_device(device)
    start = time.perf_counter()
    data = prepare(config, data_dir)
    timings = {"prepare": round(time.perf_counter() - start, 2)}
    run_dir = RunDir(out or Path("runs") / default_run_name(config), config, data)
    try:
        base = {"kr": __version__, "data": data.fingerprint, "size": config.data.size,
                "seed": config.seed}
        results: dict = {"dataset": data.name, "preset": config.preset, "seed": config.seed,
                         "task": data.task, "methods": {}}
        if "teacher" in stages:
            teacher = run_dir.stage(
                "teacher", {**base, "teacher": config.to_dict()["teacher"]},
                lambda folder: train_teacher(data, config, folder, dev,
                                             on_epoch=lambda r: run_dir.log_metrics("teacher", r)))
            results["methods"]["real"] = {"val": teacher["val"], "test": teacher["test"],
                                          "best_epoch": teacher["best_epoch"]}
        stage_times = run_dir.manifest().get("stages", {})
        timings.update({name: stage_times[name]["seconds"] for name in stages if name in stage_times})
        results["timings_s"] = timings
        results["run_dir"] = str(run_dir.path)
        write_json(run_dir.path / "results.json", results)
        return results
    finally:
        run_dir.close()

"""Steps 3 and 4 of Knowledge Recycling: checkpoint optimisation and tuning.

Both ask one question of a candidate, "how good a student does its synthetic data train?",
answered by a short GKD student (`select.epochs`, at most `select.max_kimg` thousand synthetic
images) scored on the real validation split by `select.metric` (by default ACC + AUC, ties
broken by ACC).  The GaFi predecessors asked it of the test split; we never do.  Every
candidate uses the same student seed and synthetic seeds (common random numbers), so
candidates differ only in what is being chosen.

    checkpoint optimisation: every saved generator checkpoint, default knobs, no filtering;
    tuning:                  on the chosen checkpoint, the backend's knob (GAN latent σ,
                             diffusion guidance) with no filtering, then the Dynamic Sample
                             Filtering threshold at the best knob (a coordinate search).
Ties go to the earlier candidate: the earlier checkpoint, the smaller σ/guidance/threshold.

With a stage folder, each candidate's student resumes per epoch and its result is kept in
`trials/<candidate>.json`, so an interrupted stage (hours on PneumoniaMNIST on CPU) picks up
where it stopped instead of training every candidate again.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch

from kr.artifacts import read_json, write_json
from kr.config import Config
from kr.data import ImageDataset
from kr.executors import InProcess
from kr.distill import train_student
from kr.generators import BACKENDS, ConditionalGenerator, load_generator
from kr.models import load_classifier
from kr.synthetic import class_quotas
from kr.train import better

log = logging.getLogger(__name__)

def default_knobs(gen: ConditionalGenerator) -> dict[str, float]:
    """The tuned knob at its configured value (the field of that name in the backend's config
    section); none for a backend without one, whose sampler then uses its own default."""
    section = getattr(gen.config, gen.kind, None)
    if section is None or not hasattr(section, gen.tuned_knob):
        return {}
    return {gen.tuned_knob: float(getattr(section, gen.tuned_knob))}


def _trial(data: ImageDataset, config: Config, gen: ConditionalGenerator, teacher: torch.nn.Module,
           knobs: dict, threshold: float, folder: Path | None, name: str) -> dict:
    """One candidate's short student, or its kept result when an earlier attempt finished it."""
    done = folder / "trials" / f"{name}.json" if folder is not None else None
    if done and done.is_file():
        log.info("candidate %s: finished earlier, result reused", name)
        return read_json(done)
    start = time.perf_counter()
    r = train_student(data, config, gen, teacher, "kr", knobs, threshold,
                      folder=done.with_suffix("") if done else None,
                      epochs=student_epochs(data, config), seed_key="select",
                      select_metric=config.select.metric)
    row = {"knobs": knobs, "threshold": threshold, "val": r["val"], "best_epoch": r["best_epoch"],
           "filter_acceptance": r["filter_acceptance"],
           "seconds": round(time.perf_counter() - start, 2)}  # of the last attempt, if resumed
    if done:
        write_json(done, row)
    return row


def _trial_task(data: ImageDataset, config: Config, checkpoint: Path, teacher_dir: Path, device: str,
                knobs: dict | None, threshold: float, folder: Path | None, name: str) -> dict:
    """One candidate as an executor task: it loads its own generator and teacher (`knobs`
    None: the generator's default knob)."""
    gen = load_generator(checkpoint).to(device)
    return _trial(data, config, gen, load_classifier(teacher_dir).to(device),
                  default_knobs(gen) if knobs is None else knobs, threshold, folder, name)


def _run_trials(executor, calls: list[tuple]) -> list[dict]:
    """Candidates are independent short students: they run side by side on an executor."""
    return [out for out, _, _ in (executor or InProcess()).run([((_trial_task, c), None) for c in calls])]


def student_epochs(data: ImageDataset, config: Config) -> int:
    """A candidate's epochs: `select.epochs`, capped at `select.max_kimg` synthetic images."""
    d = config.distill
    return config.select.student_epochs(sum(class_quotas(data.train.labels, data.n_classes,
                                                         d.size_factor, d.prior)))


def _best(rows: list[dict], metric: str) -> dict:
    best = None
    for row in rows:  # strict improvement only: ties keep the earlier candidate
        if best is None or better(row["val"], best["val"], metric):
            best = row
    return best


def optimise_checkpoint(data: ImageDataset, config: Config, generator_dir: Path, checkpoints: list[dict],
                        teacher_dir: Path, device: torch.device, folder: Path | None = None,
                        executor=None) -> dict:
    """`checkpoints`: the generator stage's list of them.  `executor` (kr.executors): where the
    candidates' short students run (default: here, one after another)."""
    calls = [(data, config, generator_dir / "checkpoints" / info["name"], teacher_dir, str(device),
              None, 0.0, folder, info["name"]) for info in checkpoints]
    rows = []
    for info, trial in zip(checkpoints, _run_trials(executor, calls)):
        rows.append({"name": info["name"], "kimg": info["kimg"], **trial})
        log.info("checkpoint %s: short student val acc %.4f auc %.4f", info["name"],
                 rows[-1]["val"]["acc"], rows[-1]["val"]["auc"])
    best = _best(rows, config.select.metric)
    log.info("checkpoint optimisation: selected %s", best["name"])
    return {"split": "val", "metric": config.select.metric,
            "student_epochs": student_epochs(data, config), "selected": best["name"],
            "candidates": rows}


def tune(data: ImageDataset, config: Config, checkpoint_dir: Path, kind: str, teacher_dir: Path,
         device: torch.device, selected: dict | None = None, folder: Path | None = None,
         executor=None) -> dict:
    """`kind`: the generator's backend, which names the knob to tune (kr.generators.BACKENDS).
    `selected`: checkpoint optimisation's trial of this checkpoint (default knob, no
    filtering, same seeds): the grid point it matches is reused, not trained again.  The knob
    grid's candidates run side by side on `executor`, then the thresholds at the best knob."""
    knob = BACKENDS[kind].tuned_knob
    grid = getattr(config.select, knob)
    metric = config.select.metric
    thresholds = [t for t in config.select.threshold if t > 0]

    def reused(value: float) -> bool:
        return selected is not None and selected["knobs"] == {knob: value} and selected["threshold"] == 0

    task = (data, config, checkpoint_dir, teacher_dir, str(device))
    fresh = iter(_run_trials(executor, [(*task, {knob: v}, 0.0, folder, f"{knob}-{v:g}")
                                        for v in grid if not reused(v)]))
    trials = []
    for value in grid:
        trials.append({k: selected[k] for k in ("knobs", "threshold", "val", "best_epoch",
                                                "filter_acceptance", "seconds")} | {"reused": True}
                      if reused(value) else next(fresh))
        log.info("tuning %s=%g: val acc %.4f auc %.4f", knob, value, trials[-1]["val"]["acc"],
                 trials[-1]["val"]["auc"])
    best_knobs = _best(trials, metric)["knobs"]
    trials += _run_trials(executor, [(*task, best_knobs, t, folder,
                                      f"{knob}-{best_knobs[knob]:g}-threshold-{t:g}") for t in thresholds])
    for t in trials[len(grid):]:
        log.info("tuning threshold %.2f (%s=%g): val acc %.4f auc %.4f, acceptance %s", t["threshold"],
                 knob, best_knobs[knob], t["val"]["acc"], t["val"]["auc"], t["filter_acceptance"])
    best = _best(trials, metric)
    log.info("tuning: %s=%g, filter threshold %.2f", knob, best["knobs"][knob], best["threshold"])
    return {"split": "val", "metric": metric, "student_epochs": student_epochs(data, config),
            "checkpoint": checkpoint_dir.name,
            "knob": knob, "knobs": best["knobs"], "threshold": best["threshold"], "trials": trials}

"""Step 1 of Knowledge Recycling: the teacher, a classifier trained on the real train split.

The teacher is selected on the validation split and not meant for release; it labels the
synthetic images the student learns from (GKD) and is itself a target of the privacy audit.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import torch

from kr.artifacts import read_json, write_json
from kr.config import ClassifierConfig, Config, TrainConfig
from kr.data import ImageDataset
from kr.models import Ensemble, build_model, load_classifier, save_classifier
from kr.seeding import derive_seed
from kr.train import fit_classifier, score

log = logging.getLogger(__name__)


def train_teacher(data: ImageDataset, config: Config, folder: Path, device: torch.device,
                  on_epoch: Callable[[dict], None] | None = None) -> dict:
    """Train, select on val, save to `folder`, and return the chosen epoch's val metrics.

    With `teacher.members` = n > 1, n networks each from its own seed (the first is the single
    teacher's), each with its best epoch on validation, then saved as one ensemble that
    averages their probabilities.  A finished member is kept in `members/<i>`, so an
    interrupted stage resumes with the next one."""
    t = config.teacher
    n = t.members_for(len(data.train))
    seeds = [derive_seed(config.seed, "teacher")] + [derive_seed(config.seed, "teacher", i) for i in range(1, n)]
    if n == 1:
        return train_on_real(data, t.model, t.train, seeds[0], folder, device, on_epoch, "teacher")
    members, reports = [], []
    for i, seed in enumerate(seeds):
        sub = folder / "members" / str(i)
        if not (sub / "metrics.json").is_file():
            train_on_real(data, t.model, t.train, seed, sub, device, on_epoch, f"teacher {i + 1}/{n}")
        members.append(load_classifier(sub).to(device))
        reports.append({"seed": seed, **read_json(sub / "metrics.json")})
        reports[-1].pop("history", None)  # kept in the member's own metrics.json
    ensemble = Ensemble(members, "sigmoid" if data.task.startswith("multi-label") else "softmax")
    metrics = {"best_epoch": None, "val": score(ensemble, data.val, data.task), "members": reports}
    mcfg = t.model
    save_classifier(ensemble, folder, mcfg.arch, data.channels, data.n_classes,
                    extra={"seed": seeds[0], "dataset": data.name, "task": data.task, "image_size": data.size,
                           "label_names": list(data.label_names)},
                    **mcfg.kwargs(data.size))
    write_json(folder / "metrics.json", metrics)
    log.info("teacher: ensemble of %d, val acc %.4f auc %.4f (members: acc %s)", n,
             metrics["val"]["acc"], metrics["val"]["auc"], ", ".join(f"{r['val']['acc']:.4f}" for r in reports))
    return metrics


def train_judge(data: ImageDataset, config: Config, folder: Path, device: torch.device,
                on_epoch: Callable[[dict], None] | None = None) -> dict:
    """The independent judge of generated images (kr.quality): trained on the same
    real train split as the teacher, with its own architecture and seed; nothing but the
    quality stage reads it, so no generator or student is ever fitted to it."""
    return train_on_real(data, config.judge.model, config.judge.train,
                         derive_seed(config.seed, "judge"), folder, device, on_epoch, "judge")


def train_on_real(data: ImageDataset, mcfg: ClassifierConfig, tcfg: TrainConfig, seed: int,
                  folder: Path, device: torch.device, on_epoch: Callable[[dict], None] | None,
                  desc: str) -> dict:
    kwargs = mcfg.kwargs(data.size)
    model = build_model(mcfg.arch, data.channels, data.n_classes, seed, **kwargs).to(device)
    result = fit_classifier(model, data.train, data.val, data.task, tcfg, seed, data.hflip,
                            state_path=folder / "state.pt", on_epoch=on_epoch, desc=desc)
    # The test split is not read here: the final evaluation stage scores every method on it.
    metrics = {"best_epoch": result.best_epoch, "val": result.best_val}
    save_classifier(model, folder, mcfg.arch, data.channels, data.n_classes,
                    extra={"seed": seed, "dataset": data.name, "task": data.task, "image_size": data.size,
                           "label_names": list(data.label_names)}, **kwargs)
    write_json(folder / "metrics.json", {**metrics, "history": result.history})
    (folder / "state.pt").unlink(missing_ok=True)  # training state is only needed to resume
    log.info("%s: best epoch %d, val acc %.4f auc %.4f", desc, result.best_epoch,
             metrics["val"]["acc"], metrics["val"]["auc"])
    return metrics

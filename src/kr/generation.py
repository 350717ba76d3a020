"""Step 2 of Knowledge Recycling as pipeline stages: train the generator, then judge each
checkpoint, with the teacher and with judges no generator was trained against.

Judging is a separate stage, so a new judge recomputes the quality signals without retraining
the generator.  Quality is measured against the real validation split; the test split is never
used to judge a checkpoint.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Callable

import torch

from kr.artifacts import write_json
from kr.config import Config
from kr.data import ImageDataset
from kr.errors import KRError
from kr.generators import ConditionalGenerator, build_generator, load_generator
from kr.quality import SIGNALS, downstream_score, quality, save_grid
from kr.models import load_classifier
from kr.rundir import stage_outputs
from kr.seeding import derive_seed
from kr.synthetic import class_quotas

log = logging.getLogger(__name__)


def grid_labels(n_classes: int, per_class: int) -> torch.Tensor:
    """Class-major labels: row c of a grid holds `per_class` samples of class c."""
    return torch.arange(n_classes).repeat_interleave(per_class)


def grid_seed(config: Config) -> int:
    """The seed of every checkpoint's grid.png (and of the report's synthetic rows)."""
    return derive_seed(derive_seed(config.seed, "generator"), "grid")


def train_generator(data: ImageDataset, config: Config, folder: Path, device: torch.device,
                    on_log: Callable[[dict], None] | None = None,
                    teacher_dir: Path | None = None) -> dict:
    """`teacher_dir`: the trained teacher, read only by teacher-guided generators."""
    if data.multi_label:
        raise KRError(f"{data.name} is multi-label: the class-conditional generator needs one "
                      f"class per image, so multi-label datasets are not supported yet")
    cfg = config.generator
    seed = derive_seed(config.seed, "generator")
    gen = build_generator(cfg, data.channels, data.size, data.n_classes, seed).to(device)
    labels = grid_labels(data.n_classes, cfg.grid_per_class)

    def on_checkpoint(ckpt: Path, g: ConditionalGenerator) -> dict:
        save_grid(g.sample(labels, grid_seed(config)), data.n_classes, ckpt / "grid.png")
        return {}

    teacher = None
    if cfg.uses_teacher():
        if teacher_dir is None or not (teacher_dir / "model.safetensors").is_file():
            raise KRError("the teacher-guided generator needs the trained teacher: run the "
                          "teacher stage first (kr run / kr generator do)")
        teacher = load_classifier(teacher_dir).to(device)
    checkpoints = gen.fit(data.train, data.hflip, folder, seed, on_checkpoint, on_log, teacher)
    (folder / "state.pt").unlink(missing_ok=True)
    return {"kind": cfg.kind, "checkpoints": checkpoints, "last": checkpoints[-1]["name"]}


def judge_checkpoints(data: ImageDataset, config: Config, generator_dir: Path, checkpoints: list[dict],
                      teacher_dir: Path, judge_dir: Path, device: torch.device, folder: Path) -> dict:
    """Every checkpoint judged on the validation split three ways: in the teacher's feature
    space (what a guided generator was trained against), in the independent judge's, and
    downstream, by a classifier trained on its samples alone (kr.quality).
    `checkpoints`: the generator stage's list of them; each one's full figures go to
    `folder`/<checkpoint>.json (the quality stage's own folder, never the generator's)."""
    teacher = load_classifier(teacher_dir).to(device)
    judge = load_classifier(judge_dir).to(device)
    labels = grid_labels(data.n_classes, config.generator.eval_per_class)
    seed = derive_seed(config.seed, "quality")
    jc = config.judge
    quotas = class_quotas(data.train.labels, data.n_classes,
                          min(jc.cas_size_factor, jc.cas_max_kimg * 1000 / len(data.train)), "train")
    cas_labels = torch.cat([torch.full((q,), c, dtype=torch.long) for c, q in enumerate(quotas)])
    cas_train = dataclasses.replace(jc.train, epochs=jc.cas_epochs,
                                    warmup_epochs=min(jc.train.warmup_epochs, jc.cas_epochs - 1))
    rows = []
    for info in checkpoints:
        gen = load_generator(generator_dir / "checkpoints" / info["name"]).to(device)
        fake = gen.sample(labels, seed)
        q = {"teacher": quality(teacher, data.val, fake, labels, data.n_classes),
             "judge": quality(judge, data.val, fake, labels, data.n_classes),
             "downstream": downstream_score(gen.sample(cas_labels, derive_seed(seed, "downstream")),
                                            cas_labels, data.val, data.task, data.n_classes, jc.model,
                                            cas_train, derive_seed(seed, "downstream", "fit"),
                                            data.hflip, device)}
        write_json(folder / f"{info['name']}.json", q)
        row = {"name": info["name"], "kimg": info["kimg"],
               **{j: {k: q[j][k] for k in SIGNALS} for j in ("teacher", "judge")},
               "downstream": q["downstream"]}
        rows.append(row)
        log.info("quality %s: judge agreement %.3f, FD %.2f, precision %.3f, recall %.3f; "
                 "downstream val acc %.3f (teacher agreement %.3f)", info["name"],
                 *(row["judge"][k] for k in SIGNALS), row["downstream"]["acc"],
                 row["teacher"]["agreement"])
    return {"split": "val", "downstream_images": len(cas_labels), "checkpoints": rows}


def selected_checkpoint(inputs: dict) -> Path:
    """The checkpoint that checkpoint optimisation chose (step 3), from a stage's inputs: the
    generator's folder and the selection's outputs — the one place that builds its path."""
    return inputs["generator"].path / "checkpoints" / inputs["selection"].outputs["selected"]


def checkpoint_folder(run_or_checkpoint: str | Path, name: str | None = None) -> Path:
    """A checkpoint folder from a run directory (`name`, else the one checkpoint optimisation
    selected, else the last) or the checkpoint folder itself."""
    path = Path(run_or_checkpoint)
    if (path / "ema.safetensors").is_file():
        return path
    outputs = stage_outputs(path, "generator")
    if outputs is None:
        raise KRError(f"{path} holds no trained generator; run `kr generator` (or `kr run`) "
                      f"with --out {path} first, or pass a checkpoint folder")
    names = [c["name"] for c in outputs["checkpoints"]]
    selected = (stage_outputs(path, "selection") or {}).get("selected")
    chosen = name or selected or outputs["last"]
    if chosen not in names:
        raise KRError(f"no checkpoint {chosen!r} in {path}; it has {', '.join(names)}")
    return path / "generator" / "checkpoints" / chosen

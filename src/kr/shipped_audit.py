"""The audit stage of `kr run` (step 6, privacy), on the models a run ships, with no reference runs:

    attacks       experiment 2 with the reference-free attacks (members = official train,
                  non-members = official test); scores.npz and ROC curves for the report
    memorisation  does the selected generator, sampled as the KR student was fed, copy train
                  images?  Nearest-neighbour distances to members against held-out images

The attack and distance code is kr.privacy's (pure functions); this module loads the models,
writes what they give, and reads back an earlier `kr audit` (kr.audit) for results.json.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from kr.artifacts import read_json, write_npz
from kr.config import Config
from kr.data import ImageDataset
from kr.generators import load_generator
from kr.quality import save_grid, teacher_outputs
from kr.models import load_classifier
from kr.privacy import references, signals
from kr.privacy.memorisation import compare, summarise as distances
from kr.privacy.results import results_fields
from kr.privacy.scoring import compare_to_real, shipped_scores, summarise
from kr.report.roc import roc_figure
from kr.seeding import derive_seed, make_generator
from kr.synthetic import class_quotas, filtered_sample

log = logging.getLogger(__name__)


def audit_stage(ctx, inputs: dict, folder: Path, outputs: int = 2) -> dict:
    """The `audit/shipped` stage: every model the request trained; the memorisation check
    where it selected and tuned a generator.  (`outputs` names what the stage writes: older
    stages lack scores.npz and ROC curves.)"""
    models = {d.model: d.path for d in inputs.values() if d.model}
    out = {"attacks": shipped_audit(ctx.data, ctx.config, models, ctx.device, folder)}
    if "tuning" in inputs and "real" in models:
        checkpoint = inputs["generator"].path / "checkpoints" / inputs["selection"].outputs["selected"]
        out["memorisation"] = run_memorisation(
            ctx.data, ctx.config.audit.memorisation_samples, ctx.config.seed, checkpoint,
            models["real"], inputs["tuning"].outputs, ctx.config.distill.prior, folder, ctx.device)
    return out


def shipped_audit(data: ImageDataset, config: Config, models: dict[str, Path], device,
                  folder: Path) -> dict:
    """The `audit` stage of `kr run`: experiment 2 with the reference-free attacks only (the
    reference-based ones need `kr audit`'s reference runs).  Scores and ROC curves are saved
    in `folder` so the report draws from them without querying a model again."""
    labels, members = references.pool(data).labels.numpy(), references.shipped_members(data)
    images = references.pool(data).images
    out, raw = {}, {"members": members}
    for method, model in models.items():
        logits = signals.query(load_classifier(model).to(device), images)
        scores = shipped_scores(logits, None, labels, None, None)
        out[method] = summarise(scores, members, {}, config)
        raw.update({f"{method}/{a}": s for a, (s, _) in scores.items()})
        roc_figure({a: (s, members) for a, (s, _) in scores.items()}, folder / f"roc-{method}.png",
                   f"{method}: shipped model, reference-free attacks")
    write_npz(folder / "scores.npz", **raw)
    compare_to_real(out)
    return out


def memorisation(data: ImageDataset, fake: torch.Tensor, teacher: torch.nn.Module, seed: int,
                 folder: Path, pairs: int = 16) -> dict:
    """Pixel- and teacher-feature-space comparison; writes the closest pairs as a PNG grid
    (top row: synthetic, bottom row: its nearest real train image)."""
    n = min(len(data.train), len(data.test))
    g = make_generator(derive_seed(seed, "memorisation"))
    pick = torch.randperm(len(data.train), generator=g)[:n]
    held_out = data.test.images[torch.randperm(len(data.test), generator=g)[:n]]
    members = data.train.images[pick]
    out = {"samples": len(fake), "members_compared": len(members), "held_out_compared": len(held_out)}
    pixel = compare(fake, members, held_out)
    out["pixel"] = distances(pixel)
    feats = [teacher_outputs(teacher, x)[1] for x in (fake, members, held_out)]
    out["teacher_features"] = distances(compare(*feats))
    closest = np.argsort(pixel["d_member"])[:pairs]
    grid = torch.cat([fake[closest], members[pixel["nearest_member"][closest]]])
    save_grid(grid, 2, folder / "closest_pairs.png")
    out["closest_pairs"] = [{"synthetic": int(i), "train_index": int(pick[pixel["nearest_member"][i]]),
                             "pixel_distance": float(pixel["d_member"][i]),
                             "ratio": float(pixel["ratio"][i])} for i in closest]
    write_npz(folder / "memorisation.npz", **{f"pixel_{k}": v for k, v in pixel.items()})
    return out


def run_memorisation(data: ImageDataset, samples: int, seed: int, checkpoint: Path, teacher_folder: Path,
                     tuning: dict, distill_prior: str, folder: Path, device) -> dict:
    """Memorisation check of what the KR student trains on: the selected checkpoint with the
    tuned knob and filter threshold, classes in the student's proportions."""
    gen = load_generator(checkpoint).to(device)
    teacher = load_classifier(teacher_folder).to(device)
    quotas = class_quotas(data.train.labels, data.n_classes, samples / len(data.train), distill_prior)
    fake, _, _ = filtered_sample(gen, quotas, derive_seed(seed, "memorisation-samples"),
                                 tuning["knobs"], tuning["threshold"], teacher)
    return memorisation(data, fake.cpu(), teacher, seed, folder)


def recorded_audit(run: Path, evaluated: str, shipped_free: dict) -> dict:
    """`kr run`'s view of an earlier `kr audit`: its results.json fields, if it audited the models
    the run has now (`evaluated`, the evaluate stage's key), else nothing (it is stale)."""
    path = Path(run) / "audit" / "audit.json"
    if not path.is_file():
        return {}
    doc = read_json(path)
    if doc["meta"].get("evaluate_key") != evaluated:
        log.warning("audit/audit.json audited other models than this run's: rerun `kr audit %s`", run)
        return {}
    return results_fields(doc, shipped_free)

"""The audit stage of `kr run` (step 6, privacy), on the models a run ships, with no reference runs:

    attacks       experiment 2 with the reference-free attacks (members = official train,
                  non-members = official test); scores.npz and ROC curves for the report
    memorisation  does the selected generator, sampled as the KR student was fed, copy train
                  images?  Near-copies searched among every member; nearest-neighbour distance
                  ratios to members against held-out images on equal-size subsamples

The attack and distance code is kr.privacy's (pure functions); this module loads the models,
writes what they give.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from kr.artifacts import write_npz
from kr.config import Config
from kr.data import ImageDataset
from kr.generators import load_generator
from kr.quality import save_grid, teacher_outputs
from kr.models import load_classifier
from kr.privacy import references, signals
from kr.privacy.memorisation import compare, nearest, summarise as distances
from kr.privacy.scoring import compare_to_real, shipped_scores, summarise
from kr.report.roc import roc_figure
from kr.rundir import load_verified
from kr.seeding import derive_seed, make_generator
from kr.synthetic import class_quotas, filtered_sample

log = logging.getLogger(__name__)


def shipped_audit(data: ImageDataset, config: Config, models: dict[str, Path], device,
                  folder: Path) -> dict:
    """The `audit` stage of `kr run`: experiment 2 with the reference-free attacks only (the
    reference-based ones need `kr audit`'s reference runs).  Scores and ROC curves are saved
    in `folder` so the report draws from them without querying a model again."""
    labels, members = references.pool(data).labels.numpy(), references.shipped_members(data)
    images = references.pool(data).images
    out, raw = {}, {"members": members}
    for method, model in models.items():
        # the reference-free attack reads the image itself (its training augmentations are
        # `kr audit`'s queries)
        logits = signals.query(load_verified(model).to(device), images)
        scores, _ = shipped_scores(logits, None, labels, None, None)
        out[method] = summarise(scores, members, {}, config)
        raw.update({f"{method}/{a}": s for a, (s, _) in scores.items()})
        roc_figure({a: (s, members) for a, (s, _) in scores.items()}, folder / f"roc-{method}.png",
                   f"{method}: shipped model, reference-free attacks")
    write_npz(folder / "scores.npz", **raw)
    compare_to_real(out)
    return out


def memorisation(data: ImageDataset, fake: torch.Tensor, teacher: torch.nn.Module, seed: int,
                 folder: Path, pairs: int = 16) -> dict:
    """Near-copies searched among every member; the distance ratio on equal-size subsamples
    (pixel and teacher-feature space); the closest pairs as a PNG grid (top row: synthetic,
    bottom row: its nearest real train image).

    A copy is a sample nearer to a train image than real images come to one another: nearer
    than the 1st percentile of the held-out (test) images' distances to their nearest train
    image."""
    d_train, i_train = nearest(fake, data.train.images)
    real_gap = float(np.quantile(nearest(data.test.images, data.train.images)[0], 0.01))
    n = min(len(data.train), len(data.test))
    g = make_generator(derive_seed(seed, "memorisation"))
    pick = torch.randperm(len(data.train), generator=g)[:n]
    held_out = data.test.images[torch.randperm(len(data.test), generator=g)[:n]]
    members = data.train.images[pick]
    out = {"samples": len(fake), "members_searched": len(data.train),
           "members_compared": len(members), "held_out_compared": len(held_out),
           "copies": {"threshold": real_gap, "near_copies": int((d_train < real_gap).sum()),
                      "min_distance": float(d_train.min()), "median_distance": float(np.median(d_train))}}
    out["pixel"] = distances(compare(fake, members, held_out))
    feats = [teacher_outputs(teacher, x)[1] for x in (fake, members, held_out)]
    out["teacher_features"] = distances(compare(*feats))
    closest = np.argsort(d_train, kind="stable")[:pairs]
    save_grid(torch.cat([fake[closest], data.train.images[i_train[closest]]]), 2, folder / "closest_pairs.png")
    out["closest_pairs"] = [{"synthetic": int(i), "train_index": int(i_train[i]),
                             "pixel_distance": float(d_train[i])} for i in closest]
    write_npz(folder / "memorisation.npz", d_train=d_train, nearest_train=i_train)
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

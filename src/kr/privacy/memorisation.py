"""Does the generator copy patients?  Nearest-neighbour distances of synthetic images to the real
train images (members) and to held-out real images (the test split), in pixel space and in the
teacher's penultimate-feature space.

A generator that memorises puts its samples closer to members than to held-out images of the
same distribution.  The two reference sets must have the same size (a bigger set has closer
nearest neighbours by chance alone), so the members are subsampled to the held-out count.
The ratio d(member) / d(held-out) per sample is ≈ 1 for a generator that does not copy; near-
copies show as ratios ≪ 1, and the closest pairs are saved as an image grid to be looked at.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from kr.artifacts import write_npz
from kr.data import ImageDataset
from kr.generators.quality import save_grid, teacher_outputs
from kr.seeding import derive_seed, make_generator


def nearest(queries: torch.Tensor, refs: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Euclidean distance from each query to its nearest reference, and that reference's index."""
    # the exact (not matrix-product) form: an exact copy must be at distance 0, not 1e-6
    d = torch.cdist(queries.flatten(1).double(), refs.flatten(1).double(),
                    compute_mode="donot_use_mm_for_euclid_dist")
    dist, idx = d.min(1)
    return dist.numpy(), idx.numpy()


def compare(fake: torch.Tensor, members: torch.Tensor, held_out: torch.Tensor) -> dict:
    """Distances of every fake to its nearest member and nearest held-out point (same-size sets)."""
    d_in, i_in = nearest(fake, members)
    d_out, _ = nearest(fake, held_out)
    ratio = d_in / np.maximum(d_out, 1e-12)
    return {"d_member": d_in, "d_held_out": d_out, "ratio": ratio, "nearest_member": i_in}


def summarise(c: dict) -> dict:
    """Figures for results.json: medians, the closer-to-members fraction (≈ 0.5 without
    memorisation), and the smallest ratios, where near-copies would show."""
    r = c["ratio"]
    return {"median_d_member": float(np.median(c["d_member"])),
            "median_d_held_out": float(np.median(c["d_held_out"])),
            "median_ratio": float(np.median(r)), "min_ratio": float(r.min()),
            "closer_to_member": float((r < 1).mean()),
            "ratio_below_0.5": int((r < 0.5).sum())}


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
    out["pixel"] = summarise(pixel)
    feats = [teacher_outputs(teacher, x)[1] for x in (fake, members, held_out)]
    out["teacher_features"] = summarise(compare(*feats))
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
    from kr.generators import load_generator
    from kr.models import load_classifier
    from kr.synthetic import class_quotas, filtered_sample

    gen = load_generator(checkpoint).to(device)
    teacher = load_classifier(teacher_folder).to(device)
    quotas = class_quotas(data.train.labels, data.n_classes, samples / len(data.train), distill_prior)
    fake, _, _ = filtered_sample(gen, quotas, derive_seed(seed, "memorisation-samples"),
                                 tuning["knobs"], tuning["threshold"], teacher)
    return memorisation(data, fake.cpu(), teacher, seed, folder)

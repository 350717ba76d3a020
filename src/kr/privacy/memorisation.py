"""Does the generator copy patients?  Nearest-neighbour distances of synthetic images to the real
train images (members) and to held-out real images (the test split), in pixel space and in the
teacher's penultimate-feature space.

A generator that memorises puts its samples closer to members than to held-out images of the
same distribution.  For that ratio the two reference sets must have the same size (a bigger set
has closer nearest neighbours by chance alone), so the members are subsampled to the held-out
count; copies themselves are searched among every member (kr.shipped_audit.memorisation).
The ratio d(member) / d(held-out) per sample is ≈ 1 for a generator that does not copy; near-
copies show as ratios ≪ 1, and the closest pairs are saved as an image grid to be looked at.
"""

from __future__ import annotations

import numpy as np
import torch



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

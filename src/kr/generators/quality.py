"""Generator quality signals that need no downloaded network: the real-trained teacher is the
judge, and its penultimate layer is the feature space.

- teacher agreement: the fraction of samples the teacher assigns to their conditioning class;
- per-class Fréchet distance (Heusel et al. 2017's formula) between real and synthetic features;
- per-class precision and recall (Kynkäänniemi et al. 2019, k-NN manifolds, k = 3);
- a sample grid, one row per class.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from scipy import linalg

from kr.data import Split
from kr.train import CL


@torch.no_grad()
def teacher_outputs(teacher: torch.nn.Module, images: torch.Tensor, batch_size: int = 512):
    """(probabilities, penultimate features) of the teacher, in eval mode."""
    teacher.eval()
    device = next(teacher.parameters()).device
    probs, feats = [], []
    for i in range(0, len(images), batch_size):
        x = images[i:i + batch_size].to(device).contiguous(memory_format=CL)
        f = teacher.features(x)
        probs.append(torch.softmax(teacher.fc(f), 1).cpu())
        feats.append(f.cpu())
    return torch.cat(probs), torch.cat(feats).double()


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """‖μa − μb‖² + Tr(Σa + Σb − 2(ΣaΣb)^½) between two feature sets."""
    a, b = a.numpy(), b.numpy()
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    covmean = linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():  # near-singular product: regularise, as pytorch-fid does
        eps = np.eye(len(s1)) * 1e-6
        covmean = linalg.sqrtm((s1 + eps) @ (s2 + eps))
    covmean = covmean.real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3) -> tuple[float, float]:
    """Share of fakes inside the real k-NN manifold (precision) and of reals inside the fake one."""
    def radii(x):
        d = torch.cdist(x, x)
        return d.kthvalue(k + 1, dim=1).values  # +1: each point is its own nearest neighbour

    def inside(points, ref, r):
        return (torch.cdist(points, ref) <= r[None]).any(1).double().mean().item()

    return inside(fake, real, radii(real)), inside(real, fake, radii(fake))


def quality(teacher: torch.nn.Module, real: Split, fake: torch.Tensor, fake_labels: torch.Tensor,
            n_classes: int) -> dict:
    """Every signal for one set of synthetic images against one real split."""
    p_fake, f_fake = teacher_outputs(teacher, fake)
    _, f_real = teacher_outputs(teacher, real.images)
    per_class = {}
    for c in range(n_classes):
        fr, ff = f_real[real.labels == c], f_fake[fake_labels == c]
        if len(fr) < 2 or len(ff) < 2:
            continue
        prec, rec = precision_recall(fr, ff, k=min(3, len(fr) - 1, len(ff) - 1))
        per_class[str(c)] = {"agreement": (p_fake[fake_labels == c].argmax(1) == c).double().mean().item(),
                             "fd": frechet_distance(fr, ff), "precision": prec, "recall": rec}
    mean = lambda key: float(np.mean([v[key] for v in per_class.values()]))  # noqa: E731
    return {"teacher_agreement": (p_fake.argmax(1) == fake_labels).double().mean().item(),
            "fd": mean("fd"), "precision": mean("precision"), "recall": mean("recall"),
            "per_class": per_class}


def save_grid(images: torch.Tensor, n_classes: int, path: str | Path) -> None:
    """A PNG with one row per class; `images` are ordered class-major (row c = class c)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import image as mpimg

    from kr.artifacts import atomic_path

    n, c, h, w = images.shape
    cols = n // n_classes
    x = ((images[: cols * n_classes].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    x = x.view(n_classes, cols, c, h, w).permute(0, 3, 1, 4, 2).reshape(n_classes * h, cols * w, c)
    arr = x.numpy()
    with atomic_path(path) as tmp:
        if c == 1:
            mpimg.imsave(tmp, arr[..., 0], cmap="gray", vmin=0, vmax=255, format="png")
        else:
            mpimg.imsave(tmp, arr, format="png")

"""Generator quality signals that need no downloaded network.  A judge is a classifier trained
on the real train split, and its penultimate layer is the feature space:

- agreement: the fraction of samples the judge assigns to their conditioning class;
- per-class Fréchet distance (Heusel et al. 2017's formula) between real and synthetic features;
- per-class precision and recall (Kynkäänniemi et al. 2019, k-NN manifolds, k = 3);
- the downstream score (Classification Accuracy Score, Ravuri & Vinyals 2019; the measure of
  the paper family): a fresh classifier trained on the samples with their conditioning labels,
  scored on real images;
- a sample grid, one row per class, and real rows beside synthetic ones.

Which judge matters.  The teacher is what a guided generator was trained against (its
cross-entropy and BatchNorm statistics, kr.generators.guide), and GKD students are distilled in
its feature space: its numbers flatter a generator that learnt to please it.  The independent
judge (`judge` config, another architecture and seed, read by nothing else) and the downstream
score are the ones no generator optimised.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from scipy import linalg

from kr.config import ClassifierConfig, TrainConfig
from kr.data import Split
from kr.train import CL


@torch.no_grad()
def teacher_outputs(teacher: torch.nn.Module, images: torch.Tensor, batch_size: int = 512):
    """(probabilities, penultimate features) of a classifier (teacher or judge), in eval mode."""
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


def quality(judge: torch.nn.Module, real: Split, fake: torch.Tensor, fake_labels: torch.Tensor,
            n_classes: int) -> dict:
    """Every feature-space signal of one judge for one set of synthetic images against one
    real split."""
    p_fake, f_fake = teacher_outputs(judge, fake)
    _, f_real = teacher_outputs(judge, real.images)
    per_class = {}
    for c in range(n_classes):
        fr, ff = f_real[real.labels == c], f_fake[fake_labels == c]
        if len(fr) < 2 or len(ff) < 2:
            continue
        prec, rec = precision_recall(fr, ff, k=min(3, len(fr) - 1, len(ff) - 1))
        per_class[str(c)] = {"agreement": (p_fake[fake_labels == c].argmax(1) == c).double().mean().item(),
                             "fd": frechet_distance(fr, ff), "precision": prec, "recall": rec}
    mean = lambda key: float(np.mean([v[key] for v in per_class.values()]))  # noqa: E731
    return {"agreement": (p_fake.argmax(1) == fake_labels).double().mean().item(),
            "fd": mean("fd"), "precision": mean("precision"), "recall": mean("recall"),
            "per_class": per_class}


SIGNALS = ("agreement", "fd", "precision", "recall")


def downstream_score(fake: torch.Tensor, fake_labels: torch.Tensor, val: Split, task: str,
                     n_classes: int, model_cfg: ClassifierConfig, train_cfg: TrainConfig, seed: int,
                     hflip: bool, device: str | torch.device = "cpu") -> dict[str, float]:
    """Validation ACC/AUC of a classifier trained from scratch on the synthetic images with
    their conditioning labels (hard labels, no teacher): what the images alone teach about
    their classes.  The best epoch is chosen on the same validation split, as every
    classifier of the method is."""
    from kr.models import build_model
    from kr.train import fit_classifier

    kwargs = {"width": model_cfg.width, "norm": model_cfg.norm, "dropout": model_cfg.dropout}
    model = build_model(model_cfg.arch, fake.shape[1], n_classes, seed, **kwargs).to(device)
    result = fit_classifier(model, Split(fake, fake_labels), val, task, train_cfg, seed, hflip,
                            desc="downstream")
    return dict(result.best_val)


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


def save_class_rows(real: torch.Tensor, fake: torch.Tensor, n_classes: int, path: str | Path) -> None:
    """One row per class: its real images, a white gap, then its synthetic images, at the same
    scale.  `real` and `fake` are class-major with the same count per class."""
    k = len(real) // n_classes
    if len(fake) != len(real):
        raise ValueError(f"{len(real)} real and {len(fake)} synthetic images: give as many of each")
    gap = torch.ones(n_classes, 1, *real.shape[1:])
    rows = torch.cat([real.view(n_classes, k, *real.shape[1:]), gap,
                      fake.view(n_classes, k, *fake.shape[1:])], 1)
    save_grid(rows.reshape(-1, *real.shape[1:]), n_classes, path)

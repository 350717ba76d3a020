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

import warnings

from pathlib import Path

import numpy as np
import torch
from scipy import linalg

from kr.config import ClassifierConfig, TrainConfig
from kr.data import Split
from kr.train import CL, EVAL_BATCH


@torch.no_grad()
def teacher_outputs(teacher: torch.nn.Module, images: torch.Tensor, batch_size: int = EVAL_BATCH):
    """(probabilities, penultimate features) of a classifier (teacher or judge), in eval mode."""
    teacher.eval()
    device = next(teacher.parameters()).device
    probs, feats = [], []
    for i in range(0, len(images), batch_size):
        x = images[i:i + batch_size].to(device).contiguous(memory_format=CL)
        f = teacher.features(x)
        # a single network's head on the features it gave (one pass); an ensemble averages
        # its members' probabilities, which its own forward does
        logits = teacher.fc(f) if hasattr(teacher, "fc") else teacher(x)
        probs.append(torch.softmax(logits, 1).cpu())
        feats.append(f.cpu())
    return torch.cat(probs), torch.cat(feats).double()


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """‖μa − μb‖² + Tr(Σa + Σb − 2(ΣaΣb)^½) between two feature sets.

    With fewer samples than feature dimensions (a small class) a covariance is singular and its
    square root ill-defined: both are regularised with ε·I, as pytorch-fid does for near-singular
    products, instead of passing SciPy's "Matrix is singular" warning on to the user."""
    a, b = a.numpy(), b.numpy()
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    if min(len(a), len(b)) <= len(s1):
        s1, s2 = s1 + np.eye(len(s1)) * 1e-6, s2 + np.eye(len(s2)) * 1e-6
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
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

    model = build_model(model_cfg.arch, fake.shape[1], n_classes, seed,
                        **model_cfg.kwargs(fake.shape[-1])).to(device)
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


def save_class_rows(real: torch.Tensor, fake: torch.Tensor, names: list[str], path: str | Path,
                    fake_title: str = "synthetic", scale: int = 4) -> dict:
    """One row per class, labelled with its name: its real images under a "real" header, its
    synthetic images under `fake_title`, each image drawn `scale`× larger, pixels kept sharp.
    `real` and `fake` are class-major with the same count per class.  Returns what was drawn
    (panel titles, row labels, the figure's size in pixels)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    from kr.artifacts import atomic_path

    n_classes = len(names)
    if len(fake) != len(real) or len(real) % n_classes:
        raise ValueError(f"{len(real)} real and {len(fake)} synthetic images for {n_classes} classes: "
                         f"give as many of each, class-major")
    k, (c, h, w) = len(real) // n_classes, real.shape[1:]

    def block(x):
        u = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return u.view(n_classes, k, c, h, w).permute(0, 3, 1, 4, 2).reshape(n_classes * h, k * w, c).numpy()

    dpi, label_in, title_in = 100, 1.6, 0.45
    panel_w, panel_h = k * w * scale / dpi, n_classes * h * scale / dpi
    fig = plt.figure(figsize=(label_in + 2 * panel_w + 0.3, panel_h + title_in), dpi=dpi)
    drawn = {"titles": ["real (train split)", fake_title], "rows": list(names)}
    for i, (x, title) in enumerate(zip((real, fake), drawn["titles"])):
        left = (label_in + i * (panel_w + 0.3)) / fig.get_figwidth()
        ax = fig.add_axes((left, 0, panel_w / fig.get_figwidth(), panel_h / fig.get_figheight()))
        img = block(x)
        ax.imshow(img[..., 0] if c == 1 else img, cmap="gray" if c == 1 else None, vmin=0, vmax=255,
                  interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([(r + 0.5) * h - 0.5 for r in range(n_classes)])
        ax.set_yticklabels(names if i == 0 else [], fontsize=9)
        ax.tick_params(length=0)
        for spine in ax.spines.values():
            spine.set_visible(False)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    drawn["size"] = [int(round(fig.get_figwidth() * dpi)), int(round(fig.get_figheight() * dpi))]
    plt.close(fig)
    return drawn

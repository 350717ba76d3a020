"""Step 5 of Knowledge Recycling: Generative Knowledge Distillation (GKD).

The student never sees a real image.  Each epoch it trains on a synthetic set drawn from the
selected generator checkpoint with the tuned knobs (`kr.synthetic`), every batch augmented and
then labelled by the frozen teacher's softmax (paper Sec. 3).  Its best epoch is chosen on the
real validation split, the only real data it is ever scored on before the final evaluation.

The baselines of step 6 are the same loop with one ingredient removed:

    method      synthetic set         targets
    synthetic   one fixed set         hard conditioning labels  (the conventional approach)
    regen       regenerated           hard conditioning labels
    soft        one fixed set         teacher soft labels
    kr          regenerated           teacher soft labels
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torch.nn import functional as F

from kr.artifacts import write_json
from kr.config import Config
from kr.data import ImageDataset, Split
from kr.generators import ConditionalGenerator
from kr.methods import METHODS
from kr.models import build_model, save_classifier
from kr.seeding import derive_seed
from kr.synthetic import SyntheticSource, class_quotas, resolve_mode
from kr.train import CL, BatchLoss, fit_classifier, supervised_loss

log = logging.getLogger(__name__)



def top_k_logits(logits: torch.Tensor, k: int) -> torch.Tensor:
    """The teacher's k most probable classes per image, the others at −∞ (probability 0 after
    any softmax); ties with the k-th are kept.  k = 0 keeps every class."""
    if not k or k >= logits.shape[1]:
        return logits
    kth = logits.topk(k, dim=1).values[:, -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
            temperature: float = 1.0, alpha: float = 0.0, top_k: int = 0) -> torch.Tensor:
    """(1 − α) · T² · CE(softmax(t/T), softmax(s/T)) + α · CE(s, y).

    Soft-target cross-entropy differs from the KL divergence by the teacher's entropy, a
    constant, so the gradients are the same; T² keeps their scale independent of T (Hinton
    et al. 2015).  T = 1, α = 0 is the authors' released GKD loss.  `top_k` > 0 passes on only
    the teacher's k most probable classes (`top_k_logits`; 1: its hard label), less of what
    its probabilities carry about the images it was trained on."""
    soft = torch.zeros((), device=student_logits.device)
    if alpha < 1:
        teacher_logits = top_k_logits(teacher_logits, top_k)
        target = F.softmax(teacher_logits / temperature, dim=1)
        logp = F.log_softmax(student_logits / temperature, dim=1)
        soft = -(target * logp).sum(1).mean() * temperature ** 2
    hard = F.cross_entropy(student_logits, labels) if alpha > 0 else torch.zeros_like(soft)
    return (1 - alpha) * soft + alpha * hard


def gkd_loss(teacher: nn.Module, temperature: float, alpha: float, top_k: int = 0) -> BatchLoss:
    """Label each augmented batch with the frozen teacher, then distil."""
    teacher.eval().requires_grad_(False)

    def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            t = teacher(x)
        return kd_loss(model(x), t, y, temperature, alpha, top_k)

    return loss


def clean_gkd_loss(temperature: float, alpha: float, top_k: int = 0) -> BatchLoss:
    """Distil towards targets computed on the clean (unaugmented) image: the batch's labels
    column 0 holds the conditioning label, the rest the teacher's logits (`teacher_logits_on`)."""

    def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return kd_loss(model(x), y[:, 1:], y[:, 0].long(), temperature, alpha, top_k)

    return loss


def teacher_logits_on(source: Callable[[int], Split], teacher: nn.Module) -> Callable[[int], Split]:
    """Epoch → the source's set with the teacher's logits on each clean image beside its label."""

    def labelled(epoch: int) -> Split:
        split = source(epoch)
        with torch.no_grad():
            logits = torch.cat([teacher(b.contiguous(memory_format=CL)) for b in split.images.split(256)])
        return Split(split.images, torch.cat([split.labels[:, None].float(), logits.float()], 1))

    return labelled


def train_student(data: ImageDataset, config: Config, gen: ConditionalGenerator,
                  teacher: nn.Module, method: str, knobs: dict[str, Any], threshold: float,
                  folder: Path | None = None, epochs: int | None = None, seed_key: str = "student",
                  on_epoch: Callable[[dict], None] | None = None, tag: str | None = None,
                  select_metric: str | None = None, labeller: nn.Module | None = None) -> dict:
    """Train one synthetic-data student; return its validation metrics and what it was fed.

    `folder` (if given) receives the model and a resumable per-epoch state.  `epochs`
    shortens training for the candidates of checkpoint optimisation and tuning, and
    `select_metric` picks their best epoch by the metric that ranks them.  Students
    given the same `tag` (naming this generator and teacher) share identical synthetic sets
    instead of sampling them again.  `labeller` (default: the teacher) gives the soft labels;
    the teacher still filters the samples."""
    dcfg = config.distill
    options = METHODS[method].options
    regenerate, soft = options["regenerate"], options["soft"]
    # a label-channel method (kr-t1, kr-top1, …) changes one setting of distill for itself alone
    temperature, top_k = options.get("temperature", dcfg.temperature), options.get("top_k", dcfg.top_k)
    tcfg = dcfg.train
    quotas = class_quotas(data.train.labels, data.n_classes, dcfg.size_factor, dcfg.prior)
    epochs = dcfg.epochs_for(sum(quotas)) if epochs is None else epochs
    if epochs != tcfg.epochs:
        tcfg = dataclasses.replace(tcfg, epochs=epochs, warmup_epochs=min(tcfg.warmup_epochs, epochs - 1))
    if select_metric is not None:
        tcfg = dataclasses.replace(tcfg, select_metric=select_metric)
    device = next(teacher.parameters()).device
    teacher.to(memory_format=CL)
    mode = resolve_mode(dcfg.strategy, gen) if regenerate else "fixed"
    # Every method draws from the same synthetic stream and starts from the same weights, so
    # the baselines differ from KR only in the ingredient they remove.
    source = SyntheticSource(gen, quotas, derive_seed(config.seed, "synthetic", seed_key), mode,
                             knobs, threshold, teacher, dcfg.pool_factor, dcfg.pool_refresh,
                             dcfg.max_filter_rounds, tag)
    seed = derive_seed(config.seed, seed_key)
    mcfg = dcfg.model
    kwargs = mcfg.kwargs(data.size)
    model = build_model(mcfg.arch, data.channels, data.n_classes, seed, **kwargs).to(device)
    train = source
    labeller = teacher if labeller is None else labeller.to(device, memory_format=CL)
    if not soft:
        loss = supervised_loss(data.task, tcfg.label_smoothing)
    elif dcfg.soft_targets == "clean":
        labeller.eval().requires_grad_(False)
        train, loss = teacher_logits_on(source, labeller), clean_gkd_loss(temperature, dcfg.alpha, top_k)
    else:
        loss = gkd_loss(labeller, temperature, dcfg.alpha, top_k)
    result = fit_classifier(model, train, data.val, data.task, tcfg, seed, data.hflip,
                            state_path=folder / "state.pt" if folder else None,
                            on_epoch=on_epoch, desc=f"student {method}", loss_fn=loss)
    out = {"method": method, "mode": mode, "soft_labels": soft, "knobs": knobs,
           "labels": {"temperature": temperature, "top_k": top_k} if soft else None,
           "threshold": threshold, "epochs": tcfg.epochs, "best_epoch": result.best_epoch,
           "val": result.best_val, "images_per_epoch": sum(quotas),
           "images_generated": source.images_generated,
           "filter_acceptance": _mean([s["acceptance"] for s in source.filter_stats])}
    if folder is not None:
        save_classifier(model, folder, mcfg.arch, data.channels, data.n_classes,
                        extra={"seed": seed, "dataset": data.name, "task": data.task, "method": method,
                               "image_size": data.size,
                               "label_names": list(data.label_names)}, **kwargs)
        write_json(folder / "metrics.json", {**out, "history": result.history,
                                             "filter": source.filter_stats})
        (folder / "state.pt").unlink(missing_ok=True)
    log.info("student %s (%s, %s labels): best epoch %d, val acc %.4f auc %.4f", method, mode,
             "teacher" if soft else "hard", result.best_epoch, out["val"]["acc"], out["val"]["auc"])
    return out


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None

"""Supervised classifier training with best-epoch selection on the validation split.

Used for the teacher (step 1 of KR) and for every classifier trained on real images.  The
test split never enters here: model selection sees only the validation split.  Each epoch's
randomness (shuffle, augmentation, dropout) is reseeded from (seed, epoch), and the full
training state is saved atomically after every epoch, so rerunning resumes exactly.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from kr.artifacts import atomic_path
from kr.augment import augment
from kr.config import TrainConfig
from kr.data import Split
from kr.errors import KRError
from kr.metrics import evaluate
from kr.seeding import derive_seed, make_generator

log = logging.getLogger(__name__)

# channels_last runs small convolutions ~30 % faster on CPU (measured: ResNet-20, 28 px, 2 cores)
# and suits tensor cores on GPU; weights are saved in the ordinary layout either way.
CL = torch.channels_last

# Inference runs in chunks of this many images.  It changes only the speed: every image's logits
# are the same at any chunk size (eval mode; tests/test_train.py).  Chunks of 64–128 keep a small
# network's activations in cache: against 512 they query a ResNet-20 at 28 px 1.5–1.8× faster on
# 2 idle cores of an AVX-512 EPYC (docs/executors.md), which is most of an audit's scoring stage.
EVAL_BATCH = 128


@dataclass
class TrainResult:
    best_epoch: int
    best_val: dict[str, float]
    history: list[dict] = field(default_factory=list)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise KRError("--device cuda was asked for but PyTorch sees no CUDA GPU; use --device cpu")
    return torch.device(device)


@torch.no_grad()
def predict_proba(model: nn.Module, images: torch.Tensor, multi_label: bool,
                  batch_size: int = EVAL_BATCH) -> np.ndarray:
    """Class probabilities in eval mode (softmax, or per-label sigmoid for multi-label)."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    for i in range(0, len(images), batch_size):
        logits = model(images[i:i + batch_size].to(device).contiguous(memory_format=CL))
        out.append((torch.sigmoid(logits) if multi_label else F.softmax(logits, 1)).cpu())
    return torch.cat(out).double().numpy()


def score(model: nn.Module, split: Split, task: str) -> dict[str, float]:
    probs = predict_proba(model, split.images, task.startswith("multi-label"))
    return evaluate(task, split.labels.numpy(), probs)


def better(a: dict[str, float], b: dict[str, float] | None, metric: str) -> bool:
    """Whether validation metrics `a` beat `b`: by `acc` or `auc` (ties broken by the other),
    or by `acc+auc`, their sum (ties broken by ACC).  A NaN AUC (one class present) ranks last."""
    if b is None:
        return True
    return _rank(a, metric) > _rank(b, metric)


def _rank(m: dict[str, float], metric: str) -> tuple[float, float]:
    auc = -math.inf if math.isnan(m["auc"]) else m["auc"]
    if metric == "acc":
        return m["acc"], auc
    if metric == "auc":
        return auc, m["acc"]
    return m["acc"] + auc, m["acc"]


def _lr_at(step: int, total: int, warmup: int, base: float) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base * 0.5 * (1 + math.cos(math.pi * progress))


# A batch loss: (model, augmented images, their labels) → scalar.  The default is supervised
# cross-entropy; GKD passes the teacher's soft targets instead (kr.distill).
BatchLoss = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def supervised_loss(task: str, label_smoothing: float) -> BatchLoss:
    if task.startswith("multi-label"):
        bce = nn.BCEWithLogitsLoss()
        return lambda model, x, y: bce(model(x), y.float())
    ce = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    return lambda model, x, y: ce(model(x), y)


def resolve_flip(setting: str, allowed: bool) -> bool:
    """train.hflip: auto flips only where the dataset says a flip keeps the label."""
    return {"auto": allowed, "on": True, "off": False}[setting]


def best_epoch_loop(model: nn.Module, epochs: int, train_epoch: Callable[[int], dict],
                    val_score: Callable[[], dict], select_metric: str, optimizer: torch.optim.Optimizer,
                    state_path: Path | None = None, on_epoch: Callable[[dict], None] | None = None,
                    desc: str = "train", extra: tuple[Callable[[], dict], Callable[[dict], None]] | None = None,
                    on_resume: Callable[[int], None] | None = None) -> TrainResult:
    """Every classifier's epochs: train one (`train_epoch(epoch)` → its log fields), score the
    validation split, keep the best epoch's weights by `select_metric`; after each epoch the
    whole state (weights, optimizer, best so far, history, and `extra`'s (get, set) pair) is
    saved atomically to `state_path`, so a rerun resumes after the last finished epoch
    (`on_resume(start)` is told where).  On return `model` holds the best epoch's weights, in
    eval mode.  The teacher, the students and DP-SGD all train through here."""
    device = next(model.parameters()).device
    start, best_val, best_state, result = 0, None, None, TrainResult(-1, {})
    if state_path is not None and state_path.is_file():
        state = torch.load(state_path, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start, best_state = state["epoch"] + 1, state["best_model"]
        result = TrainResult(state["best_epoch"], dict(state["best_val"]), list(state["history"]))
        best_val = result.best_val
        if extra is not None:
            extra[1](state["extra"])
        log.info("%s: resuming after epoch %d", desc, state["epoch"])
    if on_resume is not None:
        on_resume(start)
    bar = tqdm(range(start, epochs), desc=desc, unit="epoch", disable=None, leave=False)
    for epoch in bar:
        record = {"epoch": epoch, **train_epoch(epoch)}
        val_metrics = val_score()
        record.update({f"val_{k}": v for k, v in val_metrics.items()})
        if better(val_metrics, best_val, select_metric):
            best_val, result.best_epoch = val_metrics, epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        result.best_val = best_val
        result.history.append(record)
        bar.set_postfix(loss=f"{record['loss']:.3f}", val_acc=f"{val_metrics['acc']:.3f}")
        if on_epoch is not None:
            on_epoch(record)
        if state_path is not None:
            with atomic_path(state_path) as tmp:
                torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                            "epoch": epoch, "best_model": best_state,
                            "best_epoch": result.best_epoch, "best_val": best_val,
                            "history": result.history, "extra": extra[0]() if extra else {}}, tmp)
    model.load_state_dict(best_state)
    model.eval()
    return result


def finite(loss: torch.Tensor, desc: str, epoch: int, setting: str = "…lr") -> None:
    """Stop on a loss that is no longer a number: training has diverged."""
    if not torch.isfinite(loss):
        raise KRError(f"{desc}: loss became {loss.item()} at epoch {epoch}; lower the learning rate "
                      f"(--set {setting}=…)")


def fit_classifier(model: nn.Module, train: Split | Callable[[int], Split], val: Split, task: str,
                   cfg: TrainConfig, seed: int, hflip: bool, state_path: Path | None = None,
                   on_epoch: Callable[[dict], None] | None = None,
                   desc: str = "train", loss_fn: BatchLoss | None = None) -> TrainResult:
    """Train `model` in place; on return it holds the weights of the best validation epoch.

    `train` is a fixed split, or a function of the epoch returning that epoch's training set
    (GKD's regenerated synthetic images); every epoch's set must have the same size.
    """
    device = next(model.parameters()).device
    model.to(memory_format=CL)
    epoch_data = train if callable(train) else (lambda epoch: train)
    loss_fn = loss_fn or supervised_loss(task, cfg.label_smoothing)
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                              nesterov=cfg.momentum > 0, weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    flip = resolve_flip(cfg.hflip, hflip)
    sizes: list[int] = []

    def train_epoch(epoch: int) -> dict:
        split = epoch_data(epoch)
        x, y = split.images.to(device), split.labels.to(device)
        sizes.append(len(x))
        if len(x) != sizes[0]:
            raise KRError(f"{desc}: epoch {epoch} has {len(x)} training images, not {sizes[0]}")
        steps_per_epoch = math.ceil(len(x) / cfg.batch_size)
        total, warmup = cfg.epochs * steps_per_epoch, cfg.warmup_epochs * steps_per_epoch
        model.train()
        torch.manual_seed(derive_seed(seed, "epoch", epoch, "global"))  # dropout, if any
        g = make_generator(derive_seed(seed, "epoch", epoch), device=device)
        order = torch.randperm(len(x), generator=g, device=device)
        total_loss = 0.0
        for b in range(steps_per_epoch):
            idx = order[b * cfg.batch_size:(b + 1) * cfg.batch_size]
            for group in opt.param_groups:
                group["lr"] = _lr_at(epoch * steps_per_epoch + b, total, warmup, cfg.lr)
            xb = augment(x[idx], g, cfg.crop_padding, flip).contiguous(memory_format=CL)
            loss = loss_fn(model, xb, y[idx])
            finite(loss, desc, epoch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total_loss += loss.item() * len(idx)
        return {"loss": total_loss / len(x)}

    return best_epoch_loop(model, cfg.epochs, train_epoch, lambda: score(model, val, task), cfg.select_metric,
                           opt, state_path, on_epoch, desc)

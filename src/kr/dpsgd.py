"""The DP-SGD baseline (Abadi et al. 2016) with Opacus: the standard way to a formal privacy
guarantee, to set beside KR's empirical one.

By default the model is a ScatterNet (kr.models.scatternet; Tramèr & Boneh, ICLR 2021): a
fixed, data-independent scattering transform, computed once per image, and a linear head
trained with DP-SGD on those features.  On small sets an end-to-end DP CNN barely learns
(digits ε = 8: test ACC 0.34), while the ScatterNet reaches 0.97 in seconds: handcrafted
features need no budget, and a linear head has few parameters to noise and per-sample
gradients that cost almost nothing (benchmarks/DP.md).  `dpsgd.model=cnn` keeps the
end-to-end alternative: the teacher's architecture with GroupNorm (BatchNorm mixes samples
within a batch, which per-sample clipping cannot bound), trained on augmented images.

Per-sample gradients are clipped and Gaussian noise added, calibrated by Opacus' accountant to
a target (ε, δ) for the whole run (δ = min(1e-5, 1/(10·N)) unless set).  Batches are
Poisson-sampled, as the accountant assumes.  The best epoch is chosen on the validation split:
every iterate of a DP run is covered by its guarantee, and validation images are not the train
split it protects.

What makes the guarantee real (docs/dpsgd.md): a released model's noise and batch sampling
come from secret randomness — two 64-bit seeds from the OS's CSPRNG (`secrets`), never written
anywhere — and the noise is drawn as Opacus' secure mode draws it (the sum of four Gaussians,
against floating-point attacks; Opacus' own secure mode needs torchcsprng, which no longer
builds for current PyTorch).  `dpsgd.noise=seeded` derives both seeds from the run's seed for
tests and benchmarks: anyone holding that seed can replay training and test membership
exactly, so such a model says that its ε does not hold.  Outside the guarantee, and said in
the model card (`LIMITS`): the hyper-parameters (config.DPConfig), chosen on validation splits;
the composition of several ε models trained on one dataset; the per-epoch logs computed from
the private data (metrics.json: training loss, Poisson batch sizes), which stay in the run
directory and are never released; and the unit of privacy, an image, not a patient.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
import warnings
from dataclasses import fields
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from kr.artifacts import write_json
from kr.augment import augment
from kr.config import Config, DPConfig
from kr.data import ImageDataset, Split
from kr.errors import KRError
from kr.methods import dp_name
from kr.models import build_model, save_classifier
from kr.seeding import derive_seed, make_generator
from kr.train import best_epoch_loop, finite, score

log = logging.getLogger(__name__)

# DP-SGD selects its epoch by the teacher's metric (and, with dpsgd.model=cnn, trains the
# teacher's architecture with its crop); each model's ε is its own parameter, so adding an ε to
# the list keeps the others.
READS = ("seed", "data.size", "teacher.model", "teacher.train.crop_padding",
         "teacher.train.select_metric", *(f"dpsgd.{f.name}" for f in fields(DPConfig) if f.name != "epsilons"))


@contextlib.contextmanager
def _expected_warnings(accountant: str):
    """Opacus warns that secure_mode is off (its own needs torchcsprng; we seed our generator
    from `secrets` and draw its secure noise, see the module docstring) and that its
    hooks fire on inputs without gradients (images never need them): both expected.  The PRV
    accountant sizes its discretisation domain with an RDP bound; that bound being loose only
    widens the domain, never the reported ε (with the RDP accountant the warning stays)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Secure RNG turned off")
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        if accountant == "prv":
            warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
            # at sample rate 1 (full batches) its domain computes log(1 - q) = -inf, harmlessly
            warnings.filterwarnings("ignore", message="divide by zero encountered in log")
        yield


def train_dpsgd(data: ImageDataset, config: Config, epsilon: float, folder: Path, device: torch.device,
                on_epoch: Callable[[dict], None] | None = None) -> dict:
    """Train at target ε, select on val, save to `folder`; return metrics and the ε spent."""
    root = logging.getLogger()
    before, level = list(root.handlers), root.level
    try:
        from opacus import PrivacyEngine
    except ImportError:
        raise KRError("the dpsgd baseline needs Opacus: pip install opacus "
                      "(or drop dpsgd from --set baselines=…)") from None
    finally:  # Opacus calls logging.basicConfig at import; the root logger is the application's
        for handler in [h for h in root.handlers if h not in before]:
            root.removeHandler(handler)
        root.setLevel(level)
    if data.multi_label:
        raise KRError("the dpsgd baseline supports single-label tasks only; drop it from baselines")
    dcfg = config.dpsgd
    seed = derive_seed(config.seed, "dpsgd", epsilon)
    delta = dp_delta(dcfg.delta, len(data.train))
    # the noise and the sampling: secret (never stored) unless reproducibility was asked for
    noise_seed, sampling_seed = ((derive_seed(seed, "noise"), derive_seed(seed, "sampling"))
                                 if dcfg.noise == "seeded" else (secrets.randbits(64), secrets.randbits(63)))
    started = time.perf_counter()
    # torch.manual_seed below seeds every CUDA device too: restore them all, not only the CPU
    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=cuda), _expected_warnings(dcfg.accountant):
        arch, kwargs = _architecture(config, data)
        model = build_model(arch, data.channels, data.n_classes, seed, **kwargs).to(device)
        if arch == "scatternet":  # the features are fixed: compute them once, train the head
            trained, train, val = model.head, _scattered(model, data.train), _scattered(model, data.val)
            batch_fn = None
        else:
            trained, train, val = model, data.train, data.val
            pad, flip = config.teacher.train.crop_padding, data.hflip
            batch_fn = (lambda x, g: augment(x, g, pad, flip))
        # Opacus' Poisson sampler draws from the global generator: seed it, inside this fork
        torch.manual_seed(sampling_seed)
        loader = DataLoader(TensorDataset(train.images, train.labels), batch_size=dcfg.batch_size)
        opt = torch.optim.SGD(trained.parameters(), lr=dcfg.lr, momentum=dcfg.momentum)
        engine = PrivacyEngine(accountant=dcfg.accountant)
        private, opt, loader = engine.make_private_with_epsilon(
            module=trained, optimizer=opt, data_loader=loader, target_epsilon=epsilon,
            target_delta=delta, epochs=dcfg.epochs, max_grad_norm=dcfg.max_grad_norm,
            poisson_sampling=True, noise_generator=make_generator(noise_seed, device))
        # noise as Opacus' secure mode draws it (four Gaussians summed, the floating-point fix of
        # Holohan & Braghin 2021, Sec. 5.1), from our generator: Opacus' flag alone would ask
        # for torchcsprng
        opt.secure_mode = True
        del noise_seed, sampling_seed  # nothing keeps them: not the model, not the logs
        loss_fn = nn.CrossEntropyLoss()
        name = dp_name(epsilon)

        def resumed(start: int) -> None:
            """A resumed run draws its noise and batches from fresh secrets: the state file keeps
            the weights, the optimizer and the accountant's history, never a generator's state."""
            if start:
                noise, sampling = ((derive_seed(seed, "noise", "resume", start),
                                    derive_seed(seed, "sampling", "resume", start))
                                   if dcfg.noise == "seeded" else (secrets.randbits(64), secrets.randbits(63)))
                opt.generator = make_generator(noise, device)
                torch.manual_seed(sampling)

        def train_epoch(epoch: int) -> dict:
            private.train()
            g = make_generator(derive_seed(seed, "augment", epoch), device)
            total, seen = 0.0, 0
            for x, y in loader:
                # an empty Poisson batch is still a step: Opacus adds the noise alone, and the
                # accountant counts it (skipping it would release "no update", which depends on
                # whether anyone was sampled)
                x, y = x.to(device), y.to(device)
                if batch_fn is not None:
                    x = batch_fn(x, g)
                loss = loss_fn(private(x), y)
                if len(y):
                    finite(loss, name, epoch, "dpsgd.lr")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if len(y):
                    total, seen = total + loss.item() * len(y), seen + len(y)
            # no per-epoch ε: the PRV accountant takes ≈ 0.5 s a call, more than an epoch of the
            # linear head; every iterate is released under the whole run's ε anyway
            return {"loss": total / max(seen, 1), "seen": seen}

        history = (lambda: {"accountant": [list(h) for h in engine.accountant.history]},
                   lambda saved: setattr(engine.accountant, "history", [tuple(h) for h in saved["accountant"]]))
        result = best_epoch_loop(model, dcfg.epochs, train_epoch, lambda: score(trained, val, data.task),
                                 config.teacher.train.select_metric, opt, folder / "state.pt", on_epoch,
                                 name, extra=history, on_resume=resumed)
    best_epoch, best_val, history = result.best_epoch, result.best_val, result.history
    with _expected_warnings(dcfg.accountant):
        spent = engine.get_epsilon(delta)
    out = {"best_epoch": best_epoch, "val": best_val, "epsilon_target": epsilon, "epsilon": spent,
           "delta": delta, "noise_multiplier": opt.noise_multiplier,
           "max_grad_norm": dcfg.max_grad_norm, "sample_rate": loader.sample_rate,
           "poisson_sampling": True, "steps": sum(h[-1] for h in engine.accountant.history),
           "epochs": dcfg.epochs, "accountant": dcfg.accountant, "model": dcfg.model,
           "noise": dcfg.noise, "guarantee_holds": dcfg.noise == "secret",
           "seconds": round(time.perf_counter() - started, 2)}
    save_classifier(model.eval(), folder, arch, data.channels, data.n_classes,
                    extra={"seed": seed, "dataset": data.name, "task": data.task, "method": dp_name(epsilon),
                           "image_size": data.size,
                           "label_names": list(data.label_names), "dp": out}, **kwargs)
    # per-epoch training loss and Poisson batch sizes are computed from the private data: they
    # stay in the run directory, outside the released folder (kr.release copies the model only)
    write_json(folder / "metrics.json", {**out, "history": history})
    (folder / "state.pt").unlink(missing_ok=True)
    log.info("%s (%s): best epoch %d, val acc %.4f auc %.4f, ε = %.3f (δ = %.2g), noise σ = %.3f, %s noise, %.0f s",
             dp_name(epsilon), dcfg.model, best_epoch, best_val["acc"], best_val["auc"], spent, delta,
             opt.noise_multiplier, dcfg.noise, out["seconds"])
    if dcfg.noise == "seeded":
        log.warning("%s: seeded noise (dpsgd.noise=seeded) makes training replayable from the seed: its "
                    "ε = %.2f does not hold; use the default, dpsgd.noise=secret, for a model you release",
                    dp_name(epsilon), spent)
    return out


def dp_delta(delta: float, n: int) -> float:
    """δ for N train images: the configured one, or min(1e-5, 1/(10·N)); δ ≥ 1/N is refused
    (it admits publishing a record in full)."""
    if not delta:
        return min(1e-5, 1.0 / (10 * n))
    if delta >= 1.0 / n:
        raise KRError(f"dpsgd.delta = {delta:g} is not below 1/N = {1 / n:.2g} for N = {n} train images: "
                      f"such a δ admits publishing a whole record; set it well below 1/N, or 0 for "
                      f"min(1e-5, 1/(10·N))")
    return delta


# What the (ε, δ) guarantee does not cover: said beside every DP model (model card, report).
LIMITS = (
    "the hyper-parameters (clipping bound, learning rate, batch size, epochs, the ScatterNet) were "
    "chosen on validation splits of these datasets, which is outside ε",
    "several DP models trained on one dataset compose: releasing the models for ε₁ and ε₂ together "
    "spends ε₁ + ε₂ (basic composition)",
    "per-epoch training loss and Poisson batch sizes are computed from the private data; they stay in "
    "the run directory (metrics.json) and are not part of the release",
    "the unit of privacy is one image, not one patient: a patient with k images in the train split is "
    "protected at kε (MedMNIST records no patient ids)",
    "releasing any model trained on the same images without DP (the teacher, a KR student, the other "
    "baselines) beside this one voids the guarantee for them jointly: their leakage is unbounded",
    "the validation images are read by the choice of the best epoch and of the hyper-parameters: they "
    "are not protected by ε",
    "the number of training images N (hence the sampling rate q and the noise σ) is treated as public",
    "the noise and the batch sampling come from PyTorch's generator seeded with secret bits from the OS, "
    "not from a cryptographic generator: the guarantee holds against an attacker who sees the weights, "
    "not one who can observe or predict the generator's internal state",
    "δ adds up under composition as ε does: k releases from one dataset give at least (kε, kδ)",
)


def _architecture(config: Config, data: ImageDataset) -> tuple[str, dict]:
    dcfg = config.dpsgd
    if dcfg.model == "cnn":
        return config.teacher.model.arch, {"width": config.teacher.model.width, "norm": "group", "dropout": 0.0}
    return "scatternet", {"image_size": data.size, "J": dcfg.scatter_j,
                          "head": dcfg.model.removeprefix("scatter-"), "width": dcfg.width}


def _scattered(model: nn.Module, split: Split, batch: int = 512) -> Split:
    """The split's scattering features, computed once: they do not change while the head trains."""
    feats = [model.scatter(split.images[i:i + batch]) for i in range(0, len(split), batch)]
    return Split(torch.cat(feats) if feats else split.images, split.labels)

"""The methods a run trains and compares (step 6): one registry that the config (`baselines`),
the pipeline (their stages, results.json), the audit (its targets), the report and the
release all read.  A new method is its module and one entry here.

    real                  the teacher (step 1), trained on the real train split
    kr                    the GKD student (step 5): regenerated synthetic images, teacher labels
    synthetic, regen, soft  the baselines of step 6, each one KR ingredient short
    kr-t1, kr-t4, kr-top1, kr-one, kr-dp  KR with another label channel (opt-in): soft labels at
                          T = 1 or 4, the teacher's top-1 label only, one network's labels (an
                          ensemble teacher's first member), or labels from the DP-SGD model
    dpsgd                 DP-SGD on the real images, one model per target ε (`dpsgd-eps<ε>`)

A method's `stages` is its kind, "student" or "dpsgd": kr.stages declares each kind's stages
(or a function (config, method) -> [kr.graph.Stage] of its own); each such stage names the
model it ships (`Stage.model`) and has the method's name as its group, so `kr run` can be asked
for it by name.  This module is data the config reads (`baselines`), so it imports nothing of
kr's: the stages that train a method live above it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

STUDENT_FIELDS = ("best_epoch", "mode", "soft_labels", "labels", "labeller", "knobs", "threshold",
                  "images_generated")
DP_FIELDS = ("best_epoch", "epsilon", "epsilon_target", "delta", "noise_multiplier", "accountant", "model",
             "noise", "guarantee_holds")


@dataclass(frozen=True)
class Method:
    name: str
    description: str                 # one line for tables and model cards
    stages: str | Callable[..., list] | None  # its kind in kr.stages, or a builder (None: the teacher)
    fields: tuple[str, ...] = ("best_epoch",)  # what results.json keeps of its stage's outputs
    options: dict[str, Any] = field(default_factory=dict)  # what its stage function reads
    always: bool = False             # runs in every run (real, kr); the others are `baselines`
    default: bool = True             # among the default `baselines`
    real_images: bool = False        # trained on the real train split itself
    formal_dp: bool = False          # carries an (ε, δ) guarantee (its model card says so)
    prefix: str | None = None        # its models are named <prefix><ε> (several per method)
    # the config section whose training augmentations its model used ("teacher.train",
    # "distill.train", "dpsgd"): what the audit queries it on (kr.privacy.signals)
    augmentation: str = "teacher.train"
    request: str | None = None       # the stage (or group) a request names to train it (default: its name)
    folder: str = "methods/{model}"  # its model's stage folder in the run directory

    def augmentation_of(self, config, data) -> tuple[int, bool]:
        """(crop padding, horizontal flip) its model trained with."""
        if self.augmentation == "dpsgd":
            # the ScatterNet head trains on the clean images' features (computed once); the cnn
            # on the teacher's crops and the dataset's flips
            return (config.teacher.train.crop_padding, data.hflip) if config.dpsgd.model == "cnn" else (0, False)
        section, _, _ = self.augmentation.partition(".")
        train = getattr(config, section).train
        return train.crop_padding, {"auto": data.hflip, "on": True, "off": False}[train.hflip]

    def describe(self, entry: dict) -> str:
        if self.formal_dp and "epsilon" in entry:
            model = f" {entry['model']}" if "model" in entry else ""
            void = ", seeded noise: ε does not hold" if entry.get("guarantee_holds") is False else ""
            return f"DP-SGD{model}, real images, ε = {entry['epsilon']:.2f} (δ = {entry['delta']:.1e}){void}"
        return self.description


def _student(name: str, description: str, regenerate: bool, soft: bool, labels: dict | None = None,
             **kw) -> Method:
    """A student of kr.distill: synthetic images only; (regenerated every epoch, teacher labels).
    `labels` overrides the label channel of `distill` for this method alone: `temperature`,
    `top_k`, `labeller="one"` (an ensemble teacher's first member labels; the ensemble still
    filters, so the images are KR's), or `labeller="dpsgd"` (the DP-SGD model at the largest
    target ε labels, and nothing is filtered: the non-private teacher never touches its data)."""
    return Method(name, description, "student", STUDENT_FIELDS, {"regenerate": regenerate, "soft": soft, **(labels or {})},
                  augmentation="distill.train", **kw)


METHODS: dict[str, Method] = {m.name: m for m in (
    # the teacher is step 1 of KR, and the real-image method it is compared with: one stage, said here
    Method("real", "teacher, real images", None, real_images=True, always=True, default=False,
           request="teacher", folder="teacher"),
    _student("kr", "GKD: regenerated + teacher labels", True, True, always=True, default=False),
    _student("synthetic", "fixed synthetic set, hard labels", False, False),
    # the ablations: one flag away (kr run --methods …), and in the benchmark table
    _student("regen", "regenerated, hard labels", True, False, default=False),
    _student("soft", "fixed synthetic set, teacher labels", False, True, default=False),
    # the label channel (what the teacher's labels pass on): KR with one setting changed
    _student("kr-t1", "GKD, teacher labels at T = 1", True, True, default=False, labels={"temperature": 1.0}),
    _student("kr-t4", "GKD, teacher labels at T = 4", True, True, default=False, labels={"temperature": 4.0}),
    _student("kr-top1", "GKD, the teacher's top-1 label only", True, True, default=False, labels={"top_k": 1}),
    _student("kr-one", "GKD, labels of one teacher network", True, True, default=False, labels={"labeller": "one"}),
    _student("kr-dp", "GKD, labels from the DP-SGD model", True, True, default=False, labels={"labeller": "dpsgd"}),
    Method("dpsgd", "DP-SGD, real images", "dpsgd", DP_FIELDS, real_images=True,
           formal_dp=True, prefix="dpsgd-eps", augmentation="dpsgd"),
)}


def baselines() -> tuple[str, ...]:
    """What `baselines` may list: every method that does not always run."""
    return tuple(n for n, m in METHODS.items() if not m.always)


def default_baselines() -> str:
    return ",".join(n for n, m in METHODS.items() if m.default and not m.always)


def method_of(model: str) -> Method | None:
    """The method a model (results.json's name for it: `kr`, `dpsgd-eps8`) belongs to."""
    if model in METHODS:
        return METHODS[model]
    return next((m for m in METHODS.values() if m.prefix and model.startswith(m.prefix)), None)


def dp_name(epsilon: float) -> str:
    """The DP-SGD model trained for a target ε: `dpsgd-eps8`, `dpsgd-eps0.5`."""
    return f"{METHODS['dpsgd'].prefix}{epsilon:g}"


def training_augmentation(config, data, model: str) -> tuple[int, bool]:
    """(crop padding, horizontal flip) that `model` trained with, from the run's config."""
    return method_of(model).augmentation_of(config, data)


def is_dp(model: str) -> bool:
    m = method_of(model)
    return bool(m and m.formal_dp)


def stage(model: str) -> str:
    """The request name of the stage(s) that train a model (every `dpsgd-eps<ε>` is `dpsgd`)."""
    m = method_of(model)
    return (m.request or m.name) if m else model


def stage_folder(model: str) -> str:
    """The stage folder, relative to the run directory, that holds the model."""
    m = method_of(model)
    return (m.folder if m else Method.folder).format(model=model)


def folder(run: Path, model: str) -> Path:
    return Path(run) / stage_folder(model)


def labeller(model: str) -> str:
    """Who labels a student's synthetic images: "teacher", "one" (kr-one) or "dpsgd" (kr-dp)."""
    m = method_of(model)
    return (m.options.get("labeller", "teacher") if m and m.options.get("soft") else "teacher")


def saw_real_images(model: str) -> bool:
    """Trained on the real train split itself (the teacher, DP-SGD), not on synthetic images."""
    m = method_of(model)
    return bool(m and m.real_images)


def describe(model: str, entry: dict) -> str:
    """One line for tables and model cards; `entry` is the model's entry in results.json."""
    m = method_of(model)
    return m.describe(entry) if m else ""

"""The methods a run trains and compares (step 6), named in one place: which pipeline stage
trains each, where its model lives in the run directory, what it is, and whether it saw real
images.  The pipeline, the audit, the report and the release all ask here, so a new method
is one entry, not a search for special cases.

    real                  the teacher (step 1), trained on the real train split
    kr                    the GKD student (step 5): regenerated synthetic images, teacher labels
    synthetic, regen, soft  the baselines of step 6, each one KR ingredient short
    dpsgd-eps<ε>          DP-SGD on the real images, one model per target ε (kr.privacy.dp)
"""

from __future__ import annotations

from pathlib import Path

# The students trained on synthetic images only (kr.distill): method → (regenerated every
# epoch, teacher soft labels).  The baselines of step 6 each lack one of KR's two ingredients.
RECIPES: dict[str, tuple[bool, bool]] = {
    "kr": (True, True), "synthetic": (False, False), "regen": (True, False), "soft": (False, True)}
STUDENTS = tuple(RECIPES)
BASELINES = (*(m for m in STUDENTS if m != "kr"), "dpsgd")  # what `baselines` may list
DESCRIPTIONS = {"real": "teacher, real images", "kr": "GKD: regenerated + teacher labels",
                "synthetic": "fixed synthetic set, hard labels", "regen": "regenerated, hard labels",
                "soft": "fixed synthetic set, teacher labels"}
DP_PREFIX = "dpsgd-eps"


def dp_name(epsilon: float) -> str:
    """The DP-SGD model trained for a target ε: `dpsgd-eps8`, `dpsgd-eps0.5`."""
    return f"{DP_PREFIX}{epsilon:g}"


def is_dp(method: str) -> bool:
    return method.startswith(DP_PREFIX)


def stage(method: str) -> str:
    """The pipeline stage that trains a method (every `dpsgd-eps<ε>` comes from `dpsgd`)."""
    return "teacher" if method == "real" else "dpsgd" if is_dp(method) else method


def stage_folder(method: str) -> str:
    """The stage folder, relative to the run directory, that holds the method's model."""
    return "teacher" if method == "real" else f"methods/{method}"


def folder(run: Path, method: str) -> Path:
    return Path(run) / stage_folder(method)


def saw_real_images(method: str) -> bool:
    """Trained on the real train split itself (the teacher, DP-SGD), not on synthetic images."""
    return method == "real" or is_dp(method)


def describe(method: str, m: dict) -> str:
    """One line for tables and model cards; `m` is the method's entry in results.json."""
    if is_dp(method) and "epsilon" in m:
        model = f" {m['model']}" if "model" in m else ""
        return f"DP-SGD{model}, real images, ε = {m['epsilon']:.2f} (δ = {m['delta']:.1e})"
    return DESCRIPTIONS.get(method, "")

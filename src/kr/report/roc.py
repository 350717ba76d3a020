"""ROC figures of the audit, linear and log-log side by side (the log-log panel is where low-FPR
leakage shows; Carlini et al. 2022 Fig. 1).  I/O only: the curves come from `metrics.roc`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kr.artifacts import atomic_path
from kr.privacy.metrics import auc, roc


def roc_figure(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: str | Path, title: str) -> None:
    """One PNG: left linear axes, right log-log; one curve per attack, AUC in the legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6))
    for name, (scores, members) in curves.items():
        scores, members = np.ravel(scores), np.ravel(members)
        f, t = roc(scores, members)
        label = f"{name} (AUC {auc(scores, members):.3f})"
        axes[0].plot(f, t, label=label)
        axes[1].plot(np.maximum(f, 1e-4), np.maximum(t, 1e-4), label=label)
    for ax, scale in zip(axes, ("linear", "log")):
        ax.plot([1e-4, 1], [1e-4, 1], "k--", lw=0.8, label="chance")
        ax.set(xscale=scale, yscale=scale, xlabel="false positive rate", ylabel="true positive rate")
        lo = 0 if scale == "linear" else 1e-3
        ax.set_xlim(lo, 1)
        ax.set_ylim(lo, 1)
        ax.grid(alpha=0.3)
    axes[0].set_title("ROC (linear)")
    axes[1].set_title("ROC (log-log)")
    axes[1].legend(fontsize=7, loc="lower right")
    fig.suptitle(title)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)

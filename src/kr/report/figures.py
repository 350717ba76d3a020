"""The report's figures, drawn from what a run directory already holds (results.json and
metrics.jsonl): nothing is recomputed, so a report can be rebuilt anywhere the folder is."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from kr.artifacts import atomic_path


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    _plt().close(fig)
    return path


def dp_curves(points: list[dict]) -> dict[tuple[str, str], list[dict]]:
    """The DP-SGD points of each (run, experiment), ordered by ε: one privacy–utility curve each."""
    curves = defaultdict(list)
    for p in points:
        if p.get("epsilon") is not None:
            curves[(p.get("run", ""), p.get("experiment", "procedure"))].append(p)
    return {k: sorted(v, key=lambda p: p["epsilon"]) for k, v in curves.items()}


def privacy_utility(points: list[dict], path: Path) -> Path:
    """x: the strongest attack's AUC on a method, y: its test ACC; one point per method and run.
    Up-left is better: useful and private.  0.5 is an attacker who guesses.  The DP-SGD models
    form one curve over their target ε, so KR is read against the formal-guarantee frontier."""
    return _save(privacy_utility_figure(points), path)


def privacy_utility_figure(points: list[dict]):
    """The figure `privacy_utility` saves (matplotlib's, to be inspected)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    by_method = defaultdict(list)
    for p in points:
        if p.get("epsilon") is None:
            by_method[p["method"]].append(p)
    for i, (method, ps) in enumerate(by_method.items()):
        # filled: experiment 1 (the procedure, `kr audit`); hollow: the shipped model only
        for exp, filled in (("procedure", True), ("shipped", False)):
            sel = [p for p in ps if p.get("experiment", "procedure") == exp]
            if sel:
                ax.scatter([p["auc"] for p in sel], [p["acc"] for p in sel], s=40, color=f"C{i % 10}",
                           facecolors=None if filled else "none", label=method if filled or len(sel) == len(ps)
                           else None)
    for j, ((_, exp), curve) in enumerate(dp_curves(points).items()):
        filled = exp == "procedure"
        ax.plot([p["auc"] for p in curve], [p["acc"] for p in curve], "-o", color="0.35", lw=1, ms=5,
                mfc="0.35" if filled else "none", label="DP-SGD (ε)" if j == 0 else None)
        for p in curve:
            void = " (does not hold: seeded noise)" if p.get("guarantee_holds") is False else ""
            ax.annotate(f"ε={p['epsilon']:g}{void}", (p["auc"], p["acc"]), textcoords="offset points",
                        xytext=(4, -10), fontsize=7, color="0.35")
    ax.axvline(0.5, color="k", lw=0.8, ls="--")
    ax.set(xlabel="membership inference: best attack's AUC (0.5 = guessing)", ylabel="test accuracy",
           title="privacy–utility (up and left is better)\nfilled: experiment 1 (procedure); hollow: shipped model")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def canary_points(results: dict) -> list[dict]:
    """Each model of the run's canary audit: its canary AUC with the interval over canaries
    (mislabelled canaries, the type the ε bound rests on) and its test ACC."""
    points = []
    for model, row in (results.get("canary") or {}).items():
        c, entry = (row.get("mislabelled") or {}), results.get("methods", {}).get(model, {})
        if c.get("auc") is not None and "test" in entry:
            points.append({"method": model, "auc": c["auc"], "ci": c.get("auc_ci"), "acc": entry["test"]["acc"]})
    return points


def canary_frontier(points: list[dict], path: Path, what: str = "one canary run") -> Path:
    """The label-channel frontier: test ACC against canary AUC, each model a point with its
    95 % interval over canaries, named beside it; up and left is better (0.5: the audit
    guesses).  Marker: ★ the teacher, ■ a student that never saw a teacher label, ▲ DP-SGD,
    ● a student of the teacher's (or the DP-SGD model's) labels."""
    from kr.methods import METHODS, is_dp

    def marker(m: str) -> str:
        if m == "real":
            return "*"
        if is_dp(m):
            return "^"
        return "s" if m in METHODS and not METHODS[m].options.get("soft", True) else "o"

    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.2, 5.0))
    cmap = plt.get_cmap("tab20")
    for i, p in enumerate(points):
        lo, hi = p["ci"] or (p["auc"], p["auc"])
        ax.errorbar([p["auc"]], [p["acc"]], xerr=[[p["auc"] - lo], [hi - p["auc"]]], fmt=marker(p["method"]),
                    ms=8 if marker(p["method"]) == "*" else 6, capsize=3, color=cmap(i % 20), label=p["method"])
        ax.annotate(p["method"], (p["auc"], p["acc"]), textcoords="offset points", xytext=(5, 4), fontsize=7)
    ax.axvline(0.5, color="k", lw=0.8, ls="--")
    ax.set(xlabel="canary AUC, 95 % interval over canaries (0.5: the audit guesses)", ylabel="test accuracy",
           title=f"leakage about the canaries against accuracy ({what})\n"
                 "★ teacher, ■ no teacher label, ▲ DP-SGD, ● teacher-labelled; up and left is better")
    ax.title.set_fontsize(9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right", ncol=2)
    fig.tight_layout()
    return _save(fig, path)


def training_curves(records: list[dict], path: Path) -> Path | None:
    """Validation ACC and training loss per epoch, for the teacher and every student."""
    curves = defaultdict(list)
    for r in records:
        if "epoch" in r and "val_acc" in r and (r["stage"] == "teacher" or r["stage"].startswith("methods/")):
            curves[r["stage"]].append(r)
    if not curves:
        return None
    plt = _plt()
    fig, (acc, loss) = plt.subplots(1, 2, figsize=(11, 4.2))
    for stage, rs in curves.items():
        rs = sorted(rs, key=lambda r: r["epoch"])  # a resumed stage may have logged twice
        label = "teacher (real)" if stage == "teacher" else stage.split("/", 1)[1]
        acc.plot([r["epoch"] for r in rs], [r["val_acc"] for r in rs], label=label)
        loss.plot([r["epoch"] for r in rs], [r["loss"] for r in rs], label=label)
    acc.set(xlabel="epoch", ylabel="validation accuracy", title="validation accuracy")
    loss.set(xlabel="epoch", ylabel="training loss", title="training loss", yscale="log")
    for ax in (acc, loss):
        ax.grid(alpha=0.3)
    acc.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def selection_curves(results: dict, path: Path) -> Path | None:
    """Step 3 (a short student per checkpoint, with the downstream score of its samples) and step 4 (each
    knob/threshold trial), all on the validation split."""
    selection, tuning = results.get("selection"), results.get("tuning")
    if not selection:
        return None
    plt = _plt()
    fig, (ckpt, tune) = plt.subplots(1, 2, figsize=(11, 4.2))
    cands = sorted(selection["candidates"], key=lambda c: c["kimg"])
    kimg = [c["kimg"] for c in cands]
    ckpt.plot(kimg, [c["val"]["acc"] for c in cands], "o-", label="short student val acc")
    ckpt.plot(kimg, [c["val"]["auc"] for c in cands], "s--", label="short student val auc")
    quality = {c["name"]: c for c in results.get("generator", {}).get("quality", {}).get("checkpoints", [])}
    down = [quality.get(c["name"], {}).get("downstream", {}).get("acc", float("nan")) for c in cands]
    if any(d == d for d in down):
        ckpt.plot(kimg, down, "^:", label="downstream val acc (samples alone, hard labels)")
    chosen = next(c for c in cands if c["name"] == selection["selected"])
    ckpt.axvline(chosen["kimg"], color="k", lw=0.8, ls="--", label=f"selected {chosen['name']}")
    ckpt.set(xlabel="generator kimg", title="checkpoint optimisation (validation)")
    ckpt.grid(alpha=0.3)
    ckpt.legend(fontsize=8)
    if tuning:
        knob = tuning["knob"]
        labels = [f"{knob}={t['knobs'][knob]:g}\nthr={t['threshold']:g}" for t in tuning["trials"]]
        colours = ["C3" if (t["knobs"] == tuning["knobs"] and t["threshold"] == tuning["threshold"]) else "C0"
                   for t in tuning["trials"]]
        tune.bar(range(len(labels)), [t["val"]["acc"] for t in tuning["trials"]], color=colours)
        tune.set_xticks(range(len(labels)), labels, fontsize=7)
        lo = min(t["val"]["acc"] for t in tuning["trials"])
        tune.set_ylim(max(0.0, lo - 0.1), 1.0)
        tune.set(ylabel="short student val acc", title="tuning (validation; red = chosen)")
        tune.grid(alpha=0.3, axis="y")
    else:
        tune.axis("off")
    fig.tight_layout()
    return _save(fig, path)

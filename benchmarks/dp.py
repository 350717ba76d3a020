"""Benchmark: DP-SGD variants × target ε × dataset, the default chosen on validation.

    python benchmarks/dp.py --datasets digits breastmnist pneumoniamnist --epsilons 8 1
    python benchmarks/dp.py --variants scatter-linear --seeds 1 2       # more seeds of one variant
    python benchmarks/dp.py --table       # rebuild benchmarks/DP.md from the JSON lines

Each variant is a set of overrides on the `cpu` preset's `dpsgd` section, trained by the
product's own kr.dpsgd.train_dpsgd on the real train split (best epoch on validation, as in
`kr run`), then scored on validation and test.  Rows: val and test ACC/AUC, the ε the
accountant reports spent at the row's δ, noise multiplier, steps, seconds, threads, CPU.
Rows measured before issue 26 used δ = 1/N; today's rule is δ = min(1e-5, 1/(10·N)) (a
`delta_rule` field), and the benchmark trains with seeded, reproducible noise
(`dpsgd.noise=seeded`: fine for measuring, never for a release).  Every row
is appended to benchmarks/results/dp.jsonl as soon as it is measured; a rerun skips rows it
already has.  The default is the variant with the best mean validation ACC + AUC over the
datasets and ε measured at seed 0 — test never chooses.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import torch

from kr.config import load_config
from kr.data import load_dataset
from kr.dpsgd import train_dpsgd
from kr.train import score

sys.path.insert(0, str(Path(__file__).resolve().parent))
from table import _cpu  # noqa: E402  (one machine descriptor for every benchmark)

LINEAR = ["dpsgd.model=scatter-linear", "dpsgd.lr=4", "dpsgd.max_grad_norm=0.1"]
VARIANTS = {
    # Tramèr & Boneh 2021: scattering (J = 2, L = 8), GroupNorm, linear head; lr 4, C 0.1
    "scatter-linear": [*LINEAR, "dpsgd.batch_size=256", "dpsgd.epochs=30"],
    # De et al. 2022's direction: much larger batches, more epochs (fewer, less noisy steps)
    "scatter-linear-b1024-e60": [*LINEAR, "dpsgd.batch_size=1024", "dpsgd.epochs=60"],
    "scatter-linear-b2048-e100": [*LINEAR, "dpsgd.batch_size=2048", "dpsgd.epochs=100"],
    "scatter-linear-lr1-e60": ["dpsgd.model=scatter-linear", "dpsgd.lr=1", "dpsgd.max_grad_norm=0.1",
                               "dpsgd.batch_size=256", "dpsgd.epochs=60"],
    # Tramèr & Boneh's ScatterNet+CNN, scaled down (two 32-channel conv layers)
    "scatter-cnn": ["dpsgd.model=scatter-cnn", "dpsgd.lr=1", "dpsgd.max_grad_norm=0.1",
                    "dpsgd.batch_size=256", "dpsgd.epochs=60"],
    # the default before issue 20: the teacher's ResNet-20 with GroupNorm, end to end, augmented
    "cnn": ["dpsgd.model=cnn", "dpsgd.epochs=20", "dpsgd.batch_size=128", "dpsgd.lr=1",
            "dpsgd.max_grad_norm=1"],
}
OUT = Path("benchmarks/results/dp.jsonl")
MD = Path("benchmarks/DP.md")
MARKER = "<!-- generated above; written by hand below -->"


def rows() -> list[dict]:
    return [json.loads(line) for line in OUT.read_text().splitlines() if line.strip()] if OUT.is_file() else []


DELTA_RULE = "min(1e-5, 1/(10N))"  # kr.dpsgd.dp_delta since issue 26; rows without the field: 1/N


def key(r: dict) -> tuple:
    return r["dataset"], r["variant"], float(r["epsilon_target"]), int(r["seed"]), r.get("delta_rule", "1/N")


def measure(dataset: str, variant: str, epsilon: float, seed: int, data_dir: str | None) -> dict:
    data = load_dataset(dataset, data_dir=data_dir)
    config = load_config("cpu", overrides=[*VARIANTS[variant], f"seed={seed}", "dpsgd.noise=seeded"],
                         data={"dataset": dataset})
    with tempfile.TemporaryDirectory() as tmp:
        out = train_dpsgd(data, config, epsilon, Path(tmp), torch.device("cpu"))
        from kr.models import load_classifier
        model = load_classifier(Path(tmp))
    test = score(model, data.test, data.task)
    majority = data.test.labels.bincount().max().item() / len(data.test)
    return {"dataset": dataset, "variant": variant, "overrides": VARIANTS[variant], "seed": seed,
            "epsilon_target": epsilon, "epsilon": out["epsilon"], "delta": out["delta"],
            "accountant": out["accountant"], "noise_multiplier": out["noise_multiplier"],
            "steps": out["steps"], "sample_rate": out["sample_rate"], "best_epoch": out["best_epoch"],
            "val": out["val"], "test": test, "test_majority_acc": majority, "seconds": out["seconds"],
            "threads": torch.get_num_threads(), "cpu": _cpu(), "torch": torch.__version__,
            "delta_rule": DELTA_RULE}


def save(row: dict) -> None:
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with open(OUT, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.write(json.dumps(row) + "\n")


def _mean(xs):
    return sum(xs) / len(xs)


def default_variant(all_rows: list[dict]) -> str | None:
    """The variant with the best mean validation ACC + AUC at seed 0 over every (dataset, ε)
    cell measured; a variant missing a cell (too slow to run everywhere) is not a candidate."""
    cells = defaultdict(dict)
    for r in all_rows:
        if r["seed"] == 0 and "delta_rule" not in r:  # the choice was made at δ = 1/N (issue 20)
            cells[r["variant"]][(r["dataset"], r["epsilon_target"])] = r["val"]["acc"] + r["val"]["auc"]
    every = set().union(*(set(c) for c in cells.values())) if cells else set()
    candidates = [v for v in cells if set(cells[v]) >= every]
    if not candidates:
        return None
    return max(candidates, key=lambda v: _mean([cells[v][c] for c in every]))


def table() -> str:
    all_rows = rows()
    best = default_variant(all_rows)
    cpus = sorted({r["cpu"] for r in all_rows})
    lines = ["# DP-SGD variants", "",
             "Written by `python benchmarks/dp.py --table` from `results/dp.jsonl`. "
             f"Machine: {', '.join(cpus)}; PyTorch {all_rows[0]['torch'] if all_rows else '?'}, CPU only; "
             "`threads` is the PyTorch threads each row ran with. ε is what the accountant reports spent "
             "at the section's δ. Mean ± std over the seeds listed; val chose the epoch (and, across rows, "
             "the default), test chose nothing.", "",
             f"**Default chosen on validation** (best mean val ACC + AUC over every dataset × ε cell at "
             f"seed 0, among the variants that measured them all): `{best}`.", ""]
    for rule, title in ((DELTA_RULE, f"δ = {DELTA_RULE} (today's default, issue 26)"),
                        ("1/N", "δ = 1/N (before issue 26; the default variant was chosen here)")):
        era = [r for r in all_rows if r.get("delta_rule", "1/N") == rule]
        if era:
            lines += [f"# At {title}", ""] + _sections(era, best)
    lines += ["Variants (overrides on the `cpu` preset):", ""]
    lines += [f"- `{v}`: {' '.join(o)}" for v, o in VARIANTS.items()]
    return "\n".join(lines) + "\n"


def _sections(all_rows: list[dict], best: str | None) -> list[str]:
    lines = []
    groups = defaultdict(list)
    for r in all_rows:
        groups[(r["dataset"], r["epsilon_target"], r["variant"])].append(r)
    for dataset in sorted({r["dataset"] for r in all_rows}):
        maj = next(r["test_majority_acc"] for r in all_rows if r["dataset"] == dataset)
        deltas = sorted({r["delta"] for r in all_rows if r["dataset"] == dataset})
        lines += [f"## {dataset} (test majority class: ACC {maj:.3f}; δ = {', '.join(f'{d:.1e}' for d in deltas)})", "",
                  "| ε target | variant | seeds | ε spent | val ACC | val AUC | test ACC | test AUC | seconds | threads |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for eps in sorted({k[1] for k in groups if k[0] == dataset}, reverse=True):
            for variant in VARIANTS:
                rs = sorted(groups.get((dataset, eps, variant), []), key=lambda r: r["seed"])
                if not rs:
                    continue

                def stat(get, digits=3):
                    xs = [get(r) for r in rs]
                    m = _mean(xs)
                    if len(xs) == 1:
                        return f"{m:.{digits}f}"
                    sd = (sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) ** 0.5
                    return f"{m:.{digits}f} ± {sd:.{digits}f}"
                name = f"**{variant}**" if variant == best else variant
                lines.append(f"| {eps:g} | {name} | {', '.join(str(r['seed']) for r in rs)} | "
                             f"{max(r['epsilon'] for r in rs):.2f} | {stat(lambda r: r['val']['acc'])} | "
                             f"{stat(lambda r: r['val']['auc'])} | {stat(lambda r: r['test']['acc'])} | "
                             f"{stat(lambda r: r['test']['auc'])} | {stat(lambda r: r['seconds'], 1)} | "
                             f"{rs[0]['threads']} |")
        lines.append("")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=["digits", "breastmnist", "pneumoniamnist"])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--epsilons", nargs="+", type=float, default=[8.0, 1.0])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--threads", type=int, default=0, help="PyTorch threads (0: PyTorch's default)")
    ap.add_argument("--table", action="store_true", help="only rebuild benchmarks/DP.md")
    args = ap.parse_args()
    if not args.table:
        if args.threads:
            torch.set_num_threads(args.threads)
        for dataset in args.datasets:
            for variant in args.variants:
                for eps in args.epsilons:
                    for seed in args.seeds:
                        if (dataset, variant, eps, seed, DELTA_RULE) in {key(r) for r in rows()}:
                            continue
                        row = measure(dataset, variant, eps, seed, args.data_dir)
                        save(row)
                        print(json.dumps({k: row[k] for k in ("dataset", "variant", "epsilon_target", "seed",
                                                              "epsilon", "val", "test", "seconds")}), flush=True)
    # the hand-written reading of the numbers, below the marker, survives a rebuild
    hand = MD.read_text().split(MARKER, 1)[1] if MD.is_file() and MARKER in MD.read_text() else "\n"
    MD.write_text(table() + "\n" + MARKER + hand)


if __name__ == "__main__":
    main()

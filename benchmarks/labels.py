"""Benchmark: the label channel — what each way of labelling KR's synthetic images costs in
accuracy and what it leaks, measured by the one-run canary audit.

    python benchmarks/labels.py run --runs DIR --datasets breastmnist --seeds 10 11 12 --canaries 140
    python benchmarks/labels.py table        # Markdown from results/table.jsonl, and the frontier figure

`run`: per dataset and seed, one `kr run` with every label-channel method beside the students
that never saw a teacher label and DP-SGD, then `kr audit RUN --canaries M` (calibrated by the
shipped run).  The methods (kr.methods):

    kr        the default: the teacher's softmax at distill.temperature (T = 2)
    kr-t1, kr-t4   T = 1 (the paper's GKD), T = 4
    kr-top1   the teacher's top-1 label only
    kr-one    one network's labels (the teacher ensemble's first member)
    kr-dp     labels from the DP-SGD model at the largest ε (its ε holds for the labels)
    synthetic, regen   hard conditioning labels: never a teacher label (the reference)
    dpsgd-eps<ε>       DP-SGD on the real images

Each finished run adds its rows to results/table.jsonl (study "labels"), the one store of
these numbers (each model's test ACC and its scores on the mislabelled canaries): `table` reads
them there, and `python benchmarks/table.py render` writes from them the "which model to
release" blocks of the README and the walkthrough.

`table`: per dataset, each method's test ACC (mean ± SE over seeds), canary AUC (mean over
seeds, with its interval) and its difference to `regen` (the hard-label student on KR's regenerated images) and
to `kr`, paired over canaries within each seed and averaged over seeds, with a 95 % interval
from the seeds' bootstrap draws averaged draw by draw (the seeds are independent canary runs).
The test split is read to report, never to choose.  Runs resume: a finished stage is reused.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
from table import add, mean_spread, over_seeds, paired_seeds, read, said  # noqa: E402  (one store, one statistics)

from kr.privacy.metrics import _auc  # noqa: E402  (ties count half, as everywhere in kr)

METHODS = "synthetic,regen,kr-t1,kr-t4,kr-top1,kr-one,kr-dp,dpsgd"
REFERENCE, DEFAULT = "regen", "kr"
ORDER = ("real", "kr", "synthetic", "regen", "soft", "kr-t1", "kr-t4", "kr-top1", "kr-one",
         "dpsgd-eps8", "dpsgd-eps1", "kr-dp")  # a run's order of methods; others after, by name
RESAMPLES = 2000


def _kr(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "kr", *args], check=True)


def runs_of(table_rows: list[dict]) -> list[dict]:
    """The table's rows of the labels study, one dict per dataset × seed: each method's test ACC
    and its scores on that seed's mislabelled canaries (whose bits every method shares)."""
    out: dict[tuple, dict] = {}
    for r in table_rows:
        run = out.setdefault((r["dataset"], r["seed"]), {
            "dataset": r["dataset"], "seed": r["seed"], "test": {}, "scores": {}, "bits": None,
            "cpu": r["cpu"], "commits": set()})
        run["test"][r["method"]] = {"acc": r["test_acc"], "auc": r["test_auc"]}
        run["commits"].update(c.strip() for c in r["commit"].split(","))
        if r.get("canary_scores") is not None:
            bits = [bool(b) for b in r["canary_bits"]]
            if run["bits"] is not None and run["bits"] != bits:
                raise ValueError(f"{r['dataset']} seed {r['seed']}: {r['method']}'s canaries are not the run's")
            run["bits"], run["scores"][r["method"]] = bits, r["canary_scores"]
    rank = {m: i for i, m in enumerate(ORDER)}
    for run in out.values():
        run["test"] = dict(sorted(run["test"].items(), key=lambda kv: (rank.get(kv[0], len(ORDER)), kv[0])))
    return list(out.values())


def run(args) -> None:
    for dataset in args.datasets:
        for seed in args.seeds:
            out = Path(args.runs) / f"{dataset}-s{seed}"
            sets = [a for o in args.set for a in ("--set", o)]
            _kr("run", "--dataset", dataset, "--seed", str(seed), "--out", str(out), "--device", "cpu",
                "--methods", args.methods, *sets)
            _kr("audit", str(out), "--canaries", str(args.canaries), "--device", "cpu")
            add([out], study="labels")  # the rows (commits: the run's own, stage by stage)


def _over_seeds(rows: list[dict], statistic, seed: int = 0) -> tuple[float, list[float]]:
    """statistic(scores, bits) on each seed's mislabelled canaries, averaged over seeds, with
    its 95 % interval (table.over_seeds: per-seed bootstraps averaged draw by draw)."""
    units = [({m: np.array(v) for m, v in r["scores"].items()}, np.array(r["bits"])) for r in rows]
    return over_seeds(units, statistic, RESAMPLES, seed)


def paired_over_seeds(rows: list[dict], a: str, b: str, seed: int = 0) -> tuple[float, list[float]]:
    """Canary AUC(a) − AUC(b), paired over each seed's canaries, averaged over seeds."""
    return _over_seeds(rows, lambda s, y: _auc(s[a], y) - _auc(s[b], y), seed)


def auc_over_seeds(rows: list[dict], m: str, seed: int = 0) -> tuple[float, list[float]]:
    """m's canary AUC (mislabelled canaries), averaged over seeds, with its interval."""
    return _over_seeds(rows, lambda s, y: _auc(s[m], y), seed)


def figure(rows: list[dict], path: Path) -> Path:
    """The frontier over seeds: each method's mean test ACC against its mean canary AUC, with
    the interval over canaries and seeds (kr.report.figures.canary_frontier)."""
    from kr.report.figures import canary_frontier

    points, same = [], []
    for m in rows[0]["scores"]:
        if all(m in r["scores"] and m in r["test"] for r in rows):
            twin = next((p["method"] for p in points if all(r["scores"][p["method"]] == r["scores"][m] for r in rows)), None)
            if twin:  # kr-one with a one-network teacher is kr itself: one point, said in the title
                same.append(f"{m} = {twin}")
                continue
            auc, ci = auc_over_seeds(rows, m)
            points.append({"method": m, "auc": auc, "ci": ci,
                           "acc": statistics.mean(r["test"][m]["acc"] for r in rows)})
    note = f" ({', '.join(same)})" if same else ""
    seeds = f"seed{'s' * (len(rows) > 1)} {', '.join(str(r['seed']) for r in rows)}"
    return canary_frontier(points, path, f"mean over {seeds}{note}")


def _ms(xs: list[float]) -> str:
    return mean_spread(xs, se=True) or "—"


def _d(rows: list[dict], a: str, b: str) -> str:
    if a == b or not all(a in r["scores"] and b in r["scores"] for r in rows):
        return "—"
    m, (lo, hi) = paired_over_seeds(rows, a, b)
    verdict = "" if lo <= 0 <= hi else " (distinguishable)"
    return f"{m:+.3f} [{lo:+.3f}, {hi:+.3f}]{verdict}"


def _acc_diff(rows: list[dict], a: str, b: str) -> str:
    p = paired_seeds({r["seed"]: r["test"][a]["acc"] for r in rows}, {r["seed"]: r["test"][b]["acc"] for r in rows})
    return said(p["mean"], p["ci"])


def table_text(rows: list[dict]) -> str:
    lines = [f"| dataset | method | seeds | test ACC | canary AUC [95 % CI] | − {REFERENCE} (paired) | − {DEFAULT} (paired) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        rs = sorted((r for r in rows if r["dataset"] == dataset), key=lambda r: r["seed"])
        for m in rs[0]["test"]:
            if not all(m in r["test"] for r in rs):
                continue
            if all(m in r["scores"] for r in rs):
                a, (lo, hi) = auc_over_seeds(rs, m)
                auc = f"{a:.3f} [{lo:.3f}, {hi:.3f}]"
            else:
                auc = "—"
            lines.append(f"| {dataset} | {m} | {','.join(str(r['seed']) for r in rs)} | "
                         f"{_ms([r['test'][m]['acc'] for r in rs])} | {auc} | {_d(rs, m, REFERENCE)} | "
                         f"{_d(rs, m, DEFAULT)} |")
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        rs = [r for r in rows if r["dataset"] == dataset]
        said = "; ".join(f"kr − {b} {_acc_diff(rs, 'kr', b)}" for b in ("real", "dpsgd-eps8", "synthetic", "regen")
                         if all(b in r["test"] for r in rs))
        lines.append(f"\n{dataset}, test ACC paired over seeds (95 % t-interval): {said}.")
    cpus = sorted({r["cpu"] for r in rows})
    commits = sorted(set().union(*(r["commits"] for r in rows)))
    return "\n".join(lines) + f"\n\nCPU: {', '.join(cpus)}; commits {', '.join(commits)}."


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--runs", required=True)
    r.add_argument("--datasets", nargs="+", default=["breastmnist"])
    r.add_argument("--seeds", nargs="+", type=int, default=[10, 11, 12])
    r.add_argument("--canaries", type=int, default=140)
    r.add_argument("--methods", default=METHODS)
    r.add_argument("--set", action="append", default=[], help="a config override for every run (dotted=value)")
    sub.add_parser("table")
    args = p.parse_args()
    if args.cmd == "run":
        run(args)
    else:
        rows = runs_of(read("labels"))
        print(table_text(rows))
        for dataset in dict.fromkeys(r["dataset"] for r in rows):
            print(figure([r for r in rows if r["dataset"] == dataset], ROOT / "results" / f"labels-{dataset}.png"))


if __name__ == "__main__":
    main()

"""Benchmark: the whole method (`kr run --preset cpu`) on MedMNIST, several seeds.

    python benchmarks/kr_run.py --data-dir ../shared/data/medmnist --datasets breastmnist --seeds 0 1 2
    python benchmarks/kr_run.py ... --set distill.strategy=pool --tag pool   # a variant

Each run is a subprocess `kr run` (so its wall time is a user's), in its own run directory
under benchmarks/results/runs/ (finished stages are cached there; rerunning costs nothing).
Rows merge into benchmarks/results/kr.json; a Markdown table (mean ± std over seeds of every
method's test ACC/AUC, the CAS gap, and the wall time per stage) is printed.  Anchor: the
paper reports an average CAS gap of −1.24 points.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from table import _cpu  # noqa: E402  (one machine descriptor for every benchmark)

METHODS = ("real", "kr", "synthetic", "regen", "soft")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=os.environ.get("KR_DATA_DIR"))
    p.add_argument("--datasets", nargs="+", default=["breastmnist"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--preset", default="cpu")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--tag", default="default", help="Names a variant (its own run folders and rows).")
    p.add_argument("--runs", default="benchmarks/results/runs")
    p.add_argument("--out", default="benchmarks/results/kr.json")
    args = p.parse_args()

    out = Path(args.out)
    rows = json.loads(out.read_text())["runs"] if out.is_file() else []
    for dataset in args.datasets:
        for seed in args.seeds:
            run = Path(args.runs) / f"{dataset}-{args.preset}-{args.tag}-s{seed}"
            cmd = [sys.executable, "-m", "kr", "run", "--dataset", dataset, "--preset", args.preset,
                   "--seed", str(seed), "--out", str(run), "--device", "cpu",
                   *(["--data-dir", args.data_dir] if args.data_dir else []),
                   *(x for o in args.overrides for x in ("--set", o))]
            start = time.perf_counter()
            subprocess.run(cmd, check=True)
            wall = round(time.perf_counter() - start, 1)
            res = json.loads((run / "results.json").read_text())
            rows = [r for r in rows if (r["dataset"], r["seed"], r["tag"]) != (dataset, seed, args.tag)]
            stage_s = res["timings_s"]
            rows.append({"dataset": dataset, "seed": seed, "tag": args.tag, "overrides": args.overrides,
                         "methods": {m: {"val": v["val"], "test": v["test"]}
                                     for m, v in res["methods"].items()},
                         "cas_gap_pp": res["cas_gap_pp"], "selected": res["selection"]["selected"],
                         "tuned": {**res["tuning"]["knobs"], "threshold": res["tuning"]["threshold"]},
                         "generator": res["generator"]["kind"], "stage_s": stage_s,
                         "total_stage_s": round(sum(stage_s.values()), 1),
                         "wall_s_this_call": wall})  # small when the run was already cached
            print(json.dumps(rows[-1]), flush=True)
    machine = {"cpu": _cpu(), "torch_threads": torch.get_num_threads(),
               "torch": torch.__version__, "date": time.strftime("%Y-%m-%d")}
    out.write_text(json.dumps({"preset": args.preset, "machine": machine, "runs": rows}, indent=2) + "\n")
    print(table(rows))


def _ms(xs: list[float], points: bool = False) -> str:
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{statistics.mean(xs):+.1f} ± {sd:.1f}" if points else f"{statistics.mean(xs):.3f} ± {sd:.3f}"


def table(rows: list[dict]) -> str:
    lines = ["| dataset | variant | seeds | " + " | ".join(f"{m} ACC / AUC" for m in METHODS)
             + " | CAS gap (pp) | time per run (s) |",
             "|" + " --- |" * (len(METHODS) + 5)]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["tag"]), []).append(r)
    for (dataset, tag), rs in sorted(groups.items()):
        cells = []
        for m in METHODS:
            have = [r for r in rs if m in r["methods"]]
            cells.append(f"{_ms([r['methods'][m]['test']['acc'] for r in have])} / "
                         f"{_ms([r['methods'][m]['test']['auc'] for r in have])}" if have else "-")
        gap = _ms([r["cas_gap_pp"] for r in rs], points=True)
        lines.append(f"| {dataset} | {tag} | {', '.join(str(r['seed']) for r in rs)} | "
                     + " | ".join(cells) + f" | {gap} | "
                     + f"{statistics.mean(r['total_stage_s'] for r in rs):.0f} |")
    stages = sorted({s for r in rows for s in r["stage_s"]}, key=lambda s: list(rows[0]["stage_s"]).index(s)
                    if s in rows[0]["stage_s"] else 99)
    lines += ["", "| dataset | variant | " + " | ".join(stages) + " |", "|" + " --- |" * (len(stages) + 2)]
    for (dataset, tag), rs in sorted(groups.items()):
        lines.append(f"| {dataset} | {tag} | " + " | ".join(
            f"{statistics.mean(r['stage_s'].get(s, 0) for r in rs):.0f}" for s in stages) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()

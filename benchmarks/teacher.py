"""Benchmark: the real-data teacher (`kr teacher --preset cpu`) on MedMNIST, several seeds.

    python benchmarks/teacher.py --data-dir ../shared/data/medmnist [--seeds 0 1 2]

Writes benchmarks/results/teacher.json and prints a Markdown table (mean ± std over seeds,
wall time per run on this machine).  Anchor: MedMNIST v2's ResNet-18 (28) test ACC is 0.863
on BreastMNIST and 0.854 on PneumoniaMNIST.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from kr import pipeline
from kr.config import load_config

ANCHORS = {"breastmnist": 0.863, "pneumoniamnist": 0.854}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=os.environ.get("KR_DATA_DIR"))
    p.add_argument("--datasets", nargs="+", default=list(ANCHORS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--preset", default="cpu")
    p.add_argument("--runs", default="benchmarks/results/runs")
    p.add_argument("--out", default="benchmarks/results/teacher.json")
    args = p.parse_args()

    out = Path(args.out)
    # Merge with earlier results, so datasets and seeds can be measured in separate sittings;
    # finished runs are cached in their run directories and cost nothing to repeat.
    rows = json.loads(out.read_text())["runs"] if out.is_file() else []
    for dataset in args.datasets:
        for seed in args.seeds:
            config = load_config(args.preset, seed=seed, data={"dataset": dataset})
            res = pipeline.run(config, out=Path(args.runs) / pipeline.default_run_name(config),
                               data_dir=args.data_dir, device="cpu", stages=("teacher",))
            rows = [r for r in rows if (r["dataset"], r["seed"]) != (dataset, seed)]
            rows.append({"dataset": dataset, "seed": seed, **res["methods"]["real"],
                         "teacher_s": res["timings_s"]["teacher"]})  # measured when trained
            print(json.dumps(rows[-1]), flush=True)
    machine = {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
               "processor": platform.processor() or platform.machine(),
               "torch": torch.__version__, "date": time.strftime("%Y-%m-%d")}
    out.write_text(json.dumps({"preset": args.preset, "machine": machine,
                                          "runs": rows}, indent=2) + "\n")
    print(table(rows))


def table(rows: list[dict]) -> str:
    ms = lambda xs: f"{statistics.mean(xs):.3f} ± {statistics.stdev(xs) if len(xs) > 1 else 0:.3f}"  # noqa: E731
    lines = ["| dataset | seeds | test ACC | test AUC | val ACC | teacher time (s) | MedMNIST ResNet-18 ACC |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for d in dict.fromkeys(r["dataset"] for r in rows):
        rs = [r for r in rows if r["dataset"] == d]
        lines.append(f"| {d} | {len(rs)} | {ms([r['test']['acc'] for r in rs])} | "
                     f"{ms([r['test']['auc'] for r in rs])} | {ms([r['val']['acc'] for r in rs])} | "
                     f"{statistics.mean(r['teacher_s'] for r in rs):.0f} | {ANCHORS.get(d, '–')} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()

"""Benchmark: teacher candidates on MedMNIST and digits, chosen without the test split.

    python benchmarks/teacher.py run --data-dir ../shared/data/medmnist --datasets breastmnist
    python benchmarks/teacher.py table

Each candidate is the `cpu` preset's teacher stage with a few overrides (CANDIDATES), trained
alone (`kr run`'s teacher stage) for every seed of two disjoint sets: the **choice seeds**
(20–24), whose mean validation ACC + AUC picks a dataset's candidate, and the **report seeds**
(10–12), whose test ACC/AUC is reported and never chooses.  Five choice seeds of validation
average out most of the winner's curse of one 78-image validation split (BreastMNIST); the
test split of the report seeds is read once, to report.  Seeds 0–2 stay for the results table.
Rows merge into benchmarks/results/teacher.json (finished runs are cached in their run
directories, so a sitting resumes).  Anchors: MedMNIST v2's ResNet-18 (28 px) test ACC.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

from kr import pipeline
from kr.config import load_config

ROOT = Path(__file__).resolve().parent
OUT = ROOT / "results" / "teacher.json"
sys.path.insert(0, str(ROOT))
from table import _commit, _cpu, mean_spread  # noqa: E402  (one machine descriptor for every benchmark)

ANCHORS = {"breastmnist": 0.863, "pneumoniamnist": 0.854}
CHOICE_SEEDS, REPORT_SEEDS = (20, 21, 22, 23, 24), (10, 11, 12)
ONE = "teacher.members=1"  # a single network, whatever the data size (teacher.members=0 is the auto rule)
CANDIDATES = {
    "resnet20": [ONE],
    "resnet20 ×3 ensemble": ["teacher.members=3"],
    "resnet20 width 32": [ONE, "teacher.model.width=32"],
    "scatternet linear": [ONE, "teacher.model.arch=scatternet"],
    "scatternet cnn": [ONE, "teacher.model.arch=scatternet", "teacher.model.head=cnn", "teacher.model.width=32"],
}


def _load() -> list[dict]:
    return json.loads(OUT.read_text())["rows"] if OUT.is_file() else []


def run(args) -> None:
    rows = _load()
    for dataset in args.datasets:
        for name in args.candidates:
            for seed in (*args.choice_seeds, *args.report_seeds):
                config = load_config("cpu", seed=seed, data={"dataset": dataset}, overrides=CANDIDATES[name])
                folder = Path(args.runs) / dataset / name.replace(" ", "_").replace("×", "x") / f"s{seed}"
                res = pipeline.run(config, out=folder, data_dir=args.data_dir, device="cpu", stages=("teacher",))
                row = {"dataset": dataset, "candidate": name, "seed": seed,
                       "role": "choice" if seed in args.choice_seeds else "report",
                       "val": res["methods"]["real"]["val"], "test": res["methods"]["real"]["test"],
                       "teacher_s": res["timings_s"]["teacher"],  # when it was trained
                       "commit": _commit(), "cpu": _cpu(), "date": time.strftime("%Y-%m-%d")}
                rows = [r for r in rows if (r["dataset"], r["candidate"], r["seed"]) != (dataset, name, seed)] + [row]
                OUT.parent.mkdir(parents=True, exist_ok=True)
                OUT.write_text(json.dumps({"rows": rows}, indent=1) + "\n")
                print(json.dumps(row), flush=True)
    print(table_text(rows))


def _ms(xs: list[float]) -> str:
    return mean_spread(xs, se=True) or "—"


def table_text(rows: list[dict]) -> str:
    lines = ["| dataset | candidate | choice seeds: val ACC + AUC | report seeds: test ACC | test AUC "
             "| teacher time (s) | chosen | MedMNIST ResNet-18 ACC |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for d in dict.fromkeys(r["dataset"] for r in rows):
        by = {}
        for r in rows:
            if r["dataset"] == d:
                by.setdefault(r["candidate"], []).append(r)
        choice = {c: [r["val"]["acc"] + r["val"]["auc"] for r in rs if r["role"] == "choice"] for c, rs in by.items()}
        complete = {c: v for c, v in choice.items() if len(v) == len(CHOICE_SEEDS)}
        # a choice among all the candidates, or none yet
        done = set(complete) == set(CANDIDATES)
        chosen = max(complete, key=lambda c: statistics.mean(complete[c])) if done else None
        for c, rs in by.items():
            rep = [r for r in rs if r["role"] == "report"]
            lines.append(f"| {d} | {c} | {_ms(choice[c])} | {_ms([r['test']['acc'] for r in rep])} "
                         f"| {_ms([r['test']['auc'] for r in rep])} | {statistics.mean(r['teacher_s'] for r in rs):.0f} "
                         f"| {'**yes**' if c == chosen else ''} | {ANCHORS.get(d, '–')} |")
    return "\n".join(lines) + ("\n\nmean ± standard error over seeds; a dataset's candidate is chosen once every "
                                "candidate has run all its choice seeds.")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--data-dir", default=os.environ.get("KR_DATA_DIR"))
    r.add_argument("--datasets", nargs="+", default=["breastmnist", "digits", "pneumoniamnist"])
    r.add_argument("--candidates", nargs="+", default=list(CANDIDATES), choices=list(CANDIDATES))
    r.add_argument("--choice-seeds", nargs="+", type=int, default=list(CHOICE_SEEDS))
    r.add_argument("--report-seeds", nargs="+", type=int, default=list(REPORT_SEEDS))
    r.add_argument("--runs", default=str(ROOT / "results" / "runs" / "teachers"))
    sub.add_parser("table")
    args = p.parse_args()
    if args.cmd == "run":
        run(args)
    else:
        print(table_text(_load()))


if __name__ == "__main__":
    main()

"""Benchmark: the project's published table — every dataset, several seeds, every method
(DP-SGD included), the membership-inference audit — and benchmarks/RESULTS.md from it.

    python benchmarks/run_all.py --data-dir ../shared/data/medmnist            # everything
    python benchmarks/run_all.py --datasets breastmnist --seeds 0 1 --references 0
    python benchmarks/run_all.py --table-only                                   # RESULTS.md again

Datasets: `digits` (bundled) and every MedMNIST file found in --data-dir ($KR_DATA_DIR).
Each run is a subprocess `kr run --preset cpu` in benchmarks/results/runs/<dataset>-cpu-default-s<seed>
(the folders benchmarks/kr_run.py and audit.py use, so finished stages are reused), then
`kr audit` with --references reference runs on the --reference-seeds (default: seed 0), spread
over --workers processes by kr's `processes` executor (--references 0 skips experiment 1), and the
one-run canary audit on every seed with fresh bits (--canaries: max, the test split's limit, by
default; 0 skips it).  Results go to
benchmarks/results/<date>/ (table.json, the combined report); every run directory found adds its
rows to benchmarks/results/table.jsonl, and benchmarks/RESULTS.md is rewritten from those rows
(benchmarks/table.py), measured or not.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from kr.data import MEDMNIST
from kr.data.download import locate
from kr.report import write_report

import table

ROOT = Path(__file__).resolve().parent


def datasets(data_dir: str | None) -> list[str]:
    found = [name for name, info in MEDMNIST.items() if data_dir and locate(info, 28, data_dir)]
    return [*found, "digits"]


def run_dir(runs: Path, dataset: str, seed: int) -> Path:
    return runs / f"{dataset}-cpu-default-s{seed}"


def kr(*args: str, threads: int) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    subprocess.run([sys.executable, "-m", "kr", *args], check=True, env=env)


def measure(dataset: str, seed: int, args, runs: Path) -> dict:
    out = run_dir(runs, dataset, seed)
    common = [*(["--data-dir", args.data_dir] if args.data_dir else []), "--device", "cpu"]
    start = time.perf_counter()
    # the table keeps the ablations (regen, soft), which a user's run leaves out by default
    kr("run", "--dataset", dataset, "--preset", "cpu", "--seed", str(seed), "--out", str(out), *common,
       "--methods", "synthetic,regen,soft,dpsgd", threads=os.cpu_count() or 1)
    run_s = time.perf_counter() - start
    audit_s = None
    start = time.perf_counter()
    if args.references and seed in args.reference_seeds:
        # experiment 1: the reference runs spread over --workers processes by kr's own executor
        # (one worker: in-process, as two processes of 2 threads each would oversubscribe 2 cores)
        pool = ["--executor", "processes", "--workers", str(args.workers)] if args.workers > 1 else []
        kr("audit", str(out), "--set", f"audit.references={args.references}", *pool, *common,
           threads=os.cpu_count() or 1)
    if args.canaries != "0":  # the one-run canary audit on every seed, fresh bits per seed;
        # calibrated by the shipped run alone, so every seed's bound is read the same way
        m = max_canaries(dataset, args.data_dir) if args.canaries == "max" else int(args.canaries)
        kr("audit", str(out), "--canaries", str(m), *common, threads=os.cpu_count() or 1)
    audit_s = time.perf_counter() - start
    # wall times of this invocation: cached stages make a resumed run look fast; the stage
    # seconds in each run's results.json are the cost
    return {"run": os.path.relpath(out, ROOT.parent), "dataset": dataset, "seed": seed,
            "wall_s_this_invocation_run": round(run_s, 1),
            "wall_s_this_invocation_audit": None if audit_s is None else round(audit_s, 1)}


def max_canaries(dataset: str, data_dir: str | None) -> int:
    """The most canaries the dataset's test split allows (kr.canaries.sizing, as `kr data info` says)."""
    from kr.canaries import sizing
    from kr.config import Config
    from kr.data import load_dataset

    d = load_dataset(dataset, data_dir=data_dir)
    return sizing(len(d.train), len(d.test), Config().audit.canary_stress)["canaries"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=os.environ.get("KR_DATA_DIR"))
    p.add_argument("--datasets", nargs="+", default=None, help="Default: every dataset available.")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--references", type=int, default=8, help="Reference runs per audit (0: skip kr audit).")
    p.add_argument("--reference-seeds", nargs="+", type=int, default=[0],
                   help="The seeds whose run gets experiment 1's reference runs (the others: the canary audit only).")
    p.add_argument("--canaries", default="max",
                   help="Canaries for the one-run canary audit of every seed: a number, max (90 %% of the test "
                        "split, the most it allows) or 0 (skip it).")
    p.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 1) // 2),
                   help="Processes for the reference runs (each at the preset's 2 threads; default: cores ÷ 2).")
    p.add_argument("--runs", default=str(ROOT / "results" / "runs"))
    p.add_argument("--table-only", action="store_true", help="Only rebuild the table, report and RESULTS.md.")
    args = p.parse_args()
    if args.canaries != "max" and not args.canaries.isdigit():
        p.error(f"--canaries {args.canaries}: give a number of canaries, max, or 0")
    names = args.datasets or datasets(args.data_dir)
    runs = Path(args.runs)
    out = ROOT / "results" / str(datetime.date.today())
    wanted = [(d, s) for d in names for s in args.seeds]
    rows = []
    if not args.table_only:
        for dataset, seed in wanted:
            rows.append(measure(dataset, seed, args, runs))
    present = [run_dir(runs, d, s) for d, s in dict.fromkeys(table.WANTED + wanted)
               if (run_dir(runs, d, s) / "results.json").is_file()]
    out.mkdir(parents=True, exist_ok=True)
    if rows:  # merged by run: one invocation per dataset or seed builds the same file
        path = out / "table.json"
        old = {r["run"]: r for r in json.loads(path.read_text())} if path.is_file() else {}
        path.write_text(json.dumps(list({**old, **{r["run"]: r for r in rows}}.values()), indent=1))
    if present:
        write_report(present, out / "report")
        table.add(present)  # benchmarks/results/table.jsonl: the rows RESULTS.md is written from
    published = table.read()
    table.write_results(published, wanted=table.WANTED)
    table.write_readme(table.read(table.RELEASE_STUDY))


if __name__ == "__main__":
    main()

"""Benchmark (issue 15): a 4-reference audit with 2 local worker processes against 1.

    python benchmarks/executors.py [--preset tiny] [--dataset digits]

One target run (cached in results/runs/executors-<dataset>-<preset>), then the same audit twice
from scratch: `--executor processes --workers 1` (one worker, all cores' threads) and
`--workers 2` (two workers, cores ÷ 2 threads each), side by side in one invocation, nothing
else running.  Writes results/executors.json; the ratio is what to read, not the seconds.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from table import _cpu  # noqa: E402  (one machine descriptor for every benchmark)

ROOT = Path(__file__).resolve().parent


def kr(*args: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "kr", *args], check=True, stdout=subprocess.DEVNULL)
    return round(time.perf_counter() - start, 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="tiny")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--references", type=int, default=4)
    args = p.parse_args()
    run = ROOT / "results" / "runs" / f"executors-{args.dataset}-{args.preset}"
    kr("run", "--dataset", args.dataset, "--preset", args.preset, "--out", str(run))
    row = {"preset": args.preset, "dataset": args.dataset, "references": args.references,
           "cpu": _cpu()}
    for workers in (1, 2):
        shutil.rmtree(run / "audit", ignore_errors=True)
        row[f"seconds_{workers}_workers"] = kr("audit", str(run), "--set", f"audit.references={args.references}",
                                               "--executor", "processes", "--workers", str(workers))
        print(json.dumps(row), flush=True)
    row["speedup"] = round(row["seconds_1_workers"] / row["seconds_2_workers"], 2)
    out = ROOT / "results" / "executors.json"
    rows = json.loads(out.read_text()) if out.is_file() else []
    rows.append({**row, "date": time.strftime("%Y-%m-%d")})
    out.write_text(json.dumps(rows, indent=1) + "\n")
    print(json.dumps(row))


if __name__ == "__main__":
    main()

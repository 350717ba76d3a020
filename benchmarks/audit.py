"""Benchmark: the membership-inference audit (`kr audit`) of a finished `kr run`.

    python benchmarks/audit.py benchmarks/results/runs/breastmnist-cpu-default-s0 \\
        --data-dir ../shared/data/medmnist --workers 2 --set audit.targets=real,kr,synthetic

One `kr audit RUN --executor processes --workers N`: the reference runs are stages of the run's
graph, spread over N worker processes (cores ÷ N threads each: two processes on two cores beat
one process on two threads for these small networks), then the attack stage.  The row written to
benchmarks/results/audit.json holds both experiments' figures for every target and attack,
each reference run's stage seconds (the audit's real cost, whether or not it was interrupted
and resumed) and the wall time of this invocation.  A Markdown table is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from table import _cpu  # noqa: E402  (one machine descriptor for every benchmark)

HEADLINE = ("loss", "lira-offline-fixed", "lira-online", "rmia-online", "rmia-offline")


def _ci(row: dict, key: str) -> str:
    v, ci = row.get(key), row.get(key + "_ci")
    if v is None:
        return "n/r"
    return f"{v:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else f"{v:.3f}"


def table(audit: dict, attacks: tuple[str, ...]) -> list[str]:
    lines = ["| target | attack | refs | AUC [95 % CI] | TPR @ 1 % FPR [95 % CI] | TPR @ 0.1 % FPR | AUC below real |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for target, by_attack in audit.items():
        for name in attacks:
            if name in by_attack:
                r = by_attack[name]
                below = f"{r['auc_below_real']:+.3f}" if "auc_below_real" in r and target != "real" else ""
                lines.append(f"| {target} | {name} | {r['references']} | {_ci(r, 'auc')} | "
                             f"{_ci(r, 'tpr_at_1%fpr')} | {_ci(r, 'tpr_at_0.1%fpr')} | {below} |")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run")
    p.add_argument("--data-dir", default=os.environ.get("KR_DATA_DIR"))
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--out", default="benchmarks/results/audit.json")
    args = p.parse_args()

    run = Path(args.run)
    common = [*(["--data-dir", args.data_dir] if args.data_dir else []), "--device", "cpu",
              *(x for o in args.overrides for x in ("--set", o))]
    refs = next((int(o.split("=")[1]) for o in args.overrides if o.startswith("audit.references=")), 4)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "kr", "audit", str(run), "--executor", "processes",
                    "--workers", str(args.workers), *common], check=True)
    end = time.perf_counter()
    threads = max(1, (os.cpu_count() or 1) // args.workers)

    res = json.loads((run / "results.json").read_text())
    ref_seconds = {}
    for i in range(refs):  # only this audit's runs: a larger audit may have left more beside them
        stages = json.loads((run / "audit" / "references" / f"r{i}" / "run" / "manifest.json").read_text())["stages"]
        ref_seconds[f"r{i}"] = {k: v["seconds"] for k, v in stages.items()}
    row = {"run": str(run), "dataset": res["dataset"], "preset": res["preset"], "seed": res["seed"],
           "overrides": args.overrides, "meta": res["audit_meta"],
           "test": {m: v["test"] for m, v in res["methods"].items()},
           "procedure": res["audit"], "shipped": res["audit_shipped"],
           "memorisation": res.get("memorisation"),
           "reference_stage_seconds": ref_seconds,
           "reference_seconds_total": round(sum(sum(v.values()) for v in ref_seconds.values()), 1),
           "wall_s_this_invocation": round(end - start, 1),
           "attack_s": (res.get("timings_s") or {}).get("audit/attacks"),
           "machine": {"cpu": _cpu(), "torch_threads_per_worker": threads,
                       "workers": args.workers,
                       "torch": torch.__version__}}
    out = Path(args.out)
    rows = json.loads(out.read_text())["runs"] if out.is_file() else []
    same = lambda r: (r["run"], r["meta"]["references"]) == (row["run"], row["meta"]["references"])  # noqa: E731
    rows = [r for r in rows if not same(r)] + [row]
    out.write_text(json.dumps({"runs": rows}, indent=2) + "\n")

    print(f"## {row['dataset']} · {row['preset']} · seed {row['seed']} · "
          f"{row['meta']['references']} reference runs\n")
    print("Experiment 1 — the procedure (pooled over runs as targets):\n")
    print("\n".join(table(row["procedure"], HEADLINE)))
    print("\nExperiment 2 — the shipped model (members = train, non-members = test):\n")
    print("\n".join(table(row["shipped"], ("loss", "lira-offline-fixed", "rmia-offline"))))
    print(f"\nreference runs: {row['reference_seconds_total']:.0f} s of stage time in all; "
          f"attack step {row['attack_s'] or 0:.0f} s; this invocation {row['wall_s_this_invocation']:.0f} s")


if __name__ == "__main__":
    main()

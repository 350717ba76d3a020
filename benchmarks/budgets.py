"""Benchmark: cheaper budgets for a `kr run`, against today's preset over seeds (issue 33).

    python benchmarks/budgets.py base --runs DIR --datasets digits breastmnist --seeds 0 1 2
    python benchmarks/budgets.py variant --runs DIR --name short --set select.max_kimg=6 …
    python benchmarks/budgets.py table            # the Markdown table, from results/budgets.json

`base`: a default `kr run` per dataset and seed into DIR/base/<dataset>-s<seed>, one after
another (a finished one is recorded as it is).  `variant`: each base run (or another
variant's, `--copy-from`) copied to DIR/<name>/<dataset>-s<seed> and rerun with the overrides,
so the stages the overrides do not reach (the teacher, the judge, DP-SGD, the generator unless
its settings change) are the base run's own, byte for byte, and only what changes is trained
again.  A variant's cost is the sum
of its stage seconds, reused ones included (what a fresh run of it would take on the machine
that timed the base).  `table`: per dataset, the mean ± standard error over seeds of each
variant's teacher and KR test ACC and stage time, and KR's paired difference to the base with
its 95 % t-interval.  The test split is read here to report, never to choose: the choice is
the rule issue 33 fixed beforehand (KR's mean within one standard error of the base's).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results" / "budgets.json"
sys.path.insert(0, str(ROOT))
from table import _commit, _cpu, mean_spread, paired_seeds, said  # noqa: E402  (one descriptor, one mean ± SE)


def _load() -> dict:
    return json.loads(RESULTS.read_text()) if RESULTS.is_file() else {"rows": []}


def _record(row: dict) -> None:
    data = _load()
    data["rows"] = [r for r in data["rows"] if (r["variant"], r["dataset"], r["seed"]) !=
                    (row["variant"], row["dataset"], row["seed"])] + [row]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(data, indent=1) + "\n")


def _row(run: Path, variant: str, overrides: list[str], wall: float | None, shared: bool = False) -> dict:
    res = json.loads((run / "results.json").read_text())
    seconds = {k: v for k, v in res["timings_s"].items() if v is not None and not k.startswith("audit/canaries")}
    return {"variant": variant, "dataset": res["dataset"], "seed": res["seed"], "overrides": overrides,
            "test_acc": {m: v["test"]["acc"] for m, v in res["methods"].items()},
            "val": {m: v["val"] for m, v in res["methods"].items()},
            "selected": res["selection"]["selected"],
            "tuned": {**res["tuning"]["knobs"], "threshold": res["tuning"]["threshold"]},
            "stage_s": seconds, "total_s": round(sum(seconds.values()), 1), "wall_s": wall,
            "shared": shared,  # other work shared the cores: its accuracy counts, its time does not
            "commit": _commit(), "cpu": _cpu(), "date": time.strftime("%Y-%m-%d")}


def _kr_run(run: Path, dataset: str, seed: int, overrides: list[str], preset: str) -> float:
    cmd = [sys.executable, "-m", "kr", "run", "--dataset", dataset, "--seed", str(seed), "--out", str(run),
           "--device", "cpu", "--preset", preset, *(a for o in overrides for a in ("--set", o))]
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    return round(time.perf_counter() - start, 1)


def base(args) -> None:
    for dataset in args.datasets:
        for seed in args.seeds:
            run = Path(args.runs) / "base" / f"{dataset}-s{seed}"
            # a run finished earlier (timed elsewhere) is recorded, not rerun: its stage seconds count
            wall = None if (run / "results.json").is_file() else _kr_run(run, dataset, seed, [], args.preset)
            _record(_row(run, "base", [], wall, f"{dataset}-s{seed}" in args.shared))


def variant(args) -> None:
    for dataset in args.datasets:
        for seed in args.seeds:
            src = Path(args.runs) / args.copy_from / f"{dataset}-s{seed}"
            run = Path(args.runs) / args.name / f"{dataset}-s{seed}"
            if not (src / "results.json").is_file():
                raise SystemExit(f"{src} has no finished run: run `budgets.py base` (or that variant) first")
            if not run.exists():
                shutil.copytree(src, run, ignore=shutil.ignore_patterns("audit", "report"))
            wall = _kr_run(run, dataset, seed, args.set, args.preset)
            _record(_row(run, args.name, args.set, wall, f"{dataset}-s{seed}" in args.shared))


def _ms(xs: list[float], digits: int = 3) -> str:
    return mean_spread(xs, digits, se=True) or "—"


def _paired(a: list[float], b: list[float]) -> str:
    p = paired_seeds(dict(enumerate(a)), dict(enumerate(b)))
    return "—" if p is None or p["ci"] is None else said(p["mean"], p["ci"])


def table(args) -> None:
    rows = _load()["rows"]
    lines = ["| dataset | variant | seeds | teacher test ACC | KR test ACC | KR − base (paired, 95 % CI) "
             "| stage time (s) | time / base |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        by = {}
        for r in rows:
            if r["dataset"] == dataset:
                by.setdefault(r["variant"], {})[r["seed"]] = r
        base_rows = by.get("base", {})
        for name, seeds in sorted(by.items(), key=lambda item: item[0] != "base"):
            common = sorted(s for s in seeds if s in base_rows)
            kr = [seeds[s]["test_acc"]["kr"] for s in common]
            kr0 = [base_rows[s]["test_acc"]["kr"] for s in common]
            timed = [s for s in common if not seeds[s].get("shared") and not base_rows[s].get("shared")]
            t = [seeds[s]["total_s"] for s in timed]
            t0 = [base_rows[s]["total_s"] for s in timed]
            lines.append(f"| {dataset} | {name} | {','.join(map(str, common))} "
                         f"| {_ms([seeds[s]['test_acc']['real'] for s in common])} | {_ms(kr)} "
                         f"| {'—' if name == 'base' else _paired(kr, kr0)} | {_ms(t, 0)} "
                         f"(seeds {','.join(map(str, timed))}) | {sum(t) / sum(t0):.2f}× |")
    print("\n".join(lines))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("base", "variant"):
        s = sub.add_parser(name)
        s.add_argument("--runs", required=True, help="folder of the runs (base/ and one per variant)")
        s.add_argument("--datasets", nargs="+", default=["digits", "breastmnist"])
        s.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
        s.add_argument("--preset", default="cpu")
        s.add_argument("--shared", nargs="*", default=[], metavar="DATASET-sSEED",
                       help="runs whose cores other work shared (their times are left out of the ratios)")
        if name == "variant":
            s.add_argument("--name", required=True)
            s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
            s.add_argument("--copy-from", default="base",
                           help="the runs to start from (base, or a variant sharing more stages)")
    sub.add_parser("table")
    args = p.parse_args()
    {"base": base, "variant": variant, "table": table}[args.cmd](args)


if __name__ == "__main__":
    main()

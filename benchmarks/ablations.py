"""Benchmark (issue 16): KR against its ablations over many student seeds, one generator.

    python benchmarks/ablations.py --run benchmarks/results/runs/speed-breastmnist-s0 \
        --data-dir ../shared/data/medmnist --seeds 1 2 3 4 5
    python benchmarks/ablations.py --run … --methods kr --variant t2 --set distill.temperature=2
    python benchmarks/ablations.py --run … --methods kr soft --variant no-ls --teacher T
    python benchmarks/ablations.py --run … --targets 1 2   # how soft the teacher's targets are
    python benchmarks/ablations.py --table          # benchmarks/ABLATIONS.md from the JSON

A finished `kr run` fixes the teacher, the selected generator checkpoint and the tuned knobs;
only the student seed changes (its initial weights, synthetic stream and augmentation), so
the four methods differ in one ingredient each (tests/test_distill.py pins that contract) and
the spread over seeds says what a difference between them is worth.  A `--variant` changes
one thing against that baseline (distillation settings with `--set`, or the distilling
teacher with `--teacher`, a model folder such as a `kr teacher` run's `teacher/`); the
generator, checkpoint and knobs stay the run's.  Full students (the
run's `distill` settings); `--executor processes --workers N` trains N at a time.  Each student's result is kept as it finishes: a rerun trains only
what is missing.  Validation and test ACC/AUC are both recorded; nothing here chooses anything.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results" / "ablations.json"
METHODS = ("kr", "regen", "soft", "synthetic")


def load() -> dict:
    return json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}


def measure(args) -> None:
    """Every missing (seed, method) student is a task of a kr executor (`--executor processes
    --workers 2` spreads them over local processes, `ray` over a cluster); each saves its row."""
    from kr.cores import claim
    from kr.executors import make_executor

    claim()
    run = Path(args.run)
    rows = load()
    spec = {k: getattr(args, k) for k in ("run", "data_dir", "set", "teacher", "variant")}
    calls = [((_student, (spec, seed, method)), None) for seed in args.seeds for method in args.methods
             if _key(run.name, method, seed, args.variant) not in rows]
    executor = make_executor(args.executor, workers=args.workers, run_path=ROOT / "results")
    try:
        executor.run(calls)
    finally:
        executor.close()


def targets(args) -> None:
    """How soft the teacher's targets are on the run's synthetic images, at each temperature."""
    import torch

    from kr.generation import checkpoint_folder
    from kr.generators import load_generator
    from kr.models import load_classifier
    from kr.rundir import stage_outputs

    run = Path(args.run)
    gen, teacher = load_generator(checkpoint_folder(run)), load_classifier(run / "teacher").eval()
    labels = torch.arange(gen.n_classes).repeat_interleave(args.per_class)
    x = gen.sample(labels, 0, **stage_outputs(run, "tuning")["knobs"])
    with torch.no_grad():
        logits = teacher(x)
    for t in args.temperatures:
        p = torch.softmax(logits / t, 1)
        top = p.max(1).values
        print(json.dumps({"run": run.name, "temperature": t, "images": len(x),
                          "top_prob_median": round(top.median().item(), 3),
                          "share_top_above_0.9": round((top > 0.9).float().mean().item(), 2),
                          "entropy_nats": round(-(p * p.clamp_min(1e-12).log()).sum(1).mean().item(), 3)}))


def _key(run: str, method: str, seed: int, variant: str) -> str:
    return f"{run}|{method}|{seed}" + (f"|{variant}" if variant else "")


def _student(spec: dict, seed: int, method: str) -> dict:
    """One student of one finished run: train, score on test, save its row."""
    from kr.config import load_config
    from kr.data import load_dataset
    from kr.distill import train_student
    from kr.generation import checkpoint_folder
    from kr.generators import load_generator
    from kr.models import load_classifier
    from kr.rundir import stage_outputs
    from kr.train import score

    run, variant = Path(spec["run"]), spec["variant"]
    config = load_config("cpu", run / "config.yaml", spec["set"])
    data = load_dataset(config.data.dataset, data_dir=spec["data_dir"], size=config.data.size)
    tuning = stage_outputs(run, "tuning")
    gen = load_generator(checkpoint_folder(run))
    teacher = load_classifier(Path(spec["teacher"]) if spec["teacher"] else run / "teacher")
    start = time.perf_counter()
    name = f"{run.name}-{method}-s{seed}" + (f"-{variant}" if variant else "")
    folder = ROOT / "results" / "runs" / "ablations" / name
    folder.mkdir(parents=True, exist_ok=True)
    out = train_student(data, dataclasses.replace(config, seed=seed), gen, teacher, method,
                        tuning["knobs"], tuning["threshold"], folder)
    row = {"run": run.name, "method": method, "seed": seed, "variant": variant,
           "change": " ".join(spec["set"] + ([f"teacher={spec['teacher']}"] if spec["teacher"] else [])),
           "val": out["val"], "test": score(load_classifier(folder), data.test, data.task),
           "seconds": round(time.perf_counter() - start, 1)}
    print(json.dumps(row), flush=True)
    save(_key(run.name, method, seed, variant), row)
    return row


def save(key: str, row: dict) -> None:
    """Add one row, merged under a lock with what other benchmark processes saved meanwhile."""
    import fcntl

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with open(RESULTS.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        rows = load()
        rows[key] = row
        tmp = RESULTS.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(rows, indent=1) + "\n")
        tmp.replace(RESULTS)


def _ms(xs) -> str:
    xs = [x for x in xs if x is not None]
    if not xs:
        return "-"
    return f"{statistics.mean(xs):.3f} ± {statistics.stdev(xs):.3f}" if len(xs) > 1 else f"{xs[0]:.3f}"


def table(_args) -> None:
    rows = load()
    lines = ["# KR against its ablations (issue 16)", "",
             "Written by `python benchmarks/ablations.py --table` from `results/ablations.json`: one "
             "finished `kr run` (teacher, selected checkpoint, tuned knobs) per block, full "
             "students, mean ± std over student seeds.", ""]
    for run in dict.fromkeys(r["run"] for r in rows.values()):
        rs = [r for r in rows.values() if r["run"] == run]
        seeds = sorted({r["seed"] for r in rs})
        lines += [f"## {run} (student seeds {', '.join(map(str, seeds))})", "",
                  "| method | change (one, against the run's settings) | n | val ACC | val AUC | test ACC | test AUC | seconds |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        groups = dict.fromkeys((r["method"], r.get("variant", "")) for r in rs)
        for m, v in sorted(groups, key=lambda g: (g[1] != "", g[1], METHODS.index(g[0]))):
            ms = [r for r in rs if r["method"] == m and r.get("variant", "") == v]
            change = ms[0].get("change") or "—"
            lines.append(f"| {m}{' · ' + v if v else ''} | {change} | {len(ms)} | {_ms([r['val']['acc'] for r in ms])} | "
                         f"{_ms([r['val']['auc'] for r in ms])} | {_ms([r['test']['acc'] for r in ms])} | "
                         f"{_ms([r['test']['auc'] for r in ms])} | {statistics.mean(r['seconds'] for r in ms):.0f} |")
        lines.append("")
    path = ROOT / "ABLATIONS.md"
    marker = "<!-- generated above; written by hand below -->"
    tail = path.read_text().split(marker, 1)[1] if path.is_file() and marker in path.read_text() else "\n"
    path.write_text("\n".join(lines) + "\n" + marker + tail)
    print(path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", help="A finished `kr run` directory.")
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3, 4, 5])
    p.add_argument("--data-dir", default=os.environ.get("KR_DATA_DIR"))
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    p.add_argument("--variant", default="", help="Name of a one-change row (with --set or --teacher).")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="Config overrides of the variant.")
    p.add_argument("--teacher", help="Distil from this model folder instead of the run's teacher.")
    p.add_argument("--executor", choices=("inprocess", "processes", "ray"), default="inprocess",
                   help="Where the students run (kr.executors); each saves its own row.")
    p.add_argument("--workers", type=int, default=None, help="processes: worker count.")
    p.add_argument("--targets", nargs="*", type=float, dest="temperatures", default=None,
                   metavar="T", help="Only print how soft the teacher's targets are at these T.")
    p.add_argument("--per-class", type=int, default=300)
    p.add_argument("--table", action="store_true")
    args = p.parse_args()
    if (args.set or args.teacher) and not args.variant:
        p.error("name the change with --variant")
    if args.temperatures is not None and args.run:
        targets(args)
    elif args.table:
        table(args)
    elif args.run:
        measure(args)
        table(args)
    else:
        p.error("give --run RUN (measure) or --table")


if __name__ == "__main__":
    main()

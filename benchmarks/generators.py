"""Benchmark: generator variants at the `cpu` budget, judged by judges they were not trained against.

    python benchmarks/generators.py --datasets digits breastmnist --variants guided-resnet lean-ms
    python benchmarks/generators.py --table          # rebuild benchmarks/GENERATORS.md from the JSON

For each dataset × variant (config overrides on top of the `cpu` preset; seed 0 unless --seed):
the stages teacher, judge, generator and quality of `kr run` (kr.pipeline), then
- train seconds (the generator stage), real images/s trained (kimg ÷ seconds), images/s sampled
  (batch 512, best of 3);
- on the checkpoint with the best downstream validation ACC (chosen on validation, never test):
  the quality stage's three judges — downstream (a classifier of the judge's architecture trained
  on its samples alone, hard labels), the independent judge's agreement / precision / recall / FD,
  and the teacher's;
- two students on that checkpoint, σ = 1, no filtering, `--student-epochs` epochs each:
  `synthetic` (one fixed set, hard labels: GaFi's conventional recipe) and `kr` (regenerated
  every epoch, teacher labels), validation ACC/AUC.
Teacher and judge are trained once per dataset and seed, then shared by its variants (their
stage keys do not depend on the generator).  Every row is saved as soon as it is measured, so
an interrupted benchmark resumes with the same command.  Writes
benchmarks/results/generators.json and the sample grids to benchmarks/results/grids/.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shutil
import sys
import time
from pathlib import Path

import torch

from kr import pipeline
from kr.config import load_config
from kr.data import load_dataset
from kr.distill import train_student
from kr.generators import load_generator
from kr.models import load_classifier

sys.path.insert(0, str(Path(__file__).resolve().parent))
from table import _cpu  # noqa: E402  (one machine descriptor for every benchmark)

# Each variant: overrides on the `cpu` preset, whose generator is "lean-ms" (issue 19).
# "guided-resnet" is the default before issue 19: residual BigGAN blocks, teacher guidance,
# colour/translation/cutout DiffAugment, 40 kimg.
OLD = ["generator.gan.arch=resnet", "generator.gan.mode_seeking=0", "generator.kimg=40",
       "generator.checkpoint_kimg=20", "generator.gan.diffaugment=color,translation,cutout"]
GUIDED = ["generator.gan.teacher_ce=0.5", "generator.gan.teacher_bn=0.05"]
VARIANTS = {
    "lean-ms": [],
    "lean": ["generator.gan.mode_seeking=0"],
    "guided-lean-ms": GUIDED,
    "resnet": OLD,
    "guided-resnet": OLD + GUIDED,
}
OUT = Path("benchmarks/results/generators.json")


def sampling_rate(gen, n_classes: int) -> float:
    labels = torch.arange(n_classes).repeat(512)[:512]
    gen.sample(labels[:64], 0)  # warm-up
    times = []
    for rep in range(3):
        start = time.perf_counter()
        gen.sample(labels, 1 + rep, batch_size=512)
        times.append(time.perf_counter() - start)
    return 512 / min(times)


def measure(dataset: str, variant: str, seed: int, data_dir: str | None, runs: Path,
            student_epochs: int) -> dict:
    data = load_dataset(dataset, data_dir=data_dir)
    config = load_config("cpu", overrides=[*VARIANTS[variant], f"seed={seed}", "baselines="],
                         data={"dataset": dataset})
    run_dir = runs / f"gen-{dataset}-{variant}-s{seed}"
    shared = runs / f"gen-{dataset}-shared-s{seed}"
    # Teacher and judge have the same keys for every variant: trained once, then copied (with
    # the manifest that marks a kr run directory); RunDir checks each key before using it.
    if (shared / "manifest.json").is_file() and not run_dir.exists():
        shutil.copytree(shared, run_dir)
    res = pipeline.run(config, out=run_dir, data=data, device="cpu", stages=("quality",))
    if not shared.exists():
        shared.mkdir(parents=True)
        for stage in ("teacher", "judge"):
            shutil.copytree(run_dir / stage, shared / stage)
        shutil.copy(run_dir / "manifest.json", shared / "manifest.json")
    stages = json.loads((run_dir / "manifest.json").read_text())["stages"]
    fit_s = stages["generator"]["seconds"]
    checkpoints = res["generator"]["quality"]["checkpoints"]
    best = max(checkpoints, key=lambda c: (c["downstream"]["acc"], c["downstream"]["auc"]))
    ckpt = run_dir / "generator" / "checkpoints" / best["name"]
    gen = load_generator(ckpt)
    rate = sampling_rate(gen, data.n_classes)
    teacher = load_classifier(run_dir / "teacher")
    students = {}
    short = load_config("cpu", overrides=[*VARIANTS[variant], f"seed={seed}",
                                          f"distill.train.epochs={student_epochs}"])
    for method in ("synthetic", "kr"):
        out = train_student(data, short, gen, teacher, method, {gen.tuned_knob: 1.0}, 0.0)
        students[method] = out["val"]
    grid = Path("benchmarks/results/grids") / f"{dataset}-{variant}.png"
    grid.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(ckpt / "grid.png", grid)
    kimg = json.loads((ckpt / "info.json").read_text())["kimg"]
    return {"dataset": dataset, "variant": variant, "seed": seed, "overrides": VARIANTS[variant],
            "generator_s": round(fit_s, 1), "kimg_total": config.generator.kimg,
            "train_images_per_s": round(config.generator.kimg * 1000 / fit_s),
            "sample_images_per_s": round(rate), "checkpoint": best["name"], "checkpoint_kimg": kimg,
            "downstream": best["downstream"], "judge": best["judge"], "teacher": best["teacher"],
            "students": students, "student_epochs": student_epochs,
            "teacher_val": json.loads((run_dir / "teacher" / "metrics.json").read_text())["val"],
            "all_checkpoints": checkpoints, "grid": str(grid)}


def save(row: dict) -> None:
    """Merge one row into the JSON, under a lock: several benchmark processes may save at once."""
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with open(OUT.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        rows = json.loads(OUT.read_text())["rows"] if OUT.is_file() else []
        rows = [r for r in rows if (r["dataset"], r["variant"], r["seed"]) !=
                (row["dataset"], row["variant"], row["seed"])] + [row]
        tmp = OUT.with_suffix(".tmp")
        tmp.write_text(json.dumps({"machine": {"cpu": _cpu(), "torch": torch.__version__},
                                   "rows": rows}, indent=2) + "\n")
        tmp.replace(OUT)


def table() -> str:
    rows = json.loads(OUT.read_text())["rows"]
    head = ("| dataset | variant | seed | gen s | img/s trained | img/s sampled | downstream val ACC | "
            "judge agree / prec / recall / FD | teacher agree / prec / recall | synthetic val ACC / AUC | "
            "kr val ACC / AUC | teacher val ACC |\n|" + " --- |" * 12)
    lines = [head]
    for r in sorted(rows, key=lambda r: (r["dataset"], r["variant"], r["seed"])):
        j, t, s = r["judge"], r["teacher"], r["students"]
        lines.append(f"| {r['dataset']} | {r['variant']} | {r['seed']} | {r['generator_s']:.0f} | "
                     f"{r['train_images_per_s']} | {r['sample_images_per_s']} | {r['downstream']['acc']:.3f} | "
                     f"{j['agreement']:.3f} / {j['precision']:.3f} / {j['recall']:.3f} / {j['fd']:.2f} | "
                     f"{t['agreement']:.3f} / {t['precision']:.3f} / {t['recall']:.3f} | "
                     f"{s['synthetic']['acc']:.3f} / {s['synthetic']['auc']:.3f} | "
                     f"{s['kr']['acc']:.3f} / {s['kr']['auc']:.3f} | {r['teacher_val']['acc']:.3f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=os.environ.get("KR_DATA_DIR"))
    p.add_argument("--datasets", nargs="+", default=["digits", "breastmnist"])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--student-epochs", type=int, default=10)
    p.add_argument("--runs", type=Path, default=Path("benchmarks/results/runs"))
    p.add_argument("--table", action="store_true", help="print the Markdown table of the saved rows")
    args = p.parse_args()
    if args.table:
        print(table())
        return
    for dataset in args.datasets:
        for variant in args.variants:
            row = measure(dataset, variant, args.seed, args.data_dir, args.runs, args.student_epochs)
            save(row)
            print(json.dumps({k: v for k, v in row.items() if k != "all_checkpoints"}), flush=True)


if __name__ == "__main__":
    main()

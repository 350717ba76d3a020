"""Benchmark: both generator backends with the `cpu` preset, per dataset.

    python benchmarks/generators.py --data-dir ../shared/data/medmnist [--kinds gan diffusion]

For each dataset and backend: fit time, sampling throughput (images/s at batch 512), and, for
the checkpoint with the best validation teacher agreement (chosen on val, never test):
teacher agreement and per-class Fréchet distance / precision / recall against the real test
split, plus its sample grid.  Also the cost of regenerating a train-split-sized synthetic set
relative to one student training epoch (the GKD budget: the issue asks for < 1/4).
Writes benchmarks/results/generators.json and copies grids to benchmarks/results/grids/.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import torch

from kr import pipeline
from kr.config import load_config
from kr.data import load_dataset
from kr.generation import grid_labels
from kr.generators import load_generator
from kr.generators.quality import quality
from kr.models import load_classifier


def student_epoch_seconds(data, config) -> float:
    """Wall time of one training epoch of the classifier on a train-split-sized set, measured
    here, under the same conditions as the sampling throughput it is compared with."""
    import dataclasses

    from kr.models import build_model
    from kr.train import fit_classifier

    m = config.teacher.model
    model = build_model(m.arch, data.channels, data.n_classes, width=m.width)
    one = dataclasses.replace(config.teacher.train, epochs=1, warmup_epochs=0)
    tiny_val = type(data.val)(data.val.images[:2], data.val.labels[:2])
    with torch.enable_grad():
        fit_classifier(model, data.train, tiny_val, data.task, one, 0, data.hflip)  # warm-up
        start = time.perf_counter()
        fit_classifier(model, data.train, tiny_val, data.task, one, 1, data.hflip)
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=os.environ.get("KR_DATA_DIR"))
    p.add_argument("--datasets", nargs="+", default=["breastmnist", "pneumoniamnist"])
    p.add_argument("--kinds", nargs="+", default=["gan", "diffusion"])
    p.add_argument("--set", dest="overrides", nargs="*", default=[],
                   help="extra config overrides for every run")
    p.add_argument("--runs", default="benchmarks/results/runs")
    p.add_argument("--out", default="benchmarks/results/generators.json")
    args = p.parse_args()
    out = Path(args.out)
    rows = json.loads(out.read_text())["rows"] if out.is_file() else []
    torch.set_grad_enabled(False)
    for dataset in args.datasets:
        data = load_dataset(dataset, data_dir=args.data_dir)
        for kind in args.kinds:
            config = load_config("cpu", overrides=[f"generator.kind={kind}", *args.overrides],
                                 data={"dataset": dataset})
            run_dir = Path(args.runs) / f"{dataset}-cpu-{kind}"
            with torch.enable_grad():
                res = pipeline.run(config, out=run_dir, data_dir=args.data_dir, device="cpu")
            q = res["generator"]["quality"]["checkpoints"]
            best = max(q, key=lambda c: c["teacher_agreement"])
            ckpt = run_dir / "generator" / "checkpoints" / best["name"]
            gen = load_generator(ckpt)
            labels = torch.arange(data.n_classes).repeat(256)[:512]
            gen.sample(labels[:64], 0)  # warm-up
            times = []
            for rep in range(3 if kind == "gan" else 1):  # best of 3 where a batch is cheap
                start = time.perf_counter()
                gen.sample(labels, 1 + rep, batch_size=512)
                times.append(time.perf_counter() - start)
            throughput = 512 / min(times)
            teacher = load_classifier(run_dir / "teacher")
            test_labels = grid_labels(data.n_classes, config.generator.eval_per_class)
            q_test = quality(teacher, data.test, gen.sample(test_labels, 2), test_labels, data.n_classes)
            epoch_s = student_epoch_seconds(data, config)
            regen_s = len(data.train) / throughput
            grid = Path("benchmarks/results/grids") / f"{dataset}-{kind}.png"
            grid.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(ckpt / "grid.png", grid)
            row = {"dataset": dataset, "kind": kind, "kimg": config.generator.kimg,
                   "fit_s": res["timings_s"]["generator"], "checkpoint": best["name"],
                   "val_agreement": best["teacher_agreement"],
                   "test_agreement": q_test["teacher_agreement"], "test_fd": q_test["fd"],
                   "test_precision": q_test["precision"], "test_recall": q_test["recall"],
                   "images_per_s": round(throughput, 1), "regen_s": round(regen_s, 2),
                   "student_epoch_s": round(epoch_s, 2), "regen_over_epoch": round(regen_s / epoch_s, 3),
                   "teacher_test_acc": res["methods"]["real"]["test"]["acc"],
                   "all_checkpoints_val": q, "grid": str(grid), "overrides": args.overrides}
            rows = [r for r in rows if (r["dataset"], r["kind"]) != (dataset, kind)] + [row]
            print(json.dumps({k: v for k, v in row.items() if k != "all_checkpoints_val"}), flush=True)
            out.write_text(json.dumps({"machine": {"cpus": os.cpu_count(),
                                                   "torch_threads": torch.get_num_threads(),
                                                   "note": "sampling and the student epoch are "
                                                           "timed in the same process",
                                                   "torch": torch.__version__},
                                       "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()

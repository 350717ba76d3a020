"""A cheap screen of one cGAN setting on one dataset: how issue 19's default was found.

    OMP_NUM_THREADS=1 python benchmarks/gan_screen.py --name lean-ms0.3 --kimg 60 \\
        --set generator.gan.mode_seeking=0.3 [--dataset digits]

Trains the generator (config overrides on the `cpu` preset; seed 0) for `--kimg`, saves a
grid of its samples, then trains a ResNet-8 (width 16, `--cas-epochs` epochs) on
`--factor` × the train size of its samples with their conditioning labels and reports that
classifier's best validation ACC/AUC: the downstream judge, at a fraction of the quality
stage's cost.  Appends one JSON line to benchmarks/results/gan_screen.jsonl.  Validation only.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import time
from pathlib import Path

import torch

from kr.config import load_config
from kr.data import Split, load_dataset
from kr.generation import grid_labels
from kr.generators import build_generator
from kr.quality import save_grid
from kr.models import build_model, load_classifier
from kr.synthetic import class_quotas
from kr.train import fit_classifier

OUT = Path("benchmarks/results/gan_screen.jsonl")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="digits")
    p.add_argument("--data-dir", default=os.environ.get("KR_DATA_DIR"))
    p.add_argument("--set", nargs="*", default=[], help="config overrides, e.g. generator.gan.arch=resnet")
    p.add_argument("--kimg", type=float, default=60)
    p.add_argument("--name", required=True)
    p.add_argument("--teacher", default=None, help="a teacher folder, for guided settings")
    p.add_argument("--cas-epochs", type=int, default=10)
    p.add_argument("--factor", type=float, default=2.0)
    p.add_argument("--runs", type=Path, default=Path("benchmarks/results/runs/screen"))
    a = p.parse_args()
    data = load_dataset(a.dataset, data_dir=a.data_dir)
    cfg = load_config("cpu", overrides=[f"generator.kimg={a.kimg}", f"generator.checkpoint_kimg={a.kimg}", *a.set])
    folder = a.runs / f"{a.dataset}-{a.name}"
    shutil.rmtree(folder, ignore_errors=True)
    gen = build_generator(cfg.generator, data.channels, data.size, data.n_classes, 0)
    start = time.perf_counter()
    gen.fit(data.train, data.hflip, folder, 0, teacher=load_classifier(a.teacher) if a.teacher else None)
    fit_s = time.perf_counter() - start
    grid = Path("benchmarks/results/grids/screen") / f"{a.dataset}-{a.name}.png"
    grid.parent.mkdir(parents=True, exist_ok=True)
    save_grid(gen.sample(grid_labels(data.n_classes, 10), 1), data.n_classes, grid)
    quotas = class_quotas(data.train.labels, data.n_classes, a.factor, "train")
    y = torch.cat([torch.full((q,), c) for c, q in enumerate(quotas)])
    start = time.perf_counter()
    x = gen.sample(y, 2)
    rate = len(y) / (time.perf_counter() - start)
    model = build_model("resnet8", data.channels, data.n_classes, width=16)
    train = dataclasses.replace(cfg.teacher.train, epochs=a.cas_epochs, warmup_epochs=1)
    result = fit_classifier(model, Split(x, y), data.val, data.task, train, 0, data.hflip)
    row = {"name": a.name, "dataset": a.dataset, "set": a.set, "kimg": a.kimg, "fit_s": round(fit_s, 1),
           "threads": torch.get_num_threads(), "train_img_s": round(a.kimg * 1000 / fit_s),
           "sample_img_s": round(rate), "downstream_val": result.best_val,
           "cas_epochs": a.cas_epochs, "factor": a.factor, "grid": str(grid)}
    print(json.dumps(row))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with open(OUT, "a") as f:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()

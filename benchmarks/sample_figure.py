"""Real images beside each backend's benchmark grid, one row per class (for the README).

    python benchmarks/sample_figure.py breastmnist --data-dir ../shared/data/medmnist
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.image as mpimg  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from kr.data import load_dataset  # noqa: E402
from kr.quality import save_grid  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("dataset")
    p.add_argument("--data-dir")
    p.add_argument("--results", default="benchmarks/results/generators.json")
    args = p.parse_args()
    data = load_dataset(args.dataset, data_dir=args.data_dir)
    rows = [r for r in json.loads(Path(args.results).read_text())["rows"] if r["dataset"] == data.name]
    real = torch.cat([data.train.images[data.train.labels == c][:10] for c in range(data.n_classes)])
    real_png = Path("benchmarks/results/grids") / f"{data.name}-real.png"
    save_grid(real, data.n_classes, real_png)
    panels = [("real (train split)", real_png)] + [
        (f"{r['kind']}, {r['checkpoint'].replace('kimg-', '').replace('_', '.').lstrip('0')} kimg",
         Path(r["grid"])) for r in rows]
    fig, axes = plt.subplots(len(panels), 1, figsize=(7, 1.6 * data.n_classes * len(panels) / 2 + 0.5))
    for ax, (title, png) in zip(axes, panels):
        ax.imshow(mpimg.imread(png), cmap="gray", vmin=0, vmax=1)
        ax.set_title(title, fontsize=9)
        ax.set_yticks([14 + 28 * c for c in range(data.n_classes)], data.label_names, fontsize=8)
        ax.set_xticks([])
    fig.tight_layout()
    out = Path("benchmarks/results/grids") / f"{data.name}-samples.png"
    fig.savefig(out, dpi=130)
    print(out)


if __name__ == "__main__":
    main()

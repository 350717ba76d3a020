"""Benchmark: the walkthrough (docs/your-images.md) followed command by command on a folder of
images, each command timed — what a user with a folder of scans will wait for.

    python benchmarks/walkthrough.py --data-dir ../shared/data/medmnist                # 28 px, ≈ 1.5 h
    python benchmarks/walkthrough.py --size 64 --references 0                           # 64 px, run only
    python benchmarks/walkthrough.py --preset tiny --references 4 --canaries 20          # the script's self-check

BreastMNIST is written out as PNG files in the walkthrough's layout (train/val/test, one folder
per class), then: `kr data info`, `kr data import`, the `tiny` smoke run, `kr run` (the run;
a folder trains without flips, so it is not the BreastMNIST run), `kr audit` with
--references reference runs, `kr audit --canaries M`, `kr report --shareable`, `kr export` of
the model the run's advice names for measured leakage (KR where it names none), and
`kr predict` on the test folder. Each command's wall time and exit status, the run's test
accuracies and the advice go to results/walkthrough.json under a key of preset and size, with
the commit and CPU. Runs resume: a rerun of a finished step costs its check only.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from table import _commit, _cpu  # noqa: E402  (one machine descriptor for every benchmark)

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results" / "walkthrough.json"
CLASSES = ("malignant", "benign")  # BreastMNIST's label 0 and 1 ("normal, benign")


def write_folder(npz: Path, out: Path) -> Path:
    """BreastMNIST as the walkthrough's folder: <split>/<class>/<index>.png."""
    if (out / "test").is_dir():
        return out
    with np.load(npz) as d:
        for split in ("train", "val", "test"):
            for i, (img, label) in enumerate(zip(d[f"{split}_images"], d[f"{split}_labels"].ravel())):
                folder = out / split / CLASSES[int(label)]
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(img).save(folder / f"{i:04d}.png")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=os.environ.get("KR_DATA_DIR"))
    p.add_argument("--work", default=str(ROOT / "results" / "runs" / "walkthrough"))
    p.add_argument("--preset", default="cpu")
    p.add_argument("--size", type=int, default=28)
    p.add_argument("--references", type=int, default=8, help="experiment 1's reference runs (0: skip)")
    p.add_argument("--canaries", type=int, default=140, help="the canary audit's canaries (0: skip)")
    args = p.parse_args()
    if not args.data_dir:
        raise SystemExit("give --data-dir (or set KR_DATA_DIR): the folder holding breastmnist.npz")
    work = Path(args.work) / f"{args.preset}-{args.size}px"
    folder = write_folder(Path(args.data_dir) / "breastmnist.npz", Path(args.work) / "ultrasound")
    run, release = work / "run", work / "release"
    size = ["--set", f"data.size={args.size}"]
    steps: dict[str, dict] = {}

    def step(name: str, *argv: str) -> str:
        start = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "kr", *argv], capture_output=True, text=True)
        steps[name] = {"command": "kr " + " ".join(argv), "rc": out.returncode,
                       "wall_s": round(time.perf_counter() - start, 1)}
        print(json.dumps({name: steps[name]}), flush=True)
        if out.returncode:
            raise SystemExit(f"{name} failed:\n{out.stderr[-2000:]}")
        return out.stdout

    step("data info", "data", "info", str(folder), "--size", str(args.size))
    step("data import", "data", "import", str(folder), "--out", str(work / "ultrasound.npz"), "--size", str(args.size))
    step("smoke run", "run", "--dataset", str(folder), "--preset", "tiny", "--out", str(work / "smoke"), *size)
    step("run", "run", "--dataset", str(folder), "--preset", args.preset, "--out", str(run), *size)
    if args.references:
        step("audit", "audit", str(run), "--set", f"audit.references={args.references}")
    if args.canaries:
        calibration = ["--set", "audit.canary_calibration=references"] if args.references else []
        step("canary audit", "audit", str(run), "--canaries", str(args.canaries), *calibration)
    step("shareable report", "report", str(run), "--shareable")
    results = json.loads((run / "results.json").read_text())
    from kr.report.advice import release_advice

    advice = release_advice(results)
    method = advice["empirical"]["model"] or "kr"
    step("export", "export", str(run), "--method", method, "--out", str(release))
    step("predict", "predict", str(release), str(folder / "test"), "--out", str(work / "predictions.csv"))
    with open(work / "predictions.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("label") not in (None, "")]
    predicted_acc = sum(r["prediction"] == r["label"] for r in rows) / max(len(rows), 1)
    record = {"commit": _commit(), "cpu": _cpu(), "date": time.strftime("%Y-%m-%d"), "steps": steps,
              "test_acc": {m: v["test"]["acc"] for m, v in results["methods"].items() if "test" in v},
              "released": method, "predicted_test_acc": predicted_acc,
              "advice": {k: v["text"] for k, v in advice.items()},
              "stage_s": round(sum(v for v in results["timings_s"].values() if v), 1)}
    data = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    data[f"{args.preset}-{args.size}px"] = record
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(data, indent=1) + "\n")
    print(json.dumps({k: v for k, v in record.items() if k != "advice"}, indent=1))


if __name__ == "__main__":
    main()

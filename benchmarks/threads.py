"""Benchmark: how a stage's time scales with threads, and whether two 1-thread processes beat
one 2-thread process (what decides the `threads` default and whether running independent
stages side by side pays on a 2-core machine).

    python benchmarks/threads.py [--dataset digits] [--stages teacher generator]

Each stage, shortened (teacher: 4 epochs; generator: 6 kimg) but otherwise the `cpu` preset,
runs three ways, one after the other with nothing else running: one process at 2 threads, one at
1 thread, and two 1-thread processes at once (training time only, the slower of the two).  Prints each wall time and the two ratios (2
threads vs 1; two 1-thread processes vs two 2-thread runs one after another) and appends a row
to results/threads.json.  The ratios are what to read, not the seconds.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from table import _cpu  # noqa: E402  (one machine descriptor for every benchmark)

ROOT = Path(__file__).resolve().parent
SHORT = {"teacher": ["teacher.train.epochs=4"], "generator": ["generator.kimg=6", "generator.checkpoint_kimg=6"]}


def one(stage: str, dataset: str, threads: int) -> None:
    """Train one shortened stage in this process (the child's side)."""
    import torch

    from kr.config import load_config
    from kr.data import load_dataset
    from kr.generation import train_generator
    from kr.teacher import train_teacher

    torch.set_num_threads(threads)
    config = load_config("cpu", data={"dataset": dataset}, overrides=SHORT[stage])
    data = load_dataset(config.data.dataset, size=config.data.size)
    train = train_teacher if stage == "teacher" else train_generator
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        train(data, config, Path(folder), torch.device("cpu"))
        print(time.perf_counter() - start)


def timed(*commands: list[str]) -> float:
    """The training seconds of the slowest child (start-up and data loading left out: they would
    weigh on these shortened stages as they do not on a run's)."""
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) for c in commands]
    outs = [p.communicate()[0] for p in procs]
    if any(p.returncode for p in procs):
        sys.exit(f"a child failed: {commands}")
    return round(max(float(o.strip().splitlines()[-1]) for o in outs), 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="digits")
    p.add_argument("--stages", nargs="*", default=list(SHORT), choices=list(SHORT))
    p.add_argument("--child", nargs=2, metavar=("STAGE", "THREADS"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        one(args.child[0], args.dataset, int(args.child[1]))
        return
    rows = []
    for stage in args.stages:
        cmd = lambda t: [sys.executable, __file__, "--dataset", args.dataset, "--child", stage, str(t)]  # noqa: E731
        two, single, pair = timed(cmd(2)), timed(cmd(1)), timed(cmd(1), cmd(1))
        row = {"stage": stage, "dataset": args.dataset, "two_threads_s": two, "one_thread_s": single,
               "two_one_thread_processes_s": pair, "speedup_2_vs_1_thread": round(single / two, 2),
               "pair_vs_two_2_thread_runs": round(2 * two / pair, 2)}
        print(f"{stage}: 2 threads {two} s, 1 thread {single} s ({row['speedup_2_vs_1_thread']}×); two 1-thread "
              f"processes at once {pair} s against 2 × {two} s one after another ({row['pair_vs_two_2_thread_runs']}×)")
        rows.append(row)
    out = ROOT / "results" / "threads.json"
    kept = json.loads(out.read_text())["runs"] if out.is_file() else []
    kept.append({"cpu": _cpu(), "rows": rows,
                 "date": time.strftime("%Y-%m-%d")})
    out.write_text(json.dumps({"runs": kept}, indent=2) + "\n")


if __name__ == "__main__":
    main()

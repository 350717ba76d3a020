"""Benchmark: the README's first command on a fresh clone — what it prints and how long it takes.

    python benchmarks/quickstart.py run        # clone HEAD, install, `kr run`, timed (≈ 10 min on 2 cores)
    python benchmarks/quickstart.py render     # README's time and docs/run.md's summary from the record

`run` clones this repository's HEAD next to it (so `../shared` resolves as in CI), runs README
command 1 there exactly as written — a virtual environment, `pip install torch==2.13.0 -e .`,
then `kr run` — and records the install and run wall times, the stage seconds, and `kr run`'s
standard output (the summary table) in results/quickstart.json with the commit and CPU. Run it
on idle cores: the time is the claim. `render` writes the README's time sentence and the
summary block of docs/run.md from that record, so both say what a fresh clone printed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from table import _cpu, _write_block  # noqa: E402  (one machine descriptor, one block writer)

ROOT = Path(__file__).resolve().parent
REPO = ROOT.parent
RESULTS = ROOT / "results" / "quickstart.json"
README_BLOCK = ("<!-- quick start time: written by benchmarks/quickstart.py -->", "<!-- end of quick start time -->")
SUMMARY_BLOCK = ("<!-- quick start summary: written by benchmarks/quickstart.py -->",
                 "<!-- end of quick start summary -->")
PAGES = {"readme": REPO / "README.md", "run": REPO / "docs" / "run.md"}


def _timed(command: str, cwd: Path) -> tuple[float, str]:
    start = time.perf_counter()
    out = subprocess.run(["bash", "-c", command], cwd=cwd, check=True, capture_output=True, text=True)
    return time.perf_counter() - start, out.stdout


def run(args) -> None:
    work = Path(tempfile.mkdtemp(prefix="quickstart-", dir=REPO.parent))
    try:
        clone = work / "kr"
        subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
        commit = subprocess.run(["git", "-C", str(clone), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, check=True).stdout.strip()
        venv = ". .venv/bin/activate && "
        install_s, _ = _timed("python3 -m venv .venv && " + venv + "pip install -q torch==2.13.0 -e .", clone)
        run_s, printed = _timed(venv + "kr run", clone)
        manifest = json.loads((clone / "runs" / "digits-cpu-s0" / "manifest.json").read_text())
        record = {"commit": commit, "cpu": _cpu(), "date": time.strftime("%Y-%m-%d"),
                  "install_s": round(install_s, 1), "run_s": round(run_s, 1),
                  "stage_s": round(sum(s["seconds"] for s in manifest["stages"].values()), 1),
                  "threads": manifest.get("threads"), "printed": printed, "note": args.note}
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(record, indent=1) + "\n")
        print(json.dumps({k: v for k, v in record.items() if k != "printed"}))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _minutes(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes} min {seconds} s" if minutes else f"{seconds} s"


def time_text(record: dict) -> str:
    # the install's time is the user's network's (PyTorch is a large download), not kr's
    return (f"Command 1 trains every stage on `digits`: {_minutes(record['run_s'])} for `kr run` on a "
            f"{record['cpu']}, from a fresh clone at commit {record['commit']}, {record['date']}.")


def summary_text(record: dict) -> str:
    return (f"Printed by `kr run` on a fresh clone at commit {record['commit']} ({record['date']}, "
            f"{record['cpu']}, {record['threads']} threads):\n\n```text\n{record['printed'].rstrip()}\n```")


def render(record: dict) -> None:
    _write_block(PAGES["readme"], README_BLOCK, time_text(record))
    _write_block(PAGES["run"], SUMMARY_BLOCK, summary_text(record))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--note", default="idle cores", help="the load on the machine while it ran")
    sub.add_parser("render")
    args = p.parse_args()
    if args.cmd == "run":
        run(args)
    render(json.loads(RESULTS.read_text()))


if __name__ == "__main__":
    main()

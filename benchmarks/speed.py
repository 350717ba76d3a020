"""Benchmark: what a `kr run` costs on a CPU and where the time goes (issue 13) → SPEED.md.

    python benchmarks/speed.py runs --data-dir ../shared/data/medmnist --datasets breastmnist digits
    python benchmarks/speed.py ratios --run benchmarks/results/runs/speed-breastmnist-s0
    python benchmarks/speed.py generators --data-dir ../shared/data/medmnist
    python benchmarks/speed.py table                  # benchmarks/SPEED.md from results/speed.json
    python benchmarks/speed.py record --run DIR --wall-s S --note "fresh clone"   # timed elsewhere

`runs`: a default `kr run` (every default method, DP-SGD included, no `kr audit`) per dataset
and seed, as a subprocess, wall clock and per-stage seconds from its manifest.
`ratios`: in one process, side by side: each generator's `sample()` against a bare loop of
the same network's forwards, and regenerating one epoch's synthetic set (with the run's tuned
knobs and filtering) against training the student one epoch on it.
`generators`: every generator path on BreastMNIST at its `cpu` budget: training seconds,
sampling rate, quality signals (validation split) and the validation ACC/AUC of a 40-epoch KR
student drawn from its last checkpoint (never the test split: these numbers chose the default).
Rows merge into benchmarks/results/speed.json; `table` rewrites SPEED.md from it.  Run one
thing at a time on idle cores: every figure is a wall-clock time.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from kr.cores import available_cores

sys.path.insert(0, str(Path(__file__).resolve().parent))
from table import _cpu  # noqa: E402  (one machine descriptor for every benchmark)

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results" / "speed.json"
RUNS = ROOT / "results" / "runs"

# The `cpu` preset before issue 13 (diffusion, pools, 10-epoch candidates): BreastMNIST seeds 0
# and 1, mean stage seconds as recorded in results/kr.json (1 thread each, two runs side by
# side: upper bounds for one run alone).  Nothing else of it was timed per stage.
BEFORE = {"breastmnist": {"teacher": 133, "generator": 606, "quality": 57, "selection": 991,
                          "tuning": 1154, "methods/kr": 755, "methods/synthetic": 195,
                          "methods/regen": 113, "methods/soft": 150, "evaluate": 2}}
BEFORE_TOTAL = {"breastmnist": "4,308–5,412 s of stage time per run with DP-SGD and the audit "
                               "stage (RESULTS.md, three seeds)",
                "digits": "not finished: after 28 min the generator stood at 19 of 50 kimg (issue 13)",
                "pneumoniamnist": "≈ 9 h, estimated from BreastMNIST (RESULTS.md)"}
TARGET_MIN = {"breastmnist": 10, "digits": 10, "pneumoniamnist": 40}

# Generator paths compared (BreastMNIST): overrides of the `cpu` preset.
GENERATORS = {
    "cgan, teacher-guided (cpu default)": [],
    "cgan, unguided": ["generator.gan.teacher_ce=0", "generator.gan.teacher_bn=0"],
    "flow UNet, 8 steps, guidance 2 (old cpu default)": [
        "generator.kind=diffusion", "generator.kimg=50", "generator.checkpoint_kimg=50",
        "generator.diffusion.guidance=2", "generator.diffusion.steps=8"],
    "flow UNet, 4 steps, guidance 1": [
        "generator.kind=diffusion", "generator.kimg=50", "generator.checkpoint_kimg=50",
        "generator.diffusion.guidance=1", "generator.diffusion.steps=4"],
}


def load() -> dict:
    return json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}


def save(key: str, rows) -> None:
    data = load()
    data[key] = rows
    data["machine"] = {"cores": available_cores(), "processor": _cpu(),
                       "torch": torch.__version__, "python": platform.python_version(),
                       "date": time.strftime("%Y-%m-%d")}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(data, indent=1) + "\n")


# --- runs ----------------------------------------------------------------------------------
def runs(args) -> None:
    data = load().get("runs", {})
    for dataset in args.datasets:
        for seed in args.seeds:
            out = RUNS / f"speed-{dataset}-s{seed}"
            if out.exists() and not args.resume:
                raise SystemExit(f"{out} exists: a timing needs a fresh run (delete it, or --resume "
                                 f"to finish an interrupted one, which is then not a clean timing)")
            cmd = [sys.executable, "-m", "kr", "run", "--dataset", dataset, "--seed", str(seed),
                   "--out", str(out), "--device", "cpu",
                   *(["--data-dir", args.data_dir] if args.data_dir else [])]
            start = time.perf_counter()
            subprocess.run(cmd, check=True)
            wall = round(time.perf_counter() - start, 1)
            data[f"{dataset}-s{seed}"] = _row(out, wall, resumed=bool(args.resume), shared=bool(args.shared))
            print(json.dumps(data[f"{dataset}-s{seed}"]), flush=True)
            data = {**load().get("runs", {}), f"{dataset}-s{seed}": data[f"{dataset}-s{seed}"]}
            save("runs", data)  # merged with what runs side by side saved meanwhile


def _row(out: Path, wall: float, resumed: bool = False, shared: bool = False, note: str = "") -> dict:
    res = json.loads((out / "results.json").read_text())
    manifest = json.loads((out / "manifest.json").read_text())
    return {"dataset": res["dataset"], "seed": res["seed"], "wall_s": wall, "resumed": resumed,
            "shared": shared, "cpu": _cpu(), "note": note, "threads": manifest.get("threads"),
            "stage_s": {k: v["seconds"] for k, v in manifest["stages"].items()},
            "test": {m: v["test"] for m, v in res["methods"].items()},
            "val": {m: v["val"] for m, v in res["methods"].items()},
            "cas_gap_pp": res["cas_gap_pp"], "selected": res["selection"]["selected"],
            "tuned": {**res["tuning"]["knobs"], "threshold": res["tuning"]["threshold"]}}


def record(args) -> None:
    """A `kr run` timed outside this script (the README's first command on a fresh clone)."""
    row = _row(Path(args.run), args.wall_s, note=args.note)
    save("runs", {**load().get("runs", {}), f"{row['dataset']}-s{row['seed']}": row})
    print(json.dumps(row))


# --- ratios --------------------------------------------------------------------------------
def _best_rate(fn, n: int, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return n / best


def bare_loop(gen, labels: torch.Tensor, batch: int, **knobs):
    """The generator's network called directly on pre-drawn noise: what sample() should match."""
    chunks = [labels[i:i + batch] for i in range(0, len(labels), batch)]
    if gen.kind == "gan":
        sigma = knobs.get("sigma", gen.config.gan.sigma)
        zs = [torch.randn(len(c), gen.config.gan.z_dim) * sigma for c in chunks]
        return lambda: [gen.ema(z, c) for z, c in zip(zs, chunks)]
    c = gen.config.diffusion
    steps, w = knobs.get("steps", c.steps), knobs.get("guidance", c.guidance)
    xs = [torch.randn(len(ch), gen.channels, gen.size, gen.size) for ch in chunks]

    def run():
        with torch.inference_mode():
            for x, y in zip(xs, chunks):
                t = torch.full((len(y),), 500.0)
                for _ in range(steps):
                    if w == 1:
                        gen.ema(x, t, class_labels=y)
                    else:
                        gen.ema(torch.cat([x, x]), torch.cat([t, t]),
                                class_labels=torch.cat([y, torch.full_like(y, gen.n_classes)]))
    return run


def ratios(args) -> None:
    from kr.config import load_config
    from kr.data import load_dataset
    from kr.distill import gkd_loss
    from kr.generation import checkpoint_folder
    from kr.generators import build_generator, load_generator
    from kr.models import build_model, load_classifier
    from kr.seeding import derive_seed
    from kr.synthetic import SyntheticSource, class_quotas
    from kr.train import fit_classifier

    run = Path(args.run)
    config = load_config("cpu", run / "config.yaml")
    data = load_dataset(config.data.dataset, data_dir=args.data_dir, size=config.data.size)
    tuning = json.loads((run / "tuning" / "stage.json").read_text())["outputs"]
    teacher = load_classifier(run / "teacher")
    gen = load_generator(checkpoint_folder(run))
    rows = {"run": str(run), "threads": torch.get_num_threads(), "sample_vs_bare": [], "regeneration": {}}
    labels = torch.arange(1024) % data.n_classes
    others = [(gen, tuning["knobs"])]
    if gen.kind != "diffusion":  # the pool path's network, at the old preset's size
        diff = build_generator(load_config("cpu", overrides=["generator.kind=diffusion"]).generator,
                               data.channels, data.size, data.n_classes)
        others += [(diff, {"guidance": 1.0}), (diff, {"guidance": 2.0})]
    for g, knobs in others:
        n = len(labels) if g.kind == "gan" else 256
        s = _best_rate(lambda: g.sample(labels[:n], 0, **knobs), n)
        b = _best_rate(bare_loop(g, labels[:n], 512, **knobs), n)
        rows["sample_vs_bare"].append({"generator": g.kind, "knobs": knobs, "sample_img_s": round(s, 1),
                                       "bare_img_s": round(b, 1), "ratio": round(s / b, 3)})
        print(rows["sample_vs_bare"][-1], flush=True)

    # One epoch's set, regenerated as the KR student gets it, against one epoch of its training.
    quotas = class_quotas(data.train.labels, data.n_classes, config.distill.size_factor, config.distill.prior)
    source = SyntheticSource(gen, quotas, derive_seed(0, "speed"), "every-epoch", tuning["knobs"],
                             tuning["threshold"], teacher, max_rounds=config.distill.max_filter_rounds)
    epochs = iter(range(10 ** 6))
    regen = sum(quotas) / _best_rate(lambda: source(next(epochs)), sum(quotas))
    split = source(10 ** 7)
    tcfg = dataclasses.replace(config.distill.train, epochs=1, warmup_epochs=0)
    mcfg = config.distill.model

    def one_epoch():
        model = build_model(mcfg.arch, data.channels, data.n_classes, width=mcfg.width, norm=mcfg.norm)
        fit_classifier(model, split, data.val, data.task, tcfg, 0, data.hflip,
                       loss_fn=gkd_loss(teacher, config.distill.temperature, config.distill.alpha))
    train = 1 / _best_rate(one_epoch, 1)
    rows["regeneration"] = {"images": sum(quotas), "knobs": tuning["knobs"], "threshold": tuning["threshold"],
                            "acceptance": source.filter_stats[-1]["acceptance"],
                            "regenerate_s": round(regen, 3), "student_epoch_s": round(train, 3),
                            "ratio": round(regen / train, 3)}
    print(rows["regeneration"], flush=True)
    rows["parallel"] = parallel_gain()
    print(rows["parallel"], flush=True)
    save("ratios", rows)


_TRAIN_STEPS = """
import sys, time, torch
from torch.nn import functional as F
from kr.models import build_model
torch.set_num_threads(int(sys.argv[1]))
torch.manual_seed(0)
m = build_model("resnet20", 1, 2, width=16).to(memory_format=torch.channels_last)
opt = torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9, nesterov=True)
x = torch.randn(128, 1, 28, 28).contiguous(memory_format=torch.channels_last)
y = torch.randint(0, 2, (128,))
for i in range(3 + int(sys.argv[2])):
    if i == 3:
        start = time.perf_counter()
    loss = F.cross_entropy(m(x), y)
    opt.zero_grad(); loss.backward(); opt.step()
print(time.perf_counter() - start)
"""


def parallel_gain(steps: int = 60) -> dict:
    """Student training steps (ResNet-20, batch 128): one process with every core's threads
    against one single-threaded process per core, the same total work, wall clock."""
    cores = available_cores()
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", _TRAIN_STEPS, str(cores), str(steps * cores)], check=True,
                   capture_output=True)
    one = time.perf_counter() - start
    start = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-c", _TRAIN_STEPS, "1", str(steps)],
                              stdout=subprocess.DEVNULL) for _ in range(cores)]
    for p in procs:
        p.wait()
    many = time.perf_counter() - start
    return {"cores": cores, "steps": steps * cores, "one_process_s": round(one, 2),
            "processes_s": round(many, 2), "speed_up": round(one / many, 3)}


# --- generators ----------------------------------------------------------------------------
def generators(args) -> None:
    from kr import pipeline
    from kr.config import load_config
    from kr.data import load_dataset
    from kr.distill import train_student
    from kr.generators import load_generator
    from kr.models import load_classifier
    from kr.selection import default_knobs

    data = load_dataset("breastmnist", data_dir=args.data_dir)
    table = load().get("generators", {})
    for name, overrides in GENERATORS.items():
        if args.only and name not in args.only:
            continue
        out = RUNS / ("speed-generator-" + re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-"))
        config = load_config("cpu", overrides=overrides, data={"dataset": "breastmnist"})
        pipeline.run(config, out=out, device="cpu", stages=("teacher", "generator", "quality"), data=data)
        manifest = json.loads((out / "manifest.json").read_text())["stages"]
        quality = json.loads((out / "quality" / "stage.json").read_text())["outputs"]["checkpoints"][-1]
        ckpt = out / "generator" / "checkpoints" / quality["name"]
        gen, teacher = load_generator(ckpt), load_classifier(out / "teacher")
        knobs = default_knobs(gen)
        labels = torch.arange(512) % data.n_classes
        rate = _best_rate(lambda: gen.sample(labels, 0, **knobs), len(labels), repeats=2)
        students = []
        for seed in args.seeds:
            start = time.perf_counter()
            r = train_student(data, dataclasses.replace(config, seed=seed), gen, teacher, "kr", knobs, 0.0)
            students.append({"seed": seed, "val": r["val"], "mode": r["mode"],
                             "seconds": round(time.perf_counter() - start, 1)})
        table[name] = {"run": str(out), "overrides": overrides, "checkpoint": quality["name"],
                       "shared": bool(args.shared),
                       "generator_s": manifest["generator"]["seconds"], "sample_img_s": round(rate, 1),
                       # the teacher's signals (what SPEED.md's generator table has always shown)
                       **{("teacher_agreement" if k == "agreement" else k): quality["teacher"][k]
                          for k in ("agreement", "fd", "precision", "recall")},
                       "students": students}
        print(name, json.dumps(table[name]), flush=True)
        save("generators", table)


# --- the page ------------------------------------------------------------------------------
def _mean(xs):
    return statistics.mean(xs) if xs else float("nan")


def _ms(xs, fmt: str = ".3f") -> str:
    if not xs:
        return "-"
    sd = f" ± {statistics.stdev(xs):{fmt.lstrip('+')}}" if len(xs) > 1 else ""
    return f"{statistics.mean(xs):{fmt}}{sd}"


def _runs_section(runs_: dict, machine: str, title: str, before: dict | None = None) -> list[str]:
    """`before`: earlier rows by key, shown in the `before` column in place of BEFORE_TOTAL."""
    if not runs_:
        return []
    lines = [title, "",
             "| dataset | seed | wall clock | target | before | test ACC kr / real | CAS gap (pp) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in runs_.values():
        ds = r["dataset"]
        flags = [f for f, on in (("resumed", r["resumed"]), ("shared cores", r.get("shared"))) if on]
        flags += [r["note"]] if r.get("note") else []
        note = f" ({', '.join(flags)})" if flags else ""
        note += "" if r.get("cpu", machine) == machine else f" ({r.get('cpu', 'another CPU')})"
        old = (before or {}).get(f"{ds}-s{r['seed']}")
        was = f"{old['wall_s'] / 60:.1f} min ({old.get('cpu', '?')})" if old else BEFORE_TOTAL.get(ds, "-")
        lines.append(f"| {ds} | {r['seed']} | {r['wall_s'] / 60:.1f} min{note}"
                     f" | ≤ {TARGET_MIN.get(ds, '?')} min | {was} | "
                     f"{r['test']['kr']['acc']:.4f} / {r['test']['real']['acc']:.4f} | {r['cas_gap_pp']:+.2f} |")
    stages = list(dict.fromkeys(s for r in runs_.values() for s in r["stage_s"]))
    lines += ["", "Seconds per stage (before: the old `cpu` preset on BreastMNIST, recorded):", "",
              "| run | " + " | ".join(stages) + " |", "|" + " --- |" * (len(stages) + 1)]
    for ds, before in BEFORE.items():
        lines.append(f"| {ds}, before | " + " | ".join(str(before.get(s, "")) for s in stages) + " |")
    for key, r in runs_.items():
        label = key + (" (shared cores)" if r.get("shared") else "")
        lines.append(f"| {label} | " + " | ".join(f"{r['stage_s'].get(s, 0):.0f}" for s in stages) + " |")
    methods = ("real", "kr", "synthetic", "regen", "soft")
    lines += ["", "Test ACC, mean ± std over the seeds measured (the test split chose nothing):", "",
              "| dataset | seeds | " + " | ".join(methods) + " | CAS gap (pp) |",
              "|" + " --- |" * (len(methods) + 3)]
    for ds in dict.fromkeys(r["dataset"] for r in runs_.values()):
        rs = [r for r in runs_.values() if r["dataset"] == ds]
        cells = [_ms([r["test"][m]["acc"] for r in rs if m in r["test"]]) for m in methods]
        lines.append(f"| {ds} | {', '.join(str(r['seed']) for r in rs)} | " + " | ".join(cells)
                     + f" | {_ms([r['cas_gap_pp'] for r in rs], '+.1f')} |")
    return lines + [""]


def table(args) -> None:
    data = load()
    lines = ["# Speed", "",
             f"Written by `python benchmarks/speed.py table` from `results/speed.json`. Machine: "
             f"{data.get('machine', {}).get('cores', '?')} cores "
             f"({data.get('machine', {}).get('processor', '?')}), PyTorch "
             f"{data.get('machine', {}).get('torch', '?')}, no GPU. Wall-clock times, one thing "
             f"at a time on idle cores unless a row says otherwise.", ""]
    lines += _runs_section(data.get("runs", {}), data.get("machine", {}).get("processor", "?"),
                           "## `kr run`, default settings (every default method, DP-SGD included, no `kr audit`)",
                           before=data.get("runs_issue13", {}))
    lines += _runs_section(data.get("runs_issue13", {}), data.get("machine", {}).get("processor", "?"),
                           "## Before issue 20 (issue 13's `cpu` preset: end-to-end DP-SGD, 40-epoch "
                           "students, the old generator)")
    gens = data.get("generators", {})
    if gens:
        lines += ["", "## Generators (BreastMNIST, seed 0, `cpu` budgets; validation split only)", "",
                  "| generator | training (s) | sampling (img/s) | teacher agreement | Fréchet distance | "
                  "precision | recall | KR student val ACC | val AUC | student (s) | val ACC per CPU-minute |",
                  "| --- |" + " --- |" * 10]
        for name, g in gens.items():
            acc = _mean([s["val"]["acc"] for s in g["students"]])
            auc = _mean([s["val"]["auc"] for s in g["students"]])
            sec = _mean([s["seconds"] for s in g["students"]])
            name += " (shared cores)" if g.get("shared") else ""
            lines.append(f"| {name} | {g['generator_s']:.0f} | {g['sample_img_s']:.0f} | "
                         f"{g['teacher_agreement']:.3f} | {g['fd']:.2f} | {g['precision']:.3f} | "
                         f"{g['recall']:.3f} | {acc:.3f} | {auc:.3f} | {sec:.0f} | "
                         f"{acc / ((g['generator_s'] + sec) / 60):.3f} |")
        seeds = sorted({s["seed"] for g in gens.values() for s in g["students"]})
        lines += ["", f"KR students: 40 epochs, seeds {', '.join(map(str, seeds))} (mean), the "
                  "generator's last checkpoint, default knob, no filtering; GANs regenerate every "
                  "epoch, diffusion draws from a pool (`distill.strategy=auto`)."]
    rat = data.get("ratios")
    if rat:
        lines += ["", "## Ratios, measured side by side in one process", "",
                  "| network | knobs | `sample()` (img/s) | bare forward loop (img/s) | ratio |",
                  "| --- | --- | --- | --- | --- |"]
        for r in rat["sample_vs_bare"]:
            lines.append(f"| {r['generator']} | {r['knobs']} | {r['sample_img_s']:.0f} | "
                         f"{r['bare_img_s']:.0f} | {r['ratio']:.2f} |")
        g = rat["regeneration"]
        lines += ["", f"Regenerating one epoch's set ({g['images']} images, knobs {g['knobs']}, filter "
                  f"threshold {g['threshold']}, acceptance {g['acceptance']}): {g['regenerate_s']:.2f} s; "
                  f"one student epoch on it: {g['student_epoch_s']:.2f} s; **ratio {g['ratio']:.2f}** "
                  f"(target ≤ 0.25). {rat['threads']} threads."]
        par = rat.get("parallel")
        if par:
            lines += ["", f"Parallel processes: {par['steps']} student training steps (ResNet-20, batch "
                      f"128) took {par['one_process_s']:.1f} s in one process with {par['cores']} threads "
                      f"and {par['processes_s']:.1f} s as {par['cores']} single-threaded processes side by "
                      f"side: **{par['speed_up']:.2f}×**."]
    text = "\n".join(lines) + "\n"
    page = ROOT / "SPEED.md"
    old = page.read_text() if page.is_file() else ""
    marker = "<!-- generated above; written by hand below -->"
    tail = old.split(marker, 1)[1] if marker in old else "\n"
    page.write_text(text + "\n" + marker + tail)
    print(page)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="what", required=True)
    r = sub.add_parser("runs")
    r.add_argument("--datasets", nargs="+", default=["breastmnist"])
    r.add_argument("--seeds", nargs="+", type=int, default=[0])
    r.add_argument("--resume", action="store_true")
    r.add_argument("--shared", action="store_true",
                   help="Other work shares the cores: the run's numbers count, its times do not.")
    q = sub.add_parser("ratios")
    q.add_argument("--run", required=True, help="A finished `kr run` directory (its teacher, generator, tuning).")
    g = sub.add_parser("generators")
    g.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    g.add_argument("--only", nargs="*", default=None, help="Names of GENERATORS to (re)measure.")
    g.add_argument("--shared", action="store_true", help="Other work shares the cores: times do not count.")
    sub.add_parser("table")
    c = sub.add_parser("record", help="Record a `kr run` timed elsewhere (a fresh clone's first command).")
    c.add_argument("--run", required=True)
    c.add_argument("--wall-s", type=float, required=True)
    c.add_argument("--note", default="")
    for s in (r, q, g):
        s.add_argument("--data-dir", default=os.environ.get("KR_DATA_DIR"))
    args = p.parse_args()
    from kr.cores import claim

    if args.what not in ("runs", "record", "table"):  # `runs` only waits on its `kr run`, which must get every core
        claim()  # a share of the cores beside other kr processes, as `kr` itself takes
    {"runs": runs, "ratios": ratios, "generators": generators, "table": table,
     "record": record}[args.what](args)


if __name__ == "__main__":
    main()

"""The one source of truth for the project's measured numbers: benchmarks/results/table.jsonl.

    python benchmarks/table.py add RUN [RUN …]     # rows from finished run directories
    python benchmarks/table.py render              # RESULTS.md's table and the README's one result

One JSON object per dataset × seed × method: test and validation ACC/AUC, the commit and CPU
that measured it, the run's stage time; where `kr audit` ran, experiment 1's strongest attack
(`exp1_auc`, its interval over runs and images, `tpr_at_1pct`, `references`); where the canary
audit ran, `eps_lb`, `eps_ceiling` and the canary AUC (mislabelled canaries).  A row is keyed by
(dataset, seed, method): adding a run again replaces its rows.  `render` rebuilds the table of
benchmarks/RESULTS.md above its hand-written part (kept), so every figure there comes from here.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent
TABLE = ROOT / "results" / "table.jsonl"
RESULTS = ROOT / "RESULTS.md"
README = ROOT.parent / "README.md"
MARKER = "<!-- generated above; written by hand below -->"
README_BLOCK = ("<!-- one result: written by benchmarks/table.py -->", "<!-- end of one result -->")
ANCHORS = ("Anchors: the Knowledge Recycling paper's average CAS gap −1.24 points (Lomurno & Matteucci 2025, "
           "Table 2; their datasets, GPU scale); GaFi 1.8–4.0 points with hard labels; MedMNIST v2 ResNet-18 "
           "(28 px) test ACC: BreastMNIST 0.863, PneumoniaMNIST 0.854.")


def _cpu() -> str:
    """Cores, model name, family/model (a VM may show only "AMD EPYC") and AVX-512, which alone
    changes a run's time by 1.6× (docs/executors.md)."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    field = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in info.splitlines()[:30])}
    if "model name" not in field:
        return "unknown"
    return (f"{os.cpu_count()}-core {field['model name']} (family {field.get('cpu family')} model {field.get('model')}, "
            f"{'AVX-512' if 'avx512f' in info else 'no AVX-512'})")


def _commit() -> str:
    out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return out.stdout.strip() or "unknown"


def core_hours(run: Path, res: dict | None = None) -> float:
    """Stage seconds × the threads the run was given: what the run cost, whoever shared the CPU.
    `res`: the run's results.json where the caller has read it already."""
    res = res if res is not None else json.loads((run / "results.json").read_text())
    threads = json.loads((run / "manifest.json").read_text()).get("threads", 1)
    return sum(v for v in res.get("timings_s", {}).values() if v) * threads / 3600


def rows_of(run: Path, commit: str | None = None, cpu: str | None = None) -> list[dict]:
    res = json.loads((run / "results.json").read_text())
    # experiment 1's reference runs and the canary audit's run are whole runs of their own
    extra = [p.parent for p in sorted((run / "audit").glob("references/r*/run/results.json"))]
    extra += [p.parent for p in (run / "audit" / "canaries").glob("run/run/results.json")]
    audit, canary = res.get("audit") or {}, res.get("canary") or {}
    meta = res.get("audit_meta") or {}
    run_hours, audit_hours = round(core_hours(run, res), 3), round(sum(core_hours(p) for p in extra), 3)
    rows = []
    for method, m in res["methods"].items():
        if "test" not in m:
            continue
        row = {"dataset": res["dataset"], "seed": res["seed"], "method": method, "preset": res["preset"],
               "test_acc": m["test"]["acc"], "test_auc": m["test"]["auc"],
               "val_acc": m["val"]["acc"], "val_auc": m["val"]["auc"],
               "commit": commit or _commit(), "cpu": cpu or _cpu(), "date": str(datetime.date.today()),
               "run_core_hours": run_hours, "audit_core_hours": audit_hours}
        if "epsilon" in m:
            row.update(epsilon=m["epsilon"], delta=m.get("delta"), guarantee_holds=m.get("guarantee_holds"))
        if audit.get(method):
            name, best = max(audit[method].items(), key=lambda kv: kv[1]["auc"])
            row.update(exp1_attack=name, exp1_auc=best["auc"], exp1_auc_ci=best.get("auc_ci"),
                       exp1_auc_per_target=[best.get("auc_per_target_mean"), best.get("auc_per_target_sd")],
                       tpr_at_1pct=best.get("tpr_at_1%fpr"), tpr_at_1pct_ci=best.get("tpr_at_1%fpr_ci"),
                       references=meta.get("references"))
        c = (canary.get(method) or {}).get("mislabelled")
        if c and (res.get("canary_meta") or {}).get("rule_hash"):  # bounds scored under a rule fixed with the bits
            row.update(eps_lb=c["eps_lb"], eps_ceiling=c["ceiling_at_r"], canary_auc=c["auc"],
                       canary_auc_ci=c.get("auc_ci"), canaries=c["m"],
                       canary_rule=res["canary_meta"]["rule_hash"][:12])
            if c.get("control"):
                row["dp_control"] = c["control"]["reading"]
        rows.append(row)
    return rows


def read() -> list[dict]:
    return [json.loads(line) for line in TABLE.read_text().splitlines() if line.strip()] if TABLE.is_file() else []


def add(runs: list[Path], commit: str | None = None, cpu: str | None = None) -> None:
    new = [r for run in runs for r in rows_of(Path(run), commit, cpu)]
    keys = {(r["dataset"], r["seed"], r["method"]) for r in new}
    kept = [r for r in read() if (r["dataset"], r["seed"], r["method"]) not in keys]
    TABLE.parent.mkdir(parents=True, exist_ok=True)
    TABLE.write_text("".join(json.dumps(r) + "\n" for r in sorted(
        kept + new, key=lambda r: (r["dataset"], r["seed"], r["method"]))))


def _ms(xs: list[float], digits: int = 3) -> str:
    xs = [x for x in xs if x is not None]
    if not xs:
        return ""
    if len(xs) == 1:
        return f"{xs[0]:.{digits}f}"
    return f"{statistics.mean(xs):.{digits}f} ± {statistics.stdev(xs):.{digits}f}"


def render(rows: list[dict], wanted: list[tuple[str, int]] | None = None) -> str:
    by = defaultdict(list)
    for r in rows:
        by[(r["dataset"], r["method"])].append(r)
    lines = ["| dataset | method | seeds | test ACC | test AUC | CAS gap (pp) | exp. 1 strongest AUC | TPR @ 1 % FPR "
             "| refs | canary ε_lb (ceiling) |", "|" + " --- |" * 10]
    for dataset in sorted({d for d, _ in by}):
        teacher = {r["seed"]: r["test_acc"] for r in by.get((dataset, "real"), [])}
        for (d, method), rs in sorted(by.items(), key=lambda kv: (kv[0][0], kv[0][1] != "real", kv[0][1] != "kr",
                                                                  kv[0][1])):
            if d != dataset:
                continue
            gaps = [100 * (r["test_acc"] - teacher[r["seed"]]) for r in rs if r["seed"] in teacher and method != "real"]
            eps = [f"{r['eps_lb']:.2f} ({r['eps_ceiling']:.2f})" for r in rs if "eps_lb" in r]
            lines.append(f"| {dataset} | {method} | {', '.join(str(r['seed']) for r in rs)} | "
                         f"{_ms([r['test_acc'] for r in rs])} | {_ms([r['test_auc'] for r in rs])} | "
                         f"{_ms(gaps, 1)} | {_ms([r.get('exp1_auc') for r in rs])} | "
                         f"{_ms([None if r.get('tpr_at_1pct') is None else 100 * r['tpr_at_1pct'] for r in rs], 1)} | "
                         f"{', '.join(sorted({str(r['references']) for r in rs if r.get('references')}))} | "
                         f"{'; '.join(eps)} |")
    versus = []
    for dataset in sorted({d for d, _ in by}):
        kr = {r["seed"]: r["test_acc"] for r in by.get((dataset, "kr"), [])}
        dp = {r["seed"]: r["test_acc"] for r in by.get((dataset, "dpsgd-eps8"), [])}
        diffs = [100 * (kr[s] - dp[s]) for s in kr if s in dp]
        if diffs:
            versus.append(f"{dataset} {_ms(diffs, 1)} ({len(diffs)} seed{'s' * (len(diffs) > 1)})")
    have = {(r["dataset"], r["seed"]) for r in rows}
    missing = [f"{d} seed {s}" for d, s in wanted or [] if (d, s) not in have]
    cpus = sorted({r["cpu"] for r in rows})
    commits = sorted({r["commit"] for r in rows})
    hours = defaultdict(lambda: [0.0, 0.0])
    for r in rows:
        if r["method"] == "real":  # one row per run carries the run's cost
            hours[r["dataset"]][0] += r["run_core_hours"]
            hours[r["dataset"]][1] += r.get("audit_core_hours", 0.0)
    return "\n".join([
        "# Results", "",
        f"Generated by `python benchmarks/table.py render` from `results/table.jsonl` on {datetime.date.today()}: "
        f"`cpu` preset, CPUs {', '.join(cpus)}, commits {', '.join(commits)}. Mean ± std over the seeds listed; "
        "test chose nothing. CAS gap: test ACC minus the real-trained teacher's of the same seed, in points. "
        "Exp. 1: the strongest membership-inference attack over whole runs on pool halves (`kr audit`); "
        "canary ε_lb: the one-run canary audit's lower bound on ε (mislabelled canaries), beside its ceiling.", "",
        *lines, "", *([f"**Not measured**: {', '.join(missing)}.", ""] if missing else []),
        "KR − DP-SGD at ε = 8, test ACC, points: " + ("; ".join(versus) or "not measured") + ".", "",
        ANCHORS, "",
        "Compute, core-hours of stage time (stage seconds × threads): "
        + "; ".join(f"{d} {h[0]:.2f} for the runs (`kr run`) + {h[1]:.2f} for their audits' runs "
                    f"(references, canaries)" for d, h in sorted(hours.items())) + ".", ""])


def write_results(rows: list[dict], wanted: list[tuple[str, int]] | None = None) -> str:
    """RESULTS.md: the generated table above the marker, the hand-written part below it kept."""
    text = RESULTS.read_text() if RESULTS.is_file() else ""
    kept = text.split(MARKER, 1)[1] if MARKER in text else "\n"
    RESULTS.write_text(render(rows, wanted) + "\n" + MARKER + kept)
    return RESULTS.read_text()


def one_result(rows: list[dict]) -> str:
    """The README's "one result": seed 0 of each measured dataset, one line each."""
    at = {(r["dataset"], r["method"]): r for r in rows if r["seed"] == 0}
    lines = ["| dataset | teacher | KR | CAS gap | `synthetic` | DP-SGD ε = 8 | KR's strongest attack (refs) "
             "| canary ε_lb: KR (teacher, the control) |", "|" + " --- |" * 8]
    for dataset in sorted({d for d, _ in at}):
        real, kr, syn, dp = (at.get((dataset, m)) for m in ("real", "kr", "synthetic", "dpsgd-eps8"))
        if not (real and kr):
            continue
        acc = lambda r: f"{r['test_acc']:.3f}" if r else "—"  # noqa: E731
        attack = (f"{kr['exp1_auc']:.3f} ({kr['references']})" if kr.get("exp1_auc") is not None else "—")
        eps = (f"{kr['eps_lb']:.2f} ({real['eps_lb']:.2f})" if kr.get("eps_lb") is not None
               and real.get("eps_lb") is not None else "—")
        lines.append(f"| {dataset} | {acc(real)} | {acc(kr)} | {100 * (kr['test_acc'] - real['test_acc']):+.1f} | "
                     f"{acc(syn)} | {acc(dp)} | {attack} | {eps} |")
    cpus = sorted({r["cpu"] for r in at.values()})
    commits = sorted({r["commit"] for r in at.values()})
    dates = sorted({r.get("date", "undated") for r in at.values()})
    return "\n".join([f"Test ACC, seed 0, `cpu` preset (`kr run`, then `kr audit`; measured {', '.join(dates)} "
                      f"on a {', '.join(cpus)}; commit {', '.join(commits)}):", "", *lines])


def write_readme(rows: list[dict]) -> None:
    text = README.read_text()
    head, rest = text.split(README_BLOCK[0], 1)
    tail = rest.split(README_BLOCK[1], 1)[1]
    README.write_text(head + README_BLOCK[0] + "\n" + one_result(rows) + "\n" + README_BLOCK[1] + tail)


WANTED = [(d, s) for d in ("breastmnist", "digits", "pneumoniamnist") for s in (0, 1, 2)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("add")
    a.add_argument("runs", nargs="+")
    a.add_argument("--commit", default=None, help="the commit that measured the runs (default: HEAD)")
    sub.add_parser("render")
    args = p.parse_args()
    if args.cmd == "add":
        add([Path(r) for r in args.runs], args.commit)
    write_readme(read())
    print(write_results(read(), WANTED).split(MARKER)[0])


if __name__ == "__main__":
    main()

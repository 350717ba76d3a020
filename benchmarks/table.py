"""The one source of truth for the project's measured numbers: benchmarks/results/table.jsonl.

    python benchmarks/table.py add RUN [RUN …]     # rows from finished run directories
    python benchmarks/table.py render              # RESULTS.md's table; the "which model" blocks of the README and walkthrough

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
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
TABLE = ROOT / "results" / "table.jsonl"
RESULTS = ROOT / "RESULTS.md"
MARKER = "<!-- generated above; written by hand below -->"
RESAMPLES = 2000  # bootstrap draws per canary run
RELEASE_PAGES = (ROOT.parent / "README.md", ROOT.parent / "docs" / "your-images.md")
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
    """The commit of the kr this interpreter imports (what `python -m kr` runs): the one each
    stage records (kr.rundir.source)."""
    from kr.rundir import source

    return source() or "unknown"


def core_hours(run: Path, res: dict | None = None) -> float:
    """Stage seconds × the threads the run was given: what the run cost, whoever shared the CPU.
    `res`: the run's results.json where the caller has read it already."""
    res = res if res is not None else json.loads((run / "results.json").read_text())
    threads = json.loads((run / "manifest.json").read_text()).get("threads", 1)
    return sum(v for v in res.get("timings_s", {}).values() if v) * threads / 3600


def rows_of(run: Path, commit: str | None = None, cpu: str | None = None, study: str = "table") -> list[dict]:
    """One row per evaluated method of a finished run. `study`: which measurement the run
    belongs to ("table": the published seeds 0–2; "labels": the label-channel seeds 10–12)."""
    res = json.loads((run / "results.json").read_text())
    # experiment 1's reference runs and the canary audit's run are whole runs of their own
    extra = [p.parent for p in sorted((run / "audit").glob("references/r*/run/results.json"))]
    extra += [p.parent for p in (run / "audit" / "canaries").glob("run/run/results.json")]
    audit, canary = res.get("audit") or {}, res.get("canary") or {}
    meta = res.get("audit_meta") or {}
    canary_scores, canary_bits = _canary_scores(run)
    run_hours, audit_hours = _hours(run, res, extra)
    commit = commit or _stage_commits(run)
    rows = []
    for method, m in res["methods"].items():
        if "test" not in m:
            continue
        row = {"dataset": res["dataset"], "seed": res["seed"], "method": method, "preset": res["preset"], "study": study,
               "test_acc": m["test"]["acc"], "test_auc": m["test"]["auc"],
               "val_acc": m["val"]["acc"], "val_auc": m["val"]["auc"],
               "commit": commit, "cpu": cpu or _cpu(), "date": str(datetime.date.today()),
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
            if method in canary_scores:  # differences between models pair over these canaries
                row.update(canary_scores=canary_scores[method], canary_bits=canary_bits)
        rows.append(row)
    return rows


def _hours(run: Path, res: dict, extra: list[Path]) -> tuple[float, float]:
    """Core-hours of `kr run`'s stages and of the audit's. Audits are stages of the run: their
    seconds (reference runs, attacks, the canary run and its scoring) are in the run's timings and
    count once, as the audit's; older runs kept them only in the audit's own run directories."""
    timings = {k: v for k, v in res.get("timings_s", {}).items() if v}
    threads = json.loads((run / "manifest.json").read_text()).get("threads", 1)
    audit = sum(v for k, v in timings.items() if k.startswith("audit/") and k != "audit/shipped")
    run_h = (sum(timings.values()) - audit) * threads / 3600
    audit_h = audit * threads / 3600 if audit else sum(core_hours(p) for p in extra)
    return round(run_h, 3), round(audit_h, 3)


def _stage_commits(run: Path) -> str:
    """The commit(s) that computed a run's stages, as its manifest records them (runs of a kr
    before stages recorded their source: the kr this interpreter imports)."""
    stages = list(json.loads((run / "manifest.json").read_text()).get("stages", {}).values())
    found = sorted({s["source"] for s in stages if s.get("source")})
    if not found:
        return _commit()
    # stages of an older kr, or of a kr outside a checkout, are not credited to the others' commit
    return ", ".join(found + ["unrecorded"] * any(not s.get("source") for s in stages))


def _canary_scores(run: Path) -> tuple[dict[str, list[float]], list[int]]:
    """Each model's score on the mislabelled canaries of the run's canary audit, and their bits."""
    scores, plant = run / "audit" / "canaries" / "score" / "scores.npz", run / "audit" / "canaries" / "plant" / "canaries.npz"
    if not (scores.is_file() and plant.is_file()):
        return {}, []
    with np.load(plant) as f:
        main = f["kind"] == 0
        bits = f["bits"].astype(int)[main].tolist()
    with np.load(scores) as f:
        return {m: [round(float(x), 6) for x in f[m][main]] for m in f.files}, bits


def read(study: str | None = "table") -> list[dict]:
    """The rows of one study (rows written before studies existed are the table's); None: all."""
    rows = [json.loads(line) for line in TABLE.read_text().splitlines() if line.strip()] if TABLE.is_file() else []
    return [r for r in rows if study is None or r.get("study", "table") == study]


def _key(r: dict) -> tuple:
    return r.get("study", "table"), r["dataset"], r["seed"], r["method"]


def add(runs: list[Path], commit: str | None = None, cpu: str | None = None, study: str = "table") -> None:
    new = [r for run in runs for r in rows_of(Path(run), commit, cpu, study)]
    keys = {_key(r) for r in new}
    kept = [r for r in read(None) if _key(r) not in keys]
    TABLE.parent.mkdir(parents=True, exist_ok=True)
    tmp = TABLE.with_suffix(".tmp")  # atomic: a crash leaves the old table, never half of one
    tmp.write_text("".join(json.dumps(r) + "\n" for r in sorted(kept + new, key=_key)))
    tmp.replace(TABLE)


def mean_spread(xs: list[float | None], digits: int = 3, se: bool = False) -> str:
    """Every benchmark's one mean ± spread: the sample std over seeds, or (se=True) its
    standard error. One value prints alone; None values (not measured) are left out."""
    xs = [x for x in xs if x is not None]
    if not xs:
        return ""
    if len(xs) == 1:
        return f"{xs[0]:.{digits}f}"
    spread = statistics.stdev(xs) / (len(xs) ** 0.5 if se else 1)
    return f"{statistics.mean(xs):.{digits}f} ± {spread:.{digits}f}"



def paired_seeds(a: dict[int, float], b: dict[int, float], level: float = 0.95) -> dict | None:
    """a − b paired over the seeds both measured: the mean and a Student t-interval over seeds.
    No interval (`ci` None, `why` says so) with one seed, or where every seed differs by the
    same amount: a spread of zero over three seeds of a 156-image test split is the split's
    granularity, not certainty. The interval holds the seeds' variation, not the test split's
    own sampling, which every seed shares."""
    from scipy import stats

    seeds = sorted(set(a) & set(b))
    d = [a[s] - b[s] for s in seeds]
    if not d:
        return None
    if len(d) < 2:
        return {"mean": d[0], "ci": None, "seeds": seeds, "why": "one seed"}
    m, se = statistics.mean(d), statistics.stdev(d) / len(d) ** 0.5
    if se < 1e-9 * max(1.0, abs(m)):
        return {"mean": m, "ci": None, "seeds": seeds, "why": "no spread over seeds"}
    h = float(stats.t.ppf(0.5 + level / 2, len(d) - 1)) * se
    return {"mean": m, "ci": [m - h, m + h], "seeds": seeds}


def mean_interval(xs: dict[int, float], level: float = 0.95) -> dict | None:
    """A mean over seeds with its Student t-interval (the one-sample form of paired_seeds)."""
    return paired_seeds(xs, {s: 0.0 for s in xs}, level)


def over_seeds(units: list[tuple[dict, np.ndarray]], statistic, resamples: int | None = None,
               seed: int = 0) -> tuple[float, list[float]]:
    """Mean over independent canary runs of statistic(scores, bits), with its 95 % interval:
    per run, bootstrap draws resampling canaries (every model alike, so differences stay
    paired), the runs' draws averaged draw by draw. The interval holds the canaries' sampling
    with each run's trained models fixed, not the variation of training between runs.
    `units`: (scores by model, bits) per run; each run needs members and non-members."""
    rng, resamples = np.random.default_rng(seed), resamples or RESAMPLES
    means, draws = [], []
    for scores, y in units:
        scores = {m: np.asarray(v, float) for m, v in scores.items()}
        y = np.asarray(y, bool)
        if not 0 < y.sum() < len(y):
            raise ValueError(f"a canary run with {int(y.sum())} of {len(y)} canaries in: no AUC without both")
        means.append(statistic(scores, y))
        d = []
        while len(d) < resamples:  # a draw with one side only has no AUC: drawn again
            i = rng.integers(0, len(y), len(y))
            if 0 < y[i].sum() < len(i):
                d.append(statistic({m: v[i] for m, v in scores.items()}, y[i]))
        draws.append(d)
    mean_draws = np.mean(draws, axis=0)
    return float(np.mean(means)), [float(np.percentile(mean_draws, 2.5)), float(np.percentile(mean_draws, 97.5))]


def said(mean: float, ci: list[float] | None, digits: int = 3, scale: float = 1.0, why: str = "one seed") -> str:
    """A difference as the docs print it: the mean, its interval, and whether zero is outside."""
    if ci is None:
        return f"{scale * mean:+.{digits}f} ({why}: no interval)"
    lo, hi = (scale * c for c in ci)
    verdict = "distinguishable" if lo > 0 or hi < 0 else "not distinguishable"
    return f"{scale * mean:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}], {verdict}"


def _dates(rows: list[dict]) -> str:
    """The measurement dates, not the render's: the same rows render to the same text."""
    return ", ".join(sorted({r.get("date", "undated") for r in rows}))


def _verdict(p: dict | None, threshold: float, above: bool | None) -> str:
    """A target read off a value with its interval: above=True wants the interval above the
    threshold, above=False the mean at or above it (the interval said beside it), above=None
    the interval at or below it (an upper bound: the strongest attack's AUC)."""
    if p is None:
        return "not measured"
    m, ci = p["mean"], p["ci"]
    if above is None:
        if ci is None:
            return f"{'met' if m <= threshold else 'missed'} on the mean ({p.get('why', 'one seed')}: no interval)"
        return "met" if ci[1] <= threshold else (
            f"met on the mean (the interval reaches above {threshold:g})" if m <= threshold else "missed")
    if ci is None:
        met = m > threshold if above else m >= threshold
        return f"{'met' if met else 'missed'} on the mean ({p.get('why', 'one seed')}: no interval)"
    if above:
        return "met" if ci[0] > threshold else ("met on the mean, not distinguishable" if m > threshold else "missed")
    if m >= threshold:
        return "met" if ci[0] >= threshold else f"met on the mean (the interval reaches below {threshold:+g})"
    return "missed"


def differences(rows: list[dict]) -> list[str]:
    """Every difference the table states, paired, with its interval and the target it serves:
    test ACC and experiment 1's AUC paired over seeds; canary AUC paired over canaries within
    each seed's canary run and averaged over seeds."""
    out = ["Differences, paired: test ACC and experiment 1 over seeds (95 % Student t-interval; none with "
           "one seed or no spread over seeds; a single seed's experiment-1 AUC: its interval over runs and "
           "images); canary AUC over each seed's mislabelled canaries, averaged over seeds (bootstrap over "
           "canaries, each seed's models fixed). \"not distinguishable\": the interval includes zero.", "",
           "| dataset | difference | seeds | value [95 % CI] | target | verdict |", "|" + " --- |" * 6]
    for dataset in sorted({r["dataset"] for r in rows}):
        at = defaultdict(dict)
        for r in rows:
            if r["dataset"] == dataset:
                at[r["method"]][r["seed"]] = r

        def field(method, key, scale=1.0):
            return {s: scale * r[key] for s, r in at.get(method, {}).items() if r.get(key) is not None}

        def line(name, p, digits, target, verdict):
            if p is not None:
                seeds = ", ".join(str(s) for s in p["seeds"])
                value = said(p["mean"], p["ci"], digits, why=p.get("why", "one seed"))
                out.append(f"| {dataset} | {name} | {seeds} | {value} | {target} | {verdict} |")

        acc = {m: field(m, "test_acc", 100) for m in ("kr", "real", "synthetic", "dpsgd-eps8")}
        gap = paired_seeds(acc["kr"], acc["real"])
        line("KR − teacher, test ACC (pp)", gap, 1, "≥ −1", _verdict(gap, -1, above=False))
        for other, label in (("synthetic", "`synthetic`"), ("dpsgd-eps8", "DP-SGD ε = 8")):
            p = paired_seeds(acc["kr"], acc[other])
            line(f"KR − {label}, test ACC (pp)", p, 1, "> 0", _verdict(p, 0, above=True))
        kr_exp1 = field("kr", "exp1_auc")
        if kr_exp1:
            p = mean_interval(kr_exp1)
            if p["ci"] is None and len(kr_exp1) == 1:  # one seed: its interval over runs and images
                p["ci"] = next(iter(at["kr"][s] for s in kr_exp1)).get("exp1_auc_ci")
            ci = f"[{p['ci'][0]:.3f}, {p['ci'][1]:.3f}]" if p["ci"] else f"({p['why']}: no interval)"
            out.append(f"| {dataset} | KR's strongest exp. 1 AUC | {', '.join(map(str, p['seeds']))} | "
                       f"{p['mean']:.3f} {ci} | ≤ 0.52 | {_verdict(p, 0.52, above=None)} |")
        p = paired_seeds(field("real", "exp1_auc"), kr_exp1)
        line("teacher − KR, strongest exp. 1 AUC", p, 3, "≥ 0.05", _verdict(p, 0.05, above=False))
        # the control must hold against every hard-label student, as the release advice asks
        hard = [h for h in ("synthetic", "regen") if any("canary_scores" in r for r in at.get(h, {}).values())]
        for reference in hard:
            for model, target, name in (("real", "> 0 (the control)", "teacher"), ("kr", "—", "KR")):
                seeds = sorted(s for s in at.get(model, {}) if "canary_scores" in at[model][s]
                               and "canary_scores" in at[reference].get(s, {}))
                if not seeds:
                    continue
                units = [({"a": at[model][s]["canary_scores"], "b": at[reference][s]["canary_scores"]},
                          np.array(at[model][s]["canary_bits"], bool)) for s in seeds]
                m, ci = over_seeds(units, lambda sc, y: _auc(sc["a"], y) - _auc(sc["b"], y))
                verdict = ("passing" if ci[0] > 0 else "failing: the audit could not see the teacher's leakage") \
                    if model == "real" else ("not distinguishable" if ci[0] <= 0 <= ci[1] else "distinguishable")
                line(f"{name} − `{reference}`, canary AUC", {"mean": m, "ci": ci, "seeds": seeds}, 3, target, verdict)
    return out


def _auc(scores, y) -> float:
    from kr.privacy.metrics import _auc as auc  # ties count half, as everywhere in kr

    return auc(np.asarray(scores), np.asarray(y, bool))


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
            audited = [r for r in rs if r.get("exp1_auc") is not None]
            only = f" (seed{'s' * (len(audited) > 1)} {', '.join(str(r['seed']) for r in audited)})" \
                if audited and len(audited) < len(rs) else ""
            lines.append(f"| {dataset} | {method} | {', '.join(str(r['seed']) for r in rs)} | "
                         f"{mean_spread([r['test_acc'] for r in rs])} | {mean_spread([r['test_auc'] for r in rs])} | "
                         f"{mean_spread(gaps, 1)} | {mean_spread([r['exp1_auc'] for r in audited])}{only} | "
                         f"{mean_spread([100 * r['tpr_at_1pct'] for r in audited if r.get('tpr_at_1pct') is not None], 1)}"
                         f"{only} | "
                         f"{', '.join(sorted({str(r['references']) for r in rs if r.get('references')}))} | "
                         f"{'; '.join(eps)} |")
    have = {(r["dataset"], r["seed"]) for r in rows}
    missing = [f"{d} seed {s}" for d, s in sorted(set(wanted or [])) if (d, s) not in have]
    cpus = sorted({r["cpu"] for r in rows})
    commits = sorted({r["commit"] for r in rows})
    hours = defaultdict(lambda: [0.0, 0.0])
    for r in rows:
        if r["method"] == "real":  # one row per run carries the run's cost
            hours[r["dataset"]][0] += r["run_core_hours"]
            hours[r["dataset"]][1] += r.get("audit_core_hours", 0.0)
    return "\n".join([
        "# Results", "",
        f"Generated by `python benchmarks/table.py render` from `results/table.jsonl` (measured {_dates(rows)}): "
        f"`cpu` preset, CPUs {', '.join(cpus)}, commits {', '.join(commits)}. Mean ± std over the seeds listed; "
        "test chose nothing. CAS gap: test ACC minus the real-trained teacher's of the same seed, in points. "
        "Exp. 1: the strongest membership-inference attack over whole runs on pool halves (`kr audit`); "
        "canary ε_lb: the one-run canary audit's lower bound on ε (mislabelled canaries), beside its ceiling.", "",
        *lines, "", *([f"**Not measured**: {', '.join(missing)}.", ""] if missing else []),
        "DP-SGD rows: each seed is one draw of secret noise; another draw gives another model.", "",
        *differences(rows), "",
        ANCHORS, "",
        "Compute, core-hours of stage time (stage seconds × threads): "
        + "; ".join(f"{d} {h[0]:.2f} for the runs (`kr run`) + {h[1]:.2f} for their audits' runs "
                    f"(references, canaries)" for d, h in sorted(hours.items())) + ".", ""])


def as_results(rows: list[dict]) -> dict:
    """One dataset's rows over seeds as a results.json the release advice reads
    (kr.report.advice): accuracies averaged over seeds, canary AUCs and their paired
    differences over each seed's canaries (over_seeds), the pairs a run's audit compares."""
    from kr.privacy.scoring import comparison_pairs

    by = defaultdict(dict)
    for r in rows:
        by[r["method"]][r["seed"]] = r
    seeds = sorted(set.intersection(*(set(v) for v in by.values())))
    methods = {}
    for m, at in by.items():
        rs = [at[s] for s in seeds]
        methods[m] = {split: {k: statistics.mean(r[f"{split}_{k}"] for r in rs) for k in ("acc", "auc")}
                      for split in ("test", "val")}
        if "epsilon" in rs[0]:
            methods[m].update(epsilon=max(r["epsilon"] for r in rs), delta=max(r["delta"] for r in rs),
                              guarantee_holds=all(r.get("guarantee_holds") is True for r in rs))
    scored = [m for m, at in by.items() if all("canary_scores" in at[s] for s in seeds)]

    def units(*models):
        return [({m: by[m][s]["canary_scores"] for m in models}, np.array(by[models[0]][s]["canary_bits"], bool))
                for s in seeds]

    canary, comparisons = {}, []
    if seeds and scored:
        for m in scored:
            auc, ci = over_seeds(units(m), lambda sc, y, m=m: _auc(sc[m], y))
            canary[m] = {"mislabelled": {"auc": auc, "auc_ci": ci}}
        for a, b in comparison_pairs(scored):
            d, ci = over_seeds(units(a, b), lambda sc, y, a=a, b=b: _auc(sc[a], y) - _auc(sc[b], y))
            comparisons.append({"a": a, "b": b, "difference": d, "ci": ci, "distinguishable": not ci[0] <= 0 <= ci[1]})
    return {"seeds": seeds, "methods": methods, "canary": canary, "canary_meta": {"comparisons": comparisons}}


RELEASE_BLOCK = ("<!-- which model: written by benchmarks/table.py -->", "<!-- end of which model -->")
# The label-channel runs (seeds 10–12, today's teacher) are the measurement with a canary audit
# on every seed; the table's seeds 0–2 take over once each of their cells has one.
RELEASE_STUDY = "labels"


def release_block(rows: list[dict]) -> str:
    """Which model to release, per dataset, from the measured rows: each need's pick by the
    same rule a run's summary uses (kr.report.advice), over seeds."""
    from kr.report.advice import release_advice

    lines = ["| dataset | seeds | teacher (not for release) | a formal guarantee (DP-SGD, the largest ε trained) | measured leakage as low as hard "
             "labels | the audit's control: teacher − hard labels, canary AUC | best accuracy |", "|" + " --- |" * 7]
    for dataset in sorted({r["dataset"] for r in rows}):
        res = as_results([r for r in rows if r["dataset"] == dataset])
        advice, methods = release_advice(res), res["methods"]

        def pick(need):
            m = advice[need]["model"]
            return f"{m} ({methods[m]['test']['acc']:.3f})" if m else "none: " + advice[need]["text"].split(":")[0]

        comps = res["canary_meta"]["comparisons"]
        control = "; ".join(f"− {c['b']} {said(c['difference'], c['ci'])}" for c in comps if c["a"] == "real")
        emp = advice["empirical"]["model"]
        versus = "; ".join(f"− {c['b']} {said(c['difference'], c['ci'])}" for c in comps
                           if c["a"] == emp and c["b"] in ("synthetic", "regen"))
        lines.append(f"| {dataset} | {', '.join(map(str, res['seeds']))} | {methods['real']['test']['acc']:.3f} | "
                     f"{pick('formal')} | {pick('empirical')}{': ' + versus if versus else ''} | "
                     f"{control or 'not measured'} | {pick('accuracy')} |")
    return "\n".join([f"Test ACC, mean over seeds; canary AUC differences paired over each seed's canaries "
                      f"(`cpu` preset; measured {_dates(rows)} on a {', '.join(sorted({r['cpu'] for r in rows}))}; "
                      f"commits {', '.join(sorted({r['commit'] for r in rows}))}):", "", *lines])


def write_results(rows: list[dict], wanted: list[tuple[str, int]] | None = None) -> str:
    """RESULTS.md: the generated table above the marker, the hand-written part below it kept."""
    text = RESULTS.read_text() if RESULTS.is_file() else ""
    kept = text.split(MARKER, 1)[1] if MARKER in text else "\n"
    RESULTS.write_text(render(rows, wanted) + "\n" + MARKER + kept)
    return RESULTS.read_text()


def _write_block(path: Path, marks: tuple[str, str], text: str) -> None:
    """Replace what lies between a page's two markers (every generated block of the docs)."""
    page = path.read_text()
    if marks[0] not in page or marks[1] not in page:
        raise SystemExit(f"{path.name} has no generated block: add the lines {marks[0]} and {marks[1]} where it goes")
    head, rest = page.split(marks[0], 1)
    path.write_text(head + marks[0] + "\n" + text + "\n" + marks[1] + rest.split(marks[1], 1)[1])


def write_readme(release_rows: list[dict]) -> None:
    """The "which model" block of the README and of the walkthrough."""
    if release_rows:
        for page in RELEASE_PAGES:
            _write_block(page, RELEASE_BLOCK, release_block(release_rows))


WANTED = [(d, s) for d in ("breastmnist", "digits", "pneumoniamnist") for s in (0, 1, 2)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("add")
    a.add_argument("runs", nargs="+")
    a.add_argument("--commit", default=None, help="the commit that measured the runs (default: the commits each run's manifest records per stage, else HEAD)")
    a.add_argument("--study", default="table", choices=("table", "labels"),
                   help="the measurement the runs belong to (table: seeds 0–2; labels: the label channel, seeds 10–12)")
    sub.add_parser("render")
    args = p.parse_args()
    if args.cmd == "add":
        add([Path(r) for r in args.runs], args.commit, study=args.study)
    write_readme(read(RELEASE_STUDY))
    print(write_results(read(), WANTED).split(MARKER)[0])


if __name__ == "__main__":
    main()

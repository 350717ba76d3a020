"""`kr report`: one self-contained HTML page (figures embedded, no network) and a Markdown twin,
built from run directories alone.  Every number is read from results.json; nothing is
retrained or re-scored, so the report of a run always matches its results."""

from __future__ import annotations

import base64
import html
import json
import statistics
import time
from pathlib import Path

from kr.artifacts import atomic_path, read_json
from kr.errors import KRError
from kr.methods import describe, is_dp, method_of
from kr.privacy.results import audit_of, best_attack, canary_source
from kr.report import figures
from kr.report.advice import advice_lines
from kr.report.tables import canary_rows, comparison_lines, merged_attacks, quality_rows, spread

SECTIONS = (("results", "Results"), ("privacy-utility", "Privacy–utility"), ("release", "Which model to release"),
            ("audit", "Membership inference"),
            ("samples", "Synthetic samples"), ("selection", "Checkpoint optimisation and tuning"),
            ("training", "Training curves"), ("roc", "ROC curves"), ("memorisation", "Memorisation check"),
            ("provenance", "Config, versions, seeds, timings"))
SENSITIVE = ("This report shows real training images (sample grids, closest pairs): share it only "
             "where the training data itself may go.")
SHAREABLE = ("Shareable: this report leaves out every real image (no grids of real images, no closest "
             "pairs); it shows synthetic samples only where the memorisation check found no near-copy of "
             "a train image. Its numbers are the run's own.")


class Run:
    """What one run directory holds, read once."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not (self.path / "results.json").is_file():
            raise KRError(f"{self.path}: no results.json; give a run directory that `kr run` finished")
        self.results = read_json(self.path / "results.json")
        manifest = self.path / "manifest.json"
        self.manifest = read_json(manifest) if manifest.is_file() else {}
        jsonl = self.path / "metrics.jsonl"
        self.records = [json.loads(line) for line in jsonl.read_text().splitlines() if line.strip()] \
            if jsonl.is_file() else []
        self.name = self.path.resolve().name

    def file(self, *parts: str) -> Path | None:
        p = self.path.joinpath(*parts)
        return p if p.is_file() else None


def _f(x, digits: int = 4) -> str:
    return "n/a" if x is None or x != x else f"{x:.{digits}f}"


def _mean_std(values: list[float], digits: int = 4) -> str:
    values = [v for v in values if v is not None and v == v]
    if not values:
        return "n/a"
    if len(values) == 1:
        return _f(values[0], digits)
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def _attack_cell(runs: list[Run], method: str) -> str:
    """The strongest attack's AUC, averaged only over runs audited by the same experiment
    (experiment 1 is about the procedure, 2 about one model: they do not average)."""
    groups: dict[str, list[tuple[str, dict]]] = {}
    for r in runs:
        exp, audit = audit_of(r.results)
        best = best_attack(audit.get(method, {}))
        if best:
            groups.setdefault(exp, []).append(best)
    cells = []
    for exp in ("procedure", "shipped"):
        if exp in groups:
            names = ", ".join(sorted({a for a, _ in groups[exp]}))
            n = len(groups[exp])
            cells.append(f"{_mean_std([row['auc'] for _, row in groups[exp]])} "
                         f"({names}; exp. {1 if exp == 'procedure' else 2}, {n} run{'s' * (n > 1)})")
    return "; ".join(cells) or "n/a"


def results_rows(runs: list[Run]) -> list[list[str]]:
    """Per dataset and method: test ACC/AUC (mean ± std over runs), CAS gap against the teacher of
    the same runs, and the strongest attack's AUC."""
    header = ["dataset", "method", "runs", "test ACC", "test AUC", "CAS gap (pp)", "strongest attack: AUC", "what"]
    rows = [header]
    datasets: dict[str, list[Run]] = {}
    for r in runs:
        datasets.setdefault(r.results["dataset"], []).append(r)
    for dataset, group in datasets.items():
        methods = list(dict.fromkeys(m for r in group for m, v in r.results["methods"].items() if "test" in v))
        for m in methods:
            have = [r for r in group if "test" in r.results["methods"].get(m, {})]
            accs = [r.results["methods"][m]["test"]["acc"] for r in have]
            aucs = [r.results["methods"][m]["test"]["auc"] for r in have]
            gaps = [100 * (r.results["methods"][m]["test"]["acc"] - r.results["methods"]["real"]["test"]["acc"])
                    for r in have if m != "real" and "test" in r.results["methods"].get("real", {})]
            rows.append([dataset, m, str(len(have)), _mean_std(accs), _mean_std(aucs),
                         _mean_std(gaps, 2) if gaps else "", _attack_cell(have, m),
                         describe(m, group[0].results["methods"][m])])
    return rows


def _ci(row: dict, key: str) -> str:
    v, ci = row.get(key), row.get(key + "_ci")
    if v is None:
        return "not resolvable"
    return f"{v:.4f} [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else f"{v:.4f}"


def _below_real(row: dict, target: str) -> str:
    """AUC below the teacher's under the same attack; its paired interval where `kr audit` gave
    one, and "not distinguishable" where that interval includes zero."""
    below, ci = row.get("auc_below_real"), row.get("auc_below_real_ci")
    if below is None or target == "real":
        return ""
    if not ci:
        return f"{below:+.4f}"
    return f"{below:+.4f} [{ci[0]:+.4f}, {ci[1]:+.4f}]" + ("" if row.get("auc_below_real_distinguishable")
                                                          else " not distinguishable")


def audit_rows(results: dict) -> list[list[str]]:
    rows = [["experiment", "target", "attack", "refs", "AUC [95 % CI]", "per-target AUC", "TPR @ 1 % FPR [95 % CI]",
             "TPR @ 0.1 % FPR", "AUC below real"]]
    for exp, key in (("1: procedure", "audit"), ("2: shipped model", "audit_shipped")):
        for target, by_attack in (results.get(key) or {}).items():
            for attack, r in merged_attacks(by_attack):
                rows.append([exp, target, attack, str(r["references"]), _ci(r, "auc"), spread(r),
                             _ci(r, "tpr_at_1%fpr"), _ci(r, "tpr_at_0.1%fpr"), _below_real(r, target)])
    return rows


def privacy_points(runs: list[Run]) -> list[dict]:
    points = []
    for r in runs:
        exp, audit = audit_of(r.results)
        for m, v in r.results["methods"].items():
            best = best_attack(audit.get(m, {}))
            if best and "test" in v:
                points.append({"method": m, "auc": best[1]["auc"], "acc": v["test"]["acc"], "run": r.name,
                               "experiment": exp, "epsilon": v.get("epsilon_target", float(m.removeprefix(method_of(m).prefix))) if is_dp(m)
                               else None, "guarantee_holds": v.get("guarantee_holds")})
    return points


def md_escape(text: str, cell: bool = False) -> str:
    """Text as Markdown shows it literally: names from user data (a file name, a label) must
    not become HTML in a Markdown viewer, nor end a table cell."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text.replace("|", "\\|").replace("\n", " ") if cell else text


class Page:
    """Collects the report once and writes it twice: HTML (images inline) and Markdown (beside)."""

    def __init__(self, out: Path):
        self.out, self.html, self.md = out, [], []

    def heading(self, level: int, text: str, anchor: str | None = None) -> None:
        ident = f' id="{anchor}"' if anchor else ""
        self.html.append(f"<h{level}{ident}>{html.escape(text)}</h{level}>")
        self.md.append(f"\n{'#' * level} {md_escape(text)}\n")

    def text(self, text: str) -> None:
        self.html.append(f"<p>{html.escape(text)}</p>")
        self.md.append(md_escape(text) + "\n")

    def table(self, rows: list[list[str]]) -> None:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows[1:])
        self.html.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        self.md.append("| " + " | ".join(md_escape(c, cell=True) for c in rows[0]) + " |\n|" + " --- |" * len(rows[0]))
        self.md += ["| " + " | ".join(md_escape(c, cell=True) for c in r) + " |" for r in rows[1:]]
        self.md.append("")

    def image(self, path: Path | None, caption: str, cls: str = "") -> None:
        """Embed a PNG (copied beside the Markdown under figures/); a missing one is said so."""
        if path is None:
            self.text(f"({caption}: not available in this run directory.)")
            return
        data = path.read_bytes()
        rel = Path("figures") / f"{len(list((self.out / 'figures').glob('*.png'))):02d}-{path.name}"
        if path.resolve().parent != (self.out / "figures").resolve():
            _write(self.out / rel, data)
        else:
            rel = Path("figures") / path.name
        src = "data:image/png;base64," + base64.b64encode(data).decode()
        self.html.append(f'<figure class="{cls}"><img src="{src}" alt="{html.escape(caption)}">'
                         f"<figcaption>{html.escape(caption)}</figcaption></figure>")
        self.md.append(f"![{md_escape(caption).replace('[', '(').replace(']', ')')}]({rel.as_posix()})\n")

    def pre(self, text: str) -> None:
        self.html.append(f"<pre>{html.escape(text)}</pre>")
        self.md.append("```\n" + text.rstrip() + "\n```\n")


def _write(path: Path, data: bytes | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data if isinstance(data, bytes) else data.encode())


CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:.9em}td,th{border:1px solid #ccc;padding:.25em .6em;
text-align:left}th{background:#f3f3f3}img{max-width:100%;border:1px solid #ddd}figure{margin:1em 0}
figcaption{font-size:.85em;color:#555}pre{background:#f7f7f7;padding:.8em;overflow-x:auto;font-size:.8em}
figure.half{display:inline-block;width:48%;vertical-align:top;margin-right:1%}
figure.grid{display:inline-block;width:40%;vertical-align:top;margin-right:2%}
figure.grid img{width:100%;image-rendering:pixelated}figure.wide img{width:90%;image-rendering:pixelated}.warn{background:#fff4e0;border-left:4px solid #e69500;padding:.6em 1em}nav a{margin-right:1em}"""


def _run_sections(page: Page, run: Run, figs: Path, prefix: str, shareable: bool = False) -> None:
    res = run.results
    page.heading(2, f"Which model to release — {run.name}", f"{prefix}release")
    page.text("One sentence per need, from this run's own numbers and audits; a sentence whose numbers "
              "are missing says what to run.")
    for line in advice_lines(res):
        page.text(line)
    points = figures.canary_points(res)
    if points:
        page.image(figures.canary_frontier(points, figs / f"{prefix}canary_frontier.png"),
                   "test accuracy against canary AUC (mislabelled canaries, one canary run), each model with its "
                   "95 % interval over canaries: the students of the teacher's labels beside those that never saw one")
    page.heading(2, f"Membership inference — {run.name}", f"{prefix}audit")
    meta = res.get("audit_meta")
    if meta:
        page.text(f"Experiment 1 (the procedure): {meta['references']} whole runs on halves of the "
                  f"{meta['pool']}-image pool (train ∪ test), each the target in turn; intervals resample "
                  "runs and images; per-target AUC: mean ± sd over the runs as targets. Experiment 2 (the "
                  "shipped model): members = the official train split, non-members = the test split. "
                  "Attacks that coincide share a row (a ≡ b).")
        for attack, why in (meta.get("attacks_skipped") or {}).get("procedure", {}).items():
            page.text(f"Left out: {attack} — {why}.")
    else:
        page.text("Experiment 2 only (the shipped model: members = train split, non-members = test split, "
                  "reference-free attack). Run `kr audit RUN` for experiment 1 and LiRA/RMIA.")
    page.table(audit_rows(res))
    for line in comparison_lines(((meta or {}).get("comparisons") or {}).get("procedure", []), "experiment 1"):
        page.text(line + " (paired over the same runs and images).")
    if res.get("canary"):
        cm = res["canary_meta"]
        source, label = canary_source(cm)
        page.text(f"Canary audit (one run; Steinke, Nasr & Jagielski 2023): {cm['canaries']} canaries {source} "
                  f"({cm['by_kind']['mislabelled']} with {label}, {cm['by_kind']['duplicated']} "
                  f"duplicated ×{cm['copies']}), each included with probability ½ ({cm['included']} were); the "
                  "whole procedure retrained once, with a fresh secret seed, on train ∪ the included canaries; "
                  "each model's score is its confidence in the canary's label, calibrated per canary by the "
                  f"runs that never trained on its image ({len(cm['calibration_runs'])} runs without canaries; "
                  "offline LiRA, fixed variance). ε_lb rejects (ε, δ)-DP for the procedure at 95 % "
                  f"(δ = {cm['delta']:.1e}, Bonferroni over the guess counts), beside the ceiling — the most r "
                  "guesses could prove. A lower bound, never a guarantee, and a small one is no evidence of "
                  "privacy. A DP-SGD model's control ε_lb ≤ ε can fail only where the ceiling exceeds ε, and "
                  "then falsely alarms 5 % of the time.")
        page.table(canary_rows(res))
        for line in comparison_lines(cm.get("comparisons") or [], "canary"):
            page.text(line + " (paired over canaries).")
    page.heading(2, f"Synthetic samples — {run.name}", f"{prefix}samples")
    selected = (res.get("selection") or {}).get("selected")
    classes = run.file("report", "classes.png")
    if shareable:
        copies = ((res.get("memorisation") or {}).get("copies") or {}).get("near_copies")
        if copies == 0 and selected:
            page.image(run.file("generator", "checkpoints", selected, "grid.png"),
                       f"synthetic samples of the selected checkpoint {selected}, one row per class (no near-copy "
                       f"of a train image among the memorisation check's samples)", "grid")
        else:
            page.text("Synthetic samples left out: the memorisation check " + (
                f"found {copies} near-copies of train images" if copies else "did not search for near-copies")
                + ", so they may show a real image.")
    elif classes:
        page.image(classes, f"each class: real training images (left) beside synthetic samples of the "
                            f"selected checkpoint {selected} (right), at the same scale", "wide")
    else:  # runs written before the side-by-side figure
        page.image(run.file("generator", "checkpoints", selected, "grid.png") if selected else None,
                   f"synthetic samples of the selected checkpoint {selected}, one row per class", "grid")
        page.image(run.file("report", "real_grid.png"), "real training images, one row per class", "grid")
    rows = quality_rows(res)
    if rows:
        page.text("Generator quality, per checkpoint, on the validation split, by three judges. "
                  "Downstream: validation ACC of a classifier (the judge's architecture) trained only on "
                  "the checkpoint's samples with their conditioning labels. Judge: agreement (share of "
                  "samples it assigns to their class), per-class precision, recall and Fréchet distance in "
                  "the feature space of the independent judge, a classifier of another architecture and "
                  "seed that no generator or student is trained against. Teacher: agreement of the "
                  "teacher, which a guided generator is trained to satisfy (so it flatters such a "
                  "generator). Student: the short GKD student of checkpoint optimisation (step 3).")
        header = ["checkpoint", "kimg", "downstream val ACC", "judge agreement", "judge precision",
                  "judge recall", "judge FD", "teacher agreement", "student val ACC", "student val AUC"]
        page.table([header] + rows[1:])
    page.heading(2, f"Checkpoint optimisation and tuning — {run.name}", f"{prefix}selection")
    page.image(figures.selection_curves(res, figs / f"{prefix}selection.png"),
               "steps 3–4: short students on each checkpoint and each knob/threshold trial (validation split)")
    if res.get("tuning"):
        t = res["tuning"]
        page.text(f"Selected checkpoint: {selected}; tuned {t['knob']} = {t['knobs'][t['knob']]:g}, "
                  f"filter threshold {t['threshold']:g}.")
    page.heading(2, f"Training curves — {run.name}", f"{prefix}training")
    page.image(figures.training_curves(run.records, figs / f"{prefix}training.png"),
               "teacher and students: validation accuracy and training loss per epoch")
    page.heading(2, f"ROC curves — {run.name}", f"{prefix}roc")
    # `kr audit`'s curves only while results.json carries its audit: a run whose models changed
    # since drops it (its record is no longer current), and its curves are of other models.
    current = bool(res.get("audit_meta"))
    for target in (res.get("audit_shipped") or {}):
        for exp in ("procedure", "shipped"):
            p = run.file("audit", "attacks", "roc", f"{exp}-{target}.png") if current else None
            if p:
                page.image(p, f"{target}: experiment {'1 (procedure)' if exp == 'procedure' else '2 (shipped)'}",
                           "half")
        if not (current and run.file("audit", "attacks", "roc", f"shipped-{target}.png")):
            page.image(run.file("audit", "shipped", f"roc-{target}.png"),
                       f"{target}: experiment 2 (shipped model), reference-free attacks", "half")
    page.heading(2, f"Memorisation check — {run.name}", f"{prefix}memorisation")
    mem = res.get("memorisation")
    if mem:
        page.table([["space", "median d(train)", "median d(held-out)", "median ratio", "min ratio",
                     "closer to train"]] +
                   [[space, _f(m["median_d_member"]), _f(m["median_d_held_out"]), _f(m["median_ratio"]),
                     _f(m["min_ratio"]), _f(m["closer_to_member"])]
                    for space, m in (("pixel", mem["pixel"]), ("teacher features", mem["teacher_features"]))])
        page.text(f"{mem['samples']} synthetic images drawn as the KR student's data; ratio = distance to the "
                  "nearest train image / to the nearest held-out image (≈ 1 when nothing is copied; ≪ 1 is a "
                  "near-copy), on equal-size train and held-out subsets."
                  + (f" Near-copies, searched among all {mem['members_searched']} train images (nearer to one "
                     f"than 99 % of test images come): {mem['copies']['near_copies']}." if mem.get("copies") else ""))
    if shareable:
        page.text("The closest synthetic / real train pairs are left out of this shareable report.")
    else:
        page.image(run.file("audit", "shipped", "closest_pairs.png"),
                   "the closest synthetic (top) / real train (bottom) pairs")
    page.heading(2, f"Config, versions, seeds, timings — {run.name}", f"{prefix}provenance")
    m = run.manifest
    page.table([["item", "value"],
                ["dataset", f"{res['dataset']} ({res.get('task', '')})"],
                ["preset / seed", f"{res['preset']} / {res['seed']}"],
                ["versions", ", ".join(f"{k} {v}" for k, v in m.get("versions", {}).items())],
                *_history_rows(m),
                ["data fingerprint", m.get("dataset", {}).get("fingerprint", "")],
                ["stage seconds", ", ".join(f"{k} {v:.1f}" for k, v in res.get("timings_s", {}).items())]])
    config = run.file("config.yaml")
    page.pre(config.read_text() if config else "(config.yaml missing)")


def _command(argv: list[str] | None) -> str:
    """`kr …` as typed, whether through the `kr` script or `python -m kr`; a library caller's argv as is."""
    if argv is None:
        return "command not recorded"
    if argv and Path(argv[0]).name in ("kr", "__main__.py"):
        return " ".join(["kr", *argv[1:]])
    return " ".join(argv)


def _history_rows(manifest: dict) -> list[list[str]]:
    """When the run was created and by which command, each later command that opened it (the
    last ten), and when this report was written: one stamp per event, never one for two."""
    history = manifest.get("history")
    if history:
        rows = [["run created", f"{history[0]['at']} (`{_command(history[0]['command'])}`)"]]
        rows += [["then", f"{h['at']} (`{_command(h['command'])}`)"] for h in history[1:][-10:]]
    else:  # a run directory from before the history was kept: its last command only
        rows = [["run created", manifest.get("created", "")],
                ["last opened", f"{manifest.get('updated', '')} (`{_command(manifest.get('command', []))}`)"]]
    return rows + [["report written", time.strftime("%Y-%m-%dT%H:%M:%S%z")]]


def write_report(run_paths: list[str | Path], out: str | Path | None = None, shareable: bool = False) -> Path:
    """Write OUT/report.html, OUT/report.md and OUT/figures/; return the HTML path.
    `shareable`: no real image anywhere (default OUT: RUN/report-shareable), said first."""
    runs = [Run(p) for p in run_paths]
    if not runs:
        raise KRError("give at least one run directory")
    out = Path(out) if out is not None else runs[0].path / ("report-shareable" if shareable else "report")
    figs = out / "figures"
    figs.mkdir(parents=True, exist_ok=True)
    for old in figs.glob("*.png"):  # a rebuilt report must not show stale figures
        old.unlink()
    page = Page(out)
    title = ("kr report (shareable: no real images) — " if shareable else "kr report — ") + ", ".join(r.name for r in runs)
    page.heading(1, title)
    notice = SHAREABLE if shareable else SENSITIVE
    page.text(notice)
    page.heading(2, "Results", "results")
    page.text("Test ACC / AUC on the real test split (mean ± std over runs where several are given). "
              "CAS gap = method − real-trained teacher, test ACC, in points. Strongest attack: the "
              "membership-inference attack with the highest AUC on that model — experiment 1 (whole runs "
              "on pool halves) where `kr audit` ran, else experiment 2 (the shipped model, reference-free); "
              "0.5 is guessing.")
    page.table(results_rows(runs))
    page.heading(2, "Privacy–utility", "privacy-utility")
    points = privacy_points(runs)
    page.image(figures.privacy_utility(points, figs / "privacy_utility.png") if points else None,
               "test accuracy against the strongest attack's AUC, one point per method and run")
    for i, run in enumerate(runs):
        _run_sections(page, run, figs, "" if len(runs) == 1 else f"run{i}-", shareable)
    nav = "".join(f'<a href="#{a if len(runs) == 1 or a in ("results", "privacy-utility") else "run0-" + a}">'
                  f"{html.escape(t)}</a>" for a, t in SECTIONS)
    body = "\n".join(page.html)
    body = body.replace(f"<p>{html.escape(notice)}</p>", f'<p class="warn">{html.escape(notice)}</p>'
                        f"<nav>{nav}</nav>", 1)
    doc = (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
           f"<style>{CSS}</style></head><body>\n{body}\n</body></html>\n")
    _write(out / "report.md", "\n".join(page.md).lstrip() + "\n")
    _write(out / "report.html", doc)
    return out / "report.html"

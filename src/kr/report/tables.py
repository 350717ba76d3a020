"""Plain-text views of a run's results: the summary `kr run` prints, and the audit tables."""

from __future__ import annotations

from kr.methods import describe
from kr.report.advice import advice_lines
from kr.privacy.results import canary_source


def _fmt(x) -> str:
    return "  n/a " if x is None or x != x else f"{x:.4f}"


def summary_table(results: dict) -> str:
    """The one-screen summary printed at the end of `kr run`."""
    lines = [f"{results['dataset']} · preset {results['preset']} · seed {results['seed']}",
             f"{'method':<11}{'val acc':>9}{'val auc':>9}{'test acc':>10}{'test auc':>10}   what"]
    for name, m in results["methods"].items():
        if "test" not in m:
            continue
        lines.append(f"{name:<11}{_fmt(m['val']['acc']):>9}{_fmt(m['val']['auc']):>9}"
                     f"{_fmt(m['test']['acc']):>10}{_fmt(m['test']['auc']):>10}   "
                     f"{describe(name, m)}")
    if results.get("cas_gap_pp") is not None:
        lines.append(f"CAS gap (kr − real, test acc): {results['cas_gap_pp']:+.2f} points")
    rows = quality_rows(results)
    if rows:
        kind = results["generator"]["kind"]
        lines.append(f"{kind} generator checkpoints on the validation split — downstream: val acc of a "
                     "classifier trained on the samples alone; j.: the independent judge; t.: the teacher")
        widths = [18, 7, 11, 9, 8, 9, 8, 9, 13, 8]
        for i, row in enumerate(rows):
            cells = [f"{c:<{w}}" if j == 0 else f"{c:>{w}}" for j, (c, w) in enumerate(zip(row, widths))]
            lines.append("  " + "".join(cells) + ("  ← selected" if i and row[0] == _selected(results) else ""))
    tuning = results.get("tuning")
    if tuning:
        knob = tuning["knob"]
        tried = ", ".join(f"{knob}={t['knobs'][knob]:g}/thr={t['threshold']:g}: "
                          f"{t['val']['acc']:.3f}/{t['val']['auc']:.3f}" for t in tuning["trials"])
        lines.append(f"tuning (val acc/auc of short students): {tried}")
        by = f" by val {tuning['metric']}" if "metric" in tuning else ""
        lines.append(f"  chosen{by}: {knob}={tuning['knobs'][knob]:g}, filter threshold {tuning['threshold']:g}")
    if results.get("audit_shipped"):
        lines.append(audit_table(results))
    lines.append("which model to release, from this run's numbers:")
    lines += ["  " + line for line in advice_lines(results)]
    timings = ", ".join(f"{k} {v:.1f}s" for k, v in results.get("timings_s", {}).items())
    lines.append(f"time: {timings}")
    lines.append(f"run directory: {results['run_dir']}")
    return "\n".join(lines)


def _selected(results: dict) -> str | None:
    return (results.get("selection") or {}).get("selected")


def _judged(c: dict) -> dict:
    """A quality row in today's form; runs written before the independent judge kept only the
    teacher's signals, at the top level."""
    if "teacher" in c or "teacher_agreement" not in c:
        return c
    return {**c, "teacher": {"agreement": c["teacher_agreement"], "fd": c["fd"],
                             "precision": c["precision"], "recall": c["recall"]}}


def quality_rows(results: dict) -> list[list[str]]:
    """Per checkpoint: the downstream score (a classifier trained on its samples alone), the
    independent judge's signals, the teacher's agreement, and the short GKD student of
    checkpoint optimisation; all on the validation split.  [] when nothing was judged."""
    quality = (results.get("generator") or {}).get("quality") or {}
    selection = results.get("selection") or {}
    q = {c["name"]: _judged(c) for c in quality.get("checkpoints", [])}
    students = {c["name"]: c for c in selection.get("candidates", [])}
    names = list(students) or list(q)
    if not names:
        return []
    f = lambda d, k, fmt: format(d[k], fmt) if d and k in d else "-"  # noqa: E731
    rows = [["checkpoint", "kimg", "downstream", "j.agree", "j.prec", "j.recall", "j.FD",
             "t.agree", "student acc", "auc"]]
    for n in names:
        c = q.get(n, {})
        down, judge, teacher = c.get("downstream"), c.get("judge"), c.get("teacher")
        kimg = c.get("kimg", students.get(n, {}).get("kimg", float("nan")))
        student = students.get(n, {}).get("val")
        rows.append([n, f"{kimg:.1f}", f(down, "acc", ".4f"), f(judge, "agreement", ".3f"),
                     f(judge, "precision", ".3f"), f(judge, "recall", ".3f"), f(judge, "fd", ".2f"),
                     f(teacher, "agreement", ".3f"), f(student, "acc", ".4f"), f(student, "auc", ".4f")])
    return rows


def _ci(row: dict, key: str) -> str:
    value, ci = row.get(key), row.get(key + "_ci")
    if value is None:
        return "not resolvable"
    return f"{value:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def merged_attacks(by_attack: dict) -> list[tuple[str, dict]]:
    """One row per distinct result: attacks that coincide on a target (same AUC and TPRs, as
    monotone transforms of one signal do) share a row named `a ≡ b`."""
    rows: dict[tuple, list] = {}
    for name, row in by_attack.items():
        key = tuple(None if row.get(k) is None else round(row[k], 12)
                    for k in ("auc", "tpr_at_1%fpr", "tpr_at_0.1%fpr"))
        rows.setdefault(key, [[], row])[0].append(name)
    return [(" ≡ ".join(names), row) for names, row in rows.values()]


def spread(row: dict) -> str:
    """Experiment 1's per-target AUCs: mean ± sd over the runs as targets."""
    if "auc_per_target_mean" not in row:
        return ""
    return f"{row['auc_per_target_mean']:.3f} ± {row['auc_per_target_sd']:.3f}"


def _attack_rows(audit: dict) -> list[str]:
    w = max(len("target"), *map(len, audit)) + 2  # dpsgd-eps0.5 and the like must not run into the attack
    names = [n for by in audit.values() for n, _ in merged_attacks(by)]
    a = max(20, *(len(n) + 2 for n in names))
    lines = [f"  {'target':<{w}}{'attack':<{a}}{'refs':>5}  {'AUC [95% CI]':<24}{'per target':<16}"
             f"{'TPR@1%FPR [95% CI]':<24}{'TPR@0.1%FPR':<16}"]
    for target, by_attack in audit.items():
        for name, row in merged_attacks(by_attack):
            lines.append(f"  {target:<{w}}{name:<{a}}{row['references']:>5}  {_ci(row, 'auc'):<24}{spread(row):<16}"
                         f"{_ci(row, 'tpr_at_1%fpr'):<24}{_ci(row, 'tpr_at_0.1%fpr'):<16}")
    return lines


def canary_rows(results: dict) -> list[list[str]]:
    """The canary audit, one row per model and canary type: canary AUC with its interval over
    canaries, ε_lb beside its ceiling, and for DP-SGD the control "ε_lb ≤ ε" where it can fail."""
    rows = [["model", "canaries", "canary AUC [95 % CI]", "ε_lb (95 %)", "ceiling at r", "guesses r / right v",
             "DP ε: control"]]
    for model, by_kind in (results.get("canary") or {}).items():
        for kind in ("mislabelled", "duplicated"):
            c = by_kind.get(kind)
            if not c:
                continue
            eps = by_kind.get("epsilon") if kind == "mislabelled" else None  # copies: a group, not held to ε
            void = " (seeded noise: does not hold)" if by_kind.get("guarantee_holds") is False else ""
            auc = "n/a" if c["auc"] is None else f"{c['auc']:.3f}"
            if c.get("auc_ci"):
                auc += f" [{c['auc_ci'][0]:.3f}, {c['auc_ci'][1]:.3f}]"
            control = f": {c['control']['reading']}" if c.get("control") else ""
            rows.append([model, f"{kind} ({c['m']})", auc, f"{c['eps_lb']:.2f}", f"{c['ceiling_at_r']:.2f}",
                         f"{c['r']} / {c['v']}", "" if eps is None else f"{eps:.2f}{void}{control}"])
    return rows


def comparison_lines(comparisons: list[dict], what: str) -> list[str]:
    """Each worded comparison as a sentence only where its paired interval excludes zero."""
    lines = []
    for c in comparisons:
        attack = f", {c['attack']}" if c.get("attack") else ""
        if c["ci"] is None:
            lines.append(f"{what} AUC {c['a']} − {c['b']}{attack}: not measurable (every member on one side)")
            continue
        d, (lo, hi) = c["difference"], c["ci"]
        verdict = (f"{c['a'] if d > 0 else c['b']} leaks more" if c["distinguishable"] else "not distinguishable")
        lines.append(f"{what} AUC {c['a']} − {c['b']}{attack}: {d:+.3f} [{lo:+.3f}, {hi:+.3f}] — {verdict}")
    return lines


def audit_table(results: dict) -> str:
    """Membership-inference results: experiment 1 (the procedure, from `kr audit`) first, then
    experiment 2 (the shipped model), then the memorisation check (docs/audit-reference.md)."""
    lines = []
    meta = results.get("audit_meta")
    if results.get("audit"):
        lines.append(f"membership inference, experiment 1 — the procedure: {meta['references']} runs on "
                     f"halves of the {meta['pool']}-image pool (train ∪ test), each the target in turn; "
                     f"intervals over runs and images")
        lines += _attack_rows(results["audit"])
        for exp, why in (meta.get("attacks_skipped") or {}).get("procedure", {}).items():
            lines.append(f"  left out: {exp} ({why})")
        lines += ["  " + x for x in comparison_lines((meta.get("comparisons") or {}).get("procedure", []),
                                                      "paired over runs × images,")]
    else:
        lines.append("membership inference, experiment 1 — the procedure: not run yet "
                     "(`kr audit RUN` trains the reference runs; LiRA and RMIA need them)")
    lines.append("membership inference, experiment 2 — the shipped model: members = official train, "
                 "non-members = official test")
    lines += _attack_rows(results["audit_shipped"])
    if results.get("canary"):
        cm = results["canary_meta"]
        lines.append(f"canary audit (one run, {cm['canaries']} canaries {canary_source(cm)[0]}, {cm['included']} "
                     f"included; δ = {cm['delta']:.1e}; ε_lb at 95 %, Bonferroni over "
                     f"{len(cm['guess_fractions'])} guess counts)")
        rows = canary_rows(results)
        widths = [max(len(r[i]) for r in rows) + 2 for i in range(len(rows[0]))]
        lines += ["  " + "".join(f"{c:<{w}}" for c, w in zip(r, widths)) for r in rows]
        lines += ["  " + x for x in comparison_lines(cm.get("comparisons") or [], "canary")]
    mem = results.get("memorisation")
    if mem:
        p, f = mem["pixel"], mem["teacher_features"]
        lines.append(f"memorisation ({mem['samples']} synthetic images; nearest train / nearest held-out "
                     f"distance, ≈ 1 when nothing is copied): pixel median {p['median_ratio']:.3f} "
                     f"(min {p['min_ratio']:.3f}, closer to train {p['closer_to_member']:.2f}), "
                     f"teacher features median {f['median_ratio']:.3f} (min {f['min_ratio']:.3f})")
        if mem.get("copies"):
            lines.append(f"  near-copies among all {mem['members_searched']} train images (nearer than 99 % of "
                         f"test images come to a train image): {mem['copies']['near_copies']}")
    return "\n".join(lines)

"""Benchmark: one audited run's privacy figures as the Markdown that docs/audit.md quotes.

    python benchmarks/privacy_table.py runs/breastmnist-cpu-s0

Per model: test ACC, experiment 1's strongest attack (AUC with its interval over runs and
images, the per-target spread, TPR at 1 % FPR), the canary AUC with its interval over canaries,
ε_lb beside its ceiling, and a DP model's control; then every worded comparison with its paired
interval and whether it may be stated (kr.report.tables.comparison_lines).  Reads results.json
only: run `kr audit RUN` and `kr audit RUN --canaries M` first.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from kr.privacy.results import best_attack
from kr.report.tables import comparison_lines


def _ci(v: float | None, ci: list | None, scale: float = 1.0, digits: int = 3) -> str:
    if v is None:
        return "—"
    return f"{scale * v:.{digits}f}" + (f" [{scale * ci[0]:.{digits}f}, {scale * ci[1]:.{digits}f}]" if ci else "")


def rows(res: dict) -> list[str]:
    lines = ["| model | test ACC | exp. 1 strongest attack | AUC [95 % CI] | per target | TPR @ 1 % FPR | "
             "canary AUC [95 % CI] | canary ε_lb (ceiling) |", "|" + " --- |" * 8]
    for model, m in res["methods"].items():
        if "test" not in m:
            continue
        best = best_attack((res.get("audit") or {}).get(model, {}))
        name, a = best if best else ("—", {})
        c = ((res.get("canary") or {}).get(model) or {}).get("mislabelled") or {}
        spread = (f"{a['auc_per_target_mean']:.3f} ± {a['auc_per_target_sd']:.3f}"
                  if "auc_per_target_mean" in a else "—")
        bound = f"{c['eps_lb']:.2f} ({c['ceiling_at_r']:.2f})" if c else "—"
        if c.get("control"):
            bound += f"; ε = {c['control']['epsilon']:.2f}: {c['control']['reading']}"
        lines.append(f"| {model} | {m['test']['acc']:.3f} | {name} | {_ci(a.get('auc'), a.get('auc_ci'))} | {spread} | "
                     f"{_ci(a.get('tpr_at_1%fpr'), a.get('tpr_at_1%fpr_ci'), 100, 1)} % | "
                     f"{_ci(c.get('auc'), c.get('auc_ci'))} | {bound} |")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run")
    res = json.loads((Path(p.parse_args().run) / "results.json").read_text())
    print("\n".join(rows(res)))
    meta, cm = res.get("audit_meta") or {}, res.get("canary_meta") or {}
    print()
    for line in comparison_lines((meta.get("comparisons") or {}).get("procedure", []), "experiment 1"):
        print(f"- {line}")
    for line in comparison_lines(cm.get("comparisons") or [], "canary"):
        print(f"- {line}")
    if cm:
        print(f"\ncanaries: {cm['canaries']} ({cm['by_kind']}), {cm['included']} included; calibration runs "
              f"{len(cm['calibration_runs'])} (out-runs per canary {cm['calibration_out_per_canary']}); "
              f"rule {cm['rule_hash'][:12]}")


if __name__ == "__main__":
    main()

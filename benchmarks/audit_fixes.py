"""Benchmark: each fix of the audit (issue 26), one at a time, on one set of reference runs.

    # an audit made by kr before the fixes, kept aside, then today's on the same runs:
    cp -r RUN/audit RUN/audit-before            # (written by kr ≤ 1a67e0e's `kr audit`)
    kr audit RUN --set audit.references=8       # every reference cached: queries and attacks only
    python benchmarks/audit_fixes.py RUN --before RUN/audit-before

Rows, for the teacher (`real`) and `kr`, experiment 1's strongest attack (highest AUC) with its
AUC and TPR at 1 % FPR:

    before        the old audit as it reported itself (image + flip queries on every model,
                  RMIA offline a = 0.3, intervals resampling images only)
    old queries   today's scoring on the old signals with a = 0.3: what the refactoring alone
                  changes (it should change nothing but the intervals)
    + queries     the training augmentations as queries (flip only where trained with flips,
                  the crop shifts), a = 0.3
    + tuned a     RMIA offline's a chosen on each target's paired run (= today's audit)

Intervals of the last three rows resample runs and images together (today's rule).  Rows merge
into benchmarks/results/audit_fixes.json; a Markdown table is printed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from table import _cpu  # noqa: E402  (the CPU's name, as every benchmark records it)

from kr.config import load_config
from kr.privacy.scoring import procedure_scores, summarise

TARGETS = ("real", "kr")


def strongest(by_attack: dict) -> tuple[str, dict]:
    return max(by_attack.items(), key=lambda kv: kv[1]["auc"])


def scored(logits: dict, labels: np.ndarray, matrix: np.ndarray, target: str, config, a: float | None) -> dict:
    runs = sorted((k.split("/")[0] for k in logits if k.endswith(f"/{target}") and k[0] == "r"),
                  key=lambda r: int(r[1:]))
    stacked = np.stack([logits[f"{r}/{target}"] for r in runs])
    proc, _ = procedure_scores(stacked, labels, matrix, rmia_a=a)
    refs = {n: len(runs) - 2 for n in proc}
    return summarise(proc, matrix, refs, config)


def cell(name: str, row: dict, by_attack: dict) -> dict:
    return {"attack": name, "auc": row["auc"], "auc_ci": row.get("auc_ci"),
            "rmia_offline_auc": by_attack.get("rmia-offline", {}).get("auc"),
            "tpr_at_1%fpr": row.get("tpr_at_1%fpr"), "tpr_at_1%fpr_ci": row.get("tpr_at_1%fpr_ci"),
            "auc_per_target_mean": row.get("auc_per_target_mean"), "auc_per_target_sd": row.get("auc_per_target_sd")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run")
    p.add_argument("--before", required=True, help="the audit/ folder written by kr before the fixes")
    p.add_argument("--out", default="benchmarks/results/audit_fixes.json")
    args = p.parse_args()
    run, before = Path(args.run), Path(args.before)
    res = json.loads((run / "results.json").read_text())
    config = load_config(res["preset"], run / "config.yaml", ["audit.bootstrap=1000"])
    with np.load(run / "audit" / "attacks" / "membership.npz") as m:
        matrix, labels = m["membership"][1:], m["labels"]
    with np.load(before / "membership.npz") as m:
        assert (m["membership"][1:] == matrix).all(), "the two audits must use the same reference runs"
    old_doc = json.loads((before / "audit.json").read_text())
    old = dict(np.load(before / "signals.npz"))
    new = dict(np.load(run / "audit" / "attacks" / "signals.npz"))
    rows = {}
    for t in TARGETS:
        steps = {"before": old_doc["procedure"][t],
                 "old queries": scored(old, labels, matrix, t, config, 0.3),
                 "+ queries": scored(new, labels, matrix, t, config, 0.3),
                 "+ tuned a": scored(new, labels, matrix, t, config, None)}
        rows[t] = {step: cell(*strongest(by), by) for step, by in steps.items()}
    meta = json.loads((run / "audit" / "attacks" / "audit.json").read_text())["meta"]
    row = {"run": str(run), "dataset": res["dataset"], "seed": res["seed"], "references": len(matrix),
           "queries": meta["queries"], "cpu": _cpu(), "rows": rows}
    out = Path(args.out)
    kept = json.loads(out.read_text())["runs"] if out.is_file() else []
    kept = [r for r in kept if (r["dataset"], r["seed"], r["references"]) != (row["dataset"], row["seed"],
                                                                                 row["references"])]
    out.write_text(json.dumps({"runs": kept + [row]}, indent=2) + "\n")

    def ci(v, c):
        return "n/r" if v is None else f"{v:.3f}" + (f" [{c[0]:.3f}, {c[1]:.3f}]" if c else "")

    print(f"## {row['dataset']} · seed {row['seed']} · {row['references']} reference runs\n")
    print("| step | target | strongest attack | AUC [95 % CI] | per-target AUC | TPR @ 1 % FPR [95 % CI] "
          "| RMIA offline AUC |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for step in rows[TARGETS[0]]:
        for t in TARGETS:
            c = rows[t][step]
            spread = "" if c["auc_per_target_mean"] is None else \
                f"{c['auc_per_target_mean']:.3f} ± {c['auc_per_target_sd']:.3f}"
            print(f"| {step} | {t} | {c['attack']} | {ci(c['auc'], c['auc_ci'])} | {spread} | "
                  f"{ci(c['tpr_at_1%fpr'], c['tpr_at_1%fpr_ci'])} | {c['rmia_offline_auc']:.3f} |")


if __name__ == "__main__":
    main()

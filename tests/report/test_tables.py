"""The plain-text tables `kr run` and `kr audit` print."""

import re

from kr.report.tables import audit_table, summary_table


def test_summary_lists_every_evaluated_method_with_its_numbers(finished_run):
    _, results, _ = finished_run
    text = summary_table(results)
    for name, m in results["methods"].items():
        row = next(line for line in text.splitlines() if line.startswith(name + " "))
        assert f"{m['test']['acc']:.4f}" in row and f"{m['val']['auc']:.4f}" in row
    assert "DP-SGD scatter-linear, real images, ε = " in text and "CAS gap (kr − real, test acc)" in text


def test_audit_table_keeps_long_target_names_apart_from_the_attack(finished_run):
    _, results, _ = finished_run
    text = audit_table(results)
    assert "experiment 1 — the procedure: not run yet" in text
    rows = [line.split() for line in text.splitlines() if line.startswith("  dpsgd-eps4")]
    assert {r[0] for r in rows} == {"dpsgd-eps4"}  # a column, not "dpsgd-eps4loss"
    assert {r[1] for r in rows} == set(results["audit_shipped"]["dpsgd-eps4"])
    auc = results["audit_shipped"]["kr"]["loss"]["auc"]
    assert re.search(rf"  kr\s+loss\s+0\s+{auc:.3f} \[", text)

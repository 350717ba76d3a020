"""benchmarks/table.py: the rows every published number is written from, and the tables made
from them (RESULTS.md, the README's one result)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def table(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("table", ROOT / "benchmarks" / "table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "TABLE", tmp_path / "table.jsonl")
    monkeypatch.setattr(module, "RESULTS", tmp_path / "RESULTS.md")
    return module


def test_a_run_gives_one_row_per_evaluated_method_with_its_own_numbers(table, finished_run):
    run, results, _ = finished_run
    rows = table.rows_of(run, commit="abc", cpu="test cpu")
    by = {r["method"]: r for r in rows}
    assert set(by) == {m for m, v in results["methods"].items() if "test" in v}
    for method, row in by.items():
        assert row["test_acc"] == results["methods"][method]["test"]["acc"]
        assert row["test_auc"] == results["methods"][method]["test"]["auc"]
        assert (row["dataset"], row["seed"], row["commit"], row["cpu"]) == (results["dataset"], 0, "abc", "test cpu")
    dp = next(r for r in rows if r["method"].startswith("dpsgd"))
    assert dp["epsilon"] == pytest.approx(4, rel=0.01) and dp["delta"] > 0
    assert by["real"]["run_core_hours"] > 0 and by["real"]["audit_core_hours"] == 0  # never audited
    # adding the same run again replaces its rows instead of doubling them
    table.add([run], "abc", "test cpu")
    table.add([run], "def", "test cpu")
    kept = table.read()
    assert len(kept) == len(rows) and {r["commit"] for r in kept} == {"def"}


def _row(dataset, seed, method, acc, **extra):
    return {"dataset": dataset, "seed": seed, "method": method, "test_acc": acc, "test_auc": 0.9,
            "commit": "c", "cpu": "cpu", "run_core_hours": 1.0, **extra}


def test_the_table_computes_gaps_spreads_and_what_is_missing(table):
    rows = [_row("breastmnist", 0, "real", 0.80, eps_lb=1.2, eps_ceiling=3.0), _row("breastmnist", 1, "real", 0.90),
            _row("breastmnist", 0, "kr", 0.78, exp1_auc=0.55, tpr_at_1pct=0.02, references=8,
                 eps_lb=0.5, eps_ceiling=3.0),
            _row("breastmnist", 1, "kr", 0.86, exp1_auc=0.53, tpr_at_1pct=0.01, references=8),
            _row("breastmnist", 0, "dpsgd-eps8", 0.75), _row("breastmnist", 1, "dpsgd-eps8", 0.80)]
    text = table.render(rows, wanted=[("breastmnist", s) for s in (0, 1, 2)])
    kr = next(line for line in text.splitlines() if line.startswith("| breastmnist | kr |"))
    cells = [c.strip() for c in kr.split("|")[1:-1]]
    assert cells[2] == "0, 1"
    assert cells[3] == "0.820 ± 0.057"                      # mean ± sample std of 0.78, 0.86
    assert cells[5] == "-3.0 ± 1.4"                         # per-seed gaps −2 and −4 points
    assert cells[6] == "0.540 ± 0.014" and cells[7] == "1.5 ± 0.7" and cells[8] == "8"
    assert cells[9] == "0.50 (3.00)"
    assert "breastmnist 4.5 ± 2.1 (2 seeds)" in text       # KR − DP-SGD: +3 and +6 points
    assert "**Not measured**: breastmnist seed 2." in text
    assert "breastmnist 2.00 for the runs" in text          # core-hours counted once per run
    line = next(x for x in table.one_result(rows).splitlines() if x.startswith("| breastmnist"))
    assert [c.strip() for c in line.split("|")[1:-1]] == ["breastmnist", "0.800", "0.780", "-2.0", "—",
                                                          "0.750", "0.550 (8)", "0.50 (1.20)"]


def test_rebuilding_results_keeps_the_hand_written_part(table):
    table.RESULTS.write_text("old table\n" + table.MARKER + "\nwhy we fall short\n")
    table.write_results([_row("digits", 0, "real", 0.99), _row("digits", 0, "kr", 0.98)])
    text = table.RESULTS.read_text()
    assert "old table" not in text and text.endswith(table.MARKER + "\nwhy we fall short\n")
    assert "| digits | kr | 0 | 0.980 |" in text
    assert not table.TABLE.exists()  # rendering adds no rows

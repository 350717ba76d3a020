"""benchmarks/table.py: the rows every published number is written from, and the tables made
from them (RESULTS.md, the "which model to release" blocks)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
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
    # KR − DP-SGD: +3 and +6 points, paired over the two seeds (t(1) = 12.71, se 1.5)
    assert "| 0, 1 | +4.5 [-14.6, +23.6], not distinguishable | > 0 |" in text
    assert "**Not measured**: breastmnist seed 2." in text
    assert "breastmnist 2.00 for the runs" in text          # core-hours counted once per run


def test_rebuilding_results_keeps_the_hand_written_part(table):
    table.RESULTS.write_text("old table\n" + table.MARKER + "\nwhy we fall short\n")
    table.write_results([_row("digits", 0, "real", 0.99), _row("digits", 0, "kr", 0.98)])
    text = table.RESULTS.read_text()
    assert "old table" not in text and text.endswith(table.MARKER + "\nwhy we fall short\n")
    assert "| digits | kr | 0 | 0.980 |" in text
    assert not table.TABLE.exists()  # rendering adds no rows


def test_differences_are_paired_over_seeds_with_a_t_interval(table):
    # KR − DP-SGD: +3, +6 and +3 points: mean 4, sd √3, t(2) = 4.303 → half-width 4.303
    rows = [_row("digits", s, m, acc) for s, (kr, dp, real) in enumerate([(0.93, 0.90, 0.94), (0.96, 0.90, 0.97),
                                                                         (0.93, 0.90, 0.935)])
            for m, acc in (("kr", kr), ("dpsgd-eps8", dp), ("real", real))]
    p = table.paired_seeds({r["seed"]: 100 * r["test_acc"] for r in rows if r["method"] == "kr"},
                           {r["seed"]: 100 * r["test_acc"] for r in rows if r["method"] == "dpsgd-eps8"})
    assert p["mean"] == pytest.approx(4.0) and p["ci"] == pytest.approx([4 - 4.3027, 4 + 4.3027], abs=1e-3)
    assert table.said(p["mean"], p["ci"], 1) == "+4.0 [-0.3, +8.3], not distinguishable"
    assert table._verdict(p, 0, above=True) == "met on the mean, not distinguishable"
    text = "\n".join(table.differences(rows))
    assert "| digits | KR − DP-SGD ε = 8, test ACC (pp) | 0, 1, 2 | +4.0 [-0.3, +8.3], not distinguishable | > 0 |" in text
    # KR − teacher: −1, −1, −0.5 points: the mean −0.83 meets ≥ −1 while its interval reaches below
    assert "met on the mean (the interval reaches below -1)" in text
    assert table._verdict({"mean": -2.0, "ci": [-3.0, -1.5]}, -1, above=False) == "missed"
    assert table._verdict({"mean": 2.0, "ci": None}, 0, above=True) == "met on the mean (one seed: no interval)"


def test_the_canary_control_passes_only_where_the_teacher_outscores_the_hard_label_student(table):
    rng = np.random.default_rng(0)
    rows = []
    for seed in range(2):
        bits = (rng.random(200) < 0.5).astype(int).tolist()
        blind = rng.normal(size=200).tolist()
        for method, leak in (("real", 3.0), ("kr", 0.0), ("regen", 0.0)):
            scores = (rng.normal(size=200) + leak * np.array(bits)).tolist() if leak else blind
            rows.append(_row("digits", seed, method, 0.9, canary_scores=scores, canary_bits=bits))
    text = "\n".join(table.differences(rows))
    control = next(x for x in text.splitlines() if "teacher − `regen`, canary AUC" in x)
    assert control.endswith("| > 0 (the control) | passing |")
    kr = next(x for x in text.splitlines() if "KR − `regen`, canary AUC" in x)
    assert "+0.000 [+0.000, +0.000], not distinguishable" in kr  # the same scores: exactly zero
    for r in rows:  # a teacher as blind as the hard-label student: the control fails
        if r["method"] == "real":
            r["canary_scores"] = next(x["canary_scores"] for x in rows if x["method"] == "regen" and x["seed"] == r["seed"])
    assert "failing" in "\n".join(table.differences(rows))


def test_the_published_blocks_are_what_the_table_renders():
    """RESULTS.md's generated part and the "which model" blocks of the README and walkthrough
    equal a fresh rendering of results/table.jsonl: no number there is typed by hand or stale."""
    spec = importlib.util.spec_from_file_location("published_table", ROOT / "benchmarks" / "table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = module.read()
    assert rows, "benchmarks/results/table.jsonl has no rows"
    generated = module.RESULTS.read_text().split(module.MARKER)[0]
    assert generated == module.render(rows, module.WANTED) + "\n"
    release = module.release_block(module.read(module.RELEASE_STUDY))
    for page in module.RELEASE_PAGES:
        block = page.read_text().split(module.RELEASE_BLOCK[0])[1].split(module.RELEASE_BLOCK[1])[0]
        assert block == "\n" + release + "\n", f"{page.name}: rerun `python benchmarks/table.py render`"


def test_no_spread_over_seeds_is_no_interval_not_certainty(table):
    # KR one BreastMNIST test image (0.64 points) above `synthetic` on every seed
    p = table.paired_seeds({0: 80.64, 1: 81.28, 2: 79.36}, {0: 80.0, 1: 80.64, 2: 78.72})
    assert p["ci"] is None and p["why"] == "no spread over seeds"
    assert table._verdict(p, 0, above=True) == "met on the mean (no spread over seeds: no interval)"
    assert table.said(p["mean"], p["ci"], 1, why=p["why"]) == "+0.6 (no spread over seeds: no interval)"


def test_an_upper_bound_target_needs_the_whole_interval_below_it(table):
    assert table._verdict({"mean": 0.51, "ci": [0.50, 0.515]}, 0.52, above=None) == "met"
    assert table._verdict({"mean": 0.51, "ci": [0.49, 0.53]}, 0.52, above=None).startswith("met on the mean")
    assert table._verdict({"mean": 0.53, "ci": [0.52, 0.54]}, 0.52, above=None) == "missed"
    rows = [_row("digits", 0, "kr", 0.9, exp1_auc=0.51, exp1_auc_ci=[0.49, 0.53])]
    text = "\n".join(table.differences(rows))
    assert "| KR's strongest exp. 1 AUC | 0 | 0.510 [0.490, 0.530] | ≤ 0.52 | met on the mean" in text


def _canary_rows(table, leak_teacher, dp_holds=True, seeds=(0, 1)):
    rng = np.random.default_rng(1)
    rows = []
    for seed in seeds:
        bits = (rng.random(150) < 0.5).astype(int).tolist()
        for method, leak, acc in (("real", leak_teacher, 0.95), ("kr", 0.0, 0.93), ("synthetic", 0.0, 0.90),
                                  ("regen", 0.0, 0.91), ("dpsgd-eps8", 0.0, 0.88)):
            row = _row("digits", seed, method, acc, val_acc=acc, val_auc=0.9, test_auc=0.9,
                       canary_scores=(rng.normal(size=150) + leak * np.array(bits)).tolist(), canary_bits=bits)
            if method.startswith("dpsgd"):
                row.update(epsilon=8.0, delta=1e-5, guarantee_holds=dp_holds)
            rows.append(row)
    return rows


def test_the_release_block_applies_the_runs_advice_to_the_means_over_seeds(table):
    table.RESAMPLES = 300  # the verdicts, not the third digit, are tested
    rows = _canary_rows(table, leak_teacher=3.0)
    res = table.as_results(rows + [_row("digits", 2, "kr", 0.5, val_acc=0.5, val_auc=0.5)])
    assert res["seeds"] == [0, 1]  # a seed without every method is left out, not half-averaged
    assert res["methods"]["kr"]["test"]["acc"] == pytest.approx(0.93)
    control = {(c["a"], c["b"]): c for c in res["canary_meta"]["comparisons"]}[("real", "regen")]
    assert control["distinguishable"] and control["difference"] > 0.3
    line = next(x for x in table.release_block(rows).splitlines() if x.startswith("| digits"))
    cells = [c.strip() for c in line.split("|")[1:-1]]
    assert cells[3] == "dpsgd-eps8 (0.880)" and cells[4].startswith("kr (0.930)") and cells[6] == "kr (0.930)"
    # a teacher the audit cannot tell from hard labels: no empirical pick; a DP model whose ε does not hold: none
    blind = table.release_block(_canary_rows(table, leak_teacher=0.0, dp_holds=False))
    cells = [c.strip() for c in next(x for x in blind.splitlines() if x.startswith("| digits")).split("|")[1:-1]]
    assert cells[3].startswith("none:") and cells[4].startswith("none: the canary audit cannot tell")


def test_the_two_studies_share_the_file_and_never_mix(table):
    import json

    table.TABLE.write_text("".join(json.dumps(r) + "\n" for r in [
        _row("digits", 0, "kr", 0.9), _row("digits", 10, "kr", 0.8, study="labels")]))
    assert [r["seed"] for r in table.read()] == [0] and [r["seed"] for r in table.read("labels")] == [10]
    assert len(table.read(None)) == 2


def test_only_the_mislabelled_canaries_reach_the_rows(table, tmp_path):
    (tmp_path / "audit" / "canaries" / "score").mkdir(parents=True)
    (tmp_path / "audit" / "canaries" / "plant").mkdir(parents=True)
    kind = np.array([0, 1, 0, 1, 0])  # 0: mislabelled, 1: duplicated
    np.savez(tmp_path / "audit" / "canaries" / "plant" / "canaries.npz", kind=kind, bits=np.array([1, 1, 0, 0, 1]))
    np.savez(tmp_path / "audit" / "canaries" / "score" / "scores.npz", kr=np.arange(5.0), real=np.ones(5))
    scores, bits = table._canary_scores(tmp_path)
    assert scores == {"kr": [0.0, 2.0, 4.0], "real": [1.0, 1.0, 1.0]} and bits == [1, 0, 1]
    assert table._canary_scores(tmp_path / "nowhere") == ({}, [])


def test_the_quick_start_time_and_summary_are_what_a_fresh_clone_printed():
    """README's command-1 time and docs/run.md's summary are rendered from the record of
    `benchmarks/quickstart.py run` (a fresh clone, timed), not typed by hand."""
    import json

    spec = importlib.util.spec_from_file_location("quickstart", ROOT / "benchmarks" / "quickstart.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    record = json.loads(module.RESULTS.read_text())
    assert record["printed"].startswith("digits · preset cpu · seed 0")
    for page, marks, text in ((module.PAGES["readme"], module.README_BLOCK, module.time_text(record)),
                              (module.PAGES["run"], module.SUMMARY_BLOCK, module.summary_text(record))):
        block = page.read_text().split(marks[0])[1].split(marks[1])[0]
        assert block == "\n" + text + "\n", f"{page.name}: rerun `python benchmarks/quickstart.py render`"


def test_a_row_names_the_commits_that_computed_its_run_not_todays(table, tmp_path):
    import json

    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps({"stages": {
        "teacher": {"source": "aaa1111"}, "generator": {"source": "aaa1111"}, "audit": {"source": "bbb2222"}}}))
    assert table._stage_commits(run) == "aaa1111, bbb2222"
    (run / "manifest.json").write_text(json.dumps({"stages": {"teacher": {"key": "k"}, "audit": {"source": "bbb2222"}}}))
    assert table._stage_commits(run) == "bbb2222, unrecorded"  # resumed by a newer kr: not all its work
    (run / "manifest.json").write_text(json.dumps({"stages": {"teacher": {"key": "k"}}}))  # older kr
    assert table._stage_commits(run) == table._commit()


def test_an_audit_that_is_a_stage_of_the_run_is_counted_once_as_the_audits(table, tmp_path):
    import json

    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps({"threads": 2, "stages": {}}))
    res = {"timings_s": {"teacher": 1800.0, "audit/shipped": 1800.0, "audit/references/r0": 3600.0,
                         "audit/attacks": 1800.0, "audit/canaries/run": 1800.0, "evaluate": None}}
    assert table._hours(run, res, extra=[run]) == (2.0, 4.0)  # its reference run's folder not again

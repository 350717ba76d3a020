import torch

from kr.config import load_config
from kr.generators import build_generator
from kr.selection import _best, default_knobs


def row(name, acc, auc):
    return {"name": name, "val": {"acc": acc, "auc": auc}}


def test_best_is_by_accuracy_then_auc_and_ties_keep_the_earlier_candidate():
    rows = [row("a", 0.7, 0.6), row("b", 0.8, 0.5), row("c", 0.8, 0.9), row("d", 0.8, 0.9)]
    assert _best(rows, "acc")["name"] == "c"
    assert _best(rows, "auc")["name"] == "c"
    assert _best([row("x", 0.5, 0.5), row("y", 0.5, 0.5)], "acc")["name"] == "x"


def test_nan_auc_never_wins_a_tie():
    assert _best([row("a", 0.7, float("nan")), row("b", 0.7, 0.6)], "acc")["name"] == "b"


def test_acc_plus_auc_weighs_both_and_ties_go_to_accuracy():
    # one validation image more (ACC +0.013) does not outweigh an AUC 0.09 lower
    rows = [row("sigma-1", 0.7692, 0.8705), row("sigma-1.5", 0.7821, 0.7794)]
    assert _best(rows, "acc")["name"] == "sigma-1.5"
    assert _best(rows, "acc+auc")["name"] == "sigma-1"
    assert _best([row("a", 0.7, 0.8), row("b", 0.8, 0.7)], "acc+auc")["name"] == "b"
    assert _best([row("a", 0.7, float("nan")), row("b", 0.5, 0.6)], "acc+auc")["name"] == "b"


def test_short_students_are_capped_in_images_not_only_epochs():
    select = load_config("cpu").select
    assert select.student_epochs(546) == 20        # BreastMNIST: 20 epochs, 10.9 k images
    assert select.student_epochs(1257) == 9        # digits: capped at 12 k images
    assert select.student_epochs(4708) == 2        # PneumoniaMNIST
    assert select.student_epochs(10 ** 6) == 1     # never zero
    assert load_config("cpu", overrides=["select.max_kimg=0"]).select.student_epochs(4708) == 20


def test_each_backend_tunes_its_own_knob_from_its_config():
    from kr.generators import BACKENDS

    for kind, knob in {"gan": "sigma", "diffusion": "guidance"}.items():
        assert BACKENDS[kind].tuned_knob == knob
        gen = build_generator(load_config("tiny", overrides=[f"generator.kind={kind}"]).generator, 1, 28, 2)
        assert knob in gen.knobs
        assert default_knobs(gen) == {knob: {"sigma": 1.0, "guidance": 2.0}[knob]}
        gen.sample(torch.tensor([0, 1]), 0, **default_knobs(gen))  # accepted by the backend


def test_an_interrupted_tuning_stage_resumes_from_its_finished_candidates(finished_run, tmp_path, monkeypatch):
    import shutil

    from kr import selection
    from kr.artifacts import read_json
    from kr.audit import load_run

    run, results, small = finished_run
    config, data, _ = load_run(run)
    trials = sorted((run / "tuning" / "trials").glob("*.json"))
    assert trials and len(list((run / "selection" / "trials").glob("*.json"))) == len(
        results["selection"]["candidates"])
    folder = tmp_path / "tuning"
    shutil.copytree(run / "tuning", folder)
    checkpoint = run / "generator" / "checkpoints" / results["tuning"]["checkpoint"]
    chosen = next(c for c in results["selection"]["candidates"] if c["name"] == results["selection"]["selected"])
    args = (data, config, checkpoint, results["generator"]["kind"], run / "teacher", torch.device("cpu"))

    calls = []
    real_student = selection.train_student
    monkeypatch.setattr(selection, "train_student", lambda *a, **k: calls.append(k) or real_student(*a, **k))
    again = selection.tune(*args, selected=chosen, folder=folder)
    assert calls == [] and again == results["tuning"]  # every candidate finished: nothing retrained

    lost = trials[-1].name
    (folder / "trials" / lost).unlink()  # as if the run stopped during that candidate
    resumed = selection.tune(*args, selected=chosen, folder=folder)
    assert len(calls) == 1 and calls[0]["folder"].name == lost[:-5]
    strip = lambda t: [{k: v for k, v in row.items() if k != "seconds"} for row in t["trials"]]  # noqa: E731
    assert strip(resumed) == strip(results["tuning"])  # same seeds: the same student again
    assert read_json(folder / "trials" / lost)["val"] == read_json(trials[-1])["val"]

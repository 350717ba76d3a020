import torch

from kr.selection import TUNED_KNOB, _best, default_knobs
from kr.generators import build_generator
from kr.config import load_config


def row(name, acc, auc):
    return {"name": name, "val": {"acc": acc, "auc": auc}}


def test_best_is_by_accuracy_then_auc_and_ties_keep_the_earlier_candidate():
    rows = [row("a", 0.7, 0.6), row("b", 0.8, 0.5), row("c", 0.8, 0.9), row("d", 0.8, 0.9)]
    assert _best(rows, "acc")["name"] == "c"
    assert _best(rows, "auc")["name"] == "c"
    assert _best([row("x", 0.5, 0.5), row("y", 0.5, 0.5)], "acc")["name"] == "x"


def test_nan_auc_never_wins_a_tie():
    assert _best([row("a", 0.7, float("nan")), row("b", 0.7, 0.6)], "acc")["name"] == "b"


def test_each_backend_tunes_its_own_knob_from_its_config():
    for kind, knob in TUNED_KNOB.items():
        gen = build_generator(load_config("tiny", overrides=[f"generator.kind={kind}"]).generator, 1, 28, 2)
        assert knob in gen.knobs
        assert default_knobs(gen) == {knob: {"sigma": 1.0, "guidance": 2.0}[knob]}
        gen.sample(torch.tensor([0, 1]), 0, **default_knobs(gen))  # accepted by the backend

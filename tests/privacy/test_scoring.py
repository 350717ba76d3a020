"""Which paired comparisons an audit states (kr.privacy.scoring.comparison_pairs)."""

from kr.privacy.scoring import comparison_pairs


def test_every_teacher_labelled_model_and_the_teacher_are_compared_with_each_hard_label_student():
    models = ["real", "kr", "synthetic", "regen", "kr-top1", "kr-dp", "dpsgd-eps8"]
    pairs = comparison_pairs(models)
    assert pairs[0] == ("kr", "real")
    hard, taught = ("synthetic", "regen"), ("real", "kr", "kr-top1", "kr-dp")
    assert set(pairs[1:-1]) == {(a, h) for a in taught for h in hard}
    assert pairs[-1] == ("kr", "dpsgd-eps8")
    assert len(pairs) == len(set(pairs))
    # hard-label students are never compared with each other, nor DP-SGD with them
    assert not any(a in hard or a.startswith("dpsgd") for a, b in pairs if b in hard)
    assert comparison_pairs(["real", "kr"]) == [("kr", "real")]

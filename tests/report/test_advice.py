"""Which model to release (kr.report.advice): each sentence's choice, from hand-made results
with known answers, and what it says when a number it needs is missing."""

from kr.report.advice import advice_lines, release_advice


def _m(val, test, **kw):
    return {"val": {"acc": val, "auc": val}, "test": {"acc": test, "auc": test}, **kw}


def _c(a, b, d, lo, hi):
    return {"a": a, "b": b, "difference": d, "ci": [lo, hi], "distinguishable": lo > 0 or hi < 0}


def _results(canary=True, control=(0.20, 0.10, 0.30), top1=(0.02, -0.05, 0.09), dp_holds=True):
    methods = {"real": _m(0.95, 0.90), "kr": _m(0.90, 0.87), "kr-top1": _m(0.88, 0.86),
               "synthetic": _m(0.85, 0.89),
               "dpsgd-eps1": _m(0.80, 0.80, epsilon=1.0, delta=1e-5, guarantee_holds=dp_holds),
               "dpsgd-eps8": _m(0.86, 0.86, epsilon=7.99, delta=1e-5, guarantee_holds=dp_holds)}
    out = {"methods": methods}
    if canary:
        out["canary"] = {m: {"mislabelled": {"auc": 0.6, "auc_ci": [0.5, 0.7]}} for m in methods}
        out["canary_meta"] = {"comparisons": [_c("real", "synthetic", *control), _c("kr", "synthetic", 0.12, 0.03, 0.2),
                                              _c("kr-top1", "synthetic", *top1)]}
    return out


def test_formal_is_the_dp_model_whose_epsilon_holds():
    a = release_advice(_results())["formal"]
    assert a["model"] == "dpsgd-eps8" and "dpsgd-eps1 (ε = 1.00" in a["text"] and "ε = 7.99" in a["text"]
    assert release_advice(_results(dp_holds=False))["formal"]["model"] is None
    assert "seeded" in release_advice(_results(dp_holds=False))["formal"]["text"]
    none = {"methods": {k: v for k, v in _results()["methods"].items() if not k.startswith("dpsgd")}}
    assert release_advice(none)["formal"]["model"] is None and "--methods" in release_advice(none)["formal"]["text"]


def test_empirical_is_the_most_accurate_student_not_distinguishable_from_the_hard_label_ones():
    a = release_advice(_results())["empirical"]
    # kr leaks more than `synthetic` (interval above 0): out, though more accurate; kr-top1 is not
    # distinguishable and more accurate on validation than synthetic
    assert a["model"] == "kr-top1" and "+0.020 [-0.050, +0.090]" in a["text"].replace("−", "-")
    # kr-top1 distinguishable too: only the hard-label student itself is left
    assert release_advice(_results(top1=(0.1, 0.02, 0.2)))["empirical"]["model"] == "synthetic"
    # the teacher's control: below an interval that includes 0, the audit cannot vouch for anyone
    blind = release_advice(_results(control=(0.05, -0.02, 0.12)))["empirical"]
    assert blind["model"] is None and "cannot tell" in blind["text"]
    missing = release_advice(_results(canary=False))["empirical"]
    assert missing["model"] is None and "--canaries" in missing["text"]


def test_accuracy_chooses_on_validation_never_the_teacher():
    a = release_advice(_results())["accuracy"]
    # the teacher is the most accurate and `synthetic` the best on test: neither is chosen
    assert a["model"] == "kr" and "val ACC 0.900" in a["text"]
    assert "more than a hard-label student" in a["text"]
    assert "not measured" in release_advice(_results(canary=False))["accuracy"]["text"]
    lines = advice_lines(_results())
    assert len(lines) == 4 and lines[-1].startswith("The teacher (real): never")

"""The report's figures: the privacy–utility plot draws DP-SGD as one curve over ε."""

from kr.report import figures


def _points():
    dp = [{"method": f"dpsgd-eps{e:g}", "epsilon": e, "auc": 0.5 + e / 100, "acc": 0.5 + e / 20}
          for e in (8.0, 1.0, 4.0)]
    return [{"method": "kr", "epsilon": None, "auc": 0.52, "acc": 0.95}, *dp]


def test_dp_points_form_one_curve_in_epsilon_order_and_nothing_else_joins_it():
    curves = figures.dp_curves(_points())
    assert list(curves) == [("", "procedure")]
    assert [p["epsilon"] for p in curves[("", "procedure")]] == [1.0, 4.0, 8.0]
    shipped = [{**p, "experiment": "shipped"} for p in _points()]
    assert set(figures.dp_curves(_points() + shipped)) == {("", "procedure"), ("", "shipped")}


def test_privacy_utility_draws_every_point_labelled(tmp_path):
    """KR as a point where its (AUC, ACC) are, DP-SGD as one line through its models in ε order,
    each labelled with its ε, the chance line at 0.5, both axes named; the PNG is not blank."""
    import matplotlib.image as mpimg
    import numpy as np

    fig = figures.privacy_utility_figure(_points())
    ax = fig.axes[0]
    offsets = np.vstack([c.get_offsets() for c in ax.collections])
    assert [0.52, 0.95] in offsets.tolist()
    lines = {tuple(line.get_xdata()): line for line in ax.get_lines()}
    assert (0.51, 0.54, 0.58) in lines and list(lines[(0.51, 0.54, 0.58)].get_ydata()) == [0.55, 0.7, 0.9]
    assert (0.5, 0.5) in lines  # the guessing line
    assert sorted(t.get_text() for t in ax.texts) == ["ε=1", "ε=4", "ε=8"]
    assert sorted(t.get_text() for t in ax.get_legend().get_texts()) == ["DP-SGD (ε)", "kr"]
    assert "AUC" in ax.get_xlabel() and "accuracy" in ax.get_ylabel()
    path = figures.privacy_utility(_points(), tmp_path / "pu.png")
    img = mpimg.imread(path)
    assert img.shape[:2] == (460, 640) and img[..., :3].std() > 0.05


def test_a_seeded_dp_model_is_labelled_as_not_holding_its_epsilon():
    points = [{**p, "guarantee_holds": p["epsilon"] != 4.0} if p["epsilon"] else p for p in _points()]
    ax = figures.privacy_utility_figure(points).axes[0]
    assert sorted(t.get_text() for t in ax.texts) == ["ε=1", "ε=4 (does not hold: seeded noise)", "ε=8"]


def test_canary_frontier_puts_each_audited_model_at_its_auc_and_accuracy(tmp_path):
    import matplotlib.image as mpimg

    results = {"methods": {"kr": {"test": {"acc": 0.9}}, "regen": {"test": {"acc": 0.8}}, "real": {"val": {}}},
               "canary": {"kr": {"mislabelled": {"auc": 0.7, "auc_ci": [0.6, 0.8]}},
                          "regen": {"mislabelled": {"auc": 0.52, "auc_ci": None}},
                          "real": {"mislabelled": {"auc": 0.9}}}}  # the teacher: no test figure, no point
    points = figures.canary_points(results)
    assert [(p["method"], p["auc"], p["acc"]) for p in points] == [("kr", 0.7, 0.9), ("regen", 0.52, 0.8)]
    path = figures.canary_frontier(points, tmp_path / "f.png")
    assert mpimg.imread(path).std() > 0.01  # drawn, not blank

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


def test_privacy_utility_png(tmp_path):
    path = figures.privacy_utility(_points(), tmp_path / "pu.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000

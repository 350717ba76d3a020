import pytest
import torch
from torch import nn

from kr.synthetic import SyntheticSource, class_quotas, filtered_sample, resolve_mode
from tests.toys import toy_generator


def test_quotas_follow_the_prior_and_sum_to_the_set_size():
    labels = torch.tensor([0] * 70 + [1] * 30)
    assert class_quotas(labels, 2, 1.0, "train") == [70, 30]
    assert class_quotas(labels, 2, 0.5, "train") == [35, 15]
    assert class_quotas(labels, 2, 1.0, "balanced") == [50, 50]
    q = class_quotas(torch.tensor([0, 1, 2] * 7 + [0]), 3, 1.0, "train")  # 22 images: remainders
    assert sum(q) == 22 and q == [8, 7, 7]
    assert class_quotas(labels, 3, 0.01, "train")[2] == 0 and sum(class_quotas(labels, 3, 0.01, "train")) == 3


def test_auto_strategy_regenerates_every_epoch_except_for_diffusion():
    from kr.generators import BACKENDS

    assert resolve_mode("auto", BACKENDS["gan"]) == "every-epoch"
    assert resolve_mode("auto", BACKENDS["diffusion"]) == "pool"
    assert resolve_mode("every-epoch", BACKENDS["diffusion"]) == "every-epoch"


def test_regenerated_sets_differ_between_epochs_and_repeat_for_the_same_seed():
    gen = toy_generator()
    a = SyntheticSource(gen, [5, 4, 3], seed=1, mode="every-epoch")
    b = SyntheticSource(gen, [5, 4, 3], seed=1, mode="every-epoch")
    e0, e1 = a(0), a(1)
    assert len(e0) == 12 and torch.bincount(e0.labels).tolist() == [5, 4, 3]
    assert not torch.equal(e0.images, e1.images)
    assert torch.equal(e0.labels, e1.labels)          # same class counts every epoch
    assert torch.equal(b(1).images, e1.images)         # resume/replay: epoch 1 alone, same set
    assert not torch.equal(SyntheticSource(gen, [5, 4, 3], seed=2, mode="every-epoch")(0).images,
                           e0.images)


def test_fixed_set_never_changes():
    src = SyntheticSource(toy_generator(), [4, 4, 4], seed=0, mode="fixed")
    assert torch.equal(src(0).images, src(7).images)
    assert src.images_generated == 12


def test_pool_draws_fresh_subsets_and_refreshes_on_schedule():
    gen = toy_generator()
    src = SyntheticSource(gen, [4, 4, 4], seed=0, mode="pool", pool_factor=3, pool_refresh=2)
    e0, e1, e2 = src(0), src(1), src(2)
    pool0 = SyntheticSource(gen, [12, 12, 12], seed=0, mode="fixed")  # not the same seed path
    assert torch.bincount(e0.labels).tolist() == [4, 4, 4]
    assert not torch.equal(e0.images, e1.images)
    # epochs 0 and 1 come from one pool of 36 images; epoch 2 from a new one
    assert src.images_generated == 72 and len(src.filter_stats) == 2
    assert pool0.images_generated == 0
    replay = SyntheticSource(gen, [4, 4, 4], seed=0, mode="pool", pool_factor=3, pool_refresh=2)
    assert torch.equal(replay(2).images, e2.images)


class CornerTeacher(nn.Module):
    """Class 0 when the top-left 4×4 corner (inside class 0's square only) is brighter than
    `cut`: a known rule, so which samples pass the filter is known."""

    def __init__(self, cut: float):
        super().__init__()
        self.w, self.cut = nn.Parameter(torch.tensor(20.0)), cut

    def forward(self, x):
        m = self.w * (x[:, :, :4, :4].mean((1, 2, 3)) - self.cut)
        return torch.stack([m, -m], 1)


def _corner_median(gen) -> float:
    x = gen.sample(torch.zeros(200, dtype=torch.long), 123, sigma=2.0)
    return x[:, :, :4, :4].mean((1, 2, 3)).median().item()


def test_dynamic_sample_filtering_keeps_only_confident_samples():
    gen = toy_generator(classes=2)
    teacher = CornerTeacher(_corner_median(gen))  # about half of class 0 fails, class 1 passes
    x, y, stats = filtered_sample(gen, [20, 20], seed=0, knobs={"sigma": 2.0}, threshold=0.5,
                                  teacher=teacher, max_rounds=50)
    assert torch.bincount(y).tolist() == [20, 20]
    p = torch.softmax(teacher(x), 1)[torch.arange(40), y]
    assert (p >= 0.5).all()
    assert 0.5 < stats["acceptance"] < 0.95 and stats["relaxed"] == 0
    unfiltered, _, s0 = filtered_sample(gen, [20, 20], 0, {"sigma": 2.0}, 0.0, teacher)
    assert s0["acceptance"] == 1.0
    assert (torch.softmax(teacher(unfiltered), 1)[torch.arange(40), y] < 0.5).any()


def test_filtering_gives_up_gracefully_and_reports_it(caplog):
    gen = toy_generator(classes=2)
    x, y, stats = filtered_sample(gen, [5, 5], 0, {}, threshold=0.99999,
                                  teacher=CornerTeacher(_corner_median(gen)),
                                  max_rounds=2)
    assert torch.bincount(y).tolist() == [5, 5] and stats["relaxed"] > 0
    assert "did not reach threshold" in caplog.text


def test_unknown_mode_is_rejected():
    with pytest.raises(ValueError):
        SyntheticSource(toy_generator(), [1], 0, mode="sometimes")


def test_sources_with_one_tag_share_sets_drawn_with_the_same_thread_count(monkeypatch):
    import kr.synthetic

    monkeypatch.setattr(kr.synthetic, "_SHARED", {})
    gen = toy_generator()
    drawn = []
    real = kr.synthetic.filtered_sample
    monkeypatch.setattr(kr.synthetic, "filtered_sample", lambda *a, **k: drawn.append(1) or real(*a, **k))
    threads = torch.get_num_threads()
    try:
        first = SyntheticSource(gen, [3, 2, 2], seed=1, mode="every-epoch", tag="t")(0)
        again = SyntheticSource(gen, [3, 2, 2], seed=1, mode="every-epoch", tag="t")(0)
        assert len(drawn) == 1 and torch.equal(first.images, again.images)  # shared, not redrawn
        SyntheticSource(gen, [3, 2, 2], seed=1, mode="every-epoch", tag="other")(0)
        assert len(drawn) == 2  # another generator and teacher: drawn anew
        torch.set_num_threads(1 if threads > 1 else 2)
        SyntheticSource(gen, [3, 2, 2], seed=1, mode="every-epoch", tag="t")(0)
        assert len(drawn) == 3  # another thread count sums floats in another order: drawn anew
    finally:
        torch.set_num_threads(threads)

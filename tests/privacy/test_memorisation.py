"""Memorisation check: exact copies of train images must show, independent samples must not."""

import numpy as np
import torch

from kr.models import build_model
from kr.privacy.memorisation import compare
from kr.shipped_audit import memorisation
from tests.toys import toy_dataset, toy_split


def test_copies_of_members_have_ratio_zero_and_fresh_samples_ratio_near_one():
    members, held_out = toy_split(200, seed=1).images, toy_split(200, seed=2).images
    fresh = toy_split(100, seed=3).images
    c = compare(torch.cat([members[:5], fresh]), members, held_out)
    assert np.allclose(c["d_member"][:5], 0) and (c["ratio"][:5] < 1e-6).all()
    assert (c["nearest_member"][:5] == np.arange(5)).all()
    assert 0.9 < np.median(c["ratio"][5:]) < 1.1


def test_memorisation_report_and_closest_pairs_grid(tmp_path):
    data = toy_dataset((30, 20, 30))  # as many train as test images: every member is compared
    teacher = build_model("resnet8", 1, 3, width=4)
    fake = torch.cat([data.train.images[:3], toy_split(20, seed=7).images])
    out = memorisation(data, fake, teacher, seed=0, folder=tmp_path, pairs=4)
    assert out["members_compared"] == out["held_out_compared"] == 30  # same-size reference sets
    # the three copies are the closest pairs, at distance 0, pointing back at their train index
    for pair in out["closest_pairs"][:3]:
        assert pair["pixel_distance"] == 0 and pair["train_index"] == pair["synthetic"] < 3
    assert out["pixel"]["ratio_below_0.5"] >= 3 and out["pixel"]["min_ratio"] == 0
    assert out["copies"]["near_copies"] == 3 and out["members_searched"] == 30
    assert (tmp_path / "closest_pairs.png").is_file() and (tmp_path / "memorisation.npz").is_file()
    assert set(out["teacher_features"]) == set(out["pixel"])


def test_a_copy_outside_the_ratio_subsample_is_found(tmp_path):
    """Every member is searched for copies, not only the equal-size subsample of the ratio: a
    copy of a train image the subsample left out is the closest pair, at distance 0."""
    from kr.seeding import derive_seed, make_generator

    data = toy_dataset((120, 20, 30))  # the ratio compares 30 of the 120 members
    g = make_generator(derive_seed(0, "memorisation"))
    left_out = sorted(set(range(120)) - set(torch.randperm(120, generator=g)[:30].tolist()))[0]
    fake = torch.cat([toy_split(20, seed=7).images, data.train.images[left_out:left_out + 1]])
    out = memorisation(data, fake, build_model("resnet8", 1, 3, width=4), seed=0, folder=tmp_path, pairs=2)
    assert out["members_compared"] == 30 and out["members_searched"] == 120
    assert out["closest_pairs"][0] == {"synthetic": 20, "train_index": left_out, "pixel_distance": 0.0}
    assert out["copies"]["near_copies"] >= 1

"""Reference runs: complementary halves, pool subsets, and their configs."""

import numpy as np
import pytest

from kr.config import load_config
from kr.privacy import references
from tests.toys import toy_dataset


def test_complementary_halves_cover_each_point_exactly_half_the_runs():
    labels = np.array([0] * 7 + [1] * 12 + [2] * 4)
    m = references.complementary_halves(labels, 6, seed=3)
    assert m.shape == (6, 23)
    assert (m.sum(0) == 3).all()                  # a member of exactly half the runs
    assert (m[0] == ~m[1]).all() and (m[2] == ~m[3]).all()
    for row in m:                                 # stratified: each class split in half (± 1)
        for c, n in ((0, 7), (1, 12), (2, 4)):
            assert abs(row[labels == c].sum() - n / 2) <= 0.5
    assert not (m[0] == m[2]).all()               # pairs are different halves
    assert (m == references.complementary_halves(labels, 6, seed=3)).all()
    assert not (m == references.complementary_halves(labels, 6, seed=4)).all()
    with pytest.raises(ValueError):
        references.complementary_halves(labels, 3, seed=0)


def test_subset_trains_on_members_and_tests_on_the_rest():
    data = toy_dataset((20, 10, 8))
    pool = references.pool(data)
    assert len(pool) == 28 and references.shipped_members(data).sum() == 20
    members = np.zeros(28, bool)
    members[[0, 3, 21, 27]] = True
    sub = references.subset(data, members, 0)
    assert len(sub.train) == 4 and len(sub.test) == 24
    assert (sub.train.images[2] == data.test.images[1]).all()
    assert (sub.val.images == data.val.images).all()      # validation is never in the pool
    assert sub.fingerprint != data.fingerprint
    assert sub.fingerprint != references.subset(data, ~members, 1).fingerprint


def test_reference_config_changes_only_the_seed_and_needs_enough_runs():
    config = load_config("tiny")
    ref = references.reference_config(config, 2)
    assert ref.seed != config.seed and ref.seed != references.reference_config(config, 3).seed
    assert {**ref.to_dict(), "seed": 0} == {**config.to_dict(), "seed": 0}
    from kr.errors import ConfigError
    with pytest.raises(ConfigError, match="even number ≥ 4"):
        load_config("tiny", overrides=["audit.references=2"])

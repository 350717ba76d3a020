"""The canary audit's data: canaries from the test split, a wrong label for the main type, copies
for the stress type, included by independent secret bits; the canary run's data built from them."""

import numpy as np
import pytest

from kr.canaries import plant, planted, with_canaries
from kr.errors import KRError
from tests.toys import toy_dataset


def test_plant_draws_from_the_test_split_and_leaves_a_tenth_of_it():
    data = toy_dataset((60, 30, 40))
    c = plant(data, 20, 0.25, entropy=1)
    assert len(set(c.index)) == 20 and c.index.max() < 40 and c.kind.sum() == 5
    own = data.test.labels.numpy()[c.index]
    assert (c.label[c.kind == 0] != own[c.kind == 0]).all() and (c.label[c.kind == 1] == own[c.kind == 1]).all()
    assert 0 < c.bits.sum() < 20
    with pytest.raises(KRError, match="choose 2 … 36"):
        plant(data, 37, 0.25)
    with pytest.raises(KRError, match="leaves 1 mislabelled"):  # the bound rests on the mislabelled ones
        plant(data, 2, 0.5)
    a, b = plant(data, 20, 0.25), plant(data, 20, 0.25)  # secret entropy: independent draws
    assert not ((a.index == b.index).all() and (a.bits == b.bits).all())


def test_the_canary_run_trains_on_the_included_ones_and_tests_on_the_rest(tmp_path):
    data = toy_dataset((60, 30, 40))
    c = planted(tmp_path / "canaries.npz", data, 20, 0.25)
    again = planted(tmp_path / "canaries.npz", data, 20, 0.25)  # a resumed audit reuses them
    assert (again.bits == c.bits).all() and (again.index == c.index).all()
    d = with_canaries(data, c, copies=4)
    main, dup = (c.bits & (c.kind == 0)).sum(), (c.bits & (c.kind == 1)).sum()
    assert len(d.train) == 60 + main + 4 * dup and len(d.test) == 20 and len(d.val) == 30
    assert d.fingerprint != data.fingerprint
    added = d.train.labels[60:].numpy()
    assert sorted(added.tolist()) == sorted(np.concatenate([c.label[c.bits & (c.kind == 0)],
                                                            np.repeat(c.label[c.bits & (c.kind == 1)], 4)]).tolist())
    flipped = with_canaries(data, plant(data, 20, 0.25, entropy=2), copies=4)
    assert flipped.fingerprint != d.fingerprint

"""The canary audit's data: canaries from the test split, a wrong label for the main type, copies
for the stress type, included by independent secret bits; the canary run's data built from them."""

import numpy as np
import pytest

from kr.canaries import calibrated, plant, with_canaries
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


def test_the_canary_run_trains_on_the_included_ones_and_tests_on_the_rest():
    data = toy_dataset((60, 30, 40))
    c = plant(data, 20, 0.25, entropy=3)
    d = with_canaries(data, c, copies=4)
    main, dup = (c.bits & (c.kind == 0)).sum(), (c.bits & (c.kind == 1)).sum()
    assert len(d.train) == 60 + main + 4 * dup and len(d.test) == 20 and len(d.val) == 30
    assert d.fingerprint != data.fingerprint
    added = d.train.labels[60:].numpy()
    assert sorted(added.tolist()) == sorted(np.concatenate([c.label[c.bits & (c.kind == 0)],
                                                            np.repeat(c.label[c.bits & (c.kind == 1)], 4)]).tolist())
    flipped = with_canaries(data, plant(data, 20, 0.25, entropy=2), copies=4)
    assert flipped.fingerprint != d.fingerprint


def test_the_canary_run_gets_a_fresh_seed_of_its_own():
    data = toy_dataset((60, 30, 40))
    assert plant(data, 20, 0.25, entropy=1).seed == plant(data, 20, 0.25, entropy=1).seed
    assert len({plant(data, 20, 0.25).seed for _ in range(4)}) == 4  # secret: never the run's seed


def test_calibration_by_hand():
    """Offline LiRA, fixed variance: minus each canary's mean over its out-runs, over the pooled sd."""
    phi_canary = np.array([3.0, 0.0])
    runs = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 9.0]])
    out = np.array([[True, True], [True, True], [False, True]])
    # means 2 and 5; residuals (-1, 1) and (-3, -1, 4): sd = sqrt((1 + 1 + 9 + 1 + 16) / (5 - 2))
    sd = np.sqrt(28 / 3)
    assert np.allclose(calibrated(phi_canary, runs, out), [(3 - 2) / sd, (0 - 5) / sd])
    # one out-run each: no variance to pool, the plain difference
    assert np.allclose(calibrated(phi_canary, runs[:1], out[:1]), [2.0, -2.0])
    with pytest.raises(KRError, match="no calibration run"):
        calibrated(phi_canary, runs[2:], out[2:])


def test_a_run_that_trained_on_the_canary_image_changes_nothing():
    rng = np.random.default_rng(0)
    phi_canary, runs = rng.normal(size=30), rng.normal(size=(5, 30))
    out = rng.random((5, 30)) < 0.6
    out[0] = True  # the shipped run never saw a test image
    planted_in = np.where(out, runs, 1e6)  # a reference that trained on the image: anything at all
    assert np.array_equal(calibrated(phi_canary, runs, out), calibrated(phi_canary, planted_in, out))


def test_out_runs_follow_each_reference_runs_membership():
    from kr.canaries import out_runs
    from kr.config import load_config
    from kr.privacy.references import membership

    data = toy_dataset((60, 30, 40))
    config = load_config("tiny")  # 4 references
    index = np.arange(0, 40, 3)
    runs = [".", "audit/references/r0/run", "audit/references/r3/run"]
    out = out_runs(config, data, runs, index)
    matrix = membership(config, data)
    assert out[0].all()  # the shipped run never trained on a test image
    assert np.array_equal(out[1], ~matrix[0, 60 + index]) and np.array_equal(out[2], ~matrix[3, 60 + index])
    # a run index beyond audit.references (trained under a larger setting) still has its row
    assert out_runs(config, data, [".", "audit/references/r5/run"], index).shape == (2, len(index))


def test_noise_canaries_are_images_no_run_ever_saw_with_random_labels():
    """Source "noise": M images of uniform pixel noise in the data's range, each with a random
    label, as many as asked; the canary run's test split keeps every image; every run without
    canaries is an out-run for every one of them."""
    import torch

    from kr.canaries import out_runs
    from kr.config import load_config

    data = toy_dataset((60, 30, 40))
    c = plant(data, 200, 0.25, entropy=5, source="noise")  # more than the test split holds
    assert c.images.shape == (200, data.channels, data.size, data.size)
    assert c.images.min() >= -1 and c.images.max() <= 1 and c.images.std() > 0.5
    assert set(c.label.tolist()) == set(range(data.n_classes))
    d = with_canaries(data, c, copies=4)
    main, dup = (c.bits & (c.kind == 0)).sum(), (c.bits & (c.kind == 1)).sum()
    assert len(d.train) == 60 + main + 4 * dup and len(d.test) == 40
    first = np.flatnonzero(c.bits & (c.kind == 0))[0]
    assert torch.equal(d.train.images[60], torch.from_numpy(c.images[first]))
    assert torch.equal(c.pictures(data), torch.from_numpy(c.images))
    config = load_config("tiny")
    assert out_runs(config, data, [".", "audit/references/r0/run"], c.index, "noise").all()
    with pytest.raises(KRError, match="choose 2 … 36.*canary_source=noise"):
        plant(data, 37, 0.25)


def test_sizing_is_plants_limit_and_its_ceiling():
    from kr.canaries import sizing
    from kr.privacy import canary

    data = toy_dataset()
    c = sizing(len(data.train), len(data.test), 0.25)
    plant(data, c["canaries"], 0.25)  # the most plant accepts …
    with pytest.raises(KRError, match="choose 2"):
        plant(data, c["canaries"] + 1, 0.25)  # … and one more is refused
    breast = sizing(546, 156, 0.25)
    assert breast["canaries"] == 140 and breast["delta"] == 1e-5
    # 105 mislabelled canaries (a quarter are duplicates), the widest guess count r = 104 all right,
    # at 0.05 over the grid's five guess counts
    assert breast["ceiling"] == pytest.approx(canary.ceiling(105, 104, 1e-5, 0.01))
    assert sizing(4708, 624, 0.25)["ceiling"] > breast["ceiling"]  # more canaries, a higher ceiling

"""Reference runs: the whole `kr run` procedure replayed on random halves of the pool.

The procedure-level game of docs/audit-reference.md (experiment 1, after LiRA and ML Privacy Meter):
the pool P is the official train ∪ test split (validation stays outside: every run uses it for
its own selection and tuning).  Runs come in complementary pairs — one on a random half S of P,
one on P \\ S — so every image is a member of exactly half of the runs and no run is special.
A reference is the same stage code with the same config as the target, only on another subset
and seed; anything cheaper would weaken the attack and flatter the privacy claim.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging

import numpy as np
import torch

from kr.config import Config
from kr.data import ImageDataset, Split
from kr.seeding import derive_seed

log = logging.getLogger(__name__)


def pool(data: ImageDataset) -> Split:
    """P = train ∪ test, in that order (the first len(train) points are the shipped run's members)."""
    return Split(torch.cat([data.train.images, data.test.images]),
                 torch.cat([data.train.labels, data.test.labels]))


def shipped_members(data: ImageDataset) -> np.ndarray:
    """Which pool points trained the run the user ships (experiment 2's ground truth)."""
    return np.arange(len(data.train) + len(data.test)) < len(data.train)


def complementary_halves(labels: np.ndarray, runs: int, seed: int) -> np.ndarray:
    """Membership matrix (runs × points): row 2r is a class-stratified random half, row 2r+1 the rest.

    Stratifying keeps every run's class balance that of the pool, so class priors do not differ
    between runs (a difference an attack could exploit that has nothing to do with membership)."""
    if runs < 2 or runs % 2:
        raise ValueError(f"runs must be an even number ≥ 2, got {runs}")
    labels = np.asarray(labels)
    matrix = np.zeros((runs, len(labels)), dtype=bool)
    for pair in range(runs // 2):
        rng = np.random.default_rng(derive_seed(seed, "audit-halves", pair))
        half = np.zeros(len(labels), dtype=bool)
        for c in np.unique(labels):
            idx = rng.permutation(np.flatnonzero(labels == c))
            # odd class sizes: the extra point goes to either side at random
            half[idx[: len(idx) // 2 + (len(idx) % 2) * int(rng.integers(2))]] = True
        matrix[2 * pair], matrix[2 * pair + 1] = half, ~half
    return matrix


def subset(data: ImageDataset, members: np.ndarray, index: int) -> ImageDataset:
    """A dataset whose train split is the pool's members and whose test split the rest.

    The fingerprint (part of every stage key) names the subset, so reference runs cache and
    resume like any run and never mix with each other."""
    p, members = pool(data), torch.as_tensor(members, dtype=torch.bool)
    digest = hashlib.sha256(data.fingerprint.encode() + np.packbits(members.numpy()).tobytes())
    return dataclasses.replace(
        data, train=Split(p.images[members], p.labels[members]),
        test=Split(p.images[~members], p.labels[~members]),
        source=f"{data.source} (audit pool subset {index})",
        fingerprint=f"subset:{digest.hexdigest()[:16]}")


def membership(config: Config, data: ImageDataset) -> np.ndarray:
    labels = pool(data).labels.numpy()
    if labels.ndim != 1:
        raise ValueError("the audit needs single-label data (multi-label tasks are not supported)")
    return complementary_halves(labels, config.audit.references, config.seed)


def reference_config(config: Config, index: int) -> Config:
    """The target's config with its own seed: references differ in data and randomness only."""
    return dataclasses.replace(config, seed=derive_seed(config.seed, "audit-reference", index))

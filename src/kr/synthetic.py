"""The synthetic training sets of GKD: how many images of each class, which seeds, which knobs,
which samples survive filtering, and whether the set is regenerated each epoch.

    source = SyntheticSource(gen, quotas, seed, mode="every-epoch", knobs={"sigma": 1.5},
                             threshold=0.3, teacher=teacher)
    split = source(epoch)            # a Split of synthetic images and their conditioning labels

Every set is a pure function of (seed, epoch): an interrupted student replays the same
images on resume, and two runs with the same seed see the same sets.  Noise is drawn in
blocks of 64 seeded by (seed, epoch, block), so each sample's seed is fixed by
(seed, epoch, index) (see `ConditionalGenerator.sample`).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from kr.data import Split
from kr.generators import ConditionalGenerator
from kr.seeding import derive_seed, make_generator
from kr.train import predict_proba

log = logging.getLogger(__name__)

MODES = ("every-epoch", "pool", "fixed")


def class_quotas(train_labels: torch.Tensor, n_classes: int, size_factor: float,
                 prior: str) -> list[int]:
    """Images per class in one epoch's set: `size_factor` × the real train size, split by the
    real train prior (largest remainders) or evenly.  Deterministic, so every epoch matches."""
    total = max(n_classes, round(size_factor * len(train_labels)))
    if prior == "balanced":
        weights = np.full(n_classes, 1.0 / n_classes)
    else:
        counts = np.bincount(train_labels.numpy(), minlength=n_classes).astype(float)
        weights = counts / counts.sum()
    raw = weights * total
    quotas = np.floor(raw).astype(int)
    for c in np.argsort(-(raw - quotas), kind="stable")[: total - quotas.sum()]:
        quotas[c] += 1
    return [int(q) for q in quotas]


def resolve_mode(strategy: str, gen: ConditionalGenerator) -> str:
    """`auto`: what the backend prefers — the paper's every-epoch regeneration, or a pool for
    a backend too slow to sample a set every epoch (diffusion on CPU)."""
    return gen.strategy if strategy == "auto" else strategy


@torch.no_grad()
def filtered_sample(gen: ConditionalGenerator, quotas: list[int], seed: int,
                    knobs: dict[str, Any], threshold: float, teacher: torch.nn.Module | None,
                    max_rounds: int = 20) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Dynamic Sample Filtering (GaFi): keep a sample only if the teacher gives its
    conditioning class probability ≥ `threshold`, sampling again until each class quota is
    full.  After `max_rounds` the best-scored rejects fill what is left, and the shortfall is
    reported rather than looping forever on a class the generator cannot draw convincingly."""
    need = torch.tensor(quotas)
    labels = torch.arange(len(quotas)).repeat_interleave(need)
    if threshold <= 0 or teacher is None:
        return gen.sample(labels, seed, **knobs), labels, {"rounds": 1, "acceptance": 1.0, "relaxed": 0}
    kept_x, kept_y, rejects, drawn = [], [], [], 0
    for r in range(max_rounds):
        missing = need - torch.bincount(torch.cat(kept_y), minlength=len(quotas)) if kept_y else need
        if missing.sum() == 0:
            break
        # Oversample by the acceptance seen so far, so a round usually suffices.
        rate = max(0.25, sum(len(y) for y in kept_y) / drawn) if drawn else 1.0
        ask = torch.ceil(missing.float() / rate).long()
        cand_y = torch.arange(len(quotas)).repeat_interleave(ask)
        cand_x = gen.sample(cand_y, derive_seed(seed, "filter", r), **knobs)
        drawn += len(cand_y)
        p = torch.from_numpy(predict_proba(teacher, cand_x, False)).float()
        p_own = p[torch.arange(len(cand_y)), cand_y]
        for c in range(len(quotas)):
            idx = torch.nonzero((cand_y == c) & (p_own >= threshold)).flatten()[: int(missing[c])]
            kept_x.append(cand_x[idx])
            kept_y.append(cand_y[idx])
            bad = torch.nonzero((cand_y == c) & (p_own < threshold)).flatten()
            rejects.append((cand_x[bad], cand_y[bad], p_own[bad]))
    accepted = sum(len(y) for y in kept_y)
    missing = need - torch.bincount(torch.cat(kept_y), minlength=len(quotas))
    relaxed = int(missing.sum())
    if relaxed:
        rx = torch.cat([r[0] for r in rejects])
        ry = torch.cat([r[1] for r in rejects])
        rp = torch.cat([r[2] for r in rejects])
        for c in range(len(quotas)):
            idx = torch.nonzero(ry == c).flatten()
            idx = idx[torch.argsort(rp[idx], descending=True, stable=True)][: int(missing[c])]
            kept_x.append(rx[idx])
            kept_y.append(ry[idx])
        log.warning("sample filtering: %d of %d images did not reach threshold %.2f in %d rounds; "
                    "the best-scored rejects fill them", relaxed, int(need.sum()), threshold, max_rounds)
    x, y = torch.cat(kept_x), torch.cat(kept_y)
    order = torch.argsort(y, stable=True)  # class-major, like the unfiltered set
    stats = {"rounds": r + 1, "acceptance": round(accepted / max(drawn, 1), 4), "relaxed": relaxed}
    return x[order], y[order], stats


# Recent sets, shared between sources with the same tag, seed and settings: the kr and regen
# students draw the same sets, synthetic and soft the same fixed set, and diffusion sampling
# is the slow part on CPU.  Bounded in memory, oldest evicted first.
_SHARED: dict[tuple, tuple[torch.Tensor, torch.Tensor, dict]] = {}
_SHARED_BYTES = 512 * 2**20


class SyntheticSource:
    """Epoch → Split of synthetic images.

    every-epoch: a new set each epoch (paper Sec. 3, "regenerated every epoch");
    pool:        a pool of `pool_factor` × the set, refreshed every `pool_refresh` epochs
                 (0 = never), from which each epoch draws a fresh class-stratified subset;
    fixed:       one set for all epochs (the conventional synthetic-data baseline).
    """

    def __init__(self, gen: ConditionalGenerator, quotas: list[int], seed: int, mode: str,
                 knobs: dict[str, Any] | None = None, threshold: float = 0.0,
                 teacher: torch.nn.Module | None = None, pool_factor: float = 4.0,
                 pool_refresh: int = 0, max_rounds: int = 20, tag: str | None = None):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.gen, self.quotas, self.seed, self.mode = gen, quotas, seed, mode
        self.knobs, self.threshold, self.teacher = dict(knobs or {}), threshold, teacher
        self.pool_factor, self.pool_refresh, self.max_rounds = pool_factor, pool_refresh, max_rounds
        self.tag = tag  # names generator + teacher: sources with the same tag may share sets
        self._cache: tuple[Any, tuple[torch.Tensor, torch.Tensor]] | None = None
        self.filter_stats: list[dict] = []
        self.images_generated = 0

    def _draw(self, key: Any, quotas: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        if self._cache is None or self._cache[0] != key:
            # the thread count too: floats summed in another order are other images
            shared = (self.tag, self.seed, key, tuple(quotas), tuple(sorted(self.knobs.items())),
                      self.threshold, torch.get_num_threads()) if self.tag is not None else None
            if shared is not None and shared in _SHARED:
                x, y, stats = _SHARED[shared]
            else:
                x, y, stats = filtered_sample(self.gen, quotas, derive_seed(self.seed, *key),
                                              self.knobs, self.threshold, self.teacher, self.max_rounds)
                if shared is not None:
                    _SHARED[shared] = (x, y, stats)
                    while sum(v[0].nbytes for v in _SHARED.values()) > _SHARED_BYTES:
                        _SHARED.pop(next(iter(_SHARED)))  # oldest first
            self.images_generated += len(y)  # counted even when shared: what this source used
            self.filter_stats.append({"set": list(key), **stats})
            self._cache = (key, (x, y))
        return self._cache[1]

    def __call__(self, epoch: int) -> Split:
        if self.mode == "fixed":
            x, y = self._draw(("fixed",), self.quotas)
        elif self.mode == "every-epoch":
            x, y = self._draw(("epoch", epoch), self.quotas)
        else:
            pool_id = epoch // self.pool_refresh if self.pool_refresh else 0
            big = [max(q, round(q * self.pool_factor)) for q in self.quotas]
            px, py = self._draw(("pool", pool_id), big)
            g = make_generator(derive_seed(self.seed, "subset", epoch))
            idx = torch.cat([torch.nonzero(py == c).flatten()[torch.randperm(int(n), generator=g)[:q]]
                             for c, (n, q) in enumerate(zip(big, self.quotas))])
            x, y = px[idx], py[idx]
        return Split(x, y)

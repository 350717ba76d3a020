"""`kr audit RUN --canaries M`: the one-run canary audit (Steinke, Nasr & Jagielski 2023), an
empirical lower bound on ε for every model a run ships, on DP-SGD's scale.

    plant     M canaries from the official test split (images the shipped run never trained
              on): most with a wrong label (the main type), a quarter (audit.canary_stress)
              duplicated audit.canary_copies times with their own label (a stress type,
              reported apart); each included with probability ½, drawn from the OS's CSPRNG
              (nothing derives them from the run's seed), the bits kept only in
              audit/canaries/canaries.npz, written before training so a resumed audit reuses them
    train     the whole procedure once, with the run's config and seed, on train ∪ the included
              canaries (audit/canaries/run: a run directory, cached and resumable like any)
    score     each model's logit-scaled confidence in the canary's label, averaged over its
              training augmentations, minus its mean over the runs without canaries (the shipped
              run, and experiment 1's reference runs where `kr audit` trained them): a calibration
              of each canary's difficulty
    bound     ε_lb at 95 % beside its ceiling for that M and number of guesses, and each
              model's canary AUC (kr.privacy.canary); results.json gains "canary", under the
              run's lock

The canary run evaluates on the test split less the canaries; its figures are for context,
never the run's.  See docs/audit.md for the test and docs/audit.md for its use.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import secrets
from pathlib import Path

import numpy as np
import torch

from kr import pipeline
from kr.artifacts import write_json, write_npz
from kr.audit import load_run, reference_stages, write_results
from kr.config import Config
from kr.data import ImageDataset, Split
from kr.dpsgd import dp_delta
from kr.errors import KRError
from kr.methods import folder as model_folder
from kr.methods import is_dp, training_augmentation
from kr.models import load_classifier
from kr.privacy import canary, signals
from kr.privacy.results import canary_fields
from kr.rundir import evaluated_key, verify
from kr.seeding import derive_seed
from kr.train import resolve_device

log = logging.getLogger(__name__)
KINDS = ("mislabelled", "duplicated")


@dataclasses.dataclass(frozen=True)
class Canaries:
    index: np.ndarray   # test-split index of each canary's image
    label: np.ndarray   # the label it is trained with: a wrong one (mislabelled) or its own
    kind: np.ndarray    # 0 = mislabelled, 1 = duplicated (KINDS)
    bits: np.ndarray    # included in training: the secret the audit guesses


def plant(data: ImageDataset, m: int, stress: float, entropy: int | None = None) -> Canaries:
    """M canaries from the test split, a fraction `stress` of them duplicates, each included
    with probability ½; drawn from `entropy` (default: 128 secret bits)."""
    if data.multi_label:
        raise KRError("the canary audit supports single-label tasks only")
    n_test = len(data.test)
    most = int(0.9 * n_test)  # a tenth of test stays for the canary run's own evaluation
    if not 2 <= m <= most:
        raise KRError(f"--canaries {m}: choose 2 … {most}; canaries are drawn from the test split "
                      f"({n_test} images, which the shipped run never trained on), and a tenth of it "
                      f"stays to evaluate the canary run")
    if m - round(stress * m) < 2:  # the ε bound rests on the mislabelled canaries alone
        raise KRError(f"--canaries {m} with audit.canary_stress={stress} leaves {m - round(stress * m)} mislabelled "
                      "canaries: the bound needs at least 2; plant more canaries or lower audit.canary_stress")
    rng = np.random.default_rng(secrets.randbits(128) if entropy is None else entropy)
    index = rng.choice(n_test, m, replace=False)
    kind = (np.arange(m) < round(stress * m)).astype(np.int64)
    own = data.test.labels[index].numpy()
    wrong = (own + rng.integers(1, data.n_classes, m)) % data.n_classes
    label = np.where(kind == 1, own, wrong)
    bits = rng.random(m) < 0.5
    return Canaries(index, label, kind, bits)


def planted(path: Path, data: ImageDataset, m: int, stress: float) -> Canaries:
    """The canaries of an earlier (perhaps interrupted) audit with the same M and stress
    fraction, else new ones, saved before anything trains on them."""
    if path.is_file():
        with np.load(path) as f:
            old = Canaries(f["index"], f["label"], f["kind"], f["bits"].astype(bool))
        if len(old.index) == m and int(old.kind.sum()) == round(stress * m):
            return old
        log.info("canary audit: %s holds %d canaries; planting %d anew", path, len(old.index), m)
    c = plant(data, m, stress)
    write_npz(path, index=c.index, label=c.label, kind=c.kind, bits=c.bits)
    return c


def with_canaries(data: ImageDataset, c: Canaries, copies: int) -> ImageDataset:
    """The run's data with the included canaries added to train (duplicates `copies` times) and
    every canary's image taken out of test."""
    main, dup = c.bits & (c.kind == 0), c.bits & (c.kind == 1)
    pick = np.concatenate([c.index[main], np.repeat(c.index[dup], copies)])
    labels = np.concatenate([c.label[main], np.repeat(c.label[dup], copies)])
    keep = np.setdiff1d(np.arange(len(data.test)), c.index)
    digest = hashlib.sha256(data.fingerprint.encode())
    for part in (c.index, c.label, c.kind, c.bits.astype(np.int64), np.array([copies])):
        digest.update(np.ascontiguousarray(part, dtype=np.int64).tobytes())
    return dataclasses.replace(
        data, train=Split(torch.cat([data.train.images, data.test.images[pick]]),
                          torch.cat([data.train.labels, torch.as_tensor(labels, dtype=torch.long)])),
        test=Split(data.test.images[keep], data.test.labels[keep]),
        source=f"{data.source} (+ {len(pick)} canary images)", fingerprint=f"canaries:{digest.hexdigest()[:16]}")


def references_without_canaries(run_dir: Path) -> list[Path]:
    """Runs of the same procedure that never saw a canary: the shipped run, and experiment 1's
    reference runs where they exist (on pool halves: some saw a canary's image with its own label,
    never with the canary's; which did is independent of the bits, so the test stays valid, and
    averaging over them calibrates each canary's difficulty far better than one run does)."""
    refs = sorted((run_dir / "audit" / "references").glob("r*"), key=lambda p: int(p.name[1:]))
    return [run_dir, *(r for r in refs if (r / "results.json").is_file())]


def canary_audit(run_dir: str | Path, m: int, overrides=(), data_dir: str | None = None, device: str = "auto",
                 executor=None, wait: bool = False) -> dict:
    run_dir = Path(run_dir)
    config, data, results = load_run(run_dir, overrides, data_dir)
    methods = config.audit.target_methods(results["methods"])
    folder = run_dir / "audit" / "canaries"
    c = planted(folder / "canaries.npz", data, m, config.audit.canary_stress)
    canary_data = with_canaries(data, c, config.audit.canary_copies)
    log.info("canary audit: %d canaries (%d included), the whole procedure once → %s", m, int(c.bits.sum()),
             folder / "run")
    trained = pipeline.run(config, out=folder / "run", device=device, stages=reference_stages(methods),
                           data=canary_data, executor=executor)
    dev = resolve_device(device)
    return write_results(run_dir, wait, lambda results: {**results, **canary_fields(
        _score(run_dir, folder, config, data, canary_data, c, methods, trained, dev))})


def _score(run_dir: Path, folder: Path, config: Config, data: ImageDataset, canary_data: ImageDataset,
           c: Canaries, methods: tuple[str, ...], trained: dict, dev) -> dict:
    images, labels = data.test.images[c.index], c.label
    delta = dp_delta(config.dpsgd.delta, len(canary_data.train))
    models, raw = {}, {}
    refs = references_without_canaries(run_dir)
    for mth in methods:
        qs = signals.queries(*training_augmentation(config, data, mth))

        def phi(run: Path) -> np.ndarray:
            verify(model_folder(run, mth))
            logits = signals.query(load_classifier(model_folder(run, mth)).to(dev), images, qs)
            return signals.logit_confidence(logits, labels).mean(-1)

        have = [r for r in refs if (model_folder(r, mth) / "stage.json").is_file()]
        scores = phi(folder / "run") - np.mean([phi(r) for r in have], axis=0)
        raw[mth] = scores
        row = {k: canary.audit(scores[c.kind == i], c.bits[c.kind == i], delta,
                               seed=derive_seed(config.seed, "canary-ties"))
               for i, k in enumerate(KINDS) if (c.kind == i).sum() >= 2}
        entry = trained["methods"].get(mth, {})
        if is_dp(mth):
            # what the mislabelled canaries' bound is held to; a duplicated canary is a group of
            # `copies` images, which DP protects only at (k·ε, k·e^{(k−1)ε}·δ): not held to ε
            row["epsilon"] = entry.get("epsilon")
            # seeded noise: the canary run and its calibration replay one noise stream, which the
            # difference cancels; such a model's ε does not hold, and neither does this control
            row["guarantee_holds"] = entry.get("guarantee_holds")
        row["canary_run_test"] = entry.get("test")
        models[mth] = row
    write_npz(folder / "scores.npz", **raw)
    meta = {"evaluate_key": evaluated_key(run_dir), "canaries": len(c.index),
            "by_kind": {k: int((c.kind == i).sum()) for i, k in enumerate(KINDS)},
            "included": int(c.bits.sum()), "copies": config.audit.canary_copies, "delta": delta,
            "source": "the official test split (never trained on by the shipped run)",
            "calibration": "minus the mean over the runs without canaries (the shipped run and the reference "
                           "runs of experiment 1, where `kr audit` trained them) of the same method's score",
            "calibration_runs": [str(r) for r in refs],
            "queries": {m: signals.names(signals.queries(*training_augmentation(config, data, m))) for m in methods},
            "canary_run": str(folder / "run"), "canary_run_train": len(canary_data.train),
            "level": canary.LEVEL, "guess_fractions": list(canary.GUESS_FRACTIONS)}
    doc = {"meta": meta, "models": models}
    write_json(folder / "canary.json", doc)
    for mth, row in models.items():
        main = row.get("mislabelled") or row.get("duplicated")
        log.info("canary audit %s: ε_lb %.2f (ceiling %.2f, r = %d, v = %d), canary AUC %s", mth, main["eps_lb"],
                 main["ceiling_at_r"], main["r"], main["v"], "n/a" if main["auc"] is None else f"{main['auc']:.3f}")
    return doc

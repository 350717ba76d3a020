"""`kr audit RUN --canaries M`: the one-run canary audit (Steinke, Nasr & Jagielski 2023), an
empirical lower bound on ε for every model a run ships, on DP-SGD's scale.

    plant     M canaries from the official test split (images the shipped run never trained
              on): most with a wrong label (the main type), a fraction (audit.canary_stress)
              duplicated audit.canary_copies times with their own label (a stress type,
              reported apart); each included with probability ½, and the canary run's seed,
              drawn from the OS's CSPRNG; written to audit/canaries/canaries.npz before anything
              trains, together with the scoring rule and its hash
    rule      fixed before the bits exist (docs/canary-audit.md): the calibration runs and their models'
              content hashes, which of them saw each canary's image, the statistic, the guess
              grid, M, the stress fraction and copies, the queries and the scorer's source code.
              Scoring under any other rule is refused: scoring the same bits again under a rule
              chosen after seeing results spends the 95 % level.  `--replant`: fresh bits and a
              fresh canary run
    train     the whole procedure once, with the run's config and the fresh secret seed (the
              procedure as a user would retrain it), on train ∪ the included canaries
    score     offline LiRA with a fixed variance, per canary: the canary run's logit-scaled
              confidence in the canary's label, averaged over its training augmentations, minus
              its mean over the calibration runs that never trained on that image (the shipped
              run; experiment 1's reference runs where the image was out of their half), over the
              pooled standard deviation of those runs about their means
    bound     ε_lb at 95 % beside its ceiling, each model's canary AUC with its interval over
              canaries, and paired differences of canary AUC between models (kr.privacy.canary)

The canary run evaluates on the test split less the canaries; its figures are for context,
never the run's.  See docs/canary-audit.md.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import logging
import secrets
from pathlib import Path

import numpy as np
import torch

from kr.artifacts import write_json, write_npz
from kr.audit import replay_config
from kr.config import Config
from kr.data import ImageDataset, Split
from kr.dpsgd import dp_delta
from kr.errors import KRError
from kr.methods import folder as model_folder
from kr.methods import is_dp, training_augmentation
from kr.privacy import canary, metrics, signals
from kr.privacy.references import complementary_halves, pool
from kr.privacy.scoring import comparison_pairs
from kr.rundir import load_verified
from kr.seeding import derive_seed

log = logging.getLogger(__name__)
KINDS = ("mislabelled", "duplicated")
STATISTIC = ("offline LiRA, fixed variance: per canary, (φ(canary run) − mean φ over the calibration runs that "
             "never trained on its image) / the pooled sd of those runs about their means; φ = logit-scaled "
             "confidence in the canary's label, averaged over the model's training augmentations")


@dataclasses.dataclass(frozen=True)
class Canaries:
    index: np.ndarray   # test-split index of each canary's image (source "test"), else 0 … M − 1
    label: np.ndarray   # the label it is trained with: a wrong one (mislabelled) or its own
    kind: np.ndarray    # 0 = mislabelled, 1 = duplicated (KINDS)
    bits: np.ndarray    # included in training: the secret the audit guesses
    seed: int = 0       # the canary run's root seed: fresh and secret, like the bits
    rule: str = ""      # the scoring rule fixed when they were planted (JSON), and its hash
    rule_hash: str = ""
    images: np.ndarray | None = None  # source "noise": the canaries' own images (M × C × H × W)

    def pictures(self, data: ImageDataset) -> torch.Tensor:
        """The canaries' images, as the models are queried on them."""
        return data.test.images[self.index] if self.images is None else torch.from_numpy(self.images)


def plant(data: ImageDataset, m: int, stress: float, entropy: int | None = None, source: str = "test") -> Canaries:
    """M canaries, a fraction `stress` of them duplicates, each included with probability ½, and
    the canary run's seed; drawn from `entropy` (default: 128 secret bits).  Source "test":
    images of the test split (which the shipped run never trained on), the main type with a
    wrong label; source "noise": images of uniform pixel noise, each with a random label (the
    most atypical records there are: what a model memorises most readily)."""
    if data.multi_label:
        raise KRError("the canary audit supports single-label tasks only")
    n_test = len(data.test)
    most = int(0.9 * n_test) if source == "test" else 10_000  # a tenth of test stays for the canary run
    if not 2 <= m <= most:
        raise KRError(f"--canaries {m}: choose 2 … {most}; " + (
            f"canaries are drawn from the test split ({n_test} images, which the shipped run never trained "
            f"on), and a tenth of it stays to evaluate the canary run; --set audit.canary_source=noise "
            f"plants noise images instead, as many as you like" if source == "test" else
            "every canary adds an image to the canary run's train split"))
    if m - round(stress * m) < 2:  # the ε bound rests on the mislabelled canaries alone
        raise KRError(f"--canaries {m} with audit.canary_stress={stress} leaves {m - round(stress * m)} mislabelled "
                      "canaries: the bound needs at least 2; plant more canaries or lower audit.canary_stress")
    rng = np.random.default_rng(secrets.randbits(128) if entropy is None else entropy)
    kind = (np.arange(m) < round(stress * m)).astype(np.int64)
    if source == "noise":
        images = rng.uniform(-1, 1, (m, data.channels, data.size, data.size)).astype(np.float32)
        index, label = np.arange(m), rng.integers(0, data.n_classes, m)
    else:
        images, index = None, rng.choice(n_test, m, replace=False)
        own = data.test.labels[index].numpy()
        wrong = (own + rng.integers(1, data.n_classes, m)) % data.n_classes
        label = np.where(kind == 1, own, wrong)
    bits = rng.random(m) < 0.5
    return Canaries(index, label, kind, bits, seed=int(rng.integers(0, 2**31 - 1)), images=images)


def sizing(n_train: int, n_test: int, stress: float, delta: float = 0.0) -> dict:
    """How many test-split canaries a dataset allows (`plant`'s limit) and the ceiling that
    gives: the largest ε_lb the audit could show with every guess right (δ as the run's:
    0 = min(1e-5, 1/(10·N)), N the train split with the canaries it adds, about m/2)."""
    m = int(0.9 * n_test)
    mislabelled = m - round(stress * m)
    d = dp_delta(delta, n_train + m // 2)
    rs = [max(2, int(round(f * mislabelled))) // 2 * 2 for f in canary.GUESS_FRACTIONS]
    return {"canaries": m, "delta": d,
            "ceiling": max(canary.ceiling(mislabelled, r, d, canary.LEVEL / len(rs)) for r in rs)}


def scorer_version() -> str:
    """A hash of the scorer's source code: the statistic, the guesses and the bound."""
    source = inspect.getsource(canary) + "".join(inspect.getsource(f) for f in (
        calibrated, _phi, signals.logit_confidence, signals.query))
    return hashlib.sha256(source.encode()).hexdigest()[:16]


def out_runs(config: Config, data: ImageDataset, runs: list[str], index: np.ndarray,
             source: str = "test") -> np.ndarray:
    """runs × canaries: True where that run never trained on the canary's image (the shipped run
    '.' never saw a test image; reference run audit/references/r<i>/run saw the pool half its
    membership row says; no run without canaries saw a noise canary)."""
    if source == "noise":
        return np.ones((len(runs), len(index)), bool)
    refs = {r: int(Path(r).parent.name[1:]) for r in runs if r != "."}
    # pair k's rows come from their own seed (kr.privacy.references): as many pairs as the runs need
    rows_needed = max([i + 1 for i in refs.values()] + [2])
    matrix = complementary_halves(pool(data).labels.numpy(), rows_needed + rows_needed % 2, config.seed)
    pool_index = len(data.train) + np.asarray(index)
    rows = [np.ones(len(index), bool) if r == "." else ~matrix[refs[r], pool_index] for r in runs]
    return np.stack(rows)


def scoring_rule(config: Config, data: ImageDataset, methods: tuple[str, ...], calibration: dict[str, tuple],
                 c: Canaries) -> dict:
    """Everything that decides a canary's score, its guesses and the bound, except the bits.
    `calibration`: {run: (its folder, {model: content hash})}, the runs without canaries."""
    runs = list(calibration)
    return {"canaries": len(c.index), "stress": config.audit.canary_stress, "copies": config.audit.canary_copies,
            "source": config.audit.canary_source, "index": c.index.tolist(), "label": c.label.tolist(),
            "kind": c.kind.tolist(), "images": None if c.images is None else hashlib.sha256(c.images.tobytes()).hexdigest(),
            "methods": list(methods), "statistic": STATISTIC,
            "calibration": {r: contents for r, (_, contents) in calibration.items()},
            "out": out_runs(config, data, runs, c.index, config.audit.canary_source).astype(int).tolist(),
            "queries": {m: signals.names(signals.queries(*training_augmentation(config, data, m))) for m in methods},
            "guess_fractions": list(canary.GUESS_FRACTIONS), "level": canary.LEVEL,
            "scorer": scorer_version()}


def rule_hash(rule: dict) -> str:
    return hashlib.sha256(json.dumps(rule, sort_keys=True).encode()).hexdigest()


def _save(path: Path, c: Canaries) -> None:
    write_npz(path, index=c.index, label=c.label, kind=c.kind, bits=c.bits, seed=np.int64(c.seed),
              rule=np.array(c.rule), rule_hash=np.array(c.rule_hash),
              **({} if c.images is None else {"images": c.images}))


def _load(path: Path) -> Canaries:
    with np.load(path) as f:
        if "rule_hash" not in f:
            raise KRError(f"{path} holds canaries planted without a recorded scoring rule: their bound cannot "
                          f"be stated at 95 %; plant fresh ones with --replant")
        return Canaries(f["index"], f["label"], f["kind"], f["bits"].astype(bool), int(f["seed"]),
                        str(f["rule"]), str(f["rule_hash"]), f["images"] if "images" in f else None)


def plant_stage(folder: Path, config: Config, data: ImageDataset, methods: tuple[str, ...],
                calibration: dict[str, tuple], entropy: int | None = None) -> dict:
    """The `audit/canaries/plant` stage: fresh canaries, bits and seed, with the scoring rule
    fixed and hashed now, saved before anything trains on them.  The stage is never replaced
    silently (kr.graph's `keep`): a changed rule is refused until the user re-plants."""
    c = plant(data, config.audit.canaries, config.audit.canary_stress, entropy, config.audit.canary_source)
    rule = scoring_rule(config, data, methods, calibration, c)
    c = dataclasses.replace(c, rule=json.dumps(rule, sort_keys=True), rule_hash=rule_hash(rule))
    _save(folder / "canaries.npz", c)
    log.info("canary audit: %d canaries planted (%d included), rule %s", len(c.index), int(c.bits.sum()),
             c.rule_hash[:16])
    return {"canaries": len(c.index), "rule_hash": c.rule_hash}


def planted(plant_folder: Path) -> tuple[Canaries, dict]:
    """The planted canaries and the rule they were planted under (its hash checked)."""
    c = _load(Path(plant_folder) / "canaries.npz")
    rule = json.loads(c.rule)
    if rule_hash(rule) != c.rule_hash:
        raise KRError(f"{plant_folder}/canaries.npz: its scoring rule does not match its hash; plant fresh "
                      f"canaries with --replant")
    return c, rule


def canary_run_inputs(plant_folder: Path, config: Config, data: ImageDataset,
                      methods: tuple[str, ...]) -> tuple[Config, ImageDataset]:
    """The canary run's config (the fresh secret seed, the targets' methods) and data."""
    c, _ = planted(plant_folder)
    return (replay_config(dataclasses.replace(config, seed=c.seed), methods),
            with_canaries(data, c, config.audit.canary_copies))


def with_canaries(data: ImageDataset, c: Canaries, copies: int) -> ImageDataset:
    """The run's data with the included canaries added to train (duplicates `copies` times) and
    every canary's image taken out of test (a noise canary was never in it)."""
    main, dup = c.bits & (c.kind == 0), c.bits & (c.kind == 1)
    pick = np.concatenate([np.flatnonzero(main), np.repeat(np.flatnonzero(dup), copies)])  # canary positions
    labels = c.label[pick]
    keep = np.setdiff1d(np.arange(len(data.test)), c.index if c.images is None else [])
    digest = hashlib.sha256(data.fingerprint.encode())
    for part in (c.index, c.label, c.kind, c.bits.astype(np.int64), np.array([copies])):
        digest.update(np.ascontiguousarray(part, dtype=np.int64).tobytes())
    if c.images is not None:
        digest.update(c.images.tobytes())
    return dataclasses.replace(
        data, train=Split(torch.cat([data.train.images, c.pictures(data)[pick]]),
                          torch.cat([data.train.labels, torch.as_tensor(labels, dtype=torch.long)])),
        test=Split(data.test.images[keep], data.test.labels[keep]),
        source=f"{data.source} (+ {len(pick)} canary images)", fingerprint=f"canaries:{digest.hexdigest()[:16]}")


def calibrated(phi_canary: np.ndarray, phi_runs: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Offline LiRA, fixed variance (Carlini et al. 2022, Sec. IV-C), per canary: the canary
    run's φ minus the mean φ of the runs that never trained on that image (`out`, runs ×
    canaries), over the pooled sd of those runs about their per-canary means (1 where no canary
    has two).  A run that trained on the image is never read for it."""
    out = np.asarray(out, bool)
    n = out.sum(0)
    if (n == 0).any():
        raise KRError(f"{int((n == 0).sum())} canaries have no calibration run without their image")
    mean = np.where(out, phi_runs, 0).sum(0) / n
    dof = int(n.sum() - len(n))
    sd = float(np.sqrt((np.where(out, phi_runs - mean, 0) ** 2).sum() / dof)) if dof > 0 else 1.0
    return (np.asarray(phi_canary) - mean) / (sd if sd > 0 else 1.0)


def _phi(model: torch.nn.Module, images: torch.Tensor, labels: np.ndarray, queries) -> np.ndarray:
    return signals.logit_confidence(signals.query(model, images, queries), labels).mean(-1)


def score(folder: Path, config: Config, data: ImageDataset, methods: tuple[str, ...], plant_folder: Path,
          canary_run, calibration: dict[str, tuple], dev) -> dict:
    """The `audit/canaries/score` stage: the canary run (`canary_run`: its stage's Done) scored
    under the rule planted with the bits, calibrated by the runs that never saw each image."""
    c, rule = planted(plant_folder)
    if list(calibration) != list(rule["calibration"]):
        raise KRError(f"the canaries were planted to be calibrated by {list(rule['calibration'])}, not "
                      f"{list(calibration)}: plant fresh ones with --replant")
    images, labels = c.pictures(data), c.label
    trained, run = canary_run.outputs, canary_run.path / "run"
    delta = dp_delta(config.dpsgd.delta, trained["train"])
    runs, out = list(rule["calibration"]), np.array(rule["out"], bool)
    models, raw = {}, {}
    for mth in methods:
        qs = signals.queries(*training_augmentation(config, data, mth))

        def phi(run: Path) -> np.ndarray:
            return _phi(load_verified(model_folder(run, mth)).to(dev), images, labels, qs)

        scores = calibrated(phi(run), np.stack([phi(calibration[r][0]) for r in runs]), out)
        raw[mth] = scores
        row = {k: canary.audit(scores[c.kind == i], c.bits[c.kind == i], delta,
                               seed=derive_seed(config.seed, "canary-ties"))
               for i, k in enumerate(KINDS) if (c.kind == i).sum() >= 2}
        entry = trained["methods"].get(mth, {})
        if is_dp(mth):
            # what the mislabelled canaries' bound is held to; a duplicated canary is a group of
            # `copies` images, which DP protects only at (k·ε, k·e^{(k−1)ε}·δ): not held to ε
            row["epsilon"] = entry.get("epsilon")
            row["guarantee_holds"] = entry.get("guarantee_holds")
            bound = row.get("mislabelled")
            if bound and entry.get("epsilon") is not None:
                bound["control"] = canary.dp_control(bound, entry["epsilon"])
        row["canary_run_test"] = entry.get("test")
        models[mth] = row
    write_npz(folder / "scores.npz", **raw)
    main = c.kind == 0
    boot = dict(resamples=config.audit.bootstrap, seed=derive_seed(config.seed, "canary-bootstrap"))
    comparisons = [{"a": a, "b": b, **metrics.paired_difference(raw[a][main], raw[b][main], c.bits[main], **boot)}
                   for a, b in comparison_pairs(raw)]
    for mth in methods:
        if "mislabelled" in models[mth]:
            models[mth]["mislabelled"]["auc_ci"] = canary.auc_interval(raw[mth][main], c.bits[main], **boot)
    meta = {"canaries": len(c.index),
            "by_kind": {k: int((c.kind == i).sum()) for i, k in enumerate(KINDS)},
            "included": int(c.bits.sum()), "copies": config.audit.canary_copies, "delta": delta,
            "source": ("the official test split (never trained on by the shipped run)" if c.images is None else
                       "images of uniform pixel noise, each with a random label (no run without canaries saw one)"),
            "procedure": "the whole procedure retrained once with a fresh secret seed (not the run's), the same "
                         "for every model: the bound is on the procedure as a user would retrain it",
            "calibration": STATISTIC, "calibration_runs": runs,
            "calibration_out_per_canary": {"min": int(out.sum(0).min()), "max": int(out.sum(0).max())},
            "rule_hash": c.rule_hash, "scorer": rule["scorer"],
            "queries": rule["queries"], "canary_run": "audit/canaries/run/run", "canary_run_train": trained["train"],
            "level": canary.LEVEL, "guess_fractions": list(canary.GUESS_FRACTIONS),
            "comparisons": comparisons}
    doc = {"meta": meta, "models": models}
    write_json(folder / "canary.json", doc)
    for mth, row in models.items():
        main_row = row.get("mislabelled") or row.get("duplicated")
        log.info("canary audit %s: ε_lb %.2f (ceiling %.2f, r = %d, v = %d), canary AUC %s", mth,
                 main_row["eps_lb"], main_row["ceiling_at_r"], main_row["r"], main_row["v"],
                 "n/a" if main_row["auc"] is None else f"{main_row['auc']:.3f}")
    return doc

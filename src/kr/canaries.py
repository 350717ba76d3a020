"""`kr audit RUN --canaries M`: the one-run canary audit (Steinke, Nasr & Jagielski 2023), an
empirical lower bound on ε for every model a run ships, on DP-SGD's scale.

    plant     M canaries from the official test split (images the shipped run never trained
              on): most with a wrong label (the main type), a fraction (audit.canary_stress)
              duplicated audit.canary_copies times with their own label (a stress type,
              reported apart); each included with probability ½, and the canary run's seed,
              drawn from the OS's CSPRNG; written to audit/canaries/canaries.npz before anything
              trains, together with the scoring rule and its hash
    rule      fixed before the bits exist (docs/audit.md): the calibration runs and their models'
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
never the run's.  See docs/audit.md.
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

from kr import pipeline
from kr.artifacts import read_json, write_json, write_npz
from kr.audit import load_run, reference_stages, write_results
from kr.config import Config
from kr.data import ImageDataset, Split
from kr.dpsgd import dp_delta
from kr.errors import KRError
from kr.methods import folder as model_folder
from kr.methods import is_dp, training_augmentation
from kr.privacy import canary, metrics, signals
from kr.privacy.references import complementary_halves, pool
from kr.privacy.results import canary_fields
from kr.privacy.scoring import comparison_pairs
from kr.rundir import evaluated_key, load_verified, verify
from kr.seeding import derive_seed
from kr.train import resolve_device

log = logging.getLogger(__name__)
KINDS = ("mislabelled", "duplicated")
STATISTIC = ("offline LiRA, fixed variance: per canary, (φ(canary run) − mean φ over the calibration runs that "
             "never trained on its image) / the pooled sd of those runs about their means; φ = logit-scaled "
             "confidence in the canary's label, averaged over the model's training augmentations")


@dataclasses.dataclass(frozen=True)
class Canaries:
    index: np.ndarray   # test-split index of each canary's image
    label: np.ndarray   # the label it is trained with: a wrong one (mislabelled) or its own
    kind: np.ndarray    # 0 = mislabelled, 1 = duplicated (KINDS)
    bits: np.ndarray    # included in training: the secret the audit guesses
    seed: int = 0       # the canary run's root seed: fresh and secret, like the bits
    rule: str = ""      # the scoring rule fixed when they were planted (JSON), and its hash
    rule_hash: str = ""


def plant(data: ImageDataset, m: int, stress: float, entropy: int | None = None) -> Canaries:
    """M canaries from the test split, a fraction `stress` of them duplicates, each included
    with probability ½, and the canary run's seed; drawn from `entropy` (default: 128 secret bits)."""
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
    return Canaries(index, label, kind, bits, seed=int(rng.integers(0, 2**31 - 1)))


def scorer_version() -> str:
    """A hash of the scorer's source code: the statistic, the guesses and the bound."""
    source = inspect.getsource(canary) + "".join(inspect.getsource(f) for f in (
        calibrated, _phi, signals.logit_confidence, signals.query))
    return hashlib.sha256(source.encode()).hexdigest()[:16]


def calibration_runs(run_dir: Path, methods: tuple[str, ...]) -> list[str]:
    """The runs without canaries whose every audited model has finished: the shipped run ('.')
    and experiment 1's reference runs, relative to the run directory, in order."""
    refs = sorted((run_dir / "audit" / "references").glob("r*"), key=lambda p: int(p.name[1:]))
    done = [r for r in refs if all((model_folder(r, m) / "stage.json").is_file() for m in methods)]
    return [".", *(str(r.relative_to(run_dir)) for r in done)]


def out_runs(config: Config, data: ImageDataset, runs: list[str], index: np.ndarray) -> np.ndarray:
    """runs × canaries: True where that run never trained on the canary's image (the shipped run
    never saw a test image; a reference run saw the pool half its membership row says)."""
    # pair k's rows come from their own seed (kr.privacy.references): as many pairs as the runs need
    rows_needed = max([int(Path(r).name[1:]) + 1 for r in runs if r != "."] + [2])
    matrix = complementary_halves(pool(data).labels.numpy(), rows_needed + rows_needed % 2, config.seed)
    pool_index = len(data.train) + np.asarray(index)
    rows = [np.ones(len(index), bool) if r == "." else ~matrix[int(Path(r).name[1:]), pool_index] for r in runs]
    return np.stack(rows)


def scoring_rule(run_dir: Path, config: Config, data: ImageDataset, methods: tuple[str, ...], runs: list[str],
                 c: Canaries) -> dict:
    """Everything that decides a canary's score, its guesses and the bound, except the bits."""
    def content(run: str, m: str) -> str:
        folder = model_folder(run_dir / run, m)
        verify(folder)
        return read_json(folder / "stage.json").get("content", "")

    return {"canaries": len(c.index), "stress": config.audit.canary_stress, "copies": config.audit.canary_copies,
            "source": "test split", "index": c.index.tolist(), "label": c.label.tolist(), "kind": c.kind.tolist(),
            "methods": list(methods), "statistic": STATISTIC,
            "calibration": {r: {m: content(r, m) for m in methods} for r in runs},
            "out": out_runs(config, data, runs, c.index).astype(int).tolist(),
            "queries": {m: signals.names(signals.queries(*training_augmentation(config, data, m))) for m in methods},
            "guess_fractions": list(canary.GUESS_FRACTIONS), "level": canary.LEVEL,
            "scorer": scorer_version()}


def rule_hash(rule: dict) -> str:
    return hashlib.sha256(json.dumps(rule, sort_keys=True).encode()).hexdigest()


def _save(path: Path, c: Canaries) -> None:
    write_npz(path, index=c.index, label=c.label, kind=c.kind, bits=c.bits, seed=np.int64(c.seed),
              rule=np.array(c.rule), rule_hash=np.array(c.rule_hash))


def _load(path: Path) -> Canaries:
    with np.load(path) as f:
        if "rule_hash" not in f:
            raise KRError(f"{path} holds canaries planted without a recorded scoring rule: their bound cannot "
                          f"be stated at 95 %; plant fresh ones with --replant")
        return Canaries(f["index"], f["label"], f["kind"], f["bits"].astype(bool), int(f["seed"]),
                        str(f["rule"]), str(f["rule_hash"]))


def planted(run_dir: Path, config: Config, data: ImageDataset, methods: tuple[str, ...], m: int,
            replant: bool = False, entropy: int | None = None) -> Canaries:
    """The canaries of an earlier (perhaps interrupted) audit, else (or with `replant`) new ones
    whose scoring rule is fixed and hashed now, saved before anything trains on them."""
    path = run_dir / "audit" / "canaries" / "canaries.npz"
    if path.is_file() and not replant:
        return _load(path)
    c = plant(data, m, config.audit.canary_stress, entropy)
    rule = scoring_rule(run_dir, config, data, methods, calibration_runs(run_dir, methods), c)
    c = dataclasses.replace(c, rule=json.dumps(rule, sort_keys=True), rule_hash=rule_hash(rule))
    _save(path, c)
    return c


def check_rule(run_dir: Path, config: Config, data: ImageDataset, methods: tuple[str, ...], m: int | None,
               c: Canaries) -> dict:
    """The rule the bits were planted under, re-derived now from the code, the settings and the
    calibration runs it names; any difference is refused in one line."""
    planted_rule = json.loads(c.rule)
    if rule_hash(planted_rule) != c.rule_hash:
        raise KRError("audit/canaries/canaries.npz: its scoring rule does not match its hash; plant fresh "
                      "canaries with --replant")
    now = scoring_rule(run_dir, config, data, methods, list(planted_rule["calibration"]), c)
    if m is not None and m != planted_rule["canaries"]:
        now["canaries"] = m
    changed = [k for k in sorted(set(now) | set(planted_rule)) if now.get(k) != planted_rule.get(k)]
    if changed:
        raise KRError(f"the canaries in {run_dir}/audit/canaries were planted under another scoring rule "
                      f"({', '.join(changed)} changed): scoring their bits again spends the 95 % level; "
                      f"plant fresh ones with `kr audit {run_dir} --canaries M --replant` (one fresh canary run)")
    return planted_rule


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


def canary_audit(run_dir: str | Path, m: int | None, overrides=(), data_dir: str | None = None,
                 device: str = "auto", executor=None, wait: bool = False, replant: bool = False) -> dict:
    """Plant (or reuse) the canaries, train the canary run, score it under the planted rule."""
    run_dir = Path(run_dir)
    config, data, results = load_run(run_dir, overrides, data_dir)
    methods = config.audit.target_methods(results["methods"])
    folder = run_dir / "audit" / "canaries"
    if m is None and not (folder / "canaries.npz").is_file():
        raise KRError(f"{run_dir} has no planted canaries: plant them with `kr audit {run_dir} --canaries M`")
    c = planted(run_dir, config, data, methods, m or 0, replant)
    rule = check_rule(run_dir, config, data, methods, m, c)
    canary_data = with_canaries(data, c, config.audit.canary_copies)
    log.info("canary audit: %d canaries (%d included), the whole procedure once with a fresh seed → %s",
             len(c.index), int(c.bits.sum()), folder / "run")
    canary_config = dataclasses.replace(config, seed=c.seed)
    trained = pipeline.run(canary_config, out=folder / "run", device=device, stages=reference_stages(methods),
                           data=canary_data, executor=executor)
    dev = resolve_device(device)
    return write_results(run_dir, wait, lambda results: {**results, **canary_fields(
        _score(run_dir, folder, config, data, canary_data, c, rule, methods, trained, dev))})


def _score(run_dir: Path, folder: Path, config: Config, data: ImageDataset, canary_data: ImageDataset,
           c: Canaries, rule: dict, methods: tuple[str, ...], trained: dict, dev) -> dict:
    images, labels = data.test.images[c.index], c.label
    delta = dp_delta(config.dpsgd.delta, len(canary_data.train))
    runs, out = list(rule["calibration"]), np.array(rule["out"], bool)
    models, raw = {}, {}
    for mth in methods:
        qs = signals.queries(*training_augmentation(config, data, mth))

        def phi(run: Path) -> np.ndarray:
            return _phi(load_verified(model_folder(run, mth)).to(dev), images, labels, qs)

        scores = calibrated(phi(folder / "run"), np.stack([phi(run_dir / r) for r in runs]), out)
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
    meta = {"evaluate_key": evaluated_key(run_dir), "canaries": len(c.index),
            "by_kind": {k: int((c.kind == i).sum()) for i, k in enumerate(KINDS)},
            "included": int(c.bits.sum()), "copies": config.audit.canary_copies, "delta": delta,
            "source": "the official test split (never trained on by the shipped run)",
            "procedure": "the whole procedure retrained once with a fresh secret seed (not the run's), the same "
                         "for every model: the bound is on the procedure as a user would retrain it",
            "calibration": STATISTIC, "calibration_runs": runs,
            "calibration_out_per_canary": {"min": int(out.sum(0).min()), "max": int(out.sum(0).max())},
            "rule_hash": c.rule_hash, "scorer": rule["scorer"],
            "queries": rule["queries"], "canary_run": str(folder / "run"), "canary_run_train": len(canary_data.train),
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

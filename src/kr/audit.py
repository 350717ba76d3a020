"""`kr audit RUN`: the membership-inference audit, read as its protocol (after ML Privacy Meter).
Its stages are opt-in stages of the run's own graph (kr.stages): a reference run is a stage,
the attack another, so both are keyed, cached, hashed, locked and spread by executors like the
run's, and results.json gets their part from its one writer.

    load      the run's config and dataset (the fingerprint must match the run's)
    replay    reference runs of the whole procedure on complementary pool halves (references.py),
              each the stage audit/references/r<i>, its run in audit/references/r<i>/run
    verify    every model attacked matches what its stage recorded (kr.rundir.load_verified)
    signals   every model of every run queried in eval mode on the pool, on the augmentations it
              trained with: the image, its flip where it trained with flips, its crop shifts
    attack    experiment 1 (each run in turn the target, the other pairs' runs its references) and
              experiment 2 (the shipped run: members = official train, non-members = official test);
              per-image (online) variants only where every image has ≥ 2 in and 2 out references
    metrics   AUC, TPR at low FPR, advantage, 95 % intervals over runs and images (metrics.py)
    write     audit/attacks/ : membership.npz, signals.npz, scores.npz, audit.json, ROC PNGs

See docs/audit-reference.md for the experiment and its traps.  kr.privacy holds the pure attack, signal
and metric code.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

from kr.artifacts import write_json, write_npz
from kr.config import PRESETS, Config, load_config
from kr.data import ImageDataset, load_dataset
from kr.errors import KRError
from kr.methods import folder as model_folder
from kr.methods import method_of, stage, training_augmentation
from kr.privacy import attacks, references, signals
from kr.privacy.references import membership, reference_config
from kr.privacy.scoring import (
    REFERENCE_ATTACKS,
    SHIPPED_REFERENCE_ATTACKS,
    compare_to_real,
    comparisons,
    procedure_scores,
    shipped_scores,
    summarise,
)
from kr.rundir import load_verified, read_config_tree, read_manifest, read_results
from kr.report.roc import roc_figure

log = logging.getLogger(__name__)


def reference_stages(methods: tuple[str, ...]) -> tuple[str, ...]:
    """What a reference must run for these targets (the request adds what they need)."""
    return tuple(dict.fromkeys(("teacher", *(stage(m) for m in methods))))


def replay_config(config: Config, methods: tuple[str, ...]) -> Config:
    """A replay's config: the run's, training only the targets' methods."""
    return dataclasses.replace(config, baselines=",".join(dict.fromkeys(
        method_of(m).name for m in methods if not method_of(m).always)))


def model_queries(config: Config, data: ImageDataset, methods: tuple[str, ...]) -> dict[str, tuple]:
    """Each method's queries: the augmentations its model trained with (kr.privacy.signals)."""
    return {m: signals.queries(*training_augmentation(config, data, m)) for m in methods}


def pool_signals(run: Path, queries: dict[str, tuple], images, device) -> dict[str, np.ndarray]:
    """Every method's logits on the pool, on its queries (signals.query uses eval mode), each
    model first checked against its stage's record."""
    out = {}
    for m, qs in queries.items():
        out[m] = signals.query(load_verified(model_folder(run, m)).to(device), images, qs)
    return out


def load_run(run_dir: Path, overrides=(), data_dir: str | None = None) -> tuple[Config, ImageDataset, dict]:
    """The run's resolved config (plus overrides), its dataset, and its results.json."""
    run_dir = Path(run_dir)
    for name in ("config.yaml", "results.json", "manifest.json"):
        if not (run_dir / name).is_file():
            raise KRError(f"{run_dir} has no {name}: run `kr run` to completion first "
                          f"(rerun the same command to resume)")
    # The file sets every training key; the preset still supplies audit defaults the file may
    # lack (runs made before the audit existed).
    preset = read_config_tree(run_dir).get("preset", "cpu")
    config = load_config(preset if preset in PRESETS else "cpu", run_dir / "config.yaml", overrides)
    data = load_dataset(config.data.dataset, data_dir=data_dir, size=config.data.size)
    expected = read_manifest(run_dir)["dataset"]["fingerprint"]
    if data.fingerprint != expected:
        raise KRError(f"{config.data.dataset} here has fingerprint {data.fingerprint}, the run was "
                      f"trained on {expected}: point --data-dir at the run's data")
    results = read_results(run_dir, "an audit")
    config.audit.target_methods(results["methods"])  # a target the run lacks: refused here
    return config, data, results


def attack(folder: Path, config: Config, data: ImageDataset, methods: tuple[str, ...], shipped: Path,
           refs: dict[str, Path], dev) -> dict:
    """Query every model of the shipped run and of the reference runs (`refs`: {"r<i>": its run
    folder}), score both experiments, write `folder`; audit.json's contents."""
    refs = dict(sorted(refs.items(), key=lambda kv: int(kv[0][1:])))
    pool = references.pool(data)
    labels, matrix = pool.labels.numpy(), membership(config, data)
    shipped_members = references.shipped_members(data)
    runs = ["shipped", *refs]
    write_npz(folder / "membership.npz", runs=np.array(runs),
              membership=np.vstack([shipped_members, matrix]), labels=labels)
    queries = model_queries(config, data, methods)
    log.info("audit: querying %d models of %d runs on %d pool images (%s queries)", len(methods), len(runs),
             len(labels), "/".join(str(len(q)) for q in queries.values()))
    logits = {"shipped": pool_signals(shipped, queries, pool.images, dev)}
    logits.update({r: pool_signals(p, queries, pool.images, dev) for r, p in refs.items()})
    write_npz(folder / "signals.npz", **{f"{r}/{m}": logits[r][m] for r in runs for m in methods})

    n_refs = len(refs)
    procedure, shipped, raw, rmia_a, skipped = {}, {}, {}, {}, {}
    proc_scores, ship_scores = {}, {}
    for m in methods:
        stacked = np.stack([logits[r][m] for r in refs])
        proc, proc_info = procedure_scores(stacked, labels, matrix)
        ship, ship_info = shipped_scores(logits["shipped"][m], stacked, labels, matrix, proc)
        procedure[m] = summarise(proc, matrix, {a: n_refs - 2 for a in REFERENCE_ATTACKS}, config)
        shipped[m] = summarise(ship, shipped_members, {a: n_refs for a in SHIPPED_REFERENCE_ATTACKS}, config)
        rmia_a[m] = {"procedure": proc_info["rmia_offline_a"], "shipped": ship_info.get("rmia_offline_a")}
        skipped = {"procedure": proc_info["skipped"], "shipped": ship_info["skipped"]}
        proc_scores[m], ship_scores[m] = {a: s for a, (s, _) in proc.items()}, {a: s for a, (s, _) in ship.items()}
        raw.update({f"procedure/{m}/{a}": s for a, (s, _) in proc.items()})
        raw.update({f"shipped/{m}/{a}": s for a, (s, _) in ship.items()})
        roc_figure({a: (s, matrix) for a, (s, _) in proc.items()},
                   folder / "roc" / f"procedure-{m}.png", f"{m}: procedure ({n_refs} runs, pooled)")
        roc_figure({a: (s, shipped_members) for a, (s, _) in ship.items()},
                   folder / "roc" / f"shipped-{m}.png", f"{m}: shipped model")
    write_npz(folder / "scores.npz", **raw)
    compare_to_real(procedure, proc_scores, matrix, config)
    compare_to_real(shipped, ship_scores, shipped_members, config)
    if skipped["procedure"]:
        log.warning("audit: %d runs leave each image %d in and %d out references: only the fixed-variance "
                    "attacks are meaningful (%s left out); train ≥ 8 runs for a privacy claim "
                    "(--set audit.references=8)", n_refs, n_refs // 2 - 1, n_refs // 2 - 1,
                    ", ".join(skipped["procedure"]))
    meta = {"references": n_refs, "pool": len(labels),
            "runs": [{"name": r, "seed": reference_config(config, i).seed,
                      "members": int(matrix[i].sum()), "partner": f"r{i ^ 1}"}
                     for i, r in enumerate(refs)],
            "shipped_members": int(shipped_members.sum()),
            "shipped_non_members": int((~shipped_members).sum()),
            "references_per_image": {"in": n_refs // 2 - 1, "out": n_refs // 2 - 1},
            "pooling": "experiment 1 pools the scores of every run as the target (one ROC over runs × "
                       "images); its intervals resample complementary pairs of runs and images together; "
                       "auc_per_target gives each target's own AUC",
            "attacks_skipped": skipped,
            "comparisons": {"procedure": comparisons(procedure, proc_scores, matrix, config),
                            "shipped": comparisons(shipped, ship_scores, shipped_members, config)},
            "queries": {m: signals.names(q) for m, q in queries.items()},
            "rmia": {"gamma": attacks.RMIA_GAMMA, "a_grid": list(attacks.RMIA_A_GRID),
                     "a": rmia_a, "a_chosen_on": "the target's paired run (ML Privacy Meter)"}}
    doc = {"meta": meta, "procedure": procedure, "shipped": shipped}
    write_json(folder / "audit.json", doc)
    return doc

"""`kr audit RUN`: the membership-inference audit, read as its protocol (after ML Privacy Meter).

    load      the run's config and dataset (the fingerprint must match the run's)
    replay    reference runs of the whole procedure on complementary pool halves (references.py)
    signals   every model of every run queried in eval mode on the pool, image and flip (signals.py)
    attack    experiment 1 (each run in turn the target, the other pairs' runs its references) and
              experiment 2 (the shipped run: members = official train, non-members = official test)
    metrics   AUC, TPR at low FPR, advantage, bootstrap 95 % intervals (metrics.py)
    write     audit/ : membership.npz, signals.npz, scores.npz, audit.json, ROC PNGs;
              results.json gains "audit"

See ../shared/AUDIT.md for the experiment and its traps, docs/audit.md for its use.  It sits
beside the pipeline (it replays it); kr.privacy holds the pure attack, signal and metric code.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

from kr import pipeline
from kr.artifacts import write_json, write_npz
from kr.config import PRESETS, Config, load_config
from kr.data import ImageDataset, load_dataset
from kr.errors import KRError
from kr.executors import InProcess
from kr.methods import folder as model_folder
from kr.methods import method_of, stage
from kr.models import load_classifier
from kr.privacy import attacks, references, signals
from kr.privacy.references import membership, reference_config, subset
from kr.privacy.results import results_fields
from kr.privacy.scoring import (
    REFERENCE_ATTACKS,
    SHIPPED_REFERENCE_ATTACKS,
    compare_to_real,
    procedure_scores,
    shipped_scores,
    summarise,
)
from kr.rundir import evaluated_key, read_config_tree, read_manifest, read_results
from kr.report.roc import roc_figure
from kr.train import resolve_device

log = logging.getLogger(__name__)


def reference_stages(methods: tuple[str, ...]) -> tuple[str, ...]:
    """What a reference must run for these targets (the request adds what they need)."""
    return ("teacher", *dict.fromkeys(stage(m) for m in methods if m != "real"))


def train_references(config: Config, folder: Path, data: ImageDataset, methods: tuple[str, ...],
                     device: str = "auto", only: tuple[int, ...] | None = None,
                     executor=None) -> list[Path]:
    """Train (or resume, or find cached) every reference run, each a task of `executor`
    (kr.executors; default: one after another here); return their folders."""
    matrix = membership(config, data)
    if only is not None and not set(only) <= set(range(len(matrix))):
        raise KRError(f"reference indices {sorted(set(only))} out of range: this audit has "
                      f"{len(matrix)} reference runs, 0–{len(matrix) - 1} (audit.references)")
    stages = reference_stages(methods)
    baselines = ",".join(dict.fromkeys(method_of(m).name for m in methods if not method_of(m).always))
    paths, calls = [], []
    for i in range(len(matrix)):
        path = folder / f"r{i}"
        paths.append(path)
        if only is not None and i not in only:
            continue
        log.info("audit: reference run %d of %d (%d members) → %s", i + 1, len(matrix),
                 int(matrix[i].sum()), path)
        ref_config = dataclasses.replace(reference_config(config, i), baselines=baselines)
        calls.append(((_reference_run, (ref_config, str(path), device, stages, subset(data, matrix[i], i))),
                      None))
    executor = executor or InProcess()
    try:
        executor.run(calls)
    finally:
        executor.close()
    return paths


def _reference_run(config: Config, path: str, device: str, stages: tuple[str, ...],
                   data: ImageDataset) -> dict:
    """One reference run, wherever the executor puts it; its stages run one after another there."""
    pipeline.run(config, out=path, device=device, stages=stages, data=data)
    return {}


def pool_signals(run: Path, methods: tuple[str, ...], images, device) -> dict[str, np.ndarray]:
    """Every method's logits on the pool, image and flip (signals.query uses eval mode)."""
    return {m: signals.query(load_classifier(model_folder(run, m)).to(device), images) for m in methods}


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
    return config, data, read_results(run_dir, "an audit")


def audit(run_dir: str | Path, overrides=(), data_dir: str | None = None, device: str = "auto",
          only: tuple[int, ...] | None = None, executor=None) -> dict | None:
    """Run the audit; with `only`, train just those reference runs (to spread them over
    processes or machines) and return None."""
    run_dir = Path(run_dir)
    config, data, results = load_run(run_dir, overrides, data_dir)
    methods = config.audit.target_methods(results["methods"])
    folder = run_dir / "audit"
    paths = train_references(config, folder / "references", data, methods,
                             device=device, only=only, executor=executor)
    if only is not None:
        return None
    dev = resolve_device(device)
    pool = references.pool(data)
    labels, matrix = pool.labels.numpy(), membership(config, data)
    shipped_members = references.shipped_members(data)
    runs = ["shipped"] + [p.name for p in paths]
    write_npz(folder / "membership.npz", runs=np.array(runs),
              membership=np.vstack([shipped_members, matrix]), labels=labels)
    log.info("audit: querying %d models of %d runs on %d pool images", len(methods), len(runs),
             len(labels))
    logits = {"shipped": pool_signals(run_dir, methods, pool.images, dev)}
    logits.update({p.name: pool_signals(p, methods, pool.images, dev) for p in paths})
    write_npz(folder / "signals.npz", **{f"{r}/{m}": logits[r][m] for r in runs for m in methods})

    n_refs = len(paths)
    groups = np.broadcast_to(np.arange(len(labels)), matrix.shape)
    procedure, shipped, raw = {}, {}, {}
    for m in methods:
        stacked = np.stack([logits[p.name][m] for p in paths])
        proc = procedure_scores(stacked, labels, matrix)
        ship = shipped_scores(logits["shipped"][m], stacked, labels, matrix, proc)
        procedure[m] = summarise(proc, matrix, {a: n_refs - 2 for a in REFERENCE_ATTACKS}, config, groups)
        shipped[m] = summarise(ship, shipped_members, {a: n_refs for a in SHIPPED_REFERENCE_ATTACKS}, config)
        raw.update({f"procedure/{m}/{a}": s for a, (s, _) in proc.items()})
        raw.update({f"shipped/{m}/{a}": s for a, (s, _) in ship.items()})
        roc_figure({a: (s, matrix) for a, (s, _) in proc.items()},
                         folder / "roc" / f"procedure-{m}.png", f"{m}: procedure ({n_refs} runs, pooled)")
        roc_figure({a: (s, shipped_members) for a, (s, _) in ship.items()},
                         folder / "roc" / f"shipped-{m}.png", f"{m}: shipped model")
    write_npz(folder / "scores.npz", **raw)
    compare_to_real(procedure)
    compare_to_real(shipped)
    meta = {"evaluate_key": evaluated_key(run_dir),
            "references": n_refs, "pool": len(labels),
            "runs": [{"name": p.name, "seed": reference_config(config, i).seed,
                      "members": int(matrix[i].sum()), "partner": p.name[:1] + str(i ^ 1)}
                     for i, p in enumerate(paths)],
            "shipped_members": int(shipped_members.sum()),
            "shipped_non_members": int((~shipped_members).sum()),
            "pooling": "experiment 1 pools the scores of all runs as targets; bootstrap "
                       "resamples images, keeping each image's scores together",
            "queries": list(signals.QUERIES), "rmia": {"a": attacks.RMIA_OFFLINE_A,
                                                        "gamma": attacks.RMIA_GAMMA}}
    doc = {"meta": meta, "procedure": procedure, "shipped": shipped}
    write_json(folder / "audit.json", doc)
    results.update(results_fields(doc, results.get("audit_shipped", {})))
    write_json(run_dir / "results.json", results)
    return results

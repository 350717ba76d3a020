"""`kr audit RUN`: the membership-inference audit, read as its protocol (after ML Privacy Meter).

    load      the run's config and dataset (the fingerprint must match the run's)
    replay    reference runs of the whole procedure on complementary pool halves (references.py)
    signals   every model of every run queried in eval mode on the pool, image and flip (signals.py)
    attack    experiment 1 (each run in turn the target, the other pairs' runs its references) and
              experiment 2 (the shipped run: members = official train, non-members = official test)
    metrics   AUC, TPR at low FPR, advantage, bootstrap 95 % intervals (metrics.py)
    write     audit/ : membership.npz, signals.npz, scores.npz, audit.json, ROC PNGs;
              results.json gains "audit"

See ../shared/AUDIT.md for the experiment and its traps; docs in the README's "Privacy audit".
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import yaml

from kr.artifacts import read_json, write_json, write_npz
from kr.config import PRESETS, Config, load_config
from kr.data import ImageDataset, load_dataset
from kr.errors import KRError
from kr.methods import folder as model_folder
from kr.models import load_classifier
from kr.privacy import attacks, metrics, plots, references, signals
from kr.seeding import derive_seed
from kr.train import resolve_device

log = logging.getLogger(__name__)

# Reference-free attacks: functions of the target's logits alone.
FREE_ATTACKS = {
    "loss": lambda z, y: attacks.loss_attack(signals.loss(z, y)),
    "confidence": lambda z, y: attacks.confidence_attack(signals.probability(z, y)),
    "logit-confidence": lambda z, y: attacks.logit_confidence_attack(signals.logit_confidence(z, y)),
}
# Reference-based attacks: (signal, attack) with the target's and the references' signals.
REFERENCE_ATTACKS = {
    "lira-online": (signals.logit_confidence, lambda t, r, i: attacks.lira(t, r, i, True, False)),
    "lira-online-fixed": (signals.logit_confidence, lambda t, r, i: attacks.lira(t, r, i, True, True)),
    "lira-offline": (signals.logit_confidence, lambda t, r, i: attacks.lira(t, r, i, False, False)),
    "lira-offline-fixed": (signals.logit_confidence, lambda t, r, i: attacks.lira(t, r, i, False, True)),
    "rmia-online": (signals.probability, lambda t, r, i: attacks.rmia(t, r, i, online=True)),
    "rmia-offline": (signals.probability, lambda t, r, i: attacks.rmia(t, r, i, online=False)),
}
# Experiment 2's references trained on other data sizes and never on the target's own split in
# complementary fashion: only the offline attacks apply (../shared/AUDIT.md).
SHIPPED_REFERENCE_ATTACKS = ("lira-offline", "lira-offline-fixed", "rmia-offline")


def pool_signals(run: Path, methods: tuple[str, ...], images, device) -> dict[str, np.ndarray]:
    """Every method's logits on the pool, image and flip (signals.query uses eval mode)."""
    return {m: signals.query(load_classifier(model_folder(run, m)).to(device), images) for m in methods}


def procedure_scores(logits: np.ndarray, labels: np.ndarray, matrix: np.ndarray) -> dict:
    """Experiment 1: each run in turn is the target; its references are the runs of the *other*
    pairs.  Its own partner is left out: the partner's membership is the exact complement of
    the target's, so with few references it makes the in/out reference sets depend on the
    target's membership (a 4-run tiny audit measured online-LiRA AUC 0.09 with the partner
    included).  Without it every point is in exactly half of the target's references.

    Returns {attack: (scores, guesses)}, each runs × points.  A guess uses the threshold that
    maximises balanced accuracy on the *other* runs' scores and memberships."""
    runs = len(matrix)
    out = {}
    for name, fn in FREE_ATTACKS.items():
        out[name] = np.stack([fn(logits[t], labels) for t in range(runs)])
    for name, (signal, fn) in REFERENCE_ATTACKS.items():
        sig = np.stack([signal(logits[r], labels) for r in range(runs)])
        out[name] = np.stack([fn(sig[t], np.delete(sig, [t, t ^ 1], 0), np.delete(matrix, [t, t ^ 1], 0))
                              for t in range(runs)])
    guesses = {}
    for name, scores in out.items():
        guesses[name] = np.stack([scores[t] >= metrics.best_threshold(
            np.delete(scores, t, 0).ravel(), np.delete(matrix, t, 0).ravel()) for t in range(runs)])
    return {name: (out[name], guesses[name]) for name in out}


def shipped_scores(shipped: np.ndarray, refs: np.ndarray | None, labels: np.ndarray,
                   matrix: np.ndarray | None, procedure: dict | None) -> dict:
    """Experiment 2: the shipped model, its own members against the official test split.

    Reference-based attacks (offline) use the procedure runs; guesses use thresholds fitted
    on experiment 1's pooled scores (never on the shipped model's own membership)."""
    out = {name: fn(shipped, labels) for name, fn in FREE_ATTACKS.items()}
    if refs is not None:
        for name in SHIPPED_REFERENCE_ATTACKS:
            signal, fn = REFERENCE_ATTACKS[name]
            sig = np.stack([signal(r, labels) for r in refs])
            out[name] = fn(signal(shipped, labels), sig, matrix)
    result = {}
    for name, scores in out.items():
        guesses = None
        if procedure is not None:
            ref_scores = procedure[name][0]
            guesses = scores >= metrics.best_threshold(ref_scores.ravel(), matrix.ravel())
        result[name] = (scores, guesses)
    return result


def summarise(scores: dict, members: np.ndarray, references: dict[str, int], config: Config,
              groups: np.ndarray | None = None) -> dict:
    """{attack: metrics.report(...) + the number of reference runs it used}."""
    out = {}
    for name, (s, g) in scores.items():
        out[name] = {**metrics.report(s, members, g, groups, config.audit.bootstrap,
                                      derive_seed(config.seed, "audit-bootstrap")),
                     "references": references.get(name, 0)}
        if s.ndim == 2:
            out[name]["auc_per_target"] = [metrics.auc(s[t], members[t]) for t in range(len(s))]
    return out


def compare_to_real(audit: dict) -> None:
    """How much of the teacher's leakage survives: AUC below `real` under the same attack."""
    if "real" not in audit:
        return
    for target, by_attack in audit.items():
        for name, row in by_attack.items():
            if name in audit["real"]:
                row["auc_below_real"] = audit["real"][name]["auc"] - row["auc"]


def audit_of(results: dict) -> tuple[str, dict]:
    """Experiment 1 (the procedure) where `kr audit` ran, else the shipped model's own audit."""
    if results.get("audit"):
        return "procedure", results["audit"]
    return "shipped", results.get("audit_shipped") or {}


def best_attack(by_attack: dict) -> tuple[str, dict] | None:
    """The attack that leaks most on this target (highest AUC): the one a privacy claim must face."""
    rows = [(a, r) for a, r in by_attack.items() if r.get("auc") is not None]
    return max(rows, key=lambda ar: ar[1]["auc"]) if rows else None


def results_fields(audit_json: dict, shipped_free: dict) -> dict:
    """results.json's audit fields from audit/audit.json.  Models left out of audit.targets keep
    the reference-free figures `kr run` measured on them (`shipped_free`)."""
    return {"audit": audit_json["procedure"], "audit_shipped": {**shipped_free, **audit_json["shipped"]},
            "audit_meta": audit_json["meta"]}


def recorded_audit(run: Path, evaluated: str, shipped_free: dict) -> dict:
    """`kr run`'s view of an earlier `kr audit`: its results.json fields, if it audited the models
    the run has now (`evaluated`, the evaluate stage's key), else nothing (it is stale)."""
    path = Path(run) / "audit" / "audit.json"
    if not path.is_file():
        return {}
    doc = read_json(path)
    if doc["meta"].get("evaluate_key") != evaluated:
        log.warning("audit/audit.json audited other models than this run's: rerun `kr audit %s`", run)
        return {}
    return results_fields(doc, shipped_free)


def load_run(run_dir: Path, overrides=(), data_dir: str | None = None) -> tuple[Config, ImageDataset, dict]:
    """The run's resolved config (plus overrides), its dataset, and its results.json."""
    run_dir = Path(run_dir)
    for name in ("config.yaml", "results.json", "manifest.json"):
        if not (run_dir / name).is_file():
            raise KRError(f"{run_dir} has no {name}: run `kr run` to completion first "
                          f"(rerun the same command to resume)")
    # The file sets every training key; the preset still supplies audit defaults the file may
    # lack (runs made before the audit existed).
    preset = (yaml.safe_load((run_dir / "config.yaml").read_text()) or {}).get("preset", "cpu")
    config = load_config(preset if preset in PRESETS else "cpu", run_dir / "config.yaml", overrides)
    data = load_dataset(config.data.dataset, data_dir=data_dir, size=config.data.size)
    expected = read_json(run_dir / "manifest.json")["dataset"]["fingerprint"]
    if data.fingerprint != expected:
        raise KRError(f"{config.data.dataset} here has fingerprint {data.fingerprint}, the run was "
                      f"trained on {expected}: point --data-dir at the run's data")
    return config, data, read_json(run_dir / "results.json")


def shipped_audit(data: ImageDataset, config: Config, models: dict[str, Path], device,
                  folder: Path) -> dict:
    """The `audit` stage of `kr run`: experiment 2 with the reference-free attacks only (the
    reference-based ones need `kr audit`'s reference runs).  Scores and ROC curves are saved
    in `folder` so the report draws from them without querying a model again."""
    labels, members = references.pool(data).labels.numpy(), references.shipped_members(data)
    images = references.pool(data).images
    out, raw = {}, {"members": members}
    for method, model in models.items():
        logits = signals.query(load_classifier(model).to(device), images)
        scores = shipped_scores(logits, None, labels, None, None)
        out[method] = summarise(scores, members, {}, config)
        raw.update({f"{method}/{a}": s for a, (s, _) in scores.items()})
        plots.roc_figure({a: (s, members) for a, (s, _) in scores.items()}, folder / f"roc-{method}.png",
                         f"{method}: shipped model, reference-free attacks")
    write_npz(folder / "scores.npz", **raw)
    compare_to_real(out)
    return out


def audit(run_dir: str | Path, overrides=(), data_dir: str | None = None, device: str = "auto",
          only: tuple[int, ...] | None = None) -> dict | None:
    """Run the audit; with `only`, train just those reference runs (to spread them over
    processes or machines) and return None."""
    run_dir = Path(run_dir)
    config, data, results = load_run(run_dir, overrides, data_dir)
    methods = config.audit.target_methods(results["methods"])
    folder = run_dir / "audit"
    paths = references.train_references(config, folder / "references", data, methods,
                                        device=device, only=only)
    if only is not None:
        return None
    dev = resolve_device(device)
    pool = references.pool(data)
    labels, matrix = pool.labels.numpy(), references.membership(config, data)
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
        plots.roc_figure({a: (s, matrix) for a, (s, _) in proc.items()},
                         folder / "roc" / f"procedure-{m}.png", f"{m}: procedure ({n_refs} runs, pooled)")
        plots.roc_figure({a: (s, shipped_members) for a, (s, _) in ship.items()},
                         folder / "roc" / f"shipped-{m}.png", f"{m}: shipped model")
    write_npz(folder / "scores.npz", **raw)
    compare_to_real(procedure)
    compare_to_real(shipped)
    meta = {"evaluate_key": read_json(run_dir / "manifest.json")["stages"]["evaluate"]["key"],
            "references": n_refs, "pool": len(labels),
            "runs": [{"name": p.name, "seed": references.reference_config(config, i).seed,
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

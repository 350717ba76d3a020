"""Readers of the audit's results: what results.json and audit/audit.json say about leakage."""

from __future__ import annotations

import logging
from pathlib import Path

from kr.artifacts import read_json

log = logging.getLogger(__name__)


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

"""Readers of the audit's results: what results.json and audit/audit.json say about leakage."""

from __future__ import annotations



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


def canary_fields(canary_json: dict) -> dict:
    """results.json's canary-audit fields from audit/canaries/canary.json."""
    return {"canary": canary_json["models"], "canary_meta": canary_json["meta"]}


def canary_source(canary_meta: dict) -> tuple[str, str]:
    """Where the canaries came from, in words: (source, what the main type carries)."""
    if str(canary_meta.get("source", "")).startswith("images of uniform pixel noise"):
        return "of uniform pixel noise", "a random label"
    return "from the test split", "a wrong label"

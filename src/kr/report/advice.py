"""Which model to release, in one sentence per need, from a run's own numbers.

    formal     a formal guarantee is required: a DP-SGD model whose ε holds (secret noise), at
               the ε the user is asked for; the run's DP-SGD models are listed
    empirical  measured leakage as low as a model that never saw a teacher label: among the
               students whose canary AUC is not distinguishable from every hard-label
               student's (paired over canaries), the most accurate on validation; valid only
               where the same audit tells the teacher from the hard-label students (the
               control: an audit that cannot see the teacher's leakage cannot vouch for anyone)
    accuracy   the most accurate model but the teacher, on the validation split (which chose
               every setting; the test split is read to report, never to choose), and what its
               audit says of it

The teacher is never advised: it trained on the real images with no protection.  Where a
number a sentence needs is missing (no DP-SGD model, no canary audit), the sentence says what
to run instead.  Pure: reads results.json's dict, writes nothing.
"""

from __future__ import annotations

from kr.methods import METHODS, is_dp

NEEDS = {"formal": "a formal guarantee is required",
         "empirical": "measured leakage as low as a model that never saw a teacher label",
         "accuracy": "best accuracy"}


def _evaluated(results: dict) -> dict[str, dict]:
    return {m: e for m, e in results.get("methods", {}).items() if "test" in e and "val" in e}


def _hard(model: str) -> bool:
    """A student trained on the conditioning labels alone: never saw a teacher label."""
    m = METHODS.get(model)
    return bool(m and m.stages == "student" and not m.options["soft"])


def _acc(e: dict, split: str = "test") -> str:
    return f"{split} ACC {e[split]['acc']:.3f}"


def _diff(c: dict) -> str:
    lo, hi = c["ci"]
    return f"{c['a']} − {c['b']} {c['difference']:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def _canary_auc(results: dict, model: str) -> str | None:
    row = ((results.get("canary") or {}).get(model) or {}).get("mislabelled") or {}
    if row.get("auc") is None:
        return None
    ci = row.get("auc_ci")
    return f"canary AUC {row['auc']:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def _best(models: dict[str, dict]) -> str | None:
    """The most accurate on validation (ACC, then AUC): the split every choice of a run uses."""
    return max(models, key=lambda m: (models[m]["val"]["acc"], models[m]["val"]["auc"]), default=None)


def formal(results: dict) -> dict:
    dps = {m: e for m, e in _evaluated(results).items() if is_dp(m)}
    holds = {m: e for m, e in dps.items() if e.get("guarantee_holds") is True}
    if not dps:
        return {"model": None, "text": "this run trained no DP-SGD model: rerun with `--methods` including "
                                       "dpsgd (dpsgd.epsilons sets the ε values) to have one"}
    if not holds:
        return {"model": None, "text": f"none of this run's DP-SGD models ({', '.join(dps)}) holds its ε (seeded "
                                       "noise): retrain with the default dpsgd.noise=secret"}
    models = sorted(holds, key=lambda m: holds[m]["epsilon"])
    listed = "; ".join(f"{m} (ε = {holds[m]['epsilon']:.2f}, δ = {holds[m]['delta']:.1e}): {_acc(holds[m])}"
                       for m in models)
    return {"model": models[-1], "text": f"release the DP-SGD model at the ε you are asked for — {listed}"}


def empirical(results: dict) -> dict:
    canary = results.get("canary") or {}
    if not canary:
        return {"model": None, "text": "not measured; run `kr audit RUN --canaries M` (the canary audit compares "
                                       "each model with the students that never saw a teacher label)"}
    hard = [m for m in canary if _hard(m)]
    if not hard:
        return {"model": None, "text": "the canary audit has no hard-label student to compare with: rerun with "
                                       "`--methods` including synthetic, then audit again"}
    comps = {(c["a"], c["b"]): c for c in (results.get("canary_meta") or {}).get("comparisons") or []}
    control = [comps.get(("real", h)) for h in hard]
    if not all(c and c["ci"] is not None and c["distinguishable"] and c["difference"] > 0 for c in control):
        said = "; ".join(_diff(c) for c in control if c and c["ci"] is not None) or "no interval"
        return {"model": None, "text": f"the canary audit cannot tell: it does not tell the teacher's leakage from "
                                       f"the hard-label students' ({said}), so it cannot vouch for any model; plant "
                                       "more canaries (`kr audit RUN --canaries M --replant`)"}
    evaluated = _evaluated(results)

    def as_low(m: str) -> bool:  # every paired difference with a hard-label student includes 0 or is below
        return all((c := comps.get((m, h))) is not None and c["ci"] is not None
                   and (not c["distinguishable"] or c["difference"] < 0) for h in hard)

    eligible = {m: evaluated[m] for m in canary if m in evaluated and m != "real" and not is_dp(m)
                and (_hard(m) or as_low(m))}
    model = _best(eligible)
    e = evaluated[model]
    versus = "; ".join(_diff(comps[(model, h)]) for h in hard if (model, h) in comps)
    why = (f"not distinguishable from the hard-label students' ({versus})" if versus else
           "it is a hard-label student")
    return {"model": model, "text": f"release {model} — {_acc(e, 'val')}, {_acc(e)}; {_canary_auc(results, model)}, "
                                     f"{why}; the audit sees the teacher's leakage "
                                     f"({'; '.join(_diff(c) for c in control)})"}


def accuracy(results: dict) -> dict:
    evaluated = {m: e for m, e in _evaluated(results).items() if m != "real"}
    model = _best(evaluated)
    if model is None:
        return {"model": None, "text": "no model besides the teacher was evaluated"}
    e = evaluated[model]
    leak = _canary_auc(results, model)
    if is_dp(model) and e.get("guarantee_holds") is True:
        said = f"with its formal ε = {e['epsilon']:.2f}"
    else:
        comps = [c for c in (results.get("canary_meta") or {}).get("comparisons") or []
                 if c["a"] == model and _hard(c["b"]) and c["ci"] is not None]
        more = [c for c in comps if c["distinguishable"] and c["difference"] > 0]
        said = ("no formal guarantee; its leakage is not measured (`kr audit RUN --canaries M`)" if leak is None else
                f"no formal guarantee; {leak}" + (f", more than a hard-label student's ({'; '.join(map(_diff, more))})"
                                                 if more else ""))
    return {"model": model, "text": f"release {model} — {_acc(e, 'val')} (the split that chose every setting), "
                                     f"{_acc(e)}; {said}"}


def release_advice(results: dict) -> dict[str, dict]:
    """{need: {"model": name or None, "text": one sentence}} for the three needs (NEEDS)."""
    return {"formal": formal(results), "empirical": empirical(results), "accuracy": accuracy(results)}


def advice_lines(results: dict) -> list[str]:
    """The advice as the lines `kr run` prints and the report shows (the teacher: never)."""
    advice = release_advice(results)
    return [f"{NEEDS[k].capitalize()}: {a['text']}." for k, a in advice.items()] + [
        "The teacher (real): never — it trained on the real images with no protection."]

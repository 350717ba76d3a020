"""Human-readable views of a run's results (the full HTML report comes with its own issue)."""

from __future__ import annotations


def _fmt(x) -> str:
    return "  n/a " if x is None or x != x else f"{x:.4f}"


def summary_table(results: dict) -> str:
    """The one-screen summary printed at the end of `kr run`."""
    lines = [f"{results['dataset']} · preset {results['preset']} · seed {results['seed']}",
             f"{'method':<12}{'val acc':>9}{'val auc':>9}{'test acc':>10}{'test auc':>10}"]
    for name, m in results["methods"].items():
        lines.append(f"{name:<12}{_fmt(m['val']['acc']):>9}{_fmt(m['val']['auc']):>9}"
                     f"{_fmt(m['test']['acc']):>10}{_fmt(m['test']['auc']):>10}")
    quality = results.get("generator", {}).get("quality")
    if quality:
        lines.append(f"{results['generator']['kind']} generator checkpoints (judged on {quality['split']}):")
        lines.append(f"  {'checkpoint':<18}{'kimg':>8}{'agree':>8}{'FD':>9}{'prec':>7}{'recall':>8}")
        for c in quality["checkpoints"]:
            lines.append(f"  {c['name']:<18}{c['kimg']:>8.1f}{c['teacher_agreement']:>8.3f}"
                         f"{c['fd']:>9.2f}{c['precision']:>7.3f}{c['recall']:>8.3f}")
    timings = ", ".join(f"{k} {v:.1f}s" for k, v in results.get("timings_s", {}).items())
    lines.append(f"time: {timings}")
    lines.append(f"run directory: {results['run_dir']}")
    return "\n".join(lines)

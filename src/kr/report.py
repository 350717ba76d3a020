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
    timings = ", ".join(f"{k} {v:.1f}s" for k, v in results.get("timings_s", {}).items())
    lines.append(f"time: {timings}")
    lines.append(f"run directory: {results['run_dir']}")
    return "\n".join(lines)

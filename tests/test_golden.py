"""Numbers unchanged by restructuring: a tiny run's results.json against the one kr made before
issue 21 moved every stage onto the graph (tests/golden/tiny_results.json), every value but
wall-clock times and paths."""

import json
from pathlib import Path

import pytest
import torch

from kr import pipeline
from kr.config import load_config
from tests.conftest import make_arrays, write_npz

GOLDEN = Path(__file__).parent / "golden" / "tiny_results.json"


def _untimed(x):
    if isinstance(x, dict):
        return {k: _untimed(v) for k, v in x.items() if k not in ("seconds", "timings_s", "run_dir", "report")}
    return [_untimed(v) for v in x] if isinstance(x, list) else x


def _close(a, b, path=""):
    """Same structure; numbers within a tolerance (another CPU sums floats in another order)."""
    assert type(a) is type(b) or {type(a), type(b)} <= {int, float}, path
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            _close(a[k], b[k], f"{path}/{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f"{path}[{i}]")
    elif isinstance(a, float):
        assert a == pytest.approx(b, rel=0.2, abs=0.1), path
    else:
        assert a == b, path


@pytest.mark.slow  # end to end: a whole tiny run
def test_a_tiny_run_gives_the_results_it_gave_before_the_restructuring(tmp_path, monkeypatch):
    import kr.synthetic

    # nothing that other tests' identical tiny runs left in this process
    monkeypatch.setattr(kr.synthetic, "_SHARED", {})
    golden = json.loads(GOLDEN.read_text())
    small = write_npz(tmp_path / "small.npz", make_arrays(n=(40, 20, 20)))
    config = load_config("tiny", data={"dataset": str(small)}, overrides=["dpsgd.epsilons=4"])
    threads = torch.get_num_threads()
    torch.set_num_threads(golden["threads"])  # float sums depend on the thread count
    try:
        results = _untimed(pipeline.run(config, out=tmp_path / "run", device="cpu"))
    finally:
        torch.set_num_threads(threads)
    results = json.loads(json.dumps(results))  # tuples as JSON writes them
    if torch.backends.cpu.get_cpu_capability() == golden["cpu_capability"]:
        assert results == golden["results"]  # bit for bit on the CPU kind that made it
    else:  # other kernels: the same fields, numbers close
        _close(results, golden["results"])

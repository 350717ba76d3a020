"""Numbers unchanged by restructuring: a tiny run's results.json against the one kr made when
the golden file was written (tests/golden/tiny_results.json; `python -m tests.test_golden`
rewrites it), every value but wall-clock times and paths.

The data are learnable (class-coded squares), so the teacher is right on nearly every image
and a broken model is not: on the CPU kind that wrote the file the comparison is bit for bit;
on another (other kernels sum floats in another order) the structure, every string and integer
must match, each accuracy within two test images, each AUC within 0.05, and the methods must
rank by test accuracy as before wherever the golden gap exceeds that tolerance."""

import json
from pathlib import Path

import pytest
import torch

from kr import pipeline
from kr.config import load_config
from tests.conftest import write_npz

GOLDEN = Path(__file__).parent / "golden" / "tiny_results.json"


def _untimed(x):
    if isinstance(x, dict):
        return {k: _untimed(v) for k, v in x.items() if k not in ("seconds", "timings_s", "run_dir", "report")}
    return [_untimed(v) for v in x] if isinstance(x, list) else x


N_TEST = 30
ACC = 2 / N_TEST  # two test images


def _close(a, b, path=""):
    """Same structure and strings; accuracies within two test images, AUCs within 0.05, other
    numbers (losses, distances, attack figures) within 20 %."""
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
        key = path.rsplit("/", 1)[-1]
        if key == "acc":
            assert abs(a - b) <= ACC + 1e-9, (path, a, b)
        elif key == "auc":
            assert abs(a - b) <= 0.05, (path, a, b)
        else:
            assert a == pytest.approx(b, rel=0.2, abs=0.1), path
    else:
        assert a == b, path


def _ranks_hold(results: dict, golden: dict) -> None:
    """Methods the golden run separated by more than the tolerance keep their order."""
    acc = {m: v["test"]["acc"] for m, v in golden["methods"].items()}
    got = {m: v["test"]["acc"] for m, v in results["methods"].items()}
    for a in acc:
        for b in acc:
            if acc[a] - acc[b] > 2 * ACC:
                assert got[a] > got[b], (a, b, got)


def tiny_run(tmp_path, threads: int) -> dict:
    import kr.synthetic
    from tests.toys import toy_dataset

    kr.synthetic._SHARED.clear()  # nothing that other tests' identical tiny runs left in this process
    toy = toy_dataset((60, 30, N_TEST))
    arrays = {}
    for s in ("train", "val", "test"):
        split = toy.split(s)
        arrays[f"{s}_images"] = ((split.images[:, 0] + 1) * 127.5).round().byte().numpy()
        arrays[f"{s}_labels"] = split.labels[:, None].numpy()
    small = write_npz(tmp_path / "squares.npz", arrays)
    # a teacher that learns the squares (the tiny preset's 2 steps would not): a broken one cannot
    # then pass for it; the students of a 0.2-kimg generator stay near chance, as tiny ones do
    config = load_config("tiny", data={"dataset": str(small)},
                         overrides=["dpsgd.epsilons=4", "teacher.train.epochs=12", "teacher.train.batch_size=16"])
    before = torch.get_num_threads()
    torch.set_num_threads(threads)  # float sums depend on the thread count
    try:
        results = _untimed(pipeline.run(config, out=tmp_path / "run", device="cpu"))
    finally:
        torch.set_num_threads(before)
    return json.loads(json.dumps(results))  # tuples as JSON writes them


@pytest.mark.slow  # end to end: a whole tiny run
def test_a_tiny_run_gives_the_results_it_gave_when_the_golden_file_was_written(tmp_path):
    golden = json.loads(GOLDEN.read_text())
    results = tiny_run(tmp_path, golden["threads"])
    assert golden["results"]["methods"]["real"]["test"]["acc"] >= 0.9  # the data are learnable
    if torch.backends.cpu.get_cpu_capability() == golden["cpu_capability"]:
        assert results == golden["results"]  # bit for bit on the CPU kind that made it
    else:  # other kernels: the same fields, numbers close, ranks kept
        _close(results, golden["results"])
        _ranks_hold(results, golden["results"])


if __name__ == "__main__":  # rewrite the golden file: ATEN_CPU_CAPABILITY=avx2 python -m tests.test_golden
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out = {"about": "results.json of the tiny run in tests/test_golden.py (class-coded squares), 1 thread, "
                        f"CPU capability {torch.backends.cpu.get_cpu_capability()}; wall-clock fields (seconds, "
                        "timings_s), run_dir and report paths left out",
               "cpu_capability": torch.backends.cpu.get_cpu_capability(), "threads": 1,
               "results": tiny_run(Path(tmp), 1)}
    GOLDEN.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {GOLDEN} ({out['cpu_capability']})")
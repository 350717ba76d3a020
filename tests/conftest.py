"""Shared fixtures: real MedMNIST files via $KR_DATA_DIR, and small hand-made .npz files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture
def medmnist_dir() -> Path:
    """The folder of real MedMNIST files; tests that need it skip, saying why, without it."""
    env = os.environ.get("KR_DATA_DIR")
    if not env or not (Path(env) / "breastmnist.npz").is_file():
        pytest.skip("real MedMNIST files not found: set KR_DATA_DIR to a folder holding "
                    "breastmnist.npz and pneumoniamnist.npz (CI uses ../shared/data/medmnist)")
    return Path(env)


@pytest.fixture(autouse=True, scope="session")
def _share_of_the_cores():
    """The test process counts as a kr process: beside a run or a benchmark, it takes its share
    of the cores instead of one thread per core each (kr.cores)."""
    from kr.cores import claim

    claim()


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Never read or write the user's real cache from tests."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))


def make_arrays(n=(12, 6, 6), size=28, channels=1, classes=2, seed=0) -> dict[str, np.ndarray]:
    """A MedMNIST-layout dict: uint8 images (N×H×W or N×H×W×C), (N, 1) labels covering every class."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, count in zip(("train", "val", "test"), n):
        shape = (count, size, size) if channels == 1 else (count, size, size, channels)
        out[f"{split}_images"] = rng.integers(0, 256, shape, dtype=np.uint8)
        out[f"{split}_labels"] = (np.arange(count) % classes).astype(np.uint8)[:, None]
    return out


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    np.savez(path, **arrays)
    return path


def pytest_collection_modifyitems(items):
    """Tests that read the shared tiny run (below) wait for a whole run: they are `slow`."""
    for item in items:
        if "finished_run" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory):
    """One tiny `kr run` (KR, the fixed-set baseline and DP-SGD) that report and release tests
    read but never change: (run directory, results, the .npz it trained on)."""
    from kr import pipeline
    from kr.config import load_config

    tmp = tmp_path_factory.mktemp("finished")
    small = write_npz(tmp / "small.npz", make_arrays(n=(40, 20, 20)))
    config = load_config("tiny", data={"dataset": str(small)},
                         overrides=["baselines=synthetic,dpsgd", "dpsgd.epsilons=4"])
    results = pipeline.run(config, out=tmp / "run", device="cpu")
    return tmp / "run", results, small


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """KR_NO_SKIPS=1 (CI sets it): a skipped test fails.  Locally a test whose optional tool
    (chromium, onnx, ray, the MedMNIST files) is missing skips, saying why; in CI, where
    .ci/run installs every one of them, a skip would mean a feature tested nowhere."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("KR_NO_SKIPS") and not hasattr(report, "wasxfail"):
        reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped, but KR_NO_SKIPS=1 (CI) requires every test to run: {reason}"

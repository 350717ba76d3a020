"""Executors (kr.executors): at the default settings a tiny run and a tiny audit give the same
numbers, every one of them, in this process, in local worker processes and on a local Ray
cluster (every stage runs with the config's thread count, whatever the executor); a dead worker
is reported, and a rerun resumes from the stages that finished."""

import json
import os
import signal

import pytest
import torch

from kr import pipeline
from kr.config import load_config
from kr.errors import KRError
from kr.executors import InProcess, LocalProcesses, make_executor, timed

STAGE_FILES = ("teacher", "methods/kr", "methods/synthetic", "methods/dpsgd-eps8")


@pytest.fixture
def one_thread():
    # the same numbers need the same thread count in every task (kr.executors' docstring)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _config():
    return load_config("tiny", overrides=["baselines=synthetic,dpsgd", "dpsgd.epsilons=8"])


def _numbers(results):
    return {m: (r["val"], r["test"]) for m, r in results["methods"].items()}


def _every_number(results):
    """results.json less wall-clock times and paths."""
    return _untimed({k: v for k, v in results.items() if k not in ("timings_s", "run_dir", "report")})


def _as_the_cli_makes(kind, config, tmp_path):
    return make_executor(kind, run_path=tmp_path, task_threads=config.threads)


def _untimed(x):
    if isinstance(x, dict):
        return {k: _untimed(v) for k, v in x.items() if k != "seconds"}
    return [_untimed(v) for v in x] if isinstance(x, list) else x


def _weights(run):
    return {s: (run / s / "model.safetensors").read_bytes() for s in STAGE_FILES}


@pytest.mark.slow  # end to end: a whole tiny run
@pytest.mark.parametrize("threads", [1, 2])
def test_processes_give_every_in_process_number_at_the_default_settings(tmp_path, threads):
    """No thread pinning in the test: the config's `threads` (the tiny preset's 1, the cpu
    preset's 2) is what every stage and every candidate runs with, in this process or a worker."""
    config = load_config("tiny", overrides=["baselines=synthetic,dpsgd", "dpsgd.epsilons=8", f"threads={threads}"])
    a = pipeline.run(config, out=tmp_path / "a", device="cpu")
    processes = _as_the_cli_makes("processes", config, tmp_path)
    assert processes.threads == threads and processes.workers == max(1, len(os.sched_getaffinity(0)) // threads)
    b = pipeline.run(config, out=tmp_path / "b", device="cpu", executor=processes)
    assert _every_number(a) == _every_number(b)
    assert _weights(tmp_path / "a") == _weights(tmp_path / "b")
    threads_of = {s: json.loads((tmp_path / "b" / s / "stage.json").read_text())["threads"] for s in STAGE_FILES}
    assert threads_of == dict.fromkeys(STAGE_FILES, threads)
    if threads == 2:
        return
    # the audit's reference runs in workers: the same audit as one after another here
    from kr.pipeline import audit

    overrides = ["audit.targets=real", "audit.references=4"]  # references train teachers only
    local = audit(tmp_path / "a", overrides, device="cpu", executor=InProcess())
    spread = audit(tmp_path / "b", overrides, device="cpu", executor=_as_the_cli_makes("processes", config, tmp_path))
    assert _every_number(local) == _every_number(spread)


def _die(_):
    os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.slow  # end to end: a whole tiny run
def test_a_killed_worker_is_reported_and_the_rerun_resumes(tmp_path, one_thread, monkeypatch, caplog):
    executor = LocalProcesses(workers=2, threads=2)
    with pytest.raises(KRError, match="worker process died.*rerun the same command"):
        executor.run([((_die, (0,)), None), ((_die, (1,)), None)])
    assert executor._pool is None  # a broken pool is dropped; the next wave starts a new one

    out = tmp_path / "run"
    real_run = LocalProcesses.run

    def dies_on_the_students(self, calls_):
        if any(getattr(stage, "name", None) == "methods/kr" for _, stage in calls_):  # the students' wave
            return real_run(self, [((_die, (0,)), None)] + list(calls_[1:]))
        return real_run(self, calls_)

    monkeypatch.setattr(LocalProcesses, "run", dies_on_the_students)
    with pytest.raises(KRError, match="worker process died"):
        pipeline.run(_config(), out=out, device="cpu", executor=LocalProcesses(workers=2, threads=2))
    monkeypatch.setattr(LocalProcesses, "run", real_run)
    caplog.set_level("INFO", logger="kr")
    pipeline.run(_config(), out=out, device="cpu", executor=LocalProcesses(workers=2, threads=2))
    for stage in ("teacher", "methods/dpsgd-eps8", "generator", "selection", "tuning"):
        assert f"{stage}: cached" in caplog.text, stage
    assert "methods/kr: cached" not in caplog.text


def test_timed_sets_threads_and_checks_the_shared_folder(tmp_path, one_thread):
    out, seconds, threads = timed(torch.get_num_threads, (), 1, str(tmp_path))
    assert out == threads == 1 and seconds >= 0
    with pytest.raises(KRError, match="filesystem every node shares"):
        timed(int, (), None, str(tmp_path / "not-here"))


@pytest.mark.slow  # end to end: a whole tiny run
def test_ray_gives_every_in_process_number_at_the_default_settings(tmp_path):
    ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install '.[ray]')")
    from kr.pipeline import audit

    config = _config()
    a = pipeline.run(config, out=tmp_path / "a", device="cpu")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        b = pipeline.run(config, out=tmp_path / "b", device="cpu", executor=_as_the_cli_makes("ray", config, tmp_path))
        assert _every_number(a) == _every_number(b) and _weights(tmp_path / "a") == _weights(tmp_path / "b")
        # the audit's reference runs as Ray tasks, against the same audit here
        overrides = ["audit.targets=real", "audit.references=4"]  # references train teachers only
        local = audit(tmp_path / "a", overrides, device="cpu", executor=InProcess())
        remote = audit(tmp_path / "b", overrides, device="cpu", executor=_as_the_cli_makes("ray", config, tmp_path))
        assert _every_number(local) == _every_number(remote)
    finally:
        ray.shutdown()


class _Counting(InProcess):
    """A toy executor: runs tasks here, counting them; rebuilt by its spec inside stages."""
    calls = 0

    def spec(self):
        return {"kind": "counting"}

    def run(self, calls):
        type(self).calls += len(calls)
        return super().run(calls)


@pytest.mark.slow  # end to end: a whole tiny run
def test_an_executor_registered_alone_serves_the_cli_and_the_pipeline(tmp_path, monkeypatch, one_thread):
    from click.testing import CliRunner

    from kr import cli, executors

    monkeypatch.setitem(executors.EXECUTORS, "counting", _Counting)
    assert isinstance(executors.make_executor("counting", workers=3, address=None), _Counting)
    config = load_config("tiny", overrides=["baselines=", "teacher.train.epochs=1"])
    pipeline.run(config, out=tmp_path / "r", device="cpu", executor=_Counting(), stages=("tuning",))
    # the stages, and selection's and tuning's candidates (through the spec) ran on it
    assert _Counting.calls >= 5
    with pytest.raises(KRError, match="unknown executor 'nope'.*counting"):
        executors.make_executor("nope")
    # the CLI's --executor choices are the registry's (built when the CLI module was)
    import importlib

    fresh = importlib.reload(cli)
    result = CliRunner().invoke(fresh.cli, ["run", "--help"])
    assert "counting" in result.output
    monkeypatch.undo()
    importlib.reload(cli)

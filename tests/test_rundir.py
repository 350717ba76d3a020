"""The run directory keeps users' files and admits one kr process at a time."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from kr.config import load_config
from kr.errors import KRError
from kr.rundir import LOCK_NAME, MARKER, RunDir, RunLock
from tests.toys import toy_dataset

HOLD = """
import sys, time
from pathlib import Path
from kr.rundir import RunLock
lock = RunLock(Path(sys.argv[1]))
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
"""


def _open(path, **kw):
    return RunDir(path, load_config("tiny"), toy_dataset(), **kw)


def _tree(path):
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


@pytest.mark.parametrize("stage", ["teacher", "evaluate", "methods"])
def test_a_folder_that_is_not_a_run_keeps_every_file(tmp_path, stage):
    (tmp_path / stage).mkdir()
    (tmp_path / stage / "notes.txt").write_text("mine")
    before = _tree(tmp_path)
    with pytest.raises(KRError, match="not a kr run directory.*new or empty folder"):
        _open(tmp_path)
    assert _tree(tmp_path) == before and (tmp_path / stage / "notes.txt").read_text() == "mine"


def _stage(run, name, inputs, out):
    """One stage as kr.graph.walk runs it: cached, else begun, then finished."""
    record = run.cached(name, inputs)
    if record is not None:
        return record["outputs"]
    run.begin(name, inputs)
    run.finish(name, inputs, out, 0.0, 1)
    return out


def test_a_stage_folder_kr_did_not_write_is_never_replaced(tmp_path):
    run = _open(tmp_path / "run")
    _stage(run, "teacher", {"a": 1}, {"ok": 1})
    assert _stage(run, "teacher", {"a": 1}, {"ok": "not run"}) == {"ok": 1}  # cached
    (tmp_path / "run" / "evaluate").mkdir()
    (tmp_path / "run" / "evaluate" / "notes.txt").write_text("mine")
    with pytest.raises(KRError, match="not written by kr"):
        _stage(run, "evaluate", {"b": 1}, {"ok": 1})
    assert (tmp_path / "run" / "evaluate" / "notes.txt").read_text() == "mine"
    # a reference run of an older kr's audit layout, where a stage now lives: said so, kept
    old = tmp_path / "run" / "audit" / "references" / "r0"
    old.mkdir(parents=True)
    (old / "manifest.json").write_text("{}")
    with pytest.raises(KRError, match="older kr's audit.*audit-old"):
        _stage(run, "audit/references/r0", {"c": 1}, {"ok": 1})
    assert (old / "manifest.json").is_file()
    # kr's own stage folder, with its key, is replaced when its inputs change
    assert _stage(run, "teacher", {"a": 2}, {"ok": 2}) == {"ok": 2}
    run.close()


def test_a_run_directory_is_marked_and_reopens(tmp_path):
    run = _open(tmp_path / "run")
    run.close()
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())[MARKER] == 1
    _open(tmp_path / "run").close()  # reopened: resume
    _open(tmp_path / "empty").close()
    (tmp_path / "legacy").mkdir()    # a run of kr before the marker: resumable
    (tmp_path / "legacy" / "manifest.json").write_text(json.dumps(
        {"versions": {"kr": "0.1.0"}, "stages": {}}))
    _open(tmp_path / "legacy").close()


def test_out_where_a_file_stands_is_a_clean_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(KRError, match="a file stands in its path"):
        _open(tmp_path / "file" / "run")


def test_one_process_at_a_time_and_no_stale_lock(tmp_path):
    run_path = tmp_path / "run"
    _open(run_path).close()
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run_path), "60"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(KRError, match=f"in use by another kr process \\(pid {holder.pid} .*--wait"):
            _open(run_path)
        holder.send_signal(signal.SIGKILL)  # killed mid-run: the kernel drops its lock
        holder.wait()
        _open(run_path).close()
    finally:
        holder.kill()
        holder.wait()


def test_wait_queues_behind_the_holder(tmp_path):
    (tmp_path / "run").mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / "run"), "1.5"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        start = time.perf_counter()
        lock = RunLock(tmp_path / "run", wait=True)
        assert time.perf_counter() - start > 0.5 and holder.wait(timeout=10) == 0
        info = json.loads((tmp_path / "run" / LOCK_NAME).read_text())
        assert info["pid"] == os.getpid()
        lock.release()
    finally:
        holder.kill()
        holder.wait()


def test_two_kr_runs_on_one_folder(tmp_path):
    """End to end: the second `kr run` on a folder in use stops with one line naming the first."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "kr", "teacher", "--dataset", "digits", "--preset", "tiny",
           "--out", str(out), "--device", "cpu", "--set", "teacher.train.epochs=30"]
    first = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(600):  # until the first has taken the lock
            if (out / "manifest.json").is_file():
                break
            time.sleep(0.05)
        second = subprocess.run(cmd, capture_output=True, text=True)
        assert second.returncode == 1 and "Traceback" not in second.stderr
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("kr: error:") and f"pid {first.pid}" in lines[0]
    finally:
        first.kill()
        first.wait()


def test_an_audit_is_current_only_for_the_model_contents_it_read(tmp_path):
    """A model retrained under the same key (secret DP noise draws anew; a damaged file was
    recomputed) makes an earlier audit stale: a record is current only while every stage it read
    has the content it read, and its own files match."""
    run = _open(tmp_path / "run")
    folder = run.begin("audit/x", {"a": 1})
    (folder / "scores.txt").write_text("0.6")
    run.finish("audit/x", {"a": 1}, {"auc": 0.6}, 0.0, 1, {"teacher": "weights-1"})
    try:
        assert run.current("audit/x", {"teacher": "weights-1", "other": "z"})["outputs"] == {"auc": 0.6}
        assert run.current("audit/x", {"teacher": "weights-2"}) is None  # retrained since
        assert run.current("audit/x", {}) is None  # what it read is not there now
        (folder / "scores.txt").write_text("0.5")
        assert run.current("audit/x", {"teacher": "weights-1"}) is None  # its own files changed
        assert run.current("audit/never", {}) is None
    finally:
        run.close()


def test_the_history_keeps_the_creation_and_marks_an_unrecorded_one():
    from kr.rundir import _history

    legacy = {"created": "2026-01-01T00:00:00+0000", "command": ["kr", "run"]}
    h = _history(legacy)
    assert h[0] == {"at": "2026-01-01T00:00:00+0000", "command": None} and len(h) == 2
    long = {"history": [{"at": str(i), "command": [str(i)]} for i in range(60)]}
    h = _history(long, keep=50)
    assert len(h) == 50 and h[0]["at"] == "0" and h[1]["at"] == "12"  # 61 with this one: creation + the last 49


def test_each_stage_records_the_commit_that_computed_it(tmp_path, monkeypatch):
    from pathlib import Path

    import kr.rundir as rundir

    here = Path(rundir.__file__).resolve().parent
    head = subprocess.run(["git", "-C", str(here), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    rundir.source.cache_clear()
    here_commit = rundir.source()
    if head.returncode == 0:  # a checkout: HEAD, marked when the source differs from it
        assert here_commit.split("+")[0] == head.stdout.strip()
    run = _open(tmp_path / "run")
    _stage(run, "teacher", {"a": 1}, {"ok": 1})
    monkeypatch.setattr(rundir, "source", lambda: "abc1234")  # the run resumed at another commit
    _stage(run, "generator", {"b": 1}, {"ok": 1})
    stages = json.loads((tmp_path / "run" / "manifest.json").read_text())["stages"]
    assert stages["teacher"]["source"] == here_commit and stages["generator"]["source"] == "abc1234"
    run.close()


def test_a_kr_installed_inside_another_repository_names_no_commit(tmp_path, monkeypatch):
    import importlib.util
    import shutil
    from pathlib import Path

    import kr.rundir as rundir

    # a user's project repository holding a venv with kr installed (not a checkout of kr)
    if subprocess.run(["git", "init", "-q", str(tmp_path)], capture_output=True).returncode != 0:
        pytest.skip("no git on this machine")
    installed = tmp_path / ".venv" / "site-packages" / "kr"
    installed.mkdir(parents=True)
    shutil.copy(Path(rundir.__file__), installed / "rundir.py")
    spec = importlib.util.spec_from_file_location("installed_rundir", installed / "rundir.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setenv("GIT_DIR", str(Path(rundir.__file__).resolve().parents[2] / ".git"))  # a hook's GIT_DIR
    assert module.source() is None

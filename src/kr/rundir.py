"""The run directory: one folder per run, the same layout every time (after EDM2).

    runs/<name>/config.yaml     resolved config (what to pass back with --config)
    runs/<name>/manifest.json   versions, command, seed, dataset fingerprint, stage keys
    runs/<name>/log.txt         the console log, appended across resumes
    runs/<name>/metrics.jsonl   one JSON line per epoch and stage event
    runs/<name>/<stage>/        one folder per stage of the method
    runs/<name>/results.json    the run's headline numbers

A stage is cached by a hash of its config and its inputs (never by its folder name): a
rerun reuses a finished stage whose key is unchanged, resumes an interrupted one, and
redoes one whose key changed, together with every stage that depends on it.  Its stage.json
also records the content hash of every file it wrote and of the stages it read (DVC's rule
for outputs): a stage whose files changed after they were recorded, or whose inputs were
recomputed since, is redone, and a model whose files no longer match is refused (`verify`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from kr.artifacts import read_json, versions, write_json, write_text
from kr.config import Config
from kr.data import ImageDataset
from kr.errors import KRError
from kr.models import load_classifier

log = logging.getLogger(__name__)


def stage_key(inputs: dict[str, Any]) -> str:
    payload = json.dumps(inputs, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


# manifest.json carries this key: it is what makes a folder a kr run directory, the only
# kind of folder whose contents kr deletes (a stage folder whose inputs changed).
MARKER = "kr_run_directory"
FORMAT = 1


class RunDir:
    def __init__(self, path: str | Path, config: Config, dataset: ImageDataset, wait: bool = False):
        self.path = Path(path)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise KRError(f"cannot create the run directory {self.path}: a file stands in its "
                          f"path; choose another --out") from None
        except PermissionError:
            raise KRError(f"cannot create the run directory {self.path}: permission denied; "
                          f"choose a writable --out") from None
        _check_is_run_directory(self.path)  # before writing anything into it
        self._lock = RunLock(self.path, wait)
        self._handler = logging.FileHandler(self.path / "log.txt")
        self._handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger = logging.getLogger("kr")
        if logger.level == logging.NOTSET:  # used as a library: log.txt still gets the INFO log
            logger.setLevel(logging.INFO)
        logger.addHandler(self._handler)
        write_text(self.path / "config.yaml", config.to_yaml())
        manifest = self.manifest()
        manifest.update({
            "versions": versions(),
            # float sums change order with the thread count: part of "same seed, same numbers";
            # every stage runs with the config's (kr.graph.call)
            "threads": config.threads,
            "command": sys.argv,
            "seed": config.seed,
            "preset": config.preset,
            "dataset": {"name": dataset.name, "source": dataset.source,
                        "fingerprint": dataset.fingerprint, "task": dataset.task,
                        "splits": {s: len(dataset.split(s)) for s in ("train", "val", "test")}},
            "created": manifest.get("created", _now()),
            "updated": _now(),
            # every command that opened the run, oldest first: "command" alone is only the last
            # one (a `kr audit` after the `kr run`), which a report must not pass off as the run's
            "history": _history(manifest),
            MARKER: FORMAT,
        })
        manifest.setdefault("stages", {})
        write_json(self.path / "manifest.json", manifest)
        log.info("run directory %s", self.path)

    def close(self) -> None:
        logging.getLogger("kr").removeHandler(self._handler)
        self._handler.close()
        self._lock.release()

    def manifest(self) -> dict[str, Any]:
        return read_manifest(self.path)

    def cached(self, name: str, inputs: dict[str, Any], upstream: dict[str, str] | None = None) -> dict | None:
        """A finished stage with this key whose files still match their recorded hashes and
        whose inputs' contents (`upstream`: {stage: content}) are those it read; its
        stage.json (key, seconds, outputs, files, content), or None: the stage must run."""
        key = stage_key(inputs)
        done = self.path / name / "stage.json"
        record = read_json(done) if done.is_file() else {}
        if record.get("key") != key:
            return None
        if "files" not in record:
            # written before kr recorded content hashes: nothing says its files are the ones it
            # wrote, so it is never trusted
            log.warning("%s: its stage record has no content hashes; recomputing the stage", name)
            return None
        changed = mismatched(done.parent, record["files"])
        if changed:
            log.warning("%s: %s changed since the stage recorded it; recomputing the stage", name, changed[0])
            return None
        moved = [n for n, c in (upstream or {}).items() if record.get("upstream", {}).get(n, c) != c]
        if moved:
            log.info("%s: its input %s was recomputed since; recomputing the stage", name, moved[0])
            return None
        log.info("%s: cached (key %s)", name, key)
        return record

    def record(self, name: str) -> dict | None:
        """A stage's stage.json as it stands (any key), or None."""
        path = self.path / name / "stage.json"
        return read_json(path) if path.is_file() else None

    def current(self, name: str, contents: dict[str, str]) -> dict | None:
        """A finished stage's record if it is current whatever its key: its files match their
        hashes and every stage it read is among `contents` ({stage: content}, what a request
        has now) with the content it read then.  How a request reads back an opt-in stage it
        did not run (kr.graph.walk): an audit of exactly today's models."""
        record = self.record(name)
        if record is None or "files" not in record:
            return None
        if any(contents.get(n) != c for n, c in record.get("upstream", {}).items()):
            return None
        return None if mismatched(self.path / name, record["files"]) else record

    def begin(self, name: str, inputs: dict[str, Any], nested: bool = False) -> Path:
        """The stage's folder, ready for its work: a folder of other inputs is discarded, one
        of the same inputs (an interrupted stage) kept for it to resume.  A `nested` stage's
        folder (a run directory of its own, which caches its own stages) is always kept: its
        run redoes only what changed."""
        key = stage_key(inputs)
        folder = self.path / name
        key_file = folder / "key"
        if nested and key_file.is_file():
            (folder / "stage.json").unlink(missing_ok=True)
        elif (folder / "stage.json").is_file() and key_file.is_file():
            # a finished stage being redone: its recorded files or inputs changed, so nothing in
            # it can be resumed from
            log.info("%s: discarding the stage folder whose files or inputs changed", name)
            shutil.rmtree(folder)
        elif folder.exists() and not (key_file.is_file() and key_file.read_text() == key):
            if not key_file.is_file():  # kr writes `key` first: without it the folder is not ours
                if (folder / "manifest.json").is_file():  # an audit run of an older kr, in today's stage folder
                    raise KRError(f"{folder} holds a run an older kr's audit left there (its layout has changed); "
                                  f"move {self.path / 'audit'} away (e.g. to {self.path / 'audit-old'}) and rerun")
                raise KRError(f"{folder} was not written by kr (it has no stage key), so kr will "
                              f"not replace it; move it away or choose another --out")
            log.info("%s: inputs changed, discarding the old stage folder", name)
            shutil.rmtree(folder)
        folder.mkdir(parents=True, exist_ok=True)
        write_text(key_file, key)
        return folder

    def finish(self, name: str, inputs: dict[str, Any], outputs: dict, seconds: float,
               threads: int, upstream: dict[str, str] | None = None) -> str:
        """Record a finished stage with the content hash of every file it wrote (only the
        process holding the run directory writes here); return its content hash."""
        key = stage_key(inputs)
        files = file_hashes(self.path / name)
        content = content_key(files, outputs)
        write_json(self.path / name / "stage.json", {"key": key, "seconds": seconds, "threads": threads,
                                                     "inputs": inputs, "outputs": outputs, "files": files,
                                                     "content": content, "upstream": upstream or {}})
        manifest = self.manifest()
        manifest.setdefault("stages", {})[name] = {"key": key, "seconds": seconds, "threads": threads,
                                                   "source": source()}
        write_json(self.path / "manifest.json", manifest)
        append_metrics(self.path, name, {"event": "done", "seconds": seconds})
        return content


RECORD_FILES = ("stage.json", "key")  # the record itself, not what the stage wrote


def content_key(files: dict[str, str], outputs: dict) -> str:
    """What a stage produced: its files' hashes and its JSON outputs (a stage such as evaluate
    writes no file; a recompute that changes its outputs must reach the stages that read it)."""
    return stage_key({"files": files, "outputs": outputs})


def file_hashes(folder: Path) -> dict[str, str]:
    """{path relative to the folder: sha256} of every file a stage left in its folder."""
    return {p.relative_to(folder).as_posix(): _sha256(p) for p in sorted(Path(folder).rglob("*"))
            if p.is_file() and p.name not in RECORD_FILES}


def mismatched(folder: Path, files: dict[str, str]) -> list[str]:
    """The recorded files that are missing or whose content changed."""
    return [name for name, digest in files.items()
            if not (Path(folder) / name).is_file() or _sha256(Path(folder) / name) != digest]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify(folder: str | Path, what: str = "model") -> None:
    """Refuse a stage's folder (a model, before it is attacked or released) whose files do not
    match what its stage recorded: one line saying which file and what to do."""
    folder = Path(folder)
    record_path = folder / "stage.json"
    if not record_path.is_file():
        raise KRError(f"{folder} has no stage record (stage.json): it did not finish; rerun `kr run`")
    record = read_json(record_path)
    if "files" not in record:  # finished before kr recorded hashes: nothing to check it against
        raise KRError(f"{folder}/stage.json records no content hashes (an older kr wrote it), so nothing "
                      f"shows its files are the ones trained; rerun `kr run` on the run to retrain it")
    changed = mismatched(folder, record["files"])
    if changed:
        raise KRError(f"{folder}/{changed[0]} no longer matches what its stage recorded: the {what} was "
                      f"changed or damaged after training; rerun `kr run` on the run to retrain it")


def load_verified(folder: str | Path):
    """A stage's classifier, once its files match its record: the one path by which a model is
    loaded to be attacked (kr.audit, kr.canaries, kr.shipped_audit)."""
    verify(folder)
    return load_classifier(folder)


def append_metrics(run: str | Path, stage: str, record: dict[str, Any]) -> None:
    """One line of metrics.jsonl.  Small appends: safe from several processes (kr.executors)."""
    with open(Path(run) / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"stage": stage, "time": round(time.time(), 3), **record}) + "\n")


# --- reading a run directory (what RunDir writes) --------------------------------------------

def stage_outputs(run: str | Path, name: str) -> dict | None:
    """A finished stage's outputs (its stage.json), or None if it has not finished."""
    path = Path(run) / name / "stage.json"
    return read_json(path)["outputs"] if path.is_file() else None


def read_results(run: str | Path, needed_for: str) -> dict:
    """results.json, or a one-line error saying the run must finish first."""
    path = Path(run) / "results.json"
    if not path.is_file():
        raise KRError(f"{run} has no results.json: run `kr run` to completion before {needed_for} "
                      f"(rerun the same command to resume)")
    return read_json(path)


def read_manifest(run: str | Path) -> dict:
    path = Path(run) / "manifest.json"
    return read_json(path) if path.is_file() else {}


def read_config_tree(run: str | Path) -> dict:
    """config.yaml as written (a plain tree: configs of older kr versions may not validate)."""
    path = Path(run) / "config.yaml"
    return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}


def _check_is_run_directory(path: Path) -> None:
    """An existing, non-empty folder must be a kr run directory: kr replaces stage folders in
    one, and would otherwise delete a user's files that happen to bear a stage's name."""
    if not any(e.name != LOCK_NAME for e in path.iterdir()):
        return
    try:
        manifest = read_json(path / "manifest.json")
    except (OSError, ValueError):
        manifest = None
    # runs of kr before the marker existed: a manifest with kr's version stamp and stage table
    legacy = isinstance(manifest, dict) and "stages" in manifest and "kr" in manifest.get("versions", {})
    if not (isinstance(manifest, dict) and MARKER in manifest or legacy):
        raise KRError(f"{path} is not empty and is not a kr run directory (no manifest.json "
                      f"written by kr); kr writes into a run directory and replaces its stage "
                      f"folders, so choose a new or empty folder for --out")


LOCK_NAME = ".kr.lock"


class RunLock:
    """One kr process at a time in a run directory: an advisory lock (flock) on RUN/.kr.lock,
    which holds who took it.  The kernel releases a flock when its process dies, so a killed
    run never leaves a stale lock behind; the holder's details are only for the message."""

    def __init__(self, path: Path, wait: bool = False):
        self.file = path / LOCK_NAME
        self._fd: int | None = None
        try:
            import fcntl
        except ImportError:  # not POSIX: run unlocked
            return
        fd = os.open(self.file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(self.file)
            if not wait:
                os.close(fd)
                raise KRError(f"{path} is in use by another kr process ({holder}); wait for it "
                              f"to finish, or rerun with --wait to queue behind it") from None
            log.info("%s is in use (%s); waiting for it", path, holder)
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "command": " ".join(sys.argv), "since": _now()}).encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None


def _holder(file: Path) -> str:
    try:
        h = json.loads(file.read_text() or "{}")
        return f"pid {h['pid']} on {h['host']}, since {h['since']}: {h['command']}"
    except (OSError, ValueError, KeyError):
        return "its details are unreadable"


@functools.lru_cache(maxsize=1)
def source() -> str | None:
    """The git commit of the kr source that ran ("+changes" when it differs from that commit), or
    None for an installed package: a run resumed across commits records which computed each stage."""
    import subprocess

    here = Path(__file__).resolve().parent
    # not a GIT_DIR set by a hook, and not a repository that merely holds a venv with kr installed:
    # only a checkout that tracks this very file names kr's commit
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", str(here), *args], capture_output=True, text=True, timeout=10, env=env)

    try:
        if git("ls-files", "--error-unmatch", Path(__file__).name).returncode != 0:
            return None
        head, status = git("rev-parse", "--short", "HEAD"), git("status", "--porcelain", "--", ".")
    except (OSError, subprocess.SubprocessError):  # no git on this machine
        return None
    if head.returncode != 0 or status.returncode != 0:
        return None
    return head.stdout.strip() + ("+changes" if status.stdout.strip() else "")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _history(manifest: dict[str, Any], keep: int = 50) -> list[dict]:
    """The commands that opened the run, this one appended: the first (the run's creation) and
    the last `keep` − 1. A run directory from before the history was kept starts it with its
    creation time and an unrecorded command, so no later command passes for the one that made it."""
    history = manifest.get("history")
    if history is None:
        history = [{"at": manifest["created"], "command": None}] if "created" in manifest else []
    history = history + [{"at": _now(), "command": sys.argv}]
    return history[:1] + history[1:][-(keep - 1):]

"""The run directory: one folder per run, the same layout every time (after EDM2).

    runs/<name>/config.yaml     resolved config (what to pass back with --config)
    runs/<name>/manifest.json   versions, command, seed, dataset fingerprint, stage keys
    runs/<name>/log.txt         the console log, appended across resumes
    runs/<name>/metrics.jsonl   one JSON line per epoch and stage event
    runs/<name>/<stage>/        one folder per stage of the method
    runs/<name>/results.json    the run's headline numbers

A stage is cached by a hash of its config and its inputs (never by its folder name): a
rerun reuses a finished stage whose key is unchanged, resumes an interrupted one, and
redoes one whose key changed, together with every stage that depends on it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

from kr.artifacts import read_json, versions, write_json, write_text
from kr.config import Config
from kr.data import ImageDataset

log = logging.getLogger(__name__)


def stage_key(inputs: dict[str, Any]) -> str:
    payload = json.dumps(inputs, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


class RunDir:
    def __init__(self, path: str | Path, config: Config, dataset: ImageDataset):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
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
            # float sums change order with the thread count: part of "same seed, same numbers"
            "threads": torch.get_num_threads(),
            "command": sys.argv,
            "seed": config.seed,
            "preset": config.preset,
            "dataset": {"name": dataset.name, "source": dataset.source,
                        "fingerprint": dataset.fingerprint, "task": dataset.task,
                        "splits": {s: len(dataset.split(s)) for s in ("train", "val", "test")}},
            "created": manifest.get("created", _now()),
            "updated": _now(),
        })
        manifest.setdefault("stages", {})
        write_json(self.path / "manifest.json", manifest)
        log.info("run directory %s", self.path)

    def close(self) -> None:
        logging.getLogger("kr").removeHandler(self._handler)
        self._handler.close()

    def manifest(self) -> dict[str, Any]:
        path = self.path / "manifest.json"
        return read_json(path) if path.is_file() else {}

    def log_metrics(self, stage: str, record: dict[str, Any]) -> None:
        with open(self.path / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"stage": stage, "time": round(time.time(), 3), **record}) + "\n")

    def stage(self, name: str, inputs: dict[str, Any], fn: Callable[[Path], dict]) -> dict:
        """Run `fn(folder)` unless a finished stage with the same key exists; return its outputs."""
        key = stage_key(inputs)
        folder = self.path / name
        done = folder / "stage.json"
        if done.is_file() and read_json(done).get("key") == key:
            log.info("%s: cached (key %s)", name, key)
            return read_json(done)["outputs"]
        key_file = folder / "key"
        if folder.exists() and not (key_file.is_file() and key_file.read_text() == key):
            log.info("%s: inputs changed, discarding the old stage folder", name)
            shutil.rmtree(folder)
        folder.mkdir(parents=True, exist_ok=True)
        write_text(key_file, key)
        start = time.perf_counter()
        outputs = fn(folder)
        seconds = round(time.perf_counter() - start, 2)
        threads = torch.get_num_threads()
        write_json(done, {"key": key, "seconds": seconds, "threads": threads, "inputs": inputs,
                          "outputs": outputs})
        manifest = self.manifest()
        manifest.setdefault("stages", {})[name] = {"key": key, "seconds": seconds, "threads": threads}
        write_json(self.path / "manifest.json", manifest)
        self.log_metrics(name, {"event": "done", "seconds": seconds})
        return outputs


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")

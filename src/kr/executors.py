"""Where tasks run: this process, local worker processes, or a Ray cluster.

A task is a module-level function and its (picklable) arguments; the pipeline hands over
independent stages (the baselines and DP-SGD models once tuning is done), `kr audit` its
reference runs.  Every task returns (outputs, seconds, threads).  Artifacts travel through
the filesystem: a task writes into its run directory and returns only JSON outputs, so on a
Ray cluster every node must see the run directory at the same path (a shared filesystem); a
task that cannot see it stops with a message that says so.

Numbers: the same seed gives the same numbers under every executor because every stage runs
with the thread count its run's config fixes (`threads`; floats are summed in another order
with another count): the graph sets it inside each task (kr.graph.call), and an executor made
for a run gives each task that many threads (`task_threads`) and, by default, as many workers
as the cores hold such tasks.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from kr.cores import available_cores
from kr.errors import KRError

Task = tuple[Callable[..., Any], tuple]


def timed(fn: Callable[..., Any], args: tuple, threads: int | None = None,
          run_path: str | None = None) -> tuple[Any, float, int]:
    """Run one task where it lands: its thread count first, then the work, timed."""
    import time

    if run_path is not None and not Path(run_path).is_dir():
        import socket

        raise KRError(f"{run_path} is not visible on {socket.gethostname()}: the ray executor "
                      f"needs the run directory on a filesystem every node shares (NFS, a cloud "
                      f"bucket mount) at the same path; use --out on such a filesystem")
    if threads:
        torch.set_num_threads(threads)
    start = time.perf_counter()
    out = fn(*args)
    return out, round(time.perf_counter() - start, 2), torch.get_num_threads()


class InProcess:
    """Today's behaviour: one task after another, in this process, with its threads."""

    def __init__(self, **options):  # the CLI's options of other executors do not apply
        pass

    def spec(self) -> dict | None:
        """How a stage rebuilds this executor for its own tasks, as make_executor's keyword
        arguments (None: run them inline)."""
        return None

    def run(self, calls: Sequence[tuple[Task, Any]]) -> list[tuple[Any, float, int]]:
        return [timed(fn, args) for (fn, args), _ in calls]

    def close(self) -> None:
        pass


def _init_worker(level: int) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")


class LocalProcesses:
    """A pool of `workers` spawned processes.  Each task gets `task_threads` threads where the
    run fixes them (default workers: as many as the cores hold), else cores ÷ workers.  A wave
    of one task runs here instead: a worker would only add start-up."""

    def __init__(self, workers: int | None = None, threads: int | None = None,
                 task_threads: int | None = None, **options):
        cores = threads or available_cores()
        self.workers = max(1, workers or (cores // task_threads if task_threads else cores))
        self.threads = task_threads or max(1, cores // self.workers)
        self._pool = None

    def spec(self) -> dict | None:
        return {"kind": "processes", "workers": self.workers}

    def run(self, calls: Sequence[tuple[Task, Any]]) -> list[tuple[Any, float, int]]:
        if len(calls) == 1 and self.threads == torch.get_num_threads():
            (fn, args), _ = calls[0]
            return [timed(fn, args)]
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor
        from concurrent.futures.process import BrokenProcessPool

        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                self.workers, mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker, initargs=(logging.getLogger("kr").getEffectiveLevel(),))
        futures = [self._pool.submit(timed, fn, args, self.threads) for (fn, args), _ in calls]
        try:
            return [f.result() for f in futures]
        except BrokenProcessPool:
            self.close()
            raise KRError(f"a worker process died (killed, or out of memory) while running "
                          f"{len(calls)} task(s); finished stages are kept: rerun the same "
                          f"command to resume") from None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None


class RayExecutor:
    """Tasks on a Ray cluster (`pip install 'knowledge-recycling[ray]'`): each declares its
    CPUs (and a GPU where it trains a network and the cluster has GPUs); its worker sizes
    PyTorch's thread pool to the CPUs it was given.  A task whose worker dies is retried once."""

    def __init__(self, address: str | None = None, task_cpus: int | None = None,
                 gpus_per_task: float | None = None, run_path: str | Path | None = None,
                 task_threads: int | None = None, **options):
        try:
            import ray
        except ImportError:
            raise KRError("the ray executor needs Ray: pip install 'knowledge-recycling[ray]'") from None
        address = address or os.environ.get("RAY_ADDRESS")
        if not ray.is_initialized():
            ray.init(address=address, log_to_driver=False, include_dashboard=False)
        self.ray = ray
        self.cpus = max(1, int(task_cpus or task_threads or 1))  # a task's CPUs: its threads
        total = ray.cluster_resources()
        self.gpus = gpus_per_task if gpus_per_task is not None else (1 if total.get("GPU", 0) else 0)
        self.run_path = str(run_path) if run_path is not None else None
        self._remote = ray.remote(max_retries=1)(timed)
        self.address = address

    def spec(self) -> dict | None:
        return {"kind": "ray", "address": self.address, "run_path": self.run_path, "task_cpus": self.cpus}

    def run(self, calls: Sequence[tuple[Task, Any]]) -> list[tuple[Any, float, int]]:
        refs = [self._remote.options(num_cpus=self.cpus,
                                     num_gpus=self.gpus if getattr(stage, "trains", True) else 0)
                .remote(fn, args, self.cpus, self.run_path) for (fn, args), stage in calls]
        try:
            return self.ray.get(refs)
        except self.ray.exceptions.RayTaskError as exc:
            cause = exc.cause if isinstance(getattr(exc, "cause", None), BaseException) else None
            if isinstance(cause, KRError):
                raise KRError(str(cause)) from None
            raise
        except self.ray.exceptions.WorkerCrashedError:
            raise KRError("a Ray worker died twice while running a task; finished stages are "
                          "kept: rerun the same command to resume") from None

    def close(self) -> None:
        pass


# Every executor, by the name `--executor` takes: the CLI's choices and make_executor read this.
# An executor takes the CLI's options as keywords (workers, address, run_path, task_cpus) and
# ignores those that are not its own; `spec()` gives them back, so a stage can rebuild it.
EXECUTORS: dict[str, type] = {"inprocess": InProcess, "processes": LocalProcesses, "ray": RayExecutor}


def make_executor(kind: str = "inprocess", **options: Any):
    if kind not in EXECUTORS:
        raise KRError(f"unknown executor {kind!r}: use one of {', '.join(EXECUTORS)}")
    return EXECUTORS[kind](**options)

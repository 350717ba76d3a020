"""Each `kr` process sizes PyTorch's thread pool to its share of the machine's cores.

PyTorch's default is one thread per core in every process.  Two or three `kr` processes side
by side (a run beside an audit, the tests beside a benchmark) then run 4–6 threads on 2
cores, and OpenMP's spinning threads slowed a tiny reference run from 15 s to 47–175 s
(issue 13).  So every `kr` process registers itself in a per-user folder of live processes
and takes `cores // live` threads (at least one), where `cores` are the cores it may run on.

A process sizes its pool once, when it starts (or when an executor hands it a share), never
in the middle of a stage: a float sum's order depends on the thread count, so a stage's
numbers are reproducible for a given thread count, which the run's manifest records.
`--threads N` (or OMP_NUM_THREADS, or KR_THREADS) fixes the count instead.
"""

from __future__ import annotations

import atexit
import logging
import os
import tempfile
from pathlib import Path

import torch

log = logging.getLogger(__name__)


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS tells it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def registry() -> Path:
    return Path(tempfile.gettempdir()) / f"kr-processes-{os.getuid() if hasattr(os, 'getuid') else 0}"


def _start_time(pid: int) -> str | None:
    """The process's start time (Linux), so a recycled pid is not taken for a live kr process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int, started: str) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process with that pid: not ours
        return False
    now = _start_time(pid)
    return now is None or not started or now == started


def live_processes(folder: Path | None = None) -> list[int]:
    """Pids of the registered kr processes still running; stale entries are removed."""
    folder = folder or registry()
    live = []
    for entry in folder.glob("*.pid") if folder.is_dir() else ():
        try:
            pid, started = int(entry.stem), entry.read_text().strip()
        except (OSError, ValueError):
            continue
        if _alive(pid, started):
            live.append(pid)
        else:
            entry.unlink(missing_ok=True)
    return sorted(live)


def register(folder: Path | None = None) -> Path | None:
    """Add this process to the registry until it exits."""
    folder = folder or registry()
    entry = folder / f"{os.getpid()}.pid"
    if entry.is_file():
        return entry
    try:
        folder.mkdir(parents=True, exist_ok=True)
        entry.write_text(_start_time(os.getpid()) or "")
    except OSError:  # a read-only temp folder: share nothing rather than fail
        return None
    atexit.register(entry.unlink, missing_ok=True)
    return entry


def pinned_threads() -> int | None:
    """A thread count the user fixed (KR_THREADS, else OMP_NUM_THREADS), if any."""
    for name in ("KR_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(name, "").strip()
        if value:
            try:
                return max(1, int(value))
            except ValueError:
                log.warning("ignoring %s=%r: not an integer", name, value)
    return None


def claim(threads: int | None = None) -> int:
    """Register this process and size its thread pool: `threads` if given, else a pinned
    count from the environment, else its share of the cores among live kr processes."""
    register()
    n = threads or pinned_threads()
    if n is None:
        n = max(1, available_cores() // max(1, len(live_processes())))
    set_threads(n)
    return n


def set_threads(n: int) -> None:
    torch.set_num_threads(max(1, int(n)))
    # Interop threads matter only for parallel graph ops; one per intra-op thread at most.
    try:
        torch.set_num_interop_threads(max(1, int(n)))
    except RuntimeError:  # can only be set before the first parallel work; harmless after
        pass

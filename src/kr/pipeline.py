"""`kr run` and `kr audit`: the Knowledge Recycling method, step by step, with each stage cached.

    prepare   load and validate the dataset, resolve the config, open the run directory
    teacher   step 1: a classifier on the real train split, selected on validation
    generator step 2: a class-conditional generator, checkpointed every checkpoint_kimg
    judge, quality   each checkpoint judged on validation by classifiers it was not trained against
    selection step 3: the checkpoint whose synthetic data trains the best short student (val)
    tuning    step 4: the generator's knob and the sample-filtering threshold (val)
    kr        step 5: the GKD student, on regenerated, teacher-labelled synthetic images
    synthetic, regen, soft, dpsgd   the comparisons of step 6
    evaluate  step 6: every method's test ACC/AUC, read once, after every choice is made
    audit     step 6, privacy: reference-free attacks on the shipped models and the memorisation
              check; `kr audit` adds the opt-in audits: reference runs and their attacks, or the
              one-run canary audit
    results   results.json, folded from what each stage publishes
    report    RUN/report/report.html and report.md (kr.report)

Each stage is declared once, in `stage_graph` (kr.stages), and reads only its declared inputs
and config slice.  It is cached under a key that hashes that slice and the keys of the stages
it reads, so a rerun resumes, and a changed setting reruns only its stage and those
downstream.  `kr audit` runs the same graph on the same run directory, with its opt-in stages
asked for: one owner of the run directory, one lock, one writer of results.json.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Iterable

import torch

from kr import __version__
from kr.audit import load_run
from kr.config import Config
from kr.data import ImageDataset, load_dataset
from kr.errors import KRError
from kr.executors import InProcess
from kr.graph import keys, request, walk
from kr.rundir import RunDir
from kr.stages import Context, stage_graph, stage_names  # noqa: F401  (the pipeline's API)
from kr.train import resolve_device

log = logging.getLogger(__name__)

REFERENCE_AUDIT = ("audit/attacks",)
CANARY_AUDIT = ("audit/canaries/score",)


def default_run_name(config: Config) -> str:
    """Deterministic, so rerunning the same command finds (and resumes) the same folder."""
    return f"{Path(config.data.dataset).stem}-{config.preset}-s{config.seed}"


def prepare(config: Config, data_dir: str | None) -> ImageDataset:
    data = load_dataset(config.data.dataset, data_dir=data_dir, size=config.data.size)
    if data.multi_label:
        log.warning("%s is multi-label: the teacher supports it, the class-conditional "
                    "generator and distillation stages do not yet", data.name)
    return data


def run(config: Config, out: str | Path | None = None, data_dir: str | None = None,
        device: str = "auto", stages: Iterable[str] | None = None,
        data: ImageDataset | None = None, wait: bool = False, executor=None,
        audits: Iterable[str] = (), renew: Iterable[str] = (), finished: bool = False) -> dict:
    """Run the requested stages (names or groups, kr.graph.request; None: all but the opt-in
    audits) and what they need (dataset validated before anything is written), plus the opt-in
    `audits` asked for, and return results.json's contents.  `data` replaces the configured
    dataset: an audit's replays pass a pool subset.  `wait`: queue behind another kr process
    using the run directory instead of stopping.  `executor` (kr.executors): where independent
    stages run.  `renew`: stages to run anew though cached (fresh canaries).  `finished`: the
    requested stages that train must all be finished already (`kr audit` retrains nothing of
    the run it audits)."""
    dev = str(resolve_device(device))
    start = time.perf_counter()
    data = data if data is not None else prepare(config, data_dir)
    config = config.resolved(len(data.train))  # an audit's replays get it resolved already
    prepare_s = round(time.perf_counter() - start, 2)
    graph = stage_graph(config)
    audits = tuple(audits)
    asked = set(request(graph, stages)) | (set(request(graph, audits)) if audits else set())
    order = [n for n in graph if n in asked]
    run_dir = RunDir(out or Path("runs") / default_run_name(config), config, data, wait=wait)
    executor = executor or InProcess()
    threads = torch.get_num_threads()  # every stage sets config.threads (kr.graph.call): restored after
    try:
        key_inputs = keys(graph, order, config.to_dict(), {"kr": __version__, "data": data.fingerprint})
        ctx = Context(data, config, dev, run_dir.path, executor.spec(), prepare_s, replay=run)
        frozen = [n for n in request(graph, stages) if graph[n].trains and graph[n].cached] if finished else ()
        done = walk(graph, order, key_inputs, run_dir, executor, ctx, renew, frozen)
        results = done["results"].outputs
        if done.get("report") and "report" in done["report"].outputs:
            results["report"] = done["report"].outputs["report"]
        return results
    finally:
        torch.set_num_threads(threads)
        executor.close()
        run_dir.close()


def audit(run_dir: str | Path, overrides=(), data_dir: str | None = None, device: str = "auto",
          canaries: int | None = None, replant: bool = False, executor=None, wait: bool = False) -> dict:
    """`kr audit RUN`: the run's own graph (its config.yaml, audit.* `overrides`) with the
    reference audit, or with `canaries` M the one-run canary audit, asked for; every stage the
    run has finished is read back, so the audit trains only what it adds."""
    if replant and canaries is None:
        raise KRError("--replant plants fresh canaries: give their number with --canaries M")
    if canaries is not None and canaries < 2:
        raise KRError(f"--canaries {canaries}: plant at least 2 canaries (a few hundred, up to the "
                      f"test split's size, for a useful bound)")
    if canaries is not None:
        overrides = (*overrides, f"audit.canaries={canaries}")
    config, data, _ = load_run(Path(run_dir), overrides, data_dir)
    return run(config, out=run_dir, device=device, data=data, wait=wait, executor=executor,
               audits=CANARY_AUDIT if canaries is not None else REFERENCE_AUDIT,
               renew=("audit/canaries/plant",) if replant else (), finished=True)

"""The `kr` command line: a thin layer that resolves options and calls the library."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click
import numpy as np

from kr.config import PRESETS, Config, load_config
from kr.errors import KRError
from kr.executors import EXECUTORS
from kr.generators import BACKENDS, sampling_knobs

log = logging.getLogger("kr")


def _executor_options():
    return [
        click.option("--executor", type=click.Choice(list(EXECUTORS)), default="inprocess",
                     show_default=True, help="Where independent stages (baselines, DP-SGD models; the "
                     "audit's reference runs) run: here one after another, in local worker processes, "
                     "or as tasks on a Ray cluster."),
        click.option("--workers", type=click.IntRange(min=1), default=None,
                     help="processes: worker processes [default: as many as the cores hold tasks of the run's "
                          "`threads`]."),
        click.option("--ray-address", default=None, metavar="ADDRESS",
                     help="ray: the cluster to join (e.g. auto, ray://head:10001) [default: RAY_ADDRESS, "
                          "else a local Ray started for this command]."),
        click.option("--task-cpus", type=click.IntRange(min=1), default=None,
                     help="ray: CPUs each task asks for [default: the run's `threads`, which every stage "
                          "runs with]."),
    ]


def _executor(executor, workers, ray_address, task_cpus, run_path, threads=None):
    """The executor for a run whose stages run with `threads` threads each (config.threads)."""
    from kr.executors import make_executor

    return make_executor(executor, workers=workers, address=ray_address, run_path=run_path,
                         task_cpus=task_cpus, task_threads=threads)


def _apply(options):
    def decorate(f):
        for option in reversed(options):
            f = option(f)
        return f
    return decorate


def _run_options(f):
    options = [
        click.option("--data-dir", type=click.Path(file_okay=False), default=None,
                     help="Folder holding MedMNIST .npz files (else $KR_DATA_DIR, the cache, or download)."),
        click.option("--preset", type=click.Choice(list(PRESETS)), default="cpu", show_default=True,
                     help="tiny: seconds, for tests; cpu: minutes on a laptop; paper: paper scale, for GPUs."),
        click.option("--out", type=click.Path(file_okay=False), default=None,
                     help="Run directory [default: runs/<dataset>-<preset>-s<seed>]; rerun to resume."),
        click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
                     help="YAML file of config overrides (e.g. a previous run's config.yaml)."),
        click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                     help="Override one config value, e.g. --set teacher.train.epochs=10 (repeatable)."),
        click.option("--seed", type=int, default=None, help="Root seed (default 0)."),
        click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
                     show_default=True, help="auto picks CUDA when PyTorch sees a GPU."),
        click.option("--dry-run", is_flag=True, help="Print the resolved config and exit."),
        click.option("--wait", is_flag=True,
                     help="If another kr process is using the run directory, wait for it instead of stopping."),
        *_executor_options(),
    ]
    for option in reversed(options):
        f = option(f)
    return f


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="PyTorch threads of this process [default: KR_THREADS, else OMP_NUM_THREADS, "
                   "else this process's share of the cores among running kr processes].")
@click.version_option(package_name="knowledge-recycling")
def cli(verbose: bool, threads: int | None) -> None:
    """Knowledge Recycling: classifiers trained on synthetic data, with a privacy audit."""
    from kr.cores import claim

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.DEBUG if verbose else logging.INFO)
    log.debug("using %d PyTorch threads", claim(threads))


def _execute(dataset, data_dir, preset, out, config_file, overrides, seed, device, dry_run, wait,
             stages, executor, workers, ray_address, task_cpus, kind=None, methods=None):
    from kr import pipeline
    from kr.report import summary_table

    if methods is not None:
        overrides = (*overrides, f"baselines={methods}")
    config = load_config(preset, config_file, overrides, seed=seed,
                         data={"dataset": dataset} if dataset else None,
                         generator={"kind": kind} if kind else None)
    if dry_run:
        click.echo(config.to_yaml(), nl=False)
        return
    out = out or str(Path("runs") / pipeline.default_run_name(config))
    results = pipeline.run(config, out=out, data_dir=data_dir, device=device, stages=stages, wait=wait,
                           executor=_executor(executor, workers, ray_address, task_cpus, Path(out).absolute(),
                                              config.threads))
    click.echo(summary_table(results))


@cli.command()
@click.option("--dataset", default=None,
              help="A dataset name (`kr data list`), a MedMNIST-style .npz, or a folder of images (one folder per "
                   "class, optionally under train/ val/ test/; see `kr data import`) [default: digits, offline].")
@click.option("--methods", default=None, metavar="A,B",
              help="The comparisons besides the teacher and KR [default: synthetic,dpsgd]; add the ablations "
                   "(regen, soft) or the label-channel students (kr-t1, kr-t4, kr-top1, kr-one, kr-dp), e.g. "
                   "--methods synthetic,regen,kr-top1,dpsgd (the config's `baselines`).")
@_run_options
def run(**kw):
    """Run Knowledge Recycling: teacher → generator → checkpoint optimisation → tuning →
    GKD student and baselines → evaluation. Rerun the same command to resume."""
    _execute(**kw, stages=None)


@cli.command()
@click.option("--dataset", required=True,
              help="A dataset name (see `kr data list`), a .npz path, or a folder of images (see `kr data import`).")
@_run_options
def teacher(**kw):
    """Train the teacher: a classifier on the real train split, selected on validation."""
    _execute(**kw, stages=("teacher",))


@cli.command()
@click.option("--dataset", required=True,
              help="A dataset name (see `kr data list`), a .npz path, or a folder of images (see `kr data import`).")
@click.option("--kind", type=click.Choice(list(BACKENDS)), default=None,
              help="Generator backend [default: the config's generator.kind, gan].")
@_run_options
def generator(**kw):
    """Train a class-conditional generator, and judge its checkpoints (teacher, independent judge, downstream)."""
    _execute(**kw, stages=("teacher", "generator", "quality"))


@cli.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--n", "n", type=click.IntRange(min=1), default=64, show_default=True,
              help="Number of images (split evenly over classes unless --class is given).")
@click.option("--class", "cls", type=int, default=None, help="Only this class.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--checkpoint", default=None, help="Checkpoint name [default: selected, else last].")
@_apply([click.option(f"--{k}", type=t, default=None, help=h) for k, (t, h) in sampling_knobs().items()])
@click.option("--out", type=click.Path(dir_okay=False), required=True,
              help="Output: .png for a grid (one row per class), .npz for images and labels.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto")
def sample(run_dir, n, cls, seed, checkpoint, out, device, **knobs):
    """Sample images from a trained generator (a run directory or a checkpoint folder)."""
    from pathlib import Path

    import torch

    from kr.artifacts import write_npz
    from kr.generation import checkpoint_folder
    from kr.generators import load_generator
    from kr.quality import save_grid
    from kr.train import resolve_device

    if not out.endswith((".png", ".npz")):
        raise KRError(f"--out {out}: use a .png (grid) or .npz (arrays) file name")
    gen = load_generator(checkpoint_folder(run_dir, checkpoint)).to(resolve_device(device))
    knobs = {k: v for k, v in knobs.items() if v is not None}  # each backend's (kr.generators)
    if cls is not None:
        if not 0 <= cls < gen.n_classes:
            raise KRError(f"--class {cls}: this generator has classes 0–{gen.n_classes - 1}")
        labels, rows = torch.full((n,), cls), 1
    else:
        per = max(1, n // gen.n_classes)
        labels, rows = torch.arange(gen.n_classes).repeat_interleave(per), gen.n_classes
    images = gen.sample(labels, seed, **knobs)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    if out.endswith(".png"):
        save_grid(images, rows, out)
    else:
        u8 = ((images + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
        write_npz(out, images=u8.squeeze(-1) if u8.shape[-1] == 1 else u8, labels=labels.numpy())
    click.echo(f"{len(images)} images from {gen.kind} generator at {gen.kimg:g} kimg → {out}")


@cli.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override an audit setting, e.g. --set audit.references=8 (repeatable).")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Folder holding the run's MedMNIST .npz (else $KR_DATA_DIR, the cache, or download).")
@click.option("--canaries", type=int, default=None, metavar="M",
              help="Instead of the reference runs, the one-run canary audit: plant M canaries from the "
                   "test split (at most 90 % of it; `kr data info NAME` prints the number and the largest ε_lb it "
                   "can show), train the whole procedure once more, report each model's empirical ε lower bound "
                   "(calibrated by the shipped run; --set audit.canary_calibration=references adds the "
                   "reference runs).")
@click.option("--replant", is_flag=True,
              help="With --canaries: draw fresh canaries and bits and train a fresh canary run. Needed when the "
                   "scoring rule changed (M, audit settings, calibration runs, kr's scorer): old bits are never "
                   "scored under a new rule.")
@click.option("--wait", is_flag=True,
              help="If another kr process is using the run directory, wait for it instead of stopping.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@_apply(_executor_options())
def audit(run_dir, overrides, canaries, replant, wait, data_dir, device, executor, workers, ray_address,
          task_cpus):
    """Membership-inference audit of every model of a finished run: reference runs replay the
    whole procedure on pool halves (experiment 1: LOSS, LiRA and RMIA; AUC and TPR at low FPR),
    or, with --canaries M, the one-run canary audit (empirical ε lower bounds).  Its stages join
    the run's own: a rerun resumes, and --executor spreads the reference runs."""
    from kr import pipeline
    from kr.report import audit_table
    from kr.report.advice import advice_lines

    bad = [o for o in overrides if not o.startswith("audit.")]
    if bad:
        raise KRError(f"--set {bad[0]}: `kr audit` changes only audit.* settings; the run's "
                      f"training settings are fixed by its config.yaml")
    load_config("cpu", overrides=overrides)  # bad audit values fail before any work
    from kr.rundir import read_config_tree

    threads = read_config_tree(run_dir).get("threads") or Config().threads  # the run's stages' threads
    pool = _executor(executor, workers, ray_address, task_cpus, Path(run_dir).absolute(), threads)
    results = pipeline.audit(run_dir, overrides, data_dir, device, canaries, replant, pool, wait)
    click.echo(audit_table(results))
    click.echo("which model to release, from this run's numbers:")
    click.echo("\n".join("  " + line for line in advice_lines(results)))
    click.echo(f"report: {results['report']}")


@cli.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Output folder [default: RUN/report (RUN/report-shareable with --shareable) for one run; "
                   "required for several].")
@click.option("--shareable", is_flag=True,
              help="Leave out every real image (grids of real images, closest pairs; synthetic samples unless the "
                   "memorisation check found no near-copy), and say so on the first line.")
def report(runs, out, shareable):
    """Write report.html (self-contained, opens offline) and report.md for one or more runs;
    several runs (seeds, datasets) are aggregated into one results table."""
    from kr.report import write_report

    if len(runs) > 1 and out is None:
        raise KRError("several runs: say where the combined report goes with --out DIR")
    click.echo(str(write_report(list(runs), out, shareable)))


@cli.command("export")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--out", type=click.Path(file_okay=False), required=True, help="New folder for the release.")
@click.option("--method", default="kr", show_default=True,
              help="Which of the run's models to release (kr is the one that never saw a real image).")
@click.option("--onnx", is_flag=True, help="Also write model.onnx (needs the onnx package).")
def export_cmd(run_dir, out, method, onnx):
    """Release a run's student: model.safetensors, config.json and MODEL_CARD.md (its data,
    test accuracy, and membership-inference audit)."""
    from kr.release import export

    click.echo(f"released {method} → {export(run_dir, out, method, onnx)}")


@cli.command()
@click.argument("model_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("file", type=click.Path(exists=True))
@click.option("--out", type=click.Path(dir_okay=False), default="predictions.csv", show_default=True,
              help="CSV of predictions: split, index, prediction, class probabilities, label if known.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
def predict(model_dir, file, out, device):
    """Run a released (or any saved) classifier on a MedMNIST-style .npz (every split, with
    accuracy where labels exist), an .npz/.npy of images, or a folder of image files (flat, or
    in folders named as the model's classes, for accuracy)."""
    from kr.release import predict as run_predict

    summary = run_predict(model_dir, file, out, device)
    for split, s in summary.items():
        scores = f"  acc {s['acc']:.4f}  auc {s['auc']:.4f}" if "acc" in s else ""
        click.echo(f"{split:<6}{s['n']:>7} images{scores}")
    click.echo(f"predictions → {out}")


@cli.group()
def data() -> None:
    """List, inspect and fetch datasets."""


@data.command("list")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None)
def data_list(data_dir):
    """Every known dataset, its task and size, and whether a local copy exists."""
    from kr.data import MEDMNIST
    from kr.data.download import locate

    rows = [("digits", "multi-class", "10", "1", "1257/180/360", "28", "built in")]
    for info in MEDMNIST.values():
        n = info.n_samples
        path = locate(info, 28, data_dir)
        rows.append((info.name, info.task, str(info.n_classes), str(info.channels),
                     f"{n['train']}/{n['val']}/{n['test']}", ",".join(map(str, info.sizes)),
                     str(path) if path else "-"))
    header = ("name", "task", "classes", "channels", "train/val/test", "sizes", "local 28px file")
    click.echo(_table([header, *rows]))


@data.command("info")
@click.argument("name")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None)
@click.option("--size", type=int, default=28, show_default=True)
def data_info(name, data_dir, size):
    """Splits, class counts, channels and file location of one dataset: a name, a .npz path, or a
    folder of images (one folder per class, optionally under train/ val/ test/), checked as
    `kr run` would read it; and how many canaries its test split allows."""
    from kr.data import load_dataset

    d = load_dataset(name, data_dir=data_dir, size=size)
    click.echo(f"dataset   {d.name}\ntask      {d.task}\nsource    {d.source}\n"
               f"images    {d.channels}×{d.size}×{d.size} ({'RGB' if d.channels == 3 else 'grayscale'})\n"
               f"hflip     {'allowed' if d.hflip else 'not used'} in augmentation")
    rows = [("split", "images", *d.label_names)]
    rows += [(s, str(len(d.split(s))), *map(str, d.class_counts(s))) for s in ("train", "val", "test")]
    click.echo(_table(rows))
    if not d.multi_label and len(d.test) >= 3:
        from kr.canaries import sizing

        c = sizing(len(d.train), len(d.test), Config().audit.canary_stress)
        click.echo(f"canary audit: up to {c['canaries']} canaries from the test split (`kr audit RUN --canaries "
                   f"{c['canaries']}`): at most ε_lb {c['ceiling']:.2f} can be shown (δ = {c['delta']:.1e}), "
                   "for one more run of the procedure")


@data.command("import")
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="The .npz to write (a new file).")
@click.option("--size", type=int, default=28, show_default=True,
              help="Image side after resizing (7·2^k or 4·2^k: 28, 32, 56, 64, 112, 128, 224, …).")
def data_import(folder, out, size):
    """Freeze a folder of images (train/val/test/<class>/*, or <class>/* to split 70/10/20) as a
    MedMNIST-style .npz: exactly what `kr run --dataset FOLDER` reads, with its fingerprint."""
    import json
    from pathlib import Path

    from kr.artifacts import write_npz
    from kr.config import DataConfig
    from kr.data.folder import import_folder

    DataConfig(size=size)  # a side the generators build, checked before reading a file
    if not out.endswith(".npz"):
        raise KRError(f"--out {out}: name the file .npz")
    if Path(out).exists():
        raise KRError(f"{out} exists; choose a new file name (kr never overwrites a dataset)")
    arrays, record = import_folder(folder, size)
    write_npz(out, **arrays, kr_import=np.array(json.dumps(record)))
    click.echo(f"{folder} → {out}: {record['mode']}, {size}×{size}, {record['layout']}; classes "
               f"{', '.join(record['classes'])}")
    rows = [("split", "images", *record["classes"])]
    rows += [(s, str(sum(c.values())), *map(str, c.values())) for s, c in record["counts"].items()]
    click.echo(_table(rows))
    click.echo(f"fingerprint {record['fingerprint']} (a run on {out} or on {folder} shares its stage keys)")


@data.command("fetch")
@click.argument("name")
@click.option("--size", type=int, default=28, show_default=True)
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Download into this folder instead of the user cache.")
def data_fetch(name, size, data_dir):
    """Download a MedMNIST file (MD5-checked) unless a verified local copy exists."""
    from pathlib import Path

    from kr.data import get_info
    from kr.data.download import cache_dir, check_md5, fetch, locate

    info = get_info(name)
    path = locate(info, size, data_dir)
    if path is None:
        target = Path(data_dir) if data_dir else cache_dir()
        path = fetch(info.file(size), target, data_dir)
    check_md5(path, info.file(size).md5)
    click.echo(str(path))


def _table(rows) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


class _Interrupted(BaseException):
    """Ctrl-C, raised by kr's own SIGINT handler in place of KeyboardInterrupt.

    CPython 3.11 flags a KeyboardInterrupt that escapes code run by exec() (dataclasses build their
    __init__ so, torch's lazy imports create dataclasses mid-run) as unhandled even after we catch
    it, and under `python -m` then kills the process with SIGINT at exit: status -2, not 130.
    """


_sigint_seen = False


def _on_sigint(signum, frame):
    global _sigint_seen
    _sigint_seen = True
    raise _Interrupted


def _resume_exit() -> None:
    click.echo("kr: interrupted; finished stages and epochs are kept: rerun the same command "
               "to resume", err=True)
    sys.exit(130)


def main() -> None:
    """Entry point: user errors become one line on stderr and a non-zero exit, never a traceback."""
    import signal

    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not when SIGINT is ignored
        signal.signal(signal.SIGINT, _on_sigint)
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except (click.Abort, KeyboardInterrupt, _Interrupted):
        _resume_exit()
    except Exception as exc:
        # A library that swallows our interrupt (a bare `except:` around a lazy import) raises an
        # error of its own in its place; what the user did is still Ctrl-C.
        if _sigint_seen:
            _resume_exit()
        if not isinstance(exc, KRError):
            raise
        click.echo(f"kr: error: {exc}", err=True)
        sys.exit(1)


"""The command line end to end, as a user runs it: a subprocess, its exit code and its files."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from safetensors.torch import load_file

from tests.conftest import make_arrays, write_npz


def kr(*args, cwd=None, env=None):
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "kr", *args], capture_output=True, text=True,
                          cwd=cwd, env=full_env, timeout=600)


def _one_clean_error(proc):
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.mark.slow  # end to end: a whole tiny run
def test_tiny_teacher_run_writes_every_artifact(tmp_path):
    out = tmp_path / "run"
    proc = kr("teacher", "--dataset", "digits", "--preset", "tiny", "--out", str(out),
              "--set", "teacher.train.epochs=2", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    assert "real" in proc.stdout and "test acc" in proc.stdout
    for name in ("config.yaml", "manifest.json", "log.txt", "metrics.jsonl", "results.json",
                 "teacher/model.safetensors", "teacher/config.json", "teacher/metrics.json",
                 "teacher/stage.json"):
        assert (out / name).is_file(), name
    assert not (out / "teacher/state.pt").exists()
    assert not list(out.rglob("*.tmp"))
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["preset"] == "tiny" and config["teacher"]["train"]["epochs"] == 2
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["dataset"]["name"] == "digits" and "torch" in manifest["versions"]
    assert manifest["stages"]["teacher"]["key"]
    epochs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in epochs if "epoch" in e] == [0, 1]
    results = json.loads((out / "results.json").read_text())
    real = results["methods"]["real"]
    assert set(real["test"]) == {"acc", "auc"} and 0 <= real["test"]["acc"] <= 1
    assert results["timings_s"]["teacher"] > 0
    weights = load_file(str(out / "teacher/model.safetensors"))
    assert "fc.weight" in weights and weights["fc.weight"].shape == (10, 32)  # resnet8, width 8
    model_cfg = json.loads((out / "teacher/config.json").read_text())
    assert model_cfg["arch"] == "resnet8" and model_cfg["num_classes"] == 10

    # Rerunning the same command reuses the finished stage and gives the same numbers.
    again = kr("teacher", "--dataset", "digits", "--preset", "tiny", "--out", str(out),
               "--set", "teacher.train.epochs=2", "--device", "cpu")
    assert again.returncode == 0 and "teacher: cached" in again.stderr
    assert json.loads((out / "results.json").read_text())["methods"] == results["methods"]


def test_dry_run_prints_resolved_config_and_writes_nothing(tmp_path):
    proc = kr("run", "--preset", "tiny", "--set", "teacher.train.lr=0.3", "--dry-run", cwd=tmp_path)
    assert proc.returncode == 0
    assert yaml.safe_load(proc.stdout)["teacher"]["train"]["lr"] == 0.3
    assert not list(tmp_path.iterdir())


def test_the_ablations_are_one_flag_away(tmp_path):
    """By default the teacher, KR, the conventional synthetic baseline and DP-SGD; the
    ablations (regen, soft) with --methods."""
    default = yaml.safe_load(kr("run", "--dry-run", cwd=tmp_path).stdout)
    assert default["baselines"] == "synthetic,dpsgd" and default["threads"] == 2
    asked = kr("run", "--methods", "synthetic,regen,soft,dpsgd", "--dry-run", cwd=tmp_path)
    assert yaml.safe_load(asked.stdout)["baselines"] == "synthetic,regen,soft,dpsgd"
    assert "unknown ['nope']" in _one_clean_error(kr("run", "--methods", "nope", "--dry-run", cwd=tmp_path))


@pytest.mark.parametrize("make, args, message", [
    (lambda d: write_npz(d / "bad.npz", {k: v for k, v in make_arrays().items() if k != "val_labels"}),
     [], "lacks the keys val_labels"),
    (lambda d: (d / "trunc.npz").write_bytes(b"PK\x03\x04broken") and d / "trunc.npz", [],
     "truncated or corrupt"),
    (lambda d: d / "missing.npz", [], "no such file"),
    (lambda d: "cifar10", [], "unknown dataset 'cifar10'"),
    (lambda d: "digits", ["--set", "teacher.train.epochs=-1"], "teacher.train.epochs: must be ≥ 1"),
    (lambda d: "digits", ["--set", "teacher.train.nope=1"], "unknown config key"),
    (lambda d: "digits", ["--set", "teacher.train.epochs=[1"], "is not a YAML scalar"),
    (lambda d: (d / "text.npz").write_text("a,b\n1,2\n") and d / "text.npz", [], "is not an .npz file"),
    (lambda d: write_npz(d / "nan.npz", {**make_arrays(), "val_images": np.full((6, 28, 28), np.nan)}),
     [], "NaN or infinite"),
])
def test_bad_input_is_one_line_nonzero_and_leaves_no_run(tmp_path, make, args, message):
    dataset = make(tmp_path)
    out = tmp_path / "run"
    proc = kr("teacher", "--dataset", str(dataset), "--preset", "tiny", "--out", str(out), *args)
    line = _one_clean_error(proc)
    assert message in line and line.startswith("kr: error:")
    assert not out.exists()


def test_out_that_cannot_be_a_folder_is_one_line(tmp_path):
    (tmp_path / "file").write_text("x")
    line = _one_clean_error(kr("teacher", "--dataset", "digits", "--preset", "tiny",
                               "--out", str(tmp_path / "file" / "run")))
    assert "a file stands in its path" in line


def test_out_at_a_users_folder_keeps_every_file(tmp_path):
    """The issue's exact case: a folder with subfolders named like stages."""
    folder = tmp_path / "P"
    (folder / "teacher").mkdir(parents=True)
    (folder / "evaluate").mkdir()
    (folder / "teacher" / "notes.txt").write_text("notes")
    line = _one_clean_error(kr("teacher", "--dataset", "digits", "--preset", "tiny", "--out", str(folder)))
    assert "not a kr run directory" in line
    assert (folder / "teacher" / "notes.txt").read_text() == "notes"
    assert sorted(p.name for p in folder.rglob("*")) == ["evaluate", "notes.txt", "teacher"]


def test_ctrl_c_says_how_to_resume(tmp_path):
    import signal
    import time

    # A child inherits an ignored SIGINT (as under nohup), and Python then keeps ignoring it:
    # the child starts with the default disposition, as from a terminal.
    proc = subprocess.Popen([sys.executable, "-m", "kr", "teacher", "--dataset", "digits", "--preset",
                             "tiny", "--out", str(tmp_path / "run"), "--set", "teacher.train.epochs=1000"],
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    for _ in range(600):
        if (tmp_path / "run" / "manifest.json").is_file():
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert "rerun the same command to resume" in err.strip().splitlines()[-1]


def test_ctrl_c_inside_exec_still_exits_130(tmp_path):
    import os
    import signal

    # The interrupt lands inside exec()'d code (as when torch's lazy imports build dataclasses):
    # CPython 3.11 then kills a `python -m` process with SIGINT at exit unless kr raised its own.
    (tmp_path / "fake_kr.py").write_text(
        "from kr import cli\n"
        "def interrupted_inside_exec(**kwargs):\n"
        "    exec('import os, signal, time\\nos.kill(os.getpid(), signal.SIGINT)\\ntime.sleep(30)')\n"
        "cli.cli.main = interrupted_inside_exec\n"
        "cli.main()\n")
    proc = subprocess.run([sys.executable, "-m", "fake_kr"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(tmp_path)},
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert proc.returncode == 130 and "Traceback" not in proc.stderr
    assert "rerun the same command to resume" in proc.stderr


@pytest.mark.parametrize("error", ["RuntimeError('lazy import failed')", "cli.KRError('no data')"])
def test_ctrl_c_swallowed_by_a_library_still_exits_130(tmp_path, error):
    import os
    import signal

    # A library's bare `except:` catches the interrupt and raises its own error in its place.
    (tmp_path / "fake_kr.py").write_text(
        "import os, signal, time\n"
        "from kr import cli\n"
        "def swallowing(**kwargs):\n"
        "    try:\n"
        "        os.kill(os.getpid(), signal.SIGINT)\n"
        "        time.sleep(30)\n"
        "    except:\n"
        f"        raise {error}\n"
        "cli.cli.main = swallowing\n"
        "cli.main()\n")
    proc = subprocess.run([sys.executable, "-m", "fake_kr"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(tmp_path)},
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert proc.returncode == 130 and "Traceback" not in proc.stderr, proc.stderr
    assert "rerun the same command to resume" in proc.stderr


def test_a_bug_without_ctrl_c_still_shows_its_traceback(tmp_path):
    import os

    # only an interrupt or a user error is one line; kr's own bugs must stay visible
    (tmp_path / "fake_kr.py").write_text(
        "from kr import cli\n"
        "def buggy(**kwargs):\n"
        "    raise RuntimeError('a bug in kr')\n"
        "cli.cli.main = buggy\n"
        "cli.main()\n")
    proc = subprocess.run([sys.executable, "-m", "fake_kr"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "a bug in kr" in proc.stderr


def test_offline_missing_medmnist_file_says_where_to_put_it(tmp_path):
    # A dead proxy makes the download fail fast whether or not this machine is online.
    proc = kr("data", "info", "bloodmnist", "--data-dir", str(tmp_path),
              env={"XDG_CACHE_HOME": str(tmp_path / "cache"),
                   "https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"})
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[0].startswith("downloading ") and len(lines) == 2
    line = lines[1]
    assert "bloodmnist.npz not found: put it" in line and str(tmp_path) in line
    assert not (tmp_path / "cache" / "kr" / "medmnist" / "bloodmnist.npz").exists()


def test_md5_mismatch_from_cli(tmp_path):
    write_npz(tmp_path / "breastmnist.npz", make_arrays())
    line = _one_clean_error(kr("data", "info", "breastmnist", "--data-dir", str(tmp_path)))
    assert "MD5 mismatch" in line


def test_data_list_names_every_dataset():
    proc = kr("data", "list")
    assert proc.returncode == 0
    for name in ("digits", "breastmnist", "chestmnist", "organsmnist", "multi-label"):
        assert name in proc.stdout


def test_data_info_user_npz_rgb(tmp_path):
    path = write_npz(tmp_path / "rgb.npz", make_arrays(channels=3, classes=3))
    proc = kr("data", "info", str(path))
    assert proc.returncode == 0, proc.stderr
    assert "3×28×28 (RGB)" in proc.stdout


@pytest.mark.parametrize("name, counts, canaries", [
    ("breastmnist", ["546", "147", "399", "78", "21", "57", "156", "42", "114"], 140),
    ("pneumoniamnist", ["4708", "1214", "3494", "524", "135", "389", "624", "234", "390"], 561),
])
def test_data_info_real_files(medmnist_dir, name, counts, canaries):
    proc = kr("data", "info", name, "--data-dir", str(medmnist_dir))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    numbers = [tok for line in lines[-4:-1] for tok in line.split()[1:]]
    assert numbers == counts
    assert lines[-1].startswith(f"canary audit: up to {canaries} canaries from the test split")
    assert str(Path(medmnist_dir) / f"{name}.npz") in proc.stdout


def test_data_fetch_finds_local_verified_copy(medmnist_dir):
    proc = kr("data", "fetch", "breastmnist", "--data-dir", str(medmnist_dir))
    assert proc.returncode == 0 and proc.stdout.strip().endswith("breastmnist.npz")


@pytest.mark.slow  # end to end: a whole tiny run
@pytest.mark.parametrize("kind", ["gan", "diffusion"])
def test_generator_then_sample(tmp_path, kind):
    out = tmp_path / "run"
    proc = kr("generator", "--dataset", "digits", "--kind", kind, "--preset", "tiny",
              "--out", str(out), "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    assert f"{kind} generator checkpoints" in proc.stdout
    stage = json.loads((out / "generator/stage.json").read_text())["outputs"]
    assert stage["kind"] == kind and len(stage["checkpoints"]) == 2
    for c in stage["checkpoints"]:
        folder = out / "generator/checkpoints" / c["name"]
        for name in ("ema.safetensors", "model.safetensors", "config.json", "grid.png", "info.json"):
            assert (folder / name).is_file(), name
        assert (out / "quality" / f"{c['name']}.json").is_file()  # the quality stage's own folder
    quality = json.loads((out / "results.json").read_text())["generator"]["quality"]
    first = quality["checkpoints"][0]
    assert quality["split"] == "val" and 0 <= first["teacher"]["agreement"] <= 1
    assert 0 <= first["judge"]["agreement"] <= 1 and 0 <= first["downstream"]["acc"] <= 1
    assert (out / "judge" / "model.safetensors").is_file()

    grid = tmp_path / "grid.png"
    proc = kr("sample", str(out), "--n", "20", "--seed", "0", "--out", str(grid))
    assert proc.returncode == 0, proc.stderr
    import matplotlib.image as mpimg

    assert mpimg.imread(grid).shape[:2] == (10 * 28, 2 * 28)  # one row per class
    arrays = tmp_path / "s.npz"
    assert kr("sample", str(out), "--n", "6", "--class", "3", "--out", str(arrays)).returncode == 0
    import numpy as np

    saved = np.load(arrays)
    assert saved["images"].shape == (6, 28, 28) and saved["images"].dtype == np.uint8
    assert (saved["labels"] == 3).all()

    assert "classes 0–9" in _one_clean_error(kr("sample", str(out), "--class", "12", "--out", str(grid)))
    assert "has no knob" in _one_clean_error(
        kr("sample", str(out), "--steps" if kind == "gan" else "--sigma", "3", "--out", str(grid)))


def test_sample_without_generator_is_a_clear_error(tmp_path):
    line = _one_clean_error(kr("sample", str(tmp_path), "--out", str(tmp_path / "g.png")))
    assert "holds no trained generator" in line


@pytest.mark.slow  # end to end: a whole tiny run
def test_tiny_kr_run_end_to_end_writes_every_artifact(tmp_path):
    out = tmp_path / "run"
    proc = kr("run", "--preset", "tiny", "--out", str(out), "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    for text in ("kr ", "synthetic", "regen", "soft", "CAS gap", "← selected", "tuning",
                 "chosen by val acc+auc: sigma="):
        assert text in proc.stdout, text
    for name in ("results.json", "selection/stage.json", "tuning/stage.json", "evaluate/stage.json",
                 *(f"methods/{m}/{f}" for m in ("kr", "synthetic", "regen", "soft")
                   for f in ("model.safetensors", "config.json", "metrics.json", "stage.json"))):
        assert (out / name).is_file(), name
    assert not list(out.rglob("state.pt")) and not list(out.rglob("*.tmp"))
    results = json.loads((out / "results.json").read_text())
    assert results["dataset"] == "digits" and results["preset"] == "tiny" and results["seed"] == 0
    assert set(results["methods"]) == {"real", "kr", "synthetic", "regen", "soft", "dpsgd-eps8", "dpsgd-eps1"}
    for m in results["methods"].values():
        assert set(m["val"]) == set(m["test"]) == {"acc", "auc"}
    assert isinstance(results["cas_gap_pp"], float)
    assert results["selection"]["selected"] in {c["name"] for c in results["selection"]["candidates"]}
    assert results["tuning"]["knob"] == "sigma" and "threshold" in results["tuning"]
    for stage in ("teacher", "generator", "selection", "tuning", "methods/kr", "evaluate"):
        assert results["timings_s"][stage] > 0, stage
    student = json.loads((out / "methods/kr/config.json").read_text())
    assert student["method"] == "kr" and student["arch"] == "resnet8"
    # the audit stage: reference-free attacks on every shipped model, and the memorisation check
    assert "experiment 2 — the shipped model" in proc.stdout and "memorisation (" in proc.stdout
    assert set(results["audit_shipped"]) == set(results["methods"])
    assert (out / "audit/shipped/closest_pairs.png").is_file()

    # `kr sample` on the run uses the checkpoint that optimisation selected.
    proc = kr("sample", str(out), "--n", "10", "--out", str(tmp_path / "s.npz"))
    kimg = next(c["kimg"] for c in results["selection"]["candidates"]
                if c["name"] == results["selection"]["selected"])
    assert proc.returncode == 0 and f"at {kimg:g} kimg" in proc.stdout


@pytest.mark.parametrize("args, message", [
    (["--set", "teacher.train.epochs=3"], "changes only audit.* settings"),
    (["--replant"], "give their number with --canaries M"),
    (["--set", "audit.canary_calibration=all"], "not one of shipped, references"),
    (["--set", "audit.references=3"], "even number ≥ 4"),
    (["--canaries", "1"], "plant at least 2 canaries"),
])
def test_audit_bad_input_is_one_clean_line(tmp_path, args, message):
    (tmp_path / "run").mkdir()
    proc = kr("audit", str(tmp_path / "run"), *args)
    assert message in _one_clean_error(proc)


def test_audit_of_an_unfinished_run_says_what_to_do(tmp_path):
    (tmp_path / "run").mkdir()
    assert "run `kr run` to completion first" in _one_clean_error(kr("audit", str(tmp_path / "run")))

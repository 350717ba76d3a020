"""The released model: `kr export` packs a run's student (weights, config, model card) into a
folder that needs nothing else of the run, and `kr predict` runs it on new images.

The folder is the one thing a team ships, so it carries what a reader needs to judge it: the
data it never saw, its test accuracy beside the real-trained teacher's, and the membership
inference figures with attack names and reference counts (kr.privacy)."""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from kr.artifacts import (
    atomic_path,
    read_model_config,
    write_json,
    write_text,
)
from kr.data.dataset import SPLITS, images_to_tensor, read_npz
from kr.errors import KRError
from kr.methods import describe, is_dp, saw_real_images
from kr.methods import folder as model_folder
from kr.metrics import evaluate, predict_labels
from kr.models import load_classifier
from kr.privacy.results import audit_of, best_attack, canary_source
from kr.report.document import md_escape
from kr.report.tables import merged_attacks
from kr.dpsgd import LIMITS as DP_LIMITS
from kr.rundir import file_hashes, read_config_tree, read_manifest, read_results, verify
from kr.train import predict_proba, resolve_device

log = logging.getLogger(__name__)
SCALING = "uint8 pixels x → x / 127.5 − 1 (floats in [0, 1] are first scaled by 255)"


def export(run_dir: str | Path, out: str | Path, method: str = "kr", onnx: bool = False) -> Path:
    """Copy `method`'s classifier and write config.json (with a `release` section) and MODEL_CARD.md."""
    run_dir, out = Path(run_dir), Path(out)
    results = read_results(run_dir, "exporting a model")
    m = results["methods"].get(method)
    folder = model_folder(run_dir, method)
    if m is None or "test" not in m or not (folder / "model.safetensors").is_file():
        have = ", ".join(k for k, v in results["methods"].items() if "test" in v)
        raise KRError(f"{run_dir} has no evaluated model {method!r}; choose one of: {have}")
    if out.exists() and any(out.iterdir()):
        raise KRError(f"{out} exists and is not empty; choose a new folder for the release")
    if method == "real":
        log.warning("exporting the teacher: it was trained on the real images and leaks more "
                    "(see its audit figures in MODEL_CARD.md)")
    verify(folder)  # never release a model whose files changed after its stage recorded them
    load_classifier(folder)  # … or one that does not load
    config = read_model_config(folder)
    if is_dp(method) and (config.get("dp") or {}).get("guarantee_holds") is not True:
        raise KRError(f"{method} was trained with seeded noise (or by a kr that did not record its noise "
                      f"source): anyone holding the run's seed can replay its training, so its ε does not hold; "
                      f"retrain it with the default secret noise (dpsgd.noise=secret) before releasing it")
    manifest = read_manifest(run_dir)
    exp, audit = audit_of(results)
    release = {"method": method, "config_sha256": config_hash(config), "what": describe(method, m), "dataset": results["dataset"],
               "task": results["task"], "preset": results["preset"], "seed": results["seed"],
               "label_names": config.get("label_names"),
               "input": {"size": config.get("image_size") or _size(run_dir),
                         "channels": config["in_channels"], "scaling": SCALING},
               "test": m["test"], "val": m.get("val"), "dp": config.get("dp"),
               "teacher_test": results["methods"].get("real", {}).get("test"),
               "audit_experiment": exp, "audit": audit.get(method, {}),
               "teacher_audit": audit.get("real", {}),
               "audit_meta": results.get("audit_meta"), "memorisation": results.get("memorisation"),
               "data_fingerprint": (manifest.get("dataset") or {}).get("fingerprint"),
               "weights_sha256": file_hashes(folder)["model.safetensors"],
               "canary": (results.get("canary") or {}).get(method), "canary_meta": results.get("canary_meta"),
               "teacher_canary": (results.get("canary") or {}).get("real"),
               "dp_limits": list(DP_LIMITS) if is_dp(method) else None, "labeller": m.get("labeller")}
    out.parent.mkdir(parents=True, exist_ok=True)
    # a fresh folder of our own beside `out`: nothing half-written under the name a user ships,
    # and nothing of the user's is ever removed
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        shutil.copy2(folder / "model.safetensors", tmp / "model.safetensors")
        write_json(tmp / "config.json", {**config, "release": release})
        write_text(tmp / "MODEL_CARD.md", model_card(release))
        if onnx:
            _onnx(load_classifier(tmp), release, tmp / "model.onnx")
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _size(run_dir: Path) -> int:
    """Models saved before they recorded their input size: the run's configured size."""
    return int(read_config_tree(run_dir)["data"]["size"])


def _onnx(model: torch.nn.Module, release: dict, path: Path) -> None:
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise KRError("--onnx needs the onnx exporter: install kr's onnx extra (pip install -e '.[onnx]' in a "
                      "clone, or pip install onnx onnxscript)") from None
    size, channels = release["input"]["size"], release["input"]["channels"]
    with atomic_path(path) as tmp:
        torch.onnx.export(model, (torch.zeros(2, channels, size, size),), str(tmp), input_names=["images"],
                          output_names=["logits"], dynamic_shapes=({0: torch.export.Dim("batch")},))


def _dp_text(r: dict) -> str:
    dp = r.get("dp") or {}
    if dp.get("guarantee_holds") is False:
        return (f"trained with seeded, reproducible noise (dpsgd.noise=seeded): anyone holding the run's seed "
                f"can replay its training, so its ε = {dp.get('epsilon', float('nan')):.2f} DOES NOT HOLD. Do not "
                "release it; retrain with the default, secret noise.")
    if not dp:
        return "formal (ε, δ) guarantee in config.json."
    if dp.get("guarantee_holds") is not True:  # a model from before kr recorded its noise source
        return (f"its noise source is not recorded (trained by an older kr, whose noise was seeded from the run's "
                f"seed): its ε = {dp.get('epsilon', float('nan')):.2f} is NOT ESTABLISHED. Retrain it with "
                "`kr run` (the default, secret noise) before releasing it.")
    return (f"formal (ε, δ) = ({dp['epsilon']:.2f}, {dp['delta']:.1e}) guarantee for each image of the train split, "
            "with noise and batch sampling drawn from secret randomness that was never stored.")


def _labeller_text(labeller: dict | None) -> str:
    """kr-dp: what its DP-SGD labeller's ε covers, and what it does not."""
    if not labeller:
        return ""
    eps = labeller.get("epsilon")
    holds = labeller.get("guarantee_holds") is True and eps is not None
    return (f" Its labels came from {labeller['model']}, a DP-SGD model trained on the real train split"
            + (f" with ε = {eps:.2f}: what the labels carry about the real images is covered by that ε (post-"
               "processing)" if holds else ": its ε does NOT hold (seeded noise), so nothing covers the labels")
            + ". The synthetic images are not: the generator trained on the real images without noise, and "
            "the checkpoint and knobs were chosen by the teacher's students. This model has NO formal "
            "guarantee.")


def _fmt_attack(name: str, r: dict) -> str:
    tpr = r.get("tpr_at_1%fpr")
    tpr_s = "not resolvable" if tpr is None else f"{100 * tpr:.1f} %"
    ci = r.get("auc_ci") or [float("nan")] * 2
    return f"| {name} | {r['references']} | {r['auc']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}] | {tpr_s} |"


def model_card(r: dict) -> str:
    # names that came from the user's data are shown literally, never as Markdown or HTML
    r = {**r, "dataset": md_escape(r["dataset"]),
         "label_names": [md_escape(str(n)) for n in r.get("label_names") or []]}
    test, teacher = r["test"], r["teacher_test"] or {}
    meta = r.get("audit_meta") or {}
    exp = ("experiment 1 (the procedure): whole training runs on halves of the "
           f"{meta.get('pool', '?')}-image pool, {meta.get('references', '?')} runs, each the target in turn"
           if r["audit_experiment"] == "procedure" else
           "experiment 2 only (the shipped model: members = the train split, non-members = the test "
           "split; reference-free attacks). Run `kr audit` on the run for the reference-based attacks "
           "before relying on this card")
    rows = [_fmt_attack(a, v) for a, v in merged_attacks(dict(sorted(r["audit"].items())))]
    best = best_attack(r["audit"])
    teacher_best = best_attack(r["teacher_audit"])
    mem = r.get("memorisation")
    lines = [
        f"# Model card: {r['dataset']} classifier ({r['method']})", "",
        f"{r['what']}. Trained by `kr` (Knowledge Recycling: Lomurno & Matteucci, Pattern Recognition "
        f"Letters 2025) with the `{r['preset']}` preset, seed {r['seed']}.", "",
        "## Intended use", "",
        f"Research and development on {r['dataset']} ({r['task']}): classifying "
        f"{r['input']['channels']}-channel {r['input']['size']}×{r['input']['size']} images into "
        f"{'; '.join(f'{i} = {n!r}' for i, n in enumerate(r.get('label_names') or [])) or 'the classes in config.json'}. "
        "It is not a medical device and has not been validated clinically; do not use it for "
        "diagnosis.", "",
        "## Data it never saw", "",
        ("The student never saw a real image: it was trained only on synthetic images from a "
         "generator, labelled by a teacher; the generator and the teacher were trained on the real "
         "train split. Its validation split chose every setting; its test split was read once, for "
         "the figures below." + _labeller_text(r.get("labeller")) if not saw_real_images(r["method"]) else
         "This model was trained on the real train split" + (" with DP-SGD: " + _dp_text(r) if is_dp(r["method"]) else ".")),
        f"Data fingerprint: `{r.get('data_fingerprint')}`.", "",
        "## Performance (real test split, MedMNIST ACC/AUC)", "",
        "| model | test ACC | test AUC |", "| --- | --- | --- |",
        f"| this model ({r['method']}) | {test['acc']:.4f} | {test['auc']:.4f} |",
    ]
    if teacher:
        lines += [f"| teacher trained on real images | {teacher['acc']:.4f} | {teacher['auc']:.4f} |", "",
                  f"CAS gap (this model − teacher, test ACC): {100 * (test['acc'] - teacher['acc']):+.2f} points."]
    lines += ["", "## Membership inference audit", "",
              f"Members = the real train split; {exp}.", "",
              "| attack | reference runs | AUC [95 % CI] | TPR @ 1 % FPR |", "| --- | --- | --- | --- |", *rows, ""]
    if best:
        lines.append(f"Strongest attack on this model: {best[0]}, AUC {best[1]['auc']:.3f}"
                     + (f"; on the teacher: {teacher_best[0]}, AUC {teacher_best[1]['auc']:.3f}." if teacher_best
                        else "."))
    if mem:
        copies = mem.get("copies")
        lines += ["", f"Memorisation check of the synthetic data ({mem['samples']} samples): median distance "
                  f"ratio (nearest train / nearest held-out) {mem['pixel']['median_ratio']:.3f} in pixels, "
                  f"{mem['teacher_features']['median_ratio']:.3f} in teacher features (≈ 1: no copying)"
                  + (f"; {copies['near_copies']} near-copies among all {mem['members_searched']} train images "
                     "(closer to a train image than 99 % of real test images come)." if copies else ".")]
    can, cm = r.get("canary"), r.get("canary_meta")
    if can and cm:
        lines += ["", "## Canary audit (empirical ε lower bound)", "",
                  f"One extra training run of the whole procedure, with a fresh secret seed, on the train split "
                  f"and {cm['canaries']} canaries {canary_source(cm)[0]}, each included with probability ½ (Steinke, "
                  f"Nasr & Jagielski 2023); δ = {cm['delta']:.1e}. The bound is a property of the training "
                  "procedure, measured on that other run: it rejects (ε, δ)-DP of the procedure below ε_lb at "
                  "95 %; it is not a measurement of this model's weights.",
                  "", "| model | canaries | canary AUC [95 % CI] | ε lower bound (95 %) | ceiling for these guesses |",
                  "| --- | --- | --- | --- | --- |"]
        for name, by_kind in (("this model", can), ("teacher (control)", r.get("teacher_canary") or {})):
            for kind in ("mislabelled", "duplicated"):
                c = by_kind.get(kind)
                if c:
                    auc = "n/a" if c["auc"] is None else f"{c['auc']:.3f}"
                    if c.get("auc_ci"):
                        auc += f" [{c['auc_ci'][0]:.3f}, {c['auc_ci'][1]:.3f}]"
                    lines.append(f"| {name} | {kind} ({c['m']}) | {auc} | {c['eps_lb']:.2f} | {c['ceiling_at_r']:.2f} |")
        control = (r.get("teacher_canary") or {}).get("mislabelled")
        if r["method"] != "real" and control is not None:
            lines += ["", "The teacher is the control: it trained on the real images with no protection, so an "
                      "audit that can see leakage bounds it well above 0."
                      + ("" if control["eps_lb"] > 0 else " **The control FAILED here (teacher ε_lb = 0): this "
                         "audit could not see leakage, and the bound above says nothing about this model.**")]
        main = can.get("mislabelled") or {}
        if main.get("control"):
            lines += ["", f"DP control (ε_lb ≤ ε = {main['control']['epsilon']:.2f}): {main['control']['reading']}."]
        lines += ["", "A lower bound shows what the audit proved, never a guarantee; a small one is no evidence "
                  "of privacy, and with this few canaries no audit can prove more than the ceiling."]
    lines += ["", "## Limitations", "",
              "- An audit can show leakage, never prove its absence: AUC near 0.5 means these attacks, with "
              "this many reference runs, found little; stronger attacks or more references may find more.",
              "- Small test splits make the accuracy and the audit intervals wide; see the intervals above.",
              "- The unit of privacy is one image, not one patient: the data carry no patient ids, so a "
              "patient with several images is protected less than one image is.",
              *[f"- Outside the DP guarantee: {why}." for why in r.get("dp_limits") or []],
              "- The model inherits the biases of its training data and of the teacher's labels; performance "
              "on another hospital's images, scanners or populations is unknown.",
              "- Inputs must be preprocessed exactly as below, or predictions are meaningless.", "",
              "## Use", "",
              f"Input: {r['input']['channels']}×{r['input']['size']}×{r['input']['size']} images; {r['input']['scaling']}.",
              "```bash", "kr predict THIS_FOLDER images.npz --out predictions.csv", "```",
              "or in Python: `kr.models.load_classifier(THIS_FOLDER)` (weights: model.safetensors).", ""]
    return "\n".join(lines)


def _arrays(file: Path) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """{split: (images, labels or None)} from a MedMNIST-style .npz, an .npz of `images`
    (optionally `labels`), or an .npy of images."""
    if not file.is_file():
        raise KRError(f"{file}: no such file")
    if file.suffix == ".npy":
        try:
            return {"all": (np.load(file, allow_pickle=False), None)}
        except (OSError, ValueError, EOFError) as exc:
            raise KRError(f"cannot read {file} as an .npy array of images ({exc})") from None
    if file.suffix != ".npz":
        raise KRError(f"{file}: give a .npz (MedMNIST-style or `images`) or an .npy of images")
    arrays = read_npz(file)
    splits = {s: (arrays[f"{s}_images"], arrays.get(f"{s}_labels")) for s in SPLITS if f"{s}_images" in arrays}
    if splits:
        return splits
    if "images" in arrays:
        return {"all": (arrays["images"], arrays.get("labels"))}
    raise KRError(f"{file} has neither `<split>_images` (MedMNIST) nor an `images` array "
                  f"(keys: {', '.join(arrays) or 'none'})")


def _csv_cell(value):
    """A spreadsheet runs a cell that starts with = + - @ as a formula: label names come from
    the user's data, so such a text cell is stored with a leading apostrophe."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def _labels(labels: np.ndarray, n: int, classes: int, multi: bool, where: str) -> np.ndarray:
    """Integer labels that fit the model, or one line saying what is wrong with them."""
    y = np.asarray(labels)
    if y.dtype.kind == "f" and np.isfinite(y).all() and (y == np.round(y)).all():
        y = y.astype(np.int64)  # whole numbers stored as floats are taken as they are
    if y.dtype.kind not in "iu":
        raise KRError(f"{where}: labels have dtype {y.dtype} with non-integer values; labels are "
                      f"class indices (integers)")
    y = y.astype(np.int64)
    if not multi and y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    shape = (n, classes) if multi else (n,)
    if y.shape != shape:
        raise KRError(f"{where}: labels are shaped {y.shape}, expected {shape} for {n} images")
    low, high = (0, 1) if multi else (0, classes - 1)
    if len(y) and (y.min() < low or y.max() > high):
        raise KRError(f"{where}: labels must be in [{low}, {high}] for this model, found "
                      f"{y.min()} … {y.max()}")
    return y


def config_hash(config: dict) -> str:
    """The model's config.json without its `release` section (which records this hash)."""
    body = {k: v for k, v in config.items() if k != "release"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def verified_model(model_dir: str | Path) -> dict:
    """The config of a model folder that matches its record: a release against the hashes its
    config.json carries, a run's stage folder against its stage.json (kr.rundir.verify).  A
    bare folder (saved from Python) records nothing; load_classifier still checks its config."""
    model_dir = Path(model_dir)
    if (model_dir / "stage.json").is_file():
        verify(model_dir)
    cfg = read_model_config(model_dir)
    release = cfg.get("release") or {}
    recorded = release.get("weights_sha256")
    if release and not recorded:
        raise KRError(f"{model_dir}/config.json records no hash of its weights (an older kr exported it), so "
                      f"nothing shows they are the ones released; export the model again")
    if release and file_hashes(model_dir).get("model.safetensors") != recorded:
        raise KRError(f"{model_dir}/model.safetensors does not match the hash its release recorded "
                      f"(config.json): the weights were changed or damaged; export the model again")
    if release.get("config_sha256") and config_hash(cfg) != release["config_sha256"]:
        raise KRError(f"{model_dir}/config.json does not match the hash its release recorded: the model's "
                      f"settings were changed after export; export the model again")
    return cfg


def predict(model_dir: str | Path, file: str | Path, out: str | Path, device: str = "auto") -> dict:
    """Write one CSV row per image (split, index, prediction, class probabilities, label if
    known); return {split: {"n", and "acc"/"auc" where labels exist}}."""
    cfg = verified_model(model_dir)
    release = cfg.get("release") or {}
    names = cfg.get("label_names") or [str(i) for i in range(cfg["num_classes"])]
    task = cfg.get("task", "multi-class")
    multi = task.startswith("multi-label")
    model = load_classifier(model_dir).to(resolve_device(device))
    size = (release.get("input") or {}).get("size")
    summary, rows, files = {}, [], None
    if Path(file).is_dir():  # new images as files: resized as the training images were
        from kr.data.folder import images_for_model

        images, labels, files = images_for_model(file, size or cfg.get("image_size") or 28, list(names))
        arrays = {"all": (images, labels)}
    else:
        arrays = _arrays(Path(file))
    for split, (images, labels) in arrays.items():
        x = images_to_tensor(images, f"{file} ({split})")
        if x.shape[1] != cfg["in_channels"] or (size and tuple(x.shape[2:]) != (size, size)):
            raise KRError(f"{file} ({split}): images are {x.shape[1]}×{x.shape[2]}×{x.shape[3]}, the model "
                          f"takes {cfg['in_channels']}×{size}×{size}; use the matching MedMNIST size")
        probs = predict_proba(model, x, multi)
        pred = predict_labels(task, probs)
        summary[split] = {"n": len(x)}
        if labels is not None:
            y = _labels(labels, len(x), len(names), multi, f"{file} ({split})")
            summary[split].update(evaluate(task, y, probs))
        for i in range(len(x)):
            row = {"split": split, "index": i, **({"file": files[i]} if files else {}),
                   "prediction": ";".join(names[j] for j in np.flatnonzero(pred[i])) if multi else names[pred[i]]}
            row.update({f"p_{n}": f"{probs[i, j]:.6f}" for j, n in enumerate(names)})
            if labels is not None:
                row["label"] = ";".join(map(str, y[i].tolist())) if multi else names[int(y[i])]
            rows.append(row)
    rows = [{k: _csv_cell(v) for k, v in r.items()} for r in rows]
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with atomic_path(out) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, restval="")
        writer.writeheader()
        writer.writerows(rows)
    return summary

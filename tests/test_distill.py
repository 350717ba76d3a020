import dataclasses
import math

import pytest
import torch
from torch.nn import functional as F

import kr.distill
from kr.config import TrainConfig, load_config
from kr.distill import kd_loss, train_student
from kr.methods import METHODS as REGISTRY
from kr.models import build_model
from kr.train import fit_classifier, score
from tests.toys import toy_dataset, toy_generator

# the students of kr.distill: method → (regenerated every epoch, teacher soft labels)
METHODS = {n: (m.options["regenerate"], m.options["soft"]) for n, m in REGISTRY.items()
           if m.stages == "student"}
# KR with one setting of its label channel changed (the DP-SGD-labelled kr-dp: tests/test_stages.py)
LABEL_CHANNEL = {"kr-t1": (1.0, 0), "kr-t4": (4.0, 0), "kr-top1": (2.0, 1)}

S = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
T = torch.tensor([[1.0, 1.0, -2.0], [0.0, 3.0, 0.0]])
Y = torch.tensor([0, 2])


def test_t1_alpha0_is_cross_entropy_with_the_teachers_softmax():
    assert kd_loss(S, T, Y).item() == pytest.approx(F.cross_entropy(S, F.softmax(T, 1)).item())


def test_uniform_logits_give_log_k_times_t_squared():
    zero = torch.zeros(1, 4)
    assert kd_loss(zero, zero, torch.tensor([1]), temperature=1).item() == pytest.approx(math.log(4))
    assert kd_loss(zero, zero, torch.tensor([1]), temperature=3).item() == pytest.approx(9 * math.log(4))


def test_temperature_softens_both_sides_and_scales_by_t_squared():
    t = 2.0
    p = torch.softmax(T / t, 1)
    by_hand = -(p * torch.log_softmax(S / t, 1)).sum(1).mean() * t * t
    assert kd_loss(S, T, Y, temperature=t).item() == pytest.approx(by_hand.item())


def test_alpha_mixes_in_the_hard_label():
    hard = F.cross_entropy(S, Y).item()
    assert kd_loss(S, T, Y, alpha=1.0).item() == pytest.approx(hard)
    mixed = 0.25 * hard + 0.75 * kd_loss(S, T, Y, 2.0).item()
    assert kd_loss(S, T, Y, 2.0, alpha=0.25).item() == pytest.approx(mixed)


def test_top_k_passes_on_only_the_teachers_k_best_classes():
    t = torch.tensor([[4.0, 1.0, -2.0], [0.0, 3.0, -1.0]])
    # top-1 is cross-entropy with the teacher's hard label, times T²
    hard = F.cross_entropy(S / 2, t.argmax(1)).item() * 4
    assert kd_loss(S, t, Y, temperature=2, top_k=1).item() == pytest.approx(hard)
    # a tie with the k-th class is kept: T's first row [1, 1, -2] passes on half and half
    tied = torch.tensor([[0.5, 0.5, 0.0], [0.0, 1.0, 0.0]])
    assert kd_loss(S, T, Y, top_k=1).item() == pytest.approx(F.cross_entropy(S, tied).item())
    # top-2: the two best classes, renormalised
    p = torch.tensor([[math.exp(3) / (1 + math.exp(3)), 1 / (1 + math.exp(3)), 0.0],
                      [1 / (1 + math.exp(3)), math.exp(3) / (1 + math.exp(3)), 0.0]])
    by_hand = -(p * torch.log_softmax(S, 1)).sum(1).mean()
    assert kd_loss(S, t, Y, top_k=2).item() == pytest.approx(by_hand.item())
    assert kd_loss(S, T, Y, top_k=3).item() == kd_loss(S, T, Y).item()  # k ≥ classes: everything
    assert torch.isfinite(kd_loss(S, t, Y, top_k=1))


def test_gradient_is_the_kl_gradient():
    s = S.clone().requires_grad_(True)
    kd_loss(s, T, Y).backward()
    kl = S.clone().requires_grad_(True)
    F.kl_div(F.log_softmax(kl, 1), F.softmax(T, 1), reduction="batchmean").backward()
    assert torch.allclose(s.grad, kl.grad, atol=1e-6)


@pytest.fixture(scope="module")
def toy():
    data = toy_dataset((90, 60, 60))
    torch.manual_seed(0)
    teacher = build_model("resnet8", 1, 3, width=8)
    fit_classifier(teacher, data.train, data.val, data.task,
                   TrainConfig(epochs=4, batch_size=16, lr=0.2, warmup_epochs=0, crop_padding=0), 0, False)
    assert score(teacher, data.val, data.task)["acc"] > 0.9
    config = load_config("tiny", overrides=[
        "distill.train.epochs=3", "distill.size_factor=1.0", "distill.train.batch_size=16",
        "distill.train.lr=0.2", "distill.train.crop_padding=0"])
    return data, teacher, config


@pytest.mark.parametrize("method", list(METHODS))
def test_student_never_receives_a_real_image(toy, method, monkeypatch):
    data, teacher, config = toy
    # Poison the real train images: a student that saw one would get a NaN loss and stop.
    poisoned = dataclasses.replace(data, train=dataclasses.replace(
        data.train, images=torch.full_like(data.train.images, float("nan"))))
    seen = []
    real_fit = kr.distill.fit_classifier

    def spy(model, train, *args, **kwargs):
        def epoch_data(epoch):
            split = train(epoch)
            seen.append(split.images)
            return split
        original_forward = model.forward

        def forward(x):
            if model.training:
                assert torch.isfinite(x).all(), "a real (poisoned) image reached the student"
            return original_forward(x)
        model.forward = forward
        return real_fit(model, epoch_data, *args, **kwargs)

    monkeypatch.setattr(kr.distill, "fit_classifier", spy)
    out = train_student(poisoned, config, toy_generator(), teacher, method, {"sigma": 1.0}, 0.0)
    assert len(seen) == 3 and all(torch.isfinite(x).all() for x in seen)
    assert len(seen[0]) == out["images_per_epoch"] == len(data.train)
    regenerated, _ = METHODS[method]
    assert torch.equal(seen[0], seen[1]) != regenerated
    assert math.isfinite(out["val"]["acc"])


def test_kr_student_learns_from_synthetic_images_alone(toy):
    data, teacher, config = toy
    # Soft targets of a briefly trained teacher are soft: a few more epochs than hard labels need.
    train = dataclasses.replace(config.distill.train, epochs=10)
    config = dataclasses.replace(config, distill=dataclasses.replace(config.distill, train=train))
    out = train_student(data, config, toy_generator(), teacher, "kr", {"sigma": 1.0}, 0.0)
    assert out["val"]["acc"] > 0.9 and out["val"]["auc"] > 0.95  # chance: 1/3 and 0.5
    assert out["mode"] == "every-epoch" and out["soft_labels"]
    assert out["images_generated"] == 10 * len(data.train)


def test_top_k_reaches_the_student(toy, monkeypatch):
    """distill.top_k is what the student's loss gets: k = 1 trains on the teacher's argmax."""
    data, teacher, config = toy
    got = []
    real_kd = kr.distill.kd_loss

    def spy(student_logits, teacher_logits, labels, temperature=1.0, alpha=0.0, top_k=0):
        got.append(top_k)
        return real_kd(student_logits, teacher_logits, labels, temperature, alpha, top_k)

    monkeypatch.setattr(kr.distill, "kd_loss", spy)
    one = dataclasses.replace(config, distill=dataclasses.replace(config.distill, top_k=1))
    out = train_student(data, one, toy_generator(), teacher, "kr", {"sigma": 1.0}, 0.0)
    assert got and set(got) == {1} and math.isfinite(out["val"]["acc"])


def test_students_are_budgeted_in_images(toy):
    data, teacher, config = toy
    train = dataclasses.replace(config.distill.train, epochs=10)
    budget = 3 * len(data.train) / 1000  # three epochs' images, in kimg
    config = dataclasses.replace(config, distill=dataclasses.replace(config.distill, train=train, max_kimg=budget))
    out = train_student(data, config, toy_generator(), teacher, "regen", {"sigma": 1.0}, 0.0)
    assert out["epochs"] == 3 and out["images_generated"] == 3 * len(data.train)
    # an explicit epoch count (selection's short candidates) is not capped again
    out = train_student(data, config, toy_generator(), teacher, "regen", {"sigma": 1.0}, 0.0, epochs=4)
    assert out["epochs"] == 4


def test_student_is_reproducible_and_resumes(toy, tmp_path):
    data, teacher, config = toy
    a = train_student(data, config, toy_generator(), teacher, "kr", {}, 0.0, folder=tmp_path / "a")
    b = train_student(data, config, toy_generator(), teacher, "kr", {}, 0.0, folder=tmp_path / "b")
    assert a["val"] == b["val"]
    assert (tmp_path / "a/model.safetensors").read_bytes() == (tmp_path / "b/model.safetensors").read_bytes()
    assert not (tmp_path / "a/state.pt").exists()
    history = __import__("json").loads((tmp_path / "a/metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [0, 1, 2]


def test_ablations_are_one_ingredient_apart(toy, monkeypatch):
    """The ablation contract (issue 16): every method starts from the same weights and sees
    the same synthetic stream; `regen` is `kr` with hard labels (the same images every epoch),
    `soft` is `kr` without regeneration (the same images as `synthetic`: one draw of the same
    generator, knobs and class quotas as `kr`'s sets, under its own seed key), and the targets
    are the teacher's softmax exactly where the method says so."""
    data, teacher, config = toy
    seen = {}
    real_fit = kr.distill.fit_classifier

    def spy(model, train, *args, loss_fn=None, **kwargs):
        method = kwargs["desc"].split()[-1]
        record = seen[method] = {"init": {k: v.clone() for k, v in model.state_dict().items()},
                                 "sets": [], "loss": loss_fn}

        def epoch_data(epoch):
            split = train(epoch)
            record["sets"].append((split.images.clone(), split.labels.clone()))
            return split
        return real_fit(model, epoch_data, *args, loss_fn=loss_fn, **kwargs)

    monkeypatch.setattr(kr.distill, "fit_classifier", spy)
    for method in ABLATIONS:
        train_student(data, config, toy_generator(), teacher, method, {"sigma": 1.0}, 0.0)

    def same_sets(a, b):
        return all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1])
                   for x, y in zip(seen[a]["sets"], seen[b]["sets"]))
    for method in ABLATIONS:
        assert all(torch.equal(v, seen["kr"]["init"][k]) for k, v in seen[method]["init"].items())
        assert len(seen[method]["sets"]) == 3
    assert same_sets("kr", "regen") and same_sets("soft", "synthetic")
    assert not torch.equal(seen["kr"]["sets"][0][0], seen["kr"]["sets"][1][0])  # regenerated
    assert torch.equal(seen["soft"]["sets"][0][0], seen["soft"]["sets"][2][0])  # fixed
    assert torch.equal(seen["soft"]["sets"][0][1], seen["kr"]["sets"][0][1])  # the same quotas

    probe = build_model("resnet8", 1, 3, width=8).eval()
    x, y = seen["kr"]["sets"][0][0][:16], seen["kr"]["sets"][0][1][:16]
    with torch.no_grad():
        soft = kd_loss(probe(x), teacher(x), y, config.distill.temperature, config.distill.alpha).item()
        hard = F.cross_entropy(probe(x), y, label_smoothing=config.distill.train.label_smoothing).item()
        for method in ABLATIONS:
            soft_labels = METHODS[method][1]
            assert seen[method]["loss"](probe, x, y).item() == pytest.approx(soft if soft_labels else hard)
    assert soft != pytest.approx(hard)


ABLATIONS = ("kr", "synthetic", "regen", "soft")


def test_label_channel_methods_are_kr_with_one_label_setting_changed(toy, monkeypatch):
    """kr-t1, kr-t4 and kr-top1 see KR's images from KR's initial weights; only the targets
    differ: the teacher's softmax at T = 1 or 4, or its top-1 class alone (a one-hot target)."""
    data, teacher, config = toy
    assert config.distill.temperature == 2.0 and config.distill.top_k == 0
    seen = {}
    real_fit = kr.distill.fit_classifier

    def spy(model, train, *args, loss_fn=None, **kwargs):
        record = seen[kwargs["desc"].split()[-1]] = {"init": {k: v.clone() for k, v in model.state_dict().items()},
                                                     "sets": [], "loss": loss_fn}

        def epoch_data(epoch):
            split = train(epoch)
            record["sets"].append(split.images.clone())
            return split
        return real_fit(model, epoch_data, *args, loss_fn=loss_fn, **kwargs)

    monkeypatch.setattr(kr.distill, "fit_classifier", spy)
    outs = {m: train_student(data, config, toy_generator(), teacher, m, {"sigma": 1.0}, 0.0)
            for m in ("kr", *LABEL_CHANNEL)}
    probe = build_model("resnet8", 1, 3, width=8).eval()
    x = seen["kr"]["sets"][0][:16]
    with torch.no_grad():
        s, t = probe(x), teacher(x)
        for method, (temperature, top_k) in LABEL_CHANNEL.items():
            assert all(torch.equal(a, b) for a, b in zip(seen[method]["sets"], seen["kr"]["sets"]))
            assert all(torch.equal(v, seen["kr"]["init"][k]) for k, v in seen[method]["init"].items())
            assert outs[method]["labels"] == {"temperature": temperature, "top_k": top_k}
            got = seen[method]["loss"](probe, x, torch.zeros(16, dtype=torch.long)).item()
            assert got == pytest.approx(kd_loss(s, t, None, temperature, 0.0, top_k).item())
        # top-1: T² · CE towards the teacher's argmax, whatever T
        one_hot = 4 * F.cross_entropy(s / 2, t.argmax(1)).item()
        assert seen["kr-top1"]["loss"](probe, x, torch.zeros(16, dtype=torch.long)).item() == pytest.approx(one_hot)
        losses = {m: seen[m]["loss"](probe, x, torch.zeros(16, dtype=torch.long)).item() for m in outs}
        assert len({round(v, 6) for v in losses.values()}) == 4  # four different label channels


def test_clean_soft_targets_come_from_the_unaugmented_image(toy, monkeypatch):
    data, teacher, config = toy
    config = dataclasses.replace(config, distill=dataclasses.replace(
        config.distill, soft_targets="clean", train=dataclasses.replace(config.distill.train, crop_padding=4)))
    seen = {}
    real_fit = kr.distill.fit_classifier

    def spy(model, train, *args, loss_fn=None, **kwargs):
        seen["first"], seen["loss"] = train(0), loss_fn
        return real_fit(model, train, *args, loss_fn=loss_fn, **kwargs)

    monkeypatch.setattr(kr.distill, "fit_classifier", spy)
    out = train_student(data, config, toy_generator(), teacher, "kr", {"sigma": 1.0}, 0.0)
    split = seen["first"]
    with torch.no_grad():
        logits = teacher(split.images)
    assert split.labels.shape == (len(split.images), 1 + data.n_classes)
    assert torch.allclose(split.labels[:, 1:], logits, atol=1e-5)
    # The batch's targets stay those of the clean image whatever augmentation does to x.
    probe = build_model("resnet8", 1, 3, width=8).eval()
    shifted = torch.roll(split.images[:8], 3, dims=3)
    with torch.no_grad():
        expected = kd_loss(probe(shifted), logits[:8], split.labels[:8, 0].long(),
                           config.distill.temperature).item()
        assert seen["loss"](probe, shifted, split.labels[:8]).item() == pytest.approx(expected, rel=1e-5)
    assert math.isfinite(out["val"]["acc"])

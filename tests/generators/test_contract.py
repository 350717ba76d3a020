"""One contract, run against every generator backend at tiny size (diffusers-style mixin test)."""

import inspect
import math

import pytest
import torch

from kr.config import load_config
from kr.data import Split
from kr.errors import KRError
from kr.generators import BACKENDS, GeneratorFailed, build_generator, load_generator
from kr.models import build_model
from kr.seeding import make_generator

# Every backend, and every architecture of a backend, meets one contract.
VARIANTS = {"gan": ["generator.gan.arch=resnet", "generator.gan.teacher_ce=0.5", "generator.gan.teacher_bn=0.05"],
            "gan-lean": ["generator.gan.arch=lean"],  # the default: unguided, mode seeking
            "diffusion": []}
KINDS = list(VARIANTS)
# What guides a teacher-guided cGAN ("gan" below); other variants ignore it.
TEACHER = build_model("resnet8", 1, 3, width=8).eval()


def tiny(variant, *overrides):
    kind = variant.split("-")[0]
    return load_config("tiny", overrides=[f"generator.kind={kind}", *VARIANTS[variant], *overrides]).generator


def toy_split(n=48, size=28, channels=1, classes=3):
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % classes
    # class c is a bright square in corner c: learnable, and different per class
    x = torch.full((n, channels, size, size), -1.0)
    for i, c in enumerate(labels.tolist()):
        x[i, :, 4 * c:4 * c + 10, 4 * c:4 * c + 10] = 1.0
    return Split(x + 0.05 * torch.randn(x.shape, generator=g), labels)


@pytest.fixture(params=KINDS)
def kind(request):
    return request.param


@pytest.mark.parametrize("channels, size", [(1, 28), (3, 28), (1, 64)])
def test_shapes_and_range(kind, channels, size):
    gen = build_generator(tiny(kind), channels, size, 4)
    x = gen.sample([0, 1, 2, 3, 3], seed=0)
    assert x.shape == (5, channels, size, size)
    assert x.min() >= -1 and x.max() <= 1 and x.dtype == torch.float32


def test_determinism_per_seed(kind):
    gen = build_generator(tiny(kind), 1, 28, 3)
    labels = torch.tensor([0, 1, 2] * 70)  # more than one chunk at the default batch size
    a = gen.sample(labels, 7)
    assert torch.equal(a, gen.sample(labels, 7))
    assert torch.equal(a, gen.sample(labels, make_generator(7)))  # a Generator works like its seed
    assert torch.equal(a[:64], gen.sample(labels[:64], 7))       # batching does not change noise
    assert torch.equal(a, gen.sample(labels, 7, batch_size=64))
    assert torch.equal(a, gen.sample(labels, 7, batch_size=512))
    from kr.train import EVAL_BATCH  # the default chunk: kr's one inference chunk size, written out there
    assert inspect.signature(type(gen).sample).parameters["batch_size"].default == EVAL_BATCH
    b = gen.sample(labels, 8)
    assert not torch.allclose(a, b)


def test_labels_condition_the_output(kind):
    gen = build_generator(tiny(kind), 1, 28, 3)
    torch.manual_seed(0)
    for p in gen.ema.parameters():  # fresh init zeroes some conditioning paths; perturb them
        p.data.add_(0.05 * torch.randn_like(p))
    assert not torch.allclose(gen.sample([0] * 4, 0), gen.sample([2] * 4, 0))


def test_save_load_identical_samples(kind, tmp_path):
    gen = build_generator(tiny(kind), 1, 28, 3)
    gen.fit(toy_split(), False, tmp_path / "fit", seed=0, teacher=TEACHER)
    gen.save(tmp_path / "saved")
    for name in ("model.safetensors", "ema.safetensors", "config.json"):
        assert (tmp_path / "saved" / name).is_file()
    loaded = load_generator(tmp_path / "saved")
    assert loaded.kind == kind.split("-")[0] and loaded.kimg == gen.kimg
    assert torch.equal(loaded.sample([0, 1, 2], 3), gen.sample([0, 1, 2], 3))


def test_a_short_fit_moves_the_samples_towards_their_class(kind):
    """A learning signal read off the samples, not off a loss a network was trained to lower:
    after 40 steps each class's mean sampled image is nearer the mean real image of that class
    (per-pixel squared distance down by a quarter; measured 34–86 % at 50 steps)."""
    data = toy_split(96)
    real_means = torch.stack([data.images[data.labels == c].mean(0) for c in range(3)])

    def distance(gen):
        x = gen.sample(torch.arange(3).repeat_interleave(20), 0)
        return float(((x.view(3, 20, *x.shape[1:]).mean(1) - real_means) ** 2).mean())

    gen = build_generator(tiny(kind, "generator.batch_size=24"), 1, 28, 3)
    gen.opts = gen.make_optimizers()
    g = make_generator(0)

    def real():
        i = torch.randint(0, len(data.labels), (24,), generator=g)
        return data.images[i], data.labels[i]

    before = distance(gen)
    for step in range(40):
        gen.train_step(real, g)
        gen.update_ema(step)
    assert distance(gen) < 0.75 * before


def test_fit_writes_checkpoints_and_resumes_exactly(kind, tmp_path):
    cfg = tiny(kind, "generator.kimg=0.3", "generator.checkpoint_kimg=0.1")
    data = toy_split()
    full = build_generator(cfg, 1, 28, 3)
    ckpts = full.fit(data, True, tmp_path / "full", seed=1, teacher=TEACHER)
    assert len(ckpts) == 3 and ckpts[-1]["kimg"] == pytest.approx(full.kimg)
    for c in ckpts:
        assert (tmp_path / "full" / "checkpoints" / c["name"] / "ema.safetensors").is_file()

    class Stop(Exception):
        pass

    def stop_at_second(folder, gen):
        if len(list(folder.parent.iterdir())) == 2:
            raise Stop
        return {}

    part = build_generator(cfg, 1, 28, 3)
    with pytest.raises(Stop):
        part.fit(data, True, tmp_path / "part", seed=1, on_checkpoint=stop_at_second,
                 teacher=TEACHER)
    resumed = build_generator(cfg, 1, 28, 3)
    again = resumed.fit(data, True, tmp_path / "part", seed=1, teacher=TEACHER)
    assert [c["name"] for c in again] == [c["name"] for c in ckpts]
    assert torch.allclose(resumed.sample([0, 1, 2], 0), full.sample([0, 1, 2], 0), atol=1e-6)


def test_nonfinite_loss_stops_and_keeps_last_good_checkpoint(kind, tmp_path, monkeypatch):
    cfg = tiny(kind, "generator.kimg=0.3", "generator.checkpoint_kimg=0.1")
    gen = build_generator(cfg, 1, 28, 3)
    real_step, calls = gen.train_step, []

    def flaky(real, g):
        calls.append(1)
        out = real_step(real, g)
        return {k: (math.nan if len(calls) > 8 else v) for k, v in out.items()}

    monkeypatch.setattr(gen, "train_step", flaky)
    with pytest.raises(GeneratorFailed, match="diverged at step 8.*last good checkpoint, kimg-"):
        gen.fit(toy_split(), False, tmp_path, seed=0, teacher=TEACHER)
    saved = list((tmp_path / "checkpoints").iterdir())
    assert len(saved) == 1 and (saved[0] / "ema.safetensors").is_file()


def test_collapse_is_detected(kind, tmp_path, monkeypatch):
    gen = build_generator(tiny(kind), 1, 28, 3)
    monkeypatch.setattr(gen, "sample_batch", lambda labels, noise, **k: torch.zeros(len(labels), 1, 28, 28))
    with pytest.raises(GeneratorFailed, match="collapsed.*no checkpoint was saved"):
        gen.fit(toy_split(), False, tmp_path, seed=0, teacher=TEACHER)
    assert not (tmp_path / "checkpoints").exists() or not list((tmp_path / "checkpoints").iterdir())


def test_bad_knobs_and_labels(kind):
    gen = build_generator(tiny(kind), 1, 28, 3)
    with pytest.raises(KRError, match="has no knob"):
        gen.sample([0], 0, temperature=2)
    with pytest.raises(KRError, match=r"labels must be in \[0, 3\)"):
        gen.sample([3], 0)


def test_knobs_change_samples():
    for arch in ("gan", "gan-lean"):
        gan = build_generator(tiny(arch), 1, 28, 3)
        assert not torch.allclose(gan.sample([0, 1], 0, sigma=1.0), gan.sample([0, 1], 0, sigma=1.8))
    diff = build_generator(tiny("diffusion"), 1, 28, 3)
    torch.manual_seed(0)
    for p in diff.ema.parameters():
        p.data.add_(0.05 * torch.randn_like(p))
    assert not torch.allclose(diff.sample([0, 1], 0, guidance=1.0), diff.sample([0, 1], 0, guidance=3.0))
    assert not torch.allclose(diff.sample([0, 1], 0, steps=2), diff.sample([0, 1], 0, steps=4))


def test_every_backend_describes_itself():
    """A backend is a config section, a class and a registry entry: the class names the knob
    tuning searches (its grid is `select.<knob>`) and the strategy GKD uses under auto."""
    import dataclasses

    from kr.config import GeneratorConfig, SelectConfig

    sections = {f.name: f.type for f in dataclasses.fields(GeneratorConfig)}
    grids = {f.name for f in dataclasses.fields(SelectConfig)}
    for kind, cls in BACKENDS.items():
        assert cls.kind == kind and cls.tuned_knob in cls.knobs and cls.tuned_knob in grids
        assert sections[kind] is cls.Config  # its section, generator.<kind>, from its module
        assert cls.strategy in ("every-epoch", "pool")

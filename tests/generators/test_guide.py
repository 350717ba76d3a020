"""Teacher guidance: the teacher's cross-entropy and BatchNorm statistics as generator losses."""

import pytest
import torch

from kr.config import load_config
from kr.errors import KRError
from kr.generators import build_generator
from kr.generators.guide import TeacherGuide, guide_for
from kr.models import build_model
from kr.seeding import make_generator
from tests.generators.test_contract import toy_split
from tests.toys import toy_split as toy_squares

GUIDED = ["generator.gan.teacher_ce=0.5", "generator.gan.teacher_bn=0.05"]


def trained_teacher(classes=3, norm="batch"):
    """A resnet8 fitted for a few steps to the class-coded squares: it tells the classes apart."""
    torch.manual_seed(0)
    t = build_model("resnet8", 1, classes, width=8, norm=norm)
    data = toy_squares(60, classes)
    opt = torch.optim.SGD(t.parameters(), lr=0.05, momentum=0.9)
    t.train()
    for _ in range(30):
        loss = torch.nn.functional.cross_entropy(t(data.images), data.labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return t.eval()


def test_guide_losses_are_a_learning_signal():
    """Images optimised against the guide alone become the asked-for class, with BatchNorm
    statistics closer to the teacher's."""
    teacher = trained_teacher()
    guide = TeacherGuide(teacher)
    assert len(guide.norms) == sum(isinstance(m, torch.nn.BatchNorm2d) for m in teacher.modules())
    x = (0.1 * torch.randn(24, 1, 28, 28, generator=make_generator(0))).requires_grad_()
    y = torch.arange(24) % 3
    ce0, bn0 = guide(x, y)
    opt = torch.optim.Adam([x], lr=0.05)
    for _ in range(60):
        ce, bn = guide(x, y)
        opt.zero_grad()
        (ce + 0.1 * bn).backward()
        opt.step()
    ce1, bn1 = guide(x, y)
    assert ce1 < 0.5 * ce0 and bn1 < bn0
    assert (teacher(x.detach()).argmax(1) == y).float().mean() > 0.9
    guide.close()
    assert all(not m._forward_hooks for m in guide.norms)  # the teacher is left as it was


def test_bn_distance_is_zero_at_the_teachers_own_statistics():
    teacher = build_model("resnet8", 1, 2, width=8).eval()
    guide = TeacherGuide(teacher)
    x, y = torch.randn(16, 1, 28, 28, generator=make_generator(1)), torch.zeros(16, dtype=torch.long)
    _, before = guide(x, y)
    _match_running_statistics(teacher, x)
    _, after = guide(x, y)
    assert before > 1.0 and after < 1e-4


def _match_running_statistics(teacher, x):
    """Give each BatchNorm, in order, the statistics of what this batch shows it (biased var)."""
    for m in (m for m in teacher.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        seen = []
        h = m.register_forward_hook(lambda mod, inp, out: seen.append(inp[0]))
        teacher(x)
        h.remove()
        m.running_mean.copy_(seen[-1].mean((0, 2, 3)))
        m.running_var.copy_(seen[-1].var((0, 2, 3), unbiased=False))


def test_guided_gan_needs_a_fitting_teacher(tmp_path):
    cfg = load_config("tiny", overrides=["generator.kind=gan", *GUIDED]).generator
    gen = build_generator(cfg, 1, 28, 3)
    assert gen.uses_teacher and cfg.uses_teacher()
    with pytest.raises(KRError, match="train the teacher first"):
        gen.fit(toy_split(), False, tmp_path, seed=0)
    with pytest.raises(KRError, match="teacher.model.norm=batch"):
        guide_for(build_model("resnet8", 1, 3, width=8, norm="group"), 0.05)
    guide_for(build_model("resnet8", 1, 3, width=8, norm="group"), 0.0)  # CE alone needs no BN
    plain = load_config("tiny", overrides=["generator.kind=gan", "generator.gan.teacher_ce=0",
                                           "generator.gan.teacher_bn=0"]).generator
    assert not plain.uses_teacher() and not build_generator(plain, 1, 28, 3).uses_teacher
    assert not load_config("tiny", overrides=["generator.kind=diffusion"]).generator.uses_teacher()
    assert not load_config("cpu").generator.uses_teacher()  # unguided by default since issue 19


def test_guided_gan_learns_the_teachers_classes():
    """A few guided generator steps make the teacher read its samples as their class."""
    teacher = trained_teacher()
    cfg = load_config("tiny", overrides=["generator.kind=gan", "generator.batch_size=24", *GUIDED,
                                         "generator.gan.teacher_ce=2.0"]).generator
    gen = build_generator(cfg, 1, 28, 3)
    gen.opts, gen.guide = gen.make_optimizers(), gen.make_guide(teacher)
    data, g = toy_split(), make_generator(0)
    real = lambda: (data.images[:24], data.labels[:24])  # noqa: E731
    losses = [gen.train_step(real, g) for _ in range(40)]
    assert {"d_loss", "g_loss", "teacher_ce", "teacher_bn"} <= set(losses[0])
    first = sum(r["teacher_ce"] for r in losses[:5]) / 5
    last = sum(r["teacher_ce"] for r in losses[-5:]) / 5
    assert last < 0.5 * first

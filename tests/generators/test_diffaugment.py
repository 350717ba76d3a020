import torch

from kr.generators.diffaugment import color, cutout, diff_augment, shift, translation
from kr.seeding import make_generator


def test_shapes_and_seeded():
    x = torch.rand(8, 3, 28, 28) * 2 - 1
    for policy in ("color", "translation", "shift", "cutout", "color,translation,cutout", ""):
        a = diff_augment(x, policy, make_generator(0))
        assert a.shape == x.shape
        assert torch.equal(a, diff_augment(x, policy, make_generator(0)))
    assert torch.equal(diff_augment(x, "", make_generator(0)), x)


def test_differentiable():
    x = torch.rand(4, 1, 28, 28, requires_grad=True)
    diff_augment(x, "color,translation,cutout", make_generator(1)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_translation_shifts_content_and_fills_with_zero():
    x = torch.ones(64, 1, 16, 16)
    out = translation(x, make_generator(0))
    assert set(out.unique().tolist()) <= {0.0, 1.0}
    assert (out == 0).any() and (out.sum((1, 2, 3)) >= 16 * 16 - 2 * 2 * 16).all()


def test_cutout_zeroes_a_square_of_half_the_side():
    out = cutout(torch.ones(16, 1, 28, 28), make_generator(0))
    zeros = (out == 0).sum((1, 2, 3))
    assert (zeros > 0).all() and (zeros <= 14 * 14).all()


def test_color_is_per_image():
    x = torch.zeros(32, 1, 8, 8)
    out = color(x, make_generator(0))
    assert out.view(32, -1).std(1).max() < 1e-6  # a constant image stays constant
    assert out.view(32, -1).mean(1).std() > 0.1  # but brightness differs between images


def test_shift_repeats_the_edge_instead_of_a_grey_fill():
    x = torch.full((64, 1, 16, 16), -1.0)                   # a black background …
    x[:, :, 6:10, 6:10] = 1.0                               # … with a white square
    out = shift(x, make_generator(0))
    assert set(out.unique().tolist()) == {-1.0, 1.0}        # no 0 (grey) ever appears
    assert ((out == 1).sum((1, 2, 3)) == 16).all()          # the square moves, whole
    assert not torch.equal(out, x.expand_as(out))
    ramp = torch.arange(16.0).expand(1, 1, 16, 16).contiguous()
    moved = shift(ramp.repeat(32, 1, 1, 1), make_generator(1))
    assert moved.min() >= 0 and moved.max() <= 15          # only values of the image itself

import torch

from kr.augment import augment, random_crop, random_hflip
from kr.seeding import make_generator


def test_crop_keeps_shape_and_padding_zero_is_identity():
    x = torch.randn(8, 3, 28, 28)
    assert torch.equal(random_crop(x, 0, make_generator(0)), x)
    assert random_crop(x, 4, make_generator(0)).shape == x.shape


def test_crop_is_a_shifted_window_of_the_reflect_padded_image():
    x = torch.arange(64, dtype=torch.float32).reshape(1, 1, 8, 8).repeat(16, 1, 1, 1)
    out = random_crop(x, 2, make_generator(1))
    padded = torch.nn.functional.pad(x, (2,) * 4, mode="reflect")
    for img in out:
        # every output must equal some 8×8 window of the padded image
        assert any(torch.equal(img, padded[0, :, dy:dy + 8, dx:dx + 8])
                   for dy in range(5) for dx in range(5))
    assert len({tuple(img.flatten().tolist()) for img in out}) > 1  # windows differ per image


def test_flip_flips_about_half_and_is_seeded():
    x = torch.randn(400, 1, 4, 4)
    out = random_hflip(x, make_generator(0))
    flipped = torch.tensor([torch.equal(o, i.flip(-1)) for o, i in zip(out, x)])
    assert 150 < flipped.sum() < 250
    assert torch.equal(out, random_hflip(x, make_generator(0)))


def test_same_seed_same_batch():
    x = torch.randn(32, 1, 28, 28)
    a = augment(x, make_generator(3), 4, True)
    b = augment(x, make_generator(3), 4, True)
    c = augment(x, make_generator(4), 4, True)
    assert torch.equal(a, b) and not torch.equal(a, c)

import torch
from torch import nn

from kr.data import Split
from kr.generators.quality import frechet_distance, precision_recall, quality, save_grid


def test_frechet_known_answers():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(500, 4, generator=g).double()
    assert abs(frechet_distance(a, a)) < 1e-6
    shift = torch.tensor([3.0, 0, 4, 0]).double()
    # same covariance, means 5 apart: FD = ‖Δμ‖² exactly
    assert abs(frechet_distance(a, a + shift) - 25.0) < 1e-6
    assert frechet_distance(a, 2 * a) > 1.0


def test_precision_recall_known_answers():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(200, 3, generator=g).double()
    assert precision_recall(real, real) == (1.0, 1.0)
    far = real + 100
    assert precision_recall(real, far) == (0.0, 0.0)
    # fakes collapsed onto one real point: precise, but they cover few reals
    collapsed = real[:1].repeat(200, 1) + 1e-9
    p, r = precision_recall(real, collapsed)
    assert p == 1.0 and r < 0.1


class BrightnessTeacher(nn.Module):
    """Class 1 if the image is bright: a judge with a known answer."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(1, 2)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[-10.0], [10.0]]))
            self.fc.bias.zero_()

    def features(self, x):
        return x.mean((1, 2, 3))[:, None]

    def forward(self, x):
        return self.fc(self.features(x))


def test_quality_teacher_agreement():
    real = Split(torch.cat([torch.full((20, 1, 4, 4), -0.5), torch.full((20, 1, 4, 4), 0.5)])
                 + 0.01 * torch.randn(40, 1, 4, 4), torch.tensor([0] * 20 + [1] * 20))
    fake = real.images.clone()
    q = quality(BrightnessTeacher(), real, fake, real.labels, 2)
    assert q["teacher_agreement"] == 1.0 and q["precision"] == 1.0 and abs(q["fd"]) < 1e-6
    wrong = quality(BrightnessTeacher(), real, fake, 1 - real.labels, 2)
    assert wrong["teacher_agreement"] == 0.0 and wrong["fd"] > 0.5
    assert set(q["per_class"]) == {"0", "1"}


def test_grid_png_layout(tmp_path):
    import matplotlib.image as mpimg

    images = torch.linspace(-1, 1, 6)[:, None, None, None].expand(6, 1, 5, 7)
    save_grid(images, 2, tmp_path / "g.png")
    img = mpimg.imread(tmp_path / "g.png")
    assert img.shape[:2] == (2 * 5, 3 * 7)
    assert img[0, 0, 0] < img[5, 0, 0]  # row 1 (class 1) holds the brighter images
    rgb = torch.rand(4, 3, 8, 8) * 2 - 1
    save_grid(rgb, 4, tmp_path / "rgb.png")
    assert mpimg.imread(tmp_path / "rgb.png").shape[:2] == (32, 8)

import numpy as np
import torch
from torch import nn

from kr.data import Split
from kr.config import ClassifierConfig, TrainConfig
from kr.quality import (
    downstream_score,
    frechet_distance,
    precision_recall,
    quality,
    save_class_rows,
    save_grid,
)
from kr.models import build_model
from kr.train import fit_classifier


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


def test_quality_agreement():
    real = Split(torch.cat([torch.full((20, 1, 4, 4), -0.5), torch.full((20, 1, 4, 4), 0.5)])
                 + 0.01 * torch.randn(40, 1, 4, 4), torch.tensor([0] * 20 + [1] * 20))
    fake = real.images.clone()
    q = quality(BrightnessTeacher(), real, fake, real.labels, 2)
    assert q["agreement"] == 1.0 and q["precision"] == 1.0 and abs(q["fd"]) < 1e-6
    wrong = quality(BrightnessTeacher(), real, fake, 1 - real.labels, 2)
    assert wrong["agreement"] == 0.0 and wrong["fd"] > 0.5
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


def squares(n, classes=3, seed=0):
    """Class c: a bright square in corner c, at a jittered place, on a noisy background."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    x = torch.full((n, 1, 28, 28), -1.0)
    for i, c in enumerate(labels.tolist()):
        d = int(torch.randint(0, 3, (1,), generator=g))
        x[i, :, 6 * c + d:6 * c + d + 9, 6 * c + d:6 * c + d + 9] = 1.0
    return Split((x + 0.1 * torch.randn(x.shape, generator=g)).clamp(-1, 1), labels)


def test_independent_judge_ranks_class_structure_above_noise():
    """The judge (another architecture, trained on real data only) and the downstream score
    both prefer a generator whose images carry their class to one that emits
    class-independent noise, and say so by a wide margin."""
    train, val = squares(192, seed=0), squares(48, seed=1)
    judge = build_model("convnet", 1, 3, width=8)
    cfg = TrainConfig(epochs=8, batch_size=32, warmup_epochs=0, crop_padding=0)
    assert fit_classifier(judge, train, val, "multi-class", cfg, seed=0, hflip=False).best_val["acc"] > 0.9
    labels = torch.arange(60) % 3
    structured = squares(60, seed=2).images                   # fresh images of the right class
    noise = torch.rand(60, 1, 28, 28, generator=torch.Generator().manual_seed(3)) * 2 - 1
    good, bad = (quality(judge, val, x, labels, 3) for x in (structured, noise))
    assert good["agreement"] > 0.9 and bad["agreement"] < 0.6
    assert good["precision"] > bad["precision"] and good["recall"] > bad["recall"]
    assert good["fd"] < bad["fd"]
    short = TrainConfig(epochs=8, batch_size=12, warmup_epochs=0, crop_padding=0)
    down = {name: downstream_score(x, labels, val, "multi-class", 3, ClassifierConfig(arch="convnet", width=8),
                                   short, seed=0, hflip=False)
            for name, x in (("structured", structured), ("noise", noise))}
    assert down["structured"]["acc"] > 0.9 and down["noise"]["acc"] < 0.6


def test_class_rows_put_real_beside_synthetic_labelled_and_enlarged(tmp_path):
    import matplotlib.image as mpimg

    real = torch.full((4, 1, 5, 5), -1.0)              # 2 classes × 2 images, black
    fake = torch.full((4, 1, 5, 5), 1.0)               # white
    drawn = save_class_rows(real, fake, ["benign", "malignant"], tmp_path / "rows.png", "synthetic (gan)")
    img = mpimg.imread(tmp_path / "rows.png")
    assert list(img.shape[1::-1]) == drawn["size"]
    assert drawn["titles"] == ["real (train split)", "synthetic (gan)"] and drawn["rows"] == ["benign", "malignant"]
    # each panel is its images 4× larger: 2 columns of 5 px = 40 px wide, 2 rows = 40 px tall
    mid = img.shape[0] - 20                             # a row inside the panels (they sit at the bottom)
    dark = np.flatnonzero(img[mid, :, 0] < 0.1)
    assert 39 <= len(dark) <= 41 and dark[-1] - dark[0] == len(dark) - 1  # the real panel, black, 4×
    light = img[mid, dark[-1] + 1:, 0]
    assert (light > 0.99).sum() >= 40                   # the synthetic panel, white
    assert img.shape[1] > 2 * 40 + 100                  # room for the class names on the left

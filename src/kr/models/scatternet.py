"""ScatterNet classifiers (Tramèr & Boneh, ICLR 2021, "Differentially private learning needs
better features"): a fixed wavelet scattering transform (Oyallon & Mallat 2015) followed by a
small trained head.  The DP-SGD baseline (kr.dpsgd) uses them.

The scattering transform is data-independent: its Morlet filters are a function of (J, L,
image size) alone and are never trained, so it costs no privacy budget and DP-SGD only has to
train the head — a linear layer or a two-layer CNN — whose per-sample gradients are cheap and
whose few parameters make the added noise small (Tramèr & Boneh §3).  The coefficients are
normalised per sample with a GroupNorm without affine parameters (their §3, "group
normalisation", G = 27 per 81 channels): a private mean and variance would cost budget.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from kr.errors import KRError

HEADS = ("linear", "cnn")
ANGLES = 8  # L, orientations per scale (Tramèr & Boneh use J = 2, L = 8 on 28 and 32 px)


def _scattering(J: int, image_size: int) -> nn.Module:
    try:
        # kymatio.torch also imports the 3-D frontend, which needs scipy.special.sph_harm
        # (removed in SciPy 1.17); the 2-D frontend alone does not.
        from kymatio.scattering2d.frontend.torch_frontend import ScatteringTorch2D
    except ImportError:
        raise KRError("ScatterNet models need kymatio: pip install kymatio") from None
    s = ScatteringTorch2D(J=J, shape=(image_size, image_size), L=ANGLES)
    # The filters are a function of (J, L, size): rebuilt, never saved, never loaded, so a
    # model file holds only what was trained.
    for name, buf in list(s.named_buffers(recurse=False)):
        s.register_buffer(name, buf, persistent=False)
    return s


def scatter_channels(in_channels: int, J: int) -> int:
    """Coefficients per pixel of the scattered image: 1 + JL + L²J(J-1)/2 per input channel."""
    return in_channels * (1 + J * ANGLES + ANGLES ** 2 * J * (J - 1) // 2)


@functools.lru_cache(maxsize=None)
def scatter_side(J: int, image_size: int) -> int:
    """Side of the scattered image: image_size / 2^J where it divides, else what kymatio's
    padding gives (measured once on a blank image rather than re-derived)."""
    if image_size % 2 ** J == 0:
        return image_size // 2 ** J
    with torch.no_grad():
        return _scattering(J, image_size)(torch.zeros(1, 1, image_size, image_size)).shape[-1]


def head_shapes(in_channels: int, num_classes: int, image_size: int = 28, J: int = 2,
                head: str = "linear", width: int = 32) -> dict[str, tuple[int, ...]]:
    """The shapes of the weights that fix the head's architecture, for checking a saved folder
    before anything is built (kr.models.load_classifier)."""
    c, side = scatter_channels(in_channels, J), scatter_side(J, image_size)
    if head == "linear":
        return {"head.1.weight": (num_classes, c * side * side)}
    return {"head.0.weight": (width, c, 3, 3), "head.6.weight": (num_classes, width * (side // 2) ** 2)}


def _groups(channels: int) -> int:
    # Tramèr & Boneh's 27 groups of 3 for 81 channels; where 3 does not divide, one per channel
    return channels // 3 if channels % 3 == 0 else channels


class ScatterNet(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, image_size: int = 28, J: int = 2,
                 head: str = "linear", width: int = 32):
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, not {head!r}")
        self.scattering = _scattering(J, image_size)
        c, side = scatter_channels(in_channels, J), scatter_side(J, image_size)
        if head == "cnn" and side < 2:
            raise KRError(f"the scatter-cnn head needs a scattered image of at least 2×2 px; J = {J} "
                          f"leaves {side}×{side} of {image_size} px: lower dpsgd.scatter_j")
        self.J, self.head_kind = J, head
        self.norm = nn.GroupNorm(_groups(c), c, affine=False)
        if head == "linear":
            self.head = nn.Sequential(nn.Flatten(), nn.Linear(c * side * side, num_classes))
            self.feature_dim = c * side * side
        else:  # Tramèr & Boneh's ScatterNet+CNN, scaled down: two conv layers, tanh, one pooling
            self.head = nn.Sequential(
                nn.Conv2d(c, width, 3, padding=1), nn.Tanh(), nn.MaxPool2d(2),
                nn.Conv2d(width, width, 3, padding=1), nn.Tanh(), nn.Flatten(),
                nn.Linear(width * (side // 2) ** 2, num_classes))
            self.feature_dim = width * (side // 2) ** 2

    @torch.no_grad()
    def scatter(self, x: torch.Tensor) -> torch.Tensor:
        """The fixed, normalised features: B×C×H×W → B×C'×H/2^J×W/2^J."""
        s = self.scattering(x.contiguous())  # B×C×K×h×w
        return self.norm(s.flatten(1, 2))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features, as ResNet.features: the flattened scattering coefficients
        (linear head) or the CNN head's last hidden layer."""
        return self.head[:-1](self.scatter(x)).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.scatter(x))
